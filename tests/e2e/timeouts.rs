//! Limits and timeouts a user relies on: slowloris heads, upstream response and idle timeouts,
//! and passive ejection of a dead endpoint without failing a request.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rollgate_loadtest::sim::{Faults, Sim};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_head_is_cut_after_the_header_timeout() {
    let (_stable, gw) = with_header_timeout_500ms().await;
    let mut raw = std::net::TcpStream::connect(gw.data).expect("connect");
    raw.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .expect("partial head");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    assert_closed_after_half_a_second(&mut raw, Instant::now());
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeouts_answer_504_and_count_idle_streams() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let top = "upstream: { response_timeout: 300ms, idle_timeout: 300ms }\n";
    let gw = Gateway::start(&config(&stable, None, "", top));
    let c = client();
    let url = gw.url("/v1/chat/completions");

    stable.set_faults(Faults {
        stall: Duration::from_secs(2),
        ..Faults::default()
    });
    let r = send(&c, &url, &[], chat("m", "slow head", false)).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");

    stable.set_faults(Faults {
        stall_first_event: Duration::from_secs(2),
        ..Faults::default()
    });
    let req = hyper::Request::post(&url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(chat(
            "m",
            "idle stream",
            true,
        ))))
        .expect("request");
    let resp = c.request(req).await.expect("head arrives");
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(body.is_err(), "the stream must be cut, not completed");
    let series =
        r#"rollgate_proxy_stream_failures_total{model="m",variant="stable",reason="idle_timeout"}"#;
    gw.wait_metric(series, 1.0, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_ejected_and_no_request_fails() {
    let stable = start_sim("stable", "m", |_| {}).await;
    // A port with nothing listening: bind, note the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nworkers: 1\nejection: {{ consecutive_failures: 2, base: 30s }}\nmodels:\n  - name: m\n    stable: {{ endpoints: [\"http://{dead}\", \"{}\"] }}\n",
        stable.url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    for i in 0..50 {
        let r = send(
            &c,
            &gw.url("/v1/chat/completions"),
            &[],
            chat("m", &format!("q{i}"), false),
        )
        .await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let series = r#"rollgate_proxy_endpoint_ejections_total{model="m",role="stable"}"#;
    gw.wait_metric(series, 1.0, Duration::from_secs(3)).await;
    assert_eq!(
        stable.requests_total(),
        50,
        "every request reached the live endpoint"
    );
}

/// An upstream that takes a request head, then neither reads the body nor answers, holding the
/// connection open. Returns its URL.
async fn stops_reading_after_the_head() -> String {
    let (listener, url) = raw_upstream().await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut io, _)) = listener.accept().await {
            if read_request_head(&mut io).await {
                held.push(io);
            }
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_reading_the_body_fails_the_request_after_the_idle_timeout() {
    let up = stops_reading_after_the_head().await;
    let gw = Gateway::start(&fast_config(
        &up,
        "upstream: { idle_timeout: 1s, response_timeout: 1s }\n",
    ));
    let dir = temp_dir("stalled-body");
    // 8 MiB: more than the upstream's receive window and the gateway's send buffer hold.
    let file = big_chat_file(&dir, 8);
    let started = Instant::now();
    let (status, body, stderr) = curl_upload(
        &gw.url("/v1/chat/completions"),
        &file,
        Upload::Plain,
        Duration::from_secs(20),
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(status, 502, "{body}\n{stderr}");
    assert!(body.contains("\"type\":\"server_error\""), "{body}");
    // idle_timeout for the stalled write, then response_timeout for an answer that never comes.
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    assert!(!gw.logs().contains("panicked"), "{}", gw.logs());
    std::fs::remove_dir_all(&dir).ok();
}

/// Reads one response with a `content-length` body from a raw connection; `None` when the
/// connection closed first.
fn read_response(raw: &mut std::net::TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match raw.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    raw.read_exact(&mut body).ok()?;
    Some(head)
}

/// The fast path keeps a connection's timer at the earliest deadline still ahead and lets it
/// fire early (re-arming it) instead of moving it later per request: a connection whose first
/// idle deadline has passed while it stayed busy must stay open, and must still be closed one
/// `header_read_timeout` after its last answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_outlives_its_first_idle_deadline_and_closes_after_its_last() {
    let (_stable, gw) = with_header_timeout_500ms().await;
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":1}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    );
    let mut raw = std::net::TcpStream::connect(gw.data).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    // Requests 300 ms apart: the third comes 600 ms after the first answer, past the idle
    // deadline the first one armed.
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        raw.write_all(request.as_bytes()).expect("send");
        let head = read_response(&mut raw).unwrap_or_else(|| panic!("request {i}: closed"));
        assert!(head.starts_with("http/1.1 200"), "request {i}: {head}");
    }
    assert_closed_after_half_a_second(&mut raw, Instant::now());
}

async fn with_header_timeout_500ms() -> (Sim, Gateway) {
    let stable = start_sim("stable", "m", |_| {}).await;
    let gw = Gateway::start(&config(
        &stable,
        None,
        "",
        "limits: { header_read_timeout: 500ms }\n",
    ));
    (stable, gw)
}

/// Waits for the gateway to close `raw` and checks that it did so about 500 ms after `since`.
fn assert_closed_after_half_a_second(raw: &mut std::net::TcpStream, since: Instant) {
    let mut buf = Vec::new();
    // A reset counts as closed too; what matters is that the server gave up, and when.
    let _ = raw.read_to_end(&mut buf);
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
}
