//! JSON paths and matchers of `expect.json`.
//!
//! A path is steps from the root: `name` for an object key, `[N]` for an array element,
//! `["any.key"]` for a key with dots or brackets in it (no escapes inside). Steps after the first
//! start with `.` unless they are brackets: `choices[0].message.content`, `data[0].embedding`,
//! `[0].id` for a top-level array.

use std::fmt;

use serde_json::Value;

/// A parsed path; `Display` gives back the text it was written as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// One assertion on the value at a path; a path's matchers must all hold.
#[derive(Clone, Debug, PartialEq)]
pub enum Matcher {
    /// The same JSON value (numbers compare by value: `1` equals `1.0`).
    Equals(Value),
    Contains(String),
    Prefix(String),
    Suffix(String),
    /// `true`: the path resolves; `false`: it does not.
    Exists(bool),
}

// === impl JsonPath ===

impl JsonPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        let mut rest = text;
        if rest.is_empty() {
            return Err("empty path".to_owned());
        }
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let (inside, tail) = after
                    .split_once(']')
                    .ok_or_else(|| format!("unclosed `[` in `{text}`"))?;
                steps.push(bracket(inside, text)?);
                rest = tail;
            } else {
                // A key: up to the next `.` or `[`; a `.` also separates it from what follows.
                let first = steps.is_empty();
                let body = if first {
                    rest
                } else {
                    rest.strip_prefix('.')
                        .ok_or_else(|| format!("expected `.` or `[` before `{rest}` in `{text}`"))?
                };
                let end = body.find(['.', '[', ']']).unwrap_or(body.len());
                if end == 0 {
                    return Err(format!("empty key in `{text}`"));
                }
                steps.push(Step::Key(body[..end].to_owned()));
                rest = &body[end..];
                if rest.starts_with(']') {
                    return Err(format!("unmatched `]` in `{text}`"));
                }
            }
        }
        Ok(Self {
            text: text.to_owned(),
            steps,
        })
    }

    pub fn lookup<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.steps.iter().try_fold(root, |v, step| match step {
            Step::Key(k) => v.as_object()?.get(k),
            Step::Index(i) => v.as_array()?.get(*i),
        })
    }
}

fn bracket(inside: &str, text: &str) -> Result<Step, String> {
    if let Some(quoted) = inside.strip_prefix('"') {
        let key = quoted
            .strip_suffix('"')
            .ok_or_else(|| format!("unclosed quote in `{text}`"))?;
        return Ok(Step::Key(key.to_owned()));
    }
    inside
        .parse::<usize>()
        .map(Step::Index)
        .map_err(|_| format!("`[{inside}]` in `{text}` is neither an index nor a quoted key"))
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

// === impl Matcher ===

impl Matcher {
    /// `None` when the value passes, else why not.
    pub fn check(&self, path: &JsonPath, value: Option<&Value>) -> Option<String> {
        let value = match (self, value) {
            (Self::Exists(want), v) if *want == v.is_some() => return None,
            (_, None) => return Some(format!("`{path}`: not found")),
            (Self::Exists(false), Some(v)) => {
                return Some(format!(
                    "`{path}`: present ({}), expected absent",
                    excerpt(v)
                ))
            }
            (_, Some(v)) => v,
        };
        let ok = match self {
            Self::Equals(want) => same_value(want, value),
            Self::Contains(s) => value.as_str().map(|v| v.contains(s.as_str())),
            Self::Prefix(s) => value.as_str().map(|v| v.starts_with(s.as_str())),
            Self::Suffix(s) => value.as_str().map(|v| v.ends_with(s.as_str())),
            Self::Exists(_) => Some(true),
        };
        match ok {
            Some(true) => None,
            Some(false) => Some(format!("`{path}`: {} {self}", excerpt(value))),
            None => Some(format!(
                "`{path}`: {} is not a string, so {self}",
                excerpt(value)
            )),
        }
    }
}

impl fmt::Display for Matcher {
    /// The tail of a failure reason: "`path`: VALUE does not …".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Equals(v) => write!(f, "does not equal {}", excerpt(v)),
            Self::Contains(s) => write!(f, "does not contain {s:?}"),
            Self::Prefix(s) => write!(f, "does not start with {s:?}"),
            Self::Suffix(s) => write!(f, "does not end with {s:?}"),
            Self::Exists(_) => write!(f, "exists"),
        }
    }
}

fn same_value(a: &Value, b: &Value) -> Option<bool> {
    Some(match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    })
}

/// A value as JSON, short enough for a failure reason.
fn excerpt(v: &Value) -> String {
    crate::scoring::truncate(&v.to_string(), 120)
}
