//! Acceptance 2: the `openai` Python client streams a chat completion through the gateway and
//! gets every event and `[DONE]`; when the upstream sends its first event and then pauses 1 s,
//! the client has the first event well before the pause ends. A client that goes away
//! mid-stream cancels the upstream request.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rollgate_loadtest::sim::{Faults, Sim};
use serde_json::Value;

use crate::support::*;

const TOKENS: u64 = 24;
const STABLE_2XX: &str =
    r#"rollgate_proxy_requests_total{model="m",variant="stable",status_class="2xx"}"#;

/// Runs `openai_stream.py` against `base_url` and returns its JSON report.
async fn openai_stream(base_url: &str, model: &str, prompt: &str) -> Value {
    openai_script("openai_stream.py", base_url, model, prompt).await
}

/// The answer the simulator gives for `prompt`, asked directly (deterministic answers).
async fn direct_answer(sim: &Sim, prompt: &str) -> String {
    let url = format!("{}/v1/chat/completions", sim.url());
    let r = send(&client(), &url, &[], chat("m", prompt, false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_owned()
}

fn seconds(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {key} in {report}"))
}

/// Every stream-failure sample on the page, summed.
fn stream_failures(page: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with("rollgate_proxy_stream_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn stream_sim() -> Sim {
    start_sim("stable", "m", |a| {
        a.output_tokens = TOKENS;
        a.tpot = Duration::from_millis(2);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_gets_every_event_through_the_gateway() {
    let stable = stream_sim().await;
    let gw = Gateway::start(&config(&stable, None, "", ""));
    let prompt = "Explain canary releases in one breath";
    let want = direct_answer(&stable, prompt).await;

    let report = openai_stream(&gw.url("/v1"), "m", prompt).await;
    eprintln!("openai client through the gateway: {report}");
    // Every token event, the finish event and the usage event; `[DONE]` ended the iteration.
    assert_eq!(report["content"], want.as_str(), "{report}");
    assert_eq!(report["chunks"], TOKENS + 2, "{report}");
    assert_eq!(report["finish_reason"], "stop", "{report}");
    assert_eq!(report["usage"]["completion_tokens"], TOKENS, "{report}");

    // The same stream's raw bytes, for `[DONE]` itself (the client consumes it silently).
    let url = gw.url("/v1/chat/completions");
    let raw = send(&client(), &url, &[], chat("m", prompt, true))
        .await
        .text();
    assert!(raw.ends_with("data: [DONE]\n\n"), "{raw}");
    assert_eq!(raw.matches("data: ").count(), TOKENS as usize + 2, "{raw}");

    // The script's warm-up request, its stream and the raw stream.
    let page = gw
        .wait_metric(STABLE_2XX, 3.0, Duration::from_secs(5))
        .await;
    assert_eq!(stream_failures(&page), 0.0, "{page}");
    assert_eq!(
        metric(
            &page,
            r#"rollgate_proxy_time_to_first_token_seconds_count{model="m",variant="stable"}"#
        ),
        Some(2.0),
        "the gateway saw both streams' first tokens"
    );
}

/// JSON leaves the order of keys to the client, and many write `model` after `messages` (the
/// `openai` Python client 3.57 writes it first): with a long prompt the gateway then reads all
/// of it before it knows where the request goes. 300 KiB (about 75k tokens of prose) was a 400
/// under the old 64 KiB `model_prefix` default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_is_routed_by_the_model_written_after_it() {
    let stable = stream_sim().await;
    let sentence =
        "The naïve café owner said the delivery arrives at nine, before the market opens. ";
    let prompt = sentence.repeat((300 << 10) / sentence.len());
    let want = direct_answer(&stable, &prompt).await;
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"{prompt}"}}],"stream":true,"model":"m"}}"#
    );
    for plane in ["fast", "hyper"] {
        let gw = Gateway::start(&config_on(plane, &stable));
        let url = gw.url("/v1/chat/completions");
        let r = send(&client(), &url, &[], body.clone()).await;
        let raw = r.text();
        assert_eq!(r.status, 200, "{plane}: {raw}");
        assert!(raw.ends_with("data: [DONE]\n\n"), "{plane}: {raw}");
        let content: String = raw
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(content, want, "{plane}: the answer to another prompt");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_after_the_first_event_does_not_hold_it_back() {
    let stable = stream_sim().await;
    stable.set_faults(Faults {
        stall_first_event: Duration::from_secs(1),
        ..Faults::default()
    });
    let gw = Gateway::start(&config(&stable, None, "", ""));
    let prompt = "Say something, then think about it";
    let want = direct_answer(&stable, prompt).await;

    let report = openai_stream(&gw.url("/v1"), "m", prompt).await;
    eprintln!("openai client, upstream pausing 1 s after the first event: {report}");
    let (first, last) = (
        seconds(&report, "first_chunk_s"),
        seconds(&report, "last_chunk_s"),
    );
    assert!(
        first < 0.3,
        "first chunk after {first:.3} s: the gateway held it back"
    );
    assert!(
        last >= 1.0,
        "last chunk after {last:.3} s: the pause did not happen"
    );
    assert_eq!(report["content"], want.as_str(), "{report}");
    assert_eq!(report["chunks"], TOKENS + 2, "{report}");

    let page = gw
        .wait_metric(STABLE_2XX, 2.0, Duration::from_secs(5))
        .await;
    assert_eq!(stream_failures(&page), 0.0, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_cancels_the_upstream() {
    // 400 tokens at 25 ms: a 10 s stream, so an early stop can only be the cancellation.
    let stable = start_sim("stable", "m", |a| {
        a.output_tokens = 400;
        a.tpot = Duration::from_millis(25);
    })
    .await;
    let gw = Gateway::start(&config(&stable, None, "", ""));
    let c = client();
    let req = hyper::Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("m", "a long story", true))))
        .expect("request");
    let resp = c.request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a first frame").expect("frame");
    let first = first.into_data().expect("data frame");
    assert!(first.starts_with(b"data: {"), "{first:?}");
    let running = r#"vllm:num_requests_running{model_name="m"}"#;
    assert_eq!(metric(&stable.metrics_text(), running), Some(1.0));

    let left = tokio::time::Instant::now();
    drop(body);
    drop(c);
    let deadline = left + Duration::from_secs(3);
    while metric(&stable.metrics_text(), running) != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream kept generating"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "upstream request ended {:?} after the client left",
        left.elapsed()
    );
    let series = r#"rollgate_proxy_cancelled_total{model="m",variant="stable"}"#;
    let page = gw.wait_metric(series, 1.0, Duration::from_secs(3)).await;
    assert_eq!(
        stream_failures(&page),
        0.0,
        "a client leaving is not a stream failure"
    );
    let inflight = r#"rollgate_proxy_inflight_requests{model="m",variant="stable"}"#;
    assert_eq!(metric(&page, inflight), Some(0.0), "{page}");
}
