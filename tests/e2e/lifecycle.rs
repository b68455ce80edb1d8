//! Acceptance 7: `promtool check metrics` accepts `/metrics`; SIGTERM with 20 open streams lets
//! all finish and exits 0.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

use crate::support::*;

const STREAMS: usize = 20;
/// 40 tokens, 50 ms apart: each stream runs about 2 s.
const TOKENS: u64 = 40;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Pipes `page` into `promtool check metrics`; returns its exit success and everything it said.
async fn promtool_check(page: String) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run promtool ({e}); scripts/install-test-deps installs it \
                     (Debian package prometheus)"
                )
            });
        let mut stdin = child.stdin.take().expect("promtool stdin");
        stdin.write_all(page.as_bytes()).expect("write to promtool");
        drop(stdin);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("try_wait").is_none() {
            if std::time::Instant::now() > deadline {
                // Killing a process that just exited is harmless.
                let _ = child.kill();
                panic!("promtool did not finish within 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().expect("promtool output");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    })
    .await
    .expect("promtool task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_metrics_page() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let cand = start_sim("candidate", "m", |_| {}).await;
    let gw = Gateway::start(&config(
        &stable,
        Some(&cand),
        "    shadow: { sample: 100%, saturated_sample: 100% }\n",
        "",
    ));
    // Traffic so that every family has samples: a plain request, a stream (TTFT), both
    // mirrored to the shadow, and a rejection.
    let c = client();
    let url = gw.url("/v1/chat/completions");
    for stream in [false, true] {
        let r = send(&c, &url, &[], chat("m", "fill the histograms", stream)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = send(&c, &url, &[], chat("nope", "hi", false)).await;
    assert_eq!(r.status, 404);
    let shadow_2xx =
        r#"rollgate_proxy_requests_total{model="m",variant="shadow",status_class="2xx"}"#;
    gw.wait_metric(shadow_2xx, 2.0, Duration::from_secs(5))
        .await;

    let reply = get(&c, &gw.admin_url("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let page = reply.text();
    for family in [
        "rollgate_proxy_time_to_first_token_seconds_count",
        "rollgate_proxy_shadow_dropped_total",
        "rollgate_config_reload_total",
        "rollgate_config_info",
    ] {
        assert!(page.contains(family), "no {family} in\n{page}");
    }
    let (ok, said) = promtool_check(page.clone()).await;
    assert!(
        ok,
        "promtool check metrics failed:\n{said}\n--- page ---\n{page}"
    );
    assert_eq!(said, "", "promtool lint output for\n{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_twenty_open_streams_finish_and_exits_zero() {
    let stable = start_sim("stable", "m", |a| {
        a.ttft = Duration::from_millis(50);
        a.tpot = Duration::from_millis(50);
        a.output_tokens = TOKENS;
    })
    .await;
    let top = format!("drain_timeout: {}s\n", DRAIN_TIMEOUT.as_secs());
    let mut gw = Gateway::start(&config(&stable, None, "", &top));
    let c = client();
    let (first_tx, mut first_rx) = mpsc::channel::<usize>(STREAMS);
    let finished = Arc::new(AtomicUsize::new(0));
    let streams: Vec<_> = (0..STREAMS)
        .map(|i| {
            let (c, first_tx, finished) = (c.clone(), first_tx.clone(), finished.clone());
            let req = hyper::Request::post(gw.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(chat(
                    "m",
                    &format!("stream {i}"),
                    true,
                ))))
                .expect("request");
            tokio::spawn(async move {
                let resp = c
                    .request(req)
                    .await
                    .map_err(|e| format!("stream {i}: {e:?}"))?;
                if resp.status() != 200 {
                    return Err(format!("stream {i}: status {}", resp.status()));
                }
                let mut body = resp.into_body();
                let mut text = Vec::new();
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| format!("stream {i} broke: {e:?}"))?;
                    if let Some(data) = frame.data_ref() {
                        if text.is_empty() {
                            // The receiver outlives every stream; a send cannot fail.
                            let _ = first_tx.send(i).await;
                        }
                        text.extend_from_slice(data);
                    }
                }
                finished.fetch_add(1, SeqCst);
                Ok::<_, String>(String::from_utf8_lossy(&text).into_owned())
            })
        })
        .collect();
    drop(first_tx);
    for _ in 0..STREAMS {
        tokio::time::timeout(Duration::from_secs(10), first_rx.recv())
            .await
            .expect("every stream has its first event within 10 s")
            .expect("a stream ended before its first event");
    }

    gw.signal("TERM");
    let term = tokio::time::Instant::now();
    // New connections are refused once draining began, while the streams still run.
    let deadline = term + Duration::from_secs(3);
    loop {
        match tokio::net::TcpStream::connect(gw.data).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still accepting: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let refused_after = term.elapsed();
    let finished_at_refusal = finished.load(SeqCst);

    for s in streams {
        let text = s
            .await
            .expect("stream task")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        // Every token, the finish event and `[DONE]`.
        let events = text.matches("data: ").count();
        assert_eq!(events, TOKENS as usize + 2, "{text}");
    }
    let streams_done = term.elapsed();
    let status = gw.wait(DRAIN_TIMEOUT + Duration::from_secs(5)).await;
    let exited = term.elapsed();
    eprintln!(
        "after SIGTERM: refused new connections at {refused_after:?} ({finished_at_refusal} of \
         {STREAMS} streams done), all streams done at {streams_done:?}, exited at {exited:?}"
    );
    assert_eq!(status.code(), Some(0), "{}", gw.logs());
    assert!(
        finished_at_refusal < STREAMS,
        "refusal should come while streams still run"
    );
    let logs = gw
        .wait_logs("no clean drain logged", |l| l.contains("drained; exiting"))
        .await;
    assert!(!logs.contains("panicked"), "{logs}");
}

/// A latency histogram is 21 series; `/metrics` carries one per model and variant only once
/// something was observed there, so idle models and absent variants cost a few counters, not
/// 189 empty buckets. Counters are always there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_appear_once_observed() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let cand = start_sim("candidate", "m", |_| {}).await;
    let idle = format!(
        "  - name: idle\n    stable: {{ endpoints: [\"{}\"] }}\n",
        stable.url()
    );
    let gw = Gateway::start(&config(&stable, Some(&cand), &idle, ""));
    assert_serves(&gw).await;
    // Counted when the body has ended, which can be just after the client saw it.
    let page = gw
        .wait_metric(
            r#"rollgate_proxy_request_duration_seconds_count{model="m",variant="stable"}"#,
            1.0,
            Duration::from_secs(5),
        )
        .await;
    let has = |series: &str| page.contains(series);
    for absent in [
        r#"rollgate_proxy_request_duration_seconds_count{model="m",variant="candidate"}"#,
        r#"rollgate_proxy_time_to_first_token_seconds_count{model="m",variant="stable"}"#,
        r#"rollgate_proxy_request_duration_seconds_count{model="idle""#,
    ] {
        assert!(!has(absent), "{absent} in\n{page}");
    }
    assert!(
        has(r#"rollgate_proxy_requests_total{model="idle",variant="stable",status_class="2xx"} 0"#),
        "{page}"
    );
    let (ok, said) = promtool_check(page.clone()).await;
    assert!(ok, "{said}");
}

/// A model or an endpoint that a reload removes leaves `/metrics`: renamed models and pods
/// that come back on new addresses do not grow the page forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_models_and_endpoints_leave_the_metrics() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let other = start_sim("other", "old", |_| {}).await;
    let old = format!(
        "  - name: old\n    stable: {{ endpoints: [\"{}\"] }}\n",
        other.url()
    );
    let gw = Gateway::start(&config(&stable, None, &old, ""));
    let r = send(
        &client(),
        &gw.url("/v1/chat/completions"),
        &[],
        chat("old", "hi", false),
    )
    .await;
    assert_eq!(r.status, 200);
    let page = gw.metrics().await;
    assert!(page.contains(r#"model="old""#), "{page}");
    let endpoint = format!(r#"endpoint="{}""#, other.url());
    assert!(page.contains(&endpoint), "{page}");

    gw.write_config(&config(&stable, None, "", ""));
    assert_eq!(gw.reload().await["result"], "success");
    // The data plane forgets at the swap, the rollout driver at its next step (woken by it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let page = loop {
        let page = gw.metrics().await;
        if !page.contains(r#"model="old""#) || tokio::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!page.contains(r#"model="old""#), "{page}");
    assert!(!page.contains(&endpoint), "{page}");
    assert!(page.contains(r#"model="m""#), "{page}");
}

/// `GET /status?model=NAME` (percent-encoded) answers one model's entries; an unknown model is
/// a 404 and a broken encoding a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_one_model() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let other = format!(
        "  - name: 'org/x y'\n    stable: {{ endpoints: [\"{}\"] }}\n",
        stable.url()
    );
    let gw = Gateway::start(&config(&stable, None, &other, ""));
    let c = client();
    let all = get(&c, &gw.admin_url("/status")).await.json();
    assert_eq!(all["models"].as_array().map(Vec::len), Some(2), "{all}");
    let one = get(&c, &gw.admin_url("/status?model=org%2Fx%20y")).await;
    assert_eq!(one.status, 200, "{}", one.text());
    let one = one.json();
    assert_eq!(one["models"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one["models"][0]["name"], "org/x y");
    assert_eq!(one["revision"], all["revision"]);
    assert_eq!(
        get(&c, &gw.admin_url("/status?model=nope")).await.status,
        404
    );
    assert_eq!(
        get(&c, &gw.admin_url("/status?model=%zz")).await.status,
        400
    );
}
