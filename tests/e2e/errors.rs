//! Acceptance 5: bad input gets an OpenAI-shaped error; the process never panics and keeps
//! serving.

use std::io::{Read, Write};

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
