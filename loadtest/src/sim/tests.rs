//! End-to-end tests of the simulator over loopback, with a plain hyper client.

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::{net::TcpListener, time::Instant};

use super::*;

mod choices;
mod faults;
mod metrics;
mod timing;
mod tools;

/// A response read to its end.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// A streamed response: each frame with when it arrived, and whether the body ended cleanly.
struct Streamed {
    status: StatusCode,
    frames: Vec<(Instant, String)>,
    clean_end: bool,
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
}

fn args() -> SimArgs {
    SimArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..SimArgs::default()
    }
}

async fn sim(args: SimArgs) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(args, listener).await.unwrap()
}

async fn open(
    sim: &Sim,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Response<Incoming> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "sim");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    try_open(sim.local_addr(), req).await.unwrap()
}

/// Sends one request on a fresh connection.
async fn try_open(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> hyper::Result<http::Response<Incoming>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    sender.send_request(req).await
}

async fn call(sim: &Sim, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
    call_with(sim, method, path, &[], body).await
}

async fn call_with(
    sim: &Sim,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let response = open(sim, method, path, headers, body).await;
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn post(sim: &Sim, path: &str, body: &Value) -> Reply {
    call(sim, Method::POST, path, body.to_string()).await
}

async fn stream(sim: &Sim, path: &str, body: &Value) -> Streamed {
    let response = open(sim, Method::POST, path, &[], body.to_string()).await;
    let status = response.status();
    let mut body = response.into_body();
    let mut frames = Vec::new();
    let clean_end = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    frames.push((Instant::now(), String::from_utf8(data.to_vec()).unwrap()));
                }
            }
        }
    };
    Streamed {
        status,
        frames,
        clean_end,
    }
}

fn chat(prompt: &str) -> Value {
    json!({"model": "sim-model", "messages": [{"role": "user", "content": prompt}]})
}

// === impl Reply ===

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Asserts the OpenAI error shape and returns the error object.
    fn error(&self) -> Value {
        let body = self.json();
        let error = body["error"].clone();
        for key in ["message", "type", "param", "code"] {
            assert!(error.get(key).is_some(), "{key} missing from {body}");
        }
        assert!(error["message"].is_string(), "{body}");
        error
    }
}

// === impl Streamed ===

impl Streamed {
    /// The `data:` payloads in order, `[DONE]` included.
    fn events(&self) -> Vec<String> {
        let text: String = self.frames.iter().map(|(_, f)| f.as_str()).collect();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
            .collect()
    }

    fn json_events(&self) -> Vec<Value> {
        self.events()
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect()
    }

    /// The concatenated content of the token events.
    fn content(&self) -> String {
        self.json_events()
            .iter()
            .filter_map(|e| e["choices"].get(0).cloned())
            .filter_map(|c| {
                c["delta"]["content"]
                    .as_str()
                    .or(c["text"].as_str())
                    .map(str::to_owned)
            })
            .collect()
    }
}

#[test]
fn default_args_match_the_flags() {
    let parsed = Cli::try_parse_from(["sim"]).unwrap().sim;
    assert_eq!(parsed, SimArgs::default());
    let parsed =
        Cli::try_parse_from(["sim", "--any-model", "false", "--error-rate", "50%"]).unwrap();
    assert!(!parsed.sim.any_model);
    assert_eq!(parsed.sim.faults.error_rate.ppm(), 500_000);
}

#[tokio::test(start_paused = true)]
async fn chat_completion_has_the_openai_shape() {
    let sim = sim(SimArgs {
        name: Some("stable-a".into()),
        ..args()
    })
    .await;
    let reply = post(&sim, "/v1/chat/completions", &chat("hello")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-sim-name"], "stable-a");
    assert_eq!(reply.headers["content-type"], "application/json");
    let body = reply.json();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].is_u64());
    assert_eq!(body["model"], "sim-model");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let content = choice["message"]["content"].as_str().unwrap();
    assert_eq!(content.split(' ').count(), 16, "{content}");
    let usage = &body["usage"];
    assert_eq!(usage["completion_tokens"], 16);
    let total = usage["prompt_tokens"].as_u64().unwrap() + 16;
    assert_eq!(usage["total_tokens"], total);
}

#[tokio::test(start_paused = true)]
async fn chat_stream_carries_tokens_usage_and_done() {
    let sim = sim(args()).await;
    let mut request = chat("stream me");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    request["max_tokens"] = json!(5);
    let streamed = stream(&sim, "/v1/chat/completions", &request).await;
    assert_eq!(streamed.status, StatusCode::OK);
    assert!(streamed.clean_end);
    let events = streamed.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    // Five tokens, the finish event, the usage event, [DONE]; one frame each.
    assert_eq!(events.len(), 8, "{events:?}");
    assert_eq!(streamed.frames.len(), 8);
    let chunks = streamed.json_events();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[0]["usage"].is_null());
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
    let usage = &chunks[6];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    let ids: Vec<&Value> = chunks.iter().map(|c| &c["id"]).collect();
    assert!(ids.iter().all(|id| *id == ids[0]));

    let mut plain = chat("stream me");
    plain["max_tokens"] = json!(5);
    let whole = post(&sim, "/v1/chat/completions", &plain).await.json();
    assert_eq!(
        streamed.content(),
        whole["choices"][0]["message"]["content"]
    );

    request["stream_options"] = json!(null);
    let without_usage = stream(&sim, "/v1/chat/completions", &request).await;
    assert!(without_usage
        .json_events()
        .iter()
        .all(|c| c.get("usage").is_none()));
    assert_eq!(without_usage.events().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn completions_stream_and_whole() {
    let sim = sim(args()).await;
    let request = json!({"model": "x", "prompt": "once upon", "max_tokens": 3});
    let whole = post(&sim, "/v1/completions", &request).await.json();
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["model"], "x");
    assert_eq!(whole["choices"][0]["finish_reason"], "length");
    let text = whole["choices"][0]["text"].as_str().unwrap();
    assert_eq!(text.split(' ').count(), 3);

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let streamed = stream(&sim, "/v1/completions", &streaming).await;
    assert_eq!(streamed.content(), text);
    assert_eq!(streamed.events().last().unwrap(), "[DONE]");
    assert_eq!(streamed.json_events()[0]["object"], "text_completion");
}

#[tokio::test(start_paused = true)]
async fn answers_are_deterministic() {
    let (a, b) = (sim(args()).await, sim(args()).await);
    let text = |r: Reply| r.json()["choices"][0]["message"]["content"].clone();
    let first = text(post(&a, "/v1/chat/completions", &chat("what is rollgate?")).await);
    let again = text(post(&a, "/v1/chat/completions", &chat("what is rollgate?")).await);
    let elsewhere = text(post(&b, "/v1/chat/completions", &chat("what is rollgate?")).await);
    let other = text(post(&a, "/v1/chat/completions", &chat("what is a canary?")).await);
    assert_eq!(first, again);
    assert_eq!(first, elsewhere);
    assert_ne!(first, other);
    // The same in every process and release: changing it breaks recorded golden prompts.
    assert_eq!(first, GOLDEN_ANSWER);
}

const GOLDEN_ANSWER: &str = "promote jumps stable steady gate words weight latency variant gate queue signal steady endpoint is queue";

#[tokio::test(start_paused = true)]
async fn embeddings_are_deterministic_unit_vectors() {
    let sim = sim(args()).await;
    let one = post(
        &sim,
        "/v1/embeddings",
        &json!({"model": "e", "input": "hello"}),
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    let one = one.json();
    assert_eq!(one["object"], "list");
    let vector: Vec<f64> = serde_json::from_value(one["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(vector.len(), 384);
    let norm: f64 = vector.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-3);

    let many = json!({"model": "e", "input": ["hello", "world"], "dimensions": 8});
    let many = post(&sim, "/v1/embeddings", &many).await.json();
    assert_eq!(many["data"].as_array().unwrap().len(), 2);
    assert_eq!(many["data"][1]["index"], 1);
    let hello: Vec<f64> = serde_json::from_value(many["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(hello.len(), 8);

    let encoded = json!({"model": "e", "input": "hello", "encoding_format": "base64"});
    let encoded = post(&sim, "/v1/embeddings", &encoded).await.json();
    let text = encoded["data"][0]["embedding"].as_str().unwrap();
    // 384 little-endian f32s: 1536 bytes, 2048 base64 characters.
    assert_eq!(text.len(), 2048);
}

#[tokio::test(start_paused = true)]
async fn errors_have_the_openai_shape() {
    let strict = sim(SimArgs {
        any_model: false,
        ..args()
    })
    .await;
    let malformed = call(&strict, Method::POST, "/v1/chat/completions", "{not json").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error()["type"], "invalid_request_error");

    let missing = post(
        &strict,
        "/v1/chat/completions",
        &json!({"model": "sim-model"}),
    )
    .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.error()["param"], "messages");

    let mut wrong_model = chat("hi");
    wrong_model["model"] = json!("other");
    let wrong_model = post(&strict, "/v1/chat/completions", &wrong_model).await;
    assert_eq!(wrong_model.status, StatusCode::NOT_FOUND);
    assert_eq!(wrong_model.error()["code"], "model_not_found");

    let unknown = call(&strict, Method::GET, "/v2/nothing", "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.headers["x-sim-name"], "sim-model");
    unknown.error();
    let unknown_v1 = post(&strict, "/v1/nothing", &json!({})).await;
    assert_eq!(unknown_v1.status, StatusCode::NOT_FOUND);
    let wrong_method = call(&strict, Method::POST, "/metrics", "").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    wrong_method.error();

    let bad_params = [
        (
            "/v1/completions",
            json!({"prompt": "p", "max_tokens": 0}),
            "max_tokens",
        ),
        (
            "/v1/embeddings",
            json!({"input": "p", "dimensions": 0}),
            "dimensions",
        ),
        ("/v1/embeddings", json!({"input": vec!["p"; 2049]}), "input"),
        (
            "/v1/embeddings",
            json!({"input": "p", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": "not a list"}),
            "messages",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "p"}], "n": 0}),
            "n",
        ),
        ("/v1/completions", json!({"prompt": "p", "n": 129}), "n"),
        ("/v1/completions", json!({"prompt": "p", "n": -1}), "n"),
    ];
    for (path, body, param) in bad_params {
        let reply = post(&strict, path, &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.error()["param"], param, "{body}");
    }

    let limited = sim(SimArgs {
        max_model_len: Some(100),
        ..args()
    })
    .await;
    let too_long = json!({"prompt": "x", "max_tokens": 100});
    let too_long = post(&limited, "/v1/completions", &too_long).await;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_long.error()["param"], "max_tokens");
}

#[tokio::test(start_paused = true)]
async fn models_and_health() {
    let sim = sim(SimArgs {
        model: "llama-3-8b".into(),
        ..args()
    })
    .await;
    let models = call(&sim, Method::GET, "/v1/models", "").await.json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "llama-3-8b");
    assert_eq!(models["data"][0]["object"], "model");
    let one = call(&sim, Method::GET, "/v1/models/llama-3-8b", "").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(
        call(&sim, Method::GET, "/health", "").await.status,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn received_requests_are_hashed_and_counted() {
    let big = sim(SimArgs {
        max_body: 16 << 20,
        received_log: 2,
        ..args()
    })
    .await;
    // 8 MiB of JSON: a long prompt.
    let prompt = "x".repeat(8 << 20);
    let body = json!({"prompt": prompt, "max_tokens": 1}).to_string();
    let want = super::state::hex(&Sha256::digest(body.as_bytes()));
    let reply = call_with(&big, Method::POST, "/v1/completions", &[], body.clone()).await;
    assert_eq!(reply.status, StatusCode::OK);
    let shadowed = [("x-rollgate-shadow", "1")];
    let small = chat("hi").to_string();
    let reply = call_with(
        &big,
        Method::POST,
        "/v1/chat/completions",
        &shadowed,
        small.clone(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    let received = big.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].sha256, want);
    assert_eq!(received[0].len, body.len() as u64);
    assert!(!received[0].shadow);
    assert_eq!(received[0].path, "/v1/completions");
    assert!(received[1].shadow);
    assert_eq!(received[1].seq, 2);
    assert_eq!((big.requests_total(), big.shadow_requests_total()), (2, 1));

    // Over --max-body: still read to the end and hashed, then refused.
    let small_limit = sim(SimArgs {
        max_body: 1 << 20,
        ..args()
    })
    .await;
    let reply = call(&small_limit, Method::POST, "/v1/completions", body.clone()).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error()["code"], "request_too_large");
    assert_eq!(small_limit.received()[0].sha256, want);

    let listed = call(&big, Method::GET, "/sim/requests", "").await.json();
    assert_eq!(listed["total"], 2);
    assert_eq!(listed["shadow"], 1);
    assert_eq!(listed["received"][0]["sha256"], want.as_str());
    let cleared = call(&big, Method::DELETE, "/sim/requests", "").await.json();
    assert_eq!(cleared["total"], 0);
    assert!(big.received().is_empty());
    // The log keeps only the last --received-log entries.
    for _ in 0..3 {
        post(&big, "/v1/chat/completions", &chat("again")).await;
    }
    let seqs: Vec<u64> = big.received().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [2, 3]);
}
