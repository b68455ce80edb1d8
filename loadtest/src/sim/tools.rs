//! Tool calls: a chat request's `tools` and `tool_choice`, and the call that answers them,
//! generated from the chosen function's JSON schema and the answer key, so that the same
//! request always gets the same call and a wrong answer gets the same call with other values.

use serde_json::{Map, Number, Value};

use super::answer::AnswerKey;

/// Values one call's arguments may hold: bounds the work and the size of an answer to a
/// schema of nested arrays, whose generated size would otherwise grow as a power of its depth.
const MAX_VALUES: u32 = 512;
/// Items of a generated array when the schema gives no `maxItems` (at least 1 by default).
const DEFAULT_MAX_ITEMS: u64 = 3;
/// Items of a generated array whatever the schema asks for.
const MAX_ITEMS: u64 = 16;
/// Span of an integer or number whose schema gives no bounds.
const DEFAULT_SPAN: i64 = 100;
/// A number is one of this many steps across its range, plus one.
const NUMBER_STEPS: u64 = 1000;
/// The draw that picks the function when the request leaves the choice to the model.
const TOOL_DRAW: u64 = u64::MAX;
/// The draw that picks the argument a wrong call misses.
const DROP_DRAW: u64 = u64::MAX - 1;

/// The functions a chat request offers and which of them an answer calls.
#[derive(Debug)]
pub(super) struct Tools {
    functions: Vec<Function>,
    choice: Choice,
    /// What the function definitions add to the prompt, as a chat template renders them into it.
    pub prompt_tokens: u64,
}

/// One generated tool call: one choice's answer.
#[derive(Clone, Debug)]
pub(super) struct Call {
    pub name: String,
    /// Cut short at the request's `max_tokens` (then not valid JSON, as with a real server).
    pub arguments: String,
    /// Where each token's fragment of `arguments` starts, and the end.
    bounds: Vec<usize>,
    /// `max_tokens` ended the call before its arguments did.
    pub truncated: bool,
}

#[derive(Debug)]
struct Function {
    name: String,
    parameters: Option<Value>,
}

/// `tool_choice` once checked against `tools`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    /// Absent or `"auto"`: the simulator calls a tool unless the last message is a tool's
    /// result, when it answers text, so that an agent loop run against it ends.
    Auto,
    Required,
    Named(usize),
}

/// `tool_choice` as the request wrote it.
enum RawChoice {
    Absent,
    None,
    Auto,
    Required,
    Named(String),
}

/// A refused request: the message and the parameter at fault.
type Refusal = (String, &'static str);

/// Walks a schema, drawing each value from the answer key in a fixed order.
struct Gen {
    key: AnswerKey,
    next: u64,
    budget: u32,
}

// === impl Tools ===

impl Tools {
    /// Checks `tools` and `tool_choice` as vLLM does. `None`: the answer is text (no tools, an
    /// empty list, `tool_choice: "none"`, or `"auto"` after a tool's result).
    pub fn parse(
        tools: Option<Value>,
        tool_choice: Option<Value>,
        messages: &Value,
    ) -> Result<Option<Self>, Refusal> {
        let choice = RawChoice::parse(tool_choice)?;
        let tools = match tools {
            None | Some(Value::Null) => None,
            Some(Value::Array(tools)) => Some(tools),
            Some(_) => return Err(("'tools' must be an array".to_owned(), "tools")),
        };
        let Some(tools) = tools else {
            return match choice {
                RawChoice::Absent | RawChoice::None => Ok(None),
                _ => Err((
                    "'tool_choice' is only allowed when 'tools' are given".to_owned(),
                    "tool_choice",
                )),
            };
        };
        let prompt_tokens = super::answer::count_tokens(&Value::String(
            serde_json::to_string(&tools).unwrap_or_default(),
        ));
        let functions = tools
            .into_iter()
            .enumerate()
            .map(|(i, tool)| Function::parse(i, tool))
            .collect::<Result<Vec<_>, _>>()?;
        let choice = match choice {
            RawChoice::None => return Ok(None),
            RawChoice::Named(name) => {
                let found = functions.iter().position(|f| f.name == name);
                let Some(index) = found else {
                    let msg = format!(
                        "'tool_choice' names the function {name:?}, which is not in 'tools'"
                    );
                    return Err((msg, "tool_choice"));
                };
                Choice::Named(index)
            }
            _ if functions.is_empty() => return Ok(None),
            RawChoice::Required => Choice::Required,
            RawChoice::Absent | RawChoice::Auto if after_tool_result(messages) => return Ok(None),
            RawChoice::Absent | RawChoice::Auto => Choice::Auto,
        };
        Ok(Some(Self {
            functions,
            choice,
            prompt_tokens,
        }))
    }

    /// The call that answers `key`: the named function, or one drawn from the key; arguments
    /// cut at `max_tokens`.
    pub fn call(&self, key: AnswerKey, max_tokens: Option<u64>) -> Call {
        let index = match self.choice {
            Choice::Named(index) => index,
            Choice::Auto | Choice::Required => {
                // Never empty here: `parse` answers text for an empty list.
                (key.draw(TOOL_DRAW) % self.functions.len() as u64) as usize
            }
        };
        let Some(function) = self.functions.get(index) else {
            return Call::new(String::new(), "{}".to_owned(), max_tokens);
        };
        let arguments = arguments(function.parameters.as_ref(), key);
        Call::new(function.name.clone(), arguments, max_tokens)
    }
}

/// A model called with a tool's result usually answers in words.
fn after_tool_result(messages: &Value) -> bool {
    let last = messages.as_array().and_then(|m| m.last());
    last.and_then(|m| m.get("role")).and_then(Value::as_str) == Some("tool")
}

// === impl Call ===

impl Call {
    fn new(name: String, mut arguments: String, max_tokens: Option<u64>) -> Self {
        // One token per four characters, as `count_tokens` counts them.
        let mut bounds: Vec<usize> = arguments
            .char_indices()
            .map(|(i, _)| i)
            .step_by(4)
            .collect();
        bounds.push(arguments.len());
        let tokens = bounds.len() as u64 - 1;
        let mut truncated = false;
        if let Some(max) = max_tokens.filter(|max| *max < tokens) {
            // `max < tokens < bounds.len()`, so the index is in range.
            let max = max as usize;
            arguments.truncate(bounds[max]);
            bounds.truncate(max + 1);
            truncated = true;
        }
        Self {
            name,
            arguments,
            bounds,
            truncated,
        }
    }

    /// Output tokens: one per fragment.
    pub fn tokens(&self) -> u64 {
        self.bounds.len().saturating_sub(1) as u64
    }

    /// The arguments' fragment that token `i` carries (empty past the end).
    pub fn fragment(&self, i: u64) -> &str {
        let i = usize::try_from(i).unwrap_or(usize::MAX);
        match (
            self.bounds.get(i),
            i.checked_add(1).and_then(|j| self.bounds.get(j)),
        ) {
            (Some(start), Some(end)) => self.arguments.get(*start..*end).unwrap_or_default(),
            _ => "",
        }
    }
}

// === impl Function ===

impl Function {
    fn parse(i: usize, tool: Value) -> Result<Self, Refusal> {
        let bad = |what: &str| (format!("'tools[{i}]' {what}"), "tools");
        let Value::Object(mut tool) = tool else {
            return Err(bad("must be an object"));
        };
        match tool.get("type") {
            None => {}
            Some(Value::String(t)) if t == "function" => {}
            Some(_) => return Err(bad("has a 'type' other than \"function\"")),
        }
        let Some(Value::Object(mut function)) = tool.remove("function") else {
            return Err(bad("needs a 'function' object"));
        };
        let name = match function.remove("name") {
            Some(Value::String(name)) if !name.is_empty() => name,
            _ => return Err(bad("needs a 'function.name'")),
        };
        let parameters = match function.remove("parameters") {
            None | Some(Value::Null) => None,
            Some(p @ Value::Object(_)) => Some(p),
            Some(_) => return Err(bad("has 'function.parameters' that is not an object")),
        };
        Ok(Self { name, parameters })
    }
}

// === impl RawChoice ===

impl RawChoice {
    fn parse(value: Option<Value>) -> Result<Self, Refusal> {
        let bad = || {
            let msg = "'tool_choice' must be \"none\", \"auto\", \"required\" or \
                       {\"type\": \"function\", \"function\": {\"name\": ...}}";
            Err((msg.to_owned(), "tool_choice"))
        };
        let named = match value {
            None | Some(Value::Null) => return Ok(Self::Absent),
            Some(Value::String(s)) => {
                return match s.as_str() {
                    "none" => Ok(Self::None),
                    "auto" => Ok(Self::Auto),
                    "required" => Ok(Self::Required),
                    _ => bad(),
                }
            }
            Some(Value::Object(mut named)) => {
                if named.get("type").is_some_and(|t| t != "function") {
                    return bad();
                }
                named.remove("function")
            }
            Some(_) => return bad(),
        };
        match named.and_then(|mut f| f.get_mut("name").map(Value::take)) {
            Some(Value::String(name)) if !name.is_empty() => Ok(Self::Named(name)),
            _ => bad(),
        }
    }
}

/// The arguments for `parameters`, serialised: `{}` without an object schema.
fn arguments(parameters: Option<&Value>, key: AnswerKey) -> String {
    let mut gen = Gen {
        key,
        next: 0,
        budget: MAX_VALUES,
    };
    let mut value = match parameters {
        Some(schema) if kind(schema) == "object" => gen.value(schema),
        _ => Value::Object(Map::new()),
    };
    // A wrong call also misses an argument, as a weaker model's calls do: other values alone
    // leave the name, the keys and the punctuation equal, which word overlap rates close.
    if let Value::Object(fields) = &mut value {
        if key.is_wrong() && !fields.is_empty() {
            let drop = key.draw(DROP_DRAW) % fields.len() as u64;
            let name = fields.keys().nth(drop as usize).cloned();
            name.map(|name| fields.remove(&name));
        }
    }
    // Serialising a `Value` cannot fail.
    serde_json::to_string(&value).unwrap_or_else(|_| "{}".to_owned())
}

/// The JSON type a schema describes: its `type` (the first one besides `null`), or what its
/// other keywords imply.
fn kind(schema: &Value) -> &str {
    let declared = match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    };
    match declared {
        Some(t) => t,
        None if schema.get("properties").is_some() => "object",
        None if schema.get("items").is_some() => "array",
        None => "string",
    }
}

// === impl Gen ===

impl Gen {
    /// The next draw's index; right and wrong answers walk a schema alike.
    fn slot(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn value(&mut self, schema: &Value) -> Value {
        if self.budget == 0 {
            return Value::Null;
        }
        self.budget -= 1;
        if let Some(value) = schema.get("const") {
            return value.clone();
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            let slot = self.slot();
            let pick = self.key.pick(slot, options.len() as u64);
            return options.get(pick as usize).cloned().unwrap_or(Value::Null);
        }
        let first_of = ["anyOf", "oneOf", "allOf"].iter().find_map(|k| {
            schema
                .get(*k)
                .and_then(Value::as_array)
                .and_then(|a| a.first())
        });
        if let Some(first) = first_of {
            return self.value(first);
        }
        match kind(schema) {
            "object" => self.object(schema),
            "array" => self.array(schema),
            "integer" => self.integer(schema),
            "number" => self.number(schema),
            "boolean" => {
                let slot = self.slot();
                Value::Bool(self.key.pick(slot, 2) == 1)
            }
            "null" => Value::Null,
            _ => self.string(schema),
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
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, property) in properties.into_iter().flatten() {
            let slot = self.slot();
            if required.contains(&name.as_str()) || self.key.draw(slot) % 2 == 0 {
                out.insert(name.clone(), self.value(property));
            }
        }
        // Required names the schema does not describe still get a value.
        for name in required {
            if !out.contains_key(name) {
                let value = self.value(&Value::Null);
                out.insert(name.to_owned(), value);
            }
        }
        Value::Object(out)
    }

    fn array(&mut self, schema: &Value) -> Value {
        let bound = |k: &str| schema.get(k).and_then(Value::as_u64);
        let max = bound("maxItems")
            .unwrap_or(DEFAULT_MAX_ITEMS.max(bound("minItems").unwrap_or(0)))
            .min(MAX_ITEMS);
        let min = bound("minItems").unwrap_or(1).min(max);
        let slot = self.slot();
        let len = min + self.key.draw(slot) % (max - min + 1);
        let items = match schema.get("items") {
            Some(Value::Array(tuple)) => tuple.first().cloned().unwrap_or(Value::Null),
            Some(items) => items.clone(),
            None => Value::Null,
        };
        Value::Array((0..len).map(|_| self.value(&items)).collect())
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
        Number::from_f64(value).map_or(Value::Null, Value::Number)
    }

    /// One to three words of the answer's vocabulary, within `maxLength`.
    fn string(&mut self, schema: &Value) -> Value {
        let slot = self.slot();
        let words = 1 + self.key.draw(slot) % 3;
        let mut out = String::new();
        for k in 0..words {
            if k > 0 {
                out.push(' ');
            }
            out.push_str(self.key.word(slot << 2 | k));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if let Some((cut, _)) = out.char_indices().nth(max) {
                out.truncate(cut);
            }
        }
        Value::String(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests;
