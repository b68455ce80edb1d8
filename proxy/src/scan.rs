//! Streaming scan of the top-level fields of a JSON request body.
//!
//! The gateway forwards body chunks untouched and shows each one to a [`JsonPrefixScanner`] on the
//! way, so the model can be resolved from a bounded prefix without buffering the body. The scanner
//! is a byte-at-a-time state machine, so that chunks may split anywhere (inside a key, an escape,
//! a surrogate pair or a UTF-8 sequence), with three quicker passes over what is whole in the
//! chunk at hand: runs of plain string bytes (most of a prompt) go by with vector searches (short
//! ones eight bytes at a time), a top-level member (`"max_tokens":1`) is read in one go, and an
//! object or array inside the top-level object (`messages`) is checked and passed over in one go.
//! A quick pass gives up on anything unusual (a chunk's end, an escape in a key, a surrogate
//! escape, an error) and leaves it to the steps from its first byte, so errors are reported at
//! the same offsets and the outcome never depends on how the body was split (the tests feed
//! every body whole and byte by byte). Nothing is allocated per byte; the only allocations are
//! the wanted field's name and captured values over 64 bytes.
//!
//! What it accepts is RFC 8259 JSON, checked as far as it reads: an object at the top (after
//! optional whitespace and one UTF-8 byte order mark), valid strings (escapes, surrogate pairs,
//! UTF-8, no raw control characters), numbers and literals, and balanced brackets nested at most
//! [`MAX_DEPTH`] deep. It stops at [`Progress::Done`], so bytes after that point (including
//! anything after the closing `}`) are never checked; the upstream server sees the whole body.
//!
//! Only the first occurrence of `model` and of the wanted field counts: once a key's first value
//! is read, later duplicates are skipped. A first `model` that is neither a string nor `null`
//! ends the scan with [`ScanError::ModelNotString`] where the value ends. Python's `json` (so
//! vLLM, SGLang) and `serde_json::Value` keep the last one instead, so a body with two `model`
//! keys can be routed by one and served as the other; first-wins is what lets the scan stop
//! early, and spotting duplicates would mean reading the whole body.

use std::fmt;

/// Deepest nesting of objects and arrays accepted, counting the top-level object. Real request
/// bodies nest a handful of levels (tool schemas perhaps a dozen); the cap keeps the bracket
/// stack in one `u128` and stops pathological bodies early.
pub const MAX_DEPTH: u32 = 128;

const MODEL: &[u8] = b"model";
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
/// Bytes of a captured value kept inline: model names fit without an allocation.
const VALUE_INLINE: usize = 64;
/// String bytes checked one by one before a string's end is searched with vector instructions.
const SHORT_RUN: usize = 16;

/// Finds the top-level `model` (and optionally one more field) in a JSON body fed chunk by chunk.
#[derive(Debug)]
pub struct JsonPrefixScanner {
    state: State,
    /// Bit `i` is set when the container at depth `i + 1` is an array, clear for an object.
    stack: u128,
    depth: u32,
    consumed: usize,
    limit: usize,
    /// Whether the string being read is an object key (else a value).
    in_key: bool,
    /// Where the bytes of the string being read go.
    sink: Sink,
    model: Slot,
    field_name: Option<Box<[u8]>>,
    field: Slot,
}

/// What [`JsonPrefixScanner::feed`] needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Neither everything wanted nor the end of the top-level object was reached yet.
    NeedMore,
    /// Everything wanted was found or the top-level object ended; stop feeding.
    Done,
}

/// Why a body was refused; `Display` is worded for an HTTP 400 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// Not JSON at `offset` (0-based, counted from the first byte of the body, BOM included).
    Malformed { offset: usize, reason: &'static str },
    /// `limit` bytes were read without finding everything wanted.
    LimitReached { limit: usize },
    /// The body (after whitespace and a BOM) does not start with `{`, or is empty.
    NotAnObject,
    /// The first top-level `model` is a number, a boolean, an object or an array. `null` is
    /// no model (the default model's, as OpenAI's own servers read it), and a string is a name.
    ModelNotString(ValueKind),
}

/// The JSON type of a top-level value the scanner found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    String,
    Number,
    Bool,
    Null,
    Object,
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of the body, `n` bytes of a byte order mark matched so far.
    Bom(u8),
    BeforeObject,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object.
    Key,
    Colon,
    /// After `:`, or after `,` in an array.
    Value,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After a value: `,` or the closing bracket.
    AfterValue,
    Str(Str),
    Num(Num),
    Lit {
        word: &'static [u8],
        at: usize,
        kind: ValueKind,
    },
    Done,
    Failed(ScanError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Str {
    Plain,
    /// After `\`.
    Escape,
    /// Inside `\uXXXX`; `high` is the high surrogate this escape has to complete.
    Hex {
        high: Option<u32>,
        digits: u8,
        acc: u32,
    },
    /// After a high surrogate, expecting the `\` of its low half.
    LowSlash {
        high: u32,
    },
    /// Expecting the `u` of the low half.
    LowU {
        high: u32,
    },
    /// Inside a multi-byte UTF-8 sequence: `need` more bytes, the next one in `lo..=hi`.
    Utf8 {
        need: u8,
        lo: u8,
        hi: u8,
    },
}

/// Positions of the JSON number grammar; the terminal ones are `Zero`, `Int`, `Frac`, `ExpInt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpInt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Drop,
    /// A top-level key: match it against the wanted names.
    Key,
    /// A top-level value of a wanted key: copy it.
    Value,
}

/// One wanted top-level key and what was found for it.
#[derive(Debug, Default)]
struct Slot {
    /// Bytes of the current top-level key that matched the name; `None` once it diverged.
    matched: Option<usize>,
    /// The top-level value being read belongs to this slot.
    capturing: bool,
    buf: ValueBuf,
    found: Option<ValueKind>,
    /// The captured value is complete, worth keeping and valid UTF-8.
    text: bool,
}

/// A captured value's bytes: inline up to [`VALUE_INLINE`], on the heap past it.
#[derive(Debug)]
struct ValueBuf {
    len: usize,
    inline: [u8; VALUE_INLINE],
    /// Holds every byte once the value outgrew `inline`; empty until then.
    heap: Vec<u8>,
}

impl Default for ValueBuf {
    fn default() -> Self {
        ValueBuf {
            len: 0,
            inline: [0; VALUE_INLINE],
            heap: Vec::new(),
        }
    }
}

impl ValueBuf {
    fn extend(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if self.heap.is_empty() && end <= VALUE_INLINE {
            self.inline[self.len..end].copy_from_slice(bytes);
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.inline[..self.len]);
            }
            self.heap.extend_from_slice(bytes);
        }
        self.len = end;
    }

    fn as_slice(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

// === impl JsonPrefixScanner ===

impl JsonPrefixScanner {
    /// Scans for `model` and, when given, the top-level `field`; refuses bodies that need more
    /// than `limit` bytes for it.
    pub fn new(field: Option<&str>, limit: usize) -> Self {
        Self {
            state: State::Bom(0),
            stack: 0,
            depth: 0,
            consumed: 0,
            limit,
            in_key: false,
            sink: Sink::Drop,
            model: Slot::default(),
            field_name: field.map(|f| Box::from(f.as_bytes())),
            field: Slot::default(),
        }
    }

    /// Reads the next chunk. After `Done` or an error, further calls return the same answer
    /// without reading.
    ///
    /// # Errors
    ///
    /// `Malformed` or `NotAnObject` for the first byte that cannot be JSON here, and
    /// `LimitReached` once `limit` bytes are read without `Done`.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Progress, ScanError> {
        match self.state {
            State::Done => return Ok(Progress::Done),
            State::Failed(e) => return Err(e),
            _ => {}
        }
        let room = self.limit.saturating_sub(self.consumed);
        let window = chunk.get(..room).unwrap_or(chunk);
        let start = self.consumed;
        let mut i = 0;
        while let Some(&b) = window.get(i) {
            // Runs that change no state (whitespace between tokens, plain string bytes) go by
            // without a step; every other byte is one step.
            match self.state {
                State::Str(Str::Plain) if b >= 0x20 && b != b'"' && b != b'\\' => {
                    let run = self.string_bytes(window.get(i..).unwrap_or_default());
                    if run > 0 {
                        i += run;
                        continue;
                    }
                }
                State::BeforeObject
                | State::KeyOrEnd
                | State::Key
                | State::Colon
                | State::Value
                | State::ValueOrEnd
                | State::AfterValue
                    if is_ws(b) =>
                {
                    i += 1;
                    continue;
                }
                // A top-level member that is whole in this chunk is read in one go.
                State::KeyOrEnd | State::Key if b == b'"' && self.depth == 1 => {
                    if let Some(n) = self.member(window.get(i..).unwrap_or_default()) {
                        i += n;
                        if let Some(end) = self.ended() {
                            self.consumed = start + i;
                            return end;
                        }
                        continue;
                    }
                }
                // An object or array inside the top-level object (`messages`, tools) is
                // checked and passed over in one go when it is all in this chunk; anything the
                // quick pass does not take on is left to the steps, from its first byte.
                State::Value | State::ValueOrEnd if b == b'{' || b == b'[' => {
                    let rest = window.get(i..).unwrap_or_default();
                    if let Some(n) = skip_nested(rest, MAX_DEPTH - self.depth) {
                        i += n;
                        if self.depth == 1 {
                            self.value_done(if b == b'[' {
                                ValueKind::Array
                            } else {
                                ValueKind::Object
                            });
                            if let Some(end) = self.ended() {
                                self.consumed = start + i;
                                return end;
                            }
                        } else {
                            self.state = State::AfterValue;
                        }
                        continue;
                    }
                }
                _ => {}
            }
            // `malformed` reports this byte's offset.
            self.consumed = start + i;
            if let Err(e) = self.step(b) {
                return Err(self.fail(e));
            }
            i += 1;
            if let Some(end) = self.ended() {
                self.consumed = start + i;
                return end;
            }
        }
        self.consumed = start + i;
        if self.consumed >= self.limit {
            return Err(self.fail(ScanError::LimitReached { limit: self.limit }));
        }
        Ok(Progress::NeedMore)
    }

    /// The body ended.
    ///
    /// # Errors
    ///
    /// Anything short of `Done`: `NotAnObject` when the body held nothing but whitespace (and a
    /// BOM), `Malformed` at the body's length when it ended inside the object, or the error
    /// `feed` already returned.
    pub fn finish(&mut self) -> Result<(), ScanError> {
        let e = match self.state {
            State::Done => return Ok(()),
            State::Failed(e) => return Err(e),
            State::Bom(_) | State::BeforeObject => ScanError::NotAnObject,
            _ => self.malformed("body ended inside the top-level object"),
        };
        Err(self.fail(e))
    }

    /// The unescaped top-level `model`, when its first occurrence is a string. Stays readable
    /// after an error, so a model found before `LimitReached` can still be used.
    pub fn model(&self) -> Option<&str> {
        self.model.text()
    }

    /// The wanted field's first top-level value: unescaped for a string, the source text for a
    /// number, `true` or `false`; `None` for null, objects, arrays and when not (yet) found.
    pub fn field(&self) -> Option<&str> {
        self.field.text()
    }

    /// The JSON type of the wanted field's first value, `None` when not (yet) found.
    pub fn field_kind(&self) -> Option<ValueKind> {
        self.field.found
    }

    /// Bytes read so far, up to and including the one that completed the scan; after an error,
    /// the offending byte is not counted.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// What `feed` returns once the scan ended: done, or a `model` that is not a string.
    fn ended(&self) -> Option<Result<Progress, ScanError>> {
        match self.state {
            State::Done => Some(Ok(Progress::Done)),
            State::Failed(e) => Some(Err(e)),
            _ => None,
        }
    }

    fn fail(&mut self, e: ScanError) -> ScanError {
        self.state = State::Failed(e);
        e
    }

    fn malformed(&self, reason: &'static str) -> ScanError {
        ScanError::Malformed {
            offset: self.consumed,
            reason,
        }
    }

    /// Length of the run of plain bytes (no quote, backslash or control byte; valid UTF-8) at
    /// the start of `rest`, inside a string, passed to the sink. This is where long prompts go
    /// by; 0 when `rest` starts with a byte `step` must see.
    fn string_bytes(&mut self, rest: &[u8]) -> usize {
        let (len, ascii) = string_run(rest);
        let run = rest.get(..len).unwrap_or_default();
        // A sequence cut by the chunk end, or an invalid one, is left to `step`, which
        // carries the first across chunks and reports the second at its exact offset.
        let n = if ascii {
            len
        } else {
            simdutf8::compat::from_utf8(run).map_or_else(|e| e.valid_up_to(), str::len)
        };
        self.emit_all(run.get(..n).unwrap_or_default());
        n
    }

    /// Reads the top-level member (`"key": value`) at the start of `rest` in one go, as the
    /// steps would, when it is whole in `rest` and plain: a key without escapes, and a wanted
    /// value without escapes when it is a string. Returns the bytes read, up to the value's end
    /// (and, when that completes the scan with a number, the byte after it, which is where the
    /// steps would stop); `None` leaves it all to the steps, from the key's opening quote.
    fn member(&mut self, rest: &[u8]) -> Option<usize> {
        let after_quote = rest.get(1..)?;
        let (key_len, ascii) = string_run(after_quote);
        let key = after_quote.get(..key_len)?;
        if after_quote.get(key_len) != Some(&b'"')
            || !ascii && simdutf8::basic::from_utf8(key).is_err()
        {
            return None;
        }
        let mut i = key_len + 2;
        i += ws_run(rest.get(i..)?);
        if rest.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        i += ws_run(rest.get(i..)?);
        let model = self.model.found.is_none() && key == MODEL;
        let field = self.field.found.is_none() && self.field_name.as_deref() == Some(key);
        let value = rest.get(i..)?;
        let (len, kind) = match *value.first()? {
            b'"' => (1 + skip_string(value.get(1..)?)?, ValueKind::String),
            b'{' => (skip_nested(value, MAX_DEPTH - 1)?, ValueKind::Object),
            b'[' => (skip_nested(value, MAX_DEPTH - 1)?, ValueKind::Array),
            b'-' | b'0'..=b'9' => (skip_number(value)?, ValueKind::Number),
            b't' if value.starts_with(b"true") => (4, ValueKind::Bool),
            b'f' if value.starts_with(b"false") => (5, ValueKind::Bool),
            b'n' if value.starts_with(b"null") => (4, ValueKind::Null),
            _ => return None,
        };
        if model || field {
            // What the steps would have captured: a string's content (unescaped: only plain
            // ones are taken here), the text of a scalar, nothing of an object or array.
            let text = match kind {
                ValueKind::String => value.get(1..len - 1)?,
                ValueKind::Number | ValueKind::Bool | ValueKind::Null => value.get(..len)?,
                ValueKind::Object | ValueKind::Array => &[],
            };
            if kind == ValueKind::String && memchr::memchr(b'\\', text).is_some() {
                return None;
            }
            self.model.capturing = model;
            self.field.capturing = field;
            self.model.extend(text);
            self.field.extend(text);
        }
        i += len;
        self.value_done(kind);
        if self.ended().is_some() && kind == ValueKind::Number {
            i += 1;
        }
        Some(i)
    }

    fn step(&mut self, b: u8) -> Result<(), ScanError> {
        match self.state {
            State::Bom(n) => self.bom(n, b),
            State::BeforeObject => self.before_object(b),
            State::KeyOrEnd if b == b'}' => self.close(b),
            State::KeyOrEnd | State::Key => match b {
                b'"' => {
                    self.begin_key();
                    Ok(())
                }
                _ if is_ws(b) => Ok(()),
                _ => Err(self.malformed("expected a key")),
            },
            State::Colon => match b {
                b':' => {
                    self.state = State::Value;
                    Ok(())
                }
                _ if is_ws(b) => Ok(()),
                _ => Err(self.malformed("expected ':'")),
            },
            State::Value => self.begin_value(b),
            State::ValueOrEnd if b == b']' => self.close(b),
            State::ValueOrEnd => self.begin_value(b),
            State::AfterValue => self.after_value(b),
            State::Str(s) => self.string(s, b),
            State::Num(n) => self.number(n, b),
            State::Lit { word, at, kind } => self.literal(word, at, kind, b),
            // `feed` returns before stepping in these.
            State::Done | State::Failed(_) => Ok(()),
        }
    }

    fn bom(&mut self, n: u8, b: u8) -> Result<(), ScanError> {
        if BOM.get(usize::from(n)) == Some(&b) {
            self.state = if n == 2 {
                State::BeforeObject
            } else {
                State::Bom(n + 1)
            };
            Ok(())
        } else if n == 0 {
            self.before_object(b)
        } else {
            Err(ScanError::NotAnObject)
        }
    }

    fn before_object(&mut self, b: u8) -> Result<(), ScanError> {
        match b {
            b'{' => self.open(false),
            _ if is_ws(b) => {
                self.state = State::BeforeObject;
                Ok(())
            }
            _ => Err(ScanError::NotAnObject),
        }
    }

    fn open(&mut self, array: bool) -> Result<(), ScanError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.malformed("nested deeper than 128 levels"));
        }
        let bit = 1u128 << self.depth;
        if array {
            self.stack |= bit;
            self.state = State::ValueOrEnd;
        } else {
            self.stack &= !bit;
            self.state = State::KeyOrEnd;
        }
        self.depth += 1;
        Ok(())
    }

    fn close(&mut self, b: u8) -> Result<(), ScanError> {
        let array = b == b']';
        if self.depth == 0 || self.top_is_array() != array {
            return Err(self.malformed("mismatched closing bracket"));
        }
        self.depth -= 1;
        match self.depth {
            0 => self.state = State::Done,
            1 => self.value_done(if array {
                ValueKind::Array
            } else {
                ValueKind::Object
            }),
            _ => self.state = State::AfterValue,
        }
        Ok(())
    }

    fn top_is_array(&self) -> bool {
        self.depth > 0 && self.stack & (1u128 << (self.depth - 1)) != 0
    }

    fn after_value(&mut self, b: u8) -> Result<(), ScanError> {
        match b {
            b',' if self.top_is_array() => self.state = State::Value,
            b',' => self.state = State::Key,
            b'}' | b']' => return self.close(b),
            _ if is_ws(b) => {}
            _ => return Err(self.malformed("expected ',' or a closing bracket")),
        }
        Ok(())
    }

    fn begin_key(&mut self) {
        self.in_key = true;
        self.state = State::Str(Str::Plain);
        self.sink = Sink::Drop;
        if self.depth != 1 {
            return;
        }
        self.model.matched = self.model.found.is_none().then_some(0);
        self.field.matched = (self.field_name.is_some() && self.field.found.is_none()).then_some(0);
        if self.model.matched.is_some() || self.field.matched.is_some() {
            self.sink = Sink::Key;
        }
    }

    fn end_key(&mut self) {
        self.state = State::Colon;
        if self.depth != 1 {
            return;
        }
        self.model.capturing = self.model.matched == Some(MODEL.len());
        let field_len = self.field_name.as_deref().map(<[u8]>::len);
        self.field.capturing = self.field.matched.is_some() && self.field.matched == field_len;
    }

    fn begin_value(&mut self, b: u8) -> Result<(), ScanError> {
        let (state, capture) = match b {
            b'"' => {
                self.in_key = false;
                self.sink = if self.depth == 1 && self.capturing() {
                    Sink::Value
                } else {
                    Sink::Drop
                };
                (State::Str(Str::Plain), false)
            }
            b'{' => return self.open(false),
            b'[' => return self.open(true),
            b'-' => (State::Num(Num::Minus), true),
            b'0' => (State::Num(Num::Zero), true),
            b'1'..=b'9' => (State::Num(Num::Int), true),
            b't' => (literal(b"true", ValueKind::Bool), true),
            b'f' => (literal(b"false", ValueKind::Bool), true),
            b'n' => (literal(b"null", ValueKind::Null), true),
            _ if is_ws(b) => return Ok(()),
            _ => return Err(self.malformed("expected a value")),
        };
        if capture {
            self.capture_scalar(b);
        }
        self.state = state;
        Ok(())
    }

    fn capturing(&self) -> bool {
        self.model.capturing || self.field.capturing
    }

    /// A byte of a number or literal: kept only for a top-level value of a wanted key.
    fn capture_scalar(&mut self, b: u8) {
        if self.depth == 1 {
            self.model.push(b);
            self.field.push(b);
        }
    }

    /// A top-level value ended: record it for the keys it belongs to, and stop when all are in
    /// or when it is a `model` that cannot be a name.
    fn value_done(&mut self, kind: ValueKind) {
        if self.model.capturing && !matches!(kind, ValueKind::String | ValueKind::Null) {
            self.model.capturing = false;
            self.state = State::Failed(ScanError::ModelNotString(kind));
            return;
        }
        self.model.complete(kind, kind == ValueKind::String);
        let text = matches!(
            kind,
            ValueKind::String | ValueKind::Number | ValueKind::Bool
        );
        self.field.complete(kind, text);
        let field_done = self.field_name.is_none() || self.field.found.is_some();
        self.state = if self.model.found.is_some() && field_done {
            State::Done
        } else {
            State::AfterValue
        };
    }

    fn string(&mut self, s: Str, b: u8) -> Result<(), ScanError> {
        match s {
            Str::Plain => match b {
                b'"' => self.end_string(),
                b'\\' => self.state = State::Str(Str::Escape),
                0x00..=0x1F => return Err(self.malformed("control character in string")),
                0x80..=0xFF => return self.utf8_lead(b),
                _ => self.emit(b),
            },
            Str::Escape => return self.escape(b),
            Str::Hex { high, digits, acc } => {
                let Some(d) = char::from(b).to_digit(16) else {
                    return Err(self.malformed("invalid \\u escape"));
                };
                let acc = acc << 4 | d;
                if digits < 3 {
                    let digits = digits + 1;
                    self.state = State::Str(Str::Hex { high, digits, acc });
                } else {
                    return self.code_unit(high, acc);
                }
            }
            Str::LowSlash { high } if b == b'\\' => self.state = State::Str(Str::LowU { high }),
            Str::LowU { high } if b == b'u' => self.state = State::Str(hex(Some(high))),
            Str::LowSlash { .. } | Str::LowU { .. } => {
                return Err(self.malformed("unpaired surrogate in \\u escape"))
            }
            Str::Utf8 { need, lo, hi } => {
                if !(lo..=hi).contains(&b) {
                    return Err(self.malformed("invalid UTF-8 in string"));
                }
                self.emit(b);
                self.state = State::Str(match need {
                    1 => Str::Plain,
                    _ => Str::Utf8 {
                        need: need - 1,
                        lo: 0x80,
                        hi: 0xBF,
                    },
                });
            }
        }
        Ok(())
    }

    fn end_string(&mut self) {
        if self.in_key {
            self.end_key();
        } else if self.depth == 1 {
            self.value_done(ValueKind::String);
        } else {
            self.state = State::AfterValue;
        }
    }

    fn escape(&mut self, b: u8) -> Result<(), ScanError> {
        let out = match b {
            b'"' | b'\\' | b'/' => b,
            b'b' => 0x08,
            b'f' => 0x0C,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                self.state = State::Str(hex(None));
                return Ok(());
            }
            _ => return Err(self.malformed("invalid escape in string")),
        };
        self.emit(out);
        self.state = State::Str(Str::Plain);
        Ok(())
    }

    fn code_unit(&mut self, high: Option<u32>, unit: u32) -> Result<(), ScanError> {
        let low = (0xDC00..=0xDFFF).contains(&unit);
        let scalar = match high {
            None if (0xD800..=0xDBFF).contains(&unit) => {
                self.state = State::Str(Str::LowSlash { high: unit });
                return Ok(());
            }
            None if !low => unit,
            Some(high) if low => 0x10000 + ((high - 0xD800) << 10 | (unit - 0xDC00)),
            _ => return Err(self.malformed("unpaired surrogate in \\u escape")),
        };
        let Some(c) = char::from_u32(scalar) else {
            return Err(self.malformed("invalid \\u escape"));
        };
        let mut utf8 = [0; 4];
        self.emit_all(c.encode_utf8(&mut utf8).as_bytes());
        self.state = State::Str(Str::Plain);
        Ok(())
    }

    fn utf8_lead(&mut self, b: u8) -> Result<(), ScanError> {
        // RFC 3629 table 3-7: the second byte's range rules out overlongs and surrogates.
        let (need, lo, hi) = match b {
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE | 0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return Err(self.malformed("invalid UTF-8 in string")),
        };
        self.emit(b);
        self.state = State::Str(Str::Utf8 { need, lo, hi });
        Ok(())
    }

    fn emit(&mut self, b: u8) {
        self.emit_all(&[b]);
    }

    fn emit_all(&mut self, bytes: &[u8]) {
        match self.sink {
            Sink::Drop => {}
            // A key's bytes are matched against the wanted names a run at a time.
            Sink::Key => {
                let field = self.field_name.as_deref().unwrap_or_default();
                advance(&mut self.model.matched, MODEL, bytes);
                advance(&mut self.field.matched, field, bytes);
            }
            Sink::Value => {
                self.model.extend(bytes);
                self.field.extend(bytes);
            }
        }
    }

    fn number(&mut self, n: Num, b: u8) -> Result<(), ScanError> {
        let next = match (n, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus | Num::Int, b'0'..=b'9') => Num::Int,
            (Num::Zero, b'0'..=b'9') => return Err(self.malformed("leading zero in number")),
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
            (Num::Exp, b'+' | b'-') => Num::ExpSign,
            (Num::Exp | Num::ExpSign | Num::ExpInt, b'0'..=b'9') => Num::ExpInt,
            (Num::Zero | Num::Int | Num::Frac | Num::ExpInt, _) => {
                // The number ended one byte ago; `b` belongs to what follows it.
                if self.depth == 1 {
                    self.value_done(ValueKind::Number);
                    if self.ended().is_some() {
                        return Ok(());
                    }
                }
                self.state = State::AfterValue;
                return self.after_value(b);
            }
            _ => return Err(self.malformed("invalid number")),
        };
        self.capture_scalar(b);
        self.state = State::Num(next);
        Ok(())
    }

    fn literal(
        &mut self,
        word: &'static [u8],
        at: usize,
        kind: ValueKind,
        b: u8,
    ) -> Result<(), ScanError> {
        if word.get(at) != Some(&b) {
            return Err(self.malformed("invalid literal"));
        }
        self.capture_scalar(b);
        if at + 1 < word.len() {
            self.state = State::Lit {
                word,
                at: at + 1,
                kind,
            };
        } else if self.depth == 1 {
            self.value_done(kind);
        } else {
            self.state = State::AfterValue;
        }
        Ok(())
    }
}

/// Length of the whitespace at the start of `s`.
fn ws_run(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| is_ws(b)).count()
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Length of the run at the start of `s` free of quotes, backslashes and control bytes (the
/// string content that needs no state change apart from UTF-8 checking), and whether that run is
/// all ASCII. Prompts are most of what goes by: the run's end is found by `memchr2` (vectorised,
/// AVX2 where the CPU has it), then one pass without early exits, which the compiler vectorises,
/// takes the lowest and the OR of its bytes: a control byte (malformed JSON, so rare) or a
/// non-ASCII one shows in them.
fn string_run(s: &[u8]) -> (usize, bool) {
    // Keys, roles and model names end within a few bytes: eight bytes at a time find their end
    // before a vector search would have started. Anything but plain ASCII goes the general way.
    let mut i = 0;
    while i < SHORT_RUN {
        let Some(word) = s.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) else {
            // Fewer than eight bytes left.
            let tail = s.get(i..).unwrap_or_default();
            return match tail.iter().position(|&b| special(b) || b >= 0x80) {
                Some(k) if tail.get(k).is_some_and(|&b| b >= 0x80) => string_run_long(s),
                Some(k) => (i + k, true),
                None => (s.len(), true),
            };
        };
        let m = special_or_high(u64::from_le_bytes(word));
        if m != 0 {
            // The lowest flagged byte is exact (see `special_or_high`).
            let at = i + (m.trailing_zeros() / 8) as usize;
            return match s.get(at) {
                Some(&b) if b < 0x80 => (at, true),
                _ => string_run_long(s),
            };
        }
        i += 8;
    }
    // `s[..i]` is plain ASCII.
    let (n, ascii) = string_run_long(s.get(i..).unwrap_or_default());
    (i + n, ascii)
}

/// A byte that ends a string's plain run: a quote, a backslash or a control byte.
fn special(b: u8) -> bool {
    matches!(b, b'"' | b'\\' | 0x00..=0x1F)
}

/// High bit set in each byte of `w` that is `"`, `\`, below 0x20 or non-ASCII. The lowest set
/// bit is exact; bytes above it may be flagged falsely (a borrow carries into them), so only
/// the lowest may be used.
fn special_or_high(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    (quote | backslash | control | w) & HIGH
}

fn string_run_long(s: &[u8]) -> (usize, bool) {
    let end = memchr::memchr2(b'"', b'\\', s).unwrap_or(s.len());
    let run = s.get(..end).unwrap_or_default();
    let (lowest, or) = run
        .iter()
        .fold((u8::MAX, 0), |(lo, or), &b| (lo.min(b), or | b));
    if lowest >= 0x20 {
        return (end, or < 0x80);
    }
    let end = run.iter().position(|&b| b < 0x20).unwrap_or(end);
    (end, run.get(..end).unwrap_or_default().is_ascii())
}

/// Length of the object or array at the start of `s` (`s[0]` is `{` or `[`) when it is whole
/// in `s`, valid JSON as the steps read it, and nests at most `room` levels; `None` when it is
/// not all there, is invalid, or holds a `\u` escape of a surrogate: the steps then read it
/// from its first byte, so an error is still reported at its exact offset and a value cut by
/// the chunk's end is carried over. Nothing is captured inside a nested value, so only its
/// validity and its end matter.
fn skip_nested(s: &[u8], room: u32) -> Option<usize> {
    // Bit `i`: the container at level `i + 1` of this value is an array.
    let mut stack: u128 = 0;
    let mut level: u32 = 0;
    let mut state = State::Value;
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        i += 1;
        let in_array = || level > 0 && stack & (1u128 << (level - 1)) != 0;
        state = match (state, b) {
            (State::KeyOrEnd | State::Key, b'"') => {
                i += skip_string(s.get(i..)?)?;
                State::Colon
            }
            (State::Colon, b':') => State::Value,
            (State::KeyOrEnd, b'}')
            | (State::ValueOrEnd, b']')
            | (State::AfterValue, b'}' | b']') => {
                if in_array() != (b == b']') {
                    return None;
                }
                level -= 1;
                if level == 0 {
                    return Some(i);
                }
                State::AfterValue
            }
            (State::AfterValue, b',') if in_array() => State::Value,
            (State::AfterValue, b',') => State::Key,
            (State::Value | State::ValueOrEnd, b'{' | b'[') => {
                if level >= room || level >= 127 {
                    return None;
                }
                let bit = 1u128 << level;
                level += 1;
                if b == b'[' {
                    stack |= bit;
                    State::ValueOrEnd
                } else {
                    stack &= !bit;
                    State::KeyOrEnd
                }
            }
            (State::Value | State::ValueOrEnd, b'"') => {
                i += skip_string(s.get(i..)?)?;
                State::AfterValue
            }
            (State::Value | State::ValueOrEnd, b'-' | b'0'..=b'9') => {
                i += skip_number(s.get(i - 1..)?)? - 1;
                State::AfterValue
            }
            (State::Value | State::ValueOrEnd, b't' | b'f' | b'n') => {
                let word: &[u8] = match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                if s.get(i - 1..i - 1 + word.len())? != word {
                    return None;
                }
                i += word.len() - 1;
                State::AfterValue
            }
            (_, b' ' | b'\t' | b'\n' | b'\r') => state,
            _ => return None,
        };
    }
    None
}

/// Length of a string's rest up to and including its closing quote (`s` starts after the
/// opening one); `None` for an invalid string, a `\u` escape of a surrogate, or no end in `s`.
fn skip_string(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let rest = s.get(i..)?;
        let (len, ascii) = string_run(rest);
        if !ascii {
            let run = rest.get(..len)?;
            if simdutf8::basic::from_utf8(run).is_err() {
                return None;
            }
        }
        i += len;
        match s.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match s.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = s.get(i + 2..i + 6)?;
                    let unit = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                    // `from_str_radix` takes a sign; the steps would not.
                    if !hex.iter().all(u8::is_ascii_hexdigit) || (0xD800..=0xDFFF).contains(&unit) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            // A control byte, or UTF-8 that is invalid or cut off.
            _ => return None,
        }
    }
}

/// Length of the number at the start of `s`; `None` when it is invalid or may go on past `s`.
fn skip_number(s: &[u8]) -> Option<usize> {
    let digits = |from: usize| {
        s.get(from..)
            .map_or(0, |r| r.iter().take_while(|b| b.is_ascii_digit()).count())
    };
    let mut i = usize::from(s.first() == Some(&b'-'));
    match s.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i += digits(i),
        _ => return None,
    }
    if s.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return None;
        }
        i += 1 + n;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return None;
        }
        i += n;
    }
    // The byte after the number must be in `s` (a number at the end may go on), and must not
    // be a digit (`01`).
    if s.get(i)?.is_ascii_digit() {
        return None;
    }
    Some(i)
}

fn hex(high: Option<u32>) -> Str {
    Str::Hex {
        high,
        digits: 0,
        acc: 0,
    }
}

/// After the first byte of `word`.
fn literal(word: &'static [u8], kind: ValueKind) -> State {
    State::Lit { word, at: 1, kind }
}

/// The key being read continues with `run`: how much of `name` it still matches.
fn advance(matched: &mut Option<usize>, name: &[u8], run: &[u8]) {
    *matched = match *matched {
        Some(i) if name.get(i..i + run.len()) == Some(run) => Some(i + run.len()),
        _ => None,
    };
}

// === impl ScanError ===

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { offset, reason } => {
                write!(f, "malformed JSON body at byte {offset}: {reason}")
            }
            Self::LimitReached { limit } => write!(
                f,
                "\"model\" (or another required field) not found in the first {limit} bytes of the \
                 JSON body; send it earlier, use a routing header, or raise limits.model_prefix"
            ),
            Self::NotAnObject => f.write_str("request body is not a JSON object"),
            Self::ModelNotString(kind) => write!(
                f,
                "Invalid type for `model`: expected a string (the model's name), but got {} instead",
                kind.with_article()
            ),
        }
    }
}

impl std::error::Error for ScanError {}

// === impl ValueKind ===

impl ValueKind {
    /// `a string`, `an object`: for messages.
    pub fn with_article(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Number => "a number",
            Self::Bool => "a boolean",
            Self::Null => "null",
            Self::Object => "an object",
            Self::Array => "an array",
        }
    }
}

// === impl Slot ===

impl Slot {
    fn push(&mut self, b: u8) {
        if self.capturing {
            self.buf.extend(&[b]);
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        if self.capturing {
            self.buf.extend(bytes);
        }
    }

    /// The value being captured ended; `text` says whether its bytes are worth keeping.
    fn complete(&mut self, kind: ValueKind, text: bool) {
        if !self.capturing {
            return;
        }
        self.capturing = false;
        self.found = Some(kind);
        // Strings were checked byte by byte and numbers and literals are ASCII, so this cannot
        // fail; a failure would leave the value unset rather than panic.
        self.text = text && std::str::from_utf8(self.buf.as_slice()).is_ok();
    }

    fn text(&self) -> Option<&str> {
        if !self.text {
            return None;
        }
        std::str::from_utf8(self.buf.as_slice()).ok()
    }
}

#[cfg(test)]
mod tests;
