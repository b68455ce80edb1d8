//! Observation of a `text/event-stream` response body on its way to the client.
//!
//! [`SseObserver`] follows the WHATWG event-stream interpretation rules (lines end in CRLF, LF or
//! CR; a blank line dispatches; `data:` lines join with LF; one leading space after the colon is
//! dropped; a leading UTF-8 byte order mark is ignored) while the chunks pass through unmodified.
//! It keeps a fixed-size prefix of each event's data and nothing else, so its memory is constant
//! and it never allocates. Bytes are looked at once: lines are found with a scan for CR/LF and
//! only the first few bytes of each line (the field name) are examined one by one.
//!
//! An event that is still open when the stream ends is not dispatched (as in the spec), so a
//! `data: [DONE]` without its blank line does not set [`SseObserver::done`].

/// Bytes of each event's data kept for the checks: room for `[DONE]`, for `{"error":` and for
/// the top-level `"object"` key that OpenAI-compatible servers send within the first ~60 bytes.
const DATA_PREFIX: usize = 256;
/// Longest field name and event type that matter (`event`, `error`).
const NAME_MAX: usize = 5;
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// Counts events of a server-sent event stream and notices `[DONE]` and error events.
#[derive(Debug, Clone)]
pub struct SseObserver {
    /// Byte order mark bytes matched at the start of the stream; `None` once past it.
    bom: Option<u8>,
    /// The previous chunk ended in CR, so an LF starting this one ends no further line.
    after_cr: bool,
    line: Line,
    name: [u8; NAME_MAX],
    name_len: usize,
    /// The next value byte is the first after the colon; a space there is dropped.
    value_start: bool,
    /// `event:` value of the current line, and its length (`NAME_MAX + 1` for longer ones).
    event_type: [u8; NAME_MAX],
    event_len: usize,
    /// The pending event's type is `error`.
    event_error: bool,
    /// The pending event had at least one `data` line.
    has_data: bool,
    data: [u8; DATA_PREFIX],
    data_len: usize,
    events: u64,
    done: bool,
    error: bool,
}

/// What one [`SseObserver::feed`] call saw complete.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Events with data dispatched in this chunk.
    pub events: u32,
    /// The stream's first event with data was dispatched in this chunk (time to first token).
    pub first_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Nothing of this line seen yet; a line end here dispatches the event.
    Empty,
    /// Reading the field name.
    Name,
    /// After the field name's colon (or a name too long to matter): reading the value.
    Value(Field),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    /// `id`, `retry`, comments and unknown fields.
    Ignored,
}

// === impl SseObserver ===

impl Default for SseObserver {
    fn default() -> Self {
        Self {
            bom: Some(0),
            after_cr: false,
            line: Line::Empty,
            name: [0; NAME_MAX],
            name_len: 0,
            value_start: false,
            event_type: [0; NAME_MAX],
            event_len: 0,
            event_error: false,
            has_data: false,
            data: [0; DATA_PREFIX],
            data_len: 0,
            events: 0,
            done: false,
            error: false,
        }
    }
}

impl SseObserver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at the next chunk of the stream, which may split lines, CRLF pairs or UTF-8
    /// sequences anywhere.
    pub fn feed(&mut self, chunk: &[u8]) -> Fed {
        let mut fed = Fed::default();
        let rest = self.skip_bom(chunk, &mut fed);
        self.scan(rest, &mut fed);
        fed
    }

    /// Events with at least one data line dispatched so far, the `[DONE]` event included.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// An event whose data starts with `[DONE]` was dispatched.
    pub fn done(&self) -> bool {
        self.done
    }

    /// An error event was dispatched: one with `event: error` (with or without data), or one
    /// whose data is a JSON object with `"error"` as its first key and a value other than `null`
    /// (OpenAI, TGI) or with a top-level `"object": "error"` (vLLM). Only the first 256 bytes of
    /// the data are looked at.
    pub fn error(&self) -> bool {
        self.error
    }

    /// Drops a byte order mark at the start of the stream; replays a partial one that was not.
    fn skip_bom<'a>(&mut self, mut chunk: &'a [u8], fed: &mut Fed) -> &'a [u8] {
        while let Some(matched) = self.bom {
            let Some((&b, rest)) = chunk.split_first() else {
                break;
            };
            if BOM.get(usize::from(matched)) == Some(&b) {
                chunk = rest;
                self.bom = (matched < 2).then_some(matched + 1);
            } else {
                self.bom = None;
                self.scan(BOM.get(..usize::from(matched)).unwrap_or_default(), fed);
            }
        }
        chunk
    }

    fn scan(&mut self, mut rest: &[u8], fed: &mut Fed) {
        if self.after_cr {
            if let Some((&first, tail)) = rest.split_first() {
                self.after_cr = false;
                if first == b'\n' {
                    rest = tail;
                }
            }
        }
        loop {
            let Some(end) = line_end(rest) else {
                self.line_bytes(rest);
                return;
            };
            let (line, tail) = rest.split_at(end);
            self.line_bytes(line);
            self.end_line(fed);
            rest = match tail {
                [b'\r', b'\n', tail @ ..] => tail,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, tail @ ..] => tail,
                [] => &[],
            };
        }
    }

    /// Bytes of the current line, line end excluded.
    fn line_bytes(&mut self, mut bytes: &[u8]) {
        while let Line::Empty | Line::Name = self.line {
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            bytes = rest;
            self.name_byte(b);
        }
        if let Line::Value(field) = self.line {
            self.value_bytes(field, bytes);
        }
    }

    fn name_byte(&mut self, b: u8) {
        if b == b':' {
            self.line = Line::Value(self.field());
            self.value_start = true;
        } else if let Some(slot) = self.name.get_mut(self.name_len) {
            *slot = b;
            self.name_len += 1;
            self.line = Line::Name;
        } else {
            // Longer than any field that matters: the rest of the line is irrelevant.
            self.line = Line::Value(Field::Ignored);
        }
    }

    fn field(&self) -> Field {
        match self.name.get(..self.name_len) {
            Some(b"data") => Field::Data,
            Some(b"event") => Field::Event,
            _ => Field::Ignored,
        }
    }

    fn value_bytes(&mut self, field: Field, mut bytes: &[u8]) {
        if field == Field::Ignored || bytes.is_empty() {
            return;
        }
        if self.value_start {
            self.value_start = false;
            bytes = bytes.strip_prefix(b" ").unwrap_or(bytes);
        }
        if field == Field::Data {
            self.push_data(bytes);
        } else if append(&mut self.event_type, &mut self.event_len, bytes) < bytes.len() {
            self.event_len = NAME_MAX + 1;
        }
    }

    fn push_data(&mut self, bytes: &[u8]) {
        append(&mut self.data, &mut self.data_len, bytes);
    }

    fn end_line(&mut self, fed: &mut Fed) {
        match self.line {
            Line::Empty => self.dispatch(fed),
            // A line without a colon is a field name with an empty value.
            Line::Name => self.end_field(self.field()),
            Line::Value(field) => self.end_field(field),
        }
        self.line = Line::Empty;
        self.name_len = 0;
        self.value_start = false;
    }

    fn end_field(&mut self, field: Field) {
        match field {
            Field::Data => {
                self.has_data = true;
                self.push_data(b"\n");
            }
            Field::Event => {
                self.event_error = self.event_type.get(..self.event_len) == Some(b"error");
                self.event_len = 0;
            }
            Field::Ignored => {}
        }
    }

    fn dispatch(&mut self, fed: &mut Fed) {
        self.error |= self.event_error;
        if self.has_data {
            self.events += 1;
            fed.events = fed.events.saturating_add(1);
            fed.first_data |= self.events == 1;
            let data = self.data.get(..self.data_len).unwrap_or_default();
            if data.starts_with(b"[DONE]") {
                self.done = true;
            } else if is_error_payload(data) {
                self.error = true;
            }
        }
        self.event_error = false;
        self.has_data = false;
        self.data_len = 0;
    }
}

/// Appends what fits of `bytes` to `buf[..*len]` and says how much that was.
fn append(buf: &mut [u8], len: &mut usize, bytes: &[u8]) -> usize {
    let room = buf.get_mut(*len..).unwrap_or_default();
    let n = bytes.len().min(room.len());
    if let (Some(to), Some(from)) = (room.get_mut(..n), bytes.get(..n)) {
        to.copy_from_slice(from);
        *len += n;
    }
    n
}

/// Position of the first CR or LF: the loop every streamed byte goes through (SIMD memchr).
fn line_end(s: &[u8]) -> Option<usize> {
    memchr::memchr2(b'\n', b'\r', s)
}

/// Whether `data` starts like an error object: `{"error": <not null>` or a top-level
/// `"object": "error"`. Reads no further than it must (normal chunks carry `"object"` as their
/// second key) and gives up on anything it cannot read, a cut-off prefix included.
fn is_error_payload(data: &[u8]) -> bool {
    let mut c = Cursor(data);
    c.ws();
    if !c.eat(b'{') {
        return false;
    }
    let mut first = true;
    loop {
        c.ws();
        let Some(key) = c.string() else {
            return false;
        };
        c.ws();
        if !c.eat(b':') {
            return false;
        }
        c.ws();
        if first && key == b"error" {
            return !c.0.is_empty() && !c.0.starts_with(b"null");
        }
        if key == b"object" {
            return c.string() == Some(b"error");
        }
        if !c.skip_value() {
            return false;
        }
        c.ws();
        if !c.eat(b',') {
            return false;
        }
        first = false;
    }
}

/// The unread rest of a data prefix.
struct Cursor<'a>(&'a [u8]);

// === impl Cursor ===

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        let n = self
            .0
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
        self.0 = self.0.get(n..).unwrap_or_default();
    }

    fn eat(&mut self, want: u8) -> bool {
        match self.0.split_first() {
            Some((&b, rest)) if b == want => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    /// A string's raw contents (escapes left as they are), the quotes consumed.
    fn string(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let mut escaped = false;
        let end = self.0.iter().position(|&b| {
            let end = b == b'"' && !escaped;
            escaped = b == b'\\' && !escaped;
            end
        })?;
        let (s, rest) = self.0.split_at(end);
        self.0 = rest.get(1..).unwrap_or_default();
        Some(s)
    }

    /// Skips one value; false when it does not end within the prefix.
    fn skip_value(&mut self) -> bool {
        match self.0.first() {
            Some(b'"') => self.string().is_some(),
            Some(b'{' | b'[') => self.skip_container(),
            Some(_) => {
                let n = self
                    .0
                    .iter()
                    .take_while(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                    .count();
                self.0 = self.0.get(n..).unwrap_or_default();
                n > 0 && !self.0.is_empty()
            }
            None => false,
        }
    }

    /// Skips a balanced object or array, strings included, without telling brackets apart.
    fn skip_container(&mut self) -> bool {
        let mut depth = 0usize;
        while let Some(&b) = self.0.first() {
            match b {
                b'"' => {
                    if self.string().is_none() {
                        return false;
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
            self.0 = self.0.get(1..).unwrap_or_default();
            if depth == 0 {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
