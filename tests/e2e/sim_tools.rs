//! The simulator's tool calls and `n` choices as a real client sees them through the gateway:
//! the `openai` Python client gets a call whose arguments parse and carry the schema's required
//! keys, the same call whole, streamed and accumulated by its own stream helper, a forced
//! `tool_choice`, and three choices for `n=3`. Shadow scoring counts identical tool calls from
//! stable and candidate as a match and the wrong-answer fault's calls as a mismatch.

use std::process::{Command, Stdio};
use std::time::Duration;

use rollgate_loadtest::sim::{Faults, Ratio, Sim};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/openai_tools.py");
/// Python start-up and `import openai` take about a second; this only bounds a hung client.
const PYTHON_LIMIT: Duration = Duration::from_secs(60);
/// How long the gateway may take to score mirrored pairs.
const SCORE_DEADLINE: Duration = Duration::from_secs(20);
/// Tool-call requests per half of the shadow test (half of them streamed).
const PAIRS: usize = 8;

/// Runs `openai_tools.py` against `base_url` and returns its JSON report.
async fn openai_tools(base_url: &str, model: &str, prompt: &str) -> Value {
    let args = [SCRIPT, base_url, model, prompt].map(str::to_owned);
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("python3")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 ({e}); scripts/install-test-deps installs it")
            });
        let deadline = std::time::Instant::now() + PYTHON_LIMIT;
        while child.try_wait().expect("try_wait").is_none() {
            if std::time::Instant::now() > deadline {
                // Killing a process that just exited is harmless.
                let _ = child.kill();
                panic!("openai_tools.py did not finish within {PYTHON_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("python output")
    })
    .await
    .expect("python task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(3),
        "{stderr}\nthe tool-call test needs the openai package"
    );
    assert!(output.status.success(), "openai_tools.py failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "openai_tools.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The schema's required keys of each function the script offers.
fn required(name: &str) -> &'static [&'static str] {
    match name {
        "get_weather" => &["city", "unit"],
        "search" => &["query"],
        other => panic!("called a function that was not offered: {other}"),
    }
}

/// Asserts one reported call: a tool the script offered, arguments that parse as a JSON object
/// with that tool's required keys, finished as a tool call.
fn assert_call(report: &Value, what: &str) -> (String, Value) {
    let call = &report[what];
    let name = call["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no call in {report}"));
    let text = call["arguments"].as_str().expect("arguments");
    let arguments: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{what}: arguments {text:?} are not JSON ({e})"));
    for key in required(name) {
        assert!(
            arguments.get(key).is_some(),
            "{what}: {key} missing from {text}"
        );
    }
    assert_eq!(call["finish_reason"], "tool_calls", "{what}: {report}");
    assert_eq!(call["calls"], 1, "{what}: {report}");
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_")),
        "{what}: {report}"
    );
    (name.to_owned(), arguments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_gets_tool_calls_and_choices_through_the_gateway() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let gw = Gateway::start(&config(&stable, None, "", ""));
    let report = openai_tools(&gw.url("/v1"), "m", "What should I pack for Oslo?").await;
    eprintln!("openai client, tools through the gateway: {report}");

    let whole = assert_call(&report, "whole");
    assert!(report["whole"]["content"].is_null(), "{report}");
    assert_eq!(assert_call(&report, "deltas"), whole, "raw stream deltas");
    if report["helper"].is_null() {
        eprintln!("this openai client has no chat.completions.stream helper");
    } else {
        assert_eq!(
            assert_call(&report, "helper"),
            whole,
            "the client's accumulation"
        );
    }
    // Forced to the function the model did not pick.
    let forced = assert_call(&report, "forced").0;
    assert_ne!(forced, whole.0, "{report}");
    assert_eq!(report["forced_name"], forced.as_str(), "{report}");

    let n3 = &report["n3"];
    assert_eq!(n3["indexes"], json!([0, 1, 2]), "{report}");
    let texts: Vec<&str> = n3["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(texts.len(), 3, "{report}");
    assert!(
        texts[0] != texts[1] && texts[1] != texts[2] && texts[0] != texts[2],
        "{report}"
    );
    // `start_sim` answers 4 tokens a choice.
    assert_eq!(n3["completion_tokens"], 12, "{report}");
    assert_eq!(
        report["n3_stream"], n3["texts"],
        "streamed choices by index"
    );
}

/// A chat request offering two tools, streamed or not.
fn tool_request(prompt: &str, stream: bool) -> String {
    let function = |name: &str, key: &str| {
        json!({"type": "function", "function": {"name": name, "parameters": {
            "type": "object",
            "properties": {key: {"type": "string"}, "count": {"type": "integer"}},
            "required": [key],
        }}})
    };
    json!({
        "model": "m",
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
        "tools": [function("lookup", "term"), function("translate", "text")],
    })
    .to_string()
}

/// Sends `PAIRS` tool-call requests (every other one streamed) through the gateway.
async fn send_tool_calls(gw: &Gateway, tag: &str) {
    let url = gw.url("/v1/chat/completions");
    for i in 0..PAIRS {
        let body = tool_request(&format!("{tag} {i}"), i % 2 == 1);
        let r = send(&client(), &url, &[], body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("tool_calls"), "{}", r.text());
    }
}

/// Waits (bounded) until `n` pairs are accounted for, and returns the page once they are.
async fn scored(gw: &Gateway, n: usize) -> String {
    let deadline = Instant::now() + SCORE_DEADLINE;
    loop {
        let page = gw.metrics().await;
        let read = |series: &str| metric(&page, series).unwrap_or(0.0);
        let count = read(r#"rollgate_rollout_shadow_score_count{model="m"}"#);
        let other = read(r#"rollgate_rollout_shadow_pairs_not_comparable_total{model="m"}"#)
            + read("rollgate_proxy_shadow_pairs_unscored_total");
        if count + other >= n as f64 {
            assert_eq!(count, n as f64, "every pair scored\n{page}");
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "{count} + {other} of {n} pairs\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn shadow_sum(page: &str) -> f64 {
    metric(page, r#"rollgate_rollout_shadow_score_sum{model="m"}"#).expect("score sum")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_scoring_tells_identical_tool_calls_from_wrong_ones() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate: Sim = start_sim("candidate", "m", |_| {}).await;
    let model = "    weight: 0%\n    shadow: { sample: 100% }\n";
    let gw = Gateway::start(&config(&stable, Some(&candidate), model, ""));

    send_tool_calls(&gw, "right").await;
    let page = scored(&gw, PAIRS).await;
    assert_eq!(
        shadow_sum(&page),
        PAIRS as f64,
        "identical calls score 1\n{page}"
    );

    candidate.set_faults(Faults {
        wrong_answers: Ratio::ONE,
        ..Faults::default()
    });
    send_tool_calls(&gw, "wrong").await;
    let page = scored(&gw, 2 * PAIRS).await;
    let wrong = shadow_sum(&page) - PAIRS as f64;
    // The same function, one argument missing and the others' values changed: a broken shape,
    // which the scorer caps at 0.5, far below a match.
    assert!(
        wrong <= 0.5 * PAIRS as f64 + 1e-9,
        "wrong calls scored {wrong} over {PAIRS} pairs\n{page}"
    );
    eprintln!(
        "shadow scores: {PAIRS} identical tool calls 1.0 each, {PAIRS} wrong ones {:.3} on average",
        wrong / PAIRS as f64
    );
    assert_eq!(candidate.shadow_requests_total(), 2 * PAIRS as u64);
    drop(gw);
    stable.shutdown().await;
    candidate.shutdown().await;
}
