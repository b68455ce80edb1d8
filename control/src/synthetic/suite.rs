//! Suite files: YAML read into `Raw*` views, then checked field by field into [`Suite`], every
//! problem reported with its path.
//!
//! The raw views collect unknown keys in a flattened map instead of `deny_unknown_fields`, and
//! hold every field as YAML until it is converted here: serde stops at the first problem and its
//! type errors do not name the field, while a suite author wants the whole list at once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

use super::path::{JsonPath, Matcher};
use super::{Check, Expect, Issue, Suite, SuiteError};

/// Longest `max_latency`; a longer one is a typo (`2h` for `2s`), and the runner's timeout would
/// end the request long before.
const MAX_LATENCY_LIMIT: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
struct RawSuite {
    requests: Option<Yaml>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Yaml>,
}

#[derive(Deserialize)]
struct RawCheck {
    name: Option<Yaml>,
    path: Option<Yaml>,
    body: Option<Yaml>,
    expect: Option<Yaml>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Yaml>,
}

#[derive(Deserialize)]
struct RawExpect {
    status: Option<Yaml>,
    json: Option<Yaml>,
    max_latency: Option<Yaml>,
    stream_done: Option<Yaml>,
    embedding_dim: Option<Yaml>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Yaml>,
}

#[derive(Deserialize)]
struct RawMatcher {
    // `equals: null` is an assertion, not an absent key.
    #[serde(default, deserialize_with = "present")]
    equals: Option<Yaml>,
    contains: Option<Yaml>,
    prefix: Option<Yaml>,
    suffix: Option<Yaml>,
    exists: Option<Yaml>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Yaml>,
}

/// `Matcher::Contains` and its kin: a string matcher from its string.
type MakeMatcher = fn(String) -> Matcher;

/// Collects issues while the suite is read.
#[derive(Default)]
struct Ctx {
    issues: Vec<Issue>,
}

/// Reads and validates a suite file.
pub(super) fn parse(text: &str) -> Result<Suite, SuiteError> {
    let mut ctx = Ctx::default();
    let suite = match serde_yaml_ng::from_str::<Yaml>(text) {
        Ok(yaml) => ctx.suite(yaml),
        Err(e) => {
            ctx.err("", format!("not valid YAML: {e}"));
            None
        }
    };
    match suite {
        Some(s) if ctx.issues.is_empty() => Ok(s),
        _ => Err(SuiteError { issues: ctx.issues }),
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Yaml>, D::Error> {
    Yaml::deserialize(d).map(Some)
}

/// `parent.key`, quoting keys that would read as path syntax.
fn child(parent: &str, key: &str) -> String {
    let key = if key.contains(['.', '[', ']', ' ']) || key.is_empty() {
        format!("{key:?}")
    } else {
        key.to_owned()
    };
    match parent {
        "" => key,
        _ => format!("{parent}.{key}"),
    }
}

/// `250ms`, `2s`, `1.5s`, `1m`; a bare number is refused because its unit would be a guess.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "" => return Err(format!("{text:?} has no unit; write 250ms, 2s or 1m")),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s or m"
            ))
        }
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 250ms, 2s or 1m"))?;
    Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{text:?}: {e}"))
}

// === impl Ctx ===

impl Ctx {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.issues.push(Issue {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// One mapping level: deserialized into its raw view, unknown keys reported.
    fn level<T: DeserializeOwned>(&mut self, path: &str, yaml: Yaml, keys: &str) -> Option<T> {
        if !yaml.is_mapping() {
            self.err(path, format!("expected a mapping with keys {keys}"));
            return None;
        }
        serde_yaml_ng::from_value(yaml)
            .map_err(|e| self.err(path, e.to_string()))
            .ok()
    }

    fn unknown(&mut self, path: &str, unknown: &BTreeMap<String, Yaml>, keys: &str) {
        for key in unknown.keys() {
            self.err(
                &child(path, key),
                format!("unknown key; expected one of {keys}"),
            );
        }
    }

    fn typed<T: DeserializeOwned>(&mut self, path: &str, yaml: Option<Yaml>) -> Option<T> {
        serde_yaml_ng::from_value(yaml?)
            .map_err(|e| self.err(path, e.to_string()))
            .ok()
    }

    fn suite(&mut self, yaml: Yaml) -> Option<Suite> {
        let raw: RawSuite = self.level("", yaml, "requests")?;
        self.unknown("", &raw.unknown, "requests");
        let Some(requests) = raw.requests else {
            self.err("requests", "missing: a suite needs at least one request");
            return None;
        };
        let items: Vec<Yaml> = self.typed("requests", Some(requests))?;
        if items.is_empty() {
            self.err("requests", "empty: a suite needs at least one request");
        }
        // Names are checked apart from the rest of each request: a duplicate of a request
        // with another mistake is still a duplicate.
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut checks = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let path = format!("requests[{i}]");
            let name = item.get("name").and_then(Yaml::as_str).map(str::to_owned);
            let check = self.check(&path, item);
            if let Some(name) = name.filter(|n| !n.trim().is_empty()) {
                if let Some(&first) = names.get(&name) {
                    let msg = format!("{name:?} is also the name of requests[{first}]; a report names requests, so names are unique");
                    self.err(&child(&path, "name"), msg);
                } else {
                    names.insert(name, i);
                }
            }
            checks.extend(check);
        }
        Some(Suite { checks })
    }

    fn check(&mut self, path: &str, yaml: Yaml) -> Option<Check> {
        const KEYS: &str = "name, path, body, expect";
        let raw: RawCheck = self.level(path, yaml, KEYS)?;
        self.unknown(path, &raw.unknown, KEYS);
        let name = self.required_string(&child(path, "name"), raw.name);
        let url_path = self.required_string(&child(path, "path"), raw.path);
        if let Some(p) = &url_path {
            if !p.starts_with('/') || p.contains(char::is_whitespace) {
                self.err(
                    &child(path, "path"),
                    format!("{p:?} must start with / and hold no spaces"),
                );
            }
        }
        let body = self.body(&child(path, "body"), raw.body);
        let stream = body.as_ref().is_some_and(|b| b.1);
        let expect = match raw.expect {
            Some(y) => self.expect(&child(path, "expect"), y, stream),
            None => Some(Expect::default()),
        };
        let (body, stream) = body?;
        Some(Check {
            name: name?,
            path: url_path?,
            body,
            stream,
            expect: expect?,
        })
    }

    fn required_string(&mut self, path: &str, yaml: Option<Yaml>) -> Option<String> {
        if yaml.is_none() {
            self.err(path, "missing");
        }
        let s: String = self.typed(path, yaml)?;
        if s.trim().is_empty() {
            self.err(path, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// The request body as JSON bytes, and whether it asks for a stream.
    fn body(&mut self, path: &str, yaml: Option<Yaml>) -> Option<(Bytes, bool)> {
        let Some(yaml) = yaml else {
            self.err(path, "missing: the JSON request body, as YAML");
            return None;
        };
        let value = match serde_json::to_value(&yaml) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => {
                self.err(path, "must be a mapping (a JSON object)");
                return None;
            }
            Err(e) => {
                self.err(path, format!("not expressible as JSON: {e}"));
                return None;
            }
        };
        let stream = match value.get("stream") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.err(&child(path, "stream"), "must be true or false");
                false
            }
        };
        // Serialising a `Value` cannot fail.
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        Some((Bytes::from(bytes), stream))
    }

    fn expect(&mut self, path: &str, yaml: Yaml, stream: bool) -> Option<Expect> {
        const KEYS: &str = "status, json, max_latency, stream_done, embedding_dim";
        let raw: RawExpect = self.level(path, yaml, KEYS)?;
        self.unknown(path, &raw.unknown, KEYS);
        let status_path = child(path, "status");
        let status: Option<u16> = self.typed(&status_path, raw.status);
        if status.is_some_and(|s| !(100..=599).contains(&s)) {
            self.err(&status_path, "must be an HTTP status, 100 to 599");
        }
        let max_latency = self.latency(&child(path, "max_latency"), raw.max_latency);
        let stream_done_path = child(path, "stream_done");
        let stream_done = self
            .typed::<bool>(&stream_done_path, raw.stream_done)
            .unwrap_or(false);
        if stream_done && !stream {
            self.err(&stream_done_path, "needs `stream: true` in the body");
        }
        let dim_path = child(path, "embedding_dim");
        let embedding_dim: Option<usize> = self.typed(&dim_path, raw.embedding_dim);
        if embedding_dim == Some(0) {
            self.err(&dim_path, "must be at least 1");
        }
        let json = match raw.json {
            Some(y) => self.json(&child(path, "json"), y),
            None => Vec::new(),
        };
        Some(Expect {
            status,
            json,
            max_latency,
            stream_done,
            embedding_dim,
        })
    }

    fn latency(&mut self, path: &str, yaml: Option<Yaml>) -> Option<Duration> {
        let text = match self.typed::<Yaml>(path, yaml)? {
            Yaml::String(s) => s,
            Yaml::Number(n) => {
                self.err(path, format!("{n} has no unit; write 250ms, 2s or 1m"));
                return None;
            }
            _ => {
                self.err(path, "expected a duration like 250ms, 2s or 1m");
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) if d.is_zero() || d > MAX_LATENCY_LIMIT => {
                self.err(
                    path,
                    format!("must be above 0 and at most 1h, not {text:?}"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    fn json(&mut self, path: &str, yaml: Yaml) -> Vec<(JsonPath, Vec<Matcher>)> {
        let Some(map) = self.typed::<BTreeMap<String, Yaml>>(path, Some(yaml)) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(map.len());
        for (key, value) in map {
            let at = child(path, &key);
            let json_path = JsonPath::parse(&key).map_err(|e| self.err(&at, e)).ok();
            let matchers = self.matchers(&at, value);
            if let (Some(p), Some(m)) = (json_path, matchers) {
                out.push((p, m));
            }
        }
        out
    }

    fn matchers(&mut self, path: &str, yaml: Yaml) -> Option<Vec<Matcher>> {
        const KEYS: &str = "equals, contains, prefix, suffix, exists";
        let raw: RawMatcher = self.level(path, yaml, KEYS)?;
        self.unknown(path, &raw.unknown, KEYS);
        let given = [
            &raw.equals,
            &raw.contains,
            &raw.prefix,
            &raw.suffix,
            &raw.exists,
        ]
        .iter()
        .any(|y| y.is_some());
        if !given && raw.unknown.is_empty() {
            self.err(path, format!("no matcher; use one or more of {KEYS}"));
        }
        let mut out = Vec::new();
        if let Some(v) = raw.equals {
            match serde_json::to_value(&v) {
                Ok(v) => out.push(Matcher::Equals(v)),
                Err(e) => self.err(&child(path, "equals"), format!("not JSON: {e}")),
            }
        }
        let strings: [(&str, Option<Yaml>, MakeMatcher); 3] = [
            ("contains", raw.contains, Matcher::Contains),
            ("prefix", raw.prefix, Matcher::Prefix),
            ("suffix", raw.suffix, Matcher::Suffix),
        ];
        for (key, yaml, make) in strings {
            if let Some(s) = self.typed::<String>(&child(path, key), yaml) {
                out.push(make(s));
            }
        }
        if let Some(b) = self.typed::<bool>(&child(path, "exists"), raw.exists) {
            out.push(Matcher::Exists(b));
        }
        Some(out)
    }
}
