//! Acceptance 3 and 4: mirroring to the candidate. A large request reaches the shadow byte for
//! byte; a stalled shadow costs the primary nothing noticeable, and what it cannot take is
//! dropped and counted.
//!
//! Every shadow here sets `saturated_sample: 100%`: these tests count mirrors, and a debug build
//! on a loaded 2-core host can read as saturated (proxy/src/load.rs) and, by default, mirror only
//! 1 % of the sample meanwhile.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate_loadtest::sim::{Faults, Received, Sim, SimArgs};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::*;

/// Content bytes of the large request (the JSON around it makes the body a little larger).
const BIG: usize = 8 << 20;
/// How long the simulators may take to report a mirrored request (they run on this runtime,
/// but the shadow exchange runs in the gateway process).
const SHADOW_DEADLINE: Duration = Duration::from_secs(20);

/// Requests per gateway in the latency comparison, and how many each gateway has in flight.
const REQUESTS: usize = 2_000;
const IN_FLIGHT: usize = 16;
/// Mirrors the stalled shadow may hold at once.
const MAX_INFLIGHT: usize = 64;

/// A request body sent in pieces with no length: HTTP/1.1 chunked transfer encoding.
struct Chunked(VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// A chat request whose message holds `content` bytes of numbered words, so that a lost,
/// repeated or reordered chunk changes the hash.
fn big_chat(content: usize) -> Bytes {
    let head = r#"{"model":"m","messages":[{"role":"user","content":""#;
    let mut body = String::with_capacity(content + 64);
    body.push_str(head);
    let mut i = 0u64;
    while body.len() - head.len() < content {
        body.push_str(&format!("{i:08} "));
        i += 1;
    }
    body.truncate(head.len() + content);
    body.push_str(r#""}]}"#);
    Bytes::from(body)
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Waits (bounded) until the simulator has received a request matching `want`.
async fn received_by(sim: &Sim, want: impl Fn(&Received) -> bool) -> Option<Received> {
    let deadline = Instant::now() + SHADOW_DEADLINE;
    loop {
        if let Some(r) = sim.received().into_iter().find(|r| want(r)) {
            return Some(r);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that both the stable sim (as the primary) and the candidate sim (as the shadow)
/// received exactly `body`. A failure shows what each received and the gateway's shadow series.
async fn assert_mirrored(gw: &Gateway, stable: &Sim, candidate: &Sim, body: &[u8]) {
    let sha = sha256_hex(body);
    let len = body.len() as u64;
    let (primary, shadow) = tokio::join!(
        received_by(stable, |r| r.sha256 == sha),
        received_by(candidate, |r| r.shadow && r.sha256 == sha)
    );
    let (Some(primary), Some(shadow)) = (primary, shadow) else {
        let metrics = gw.metrics().await;
        let shadow_series: Vec<&str> = metrics
            .lines()
            .filter(|l| l.contains("shadow") && !l.starts_with('#'))
            .collect();
        panic!(
            "not both received it within {SHADOW_DEADLINE:?}\nstable has: {:?}\ncandidate has: {:?}\n\
             gateway:\n{}\nlogs:\n{}",
            stable.received(),
            candidate.received(),
            shadow_series.join("\n"),
            gw.logs()
        );
    };
    assert_eq!((primary.len, primary.shadow), (len, false), "{primary:?}");
    assert_eq!(shadow.len, len, "{shadow:?}");
    assert_eq!(shadow.path, "/v1/chat/completions");
}

/// One small chat request, answered 200 by the primary.
async fn small_chat(c: &HttpClient, gw: &Gateway) {
    let r = send(
        c,
        &gw.url("/v1/chat/completions"),
        &[],
        chat("m", "hi", false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn shadow_config(stable: &Sim, candidate: &Sim, shadow: &str) -> String {
    let model = format!("    weight: 0%\n    shadow: {shadow}\n");
    config(stable, Some(candidate), &model, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_reaches_the_shadow_byte_for_byte() {
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let gw = Gateway::start(&shadow_config(
        &stable,
        &candidate,
        "{ sample: 100%, saturated_sample: 100% }",
    ));
    let url = gw.url("/v1/chat/completions");

    // With a content-length.
    let body = big_chat(BIG);
    let r = send(&client(), &url, &[], body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sim-name"), Some("stable"));
    assert_eq!(r.header("x-rollgate-variant"), Some("stable"));
    assert_mirrored(&gw, &stable, &candidate, &body).await;

    // Chunked, in 64 KiB pieces: a different size so that it cannot match the first request.
    let body = big_chat(BIG - 12_345);
    let pieces = body.chunks(64 << 10).map(Bytes::copy_from_slice).collect();
    let req = hyper::Request::post(&url)
        .header("content-type", "application/json")
        .body(Chunked(pieces))
        .expect("request");
    let chunked = Client::builder(TokioExecutor::new()).build_http::<Chunked>();
    let resp = chunked.request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sim-name"], "stable");
    let answer = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(!answer.is_empty());
    assert_mirrored(&gw, &stable, &candidate, &body).await;

    // The gateway counts a mirror when the shadow's answer has been read, just after the
    // simulator logged the request.
    let mirrored =
        r#"rollgate_proxy_requests_total{model="m",variant="shadow",status_class="2xx"}"#;
    let m = gw.wait_metric(mirrored, 2.0, SHADOW_DEADLINE).await;
    assert_eq!(
        sum_of(&m, "rollgate_proxy_shadow_dropped_total{"),
        0.0,
        "{m}"
    );
}

/// Sends `REQUESTS` requests to each gateway, `IN_FLIGHT` at a time to each, and returns the
/// client-side latencies `(base, shadowed)`. Both gateways get a request at the same moment, so
/// noise from the machine (other tests, other processes) lands on both samples alike; only what
/// mirroring adds differs.
async fn paired_latencies(base: &str, shadowed: &str) -> (Vec<Duration>, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (c, base, shadowed, next) =
            (client(), base.to_owned(), shadowed.to_owned(), next.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Relaxed) < REQUESTS {
                out.push(tokio::join!(timed(&c, &base), timed(&c, &shadowed)));
            }
            out
        });
    }
    let (mut b, mut s) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        for (x, y) in done.expect("request task") {
            b.push(x);
            s.push(y);
        }
    }
    (b, s)
}

async fn timed(c: &HttpClient, url: &str) -> Duration {
    let start = Instant::now();
    let r = send(c, url, &[], chat("m", "hi", false)).await;
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sim-name"), Some("stable"));
    took
}

/// The sample below which 99 % of the others lie (nearest rank).
fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99).div_ceil(100) - 1]
}

/// The sum of every sample whose series starts with `prefix` (all values of one label).
fn sum_of(page: &str, prefix: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_shadow_leaves_primary_latency_alone_and_drops_are_counted() {
    let _heavy = heavy().await;
    // The model's own latency (80 ms to the first token, then 7 tokens at 2 ms: about 95 ms)
    // dominates the gateway's and the machine's noise, so a 10 % band on p99 says something.
    // (At 20 ms to the first token, p99 near 30 ms swung by over 15 % between runs.)
    let slow_enough = |a: &mut SimArgs| {
        a.ttft = Duration::from_millis(80);
        a.tpot = Duration::from_millis(2);
        a.output_tokens = 8;
    };
    let base_stable = start_sim("stable", "m", slow_enough).await;
    let stable = start_sim("stable", "m", slow_enough).await;
    let candidate = start_sim("candidate", "m", |a| {
        a.faults = Faults {
            stall: Duration::from_secs(10),
            ..Faults::default()
        };
    })
    .await;
    let base = Gateway::start(&config(&base_stable, None, "", ""));
    let shadowed = Gateway::start(&shadow_config(
        &stable,
        &candidate,
        &format!("{{ sample: 100%, saturated_sample: 100%, max_inflight: {MAX_INFLIGHT} }}"),
    ));

    let (b, s) = paired_latencies(
        &base.url("/v1/chat/completions"),
        &shadowed.url("/v1/chat/completions"),
    )
    .await;
    let (p99_base, p99_shadow) = (p99(b), p99(s));
    eprintln!("p99 without shadow {p99_base:?}, with a stalled shadow {p99_shadow:?}");
    assert!(
        p99_shadow.as_secs_f64() <= p99_base.as_secs_f64() * 1.10,
        "p99 with a stalled shadow {p99_shadow:?} is more than 10% above {p99_base:?}"
    );
    assert_mirrors_accounted(&shadowed).await;
}

/// Every one of the mirrors is accounted for: dropped (for a reason), still waiting on the
/// stalled shadow, or finished. No mirror has to finish for that, so the deadline is short; the
/// retries only cover a mirror finishing while a scrape is being taken.
async fn assert_mirrors_accounted(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let m = gw.metrics().await;
        let dropped = sum_of(&m, r#"rollgate_proxy_shadow_dropped_total{model="m","#);
        let by_bound = ["inflight", "paced"]
            .iter()
            .map(|r| {
                let name =
                    format!(r#"rollgate_proxy_shadow_dropped_total{{model="m",reason="{r}"}}"#);
                metric(&m, &name)
            })
            .sum::<Option<f64>>();
        let waiting = metric(
            &m,
            r#"rollgate_proxy_inflight_requests{model="m",variant="shadow"}"#,
        );
        let finished = sum_of(
            &m,
            r#"rollgate_proxy_requests_total{model="m",variant="shadow","#,
        );
        let waiting = waiting.unwrap_or(f64::NAN);
        if dropped + waiting + finished == REQUESTS as f64 {
            eprintln!("mirrors: dropped {dropped}, waiting {waiting}, finished {finished}");
            assert!(waiting <= MAX_INFLIGHT as f64, "{m}");
            assert!(dropped > 0.0, "{m}");
            assert_eq!(
                by_bound,
                Some(dropped),
                "only the in-flight bound (or its pace) drops\n{m}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "mirrors: dropped {dropped} + waiting {waiting} + finished {finished} != {REQUESTS}\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Acceptance 3's reuse figure: mirrors ride pooled connections. 1,000 sequential requests, all
/// mirrored: `rollgate_proxy_upstream_exchanges_total` counts every one on the candidate's
/// endpoint, and at most 1 % of them needed a new connection. New connections are bounded by how
/// many mirrors overlap (a mirror may still be finishing when the next request starts: 4 of 500
/// were new in a run with 2 workers), not by the request count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_reuse_pooled_connections_and_say_so_in_metrics() {
    const N: usize = 1_000;
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let gw = Gateway::start(&shadow_config(
        &stable,
        &candidate,
        "{ sample: 100%, saturated_sample: 100% }",
    ));
    let c = client();
    for _ in 0..N {
        small_chat(&c, &gw).await;
    }
    let series = |conn: &str| {
        format!(
            r#"rollgate_proxy_upstream_exchanges_total{{endpoint="{}",connection="{conn}"}}"#,
            candidate.url()
        )
    };
    let deadline = Instant::now() + SHADOW_DEADLINE;
    let (new, pooled) = loop {
        let m = gw.metrics().await;
        let new = metric(&m, &series("new")).unwrap_or(0.0);
        let pooled = metric(&m, &series("pooled")).unwrap_or(0.0);
        if new + pooled >= N as f64 || Instant::now() > deadline {
            break (new, pooled);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("mirrors on the candidate: {new} on new connections, {pooled} on pooled ones");
    assert_eq!(new + pooled, N as f64, "every mirror is counted once");
    assert!(
        new <= (N / 100) as f64,
        "{new} of {N} mirrors opened a connection"
    );
    // The stable side is counted the same way.
    let m = gw.metrics().await;
    let stable_pooled = format!(
        r#"rollgate_proxy_upstream_exchanges_total{{endpoint="{}",connection="pooled"}}"#,
        stable.url()
    );
    assert!(metric(&m, &stable_pooled).unwrap_or(0.0) >= (N - N / 100) as f64);
}

/// A keep-alive shadow that answers one request per connection and closes the connection when
/// the next request arrives on it, without answering (the race every keep-alive client meets:
/// the server gave up on an idle connection as the request went out). Returns its URL and the
/// count of requests it answered.
async fn one_answer_per_connection_shadow() -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut requests = 0;
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = io.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap_or(0));
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    buf.drain(..end + 4 + len);
                    requests += 1;
                    if requests > 1 {
                        return; // closed, unanswered
                    }
                    let body = r#"{"id":"x","object":"chat.completion","choices":[]}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if io.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    count.fetch_add(1, Relaxed);
                }
            });
        }
    });
    (url, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_on_a_pooled_connection_the_shadow_closed_goes_again_on_a_fresh_one() {
    const N: usize = 5;
    let stable = start_sim("stable", "m", |_| {}).await;
    let (shadow, answered) = one_answer_per_connection_shadow().await;
    // One worker, so every mirror after the first finds the previous one's pooled connection.
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nworkers: 1\ndata_plane: fast\n\
         models:\n  - name: m\n    stable: {{ endpoints: [\"{}\"], engine: vllm }}\n    \
         candidate: {{ endpoints: [\"{shadow}\"], engine: vllm }}\n    weight: 0%\n    \
         shadow: {{ sample: 100%, saturated_sample: 100% }}\n",
        stable.url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let mirrored =
        r#"rollgate_proxy_requests_total{model="m",variant="shadow",status_class="2xx"}"#;
    for i in 1..=N {
        small_chat(&c, &gw).await;
        // Each mirror is answered before the next request, so the next one takes its
        // connection from the pool.
        gw.wait_metric(mirrored, i as f64, SHADOW_DEADLINE).await;
    }
    let m = gw.metrics().await;
    assert_eq!(answered.load(Relaxed), N, "{m}");
    assert_eq!(
        sum_of(&m, "rollgate_proxy_shadow_dropped_total{"),
        0.0,
        "no mirror was lost to a stale connection\n{m}"
    );
    let pooled = format!(
        r#"rollgate_proxy_upstream_exchanges_total{{endpoint="{shadow}",connection="pooled"}}"#
    );
    assert!(
        metric(&m, &pooled).unwrap_or(0.0) >= 1.0,
        "the stale connections were taken from the pool\n{m}"
    );
}

/// Every pair of answers (the stable's and the shadow's) is either scored or counted as
/// unscored: the scorer takes a bounded batch every 100 ms and the pairs it had no room for are
/// `rollgate_proxy_shadow_pairs_unscored_total`, never lost silently. 320 requests, 32 at once,
/// all mirrored.
/// A shadow that takes longer than `shadow.timeout` to answer: each mirror is given up at the
/// deadline and counted as a timeout (not as an upstream error), on both data planes, while
/// the primaries are answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_slower_than_its_timeout_is_counted_as_timed_out() {
    const N: usize = 3;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |a| {
        a.faults = Faults {
            stall: Duration::from_secs(30),
            ..Faults::default()
        };
    })
    .await;
    for plane in ["fast", "hyper"] {
        let model = "    weight: 0%\n    shadow: { sample: 100%, saturated_sample: 100%, timeout: 300ms }\n";
        let gw = Gateway::start(&config(
            &stable,
            Some(&candidate),
            model,
            &format!("data_plane: {plane}\n"),
        ));
        let c = client();
        let began = Instant::now();
        for _ in 0..N {
            small_chat(&c, &gw).await;
        }
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{plane}: primaries waited"
        );
        let timed_out = r#"rollgate_proxy_shadow_dropped_total{model="m",reason="timeout"}"#;
        let m = gw.wait_metric(timed_out, N as f64, SHADOW_DEADLINE).await;
        let upstream = r#"rollgate_proxy_shadow_dropped_total{model="m",reason="upstream_error"}"#;
        assert_eq!(metric(&m, upstream).unwrap_or(0.0), 0.0, "{plane}\n{m}");
    }
}

/// A shadow that reads each request whole, then closes the connection unanswered once the
/// test adds a permit.
async fn unanswering_shadow() -> (String, Arc<tokio::sync::Semaphore>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let close = Arc::new(tokio::sync::Semaphore::new(0));
    let permits = close.clone();
    tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            let permits = permits.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.ends_with(b"}") {
                    match io.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                permits.acquire().await.expect("open").forget();
            });
        }
    });
    (url, close)
}

/// A mirror that fails after its primary was answered in full is an upstream error, never a
/// primary that was abandoned: the body reached the shadow whole (on hyper's plane too, which
/// stops reading a body of known length without reading its end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_failing_after_the_primary_was_answered_is_an_upstream_error() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let (shadow, close) = unanswering_shadow().await;
    for plane in ["fast", "hyper"] {
        let yaml = format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nworkers: 1\ndata_plane: {plane}\n\
             models:\n  - name: m\n    stable: {{ endpoints: [\"{}\"] }}\n\
             \x20   candidate: {{ endpoints: [\"{shadow}\"] }}\n    weight: 0%\n\
             \x20   shadow: {{ sample: 100%, saturated_sample: 100% }}\n",
            stable.url()
        );
        let gw = Gateway::start(&yaml);
        small_chat(&client(), &gw).await;
        close.add_permits(1);
        let failed = r#"rollgate_proxy_shadow_dropped_total{model="m",reason="upstream_error"}"#;
        let m = gw.wait_metric(failed, 1.0, SHADOW_DEADLINE).await;
        let aborted = r#"rollgate_proxy_shadow_dropped_total{model="m",reason="primary_aborted"}"#;
        assert_eq!(metric(&m, aborted), Some(0.0), "{plane}\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shadow_pair_is_scored_or_counted_as_unscored() {
    const TASKS: usize = 32;
    const EACH: usize = 10;
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let gw = Gateway::start(&shadow_config(
        &stable,
        &candidate,
        "{ sample: 100%, saturated_sample: 100% }",
    ));
    let url = gw.url("/v1/chat/completions");
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let (c, url) = (client(), url.clone());
        tasks.spawn(async move {
            for i in 0..EACH {
                let r = send(&c, &url, &[], chat("m", &format!("q{t}-{i}"), false)).await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("client task");
    }
    let n = (TASKS * EACH) as f64;
    let deadline = Instant::now() + SHADOW_DEADLINE;
    loop {
        let m = gw.metrics().await;
        let answered = metric(
            &m,
            r#"rollgate_proxy_requests_total{model="m",variant="shadow",status_class="2xx"}"#,
        )
        .unwrap_or(0.0);
        let scored = metric(&m, r#"rollgate_rollout_shadow_score_count{model="m"}"#).unwrap_or(0.0);
        let not_comparable = metric(
            &m,
            r#"rollgate_rollout_shadow_pairs_not_comparable_total{model="m"}"#,
        )
        .unwrap_or(0.0);
        let unscored = metric(&m, "rollgate_proxy_shadow_pairs_unscored_total").unwrap_or(0.0);
        if answered == n && scored + not_comparable + unscored == n {
            eprintln!(
                "pairs: scored {scored}, not comparable {not_comparable}, unscored {unscored}"
            );
            assert!(scored > 0.0, "{m}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shadow answers {answered} of {n}; pairs scored {scored} + not comparable \
             {not_comparable} + unscored {unscored} != {n}\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
