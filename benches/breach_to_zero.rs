//! Breach-to-zero-weight: how long after a candidate starts failing does the gateway stop
//! sending it users? Runs the real `rollgate` binary in front of two simulators with a canary at
//! 50 %, steady open-loop traffic, and then makes 5 % of the candidate's answers fail. Measures,
//! per run, until the rollout status shows weight 0 % (polled every 5 ms): from the fault being
//! injected; from the first failed answer the load client saw; and from the last failed answer
//! before the rollback, the failure that completed the gate's evidence: breach -> zero.
//!
//! `cargo bench --bench breach_to_zero` (release build). Environment: `RUNS` (default 5), `RATE`
//! requests per second (default 400).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate_loadtest::sim::{self, Faults, Ratio, SimArgs};

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rate: u64 = std::env::var("RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let (mut from_fault, mut from_first, mut from_breach) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (a, b, c) = once(rate).await;
        println!(
            "run {}: fault -> 0 %: {a:>5.0} ms   first failed answer -> 0 %: {b:>5.0} ms   last failed answer before the rollback -> 0 %: {c:>4.0} ms",
            run + 1
        );
        from_fault.push(a);
        from_first.push(b);
        from_breach.push(c);
    }
    println!("\nmedian (max) over {runs} runs at {rate} req/s, 50 % canary, 5 % candidate errors, gate error_rate max 1 %, min_samples 100:");
    for (what, v) in [
        ("fault -> weight 0", from_fault),
        ("first failed answer -> weight 0", from_first),
        (
            "breach (last failed answer before the rollback) -> weight 0",
            from_breach,
        ),
    ] {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        println!("  {what}: {:.0} ms ({:.0})", v[v.len() / 2], v[v.len() - 1]);
    }
}

async fn start_sim(name: &str) -> sim::Sim {
    let args = SimArgs {
        model: "m".into(),
        name: Some(name.into()),
        ttft: Duration::from_millis(5),
        tpot: Duration::from_millis(1),
        output_tokens: 4,
        max_concurrency: 256,
        ..SimArgs::default()
    };
    sim::start(
        args,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap()
}

/// One run; returns (fault -> zero, first failed answer -> zero, last failed answer before
/// zero -> zero) in milliseconds.
async fn once(rate: u64) -> (f64, f64, f64) {
    let stable = start_sim("stable").await;
    let candidate = start_sim("candidate").await;
    let dir = std::env::temp_dir().join(format!(
        "rollgate-breach-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("rollgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nworkers: 1\nmodels:\n  - name: m\n    stable: {{ endpoints: [\"{}\"], engine: vllm }}\n    candidate: {{ endpoints: [\"{}\"], engine: vllm, revision: v2 }}\n    cohort: {{ header: x-user-id }}\n    rollout:\n      steps: [ {{ weight: 50%, for: 10m }} ]\n      gates: {{ error_rate: {{ max: 1% }} }}\n      min_samples: 100\n",
            stable.url(),
            candidate.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let field = |k: &str| {
        ready
            .split(k)
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    let (data, admin) = (field("data=http://"), field("admin=http://"));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let first_error = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let epoch = Instant::now();
    let load = {
        let (client, data, first_error, failures) = (
            client.clone(),
            data.clone(),
            first_error.clone(),
            failures.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
            for n in 0u64.. {
                tick.tick().await;
                let req = hyper::Request::post(format!("http://{data}/v1/chat/completions"))
                    .header("x-user-id", format!("u{}", n % 1000))
                    .body(Full::new(Bytes::from_static(
                        br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                    )))
                    .unwrap();
                let (client, first_error, failures) =
                    (client.clone(), first_error.clone(), failures.clone());
                tokio::spawn(async move {
                    if let Ok(resp) = client.request(req).await {
                        let bad = resp.status().is_server_error();
                        let _ = resp.into_body().collect().await;
                        if bad {
                            let at = epoch.elapsed().as_micros() as u64;
                            let _ = first_error.compare_exchange(
                                0,
                                at.max(1),
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                            failures.lock().unwrap().push(at);
                        }
                    }
                });
            }
        })
    };
    // Wait for the canary step, then let it settle.
    wait_for(&client, &admin, |s| {
        s["phase"] == "Canary" && s["weight"] == "50%"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    candidate.set_faults(Faults {
        error_rate: Ratio::new(0.05).unwrap(),
        ..Faults::default()
    });
    let fault_at = epoch.elapsed();
    wait_for(&client, &admin, |s| s["weight"] == "0%").await;
    let zero_at = epoch.elapsed();
    load.abort();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    stable.shutdown().await;
    candidate.shutdown().await;
    let first = Duration::from_micros(first_error.load(Ordering::Relaxed));
    let zero_us = zero_at.as_micros() as u64;
    let last = failures
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|t| *t < zero_us)
        .max()
        .unwrap_or(zero_us);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(zero_at - fault_at),
        ms(zero_at.saturating_sub(first)),
        ms(zero_at - Duration::from_micros(last)),
    )
}

async fn wait_for(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    admin: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let req = hyper::Request::get(format!("http://{admin}/rollouts"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(resp) = client.request(req).await {
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                if v.as_array().and_then(|a| a.first()).is_some_and(&done) {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on the rollout status"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
