//! `rollgate ctl`: the operator CLI against a running gateway.

use std::process::Command;

use crate::support::*;

fn ctl(
    admin: std::net::SocketAddr,
    token: Option<&std::path::Path>,
    args: &[&str],
) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollgate"));
    cmd.args([
        "ctl",
        "--admin",
        &format!("http://{admin}"),
        "--actor",
        "ci-bot",
    ]);
    if let Some(t) = token {
        cmd.arg("--token-file").arg(t);
    }
    let out = cmd
        .args(args)
        .env_remove("ROLLGATE_ADMIN_TOKEN")
        .output()
        .expect("run rollgate ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_shows_status_and_pins_with_a_token_only() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = temp_dir("ctl");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let rollout = "    rollout:\n      steps: [ {weight: 10%, for: 10m} ]\n      min_samples: 10\n";
    let top = format!(
        "admin: {{ listen: 127.0.0.1:0, token_file: {token:?} }}\nstate_dir: {:?}\n",
        dir.join("state")
    );
    let yaml = config(&stable, Some(&candidate), rollout, &top)
        .replace("admin: { listen: 127.0.0.1:0 }\n", "");
    let gw = Gateway::start(&yaml);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (code, out) = ctl(gw.admin, None, &["status"]);
        assert_eq!(code, 0, "{out}");
        if out.contains("\"Canary\"") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached Canary: {out}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (code, out) = ctl(gw.admin, None, &["pin", "m", "40%", "--reason", "no token"]);
    assert_ne!(code, 0, "pinning without a token must fail: {out}");
    assert!(out.contains("token"), "{out}");
    let (code, out) = ctl(
        gw.admin,
        Some(&token),
        &["pin", "m", "40%", "--reason", "load test"],
    );
    assert_eq!(code, 0, "{out}");
    let status = get(&client(), &gw.admin_url("/rollouts")).await.json();
    assert_eq!(status[0]["weight"], "40%", "{status}");
    assert_eq!(status[0]["pinned"], "40%");
    let audit = std::fs::read_to_string(dir.join("state/audit.log")).expect("audit log");
    assert!(
        audit.contains("\"actor\":\"ci-bot\"") && audit.contains("\"action\":\"pin\""),
        "{audit}"
    );
    assert!(
        !audit.contains("s3cret"),
        "the token never reaches the audit log"
    );
    std::fs::remove_dir_all(&dir).ok();
}
