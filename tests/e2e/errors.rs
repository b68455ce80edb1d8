//! Acceptance 5: bad input gets an OpenAI-shaped error; the process never panics and keeps
//! serving.

use std::io::{Read, Write};
use std::time::Duration;

use crate::support::*;

fn error_code(r: &Reply) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_gateway_keeps_serving() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let gw = Gateway::start(&config(&stable, None, "", "limits: { max_body: 1MiB }\n"));
    let c = client();
    let url = gw.url("/v1/chat/completions");

    let r = send(&c, &url, &[], chat("nope", "hi", false)).await;
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "model_not_found");
    // The gateway's own answers are dated, like every origin server's (RFC 9110 6.6.1).
    let date = r.header("date").unwrap_or_default();
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date:?}");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    // Malformed before the model: the gateway cannot route it and says so.
    let r = send(&c, &url, &[], r#"{"messages": [}, "model": "m"}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(error_code(&r), "invalid_json", "{}", r.text());
    // Malformed after the model: routed, and the model server's own 400 comes back.
    let r = send(&c, &url, &[], r#"{"model": "m", "messages": [}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let r = send(&c, &url, &[], r#"{"messages": []}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(error_code(&r), "model_not_specified");

    let r = send(
        &c,
        &url,
        &[("x-gateway-model-name", "other")],
        chat("m", "hi", false),
    )
    .await;
    assert_eq!(r.status, 404, "routing header wins over the body");

    let big = "a".repeat(100 * 1024);
    let r = send(&c, &url, &[("x-big", &big)], chat("m", "hi", false)).await;
    assert_eq!(r.status, 431);

    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2 << 20)
    );
    let r = send(&c, &url, &[], body).await;
    assert_eq!(r.status, 413);
    assert_eq!(error_code(&r), "request_too_large");

    // Garbage bytes on a raw connection: an HTTP error, then the connection closes.
    let mut raw = std::net::TcpStream::connect(gw.data).expect("connect");
    raw.write_all(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    // A reset after the error response is fine; what was read is what counts.
    let _ = raw.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // Still serving, and never panicked.
    let r = send(&c, &url, &[], chat("m", "hi", false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"rollgate_proxy_rejected_total{reason="unknown_model"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"rollgate_proxy_rejected_total{reason="body_too_large"}"#
        ),
        Some(1.0)
    );
    assert!(!gw.logs().contains("panicked"), "{}", gw.logs());
}

/// Sends `bytes` on a fresh connection and reads until the gateway closes it.
fn raw_answer(gw: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut raw = std::net::TcpStream::connect(gw).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    raw.write_all(bytes).expect("write");
    let mut answer = Vec::new();
    // A reset after the error response is fine; what was read is what counts.
    let _ = raw.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_http_framing_is_named_as_such_not_as_bad_json() {
    let stable = start_sim("stable", "m", |_| {}).await;
    // The fast path answers framing errors itself; hyper's server answers them with a bare 400
    // (a limit the README states).
    let gw = Gateway::start(&config_on("fast", &stable));
    let cases: [(&str, &[u8]); 3] = [
        ("a request line that is not HTTP", b"GARBAGE\r\n\r\n"),
        (
            "a chunk size that is not hex",
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              transfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        ),
        (
            "two different lengths",
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\
              content-length: 3\r\n\r\n{}",
        ),
    ];
    for (what, bytes) in cases {
        let answer = raw_answer(gw.data, bytes);
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        let body = &answer[answer.find("\r\n\r\n").map_or(0, |i| i + 4)..];
        let json: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {answer}"));
        assert_eq!(json["error"]["code"], "invalid_request", "{what}: {body}");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("Malformed request: "),
            "{what}: {message}"
        );
    }
    // A body that is not JSON is still `invalid_json`.
    let c = client();
    let r = send(&c, &gw.url("/v1/chat/completions"), &[], "{nope").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(error_code(&r), "invalid_json", "{}", r.text());
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"rollgate_proxy_rejected_total{reason="malformed"}"#
        ),
        Some(4.0)
    );
}

/// An upstream that answers 413 as soon as it has a request head and closes without reading
/// the body, as a model server with a body limit may. Returns its URL.
async fn answers_before_the_body() -> String {
    use tokio::io::AsyncWriteExt;
    let (listener, url) = raw_upstream().await;
    tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !read_request_head(&mut io).await {
                    return;
                }
                let body = r#"{"error":{"message":"prompt too long for this server","type":"invalid_request_error","code":"too_long"}}"#;
                let resp = format!(
                    "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = io.write_all(resp.as_bytes()).await;
                // Dropped with the body unread: the kernel resets the connection.
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answer_that_comes_before_the_whole_body_reaches_the_client() {
    let up = answers_before_the_body().await;
    // The fast path only: hyper's client reports the failed body write instead of the answer
    // (a limit the README states). With `Expect: 100-continue` too, which the fast path
    // answers itself.
    let gw = Gateway::start(&fast_config(&up, ""));
    let dir = temp_dir("early-answer");
    // 8 MiB: far more than the socket buffers hold, so the gateway is still sending when the
    // upstream's reset arrives.
    let file = big_chat_file(&dir, 8);
    for how in [Upload::Plain, Upload::Expect] {
        let (status, body, stderr) = curl_upload(
            &gw.url("/v1/chat/completions"),
            &file,
            how,
            Duration::from_secs(60),
        )
        .await;
        assert!(
            status == 413 && body.contains("prompt too long for this server"),
            "{how:?}: the upstream's own answer, not a 502: {status} {body}\n{stderr}"
        );
    }
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"rollgate_proxy_requests_total{model="m",variant="stable",status_class="4xx"}"#
        ),
        Some(2.0),
        "{m}"
    );
    assert!(!gw.logs().contains("panicked"), "{}", gw.logs());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_lists_and_describes_its_models_on_both_planes() {
    let stable = start_sim("stable", "m", |_| {}).await;
    for plane in ["fast", "hyper"] {
        let gw = Gateway::start(&config_on(plane, &stable));
        let c = client();
        let list = get(&c, &gw.url("/v1/models")).await;
        assert_eq!(list.status, 200, "{plane}: {}", list.text());
        assert_eq!(list.json()["data"][0]["id"], "m", "{plane}");
        // `client.models.retrieve(id)`; a percent-encoded id is the same id.
        for path in ["/v1/models/m", "/v1/models/%6D"] {
            let one = get(&c, &gw.url(path)).await;
            assert_eq!(one.status, 200, "{plane} {path}: {}", one.text());
            assert_eq!(one.json()["id"], "m", "{plane} {path}");
            assert_eq!(one.json()["object"], "model", "{plane} {path}");
        }
        let none = get(&c, &gw.url("/v1/models/nope")).await;
        assert_eq!(none.status, 404, "{plane}: {}", none.text());
        assert_eq!(error_code(&none), "model_not_found", "{plane}");
        // An id that does not percent-decode is named as sent, not with the whole path.
        let bad = get(&c, &gw.url("/v1/models/bad%zz")).await;
        assert_eq!(bad.status, 404, "{plane}: {}", bad.text());
        let message = bad.json()["error"]["message"].to_string();
        assert!(
            message.contains("`bad%zz`") && !message.contains("/v1/models"),
            "{plane}: {message}"
        );
    }
}

/// A request whose body the client breaks after it went upstream (over `limits.max_body`, or a
/// bad chunk): the client's fault, answered 413 / 400, and none of the backend's. It must not
/// count as the candidate's error (a healthy canary was rolled back by clients' bad uploads)
/// nor against its endpoint's health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_client_breaks_mid_request_is_not_the_backends_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for plane in ["fast", "hyper"] {
        let stable = start_sim("stable", "m", |_| {}).await;
        let cand = start_sim("candidate", "m", |_| {}).await;
        let top = format!("data_plane: {plane}\nlimits: {{ max_body: 4KiB }}\n");
        let gw = Gateway::start(&config(&stable, Some(&cand), "    weight: 100%\n", &top));
        let first = br#"{"model":"m","messages":[{"role":"user","content":"hello"#;
        let cases: [(&[u8], &str); 2] = [
            // Four more KiB: over the limit once streaming upstream.
            (b"1000\r\n", "413"),
            // Not a chunk size.
            (b"zz\r\nhello\r\n", "400"),
        ];
        for (rest, want) in cases {
            let mut io = tokio::net::TcpStream::connect(gw.data)
                .await
                .expect("connect");
            let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n\
                        content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            let mut req = head.as_bytes().to_vec();
            req.extend_from_slice(format!("{:x}\r\n", first.len()).as_bytes());
            req.extend_from_slice(first);
            req.extend_from_slice(b"\r\n");
            io.write_all(&req).await.expect("head");
            // The rest comes once the request is on its way to the candidate.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut more = rest.to_vec();
            if rest.starts_with(b"1000") {
                more.extend_from_slice(&[b'x'; 4096]);
                more.extend_from_slice(b"\r\n0\r\n\r\n");
            }
            let _ = io.write_all(&more).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut answer)).await;
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {want}")),
                "{plane}: {answer}"
            );
        }
        let m = gw.metrics().await;
        let candidate = |class: &str| {
            metric(
                &m,
                &format!(
                    "rollgate_proxy_requests_total{{model=\"m\",variant=\"candidate\",status_class=\"{class}\"}}"
                ),
            )
        };
        assert_eq!(candidate("error"), Some(0.0), "{plane}\n{m}");
        assert_eq!(candidate("4xx"), Some(2.0), "{plane}\n{m}");
        let samples = metric(
            &m,
            "rollgate_proxy_request_duration_seconds_count{model=\"m\",variant=\"candidate\"}",
        );
        assert_eq!(
            samples.unwrap_or(0.0),
            0.0,
            "{plane}: no latency sample from the client's upload\n{m}"
        );
        drop(gw);
        stable.shutdown().await;
        cand.shutdown().await;
    }
}

/// `"model": 5` is the client's mistake, named as such (`param: model`), on both planes; it is
/// not taken as a body without a model, which would route it to the default model. `null` is
/// no model (the default model answers), and `""` a name no model has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_is_not_a_string_is_named_on_both_planes() {
    let stable = start_sim("stable", "m", |_| {}).await;
    for plane in ["fast", "hyper"] {
        let top = format!("data_plane: {plane}\n");
        let gw = Gateway::start(&config(&stable, None, "    default: true\n", &top));
        let c = client();
        let url = gw.url("/v1/chat/completions");
        for (body, kind) in [
            (r#"{"model": 5, "messages": []}"#, "a number"),
            (r#"{"messages": [], "model": ["m"]}"#, "an array"),
            (r#"{"model": true}"#, "a boolean"),
        ] {
            let r = send(&c, &url, &[], body).await;
            assert_eq!(r.status, 400, "{plane} {body}: {}", r.text());
            let error = &r.json()["error"];
            assert_eq!(error["param"], "model", "{plane} {body}: {error}");
            assert_eq!(error["code"], "invalid_type", "{plane} {body}: {error}");
            assert_eq!(error["type"], "invalid_request_error", "{plane} {body}");
            let message = error["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("`model`")
                    && message.contains("expected a string")
                    && message.contains(kind),
                "{plane} {body}: {message}"
            );
        }
        let hi = r#""messages": [{"role": "user", "content": "hi"}]"#;
        let r = send(&c, &url, &[], format!(r#"{{"model": null, {hi}}}"#)).await;
        assert_eq!(r.status, 200, "{plane}: {}", r.text());
        let r = send(&c, &url, &[], format!(r#"{{"model": "", {hi}}}"#)).await;
        assert_eq!(r.status, 404, "{plane}: {}", r.text());
        assert_eq!(error_code(&r), "model_not_found", "{plane}");
        let m = gw.metrics().await;
        let malformed = metric(&m, r#"rollgate_proxy_rejected_total{reason="malformed"}"#);
        assert_eq!(malformed, Some(3.0), "{plane}\n{m}");
    }
    stable.shutdown().await;
}
