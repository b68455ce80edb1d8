//! A Prometheus text-format (0.0.4) parser for scraping model servers, tolerant of the
//! OpenMetrics additions a server may send anyway (`# EOF`, `# UNIT`, exemplars, float
//! timestamps).
//!
//! Error policy: one malformed line rejects the whole page. A page that is partly garbage
//! comes from a broken or impostor endpoint, and a gate must not read half of it as truth; the
//! caller counts it as a metrics error instead.
//!
//! Not supported: the quoted UTF-8 metric names of Prometheus 3 (`{"my.metric"}`); no engine
//! rollgate scrapes emits them, and such a line is rejected like any other garbage.

use std::fmt;

/// Default page limit. vLLM with a few models and all its histograms is a few hundred KiB;
/// anything near this is a misconfigured endpoint, and parsing it every second is not free.
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// How much of a bad line an error quotes: enough to recognise it, never a whole page.
const EXCERPT_CHARS: usize = 64;

/// One sample line: name, labels in page order, value. Timestamps are dropped: a gate reads
/// the page as of the scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Why a page was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("page is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("line {line}: not UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: {reason}: {excerpt:?}")]
    Line {
        /// 1-based.
        line: usize,
        reason: &'static str,
        /// The start of the offending line.
        excerpt: String,
    },
}

/// A byte cursor over one line. Only ASCII bytes are matched, so every slice it hands out
/// starts and ends on a UTF-8 boundary.
struct Cursor<'a> {
    line: &'a str,
    pos: usize,
}

/// Where parsing stopped on a line, before the line number and excerpt are attached.
type LineResult<T> = Result<T, &'static str>;

// === impl Sample ===

impl Sample {
    /// The value of label `name`, if the sample carries it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Sample {
    /// Text-format form, for logs and test failures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.labels.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                write!(f, "{sep}{k}=\"{v}\"")?;
            }
            f.write_str("}")?;
        }
        write!(f, " {}", self.value)
    }
}

/// Parses a whole page of at most [`MAX_PAGE_BYTES`].
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    parse_filtered(text, MAX_PAGE_BYTES, |_| true)
}

/// Parses raw bytes (a response body) of at most `limit` bytes.
pub fn parse_bytes(body: &[u8], limit: usize) -> Result<Vec<Sample>, ParseError> {
    parse_bytes_filtered(body, limit, |_| true)
}

/// [`parse_bytes`] keeping only the samples whose name `keep` accepts, as [`parse_filtered`].
pub fn parse_bytes_filtered(
    body: &[u8],
    limit: usize,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<Sample>, ParseError> {
    if body.len() > limit {
        return Err(ParseError::TooLarge { limit });
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        let line = 1 + body[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        ParseError::NotUtf8 { line }
    })?;
    parse_filtered(text, limit, keep)
}

/// Parses a page of at most `limit` bytes, keeping only samples whose name `keep` accepts.
/// Every line is still checked, so the error policy does not depend on the filter; skipped
/// samples just cost no allocation.
pub fn parse_filtered(
    text: &str,
    limit: usize,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<Sample>, ParseError> {
    if text.len() > limit {
        return Err(ParseError::TooLarge { limit });
    }
    let mut samples = Vec::new();
    // Label names seen on the current line, kept across lines to allocate once per page.
    let mut seen = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut cur = Cursor { line, pos: 0 };
        cur.skip_blanks();
        if cur.at_end() {
            continue;
        }
        if cur.peek() == Some(b'#') {
            // HELP, TYPE, UNIT and plain comments carry nothing a gate reads. Nothing follows
            // an OpenMetrics `# EOF`.
            if cur.rest().trim_end() == "# EOF" {
                break;
            }
            continue;
        }
        match cur.sample(&keep, &mut seen) {
            Ok(Some(sample)) => samples.push(sample),
            Ok(None) => {}
            Err(reason) => {
                return Err(ParseError::Line {
                    line: i + 1,
                    reason,
                    excerpt: line.chars().take(EXCERPT_CHARS).collect(),
                })
            }
        }
    }
    Ok(samples)
}

// === impl Cursor ===

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.line.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.line.len()
    }

    fn rest(&self) -> &'a str {
        &self.line[self.pos..]
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        if hit {
            self.pos += 1;
        }
        hit
    }

    /// `name [{labels}] value [timestamp] [# exemplar]`; `None` when `keep` skips the name.
    fn sample(
        &mut self,
        keep: &impl Fn(&str) -> bool,
        seen: &mut Vec<&'a str>,
    ) -> LineResult<Option<Sample>> {
        let name = self.ident(true).ok_or("invalid metric name")?;
        let wanted = keep(name);
        self.skip_blanks();
        let mut labels = Vec::new();
        if self.eat(b'{') {
            self.labels(wanted.then_some(&mut labels), seen)?;
        }
        self.skip_blanks();
        let value = self.number().ok_or("invalid sample value")?;
        self.skip_blanks();
        if !self.at_end() && self.peek() != Some(b'#') {
            // The timestamp is checked only so that garbage after a value is still garbage.
            self.number()
                .filter(|t| t.is_finite())
                .ok_or("invalid timestamp")?;
            self.skip_blanks();
        }
        // An OpenMetrics exemplar (`# {trace_id="…"} 1`) describes one observation; skip it.
        if !self.at_end() && !self.eat(b'#') {
            return Err("unexpected text after the value");
        }
        Ok(wanted.then(|| Sample {
            name: name.to_owned(),
            labels,
            value,
        }))
    }

    /// Metric names may contain `:`; label names may not.
    fn ident(&mut self, metric: bool) -> Option<&'a str> {
        let start = self.pos;
        let ok = |b: u8, first: bool| {
            b.is_ascii_alphabetic()
                || b == b'_'
                || (metric && b == b':')
                || (!first && b.is_ascii_digit())
        };
        while let Some(b) = self.peek() {
            if !ok(b, self.pos == start) {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.line[start..self.pos])
    }

    /// After `{`: `name="value"` pairs, comma separated, an optional trailing comma, then `}`.
    /// `out` is `None` for a skipped sample: still checked, nothing allocated.
    fn labels(
        &mut self,
        mut out: Option<&mut Vec<(String, String)>>,
        seen: &mut Vec<&'a str>,
    ) -> LineResult<()> {
        seen.clear();
        loop {
            self.skip_blanks();
            if self.eat(b'}') {
                return Ok(());
            }
            let name = self.ident(false).ok_or("invalid label name")?;
            if seen.contains(&name) {
                return Err("duplicate label name");
            }
            seen.push(name);
            self.skip_blanks();
            if !self.eat(b'=') {
                return Err("expected '=' after label name");
            }
            self.skip_blanks();
            let value = self.label_value(out.is_some())?;
            if let Some(out) = out.as_deref_mut() {
                out.push((name.to_owned(), value));
            }
            self.skip_blanks();
            if !self.eat(b',') {
                self.skip_blanks();
                return if self.eat(b'}') {
                    Ok(())
                } else {
                    Err("expected ',' or '}' after label value")
                };
            }
        }
    }

    /// A quoted value with `\\`, `\"` and `\n` escapes; any other escape is an error, as in
    /// Prometheus' own parser.
    fn label_value(&mut self, build: bool) -> LineResult<String> {
        if !self.eat(b'"') {
            return Err("expected '\"' to open a label value");
        }
        let mut value = String::new();
        let mut chunk = self.pos;
        loop {
            let rest = &self.line.as_bytes()[self.pos..];
            let Some(off) = rest.iter().position(|&b| b == b'"' || b == b'\\') else {
                return Err("unterminated label value");
            };
            self.pos += off;
            if build {
                value.push_str(&self.line[chunk..self.pos]);
            }
            if self.eat(b'"') {
                return Ok(value);
            }
            self.pos += 1; // the backslash
            let unescaped = match self.peek() {
                Some(b'\\') => '\\',
                Some(b'"') => '"',
                Some(b'n') => '\n',
                _ => return Err("invalid escape in label value"),
            };
            value.push(unescaped);
            self.pos += 1;
            chunk = self.pos;
        }
    }

    /// A float as Go's `ParseFloat` reads the usual forms, including `NaN`, `+Inf`, `-Inf`.
    fn number(&mut self) -> Option<f64> {
        let start = self.pos;
        while matches!(self.peek(), Some(b) if b != b' ' && b != b'\t') {
            self.pos += 1;
        }
        let token = &self.line[start..self.pos];
        // Rust also reads `infinity` and `inf`; Prometheus' parser does too, so both are fine.
        token.parse().ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests;
