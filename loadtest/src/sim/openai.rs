//! OpenAI request parsing, and the bodies besides answers: embeddings, models, errors.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    answer::{base64, count_tokens, AnswerKey},
    tools::Tools,
};

/// OpenAI's own limit on inputs in one embeddings request; it also bounds the response size,
/// and that of a completions request's prompts times `n`.
const MAX_INPUTS: usize = 2048;
/// Bounds one vector's size; the largest real embedding models stay well under it.
pub(super) const MAX_EMBEDDING_DIM: usize = 65_536;
/// Choices one request may ask for (`n`): far past what sampling setups use, and it bounds the
/// work and the size of one answer.
pub(super) const MAX_CHOICES: u32 = 128;

/// The inference endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

/// A parsed inference request: what the latency model and the answer need.
#[derive(Debug)]
pub(super) struct Parsed {
    pub model: Option<String>,
    pub prompt: Value,
    pub prompt_tokens: u64,
    pub max_tokens: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    pub base64: bool,
    pub dimensions: Option<usize>,
    /// Choices to generate for each prompt (`n`; always 1 for embeddings).
    pub n: u32,
    /// Prompts a completions request lists, each answered with `n` choices; otherwise 1.
    pub prompts: u32,
    /// The functions a chat answer calls; `None` when the answer is text.
    pub tools: Option<Tools>,
}

#[derive(Deserialize)]
struct RawRequest {
    model: Option<String>,
    messages: Option<Value>,
    prompt: Option<Value>,
    input: Option<Value>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    stream: Option<bool>,
    stream_options: Option<RawStreamOptions>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    n: Option<i64>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
}

#[derive(Deserialize)]
struct RawStreamOptions {
    include_usage: Option<bool>,
}

// === impl Endpoint ===

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Self::Chat),
            "/v1/completions" => Some(Self::Completions),
            "/v1/embeddings" => Some(Self::Embeddings),
            _ => None,
        }
    }

    pub(super) fn id_prefix(self) -> &'static str {
        match self {
            Self::Chat => "chatcmpl",
            Self::Completions => "cmpl",
            Self::Embeddings => "embd",
        }
    }

    /// Parses a request body, naming the parameter at fault: `(message, param)`.
    pub fn parse(self, body: &[u8]) -> Result<Parsed, (String, Option<&'static str>)> {
        let raw: RawRequest = serde_json::from_slice(body).map_err(|e| {
            (
                format!("request body is not valid JSON for this endpoint: {e}"),
                None,
            )
        })?;
        let (field, prompt) = match self {
            Self::Chat => ("messages", raw.messages),
            Self::Completions => ("prompt", raw.prompt),
            Self::Embeddings => ("input", raw.input),
        };
        let prompt = match prompt {
            Some(Value::Null) | None => {
                return Err((format!("'{field}' is required"), Some(field)))
            }
            Some(Value::Array(items)) if items.is_empty() => {
                return Err((format!("'{field}' must not be empty"), Some(field)))
            }
            Some(p @ (Value::String(_) | Value::Array(_)))
                if self != Self::Chat || p.is_array() =>
            {
                p
            }
            Some(_) => return Err((format!("'{field}' has the wrong type"), Some(field))),
        };
        let n = self.choices(raw.n)?;
        let prompts = match self {
            Self::Completions => prompt_list(&prompt).map_or(1, <[Value]>::len),
            _ => 1,
        };
        if prompts.saturating_mul(n as usize) > MAX_INPUTS {
            let msg = format!("'prompt' times 'n' may be at most {MAX_INPUTS} choices");
            return Err((msg, Some("prompt")));
        }
        // At most `MAX_INPUTS` by the check above.
        let prompts = prompts as u32;
        let (tools, tool_tokens) = match self {
            Self::Chat => Tools::parse(raw.tools, raw.tool_choice, &prompt)
                .map_err(|(msg, param)| (msg, Some(param)))?,
            _ => (None, 0),
        };
        let max_tokens = raw.max_completion_tokens.or(raw.max_tokens);
        // Bounded so token sums cannot overflow; no engine generates four billion tokens.
        if max_tokens.is_some_and(|n| n == 0 || n > u64::from(u32::MAX)) {
            let msg = format!("'max_tokens' must be between 1 and {}", u32::MAX);
            return Err((msg, Some("max_tokens")));
        }
        if raw
            .dimensions
            .is_some_and(|d| d == 0 || d > MAX_EMBEDDING_DIM)
        {
            let msg = format!("'dimensions' must be between 1 and {MAX_EMBEDDING_DIM}");
            return Err((msg, Some("dimensions")));
        }
        if self == Self::Embeddings && prompt.as_array().is_some_and(|a| a.len() > MAX_INPUTS) {
            let msg = format!("'input' may hold at most {MAX_INPUTS} items");
            return Err((msg, Some("input")));
        }
        let base64 = match raw.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                let msg = format!("'encoding_format' {other:?} is not one of float, base64");
                return Err((msg, Some("encoding_format")));
            }
        };
        Ok(Parsed {
            model: raw.model,
            prompt_tokens: count_tokens(&prompt) + tool_tokens,
            prompt,
            max_tokens,
            stream: raw.stream.unwrap_or(false),
            include_usage: raw
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            base64,
            dimensions: raw.dimensions,
            n,
            prompts,
            tools,
        })
    }

    /// `n`, bounded; embeddings have no choices and ignore it, as vLLM does.
    fn choices(self, n: Option<i64>) -> Result<u32, (String, Option<&'static str>)> {
        match n {
            None => Ok(1),
            Some(_) if self == Self::Embeddings => Ok(1),
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_CHOICES).contains(n))
                .ok_or_else(|| {
                    (
                        format!("'n' must be between 1 and {MAX_CHOICES}"),
                        Some("n"),
                    )
                }),
        }
    }
}

/// A completions `prompt` that lists several prompts (strings or token-id lists); `None` for
/// one prompt (a string, or one list of token ids).
pub(super) fn prompt_list(prompt: &Value) -> Option<&[Value]> {
    match prompt {
        Value::Array(items) if !items.iter().all(Value::is_number) => Some(items),
        _ => None,
    }
}

/// The embeddings body: one unit vector per input.
pub(super) fn embeddings(model: &str, parsed: &Parsed, dim: usize, wrong: bool) -> Bytes {
    let inputs: Vec<Value> = match &parsed.prompt {
        // An array of token ids is one input; an array of strings or of arrays is many.
        Value::Array(items) if items.iter().all(Value::is_number) => vec![parsed.prompt.clone()],
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let key = AnswerKey::new(model, input);
            let vector = if wrong { key.wrong() } else { key }.embedding(dim);
            let embedding = if parsed.base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    to_bytes(&json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": parsed.prompt_tokens, "total_tokens": parsed.prompt_tokens},
    }))
}

pub(super) fn models(model: &str, max_model_len: Option<u64>) -> Value {
    json!({
        "id": model,
        "object": "model",
        "created": unix_now(),
        "owned_by": "rollgate-sim",
        "root": model,
        "max_model_len": max_model_len,
    })
}

/// `{"error":{"message","type","param","code"}}`.
pub(super) fn error(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    to_bytes(&error_value(message, kind, param, code))
}

/// The SSE event a stream carries when it fails after the 200.
pub(super) fn error_event(message: &str) -> Bytes {
    sse(&error_value(
        message,
        "server_error",
        None,
        Some("internal_error"),
    ))
}

fn error_value(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

pub(super) const DONE: &[u8] = b"data: [DONE]\n\n";

pub(super) fn sse(value: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    // Serialising a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    out.into()
}

pub(super) fn to_bytes(value: &Value) -> Bytes {
    // Serialising a `Value` cannot fail.
    serde_json::to_vec(value).unwrap_or_default().into()
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
