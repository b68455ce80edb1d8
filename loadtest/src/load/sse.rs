//! An incremental server-sent-events scanner: it classifies each event of an OpenAI-style stream
//! (a token and the choice it belongs to, the usage chunk, `[DONE]`, an error, anything else) as
//! chunks arrive, without parsing JSON and without allocating once its line buffer has grown.

use std::sync::LazyLock;

use memchr::memmem;

/// What one dispatched event carried. When an event has several `data:` lines, the greatest
/// class wins (a token over usage, an error over everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// Data with no token text (a role-only delta, a finish reason).
    Other,
    /// No token text, and a `usage` object with `completion_tokens`: the chunk OpenAI, vLLM,
    /// SGLang and the simulator send last when asked for `stream_options.include_usage`.
    Usage(Usage),
    /// Data with a non-empty `content` or `text` string, a tool call's `name` or `arguments`,
    /// or a reasoning model's `reasoning_content` (or `reasoning`): a token reached the client.
    /// It carries the `index` of its choice (0 when the event names none): with `n` > 1 the
    /// choices' chunks arrive interleaved, and each choice has its own token pace.
    Token(u32),
    /// `data: [DONE]`, the end of an OpenAI stream.
    Done,
    /// `data: {"error": ...}` or `event: error`: the server failed after its 200.
    Error,
}

/// Token counts from an answer's `usage` object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Usage {
    /// `completion_tokens`: output tokens over every choice.
    pub completion: u64,
    /// `prompt_tokens`, when the object has it.
    pub prompt: Option<u64>,
}

/// Scans one response body at a time; [`SseScanner::reset`] before the next.
#[derive(Debug, Default)]
pub struct SseScanner {
    /// The start of a line split across chunks.
    carry: Vec<u8>,
    /// The class of the event being read (`None` until it has a data or event line).
    pending: Option<Event>,
}

// === impl SseScanner ===

impl SseScanner {
    /// Forgets any partial line or event, keeping the buffer's capacity.
    pub fn reset(&mut self) {
        self.carry.clear();
        self.pending = None;
    }

    /// Scans `chunk`, calling `on_event` for each event it completes (at its blank line).
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(Event)) {
        if !self.carry.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                None => {
                    self.carry.extend_from_slice(chunk);
                    return;
                }
                Some(i) => {
                    self.carry.extend_from_slice(&chunk[..i]);
                    chunk = &chunk[i + 1..];
                    let line = std::mem::take(&mut self.carry);
                    self.line(&line, &mut on_event);
                    self.carry = line;
                    self.carry.clear();
                }
            }
        }
        while let Some(i) = memchr::memchr(b'\n', chunk) {
            self.line(&chunk[..i], &mut on_event);
            chunk = &chunk[i + 1..];
        }
        self.carry.extend_from_slice(chunk);
    }

    /// The body ended: an event still open (no blank line after it) is dispatched too, so a
    /// final `[DONE]` without its blank line still counts.
    pub fn finish(&mut self, mut on_event: impl FnMut(Event)) {
        if !self.carry.is_empty() {
            let line = std::mem::take(&mut self.carry);
            self.line(&line, &mut on_event);
        }
        if let Some(event) = self.pending.take() {
            on_event(event);
        }
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(Event)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if let Some(event) = self.pending.take() {
                on_event(event);
            }
            return;
        }
        let class = if let Some(data) = line.strip_prefix(b"data:") {
            classify(data)
        } else if let Some(name) = line.strip_prefix(b"event:") {
            if name.trim_ascii() == b"error" {
                Event::Error
            } else {
                return;
            }
        } else {
            // Comments, `id:`, `retry:`: nothing a client measures.
            return;
        };
        self.pending = Some(self.pending.map_or(class, |p| p.max(class)));
    }
}

/// Classifies one `data:` payload.
pub fn classify(data: &[u8]) -> Event {
    let data = data.trim_ascii();
    if data == b"[DONE]" {
        Event::Done
    } else if has_key(data, b"\"error\"") {
        Event::Error
    } else if has_text(data, b"\"content\"")
        || has_text(data, b"\"text\"")
        // vLLM and OpenAI: the call's id and name first, then the arguments piece by piece.
        || (memmem::find(data, b"\"tool_calls\"").is_some()
            && (has_text(data, b"\"name\"") || has_text(data, b"\"arguments\"")))
        || has_text(data, b"\"reasoning_content\"")
        || has_text(data, b"\"reasoning\"")
    {
        Event::Token(choice_index(data))
    } else {
        // Only events without a token are searched: the usage chunk has none, and the token
        // events (the hot loop) pay nothing for it.
        usage(data).map_or(Event::Other, Event::Usage)
    }
}

/// The counts of the first `"usage":{…}` object in `data` that has `completion_tokens`; also
/// used on the tail of a whole (non-stream) answer, which may start in the middle of a value.
pub fn usage(data: &[u8]) -> Option<Usage> {
    const USAGE: &[u8] = b"\"usage\"";
    static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(USAGE));
    FINDER.find_iter(data).find_map(|at| {
        let obj = value_after(data, at + USAGE.len())?.strip_prefix(b"{")?;
        Some(Usage {
            completion: top_level_number(obj, b"completion_tokens")?,
            prompt: top_level_number(obj, b"prompt_tokens"),
        })
    })
}

/// The `index` of the event's first choice (`"choices":[{…,"index":K,…}`), 0 when it names
/// none. OpenAI, vLLM, SGLang and TGI write `index` first, so the walk stops at the first key;
/// serde_json without `preserve_order` (the simulator) writes it after `delta`, whose tool calls
/// carry an `index` of their own, so keys inside nested values (and strings) are skipped.
fn choice_index(data: &[u8]) -> u32 {
    const CHOICES: &[u8] = b"\"choices\"";
    // Built once: building a searcher costs about as much as the search itself.
    static FINDER: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(CHOICES));
    FINDER
        .find(data)
        .and_then(|at| value_after(data, at + CHOICES.len()))
        .and_then(|v| v.strip_prefix(b"["))
        .and_then(|v| v.trim_ascii_start().strip_prefix(b"{"))
        .and_then(|obj| top_level_number(obj, b"index"))
        .map_or(0, |i| u32::try_from(i).unwrap_or(u32::MAX))
}

/// The number under `key` (without quotes) among the top-level keys of the object whose body
/// (after its `{`) is `obj`. The key is an array so that comparing it with each key walked is
/// a length check and a fixed-size compare, not a call to `memcmp`: this runs for every token.
fn top_level_number<const N: usize>(obj: &[u8], key: &[u8; N]) -> Option<u64> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = obj.get(i) {
        i += 1;
        match b {
            b'"' => {
                let start = i;
                i = start + string_len(obj.get(start..)?)?;
                let text = &obj[start..i];
                i += 1;
                if depth == 0 && text == key {
                    // A key (a colon follows), not a string value that reads as the key.
                    if let Some(value) = value_after(obj, i) {
                        return leading_number(value);
                    }
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return None,
            b'}' | b']' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Bytes up to the closing quote of a JSON string whose contents start `s`.
fn string_len(s: &[u8]) -> Option<usize> {
    // Byte by byte: the strings walked (keys, a token or two) are too short for memchr.
    let mut i = 0;
    loop {
        match *s.get(i)? {
            b'"' => return Some(i),
            // A backslash: the next byte is escaped, whatever it is.
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The unsigned integer `value` starts with (saturating), `None` when it starts otherwise.
fn leading_number(value: &[u8]) -> Option<u64> {
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    (digits > 0).then(|| {
        value[..digits].iter().fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        })
    })
}

/// The key (with its quotes) occurs followed by a colon: a key, not a word inside a string
/// (inside a JSON string the quotes would be escaped).
fn has_key(data: &[u8], key: &[u8]) -> bool {
    memmem::find_iter(data, key).any(|i| value_after(data, i + key.len()).is_some())
}

/// The key occurs with a non-empty string value.
fn has_text(data: &[u8], key: &[u8]) -> bool {
    memmem::find_iter(data, key).any(|i| {
        value_after(data, i + key.len())
            .is_some_and(|v| v.len() >= 2 && v[0] == b'"' && v[1] != b'"')
    })
}

/// What follows `: ` after a key ending at `at`, or `None` when no colon follows.
fn value_after(data: &[u8], at: usize) -> Option<&[u8]> {
    let rest = data.get(at..)?.trim_ascii_start();
    let rest = rest.strip_prefix(b":")?;
    Some(rest.trim_ascii_start())
}
