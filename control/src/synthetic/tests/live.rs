//! Suites run against simulators (paused time: the simulated latencies cost nothing) and against
//! a hand-written server for what a simulator cannot show.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate_loadtest::sim::{self, Faults, Ratio, Sim, SimArgs};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::synthetic::{run_suite, Suite, SuiteResult, SyntheticClient};

async fn start_sim(faults: Faults) -> Sim {
    let args = SimArgs {
        model: "chat-small".to_owned(),
        faults,
        ..SimArgs::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    sim::start(args, listener).await.unwrap()
}

/// What the simulator answers to the golden prompt: its answers are deterministic per (model,
/// prompt), so the suite can assert on the exact text.
async fn golden_text(sim: &Sim) -> String {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = json!({"model": "chat-small", "max_tokens": 16,
        "messages": [{"role": "user", "content": "capital of France?"}]});
    let req = hyper::Request::post(format!("{}/v1/chat/completions", sim.url()))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The golden suite, its assertions filled with `text` (JSON strings are YAML strings).
fn golden_suite(text: &str, dim: usize) -> Suite {
    let first = text.split(' ').next().unwrap();
    let (text, first) = (json!(text), json!(first));
    let yaml = format!(
        r#"
requests:
  - name: capital
    path: /v1/chat/completions
    body: {{ model: chat-small, messages: [{{role: user, content: "capital of France?"}}], max_tokens: 16 }}
    expect:
      status: 200
      json:
        "choices[0].message.content": {{ equals: {text}, prefix: {first} }}
        "choices[0].finish_reason": {{ equals: length }}
        usage.completion_tokens: {{ equals: 16 }}
      max_latency: 2s
  - name: stream-completes
    path: /v1/chat/completions
    body: {{ model: chat-small, stream: true, max_tokens: 16, messages: [{{role: user, content: "capital of France?"}}] }}
    expect:
      status: 200
      stream_done: true
      json: {{ "choices[0].message.content": {{ equals: {text} }} }}
  - name: completion
    path: /v1/completions
    body: {{ model: chat-small, prompt: hello }}
    expect: {{ json: {{ "choices[0].text": {{ exists: true }}, "choices[1]": {{ exists: false }} }} }}
  - name: embedding-dim
    path: /v1/embeddings
    body: {{ model: embed, input: hello }}
    expect: {{ embedding_dim: {dim} }}
  - name: embedding-base64
    path: /v1/embeddings
    body: {{ model: embed, input: [a, b], encoding_format: base64, dimensions: 64 }}
    expect: {{ embedding_dim: 64 }}
"#
    );
    Suite::from_yaml(&yaml).unwrap()
}

fn client() -> SyntheticClient {
    SyntheticClient::new(Duration::from_secs(10))
}

fn failures_of<'a>(result: &'a SuiteResult, name: &str) -> &'a [String] {
    let check = result.results.iter().find(|r| r.name == name).unwrap();
    &check.failures
}

#[tokio::test(start_paused = true)]
async fn healthy_sim_passes() {
    let sim = start_sim(Faults::default()).await;
    let suite = golden_suite(&golden_text(&sim).await, 384);
    let result = run_suite(&suite, &sim.url(), &client()).await;
    for r in &result.results {
        assert!(r.passed, "{r:?}");
        assert_eq!(r.status, Some(200));
        assert!(
            r.latency >= Duration::from_millis(20),
            "the sim's TTFT: {r:?}"
        );
    }
    assert_eq!((result.passed, result.failed), (5, 0));
    assert_eq!(result.pass_rate(), 1.0);
    assert!(result.all_passed());
    // A trailing slash on the base URL is fine.
    let again = run_suite(&suite, &format!("{}/", sim.url()), &client()).await;
    assert!(again.all_passed(), "{again:?}");
}

#[tokio::test(start_paused = true)]
async fn failing_sim_fails_with_reasons() {
    let sim = start_sim(Faults::default()).await;
    let suite = golden_suite(&golden_text(&sim).await, 384);
    sim.set_faults(Faults {
        error_rate: Ratio::ONE,
        ..Faults::default()
    });
    let result = run_suite(&suite, &sim.url(), &client()).await;
    assert_eq!((result.passed, result.failed), (0, 5));
    assert_eq!(result.pass_rate(), 0.0);
    let capital = failures_of(&result, "capital");
    assert_eq!(
        capital,
        ["status 500, expected 200: simulated engine error"]
    );
    let embedding = failures_of(&result, "embedding-dim");
    assert_eq!(
        embedding,
        ["status 500, expected 2xx: simulated engine error"]
    );
}

#[tokio::test(start_paused = true)]
async fn wrong_answers_fail_content_checks() {
    let sim = start_sim(Faults::default()).await;
    let suite = golden_suite(&golden_text(&sim).await, 384);
    sim.set_faults(Faults {
        wrong_answers: Ratio::ONE,
        ..Faults::default()
    });
    let result = run_suite(&suite, &sim.url(), &client()).await;
    let capital = failures_of(&result, "capital");
    assert!(
        capital.iter().any(|f| f.contains("does not equal")),
        "{capital:?}"
    );
    assert!(
        capital.iter().any(|f| f.contains("does not start with")),
        "{capital:?}"
    );
    assert!(!failures_of(&result, "stream-completes").is_empty());
    // Shape checks cannot tell a wrong answer from a right one.
    assert!(failures_of(&result, "completion").is_empty());
    assert!(failures_of(&result, "embedding-dim").is_empty());
}

#[tokio::test(start_paused = true)]
async fn truncated_stream_fails_stream_done() {
    let sim = start_sim(Faults::default()).await;
    let suite = golden_suite(&golden_text(&sim).await, 384);
    sim.set_faults(Faults {
        truncate_rate: Ratio::ONE,
        ..Faults::default()
    });
    let result = run_suite(&suite, &sim.url(), &client()).await;
    let stream = failures_of(&result, "stream-completes");
    assert!(
        stream.iter().any(|f| f.starts_with("answer broke after")),
        "{stream:?}"
    );
    assert!(
        stream.iter().any(|f| f.contains("without `data: [DONE]`")),
        "{stream:?}"
    );
    assert!(
        stream.iter().any(|f| f.contains("no finish_reason")),
        "{stream:?}"
    );
    assert!(
        stream.iter().any(|f| f.contains("does not equal")),
        "half the text: {stream:?}"
    );
    // Whole answers are not cut.
    assert!(failures_of(&result, "capital").is_empty());
    assert_eq!(result.failed, 1);
}

#[tokio::test(start_paused = true)]
async fn embedding_dim_mismatch() {
    let sim = start_sim(Faults::default()).await;
    let suite = golden_suite(&golden_text(&sim).await, 768);
    let result = run_suite(&suite, &sim.url(), &client()).await;
    let dim = failures_of(&result, "embedding-dim");
    assert_eq!(dim, ["data[0].embedding has 384 dimensions, expected 768"]);
    assert_eq!(result.failed, 1);
}

#[tokio::test(start_paused = true)]
async fn slow_answers_fail_latency_and_timeout() {
    let sim = start_sim(Faults::default()).await;
    let suite = golden_suite(&golden_text(&sim).await, 384);
    sim.set_faults(Faults {
        extra_latency: Duration::from_secs(3),
        ..Faults::default()
    });
    let result = run_suite(&suite, &sim.url(), &client()).await;
    let capital = failures_of(&result, "capital");
    assert_eq!(capital.len(), 1, "{capital:?}");
    assert!(capital[0].contains("over max_latency 2s"), "{capital:?}");
    sim.set_faults(Faults {
        stall: Duration::from_secs(60),
        ..Faults::default()
    });
    let impatient = SyntheticClient::new(Duration::from_secs(1));
    let result = run_suite(&suite, &sim.url(), &impatient).await;
    for r in &result.results {
        assert_eq!(r.failures, ["no complete answer within 1s"], "{r:?}");
        assert_eq!(r.status, None);
        assert!(r.latency >= Duration::from_secs(1) && r.latency < Duration::from_secs(2));
    }
}

#[tokio::test]
async fn unreachable_backend_fails_without_panic() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let suite = golden_suite("the answer", 384);
    let result = run_suite(&suite, &url, &client()).await;
    assert_eq!(result.failed, 5);
    for r in &result.results {
        assert_eq!(r.status, None);
        assert!(
            r.failures[0].starts_with(&format!("request to {url}")),
            "{r:?}"
        );
        assert!(r.failures[0].contains("onnect"), "{r:?}");
    }
    let result = run_suite(&suite, "ftp://127.0.0.1:1", &client()).await;
    let reason = &result.results[0].failures[0];
    assert!(
        reason.starts_with("request to ftp://") && reason.contains("scheme"),
        "{reason}"
    );
    let result = run_suite(&suite, "bad url with spaces", &client()).await;
    assert!(
        result.results[0].failures[0].starts_with("bad URL"),
        "{result:?}"
    );
}

/// A one-shot HTTP/1 server: returns the request head it read and answers `response`.
async fn one_shot(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed early");
            head.extend_from_slice(&buf[..n]);
        }
        conn.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8(head).unwrap()
    });
    (url, task)
}

#[tokio::test]
async fn marks_requests_synthetic_and_reports_odd_answers() {
    let yaml = r#"
requests:
  - name: odd
    path: /v1/chat/completions
    body: { messages: [{role: user, content: hi}], stream: true }
    expect: { json: { "choices[0].message.content": { contains: x } } }
"#;
    let suite = Suite::from_yaml(yaml).unwrap();
    let (url, head) = one_shot(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 8\r\nconnection: close\r\n\r\nnot json",
    )
    .await;
    let result = run_suite(&suite, &url, &client()).await;
    let head = head.await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("post /v1/chat/completions "), "{head}");
    assert!(head.contains("\r\nx-rollgate-synthetic: 1\r\n"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: application/json\r\n"),
        "{head}"
    );
    let failures = &result.results[0].failures;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].contains("not text/event-stream"),
        "{failures:?}"
    );
    assert!(
        failures[1].starts_with("answer is not JSON"),
        "{failures:?}"
    );
    assert!(failures[1].ends_with(": not json"), "{failures:?}");
}
