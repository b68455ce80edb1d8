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

/// A model whose name holds `/`, `:`, a space and non-ASCII: the admin API takes it
/// percent-encoded (or with a raw `/`) and `ctl` encodes it.
const ODD: &str = "meta-llama/Llama 3:8b-模型";
/// [`ODD`] as one encoded path segment.
const ODD_ENCODED: &str = "meta-llama%2FLlama%203%3A8b-%E6%A8%A1%E5%9E%8B";

/// [`ODD`]'s entry in `GET /rollouts` (`null` before the driver's first step).
async fn odd_rollout(gw: &Gateway) -> serde_json::Value {
    let all = get(&client(), &gw.admin_url("/rollouts")).await.json();
    all.as_array()
        .and_then(|all| all.iter().find(|s| s["model"] == ODD).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Polls (bounded) until [`ODD`]'s rollout status satisfies `done`.
async fn wait_odd(gw: &Gateway, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let s = odd_rollout(gw).await;
        if done(&s) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {s:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_named_with_slashes_and_spaces_is_pinned_paused_and_resumed() {
    let stable = start_sim("stable", ODD, |_| {}).await;
    let candidate = start_sim("candidate", ODD, |_| {}).await;
    let dir = temp_dir("ctl-odd-name");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let rollout = "    rollout:\n      steps: [ {weight: 10%, for: 10m} ]\n      min_samples: 10\n";
    let top = format!(
        "admin: {{ listen: 127.0.0.1:0, token_file: {token:?}, audit_log: {:?} }}\n",
        dir.join("audit.log")
    );
    let yaml = config(&stable, Some(&candidate), rollout, &top)
        .replace("admin: { listen: 127.0.0.1:0 }\n", "")
        .replace("  - name: m\n", &format!("  - name: {ODD:?}\n"));
    let gw = Gateway::start(&yaml);
    wait_odd(&gw, "in Canary", |s| s["phase"] == "Canary").await;
    let post = |path: String, body: &'static str| {
        let gw = &gw;
        async move { crate::breakglass::call(gw, "POST", &path, Some("s3cret"), None, body).await }
    };
    let reason = r#"{"reason":"qa"}"#;

    // Through `ctl`, which encodes the name.
    let (code, out) = ctl(
        gw.admin,
        Some(&token),
        &["pin", ODD, "40%", "--reason", "qa"],
    );
    assert_eq!(code, 0, "{out}");
    wait_odd(&gw, "pinned", |s| s["pinned"] == "40%").await;
    let (code, out) = ctl(gw.admin, Some(&token), &["unpin", ODD, "--reason", "qa"]);
    assert_eq!(code, 0, "{out}");
    wait_odd(&gw, "unpinned", |s| s["pinned"].is_null()).await;
    let (code, out) = ctl(gw.admin, Some(&token), &["pause", ODD, "--reason", "qa"]);
    assert_eq!(code, 0, "{out}");
    wait_odd(&gw, "paused", |s| !s["paused"].is_null()).await;
    let (code, out) = ctl(gw.admin, Some(&token), &["resume", ODD, "--reason", "qa"]);
    assert_eq!(code, 0, "{out}");
    wait_odd(&gw, "resumed", |s| s["paused"].is_null()).await;

    // By hand: the name encoded, or with its `/` left raw.
    let raw_slash = "meta-llama/Llama%203%3A8b-%E6%A8%A1%E5%9E%8B";
    for model in [ODD_ENCODED, raw_slash] {
        let r = post(
            format!("/rollouts/{model}/pin"),
            r#"{"reason":"qa","weight":"30%"}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        wait_odd(&gw, "pinned by hand", |s| s["pinned"] == "30%").await;
        let r = post(format!("/rollouts/{model}/unpin"), reason).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let r = post(format!("/rollouts/{model}/pause"), reason).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        wait_odd(&gw, "paused by hand", |s| !s["paused"].is_null()).await;
        let r = post(format!("/rollouts/{model}/resume"), reason).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        wait_odd(&gw, "resumed by hand", |s| s["paused"].is_null()).await;

        for prefix in ["/status/models/", "/gitops/argo-rollouts/"] {
            let r = get(&client(), &gw.admin_url(&format!("{prefix}{model}"))).await;
            assert_eq!(r.status, 200, "{prefix}{model}: {}", r.text());
        }
        let s = get(&client(), &gw.admin_url(&format!("/status/models/{model}")))
            .await
            .json();
        assert_eq!(s["phase"], "Canary", "{s:#}");
    }

    // Errors name the decoded model; a broken escape is a 400 that says so.
    let r = post("/rollouts/org%2Fnope%3Atag/pause".to_owned(), reason).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"], "no rollout for model `org/nope:tag`");
    let r = get(&client(), &gw.admin_url("/status/models/org%2Fnope")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("no model `org/nope`"), "{}", r.text());
    for path in ["/rollouts/meta-llama%2/pause", "/rollouts/%FF/pause"] {
        let r = post(path.to_owned(), reason).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().contains("percent-"), "{path}: {}", r.text());
    }
    for path in ["/status/models/meta%zz", "/gitops/argo-rollouts/%C3"] {
        let r = get(&client(), &gw.admin_url(path)).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().contains("percent-"), "{path}: {}", r.text());
    }

    // The audit log names the model as configured.
    let audit = std::fs::read_to_string(dir.join("audit.log")).expect("audit log");
    let models: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("audit line"))
        .filter_map(|a| a["model"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(models.len(), 12, "{audit}");
    assert!(models.iter().all(|m| m == ODD), "{audit}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `rollgate ctl status | true`: a reader that leaves early ends ctl's output quietly (exit
/// 0), not with a broken-pipe panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_output_into_a_closed_pipe_is_not_a_panic() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let gw = Gateway::start(&config(&stable, None, "", ""));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} ctl --admin http://{} status | true",
            env!("CARGO_BIN_EXE_rollgate"),
            gw.admin
        ))
        .env_remove("ROLLGATE_ADMIN_TOKEN")
        .output()
        .expect("run rollgate ctl | head");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
    drop(gw);
    stable.shutdown().await;
}

/// Without a token ctl says how to give one (no std error tail); with an empty token file it
/// names the file and sends nothing (the gateway's 401 would not say the file was empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_empty_token_is_named_before_any_request() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = listener.local_addr().expect("addr");
    let (code, out) = ctl(admin, None, &["pin", "m", "40%", "--reason", "qa"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.trim_end()
            .ends_with("no token: pass --token-file or set ROLLGATE_ADMIN_TOKEN"),
        "{out}"
    );
    assert!(!out.contains("environment variable"), "{out}");

    let dir = temp_dir("ctl-empty-token");
    let empty = dir.join("token");
    std::fs::write(&empty, "\n").expect("token");
    for args in [&["pin", "m", "40%", "--reason", "qa"][..], &["status"][..]] {
        let (code, out) = ctl(admin, Some(&empty), args);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(
            out.contains(&format!("token file {} is empty", empty.display())),
            "{args:?}: {out}"
        );
    }
    let connected =
        tokio::time::timeout(std::time::Duration::from_millis(100), listener.accept()).await;
    assert!(connected.is_err(), "ctl sent a request with an empty token");
    std::fs::remove_dir_all(&dir).ok();
}
