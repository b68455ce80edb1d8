//! How deep flow collections (`[`, `{`) nest, found in one linear pass before parsing.
//!
//! libyaml checks every pending simple key at every token, and there is one per open flow
//! collection, so a document nested n deep costs O(n²) before serde_yaml_ng's recursion limit
//! refuses it (`[` × 200 000 takes minutes). Block nesting costs nothing extra, so only flow
//! nesting is measured.
//!
//! The pass splits the text into tokens the way libyaml's scanner does (`fetch_next_token`):
//! a `[` inside a quoted scalar, a comment, a block scalar or a plain scalar (`rate(x[5m])`)
//! opens nothing, and a quote in the middle of a plain scalar (`it's`) opens no string. Plain
//! and block scalars end where libyaml's indentation rules end them, so the pass keeps the
//! same stack of block indents. After a point where libyaml would stop with an error, what
//! the pass counts no longer matters.

/// The deepest flow nesting found, and the 1-based line of the first `[`/`{` that reached
/// it; stops at the first that goes past `limit`.
pub(crate) fn flow_depth(text: &str, limit: usize) -> (usize, usize) {
    let mut scan = Scan {
        b: text.as_bytes(),
        i: 0,
        line: 1,
        column: 0,
        depth: 0,
        deepest: (0, 1),
        indents: Vec::new(),
        key: None,
        key_allowed: true,
    };
    scan.run(limit);
    scan.deepest
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    /// 1-based line and 0-based column in characters, as libyaml counts them.
    line: usize,
    column: usize,
    depth: usize,
    deepest: (usize, usize),
    /// Columns of the open block collections (libyaml's `indents` plus `indent`).
    indents: Vec<usize>,
    /// Where a simple key (`key: value`) could start in the block context: line and column.
    key: Option<(usize, usize)>,
    key_allowed: bool,
}

// === impl Scan ===

impl Scan<'_> {
    fn run(&mut self, limit: usize) {
        loop {
            self.skip_between_tokens();
            let Some(c) = self.peek(0) else {
                return;
            };
            if self.depth == 0 {
                // libyaml's `unroll_indent`: a token left of a block collection closes it.
                while self.indents.last().is_some_and(|&at| at > self.column) {
                    self.indents.pop();
                }
            }
            let flow = self.depth > 0;
            let blank_after = self.blankz_at(1);
            match c {
                b'%' if self.column == 0 => self.skip_line(),
                b'-' | b'.' if self.column == 0 && self.document_marker() => {
                    self.indents.clear();
                    self.key = None;
                    self.bump(3);
                }
                b'[' | b'{' => {
                    self.save_key();
                    self.depth += 1;
                    if self.depth > self.deepest.0 {
                        self.deepest = (self.depth, self.line);
                    }
                    if self.depth > limit {
                        return;
                    }
                    self.key_allowed = true;
                    self.bump(1);
                }
                b']' | b'}' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.key_allowed = false;
                    self.bump(1);
                }
                b',' => {
                    self.key_allowed = true;
                    self.bump(1);
                }
                b'-' if blank_after => self.indicator(Some(self.column)),
                b'?' if flow || blank_after => self.indicator(Some(self.column)),
                b':' if flow || blank_after => self.value(),
                b'*' | b'&' | b'!' => {
                    if c != b'*' {
                        self.save_key();
                    }
                    self.key_allowed = false;
                    self.bump(1);
                    self.skip_word();
                }
                b'|' | b'>' if !flow => self.block_scalar(),
                b'\'' | b'"' => {
                    self.save_key();
                    self.key_allowed = false;
                    self.quoted(c);
                }
                _ => {
                    self.save_key();
                    self.key_allowed = false;
                    self.plain();
                }
            }
        }
    }

    /// Whitespace, line breaks and comments between tokens.
    fn skip_between_tokens(&mut self) {
        while let Some(c) = self.peek(0) {
            match c {
                b' ' | b'\t' => self.bump(1),
                b'#' => self.skip_line(),
                _ if self.break_len() > 0 => self.line_break(),
                _ => return,
            }
        }
    }

    /// `-`, `?` (block context): opens a block collection at their column.
    fn indicator(&mut self, roll: Option<usize>) {
        if self.depth == 0 {
            if let Some(column) = roll {
                self.roll(column);
            }
        }
        self.key = None;
        self.key_allowed = true;
        self.bump(1);
    }

    /// `:` — a block mapping starts at its key's column (libyaml's `fetch_value`).
    fn value(&mut self) {
        let column = match self.key {
            Some((line, column)) if line == self.line => column,
            _ => self.column,
        };
        self.indicator(Some(column));
    }

    fn roll(&mut self, column: usize) {
        if self.indents.last().is_none_or(|&at| at < column) {
            self.indents.push(column);
        }
    }

    fn save_key(&mut self) {
        if self.key_allowed && self.depth == 0 {
            self.key = Some((self.line, self.column));
        }
    }

    /// The block indent plus one: where libyaml's `indent + 1` puts continuation lines.
    fn min_column(&self) -> usize {
        self.indents.last().map_or(0, |at| at + 1)
    }

    /// A quoted scalar: `''` and `\"` do not end it; it may span lines.
    fn quoted(&mut self, quote: u8) {
        self.bump(1);
        while let Some(c) = self.peek(0) {
            if c == quote {
                if quote == b'\'' && self.peek(1) == Some(b'\'') {
                    self.bump(2);
                    continue;
                }
                self.bump(1);
                return;
            }
            if quote == b'"' && c == b'\\' {
                self.bump(1);
            }
            if self.break_len() > 0 {
                self.line_break();
            } else {
                self.bump(1);
            }
        }
    }

    /// A plain scalar (libyaml's `scan_plain_scalar`): it may continue on lines indented past
    /// the block indent, and `[`, `]`, `{`, `}`, `,` end it only in the flow context.
    fn plain(&mut self) {
        let flow = self.depth > 0;
        loop {
            if self.column == 0 && self.document_marker() {
                return;
            }
            if self.peek(0) == Some(b'#') {
                return;
            }
            while let Some(c) = self.peek(0) {
                if self.blank_or_break() {
                    break;
                }
                if (c == b':' && (self.blankz_at(1) || flow && self.flow_indicator_at(1)))
                    || (flow && matches!(c, b',' | b'[' | b']' | b'{' | b'}'))
                {
                    return;
                }
                self.bump(1);
            }
            if !self.blank_or_break() {
                return;
            }
            while self.blank_or_break() {
                if self.break_len() > 0 {
                    self.line_break();
                } else {
                    self.bump(1);
                }
            }
            if !flow && self.column < self.min_column() {
                return;
            }
        }
    }

    /// `|` or `>` and its lines: those indented like the first non-empty one (or as the
    /// header says), blank lines included (libyaml's `scan_block_scalar`).
    fn block_scalar(&mut self) {
        let parent = self.indents.last().copied();
        self.key_allowed = true;
        self.bump(1);
        let mut increment = None;
        while let Some(c @ (b'0'..=b'9' | b'+' | b'-')) = self.peek(0) {
            if c.is_ascii_digit() {
                increment = Some(usize::from(c - b'0'));
            }
            self.bump(1);
        }
        self.skip_line();
        if self.break_len() == 0 {
            return;
        }
        self.line_break();
        let mut indent = match (increment, parent) {
            (Some(n), Some(p)) => p + n,
            (Some(n), None) => n,
            (None, _) => 0,
        };
        let widest = self.scalar_breaks(indent);
        if indent == 0 {
            indent = widest.max(parent.map_or(0, |p| p + 1)).max(1);
        }
        while self.column == indent && self.peek(0).is_some() {
            self.skip_line();
            if self.break_len() == 0 {
                return;
            }
            self.line_break();
            self.scalar_breaks(indent);
        }
    }

    /// Leading spaces (up to `indent`, all when 0) and empty lines; the widest indentation seen.
    fn scalar_breaks(&mut self, indent: usize) -> usize {
        let mut widest = 0;
        loop {
            while self.peek(0) == Some(b' ') && (indent == 0 || self.column < indent) {
                self.bump(1);
            }
            widest = widest.max(self.column);
            if self.break_len() == 0 {
                return widest;
            }
            self.line_break();
        }
    }

    /// The rest of an anchor, alias or tag.
    fn skip_word(&mut self) {
        let flow = self.depth > 0;
        while let Some(c) = self.peek(0) {
            if self.blank_or_break() || (flow && matches!(c, b',' | b'[' | b']' | b'{' | b'}')) {
                return;
            }
            self.bump(1);
        }
    }

    /// To the line break, which is left for the caller.
    fn skip_line(&mut self) {
        while self.peek(0).is_some() && self.break_len() == 0 {
            self.bump(1);
        }
    }

    fn document_marker(&self) -> bool {
        let three = self.b.get(self.i..self.i + 3);
        matches!(three, Some(b"---" | b"...")) && self.blankz_at(3)
    }

    fn line_break(&mut self) {
        let n = self.break_len();
        self.i += n;
        self.line += 1;
        self.column = 0;
        if self.depth == 0 {
            self.key_allowed = true;
        }
    }

    fn break_len(&self) -> usize {
        break_at(self.b, self.i)
    }

    fn blank_or_break(&self) -> bool {
        blank_or_break_at(self.b, self.i)
    }

    /// Blank, a line break or the end, `n` bytes ahead.
    fn blankz_at(&self, n: usize) -> bool {
        self.i + n >= self.b.len() || blank_or_break_at(self.b, self.i + n)
    }

    fn flow_indicator_at(&self, n: usize) -> bool {
        matches!(self.peek(n), Some(b',' | b'?' | b'[' | b']' | b'{' | b'}'))
    }

    fn peek(&self, n: usize) -> Option<u8> {
        self.b.get(self.i + n).copied()
    }

    /// Moves `n` bytes within a line; UTF-8 continuation bytes are not columns.
    fn bump(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(c) = self.peek(0) {
                if c & 0xC0 != 0x80 {
                    self.column += 1;
                }
                self.i += 1;
            }
        }
    }
}

/// Bytes of the line break at `i` (`\r\n`, `\n`, `\r`, NEL, LS, PS), 0 when none.
fn break_at(b: &[u8], i: usize) -> usize {
    match (b.get(i), b.get(i + 1), b.get(i + 2)) {
        (Some(b'\r'), Some(b'\n'), _) => 2,
        (Some(b'\r' | b'\n'), _, _) => 1,
        (Some(0xC2), Some(0x85), _) => 2,
        (Some(0xE2), Some(0x80), Some(0xA8 | 0xA9)) => 3,
        _ => 0,
    }
}

fn blank_or_break_at(b: &[u8], i: usize) -> bool {
    matches!(b.get(i), Some(b' ' | b'\t')) || break_at(b, i) > 0
}
