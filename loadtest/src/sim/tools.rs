//! Tool calls: a chat request's `tools` and `tool_choice`, and the call that answers them,
//! generated from the chosen function's JSON schema and the answer key, so that the same
//! request always gets the same call and a wrong answer gets the same call with other values.

use serde_json::Value;

use super::answer::AnswerKey;

mod schema;

use schema::arguments;

/// The draw that picks the function when the request leaves the choice to the model.
const TOOL_DRAW: u64 = u64::MAX;
/// The draw that picks the argument a wrong call misses.
const DROP_DRAW: u64 = u64::MAX - 1;

/// The functions a chat request offers and which of them an answer calls.
#[derive(Debug)]
pub(super) struct Tools {
    functions: Vec<Function>,
    choice: Choice,
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

// === impl Tools ===

impl Tools {
    /// Checks `tools` and `tool_choice` as OpenAI does. `None`: the answer is text (no tools,
    /// `tool_choice: "none"`, or `"auto"` after a tool's result). Also returns what the
    /// definitions add to the prompt: a chat template renders them into it whatever the answer.
    pub fn parse(
        tools: Option<Value>,
        tool_choice: Option<Value>,
        messages: &Value,
    ) -> Result<(Option<Self>, u64), Refusal> {
        let choice = RawChoice::parse(tool_choice)?;
        let tools = match tools {
            None | Some(Value::Null) => None,
            Some(Value::Array(tools)) if tools.is_empty() => {
                let msg = "Invalid 'tools': empty array. Expected an array with minimum length 1, \
                           but got an empty array instead.";
                return Err((msg.to_owned(), "tools"));
            }
            Some(Value::Array(tools)) => Some(tools),
            Some(_) => return Err(("'tools' must be an array".to_owned(), "tools")),
        };
        let Some(tools) = tools else {
            return match choice {
                RawChoice::Absent | RawChoice::None => Ok((None, 0)),
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
            RawChoice::None => return Ok((None, prompt_tokens)),
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
            RawChoice::Required => Choice::Required,
            RawChoice::Absent | RawChoice::Auto if after_tool_result(messages) => {
                return Ok((None, prompt_tokens))
            }
            RawChoice::Absent | RawChoice::Auto => Choice::Auto,
        };
        Ok((Some(Self { functions, choice }), prompt_tokens))
    }

    /// The call that answers `key`: the named function, or one drawn from the key; arguments
    /// cut at `max_tokens`.
    pub fn call(&self, key: AnswerKey, max_tokens: Option<u64>) -> Call {
        let index = match self.choice {
            Choice::Named(index) => index,
            Choice::Auto | Choice::Required => {
                // Never empty here: `parse` refuses an empty list.
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests;
