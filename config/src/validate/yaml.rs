//! Text to a YAML [`Value`]: bounds checked before parsing, and a reader that keeps going
//! where serde_yaml_ng's own `Value` gives up.
//!
//! - A leading byte order mark is dropped (editors on Windows write one).
//! - A file over [`MAX_CONFIG_BYTES`] or nested deeper than [`MAX_NESTING`] flow collections
//!   is refused before libyaml reads it: deep flow nesting costs libyaml quadratic time.
//! - An integer too large for 64 bits is kept as [`BIG_INT_TAG`]-tagged text, so the key it
//!   is under reports it and every other error is still found (serde_yaml_ng's `Value`
//!   refuses the whole document).
//! - A duplicate key is reported at its own line, not at the start of its mapping.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::value::{Tag, TaggedValue};
use serde_yaml_ng::{Mapping, Value};

use crate::{ConfigError, Errors};

mod nesting;

/// The largest config file read. A 56 000-model file is about 10 MB.
pub const MAX_CONFIG_BYTES: usize = 64 << 20;

/// The deepest flow nesting (`[`, `{`) read. rollgate's own schema needs 5; libyaml's time
/// grows with the square of it.
pub(crate) const MAX_NESTING: usize = 64;

/// The tag on an integer outside `i64`/`u64` (the value is its text).
pub(crate) const BIG_INT_TAG: &str = "rollgate/out-of-range-integer";

/// Parses one YAML document, with the checks above.
pub(crate) fn load(text: &str) -> Result<Value, Errors> {
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
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let mut value = Node.deserialize(de).map_err(|e| syntax(&e, text))?;
    value.apply_merge().map_err(|e| syntax(&e, text))?;
    Ok(value)
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

/// Reads any node into a [`Value`].
struct Node;

/// Reads a mapping key, refusing one already in `0` while the key is being read, so that
/// serde_yaml_ng puts the key's own line and column on the error.
struct Key<'a>(&'a Mapping);

struct NodeVisitor;

struct KeyVisitor<'a>(&'a Mapping);

// === impl Node ===

impl<'de> DeserializeSeed<'de> for Node {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(NodeVisitor)
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

impl<'de> Visitor<'de> for NodeVisitor {
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
        Node.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(Node)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Mapping::new();
        while let Some(key) = map.next_key_seed(Key(&out))? {
            let value = map.next_value_seed(Node)?;
            out.insert(key, value);
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use de::VariantAccess;
        let (tag, contents) = data.variant::<String>()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag is not allowed"));
        }
        let value = contents.newtype_variant_seed(Node)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

fn tagged_big_int(text: String) -> Value {
    Value::Tagged(Box::new(TaggedValue {
        tag: Tag::new(BIG_INT_TAG),
        value: Value::String(text),
    }))
}

// === impl KeyVisitor ===

impl KeyVisitor<'_> {
    fn unique<E: de::Error>(&self, key: Result<Value, E>) -> Result<Value, E> {
        let key = key?;
        if !self.0.contains_key(&key) {
            return Ok(key);
        }
        let which = match &key {
            Value::String(s) => format!("key {s:?}"),
            Value::Number(n) => format!("key {n}"),
            Value::Bool(b) => format!("key `{b}`"),
            Value::Null => "null key".to_owned(),
            _ => "key".to_owned(),
        };
        Err(E::custom(format!("duplicate entry with {which}")))
    }
}

/// Each scalar is checked while serde_yaml_ng still knows where it is.
macro_rules! checked {
    ($($method:ident($($arg:ident: $t:ty)?)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, $($arg: $t)?) -> Result<Value, E> {
            self.unique(NodeVisitor.$method($($arg)?))
        }
    )*};
}

impl<'de> Visitor<'de> for KeyVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML mapping key")
    }

    checked!(
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
        self.unique(Node.deserialize(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        self.unique(NodeVisitor.visit_seq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        self.unique(NodeVisitor.visit_map(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        self.unique(NodeVisitor.visit_enum(data))
    }
}

#[cfg(test)]
mod tests;
