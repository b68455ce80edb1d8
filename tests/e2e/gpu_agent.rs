//! `rollgate gpu-agent` on a machine without a GPU: serves "no GPU", exits 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_agent_without_a_gpu_reports_it_and_exits_0_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args([
            "gpu-agent",
            "--listen",
            "127.0.0.1:0",
            "--nvml-lib",
            "/nonexistent/libnvidia-ml.so.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gpu-agent");
    let stdout = child.stdout.take().expect("stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .next()
        .and_then(Result::ok)
        .expect("ready line");
    let base = ready
        .trim_start_matches("rollgate gpu-agent ready: ")
        .to_owned();
    let c = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let gpus = loop {
        let g = get(&c, &format!("{base}/gpus")).await.json();
        if !g["refreshed_at"].is_null() || tokio::time::Instant::now() > deadline {
            break g;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(gpus["available"], false, "{gpus}");
    assert!(
        gpus["reason"].as_str().unwrap_or_default().contains("NVML"),
        "{gpus}"
    );
    let metrics = get(&c, &format!("{base}/metrics")).await.text();
    assert_eq!(
        metric(&metrics, "rollgate_gpu_available"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(get(&c, &format!("{base}/healthz")).await.status, 200);
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-s", "TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gpu-agent did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
