//! One generated answer, written whole or as SSE chunks: text or tool-call choices, `n` of them.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::{
    answer::{mix, AnswerKey},
    metrics::Finish,
    openai::{sse, to_bytes, unix_now, Endpoint},
    tools::Call,
};

/// What one generated answer says, shared by the streaming and non-streaming writers.
#[derive(Clone, Debug)]
pub(super) struct Reply {
    pub endpoint: Endpoint,
    pub id: String,
    /// The number behind `id`; tool-call ids are derived from it.
    id_seed: u64,
    pub created: u64,
    pub model: String,
    /// The answer to the (first) prompt.
    pub answer: AnswerKey,
    /// The answers to a completions request's further prompts.
    pub other_prompts: Vec<AnswerKey>,
    /// Output tokens of each text choice.
    pub tokens: u64,
    /// Choices over every prompt, each its own answer; all are generated together, at one
    /// pace. Choice `c` is choice `c % per_prompt` of prompt `c / per_prompt`.
    pub n: u32,
    /// Choices of each prompt: the request's `n`.
    pub per_prompt: u32,
    /// One tool call per choice when the answer calls a tool; empty for text.
    pub calls: Vec<Call>,
    pub prompt_tokens: u64,
    /// How the request ended, for the engine metrics: vLLM counts a finished tool call as
    /// `stop`, and one choice cut by `max_tokens` makes it `length`.
    pub finish: Finish,
    pub include_usage: bool,
}

/// Mixed into response ids so that two simulators (a stable and a candidate behind one
/// gateway) never hand a client the same id; answers and timing draws stay seeded.
fn id_salt() -> u64 {
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SALT.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        mix(nanos ^ u64::from(std::process::id()) << 32)
    })
}

// === impl Reply ===

impl Reply {
    pub fn new(endpoint: Endpoint, seq: u64, model: String, answer: AnswerKey) -> Self {
        let id_seed = mix(seq ^ id_salt());
        Self {
            endpoint,
            id: format!("{}-{id_seed:016x}", endpoint.id_prefix()),
            id_seed,
            created: unix_now(),
            model,
            answer,
            other_prompts: Vec::new(),
            tokens: 0,
            n: 1,
            per_prompt: 1,
            calls: Vec::new(),
            prompt_tokens: 0,
            finish: Finish::Stop,
            include_usage: false,
        }
    }

    /// The answer of choice `c`.
    fn key(&self, c: u32) -> AnswerKey {
        let per_prompt = self.per_prompt.max(1);
        let prompt = (c / per_prompt) as usize;
        let answer = match prompt.checked_sub(1) {
            None => self.answer,
            Some(i) => self.other_prompts.get(i).copied().unwrap_or(self.answer),
        };
        answer.choice(c % per_prompt)
    }

    /// One text choice: what most requests are, written as before `n` and tools existed.
    fn single_text(&self) -> bool {
        self.n == 1 && self.calls.is_empty()
    }

    /// Output tokens of choice `j`.
    fn choice_tokens(&self, j: u32) -> u64 {
        match self.calls.get(j as usize) {
            Some(call) => call.tokens(),
            None => self.tokens,
        }
    }

    /// Token steps the answer takes: its longest choice's tokens.
    pub fn steps(&self) -> u64 {
        match self.calls.iter().map(Call::tokens).max() {
            Some(longest) => longest,
            None => self.tokens,
        }
    }

    /// Output tokens over every choice: `usage.completion_tokens`.
    pub fn completion_tokens(&self) -> u64 {
        if self.calls.is_empty() {
            self.tokens * u64::from(self.n)
        } else {
            self.calls.iter().map(Call::tokens).sum()
        }
    }

    /// Token events that step `i` sends: one per choice still generating.
    pub fn tokens_at(&self, i: u64) -> u64 {
        if self.calls.is_empty() {
            if i < self.tokens {
                u64::from(self.n)
            } else {
                0
            }
        } else {
            self.calls.iter().filter(|c| i < c.tokens()).count() as u64
        }
    }

    fn finish_reason(&self, j: u32) -> &'static str {
        match (self.calls.get(j as usize), self.finish) {
            (Some(call), _) if call.truncated => "length",
            (Some(_), _) => "tool_calls",
            (None, Finish::Stop) => "stop",
            (None, Finish::Length) => "length",
            // Never written: nobody is left to read it.
            (None, Finish::Abort) => "abort",
        }
    }

    fn usage(&self) -> Value {
        let completion = self.completion_tokens();
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }

    /// Tool-call ids differ between responses and between the choices of one.
    fn call_id(&self, j: u32) -> String {
        format!("call_{:016x}", mix(self.id_seed ^ mix(u64::from(j) + 1)))
    }

    /// The whole answer as one JSON body.
    pub fn full(&self) -> Bytes {
        let choices: Vec<Value> = (0..self.n).map(|j| self.full_choice(j)).collect();
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion",
            _ => "text_completion",
        };
        to_bytes(&json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage(),
        }))
    }

    fn full_choice(&self, j: u32) -> Value {
        let finish_reason = self.finish_reason(j);
        if let Some(call) = self.calls.get(j as usize) {
            let call = json!({
                "id": self.call_id(j),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            });
            return json!({
                "index": j,
                "message": {"role": "assistant", "content": null, "tool_calls": [call]},
                "logprobs": null,
                "finish_reason": finish_reason,
            });
        }
        let text = self.key(j).text(self.tokens);
        match self.endpoint {
            Endpoint::Chat => json!({
                "index": j,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish_reason,
            }),
            _ => json!({
                "index": j,
                "text": text,
                "logprobs": null,
                "finish_reason": finish_reason,
            }),
        }
    }

    /// The SSE events of token step `i`: a chunk per choice still generating (each with its
    /// `index`), then the finish chunk of each choice that ends here before the longest one.
    pub fn step_events(&self, i: u64) -> Bytes {
        if self.single_text() {
            return self.token_event(0, i);
        }
        let steps = self.steps();
        let mut out = BytesMut::new();
        for j in 0..self.n {
            let tokens = self.choice_tokens(j);
            if i >= tokens {
                continue;
            }
            match self.calls.get(j as usize) {
                Some(call) if i == 0 => out.extend_from_slice(&self.call_start_event(j, call)),
                Some(call) => {
                    let fragment = call.fragment(i);
                    let delta =
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]});
                    out.extend_from_slice(&self.delta_event(j, delta));
                }
                None => out.extend_from_slice(&self.token_event(j, i)),
            }
            if i + 1 == tokens && tokens < steps {
                out.extend_from_slice(&self.finish_event(j));
            }
        }
        out.freeze()
    }

    /// The finish events of the choices that run to the last step.
    pub fn finish_events(&self) -> Bytes {
        if self.single_text() {
            return self.finish_event(0);
        }
        let steps = self.steps();
        let mut out = BytesMut::new();
        for j in (0..self.n).filter(|j| self.choice_tokens(*j) == steps) {
            out.extend_from_slice(&self.finish_event(j));
        }
        out.freeze()
    }

    /// Token `i` of text choice `j`; a chat choice's first event also carries the role.
    fn token_event(&self, j: u32, i: u64) -> Bytes {
        let token = self.key(j).token(i);
        let choice = match self.endpoint {
            Endpoint::Chat if i == 0 => {
                json!({"index": j, "delta": {"role": "assistant", "content": token}, "logprobs": null, "finish_reason": null})
            }
            Endpoint::Chat => {
                json!({"index": j, "delta": {"content": token}, "logprobs": null, "finish_reason": null})
            }
            _ => json!({"index": j, "text": token, "logprobs": null, "finish_reason": null}),
        };
        self.chunk(json!([choice]), None)
    }

    /// A tool call's first event: the role, the call's id and name, and its first arguments
    /// fragment. OpenAI and vLLM send the id and name alone first; one event per token keeps
    /// the gaps a latency tool measures at the token pace instead of one of 0 µs.
    fn call_start_event(&self, j: u32, call: &Call) -> Bytes {
        let start = json!({
            "index": 0,
            "id": self.call_id(j),
            "type": "function",
            "function": {"name": call.name, "arguments": call.fragment(0)},
        });
        let delta = json!({"role": "assistant", "content": null, "tool_calls": [start]});
        self.delta_event(j, delta)
    }

    fn delta_event(&self, j: u32, delta: Value) -> Bytes {
        let choice = json!({"index": j, "delta": delta, "logprobs": null, "finish_reason": null});
        self.chunk(json!([choice]), None)
    }

    /// The event that carries choice `j`'s `finish_reason`.
    fn finish_event(&self, j: u32) -> Bytes {
        let reason = self.finish_reason(j);
        let choice = match self.endpoint {
            Endpoint::Chat => {
                json!({"index": j, "delta": {}, "logprobs": null, "finish_reason": reason})
            }
            _ => json!({"index": j, "text": "", "logprobs": null, "finish_reason": reason}),
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
