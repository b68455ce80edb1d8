//! Acceptance 6: 20 reloads under continuous load, 5 of them invalid: zero failed requests; the
//! invalid ones named with all their errors; the counter shows them. SIGHUP and a plain file
//! change reload too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rollgate_loadtest::sim::Sim;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::support::*;

const LOADERS: usize = 8;
/// Completed requests required between two reloads, to show traffic never stopped.
const PROGRESS: u64 = 40;
const INVALID: &str = r#"rollgate_config_reload_total{result="invalid"}"#;
const SUCCESS: &str = r#"rollgate_config_reload_total{result="success"}"#;
const UNCHANGED: &str = r#"rollgate_config_reload_total{result="unchanged"}"#;

/// Tasks sending requests in a loop until stopped; every failure is kept, none panics.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Vec<String>>>,
}

/// An invalid config and the errors it must be rejected with: `(path, words in the message)`.
struct Invalid {
    yaml: String,
    errors: Vec<(&'static str, &'static str)>,
}

// === impl Load ===

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let tasks = (0..LOADERS)
            .map(|t| {
                let (stop, ok, url) = (stop.clone(), ok.clone(), url.clone());
                tokio::spawn(async move {
                    let c = client();
                    let mut failures = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Relaxed) {
                        // Every fourth request streams, so streams also cross the swaps.
                        let stream = n % 4 == 0;
                        let prompt = format!("loader {t} request {n}");
                        match request(&c, &url, chat("m", &prompt, stream), stream).await {
                            Ok(()) => _ = ok.fetch_add(1, Relaxed),
                            Err(e) => failures.push(e),
                        }
                        n += 1;
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, tasks }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Relaxed)
    }

    /// Waits (bounded) until more than `n` requests have succeeded.
    async fn wait_past(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.ok() <= n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "requests stopped flowing at {}",
                self.ok()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the loaders and returns the successes and every failure.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Relaxed);
        let mut failures = Vec::new();
        for t in self.tasks {
            failures.extend(t.await.expect("loader task"));
        }
        (self.ok.load(Relaxed), failures)
    }
}

/// One request, read in full; a transport error, a non-200 or a stream without `[DONE]` fails.
async fn request(c: &HttpClient, url: &str, body: String, stream: bool) -> Result<(), String> {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let resp = c
        .request(req)
        .await
        .map_err(|e| format!("transport: {e:?}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body ({status}): {e:?}"))?
        .to_bytes();
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    if stream && !body.ends_with(b"data: [DONE]\n\n") {
        return Err(format!(
            "stream without [DONE]: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(())
}

/// Valid change `i`: a new candidate weight (`5 × (i+1)` %), and a shadow on every other one.
fn valid(stable: &Sim, cand: &Sim, i: usize) -> String {
    let shadow = if i % 2 == 1 {
        "    shadow: { sample: 10% }\n"
    } else {
        ""
    };
    config(
        stable,
        Some(cand),
        &format!("    weight: {}%\n{shadow}", weight_pct(i)),
        "",
    )
}

fn weight_pct(i: usize) -> usize {
    5 * (i + 1)
}

/// Invalid change `k` (0..5): each has errors in at least two different places.
fn invalid(stable: &Sim, cand: &Sim, k: usize) -> Invalid {
    let (yaml, errors) = match k {
        0 => (
            config(stable, Some(cand), "    weight: 150%\n", "surprise: 1\n"),
            vec![("surprise", "unknown key"), ("models[0].weight", "150% is above 100%")],
        ),
        1 => (
            config(
                stable,
                Some(cand),
                "    weight: 20%\n    colour: blue\n",
                "drain_timeout: soon\n",
            ),
            vec![("drain_timeout", "`soon` is not a number"), ("models[0].colour", "unknown key")],
        ),
        2 => (
            format!(
                "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nworkers: many\n\
                 limits: {{ max_body: lots }}\nmodels:\n  - name: m\n\
                 \x20   stable: {{ endpoints: [\"{}\"], engine: cuda }}\n\
                 \x20   candidate: {{ endpoints: [\"ftp://{}\"], engine: vllm }}\n\
                 \x20   weight: -5%\n",
                stable.url(),
                cand.local_addr()
            ),
            vec![
                ("workers", "non-negative whole number"),
                ("limits.max_body", "`lots` is not a number"),
                ("models[0].stable.engine", "unknown engine `cuda`"),
                ("models[0].candidate.endpoints[0]", "unsupported scheme `ftp`"),
                ("models[0].weight", "is negative"),
            ],
        ),
        3 => (
            config(
                stable,
                Some(cand),
                &format!(
                    "    weight: 20%\n  - name: m\n    stable: {{ endpoints: [\"{}\"], engine: vllm }}\n    shadow: {{ sample: 10% }}\n",
                    stable.url()
                ),
                "routing: { variant_header: maybe }\n",
            ),
            vec![
                ("routing.variant_header", "expected true or false"),
                ("models[1].name", "duplicate model name `m`"),
                ("models[1].shadow", "add `candidate`"),
            ],
        ),
        _ => (
            config(
                stable,
                Some(cand),
                "    weight: 101%\n    cohort: { header: x-user-id, api_key: true }\n",
                "ejection: { consecutive_failures: -1 }\nupstream: { idle_timeout: 0s }\n",
            ),
            vec![
                ("ejection.consecutive_failures", "non-negative whole number"),
                ("upstream.idle_timeout", "greater than 0"),
                ("models[0].weight", "101% is above 100%"),
                ("models[0].cohort", "exactly one of"),
            ],
        ),
    };
    Invalid { yaml, errors }
}

/// The outcome names every expected error at its path, and nothing else.
fn assert_rejected(outcome: &Value, want: &Invalid) {
    assert_eq!(outcome["result"], "invalid", "{outcome:#}");
    let errors: Vec<&str> = outcome["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {outcome:#}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(errors.len(), want.errors.len(), "{errors:#?}");
    for (path, words) in &want.errors {
        let prefix = format!("{path}: ");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&prefix) && e.contains(words)),
            "no `{path}: …{words}…` in {errors:#?}"
        );
    }
}

/// `POST /reload` answers `invalid` with every expected error, whether it judged the write or
/// the watcher did first (then the answer adds `counted_as: "unchanged"`: counted once).
fn assert_answered_rejected(outcome: &Value, want: &Invalid) {
    assert_rejected(outcome, want);
}

fn weight_ppm(status: &Value) -> u64 {
    status["models"][0]["weight_ppm"]
        .as_u64()
        .expect("weight_ppm")
}

async fn sims() -> (Sim, Sim) {
    let tweak = |a: &mut rollgate_loadtest::sim::SimArgs| a.output_tokens = 8;
    (
        start_sim("stable", "m", tweak).await,
        start_sim("candidate", "m", tweak).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_five_invalid_fail_no_request() {
    let (stable, cand) = sims().await;
    let gw = Gateway::start(&config(&stable, Some(&cand), "    weight: 1%\n", ""));
    let mut serving = gw.status().await["revision"]
        .as_str()
        .expect("revision")
        .to_owned();
    let load = Load::start(gw.url("/v1/chat/completions"));
    load.wait_past(PROGRESS).await;
    let started = tokio::time::Instant::now();

    let mut invalid_seen = 0;
    for i in 0..20 {
        let before = load.ok();
        // Every fourth change, from the fourth on, is invalid: 3, 7, 11, 15, 19.
        let outcome = if i % 4 == 3 {
            let bad = invalid(&stable, &cand, invalid_seen);
            invalid_seen += 1;
            gw.write_config(&bad.yaml);
            let outcome = gw.reload().await;
            assert_answered_rejected(&outcome, &bad);
            outcome
        } else {
            let outcome = gw.apply_config(&valid(&stable, &cand, i)).await;
            assert_eq!(outcome["result"], "success", "change {i}: {outcome:#}");
            let revision = outcome["revision"].as_str().expect("revision");
            assert_ne!(revision, serving, "change {i} has a new revision");
            revision.clone_into(&mut serving);
            outcome
        };
        let status = gw.status().await;
        assert_eq!(
            status["revision"],
            serving.as_str(),
            "change {i}: {outcome:#}"
        );
        let last_good = (0..=i).rev().find(|j| j % 4 != 3).expect("a valid change");
        assert_eq!(weight_ppm(&status), weight_pct(last_good) as u64 * 10_000);
        load.wait_past(before + PROGRESS).await;
    }

    let elapsed = started.elapsed();
    let (ok, failures) = load.finish().await;
    eprintln!(
        "20 reloads in {elapsed:?}; {ok} requests succeeded, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:#?}",
        failures.len()
    );
    assert!(ok >= 21 * PROGRESS, "{ok} requests");
    assert!(cand.requests_total() > 0, "the candidate took traffic");

    let page = gw.metrics().await;
    assert_eq!(metric(&page, INVALID), Some(5.0), "{page}");
    assert_eq!(metric(&page, SUCCESS), Some(15.0), "{page}");
    let status = gw.status().await;
    assert_eq!(status["revision"], serving.as_str());
    assert_eq!(status["reloads"]["invalid"], 5);
    // `unchanged` counts the watcher re-reading a file an admin reload already judged.
    eprintln!("reload counts: {}", status["reloads"]);
    assert_eq!(
        status["last_reload"]["result"], "invalid",
        "the last change was invalid"
    );
    assert_rejected(&status["last_reload"], &invalid(&stable, &cand, 4));
    let logs = gw
        .wait_logs("every rejection is logged", |l| {
            l.matches("config reload rejected").count() >= 5
        })
        .await;
    assert_eq!(logs.matches("config reload rejected").count(), 5, "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let (stable, cand) = sims().await;
    let gw = Gateway::start(&config(&stable, Some(&cand), "    weight: 10%\n", ""));
    assert_eq!(metric(&gw.metrics().await, UNCHANGED), Some(0.0));

    // The file has not changed, so the watcher has nothing to do: only the signal reloads.
    gw.signal("HUP");
    gw.wait_metric(UNCHANGED, 1.0, Duration::from_secs(5)).await;

    let before = gw.status().await["revision"].clone();
    gw.write_config(&config(&stable, Some(&cand), "    weight: 30%\n", ""));
    gw.signal("HUP");
    let status = wait_status(&gw, "the new revision never served", |s| {
        s["revision"] != before && s["last_reload"]["result"] == "success"
    })
    .await;
    assert_eq!(weight_ppm(&status), 300_000);
    let page = gw.metrics().await;
    assert_eq!(metric(&page, SUCCESS), Some(1.0), "{page}");
    assert_serves(&gw).await;
    gw.wait_logs("no SIGHUP log line", |l| {
        l.contains("SIGHUP: reloading config")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_by_the_watcher() {
    let (stable, cand) = sims().await;
    let gw = Gateway::start(&config(&stable, Some(&cand), "    weight: 10%\n", ""));
    let first = gw.status().await["revision"].clone();

    gw.write_config(&config(&stable, Some(&cand), "    weight: 30%\n", ""));
    let status = wait_status(&gw, "the changed file was not applied", |s| {
        s["revision"] != first
    })
    .await;
    assert_eq!(weight_ppm(&status), 300_000);
    let applied = status["revision"].clone();
    gw.wait_logs("the watcher did not log the reload", |l| {
        l.contains("trigger=FileChanged")
    })
    .await;

    // An invalid file: reported with its errors, counted once, and the last good one serves.
    let bad = invalid(&stable, &cand, 0);
    gw.write_config(&bad.yaml);
    let status = wait_status(&gw, "the invalid file was not reported", |s| {
        s["last_reload"]["result"] == "invalid"
    })
    .await;
    assert_rejected(&status["last_reload"], &bad);
    assert_eq!(status["revision"], applied);
    let page = gw.metrics().await;
    assert_eq!(metric(&page, SUCCESS), Some(1.0), "{page}");
    assert_eq!(metric(&page, INVALID), Some(1.0), "{page}");
    assert_serves(&gw).await;
}

/// `limits` apply on reload, to new connections, on either data plane; the reload's change
/// list marks what only a restart applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_apply_on_reload_and_restart_only_changes_are_marked() {
    let (stable, _cand) = sims().await;
    let header = "a".repeat(16 * 1024);
    for plane in ["fast", "hyper"] {
        let gw = Gateway::start(&config_on(plane, &stable));
        let r = chat_once(&gw, &[("x-big", &header)]).await;
        assert_eq!(r.status, 200, "{plane}: 16 KiB of headers fit the default");
        let top = format!(
            "data_plane: {plane}\nlimits: {{ max_header_bytes: 8KiB, header_read_timeout: 300ms }}\nupstream: {{ connect_timeout: 3s }}\n"
        );
        gw.write_config(&config(&stable, None, "", &top));
        let outcome = gw.reload().await;
        assert_eq!(outcome["result"], "success", "{outcome}");
        assert_eq!(
            outcome["changes"],
            serde_json::json!([
                "limits.max_header_bytes: 64KiB -> 8KiB",
                "limits.header_read_timeout: 30s -> 300ms",
                "upstream.connect_timeout: 2s -> 3s (restart required)",
            ]),
            "{plane}"
        );
        // A new connection (a new client) gets the new limit.
        let r = chat_once(&gw, &[("x-big", &header)]).await;
        assert_eq!(r.status, 431, "{plane}: the reloaded limit");
        // A head that never ends is cut at the new 300 ms, not the old 30 s.
        let mut raw = tokio::net::TcpStream::connect(gw.data)
            .await
            .expect("connect");
        raw.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "{plane}: the slow head was not cut within 10 s"
        );
        // `/status` keeps naming the restart-only change through a later, unrelated reload.
        let top = format!("{top}routing: {{ allow_override: true }}\n");
        gw.write_config(&config(&stable, None, "", &top));
        assert_eq!(gw.reload().await["result"], "success");
        assert_eq!(
            gw.status().await["restart_pending"],
            serde_json::json!(["upstream.connect_timeout: 2s -> 3s (restart required)"]),
            "{plane}"
        );
        // Back to the value it started with: nothing to restart, and the reload says so.
        let top = top.replace("upstream: { connect_timeout: 3s }\n", "");
        gw.write_config(&config(&stable, None, "", &top));
        let outcome = gw.reload().await;
        assert_eq!(
            outcome["changes"],
            serde_json::json!([
                "upstream.connect_timeout: 3s -> 2s (back to the value running since the start: no restart needed)",
            ]),
            "{plane}"
        );
        assert_eq!(
            gw.status().await["restart_pending"],
            serde_json::json!([]),
            "{plane}"
        );
    }
}

/// A reload to a config that parses but could not start here (a TLS certificate and a golden
/// suite that do not exist) is refused like an invalid one: the old config
/// keeps serving and `/status` names both problems.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_could_not_start_here_is_refused_on_reload() {
    let (stable, cand) = sims().await;
    let gw = Gateway::start(&config(&stable, Some(&cand), "    weight: 10%\n", ""));
    let applied = gw.status().await["revision"].clone();
    let model = "    weight: 30%\n    rollout:\n      synthetic: { suite: nosuch-golden.yaml }\n      steps: [ { weight: 10%, for: 1m } ]\n";
    let top = "tls: { cert: /nonexistent/rollgate/tls.crt, key: /nonexistent/rollgate/tls.key }\n";
    gw.write_config(&config(&stable, Some(&cand), model, top));
    let outcome = gw.reload().await;
    assert_eq!(outcome["result"], "invalid", "{outcome}");
    let errors = outcome["errors"].to_string();
    assert!(
        errors.contains("tls.cert: /nonexistent/rollgate/tls.crt"),
        "{errors}"
    );
    assert!(errors.contains("nosuch-golden.yaml"), "{errors}");
    let status = gw.status().await;
    assert_eq!(status["revision"], applied);
    assert_eq!(weight_ppm(&status), 100_000, "the old weight serves");
    assert_serves(&gw).await;
}
