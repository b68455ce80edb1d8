//! The simulator's tool calls and `n` choices as a real client sees them through the gateway:
//! the `openai` Python client gets a call whose arguments parse and carry the schema's required
//! keys, the same call whole, streamed and accumulated by its own stream helper, a forced
//! `tool_choice`, three choices for `n=3`, and a Pydantic model's tool (`$defs`/`$ref`) that the
//! SDK's `beta.chat.completions.parse` and `.stream` validate. Shadow scoring counts identical tool calls from
//! stable and candidate as a match and the wrong-answer fault's calls as a mismatch. A Triton
//! profile passes the gateway's Triton health validation.

use std::time::Duration;

use rollgate_loadtest::sim::{Faults, Ratio, Sim};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::support::*;

/// How long the gateway may take to score mirrored pairs.
const SCORE_DEADLINE: Duration = Duration::from_secs(20);
/// Tool-call requests per half of the shadow test (half of them streamed).
const PAIRS: usize = 8;

/// Runs `openai_tools.py` against `base_url` and returns its JSON report.
async fn openai_tools(base_url: &str, model: &str, prompt: &str) -> Value {
    openai_script("openai_tools.py", base_url, model, prompt).await
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

    // A Pydantic model's schema (`$defs`, `$ref`, `anyOf` with null) validated by the SDK.
    let pydantic = &report["pydantic"];
    if pydantic.is_null() {
        eprintln!("this openai client has no pydantic_function_tool or beta parse helpers");
        return;
    }
    let order = &pydantic["whole"];
    assert!(order["customer"].is_string(), "{pydantic}");
    let items = order["items"].as_array().expect("items");
    assert!(
        items
            .iter()
            .all(|i| i["sku"].is_string() && i["qty"].is_i64()),
        "{pydantic}"
    );
    assert!(
        ["low", "high"].contains(&order["priority"].as_str().unwrap_or_default()),
        "{pydantic}"
    );
    assert_eq!(
        pydantic["stream"], *order,
        "the streamed call parses the same"
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

/// The pairs the gateway accounted for: (scored, sum of their scores, dropped unscored).
async fn tally(gw: &Gateway) -> (f64, f64, f64) {
    let page = gw.metrics().await;
    let read = |series: &str| metric(&page, series).unwrap_or(0.0);
    let not_comparable = read(r#"rollgate_rollout_shadow_pairs_not_comparable_total{model="m"}"#);
    assert_eq!(not_comparable, 0.0, "every pair comparable\n{page}");
    (
        read(r#"rollgate_rollout_shadow_score_count{model="m"}"#),
        read(r#"rollgate_rollout_shadow_score_sum{model="m"}"#),
        read("rollgate_proxy_shadow_pairs_unscored_total"),
    )
}

/// Sends tool-call requests (every other one streamed) one at a time, each waited for until
/// its pair is accounted for, until `PAIRS` are scored; returns their scores' sum. The scorer
/// drops (and counts) pairs that do not fit its 5 ms a batch, which a debug build on a loaded
/// machine can reach: a dropped pair is sent again, a bounded number of times.
async fn scored_tool_calls(gw: &Gateway, tag: &str) -> f64 {
    let url = gw.url("/v1/chat/completions");
    let (start, start_sum, _) = tally(gw).await;
    for i in 0..4 * PAIRS {
        let before = tally(gw).await;
        if before.0 - start >= PAIRS as f64 {
            return before.1 - start_sum;
        }
        let body = tool_request(&format!("{tag} {i}"), i % 2 == 1);
        let r = send(&client(), &url, &[], body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("tool_calls"), "{}", r.text());
        let deadline = Instant::now() + SCORE_DEADLINE;
        loop {
            let now = tally(gw).await;
            if now.0 + now.2 > before.0 + before.2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pair {i} of {tag} never accounted for"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("fewer than {PAIRS} of {} {tag} pairs scored", 4 * PAIRS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_scoring_tells_identical_tool_calls_from_wrong_ones() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate: Sim = start_sim("candidate", "m", |_| {}).await;
    let model = "    weight: 0%\n    shadow: { sample: 100%, saturated_sample: 100% }\n";
    let gw = Gateway::start(&config(&stable, Some(&candidate), model, ""));

    let right = scored_tool_calls(&gw, "right").await;
    assert_eq!(right, PAIRS as f64, "identical calls score 1 each");

    candidate.set_faults(Faults {
        wrong_answers: Ratio::ONE,
        ..Faults::default()
    });
    let mean = scored_tool_calls(&gw, "wrong").await / PAIRS as f64;
    // The same function, one argument missing and the others' values changed: a broken shape,
    // which the scorer caps at 0.5, far below a match.
    assert!(mean <= 0.5 + 1e-9, "wrong calls scored {mean} on average");
    eprintln!("shadow scores: identical tool calls 1.0 each, wrong ones {mean:.3} on average");
    assert!(candidate.shadow_requests_total() >= 2 * PAIRS as u64);
    drop(gw);
    stable.shutdown().await;
    candidate.shutdown().await;
}

/// `rollgate sim --engine triton` as a Triton candidate: the gateway validates its health on
/// Triton's `/v2/health/ready` and moves on to the canary; with `fail_health` set it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triton_simulator_passes_the_gateways_triton_health_validation() {
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |a| {
        a.engine = rollgate_loadtest::sim::Engine::Triton;
        a.faults.fail_health = true;
    })
    .await;
    let config = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\n\
         models:\n  - name: m\n    stable: {{ endpoints: [\"{}\"], engine: vllm }}\n    \
         candidate: {{ endpoints: [\"{}\"], engine: triton, revision: v2 }}\n    \
         rollout: {{ steps: [{{ weight: 5%, for: 60s }}] }}\n",
        stable.url(),
        candidate.url()
    );
    let gw = Gateway::start(&config);
    let phase = |status: &Value| status["rollouts"][0]["phase"].as_str().map(str::to_owned);
    // Not ready: validation waits on it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = gw.status().await;
        if phase(&status).as_deref() == Some("ValidateHealth") {
            break;
        }
        assert!(Instant::now() < deadline, "never validated: {status:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = gw.status().await;
    assert_eq!(
        phase(&status).as_deref(),
        Some("ValidateHealth"),
        "{status:#}"
    );

    candidate.set_faults(Faults::default());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = gw.status().await;
        if phase(&status).as_deref() == Some("Canary") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Triton health check never passed: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
