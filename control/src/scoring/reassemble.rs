//! One answer's text, whether it came whole (`choices[i].message.content` / `choices[i].text`) or
//! as an SSE stream of `choices[i].delta` chunks. Both forms end up in [`Reassembled`], so the
//! scorer and the synthetic checks compare and assert on the same thing.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

/// Longest SSE line kept; an engine never sends one this long, so a longer one is garbage or an
/// attack, and holding it would make memory depend on the peer.
const MAX_LINE: usize = 4 << 20;
/// Notes kept per answer: the first few say what went wrong; thousands would only cost memory.
const MAX_NOTES: usize = 8;

/// The answer's choices in index order, and how the stream (if any) ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reassembled {
    pub choices: Vec<Choice>,
    /// A `data: [DONE]` event was seen (always true for whole bodies).
    pub done: bool,
    /// Error events, events that are not JSON, a stream cut mid-event; at most [`MAX_NOTES`].
    pub errors: Vec<String>,
}

/// One choice, its deltas concatenated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choice {
    pub index: u64,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
}

/// One tool call, its `function.name` and `function.arguments` fragments concatenated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCall {
    pub index: u64,
    pub name: String,
    pub arguments: String,
}

/// An incremental SSE reader: feed it bytes split anywhere (mid-line, mid-UTF-8 character).
#[derive(Debug, Default)]
pub struct SseReassembler {
    line: Vec<u8>,
    /// The `data:` lines of the event being read, joined by `\n` as the SSE spec says.
    data: Vec<u8>,
    has_data: bool,
    choices: BTreeMap<u64, PartialChoice>,
    done: bool,
    errors: Vec<String>,
    skipping_line: bool,
}

#[derive(Debug, Default)]
struct PartialChoice {
    text: String,
    tools: BTreeMap<u64, ToolCall>,
    finish_reason: Option<String>,
}

// === impl Reassembled ===

impl Reassembled {
    /// A whole SSE body.
    pub fn from_sse(body: &[u8]) -> Self {
        let mut r = SseReassembler::default();
        r.feed(body);
        r.finish()
    }

    /// A whole (non-streamed) completion or chat completion body.
    pub fn from_json(body: &Value) -> Self {
        let mut choices = BTreeMap::new();
        for choice in body
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            absorb_choice(&mut choices, choice, "message");
        }
        let mut errors = Vec::new();
        if let Some(e) = body.get("error") {
            note(&mut errors, format!("error body: {}", error_message(e)));
        }
        Self {
            choices: into_choices(choices),
            done: true,
            errors,
        }
    }

    /// A whole body from its bytes: the same as parsing it into a [`Value`] and calling
    /// [`Reassembled::from_json`], without building the parts the answer text does not use
    /// (see [`Frame`]). The error is the JSON syntax error when the body is not JSON.
    pub fn from_json_bytes(body: &[u8]) -> Result<Self, serde_json::Error> {
        let mut choices = BTreeMap::new();
        let mut errors = Vec::new();
        match read_frame(body) {
            Ok(frame) => {
                if let Some(e) = &frame.error {
                    note(&mut errors, format!("error body: {}", error_message(e)));
                }
                for Obj(c) in frame.choices.iter().flatten() {
                    c.absorb(&mut choices, false);
                }
            }
            Err(_) => return serde_json::from_slice::<Value>(body).map(|v| Self::from_json(&v)),
        }
        Ok(Self {
            choices: into_choices(choices),
            done: true,
            errors,
        })
    }

    /// No `[DONE]`, an error event or a cut event: the text is probably partial.
    pub fn complete(&self) -> bool {
        self.done && self.errors.is_empty()
    }

    /// The text compared between two answers: choices in index order, one per line, each tool
    /// call as `name(arguments)` after its choice's text.
    pub fn answer_text(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.choices.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&c.text);
            for t in &c.tool_calls {
                out.push('\n');
                out.push_str(&t.name);
                out.push('(');
                out.push_str(&t.arguments);
                out.push(')');
            }
        }
        out
    }

    /// [`Reassembled::answer_text`], without a copy in the common case of one choice and no
    /// tool calls.
    pub fn into_answer_text(mut self) -> String {
        match self.choices.as_mut_slice() {
            [only] if only.tool_calls.is_empty() => std::mem::take(&mut only.text),
            _ => self.answer_text(),
        }
    }

    /// The non-streamed body this answer would have had, so that one JSON-path assertion works
    /// for both forms. Each choice carries both `message` (chat) and `text` (completions).
    pub fn to_json(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|c| {
                let mut message = json!({"role": "assistant", "content": c.text});
                if !c.tool_calls.is_empty() {
                    let calls: Vec<Value> = c
                        .tool_calls
                        .iter()
                        .map(|t| json!({"index": t.index, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}))
                        .collect();
                    message["tool_calls"] = Value::Array(calls);
                }
                json!({"index": c.index, "message": message, "text": c.text, "finish_reason": c.finish_reason})
            })
            .collect();
        json!({ "choices": choices })
    }
}

// === impl SseReassembler ===

impl SseReassembler {
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = memchr::memchr(b'\n', bytes) {
            self.push_line_part(&bytes[..nl]);
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !std::mem::take(&mut self.skipping_line) {
                self.line_done(&line);
            }
            line.clear();
            self.line = line;
            bytes = &bytes[nl + 1..];
        }
        self.push_line_part(bytes);
    }

    /// Ends the stream. An event without its closing blank line was cut, and is dropped as the
    /// SSE spec says; `[DONE]` is only believed when its event was closed.
    pub fn finish(mut self) -> Reassembled {
        if self.has_data || !self.line.is_empty() {
            note(&mut self.errors, "stream ended mid-event".to_owned());
        }
        Reassembled {
            choices: into_choices(self.choices),
            done: self.done,
            errors: self.errors,
        }
    }

    /// A `data: [DONE]` event was read.
    pub fn done(&self) -> bool {
        self.done
    }

    fn push_line_part(&mut self, part: &[u8]) {
        if self.skipping_line {
            return;
        }
        if self.line.len() + part.len() > MAX_LINE {
            note(&mut self.errors, format!("SSE line over {MAX_LINE} bytes"));
            self.line.clear();
            self.skipping_line = true;
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn line_done(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        // Comments (`: keep-alive`) and the other fields (`event:`, `id:`, `retry:`) carry no text.
        let Some(value) = line.strip_prefix(b"data:") else {
            return;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if self.has_data {
            self.data.push(b'\n');
        }
        if self.data.len() + value.len() > MAX_LINE {
            note(&mut self.errors, format!("SSE event over {MAX_LINE} bytes"));
            return;
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
    }

    fn dispatch(&mut self) {
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        let data = std::mem::take(&mut self.data);
        if data.trim_ascii() == b"[DONE]" {
            self.done = true;
            return;
        }
        if self.done {
            note(&mut self.errors, "event after [DONE]".to_owned());
        }
        match read_frame(&data) {
            Ok(frame) => self.absorb_frame(&frame),
            // Valid JSON of another form (a field of an unexpected type, a repeated key): read
            // as before, from a `Value`.
            Err(_) => match serde_json::from_slice::<Value>(&data) {
                Ok(event) => self.absorb(&event),
                Err(e) => note(&mut self.errors, format!("event is not JSON: {e}")),
            },
        }
        self.data = data;
        self.data.clear();
    }

    fn absorb_frame(&mut self, frame: &Frame<'_>) {
        if let Some(e) = &frame.error {
            note(
                &mut self.errors,
                format!("error event: {}", error_message(e)),
            );
            return;
        }
        for Obj(c) in frame.choices.iter().flatten() {
            c.absorb(&mut self.choices, true);
        }
    }

    fn absorb(&mut self, event: &Value) {
        if let Some(e) = event.get("error") {
            note(
                &mut self.errors,
                format!("error event: {}", error_message(e)),
            );
            return;
        }
        // Usage-only chunks have `choices: []` or `null`: nothing to add.
        for choice in event
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            absorb_choice(&mut self.choices, choice, "delta");
        }
    }
}

/// What the reassembly reads of a body or a stream event, typed so that parsing skips every
/// other field without building it: a `Value` made a map entry and a `String` for each key and
/// value, and reading a 170-byte chat answer took 15k instructions (scoring a pair 32.6k, more
/// than the mirror's whole exchange on the worker; 8.4k and 20.5k with `message` still a
/// `Value`, ≈ 6.5k and 15.2k with it typed too, read from a `str`). Strict on purpose: JSON
/// of any other form (a field of another type, a repeated key, a choice that is not an object)
/// fails here and is read from a `Value` as before, so both ways give the same answer
/// (`typed_and_value_reads_agree` checks it). Read through [`Obj`], since a derived struct would
/// also take an array, positionally.
#[derive(Deserialize)]
struct Frame<'a> {
    /// `Some` for any `error` key, `null` included (as `Value::get` sees it).
    #[serde(default, deserialize_with = "present")]
    error: Option<Value>,
    #[serde(default, borrow)]
    choices: Option<Vec<Obj<ChoiceIn<'a>>>>,
}

#[derive(Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Obj<MessageIn<'a>>>,
    #[serde(default, borrow)]
    delta: Option<Obj<MessageIn<'a>>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

/// A choice's `message` (whole bodies) or `delta` (stream chunks), typed like [`Frame`]: as a
/// `Value` it was a map, a `String` per key and value, and half the instructions of scoring a
/// pair (session 14).
#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(default, borrow)]
    content: Option<ContentIn<'a>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<Obj<ToolCallIn<'a>>>>,
}

/// `content`: a string, or (multimodal chat) an array of parts; `null` is no content. Any other
/// type fails the typed read (the `Value` reading ignores it, and gives the answer).
enum ContentIn<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Obj<PartIn<'a>>>),
}

#[derive(Deserialize)]
struct PartIn<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ToolCallIn<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    function: Option<Obj<FunctionIn<'a>>>,
}

#[derive(Deserialize)]
struct FunctionIn<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for ContentIn<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = ContentIn<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of parts")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(ContentIn::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ContentIn::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(ContentIn::Text(Cow::Owned(v)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::new();
                while let Some(p) = seq.next_element()? {
                    parts.push(p);
                }
                Ok(ContentIn::Parts(parts))
            }
        }
        d.deserialize_any(ContentVisitor)
    }
}

/// Reads a body or an event through [`Frame`]. JSON is UTF-8 throughout, so bytes that are not
/// fail either way; bytes that are are checked once, here, and read as a `str`, which spares
/// serde_json checking every key and string again (a sixth of reading a small answer).
fn read_frame(bytes: &[u8]) -> Result<Frame<'_>, serde_json::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str::<Obj<Frame<'_>>>(text),
        Err(_) => serde_json::from_slice::<Obj<Frame<'_>>>(bytes),
    }
    .map(|Obj(frame)| frame)
}

/// A `T` read only from a JSON object.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(ObjVisitor(PhantomData))
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl ChoiceIn<'_> {
    fn absorb(&self, choices: &mut BTreeMap<u64, PartialChoice>, delta: bool) {
        let slot = slot(
            choices,
            self.index.unwrap_or(0),
            self.text.as_deref(),
            self.finish_reason.as_deref(),
        );
        let msg = if delta { &self.delta } else { &self.message };
        let Some(Obj(msg)) = msg else { return };
        match &msg.content {
            Some(ContentIn::Text(t)) => slot.text.push_str(t),
            Some(ContentIn::Parts(parts)) => {
                for Obj(p) in parts {
                    slot.text.push_str(p.text.as_deref().unwrap_or_default());
                }
            }
            None => {}
        }
        for (i, Obj(call)) in msg.tool_calls.iter().flatten().enumerate() {
            let function = call.function.as_ref().map(|Obj(f)| f);
            slot.push_tool(
                call.index.unwrap_or(i as u64),
                function.and_then(|f| f.name.as_deref()),
                function.and_then(|f| f.arguments.as_deref()),
            );
        }
    }
}

/// The body is read through [`Frame`], without the `Value` fallback.
#[cfg(test)]
pub(crate) fn reads_typed(body: &[u8]) -> bool {
    read_frame(body).is_ok()
}

#[cfg(test)]
impl SseReassembler {
    /// One event's data read only through a `Value`, as before [`Frame`]: the reference the
    /// typed reading is checked against.
    pub(crate) fn absorb_value(&mut self, data: &[u8]) {
        match serde_json::from_slice::<Value>(data) {
            Ok(event) => self.absorb(&event),
            Err(e) => note(&mut self.errors, format!("event is not JSON: {e}")),
        }
    }
}

/// Adds one choice object (`message` in whole bodies, `delta` in stream chunks) to the map.
fn absorb_choice(choices: &mut BTreeMap<u64, PartialChoice>, choice: &Value, message_key: &str) {
    let slot = slot(
        choices,
        choice.get("index").and_then(Value::as_u64).unwrap_or(0),
        choice.get("text").and_then(Value::as_str),
        choice.get("finish_reason").and_then(Value::as_str),
    );
    let Some(msg) = choice.get(message_key) else {
        return;
    };
    push_content(&mut slot.text, msg.get("content"));
    for (i, call) in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        // Whole bodies may omit `index`; stream chunks use it to say which call grows.
        let ti = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(i as u64);
        let function = call.get("function");
        let part = |k: &str| function.and_then(|f| f.get(k)).and_then(Value::as_str);
        slot.push_tool(ti, part("name"), part("arguments"));
    }
}

/// The choice at `index`, with its `text` and `finish_reason` added.
fn slot<'c>(
    choices: &'c mut BTreeMap<u64, PartialChoice>,
    index: u64,
    text: Option<&str>,
    finish_reason: Option<&str>,
) -> &'c mut PartialChoice {
    let slot = choices.entry(index).or_default();
    if let Some(text) = text {
        slot.text.push_str(text);
    }
    if let Some(reason) = finish_reason {
        slot.finish_reason = Some(reason.to_owned());
    }
    slot
}

impl PartialChoice {
    /// Adds a tool call's fragments to the call at `index` (created even when both are absent).
    fn push_tool(&mut self, index: u64, name: Option<&str>, arguments: Option<&str>) {
        let tool = self.tools.entry(index).or_insert_with(|| ToolCall {
            index,
            ..ToolCall::default()
        });
        tool.name.push_str(name.unwrap_or_default());
        tool.arguments.push_str(arguments.unwrap_or_default());
    }
}

/// `content` is a string, or (multimodal chat) an array of parts whose `text` counts.
fn push_content(out: &mut String, content: Option<&Value>) {
    match content {
        Some(Value::String(s)) => out.push_str(s),
        Some(Value::Array(parts)) => {
            for p in parts {
                out.push_str(p.get("text").and_then(Value::as_str).unwrap_or_default());
            }
        }
        _ => {}
    }
}

fn into_choices(map: BTreeMap<u64, PartialChoice>) -> Vec<Choice> {
    map.into_iter()
        .map(|(index, p)| Choice {
            index,
            text: p.text,
            tool_calls: p.tools.into_values().collect(),
            finish_reason: p.finish_reason,
        })
        .collect()
}

fn error_message(e: &Value) -> String {
    let msg = match e.get("message").and_then(Value::as_str) {
        Some(m) => m.to_owned(),
        None => e.to_string(),
    };
    truncate(&msg, 200)
}

pub(crate) fn note(notes: &mut Vec<String>, msg: String) {
    if notes.len() < MAX_NOTES {
        notes.push(msg);
    }
}

/// At most `max` bytes of `s`, cut on a character boundary, marked when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
