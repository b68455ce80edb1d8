//! OpenAI request parsing and response bodies: completions, chat, embeddings, errors.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    answer::{base64, count_tokens, AnswerKey},
    metrics::Finish,
};

/// OpenAI's own limit on inputs in one embeddings request; it also bounds the response size.
const MAX_INPUTS: usize = 2048;
/// Bounds one vector's size; the largest real embedding models stay well under it.
pub(super) const MAX_EMBEDDING_DIM: usize = 65_536;

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
}

/// What one generated answer says, shared by the streaming and non-streaming writers.
#[derive(Clone, Debug)]
pub(super) struct Reply {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub answer: AnswerKey,
    pub tokens: u64,
    pub prompt_tokens: u64,
    pub finish: Finish,
    pub include_usage: bool,
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
    n: Option<u64>,
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

    fn id_prefix(self) -> &'static str {
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
        // One answer per request is what the simulator generates; quietly answering one where
        // `n` asked for several would make a client's per-choice logic look right when it is not.
        if raw.n.is_some_and(|n| n != 1) && self != Self::Embeddings {
            let msg = "'n' other than 1 is not simulated: the simulator generates one choice";
            return Err((msg.to_owned(), Some("n")));
        }
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
            prompt_tokens: count_tokens(&prompt),
            prompt,
            max_tokens,
            stream: raw.stream.unwrap_or(false),
            include_usage: raw
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            base64,
            dimensions: raw.dimensions,
        })
    }
}

/// Mixed into response ids so that two simulators (a stable and a candidate behind one
/// gateway) never hand a client the same id; answers and timing draws stay seeded.
fn id_salt() -> u64 {
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SALT.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        super::answer::mix(nanos ^ u64::from(std::process::id()) << 32)
    })
}

// === impl Reply ===

impl Reply {
    pub fn new(endpoint: Endpoint, seq: u64, model: String, answer: AnswerKey) -> Self {
        Self {
            endpoint,
            id: format!(
                "{}-{:016x}",
                endpoint.id_prefix(),
                super::answer::mix(seq ^ id_salt())
            ),
            created: unix_now(),
            model,
            answer,
            tokens: 0,
            prompt_tokens: 0,
            finish: Finish::Stop,
            include_usage: false,
        }
    }

    fn finish_reason(&self) -> &'static str {
        match self.finish {
            Finish::Stop => "stop",
            Finish::Length => "length",
            // Never written: nobody is left to read it.
            Finish::Abort => "abort",
        }
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.tokens,
            "total_tokens": self.prompt_tokens + self.tokens,
        })
    }

    /// The whole answer as one JSON body.
    pub fn full(&self) -> Bytes {
        let text = self.answer.text(self.tokens);
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": self.finish_reason(),
            }),
            _ => json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": self.finish_reason(),
            }),
        };
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion",
            _ => "text_completion",
        };
        to_bytes(&json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": self.usage(),
        }))
    }

    /// The SSE event carrying token `i`; the first chat event also carries the role.
    pub fn token_event(&self, i: u64) -> Bytes {
        let token = self.answer.token(i);
        let choice = match self.endpoint {
            Endpoint::Chat if i == 0 => {
                json!({"index": 0, "delta": {"role": "assistant", "content": token}, "logprobs": null, "finish_reason": null})
            }
            Endpoint::Chat => {
                json!({"index": 0, "delta": {"content": token}, "logprobs": null, "finish_reason": null})
            }
            _ => json!({"index": 0, "text": token, "logprobs": null, "finish_reason": null}),
        };
        self.chunk(json!([choice]), None)
    }

    /// The event that carries `finish_reason`.
    pub fn finish_event(&self) -> Bytes {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": self.finish_reason()})
            }
            _ => {
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": self.finish_reason()})
            }
        };
        self.chunk(json!([choice]), None)
    }

    /// The `stream_options.include_usage` event: usage and no choices.
    pub fn usage_event(&self) -> Bytes {
        self.chunk(json!([]), Some(self.usage()))
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> Bytes {
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            _ => "text_completion",
        };
        let mut chunk = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if self.include_usage {
            // OpenAI sends `usage: null` on every chunk but the last when usage was asked for.
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        sse(&chunk)
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

fn sse(value: &Value) -> Bytes {
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
