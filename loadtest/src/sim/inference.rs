//! The inference request path: stall, read and hash, parse, draw faults, queue, answer.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::{sleep, sleep_until, Instant};

use super::{
    answer::{mix, AnswerKey},
    metrics::{Finish, Injected},
    openai::{self, Endpoint, Parsed},
    reply::Reply,
    service::{json_bytes, read_body, sse_response, ApiError},
    state::{Running, State},
    stream::{Cut, Plan, SimBody},
    tools::Call,
    Faults, Received,
};

/// One parsed, admissible request and everything drawn for it.
struct Job {
    endpoint: Endpoint,
    parsed: Parsed,
    /// The model named in the answer: the one asked for, or ours when none was named.
    model: String,
    /// Output tokens of each text choice (0 for embeddings).
    tokens: u64,
    /// One tool call per choice when the answer calls a tool; empty for text.
    calls: Vec<Call>,
    draws: Draws,
    /// When the request was read, for TTFT and end-to-end latency.
    arrived: Instant,
}

/// The draws for one request, taken in a fixed order from a seeded RNG so a run repeats.
struct Draws {
    seq: u64,
    error: bool,
    wrong: bool,
    cut: Option<Cut>,
    ttft_factor: f64,
    tpot_factor: f64,
}

/// Answers `POST /v1/...`. The faults are read once, here, for the whole request.
pub(super) async fn inference(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, ApiError> {
    let faults = state.faults();
    let faults = &faults.faults;
    if !faults.stall.is_zero() {
        state.metrics.injected(Injected::Stall);
        sleep(faults.stall).await;
    }
    let (endpoint, body) = receive(state, req).await?;
    let job = Job::new(state, faults, endpoint, &body)?;
    // The choices share the prompt's cache blocks, as vLLM's parallel sampling shares them.
    let kv_tokens = job.parsed.prompt_tokens + job.completion_tokens();
    let running = state.admit(kv_tokens).await.map_err(|_| {
        state.metrics.queue_full();
        ApiError::queue_full(state.args.max_queue)
    })?;
    let ttft = faults.extra_latency + state.args.ttft.mul_f64(job.draws.ttft_factor);
    let first_token = Instant::now() + ttft;
    if endpoint == Endpoint::Embeddings {
        return Ok(embed(state, job, running, first_token).await);
    }
    let tpot = state.args.tpot.mul_f64(job.draws.tpot_factor);
    let (reply, stream, cut, arrived) = job.into_reply(state);
    if stream {
        let plan = Plan {
            reply,
            arrived,
            first_token,
            tpot,
            stall_first_event: faults.stall_first_event,
            cut,
        };
        return Ok(sse_response(SimBody::stream(state.clone(), running, plan)));
    }
    let later = u32::try_from(reply.steps().saturating_sub(1)).unwrap_or(u32::MAX);
    sleep_until(first_token + tpot * later).await;
    state.metrics.observe_ttft(first_token - arrived);
    let e2e = arrived.elapsed();
    let generated = reply.completion_tokens();
    state
        .metrics
        .finished(reply.finish, e2e, reply.prompt_tokens, generated);
    drop(running);
    Ok(json_bytes(StatusCode::OK, reply.full()))
}

/// Reads the body to its end, logs it, and finds the endpoint; refuses unknown paths and bodies
/// over `--max-body` only after they are read and logged.
async fn receive(state: &State, req: Request<Incoming>) -> Result<(Endpoint, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let shadow = parts
        .headers
        .get("x-rollgate-shadow")
        .is_some_and(|v| v == "1" || v.as_bytes().eq_ignore_ascii_case(b"true"));
    let body = read_body(body, state.args.max_body).await?;
    let path = parts.uri.path();
    tracing::debug!(path, len = body.len, shadow, "simulator request");
    state.record(Received {
        seq: 0,
        path: path.to_owned(),
        sha256: body.sha256,
        len: body.len,
        shadow,
    });
    let endpoint =
        Endpoint::from_path(path).ok_or_else(|| ApiError::not_found(&parts.method, path))?;
    let bytes = body
        .bytes
        .ok_or_else(|| ApiError::too_large(body.len, state.args.max_body))?;
    Ok((endpoint, bytes))
}

async fn embed(
    state: &State,
    job: Job,
    running: Running,
    first_token: Instant,
) -> Response<SimBody> {
    sleep_until(first_token).await;
    let metrics = &state.metrics;
    metrics.observe_ttft(first_token - job.arrived);
    let e2e = job.arrived.elapsed();
    metrics.finished(Finish::Stop, e2e, job.parsed.prompt_tokens, 0);
    drop(running);
    if job.draws.wrong {
        metrics.injected(Injected::WrongAnswer);
    }
    let dim = job.parsed.dimensions.unwrap_or(state.args.embedding_dim);
    let body = openai::embeddings(&job.model, &job.parsed, dim, job.draws.wrong);
    json_bytes(StatusCode::OK, body)
}

// === impl Job ===

impl Job {
    fn new(
        state: &State,
        faults: &Faults,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        let arrived = Instant::now();
        let parsed = endpoint
            .parse(body)
            .map_err(|(message, param)| ApiError::bad_request(message, param))?;
        let model = match &parsed.model {
            None => state.args.model.clone(),
            Some(m) if state.args.any_model || *m == state.args.model => m.clone(),
            Some(m) => return Err(ApiError::model_not_found(m)),
        };
        let draws = Draws::new(state, faults);
        if draws.error {
            state.metrics.injected(Injected::Error);
            state.metrics.failed();
            return Err(ApiError::internal("simulated engine error"));
        }
        let tokens = match endpoint {
            Endpoint::Embeddings => 0,
            _ => parsed.max_tokens.unwrap_or(state.args.output_tokens),
        };
        let calls = match &parsed.tools {
            Some(tools) => {
                let answer = answer_key(&model, &parsed.prompt, draws.wrong);
                let max = parsed.max_tokens;
                (0..parsed.n)
                    .map(|j| tools.call(answer.choice(j), max))
                    .collect()
            }
            None => Vec::new(),
        };
        let job = Self {
            endpoint,
            parsed,
            model,
            tokens,
            calls,
            draws,
            arrived,
        };
        // Each choice is a sequence of its own, so the longest one must fit.
        let wanted = job.parsed.prompt_tokens + job.longest();
        if let Some(max) = state.args.max_model_len.filter(|max| wanted > *max) {
            let prompt = job.parsed.prompt_tokens;
            return Err(ApiError::context_too_long(max, prompt, job.longest()));
        }
        Ok(job)
    }

    /// Output tokens of the longest choice.
    fn longest(&self) -> u64 {
        self.calls
            .iter()
            .map(Call::tokens)
            .max()
            .unwrap_or(self.tokens)
    }

    /// Output tokens over every choice.
    fn completion_tokens(&self) -> u64 {
        if self.calls.is_empty() {
            self.tokens * u64::from(self.parsed.n * self.parsed.prompts)
        } else {
            self.calls.iter().map(Call::tokens).sum()
        }
    }

    /// The answer to write, whether to stream it, how it fails, and when the request arrived.
    fn into_reply(self, state: &State) -> (Reply, bool, Option<Cut>, Instant) {
        let wrong = self.draws.wrong;
        if wrong {
            state.metrics.injected(Injected::WrongAnswer);
        }
        let list = match self.endpoint {
            Endpoint::Completions => openai::prompt_list(&self.parsed.prompt),
            _ => None,
        };
        // Each listed prompt is answered as if it came alone.
        let first = list.and_then(<[_]>::first).unwrap_or(&self.parsed.prompt);
        let answer = answer_key(&self.model, first, wrong);
        let others = list.map(|l| l.get(1..).unwrap_or_default());
        let other_prompts = others
            .into_iter()
            .flatten()
            .map(|p| answer_key(&self.model, p, wrong))
            .collect();
        let mut reply = Reply::new(self.endpoint, self.draws.seq, self.model, answer);
        reply.other_prompts = other_prompts;
        reply.tokens = self.tokens;
        reply.per_prompt = self.parsed.n;
        reply.n = self.parsed.n * self.parsed.prompts;
        reply.prompt_tokens = self.parsed.prompt_tokens;
        // Text never stops early, so a given `max_tokens` is always used up; a tool call stops
        // at the end of its arguments.
        reply.finish = match (self.parsed.max_tokens, self.calls.is_empty()) {
            (Some(_), true) => Finish::Length,
            (_, false) if self.calls.iter().any(|c| c.truncated) => Finish::Length,
            _ => Finish::Stop,
        };
        reply.calls = self.calls;
        let stream = self.parsed.stream;
        reply.include_usage = stream && self.parsed.include_usage;
        (reply, stream, self.draws.cut, self.arrived)
    }
}

fn answer_key(model: &str, prompt: &serde_json::Value, wrong: bool) -> AnswerKey {
    let answer = AnswerKey::new(model, prompt);
    if wrong {
        answer.wrong()
    } else {
        answer
    }
}

// === impl Draws ===

impl Draws {
    fn new(state: &State, faults: &Faults) -> Self {
        let seq = state.next_seq();
        let mut rng = fastrand::Rng::with_seed(mix(state.args.seed ^ mix(seq)));
        let mut draw = || rng.u32(0..1_000_000);
        let error = faults.error_rate.hit(draw());
        let wrong = faults.wrong_answers.hit(draw());
        let truncate = faults.truncate_rate.hit(draw());
        let error_event = faults.error_event_rate.hit(draw());
        let jitter = state.args.jitter.as_f64();
        // Uniform in 1 ± jitter.
        let mut factor = || 1.0 + jitter * (f64::from(draw()) / 500_000.0 - 1.0);
        let ttft_factor = factor();
        let tpot_factor = factor();
        let cut = match (truncate, error_event) {
            (true, _) => Some(Cut::Truncate),
            (false, true) => Some(Cut::ErrorEvent),
            (false, false) => None,
        };
        Self {
            seq,
            error,
            wrong,
            cut,
            ttft_factor,
            tpot_factor,
        }
    }
}
