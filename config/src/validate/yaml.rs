//! Text to a YAML [`Value`]: bounds checked before parsing, and a reader that keeps going
//! where serde_yaml_ng's own `Value` gives up.
//!
//! - A leading byte order mark is dropped (editors on Windows write one).
//! - A file over [`MAX_CONFIG_BYTES`] or nested deeper than [`MAX_NESTING`] flow collections
//!   is refused before libyaml reads it: deep flow nesting costs libyaml quadratic time.
//! - An integer too large for 64 bits is kept as [`BIG_INT_TAG`]-tagged text, so the key it
//!   is under reports it and every other error is still found (serde_yaml_ng's `Value`
//!   refuses the whole document).
//! - A duplicate key is one error among the others, at its path and with the lines of both
//!   keys (the first value is kept), so every other error is still found.

use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::value::{Tag, TaggedValue};
use serde_yaml_ng::{Location, Mapping, Value};

use crate::{ConfigError, Errors};

mod nesting;

/// The largest config file read. A 56 000-model file is about 10 MB.
pub const MAX_CONFIG_BYTES: usize = 64 << 20;

/// The deepest flow nesting (`[`, `{`) read. rollgate's own schema needs 5; libyaml's time
/// grows with the square of it.
pub(crate) const MAX_NESTING: usize = 64;

/// The tag on an integer outside `i64`/`u64` (the value is its text).
pub(crate) const BIG_INT_TAG: &str = "rollgate/out-of-range-integer";

/// Bytes parsed again to find the lines of duplicate keys: serde_yaml_ng only says where a
/// node is in an error, so each line costs a parse that stops there. Past this, duplicates
/// are still reported, by path; a small file gets hundreds of lines, a 64 MiB one the first.
const LOCATE_BYTES: usize = 64 << 20;

/// The message of the error that stops a parse at the key being located.
const PROBE: &str = "rollgate: locating a key";

/// Parses one YAML document, with the checks above. The errors with the value are its
/// duplicate keys; any other problem leaves no value.
pub(crate) fn load(text: &str) -> Result<(Value, Vec<ConfigError>), Errors> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.len() > MAX_CONFIG_BYTES {
        let message = format!(
            "the document is {} bytes; a config file is at most {MAX_CONFIG_BYTES} bytes (64 MiB)",
            text.len()
        );
        return Err(ConfigError::new("", message).into());
    }
    let (depth, line) = nesting::flow_depth(text, MAX_NESTING);
    if depth > MAX_NESTING {
        let message = format!(
            "invalid YAML: `[`/`{{` nested deeper than {MAX_NESTING} levels at line {line}"
        );
        return Err(ConfigError::new("", message).into());
    }
    let mut walk = Walk::default();
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let mut value = Node(&mut walk)
        .deserialize(de)
        .map_err(|e| syntax(&e, text))?;
    value.apply_merge().map_err(|e| syntax(&e, text))?;
    Ok((value, duplicates(text, walk.duplicates)))
}

/// The text of an integer too large for 64 bits, when `value` is one.
pub(crate) fn big_int(value: &Value) -> Option<&str> {
    match value {
        Value::Tagged(t) if t.tag == Tag::new(BIG_INT_TAG) => t.value.as_str(),
        _ => None,
    }
}

/// One error for the whole document, with its line and column, and a hint for a tab.
fn syntax(error: &serde_yaml_ng::Error, text: &str) -> Errors {
    let mut message = format!("invalid YAML: {error}");
    let at = error.location();
    if let Some(at) = at.as_ref().filter(|_| !message.contains(" at line ")) {
        message.push_str(&format!(" at line {} column {}", at.line(), at.column()));
    }
    let tab = at.is_some_and(|at| {
        let line = text.lines().nth(at.line().saturating_sub(1)).unwrap_or("");
        let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
        indent.contains('\t') || line.chars().nth(at.column().saturating_sub(1)) == Some('\t')
    });
    if tab {
        message.push_str("; YAML does not allow tabs for indentation, use spaces");
    }
    ConfigError::new("", message).into()
}

/// One error per duplicate key, with both lines while [`LOCATE_BYTES`] lasts. A duplicate in
/// an anchored mapping is found again where an alias replays it; it is reported once.
fn duplicates(text: &str, found: Vec<Duplicate>) -> Vec<ConfigError> {
    let mut spent = 0;
    let mut seen = Vec::new();
    let mut errors = Vec::with_capacity(found.len());
    for d in found {
        let lines = (spent < LOCATE_BYTES).then(|| {
            spent += 2 * text.len();
            (locate(text, d.again), locate(text, d.first))
        });
        let mut message = match &d.key {
            Some(key) => format!("duplicate key {key}"),
            None => "duplicate key".to_owned(),
        };
        match lines {
            Some((Some(again), first)) => {
                let at = (again.line(), again.column());
                if seen.contains(&at) {
                    continue;
                }
                seen.push(at);
                // `write!` to a String cannot fail.
                let _ = write!(message, " at line {} column {}", at.0, at.1);
                if let Some(first) = first {
                    let _ = write!(message, "; the first is at line {}", first.line());
                }
            }
            _ => message.push_str("; the first is earlier in the same mapping"),
        }
        errors.push(ConfigError::new(d.path, message));
    }
    errors
}

/// Where the `n`th key read is: the document is read again and stopped there.
fn locate(text: &str, n: usize) -> Option<Location> {
    let mut walk = Walk {
        probe: Some(n),
        ..Walk::default()
    };
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let error = Node(&mut walk).deserialize(de).err()?;
    error
        .to_string()
        .contains(PROBE)
        .then(|| error.location())?
}

/// What the reader keeps while it walks the document.
#[derive(Default)]
struct Walk {
    /// Keys read so far, in reading order (an alias's keys count again each time).
    keys: usize,
    /// Stop with an error at the key with this number, so serde_yaml_ng says where it is.
    probe: Option<usize>,
    /// The path of the node being read, as config errors write it: `models[2].stable`.
    path: String,
    duplicates: Vec<Duplicate>,
}

/// A key already in its mapping.
struct Duplicate {
    /// The key's path when it is a string, else its mapping's.
    path: String,
    /// The key, when it is not a string (the path cannot name it).
    key: Option<String>,
    /// The numbers of the first key and of this one, in reading order.
    first: usize,
    again: usize,
}

/// One step of a path: a mapping's string key or a sequence's index.
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Reads any node into a [`Value`].
struct Node<'w>(&'w mut Walk);

/// Reads a mapping key and numbers it.
struct Key<'w>(&'w mut Walk);

struct NodeVisitor<'w>(&'w mut Walk);

/// Numbers a key, and fails on the one probed while serde_yaml_ng still knows where it is, so
/// that the error carries the key's own line and column.
struct KeyVisitor<'w>(&'w mut Walk);

// === impl Walk ===

impl Walk {
    /// Reads the node at `segment` below the current path.
    fn below<T>(&mut self, segment: Segment<'_>, read: impl FnOnce(&mut Self) -> T) -> T {
        let len = self.path.len();
        // `write!` to a String cannot fail.
        let _ = match segment {
            Segment::Index(i) => write!(self.path, "[{i}]"),
            Segment::Key(key) if len == 0 => write!(self.path, "{key}"),
            Segment::Key(key) => write!(self.path, ".{key}"),
        };
        let out = read(self);
        self.path.truncate(len);
        out
    }
}

// === impl Node ===

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(NodeVisitor(self.0))
    }
}

// === impl Key ===

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(KeyVisitor(self.0))
    }
}

// === impl NodeVisitor ===

impl<'de> Visitor<'de> for NodeVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_i128<E>(self, n: i128) -> Result<Value, E> {
        Ok(tagged_big_int(n.to_string()))
    }

    fn visit_u128<E>(self, n: u128) -> Result<Value, E> {
        Ok(tagged_big_int(n.to_string()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Number(f.into()))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Node(self.0).deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let walk = self.0;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        loop {
            let i = items.len();
            let item = walk.below(Segment::Index(i), |w| seq.next_element_seed(Node(w)))?;
            match item {
                Some(item) => items.push(item),
                None => return Ok(Value::Sequence(items)),
            }
        }
    }

    /// A duplicate key is recorded and its value read (for the errors inside it) and dropped.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let walk = self.0;
        let mut out = Mapping::new();
        // The number of each key in `out`, in the same order.
        let mut numbers = Vec::new();
        while let Some(key) = map.next_key_seed(Key(walk))? {
            let number = walk.keys - 1;
            let first = if out.contains_key(&key) {
                let at = out.keys().position(|k| k == &key);
                at.and_then(|i| numbers.get(i).copied())
            } else {
                None
            };
            let value = match key.as_str() {
                Some(name) => walk.below(Segment::Key(name), |w| {
                    if let Some(first) = first {
                        w.duplicates.push(Duplicate {
                            path: w.path.clone(),
                            key: None,
                            first,
                            again: number,
                        });
                    }
                    map.next_value_seed(Node(w))
                })?,
                None => {
                    if let Some(first) = first {
                        walk.duplicates.push(Duplicate {
                            path: walk.path.clone(),
                            key: Some(describe(&key)),
                            first,
                            again: number,
                        });
                    }
                    map.next_value_seed(Node(walk))?
                }
            };
            if first.is_none() {
                out.insert(key, value);
                numbers.push(number);
            }
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use de::VariantAccess;
        let (tag, contents) = data.variant::<String>()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag is not allowed"));
        }
        let value = contents.newtype_variant_seed(Node(self.0))?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

// === impl KeyVisitor ===

impl KeyVisitor<'_> {
    fn count<E: de::Error>(walk: &mut Walk, key: Result<Value, E>) -> Result<Value, E> {
        let key = key?;
        walk.keys += 1;
        if walk.probe == Some(walk.keys - 1) {
            return Err(E::custom(PROBE));
        }
        Ok(key)
    }
}

/// Each scalar is counted while serde_yaml_ng still knows where it is.
macro_rules! counted {
    ($($method:ident($($arg:ident: $t:ty)?)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, $($arg: $t)?) -> Result<Value, E> {
            Self::count(self.0, NodeVisitor(&mut Walk::default()).$method($($arg)?))
        }
    )*};
}

impl<'de> Visitor<'de> for KeyVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML mapping key")
    }

    counted!(
        visit_bool(v: bool),
        visit_i64(v: i64),
        visit_u64(v: u64),
        visit_i128(v: i128),
        visit_u128(v: u128),
        visit_f64(v: f64),
        visit_str(v: &str),
        visit_string(v: String),
        visit_unit(),
        visit_none(),
    );

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        let key = Node(&mut *self.0).deserialize(d);
        Self::count(self.0, key)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        let key = NodeVisitor(&mut *self.0).visit_seq(seq);
        Self::count(self.0, key)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        let key = NodeVisitor(&mut *self.0).visit_map(map);
        Self::count(self.0, key)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let key = NodeVisitor(&mut *self.0).visit_enum(data);
        Self::count(self.0, key)
    }
}

fn tagged_big_int(text: String) -> Value {
    Value::Tagged(Box::new(TaggedValue {
        tag: Tag::new(BIG_INT_TAG),
        value: Value::String(text),
    }))
}

/// A key that is not a string, for a message.
fn describe(key: &Value) -> String {
    match key {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Null => "`null`".to_owned(),
        _ => serde_yaml_ng::to_string(key).map_or_else(
            |_| "(a collection)".to_owned(),
            |s| format!("`{}`", s.trim_end()),
        ),
    }
}

#[cfg(test)]
mod tests;
