//! Shadow scoring: how close the candidate's answer to a mirrored request is to the stable one.
//!
//! # The per-pair score (`PairScore::score`, in `0..=1`)
//!
//! 1. Status first. Different status classes (200 vs 500, 400 vs 503) score 0. Both non-2xx:
//!    1.0 for the same status (the revisions agree the request is bad or the load too high),
//!    0.5 for the same class with another code (400 vs 429). Error bodies are never compared:
//!    engines word them differently.
//! 2. Embeddings: the mean cosine similarity of the vectors, index by index, clamped to `0..=1`;
//!    a missing vector or a dimension mismatch counts 0 for that index.
//! 3. Text (chat, completions, other paths): 1.0 when the answers are equal after whitespace and
//!    case normalisation; otherwise `0.8 × similarity + 0.2 × length_ratio`, where similarity is
//!    the multiset Jaccard index of word unigrams and bigrams over the first
//!    [`MAX_SIMILARITY_BYTES`] of each normalised answer (a sort of at most two keys a byte, so
//!    a long answer cannot stall the control loop). Unigrams forgive reordering, bigrams pull it
//!    back down; the length term rewards a paraphrase of the right size over a fragment. A JSON
//!    answer (tool calls, structured output) whose shape differs from the stable one is capped at
//!    [`JSON_SHAPE_CAP`]: a broken schema breaks the caller however close the words are.
//! 4. Tool calls of the same shape (the same functions, in order, with the same argument keys
//!    and types): the share of argument values that agree, leaf by leaf (strings after the
//!    text normalisation, numbers by value), averaged over the calls. Key order and spacing do
//!    not count (engines serialise arguments differently); a wrong city does, wholly, which
//!    word overlap of the JSON text would blur (the braces, quotes and keys all match).
//!
//! A pair is `comparable` only when both sides were captured whole: neither overflowed the
//! capture, neither was cut (`failed`), and a streamed 2xx answer ended with `[DONE]` and no
//! error event. Partial text would score low for reasons the error-rate gate already counts, so
//! such pairs are left out of [`ScoreStats`]' mean and share.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;

pub(crate) mod embedding;
mod reassemble;
mod stats;

pub use reassemble::{Choice, Reassembled, SseReassembler, ToolCall};
pub use stats::{GateInput, ScoreStats, DEFAULT_PAIR_THRESHOLD, SCORE_BUCKETS};

pub(crate) use reassemble::{note, truncate};

/// Bytes of each normalised answer the similarity looks at; past this the prefix decides.
pub const MAX_SIMILARITY_BYTES: usize = 16 * 1024;
/// Highest score of an answer whose JSON shape differs from the stable one's.
pub const JSON_SHAPE_CAP: f64 = 0.5;
/// Weights of word similarity and length ratio in a text score; they add up to 1.
const SIMILARITY_WEIGHT: f64 = 0.8;
const LENGTH_WEIGHT: f64 = 0.2;
/// Both non-2xx, same class, another code: they agree it failed, not why.
const SAME_CLASS_SCORE: f64 = 0.5;

/// One side's response as the data plane captured it (mirrors `rollgate_proxy::shadow::Side`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// Up to the capture limit of the response body.
    pub body: Bytes,
    /// The body was longer than the capture limit.
    pub overflow: bool,
    /// The stream broke (error event, truncated, reset, timeout).
    pub failed: bool,
}

/// Which OpenAI endpoint a pair came from; it decides how bodies are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Chat,
    Completion,
    Embedding,
    Other,
}

/// How one candidate answer compares with the stable one.
#[derive(Clone, Debug, PartialEq)]
pub struct PairScore {
    pub kind: Kind,
    /// Same answer text (chat, completions), same vectors (embeddings), same bytes (other).
    /// Content fields (`exact` to `cosine`) are only filled when both sides are 2xx.
    pub exact: bool,
    /// Equal after collapsing whitespace and lowercasing; embeddings: cosine ≥ 0.999999.
    pub normalized: bool,
    /// `None` when neither answer is JSON (object or array text, or tool calls).
    pub json_shape: Option<bool>,
    /// min/max of the answers' token counts (words and punctuation); 1.0 when both are empty.
    pub length_ratio: f64,
    pub cosine: Option<f64>,
    /// Both statuses are in the same class (2xx, 4xx, 5xx).
    pub status_match: bool,
    /// Overall agreement in `0..=1`; see the module docs.
    pub score: f64,
    /// Both sides were captured whole; a pair that is not must not count.
    pub comparable: bool,
    /// Why the pair is not comparable or scored low, for logs; a few at most.
    pub notes: Vec<String>,
}

/// What one side says, read for comparison.
#[derive(Debug)]
struct Read {
    text: String,
    /// One per choice (one for other paths): the JSON shape of the answer, if it is JSON.
    shapes: Vec<Option<Shape>>,
    /// Every tool call's arguments, choice by choice, parsed (`None`: not JSON); empty when
    /// the answer calls no tool.
    calls: Vec<Option<Value>>,
    complete: bool,
}

/// The part of a JSON answer that a caller's parser depends on.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    /// Top-level keys and the JSON type of each value.
    Object(BTreeMap<String, &'static str>),
    Array,
    /// Each tool call's name and the shape of its arguments (`None`: not JSON).
    Tools(Vec<(String, Option<Box<Shape>>)>),
}

/// Scores one pair: `primary` is the stable answer, `shadow` the candidate's.
pub fn score(path: &str, streamed: bool, primary: &Answer, shadow: &Answer) -> PairScore {
    let kind = Kind::from_path(path);
    let mut out = PairScore {
        kind,
        exact: false,
        normalized: false,
        json_shape: None,
        length_ratio: 0.0,
        cosine: None,
        status_match: primary.status / 100 == shadow.status / 100,
        score: 0.0,
        comparable: true,
        notes: Vec::new(),
    };
    for (side, a) in [("stable", primary), ("candidate", shadow)] {
        if a.overflow {
            out.not_comparable(format!("{side} answer overflowed the capture"));
        }
        if a.failed {
            out.not_comparable(format!("{side} answer was cut"));
        }
    }
    if !is_success(primary.status) || !is_success(shadow.status) {
        out.score = status_score(primary.status, shadow.status);
        return out;
    }
    match kind {
        Kind::Embedding => embedding::compare(&mut out, primary, shadow),
        _ => compare_text(&mut out, streamed, primary, shadow),
    }
    out
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Only called when at least one side is not 2xx, so "same class" means "both failed alike".
fn status_score(a: u16, b: u16) -> f64 {
    match (a == b, a / 100 == b / 100) {
        (true, _) => 1.0,
        (false, true) => SAME_CLASS_SCORE,
        (false, false) => 0.0,
    }
}

fn compare_text(out: &mut PairScore, streamed: bool, primary: &Answer, shadow: &Answer) {
    let p = read(out, "stable", streamed, primary);
    let s = read(out, "candidate", streamed, shadow);
    if !(p.complete && s.complete) {
        out.comparable = false;
    }
    out.exact = match out.kind {
        Kind::Other => primary.body == shadow.body,
        _ => p.text == s.text,
    };
    let (np, ns) = (normalize(&p.text), normalize(&s.text));
    out.normalized = np == ns;
    if p.shapes.iter().chain(&s.shapes).any(Option::is_some) {
        out.json_shape = Some(p.shapes == s.shapes);
    }
    out.score = if out.normalized {
        // The same tokens on both sides.
        out.length_ratio = 1.0;
        1.0
    } else {
        let (gp, gs) = (Grams::of(&np), Grams::of(&ns));
        out.length_ratio = ratio(gp.tokens, gs.tokens);
        SIMILARITY_WEIGHT * similarity(gp, gs) + LENGTH_WEIGHT * out.length_ratio
    };
    if out.json_shape == Some(false) {
        out.score = out.score.min(JSON_SHAPE_CAP);
    } else if out.json_shape == Some(true) && !out.normalized && only_calls(&p.shapes) {
        // Equal shapes of tool calls only: the same calls on both sides, name by name.
        out.score = arguments_agreement(&p.calls, &s.calls);
    }
}

/// Every choice is tool calls (a text beside them, rare, is left to the calls).
fn only_calls(shapes: &[Option<Shape>]) -> bool {
    shapes.iter().all(|s| matches!(s, Some(Shape::Tools(_))))
}

/// The mean over the calls of the share of argument leaves that agree; arguments that are not
/// JSON agree only when equal after normalisation (scored 1 or 0 then).
fn arguments_agreement(p: &[Option<Value>], s: &[Option<Value>]) -> f64 {
    let each = p.iter().zip(s).map(|(a, b)| match (a, b) {
        (Some(a), Some(b)) => {
            let (mut la, mut lb) = (BTreeMap::new(), BTreeMap::new());
            leaves(a, &mut String::new(), &mut la);
            leaves(b, &mut String::new(), &mut lb);
            let union = la.len() + lb.keys().filter(|k| !la.contains_key(*k)).count();
            let agree = la
                .iter()
                .filter(|(k, v)| lb.get(*k).is_some_and(|w| same_leaf(v, w)))
                .count();
            if union == 0 {
                1.0
            } else {
                agree as f64 / union as f64
            }
        }
        // Unparsable on both sides (a shape difference would have capped the score).
        _ => 0.0,
    });
    let n = p.len().min(s.len());
    if n == 0 {
        return 1.0;
    }
    each.sum::<f64>() / n as f64
}

/// Each scalar (and empty object or array) of `v` under its path (`/city`, `/days/0`).
fn leaves<'a>(v: &'a Value, path: &mut String, out: &mut BTreeMap<String, &'a Value>) {
    let at = path.len();
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                path.push('/');
                path.push_str(k);
                leaves(v, path, out);
                path.truncate(at);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                path.push('/');
                path.push_str(&i.to_string());
                leaves(v, path, out);
                path.truncate(at);
            }
        }
        _ => {
            out.insert(path.clone(), v);
        }
    }
}

/// Strings equal after case and whitespace normalisation, numbers by value (`2` is `2.0`).
fn same_leaf(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y || normalize(x) == normalize(y),
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Reads one 2xx side: SSE is reassembled, JSON bodies unpacked, anything else taken as text.
fn read(out: &mut PairScore, side: &str, streamed: bool, a: &Answer) -> Read {
    let raw = || Read {
        text: String::from_utf8_lossy(&a.body).into_owned(),
        shapes: vec![json_text_shape(&String::from_utf8_lossy(&a.body))],
        calls: Vec::new(),
        complete: true,
    };
    if out.kind == Kind::Other {
        return raw();
    }
    let answer = if looks_like_sse(&a.body) {
        Reassembled::from_sse(&a.body)
    } else {
        if streamed {
            out.note(format!(
                "{side} answered a stream request with a whole body"
            ));
        }
        match Reassembled::from_json_bytes(&a.body) {
            Ok(r) => r,
            Err(e) => {
                out.note(format!("{side} body is not JSON: {e}"));
                return raw();
            }
        }
    };
    for e in &answer.errors {
        out.note(format!("{side}: {e}"));
    }
    if !answer.done {
        out.note(format!("{side} stream ended without [DONE]"));
    }
    let mut calls = Vec::new();
    let shapes = (answer.choices.iter())
        .map(|c| choice_shape(c, &mut calls))
        .collect();
    Read {
        shapes,
        calls,
        complete: answer.complete(),
        text: answer.into_answer_text(),
    }
}

/// SSE bodies start with a field or a comment; JSON bodies never do.
fn looks_like_sse(body: &[u8]) -> bool {
    let start = body.trim_ascii_start();
    [&b"data:"[..], b":", b"event:", b"id:", b"retry:"]
        .iter()
        .any(|p| start.starts_with(p))
}

/// The choice's shape; its tool calls' arguments, parsed, go to `calls`.
fn choice_shape(c: &Choice, calls: &mut Vec<Option<Value>>) -> Option<Shape> {
    if c.tool_calls.is_empty() {
        return json_text_shape(&c.text);
    }
    let shapes = (c.tool_calls.iter())
        .map(|t| {
            let args = serde_json::from_str::<Value>(&t.arguments).ok();
            let shape = args.as_ref().and_then(value_shape).map(Box::new);
            calls.push(args);
            (t.name.clone(), shape)
        })
        .collect();
    Some(Shape::Tools(shapes))
}

/// The shape of text that is a JSON object or array, also inside a Markdown code fence; bare
/// scalars (`42`, `true`) are ordinary answers, not structured output.
fn json_text_shape(text: &str) -> Option<Shape> {
    let mut t = text.trim();
    if let Some(rest) = t.strip_prefix("```") {
        // Skip the fence's language tag line, drop the closing fence.
        t = rest.split_once('\n').map_or("", |(_, body)| body);
        t = t.trim_end().strip_suffix("```").unwrap_or(t).trim();
    }
    if !(t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    value_shape(&serde_json::from_str::<Value>(t).ok()?)
}

/// The shape of a JSON object or array; `None` for a scalar.
fn value_shape(v: &Value) -> Option<Shape> {
    match v {
        Value::Object(fields) => Some(Shape::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), type_name(v)))
                .collect(),
        )),
        Value::Array(_) => Some(Shape::Array),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Lowercase, with every whitespace run as one space and none at the ends.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        if word.is_ascii() {
            // Most words of most answers: a copy and a byte-wise lowercase, no char decoding.
            let at = out.len();
            out.push_str(word);
            out[at..].make_ascii_lowercase();
        } else {
            out.extend(word.chars().flat_map(char::to_lowercase));
        }
    }
    out
}

/// Token-ish pieces: runs of letters and digits, and every other visible character alone.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        rest = rest.trim_start();
        let first = *rest.as_bytes().first()?;
        let end = if first.is_ascii_alphanumeric() {
            // ASCII letters and digits byte by byte; a non-ASCII character continues the run
            // if it is alphanumeric (`é` in `café`).
            let ascii = rest
                .bytes()
                .position(|b| !b.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            if rest.as_bytes().get(ascii).is_some_and(|b| !b.is_ascii()) {
                ascii + alphanumeric_run(&rest[ascii..])
            } else {
                ascii
            }
        } else if first.is_ascii() {
            1
        } else {
            match rest.chars().next() {
                Some(c) if c.is_alphanumeric() => alphanumeric_run(rest),
                Some(c) => c.len_utf8(),
                None => return None,
            }
        };
        let (token, tail) = rest.split_at(end);
        rest = tail;
        Some(token)
    })
}

/// Bytes of `text`'s leading run of alphanumeric characters.
fn alphanumeric_run(text: &str) -> usize {
    text.find(|c: char| !c.is_alphanumeric())
        .unwrap_or(text.len())
}

fn ratio(a: usize, b: usize) -> f64 {
    match a.max(b) {
        0 => 1.0,
        max => a.min(b) as f64 / max as f64,
    }
}

/// The first [`MAX_SIMILARITY_BYTES`] of `text`, cut on a character boundary.
fn bounded(text: &str) -> &str {
    let mut end = text.len().min(MAX_SIMILARITY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A normalised answer's token count and the keys of the unigrams and bigrams of its first
/// [`MAX_SIMILARITY_BYTES`].
struct Grams {
    tokens: usize,
    keys: Vec<u64>,
}

impl Grams {
    fn of(text: &str) -> Self {
        let prefix = bounded(text);
        let keys = gram_keys(prefix);
        let tokens = if prefix.len() == text.len() {
            // n tokens make n unigrams and n - 1 bigrams.
            keys.len().div_ceil(2)
        } else {
            tokens(text).count()
        };
        Self { tokens, keys }
    }
}

/// Multiset Jaccard index of unigrams and bigrams: Σ min(counts) / Σ max(counts).
///
/// Each unigram and bigram is a 64-bit key (see [`gram_keys`]); both sides' keys are sorted and
/// merged, run by run. No hash table: a table keyed by the strings (SipHash over every token
/// and pair) was half the instructions of scoring a 40-token answer, and sorting has no worst
/// case an answer could steer. Two grams share a key with odds of about 2⁻⁶⁴ per pair.
fn similarity(a: Grams, b: Grams) -> f64 {
    let (mut ka, mut kb) = (a.keys, b.keys);
    ka.sort_unstable();
    kb.sort_unstable();
    let (mut min, mut max) = (0u64, 0u64);
    let (mut i, mut j) = (0, 0);
    loop {
        let key = match (ka.get(i), kb.get(j)) {
            (Some(x), Some(y)) => *x.min(y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        let run = |keys: &[u64], at: &mut usize| {
            let start = *at;
            while keys.get(*at) == Some(&key) {
                *at += 1;
            }
            (*at - start) as u64
        };
        let (x, y) = (run(&ka, &mut i), run(&kb, &mut j));
        min += x.min(y);
        max += x.max(y);
    }
    if max == 0 {
        1.0
    } else {
        min as f64 / max as f64
    }
}

/// The keys of `text`'s unigrams (low bit 0) and bigrams (low bit 1), in text order.
fn gram_keys(text: &str) -> Vec<u64> {
    let mut keys = Vec::with_capacity(text.len() / 2);
    let mut prev: Option<u64> = None;
    for t in tokens(text) {
        let h = token_hash(t);
        keys.push(h & !1);
        if let Some(p) = prev {
            // Ordered: `a b` and `b a` are different bigrams.
            keys.push(mix(p.rotate_left(29) ^ h.wrapping_mul(GRAM_MUL)) | 1);
        }
        prev = Some(h);
    }
    keys
}

const GRAM_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// Multiply-rotate over the token's 8-byte words and its length, then a full mix, so that keys
/// differ in every bit.
fn token_hash(t: &str) -> u64 {
    let mut h = t.len() as u64;
    let mut words = t.as_bytes().chunks(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b[..w.len()].copy_from_slice(w);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(GRAM_MUL);
    }
    mix(h)
}

/// MurmurHash3's 64-bit finalizer.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

// === impl Kind ===

impl Kind {
    /// The endpoint of a request path; a trailing slash is tolerated.
    pub fn from_path(path: &str) -> Self {
        match path.trim_end_matches('/') {
            "/v1/chat/completions" => Self::Chat,
            "/v1/completions" => Self::Completion,
            "/v1/embeddings" => Self::Embedding,
            _ => Self::Other,
        }
    }
}

// === impl PairScore ===

impl PairScore {
    fn note(&mut self, msg: String) {
        note(&mut self.notes, msg);
    }

    fn not_comparable(&mut self, why: String) {
        self.comparable = false;
        self.note(why);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests;
