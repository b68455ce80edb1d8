//! One check: send the request, read the answer (SSE-aware, bounded), judge it.

use std::error::Error as StdError;

use bytes::BytesMut;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use serde_json::Value;
use tokio::time::Instant;

use super::{Check, CheckResult, Expect, SyntheticClient, MAX_ANSWER_BYTES, SYNTHETIC_HEADER};
use crate::scoring::{embedding, truncate, Reassembled, SseReassembler};

/// Bytes of an error body quoted in a failure reason.
const EXCERPT: usize = 200;

/// What came back, as far as it could be read.
struct Answer {
    status: u16,
    /// The body, unless it was an SSE stream.
    body: BytesMut,
    /// The reassembled stream, when the answer was `text/event-stream`.
    sse: Option<Reassembled>,
    /// Reading the body failed part-way (stream cut, reset, too large).
    broken: Option<String>,
}

pub(super) async fn run_check(check: &Check, base: &str, client: &SyntheticClient) -> CheckResult {
    let start = Instant::now();
    let mut failures = Vec::new();
    let answer = match tokio::time::timeout(client.timeout, exchange(check, base, client)).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(reason)) => {
            failures.push(reason);
            None
        }
        Err(_) => {
            failures.push(format!("no complete answer within {:?}", client.timeout));
            None
        }
    };
    let latency = start.elapsed();
    if let Some(a) = &answer {
        judge(&check.expect, check.stream, a, &mut failures);
    }
    if let Some(max) = check.expect.max_latency.filter(|max| latency > *max) {
        failures.push(format!("took {latency:.1?}, over max_latency {max:?}"));
    }
    CheckResult {
        name: check.name.clone(),
        passed: failures.is_empty(),
        status: answer.map(|a| a.status),
        latency,
        failures,
    }
}

async fn exchange(check: &Check, base: &str, client: &SyntheticClient) -> Result<Answer, String> {
    let url = format!("{}{}", base.trim_end_matches('/'), check.path);
    let uri: Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let accept = if check.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(ACCEPT, HeaderValue::from_static(accept))
        .header(SYNTHETIC_HEADER, HeaderValue::from_static("1"))
        .body(Full::new(check.body.clone()))
        .map_err(|e| format!("cannot build the request for {url:?}: {e}"))?;
    let resp = client
        .client
        .request(req)
        .await
        .map_err(|e| format!("request to {url} failed: {}", chain(&e)))?;
    let status = resp.status().as_u16();
    let is_sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut body = resp.into_body();
    let mut sse = is_sse.then(SseReassembler::default);
    let mut whole = BytesMut::new();
    let mut read = 0usize;
    let mut broken = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                broken = Some(format!("answer broke after {read} bytes: {}", chain(&e)));
                break;
            }
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        read += data.len();
        if read > MAX_ANSWER_BYTES {
            broken = Some(format!(
                "answer over {MAX_ANSWER_BYTES} bytes; stopped reading"
            ));
            break;
        }
        match sse.as_mut() {
            Some(r) => r.feed(data),
            None => whole.extend_from_slice(data),
        }
    }
    Ok(Answer {
        status,
        body: whole,
        sse: sse.map(SseReassembler::finish),
        broken,
    })
}

fn judge(expect: &Expect, stream: bool, a: &Answer, failures: &mut Vec<String>) {
    if let Some(b) = &a.broken {
        failures.push(b.clone());
    }
    let (status_ok, wanted) = match expect.status {
        Some(s) => (a.status == s, s.to_string()),
        None => ((200..300).contains(&a.status), "2xx".to_owned()),
    };
    if !status_ok {
        failures.push(format!(
            "status {}, expected {wanted}: {}",
            a.status,
            excerpt(a)
        ));
        // The other expectations would only restate that the answer is not the one asked for.
        return;
    }
    if stream && a.sse.is_none() {
        failures.push("asked for a stream; the answer is not text/event-stream".to_owned());
    }
    if expect.stream_done {
        stream_done(a, failures);
    }
    if !expect.json.is_empty() {
        json(expect, a, failures);
    }
    if let Some(dim) = expect.embedding_dim {
        embedding_dim(dim, a, failures);
    }
}

fn stream_done(a: &Answer, failures: &mut Vec<String>) {
    let Some(r) = &a.sse else {
        return; // Already reported: not a stream.
    };
    if !r.done {
        failures.push("stream ended without `data: [DONE]`".to_owned());
    }
    for e in &r.errors {
        failures.push(format!("stream: {e}"));
    }
    if r.choices.is_empty() {
        failures.push("stream carried no choices".to_owned());
    }
    for c in r.choices.iter().filter(|c| c.finish_reason.is_none()) {
        failures.push(format!("choice {} has no finish_reason", c.index));
    }
}

fn json(expect: &Expect, a: &Answer, failures: &mut Vec<String>) {
    let doc = match &a.sse {
        Some(r) => r.to_json(),
        None => match serde_json::from_slice::<Value>(&a.body) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("answer is not JSON ({e}): {}", excerpt(a)));
                return;
            }
        },
    };
    for (path, matchers) in &expect.json {
        let value = path.lookup(&doc);
        failures.extend(matchers.iter().filter_map(|m| m.check(path, value)));
    }
}

fn embedding_dim(dim: usize, a: &Answer, failures: &mut Vec<String>) {
    let vectors = match embedding::vectors(&a.body) {
        Ok(v) => v,
        Err(e) => {
            failures.push(format!("no embeddings in the answer: {e}"));
            return;
        }
    };
    if vectors.is_empty() {
        failures.push("the answer holds no embedding".to_owned());
    }
    for (i, v) in vectors.iter().enumerate().filter(|(_, v)| v.len() != dim) {
        failures.push(format!(
            "data[{i}].embedding has {} dimensions, expected {dim}",
            v.len()
        ));
    }
}

/// The error message of an OpenAI error body, or the start of whatever the body is.
fn excerpt(a: &Answer) -> String {
    let from_json = serde_json::from_slice::<Value>(&a.body).ok().and_then(|v| {
        let msg = v.get("error")?.get("message")?.as_str()?.to_owned();
        Some(msg)
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(&a.body).into_owned());
    match text.trim() {
        "" => "(empty body)".to_owned(),
        t => truncate(t, EXCERPT),
    }
}

/// An error and its sources: hyper's own message alone ("client error (Connect)") says little.
fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
