//! HTTP/2 (h2c prior knowledge) and TLS (h2 and HTTP/1.1 by ALPN) on the data plane, with real
//! clients: hyper's HTTP/2 client and curl.

use std::process::Command;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_and_streams_are_proxied() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let gw = Gateway::start(&config(&stable, None, "", ""));
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for stream in [false, true] {
        let req = hyper::Request::post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(chat("m", "over h2", stream))))
            .expect("request");
        let resp = h2.request(req).await.expect("h2 response");
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-sim-name"], "stable");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&body);
        if stream {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            assert!(text.contains("chat.completion"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_h2_and_http1_by_alpn() {
    let dir = temp_dir("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed (scripts/install-test-deps)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let stable = start_sim("stable", "m", |_| {}).await;
    let tls = format!(
        "tls: {{ cert: {}, key: {} }}\n",
        cert.display(),
        key.display()
    );
    let gw = Gateway::start(&config(&stable, None, "", &tls));
    // The printed URL is one a client can use.
    assert!(
        gw.ready.contains(&format!("data=https://{}", gw.data)),
        "{}",
        gw.ready
    );
    let url = format!("https://localhost:{}/v1/chat/completions", gw.data.port());
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = Command::new("curl")
            .args([
                "-sk",
                flag,
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                "-H",
            ])
            .args([
                "content-type: application/json",
                "-d",
                &chat("m", "over tls", false),
                &url,
            ])
            .output()
            .expect("curl must be installed (scripts/install-test-deps)");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{version} 200")
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_expects_100_continue_is_answered_at_once_on_both_planes() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let dir = temp_dir("expect-continue");
    // 2 MiB: curl waits for `100 Continue` before sending it (for up to 10 s, as told).
    let file = big_chat_file(&dir, 2);
    for plane in ["fast", "hyper"] {
        let gw = Gateway::start(&config_on(plane, &stable));
        let started = std::time::Instant::now();
        let (status, body, stderr) = curl_upload(
            &gw.url("/v1/chat/completions"),
            &file,
            Upload::Expect,
            std::time::Duration::from_secs(30),
        )
        .await;
        let took = started.elapsed();
        assert_eq!(status, 200, "{plane}: {body}\n{stderr}");
        assert!(body.contains("chat.completion"), "{plane}: {body}");
        // Without an interim answer curl would have waited the whole 10 s first.
        assert!(
            took < std::time::Duration::from_secs(5),
            "{plane}: {took:?}: the 100 Continue did not come"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
