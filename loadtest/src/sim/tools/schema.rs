//! Arguments generated from a function's `parameters` JSON schema, drawn from the answer key:
//! the subset that function-calling schemas use, Pydantic's and the openai SDK's included
//! (local `$ref`s into `$defs`, `definitions` or anywhere in `parameters`; `allOf` merged;
//! `anyOf`/`oneOf` with `null` for `Optional`; string formats; length and item bounds).

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use super::super::answer::{mix, AnswerKey};

/// Output tokens past which a call holds only what its schema requires, each value at its
/// smallest: a schema of thousands of optional properties still gets a call of about this
/// length (a token per four characters). Required keys are always all there.
pub(super) const ARGUMENT_TOKENS: u64 = 2048;
/// Values a call holds before it, too, falls back to what the schema requires: bounds the work
/// on a schema of nested arrays, whose answer would otherwise grow as a power of its depth.
const MAX_VALUES: u32 = 512;
/// Values a call may hold at all (then `null`): bounds the work when even the required parts
/// are huge (nested `minItems`, a required self-reference).
const HARD_VALUES: u32 = 4096;
/// Nesting past which a value is `null`, whatever the schema says.
const MAX_DEPTH: u32 = 64;
/// Times a `$ref` may already be on the path (a tree's node inside a node) before the
/// generator stops recursing into it and gives it its smallest value.
const MAX_RECURSION: usize = 2;
/// `$ref` to `$ref` hops before a chain counts as pointing nowhere (`A` → `A`).
const MAX_HOPS: u32 = 16;
/// Characters a `minLength` may pad a string to.
const MAX_STRING: u64 = 8192;
/// Characters one scalar counts towards `ARGUMENT_TOKENS`: a fixed estimate rather than its
/// length, so that a right and a wrong answer (other words) fall back at the same point.
const SCALAR_CHARS: usize = 8;
/// Characters a string's word counts (a vocabulary word is 2 to 8 letters, plus a space),
/// and a formatted string.
const WORD_CHARS: usize = 6;
const FORMATTED_CHARS: usize = 24;
/// Items of a generated array when the schema gives no `maxItems` (at least 1 by default).
const DEFAULT_MAX_ITEMS: u64 = 3;
/// Items of a generated array whatever the schema asks for.
const MAX_ITEMS: u64 = 16;
/// Span of an integer or number whose schema gives no bounds.
const DEFAULT_SPAN: i64 = 100;
/// A number is one of this many steps across its range, plus one.
const NUMBER_STEPS: u64 = 1000;
/// Keywords that describe a value (or hold definitions) without constraining it: a `$ref`
/// beside only these is the referenced schema alone.
const ANNOTATIONS: [&str; 12] = [
    "$ref",
    "$defs",
    "definitions",
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
];

/// Walks a schema, drawing each value from the answer key in a fixed order.
struct Gen<'a> {
    key: AnswerKey,
    /// The function's `parameters`: what `#/...` refs point into.
    root: &'a Value,
    next: u64,
    values: u32,
    depth: u32,
    /// Estimated characters so far, towards `ARGUMENT_TOKENS`.
    chars: usize,
    /// The `$ref`s being expanded, outermost first.
    path: Vec<String>,
    /// Recursions stopped on the current path: while above 0, values are their smallest.
    stopped: u32,
}

/// The arguments for `parameters`, serialised: `{}` without an object schema.
pub(super) fn arguments(parameters: Option<&Value>, key: AnswerKey) -> String {
    let mut value = match parameters {
        Some(schema) if is_object(schema, schema) => Gen::new(key, schema).value(schema),
        _ => Value::Object(Map::new()),
    };
    // A wrong call also misses an argument, as a weaker model's calls do: other values alone
    // leave the name, the keys and the punctuation equal, which word overlap rates close.
    if let Value::Object(fields) = &mut value {
        if key.is_wrong() && !fields.is_empty() {
            let drop = key.draw(super::DROP_DRAW) % fields.len() as u64;
            let name = fields.keys().nth(drop as usize).cloned();
            name.map(|name| fields.remove(&name));
        }
    }
    // Serialising a `Value` cannot fail.
    serde_json::to_string(&value).unwrap_or_else(|_| "{}".to_owned())
}

/// Whether `parameters` describes an object (directly or through a top-level `$ref`).
fn is_object(root: &Value, schema: &Value) -> bool {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => lookup(root, reference).is_some_and(|t| kind(t) == "object"),
        None => kind(schema) == "object",
    }
}

/// A local ref's target (`#`, `#/$defs/X`, any JSON pointer into `root`), following chains of
/// refs; `None` for a remote ref, one that points nowhere, or a loop.
fn lookup<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let mut reference = reference;
    for _ in 0..MAX_HOPS {
        let pointer = reference.strip_prefix('#')?;
        let target = root.pointer(&percent_decode(pointer))?;
        match target.get("$ref").and_then(Value::as_str) {
            Some(next) if only_annotations(target) => reference = next,
            _ => return Some(target),
        }
    }
    None
}

/// A ref's pointer as written in a URI fragment: `%xx` escapes decoded (`~0`, `~1` are left
/// to the JSON pointer).
fn percent_decode(pointer: &str) -> Cow<'_, str> {
    if !pointer.contains('%') {
        return Cow::Borrowed(pointer);
    }
    let bytes = pointer.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn only_annotations(schema: &Value) -> bool {
    schema
        .as_object()
        .is_none_or(|o| o.keys().all(|k| ANNOTATIONS.contains(&k.as_str())))
}

/// `base` with `extra`'s keywords added: `properties` and `required` united, otherwise
/// `base`'s own keyword kept. Enough for `allOf` and a `$ref` with constraints beside it.
fn merge(base: &mut Map<String, Value>, extra: &Value) {
    let Some(extra) = extra.as_object() else {
        return;
    };
    for (k, v) in extra {
        match (k.as_str(), base.get_mut(k), v) {
            ("properties", Some(Value::Object(mine)), Value::Object(theirs)) => {
                for (name, schema) in theirs {
                    mine.entry(name.clone()).or_insert_with(|| schema.clone());
                }
            }
            ("required", Some(Value::Array(mine)), Value::Array(theirs)) => {
                for name in theirs {
                    if !mine.contains(name) {
                        mine.push(name.clone());
                    }
                }
            }
            (_, Some(_), _) => {}
            (_, None, _) => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The JSON type a schema describes: its `type` (the first one besides `null`), or what its
/// other keywords imply (`{}`, any value, is a string).
fn kind(schema: &Value) -> &str {
    let declared = match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .or(types.first().and_then(Value::as_str)),
        _ => None,
    };
    match declared {
        Some(t) => t,
        None if schema.get("properties").is_some() => "object",
        None if schema.get("items").is_some() || schema.get("prefixItems").is_some() => "array",
        None => "string",
    }
}

/// Whether a schema allows `null`: a `type` that lists it, or a `null` branch.
fn allows_null(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
        _ => false,
    }
}

// === impl Gen ===

impl<'a> Gen<'a> {
    fn new(key: AnswerKey, root: &'a Value) -> Self {
        Self {
            key,
            root,
            next: 0,
            values: 0,
            depth: 0,
            chars: 0,
            path: Vec::new(),
            stopped: 0,
        }
    }

    /// The next draw's index; right and wrong answers walk a schema alike.
    fn slot(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Past a bound or a stopped recursion: only what the schema requires, at its smallest.
    fn smallest(&self) -> bool {
        self.stopped > 0 || self.values > MAX_VALUES || self.chars as u64 > ARGUMENT_TOKENS * 4
    }

    fn value(&mut self, schema: &Value) -> Value {
        if self.values >= HARD_VALUES || self.depth >= MAX_DEPTH {
            return Value::Null;
        }
        self.depth += 1;
        let out = match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => self.follow(reference, schema),
            None => self.plain(schema),
        };
        self.depth -= 1;
        out
    }

    /// A `$ref`'d schema (with any constraints written beside the ref); one that points
    /// nowhere is any value. A ref already twice on the path is given its smallest value.
    fn follow(&mut self, reference: &str, schema: &Value) -> Value {
        let Some(target) = lookup(self.root, reference) else {
            return self.plain(&Value::Object(Map::new()));
        };
        let target = if only_annotations(schema) {
            Cow::Borrowed(target)
        } else {
            let mut merged = schema.as_object().cloned().unwrap_or_default();
            merged.remove("$ref");
            merge(&mut merged, target);
            Cow::Owned(Value::Object(merged))
        };
        let stop = self.path.iter().filter(|r| *r == reference).count() >= MAX_RECURSION;
        self.stopped += u32::from(stop);
        self.path.push(reference.to_owned());
        let out = self.value(&target);
        self.path.pop();
        self.stopped -= u32::from(stop);
        out
    }

    fn plain(&mut self, schema: &Value) -> Value {
        self.values += 1;
        if let Some(value) = schema.get("const") {
            self.chars += SCALAR_CHARS;
            return value.clone();
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            let slot = self.slot();
            let pick = self.key.pick(slot, options.len() as u64);
            self.chars += SCALAR_CHARS;
            return options.get(pick as usize).cloned().unwrap_or(Value::Null);
        }
        if let Some(branches) = schema.get("allOf").and_then(Value::as_array) {
            return self.all_of(schema, branches);
        }
        let branches = ["anyOf", "oneOf"]
            .iter()
            .find_map(|k| schema.get(*k).and_then(Value::as_array));
        if let Some(branches) = branches {
            return self.one_of(branches);
        }
        if self.smallest() && allows_null(schema) {
            return Value::Null;
        }
        match kind(schema) {
            "object" => self.object(schema),
            "array" => self.array(schema),
            "integer" => self.integer(schema),
            "number" => self.number(schema),
            "boolean" => {
                let slot = self.slot();
                self.chars += SCALAR_CHARS;
                Value::Bool(self.key.pick(slot, 2) == 1)
            }
            "null" => Value::Null,
            _ => self.string(schema),
        }
    }

    /// Every branch merged into one schema; the first `$ref` among them stays a ref, so that
    /// a recursion through `allOf` is noticed, and the other refs are merged in resolved.
    fn all_of(&mut self, schema: &Value, branches: &[Value]) -> Value {
        let mut merged = schema.as_object().cloned().unwrap_or_default();
        merged.remove("allOf");
        for branch in branches {
            match branch.get("$ref").and_then(Value::as_str) {
                Some(r) if !merged.contains_key("$ref") => {
                    merged.insert("$ref".to_owned(), Value::String(r.to_owned()));
                    let mut rest = branch.clone();
                    if let Some(rest) = rest.as_object_mut() {
                        rest.remove("$ref");
                    }
                    merge(&mut merged, &rest);
                }
                Some(r) => {
                    if let Some(target) = lookup(self.root, r) {
                        merge(&mut merged, target);
                    }
                }
                None => merge(&mut merged, branch),
            }
        }
        self.value(&Value::Object(merged))
    }

    /// The first branch that is not `null` (an `Optional` field has a value), or `null` once
    /// values are at their smallest and a branch allows it.
    fn one_of(&mut self, branches: &[Value]) -> Value {
        let is_null = |b: &Value| match b.get("$ref").and_then(Value::as_str) {
            Some(r) => lookup(self.root, r).is_some_and(|t| kind(t) == "null"),
            None => kind(b) == "null" || b.get("const").is_some_and(Value::is_null),
        };
        if self.smallest() && branches.iter().any(is_null) {
            return Value::Null;
        }
        match branches.iter().find(|b| !is_null(b)).or(branches.first()) {
            Some(branch) => self.value(branch),
            None => self.plain(&Value::Object(Map::new())),
        }
    }

    /// Every required property, and each optional one on a draw.
    fn object(&mut self, schema: &Value) -> Value {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut out = Map::new();
        self.chars += 2;
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, property) in properties.into_iter().flatten() {
            let slot = self.slot();
            let wanted = required.contains(&name.as_str())
                || (!self.smallest() && self.key.draw(slot) % 2 == 0);
            if wanted {
                self.chars += name.len() + 4;
                out.insert(name.clone(), self.value(property));
            }
        }
        // Required names the schema does not describe still get a value.
        for name in required {
            if !out.contains_key(name) {
                self.chars += name.len() + 4;
                let value = self.value(&Value::Object(Map::new()));
                out.insert(name.to_owned(), value);
            }
        }
        Value::Object(out)
    }

    /// `minItems` to `maxItems` items (1 to 3 without bounds); a tuple (`prefixItems`, or
    /// draft 4's `items` array) has one item per position.
    fn array(&mut self, schema: &Value) -> Value {
        let bound = |k: &str| schema.get(k).and_then(Value::as_u64);
        let tuple = match (schema.get("prefixItems"), schema.get("items")) {
            (Some(Value::Array(tuple)), _) | (None, Some(Value::Array(tuple))) => Some(tuple),
            _ => None,
        };
        let max = match tuple {
            Some(tuple) => (tuple.len() as u64).min(bound("maxItems").unwrap_or(u64::MAX)),
            None => {
                bound("maxItems").unwrap_or(DEFAULT_MAX_ITEMS.max(bound("minItems").unwrap_or(0)))
            }
        }
        .min(MAX_ITEMS);
        let slot = self.slot();
        let len = if self.smallest() {
            bound("minItems").unwrap_or(0).min(max)
        } else if tuple.is_some() {
            max
        } else {
            let min = bound("minItems").unwrap_or(1).min(max);
            min + self.key.draw(slot) % (max - min + 1)
        };
        self.chars += 2;
        let any = Value::Object(Map::new());
        let items = schema
            .get("items")
            .filter(|i| !i.is_array())
            .unwrap_or(&any);
        let out = (0..len as usize)
            .map(|i| {
                self.chars += 1;
                let item = tuple.and_then(|t| t.get(i)).unwrap_or(items);
                self.value(item)
            })
            .collect();
        Value::Array(out)
    }

    fn integer(&mut self, schema: &Value) -> Value {
        let bound = |k: &str, exclusive: &str, step: i64| {
            let inclusive = schema.get(k).and_then(Value::as_f64).map(|v| v as i64);
            let exclusive = schema.get(exclusive).and_then(Value::as_f64);
            inclusive.or(exclusive.map(|v| (v as i64).saturating_add(step)))
        };
        let (lo, hi) = match (
            bound("minimum", "exclusiveMinimum", 1),
            bound("maximum", "exclusiveMaximum", -1),
        ) {
            (Some(lo), Some(hi)) => (lo, hi.max(lo)),
            (Some(lo), None) => (lo, lo.saturating_add(DEFAULT_SPAN)),
            (None, Some(hi)) => (hi.saturating_sub(DEFAULT_SPAN), hi),
            (None, None) => (0, DEFAULT_SPAN),
        };
        // At most 2^64 values: the span fits a u64 once one is subtracted.
        let span = u64::try_from(i128::from(hi) - i128::from(lo)).unwrap_or(u64::MAX);
        let slot = self.slot();
        let pick = self.key.pick(slot, span.saturating_add(1));
        let value = i128::from(lo) + i128::from(pick);
        self.chars += SCALAR_CHARS;
        Value::Number(i64::try_from(value).unwrap_or(lo).into())
    }

    fn number(&mut self, schema: &Value) -> Value {
        let bound = |a: &str, b: &str| schema.get(a).or(schema.get(b)).and_then(Value::as_f64);
        let span = DEFAULT_SPAN as f64;
        let (lo, hi) = match (
            bound("minimum", "exclusiveMinimum"),
            bound("maximum", "exclusiveMaximum"),
        ) {
            (Some(lo), Some(hi)) => (lo, hi.max(lo)),
            (Some(lo), None) => (lo, lo + span),
            (None, Some(hi)) => (hi - span, hi),
            (None, None) => (0.0, span),
        };
        let slot = self.slot();
        let step = self.key.pick(slot, NUMBER_STEPS + 1) as f64 / NUMBER_STEPS as f64;
        let mut value = lo + (hi - lo) * step;
        if hi - lo >= 1.0 {
            // Two decimals, as a person would write a price or a temperature.
            value = (value * 100.0).round() / 100.0;
        }
        self.chars += SCALAR_CHARS;
        Number::from_f64(value).map_or(Value::Null, Value::Number)
    }

    /// A value of the schema's `format`, or one to three words of the answer's vocabulary
    /// (none at its smallest), padded with more to `minLength` and cut at `maxLength`.
    fn string(&mut self, schema: &Value) -> Value {
        let slot = self.slot();
        let bound = |k: &str| schema.get(k).and_then(Value::as_u64);
        let min = bound("minLength").unwrap_or(0).min(MAX_STRING) as usize;
        if let Some(value) = schema.get("format").and_then(|f| self.formatted(f, slot)) {
            self.chars += FORMATTED_CHARS.max(min);
            return Value::String(value);
        }
        let words = if self.smallest() {
            0
        } else {
            1 + self.key.draw(slot) % 3
        };
        self.chars += (2 + WORD_CHARS * words as usize).max(min);
        let mut out = String::new();
        for k in 0..words {
            if k > 0 {
                out.push(' ');
            }
            out.push_str(self.key.word(slot << 2 | k));
        }
        // Vocabulary words are ASCII: bytes are characters.
        let mut k = 0;
        while out.len() < min {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(self.key.word(mix(slot) ^ k));
            k += 1;
        }
        if let Some(max) = bound("maxLength") {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if let Some((cut, _)) = out.char_indices().nth(max) {
                out.truncate(cut);
            }
        }
        Value::String(out)
    }

    /// A value of a common `format`, drawn like any other (a wrong answer's differs); `None`
    /// for a format this generator does not know (the string is then plain words).
    fn formatted(&self, format: &Value, slot: u64) -> Option<String> {
        let key = self.key;
        let pick = |i: u64, n: u64| key.pick(slot << 4 | i, n);
        let date = || {
            format!(
                "{:04}-{:02}-{:02}",
                2020 + pick(0, 10),
                1 + pick(1, 12),
                1 + pick(2, 28)
            )
        };
        let time = || format!("{:02}:{:02}:{:02}", pick(3, 24), pick(4, 60), pick(5, 60));
        let word = key.word(slot << 2);
        Some(match format.as_str()? {
            "date-time" => format!("{}T{}Z", date(), time()),
            "date" => date(),
            "time" => format!("{}Z", time()),
            "duration" => format!("PT{}M", 1 + pick(6, 59)),
            "uri" | "url" | "iri" | "uri-reference" => format!("https://example.com/{word}"),
            "email" | "idn-email" => format!("{word}@example.com"),
            "hostname" | "idn-hostname" => format!("{word}.example.com"),
            "ipv4" => format!("10.{}.{}.{}", pick(7, 256), pick(8, 256), pick(9, 256)),
            "uuid" => {
                // `pick` works on spans below 2^63: draw the 128 bits in 32-bit parts.
                let part = |i: u64| pick(10 + i, 1 << 32);
                format!(
                    "{:08x}-{:04x}-4{:03x}-{:04x}-{:04x}{:08x}",
                    part(0),
                    part(1) >> 16,
                    part(1) & 0xfff,
                    0x8000 | part(2) >> 18,
                    part(2) & 0xffff,
                    part(3)
                )
            }
            _ => return None,
        })
    }
}
