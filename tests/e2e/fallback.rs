//! `routing.candidate_fallback`: a candidate-bound request that reaches no candidate endpoint
//! (nothing sent) is answered by the stable backend, on both data planes, and the candidate is
//! still charged the failure; so is one the candidate closed on without answering, when the
//! fast path held it whole; a tester pinning the candidate, or a config that turns it off, gets
//! the candidate's own 502. With `routing.candidate_fallback_status`, a candidate answer with
//! a listed status is replaced by stable's too.

use rollgate_loadtest::sim::{Faults, Ratio, Sim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Requests sent per case: at a 50 % split, fewer than 10 on the candidate has a chance of
/// about 1 in 10⁸.
const REQUESTS: usize = 60;

/// An endpoint URL nobody listens on (a port bound and released at once): connections to it
/// are refused.
async fn dead_endpoint() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    drop(l);
    url
}

/// Model `m` on `stable`, the candidate on `candidate` (a URL) at 50 %, random cohorts.
fn half_split(stable: &Sim, candidate: &str, top: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nworkers: 2\n{top}models:\n  - name: m\n    \
         stable: {{ endpoints: [\"{}\"], engine: vllm }}\n    \
         candidate: {{ endpoints: [\"{candidate}\"], engine: vllm, revision: v2 }}\n    weight: 50%\n",
        stable.url()
    )
}

/// Sends [`REQUESTS`] chat requests (half of them streamed) and returns the replies.
async fn send_all(gw: &Gateway, headers: &[(&str, &str)]) -> Vec<Reply> {
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let mut out = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        out.push(send(&c, &url, headers, chat("m", "hello there", i % 2 == 0)).await);
    }
    out
}

fn counter(metrics: &str, series: &str) -> f64 {
    metric(metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_refuses_connections_is_answered_by_stable_on_both_data_planes() {
    for plane in ["fast", "hyper"] {
        let stable = start_sim("stable", "m", |_| {}).await;
        let dead = dead_endpoint().await;
        let gw = Gateway::start(&half_split(
            &stable,
            &dead,
            &format!("data_plane: {plane}\n"),
        ));
        for r in send_all(&gw, &[]).await {
            assert_eq!(r.status, 200, "{plane}: {}\n{}", r.text(), gw.logs());
            assert_eq!(r.header("x-rollgate-variant"), Some("stable"), "{plane}");
            assert_eq!(r.header("x-sim-name"), Some("stable"), "{plane}");
        }
        let m = gw.metrics().await;
        let fallbacks = counter(&m, "rollgate_proxy_candidate_fallbacks_total{model=\"m\"}");
        let charged = counter(
            &m,
            "rollgate_proxy_requests_total{model=\"m\",variant=\"candidate\",status_class=\"error\"}",
        );
        let on_stable = counter(
            &m,
            "rollgate_proxy_requests_total{model=\"m\",variant=\"stable\",status_class=\"2xx\"}",
        );
        eprintln!("{plane}: {fallbacks} of {REQUESTS} fell back");
        assert!(fallbacks >= 10.0, "{plane}: {fallbacks} fallbacks\n{m}");
        // Every fallback is a candidate error its gates see; stable answered everything.
        assert_eq!(charged, fallbacks, "{plane}");
        assert_eq!(on_stable, REQUESTS as f64, "{plane}");
        // Five refusals in a row eject the endpoint; later requests skip it.
        assert!(
            counter(
                &m,
                "rollgate_proxy_endpoint_ejections_total{model=\"m\",role=\"candidate\"}"
            ) >= 1.0,
            "{plane}\n{m}"
        );
        let status = gw.status().await;
        let obs = &status["models"][0]["observed"];
        assert_eq!(obs["candidate_fallbacks"], fallbacks as u64, "{status:#}");
        assert_eq!(
            metric(&m, "rollgate_proxy_rejected_total{reason=\"upstream\"}"),
            Some(0.0),
            "{plane}: nothing was answered with an error\n{m}"
        );
        drop(gw);
        stable.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_candidate_fallback_off_a_down_candidate_answers_502() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let dead = dead_endpoint().await;
    let gw = Gateway::start(&half_split(
        &stable,
        &dead,
        "routing: { candidate_fallback: false }\n",
    ));
    let replies = send_all(&gw, &[]).await;
    let failed: Vec<&Reply> = replies.iter().filter(|r| r.status != 200).collect();
    assert!(failed.len() >= 10, "{} failed", failed.len());
    for r in &failed {
        assert!(r.status == 502 || r.status == 503, "{}", r.status);
        assert_eq!(r.json()["error"]["type"], "server_error", "{}", r.text());
    }
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "rollgate_proxy_candidate_fallbacks_total{model=\"m\"}"),
        Some(0.0),
        "{m}"
    );
    drop(gw);
    stable.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tester_pinning_the_candidate_gets_its_failure_not_stable() {
    for plane in ["fast", "hyper"] {
        let stable = start_sim("stable", "m", |_| {}).await;
        let dead = dead_endpoint().await;
        let top = format!("data_plane: {plane}\nrouting: {{ allow_override: true }}\n");
        let gw = Gateway::start(&half_split(&stable, &dead, &top));
        let r = chat_once(&gw, &[("x-rollgate-variant", "candidate")]).await;
        assert_eq!(r.status, 502, "{plane}: {}", r.text());
        assert!(
            r.text().contains("Upstream unavailable"),
            "{plane}: {}",
            r.text()
        );
        // Who failed it, as on the answers.
        assert_eq!(r.header("x-rollgate-variant"), Some("candidate"), "{plane}");
        drop(gw);
        stable.shutdown().await;
    }
}

/// A listener whose accept queue is full and never drained: a connect to it hangs until the
/// client gives up (SYNs are dropped), as to a host that has gone away. Keep the returned
/// values alive.
async fn blackhole() -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>, String) {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = sock.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    // Fill the queue: connects that complete without an accept, until one does not.
    for _ in 0..8 {
        match tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => held.push(s),
            _ => break,
        }
    }
    (listener, held, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_times_out_connects_costs_one_connect_timeout_before_stable_answers() {
    for plane in ["fast", "hyper"] {
        let stable = start_sim("stable", "m", |_| {}).await;
        let (_listener, _held, hole) = blackhole().await;
        let top = format!("data_plane: {plane}\nupstream: {{ connect_timeout: 300ms }}\n");
        let yaml = half_split(&stable, &hole, &top).replace("weight: 50%", "weight: 100%");
        let gw = Gateway::start(&yaml);
        let started = std::time::Instant::now();
        let r = chat_once(&gw, &[]).await;
        let took = started.elapsed();
        assert_eq!(r.status, 200, "{plane}: {}", r.text());
        assert_eq!(r.header("x-sim-name"), Some("stable"), "{plane}");
        // One try of the one candidate endpoint (300 ms), not three (900 ms).
        assert!(
            took >= std::time::Duration::from_millis(300)
                && took < std::time::Duration::from_millis(700),
            "{plane}: answered after {took:?}"
        );
        // Stable's latency is its own few milliseconds, not the candidate's connect timeout
        // (which would blame stable's dashboards and inflate `max_ratio_vs_stable` baselines).
        let page = gw
            .wait_metric(
                r#"rollgate_proxy_request_duration_seconds_count{model="m",variant="stable"}"#,
                1.0,
                std::time::Duration::from_secs(5),
            )
            .await;
        let fast = r#"rollgate_proxy_request_duration_seconds_bucket{le="0.25",model="m",variant="stable"}"#;
        assert_eq!(metric(&page, fast), Some(1.0), "{plane}\n{page}");
        drop(gw);
        stable.shutdown().await;
    }
}

/// The fast path holds a small request whole: a candidate that takes it and closes without a
/// byte of an answer (a server going down mid-request) hands it to stable. On the hyper path
/// the body was handed to hyper's client, so that user gets the candidate's 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_closes_without_answering_hands_a_whole_request_to_stable() {
    for (plane, want) in [("fast", 200), ("hyper", 502)] {
        let stable = start_sim("stable", "m", |_| {}).await;
        let (listener, url) = raw_upstream().await;
        let closer = tokio::spawn(async move {
            loop {
                let Ok((mut io, _)) = listener.accept().await else {
                    return;
                };
                // Reads the request, then goes away without a word.
                read_request_head(&mut io).await;
                drop(io);
            }
        });
        let top = format!("data_plane: {plane}\n");
        let yaml = half_split(&stable, &url, &top).replace("weight: 50%", "weight: 100%");
        let gw = Gateway::start(&yaml);
        let r = chat_once(&gw, &[]).await;
        assert_eq!(r.status, want, "{plane}: {}", r.text());
        if want == 200 {
            assert_eq!(r.header("x-sim-name"), Some("stable"), "{plane}");
            let m = gw.metrics().await;
            assert_eq!(
                metric(&m, "rollgate_proxy_candidate_fallbacks_total{model=\"m\"}"),
                Some(1.0),
                "{m}"
            );
        }
        closer.abort();
        drop(gw);
        stable.shutdown().await;
    }
}

/// A connect retry goes to another endpoint: with one of two candidate endpoints down (and
/// ejection held off), the candidate answers every request; none falls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_the_candidate_endpoint_that_is_up() {
    for plane in ["fast", "hyper"] {
        let stable = start_sim("stable", "m", |_| {}).await;
        let cand = start_sim("candidate", "m", |_| {}).await;
        let dead = dead_endpoint().await;
        let endpoints = format!("\"{}\", \"{dead}\"", cand.url());
        let top = format!("data_plane: {plane}\nejection: {{ consecutive_failures: 1000 }}\n");
        let yaml = half_split(&stable, &cand.url(), &top)
            .replace("weight: 50%", "weight: 100%")
            .replace(
                &format!("\"{}\"], engine: vllm, revision", cand.url()),
                &format!("{endpoints}], engine: vllm, revision"),
            );
        assert!(yaml.contains(&dead), "{yaml}");
        let gw = Gateway::start(&yaml);
        for r in send_all(&gw, &[]).await {
            assert_eq!(r.status, 200, "{plane}: {}", r.text());
            assert_eq!(r.header("x-sim-name"), Some("candidate"), "{plane}");
        }
        let m = gw.metrics().await;
        assert_eq!(
            metric(&m, "rollgate_proxy_candidate_fallbacks_total{model=\"m\"}"),
            Some(0.0),
            "{plane}\n{m}"
        );
        drop(gw);
        stable.shutdown().await;
        cand.shutdown().await;
    }
}

/// A candidate whose every answer is a 500.
async fn failing_candidate() -> Sim {
    start_sim("candidate", "m", |a| {
        a.faults = Faults {
            error_rate: Ratio::new(1.0).expect("share"),
            ..Faults::default()
        };
    })
    .await
}

/// `routing.candidate_fallback_status`: a candidate answer with a listed status is dropped and
/// stable answers the request instead, streamed or not, on both data planes; the candidate is
/// charged each one. A body over 64 KiB is not kept for a second send: that user gets the
/// candidate's 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_answer_with_a_listed_status_is_replaced_by_stables() {
    for plane in ["fast", "hyper"] {
        let stable = start_sim("stable", "m", |_| {}).await;
        let cand = failing_candidate().await;
        // Ejection held off: every request goes to the candidate and gets its 500.
        let top = format!(
            "data_plane: {plane}\nrouting: {{ candidate_fallback_status: [500, 503] }}\n\
             ejection: {{ consecutive_failures: 1000 }}\n"
        );
        let yaml = half_split(&stable, &cand.url(), &top).replace("weight: 50%", "weight: 100%");
        let gw = Gateway::start(&yaml);
        for r in send_all(&gw, &[]).await {
            assert_eq!(r.status, 200, "{plane}: {}\n{}", r.text(), gw.logs());
            assert_eq!(r.header("x-rollgate-variant"), Some("stable"), "{plane}");
            assert_eq!(r.header("x-sim-name"), Some("stable"), "{plane}");
            assert!(r.text().contains("assistant"), "{plane}: {}", r.text());
        }
        assert_eq!(
            cand.requests_total(),
            REQUESTS as u64,
            "{plane}: the candidate saw each"
        );
        let m = gw.metrics().await;
        let series = |s: &str| counter(&m, s);
        assert_eq!(
            series("rollgate_proxy_candidate_fallbacks_total{model=\"m\"}"),
            REQUESTS as f64,
            "{plane}\n{m}"
        );
        assert_eq!(
            series(
                "rollgate_proxy_requests_total{model=\"m\",variant=\"candidate\",status_class=\"error\"}"
            ),
            REQUESTS as f64,
            "{plane}: every replaced answer is a candidate error its gates see"
        );
        assert_eq!(
            series("rollgate_proxy_requests_total{model=\"m\",variant=\"stable\",status_class=\"2xx\"}"),
            REQUESTS as f64,
            "{plane}"
        );
        // Too large to keep: the candidate's own answer.
        let c = client();
        let big = chat("m", &"x".repeat(70 * 1024), false);
        let r = send(&c, &gw.url("/v1/chat/completions"), &[], big).await;
        assert_eq!(r.status, 500, "{plane}: {}", r.text());
        assert_eq!(r.header("x-rollgate-variant"), Some("candidate"), "{plane}");
        assert_eq!(r.header("x-sim-name"), Some("candidate"), "{plane}");
        drop(gw);
        stable.shutdown().await;
        cand.shutdown().await;
    }
}

/// Without `candidate_fallback_status` (the default) a candidate's 500 is its user's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_candidates_5xx_answer_is_the_users() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let cand = failing_candidate().await;
    let yaml = half_split(&stable, &cand.url(), "").replace("weight: 50%", "weight: 100%");
    let gw = Gateway::start(&yaml);
    let r = chat_once(&gw, &[]).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.header("x-sim-name"), Some("candidate"));
    drop(gw);
    stable.shutdown().await;
    cand.shutdown().await;
}

/// The fast path keeps a small body whole for the fallback even when it arrives in pieces
/// (over a real network a 20 KB body rarely comes with its head).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_arriving_in_pieces_is_still_replaced_on_a_listed_status() {
    for plane in ["fast", "hyper"] {
        let stable = start_sim("stable", "m", |_| {}).await;
        let cand = failing_candidate().await;
        let top = format!("data_plane: {plane}\nrouting: {{ candidate_fallback_status: [500] }}\n");
        let yaml = half_split(&stable, &cand.url(), &top).replace("weight: 50%", "weight: 100%");
        let gw = Gateway::start(&yaml);
        let body = chat("m", &"y".repeat(20_000), false);
        let addr = gw.url("").trim_start_matches("http://").to_owned();
        let mut io = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let (first, rest) = body.as_bytes().split_at(body.len() / 2);
        io.write_all(head.as_bytes()).await.expect("head");
        io.write_all(first).await.expect("first half");
        io.flush().await.expect("flush");
        // The rest arrives later, as from a client across a network.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        io.write_all(rest).await.expect("second half");
        let mut answer = Vec::new();
        io.read_to_end(&mut answer).await.expect("answer");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{plane}: {answer}");
        assert!(answer.contains("x-sim-name: stable"), "{plane}: {answer}");
        assert_eq!(cand.requests_total(), 1, "{plane}");
        drop(gw);
        stable.shutdown().await;
        cand.shutdown().await;
    }
}
