//! `admin.protect_reads`: the real binary refuses reads without a token, answers Prometheus's
//! and `rollgate ctl`'s, keeps `/healthz` open, and treats the key as read at start.

use std::path::Path;
use std::process::Command;

use rollgate_loadtest::sim::Sim;

use crate::support::*;

/// `GET url` with curl, with a bearer token as Prometheus sends it: the status code, the body.
fn curl(url: &str, token: Option<&str>) -> (String, String) {
    curl_as("GET", url, token)
}

fn curl_post(url: &str, token: Option<&str>) -> (String, String) {
    curl_as("POST", url, token)
}

fn curl_as(method: &str, url: &str, token: Option<&str>) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-w", "\n%{http_code}", url]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status code line");
    (code.to_owned(), body.to_owned())
}

/// `rollgate ctl` with `args`, its token from `ROLLGATE_ADMIN_TOKEN` when `env_token` is set:
/// exit code and output.
fn ctl(admin: std::net::SocketAddr, env_token: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollgate"));
    cmd.args(["ctl", "--admin", &admin.to_string()])
        .args(args)
        .env_remove("ROLLGATE_ADMIN_TOKEN");
    if let Some(t) = env_token {
        cmd.env("ROLLGATE_ADMIN_TOKEN", t);
    }
    let out = cmd.output().expect("run rollgate ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// One model on `stable`; an `admin` token and a `read`-only one named `prometheus`.
fn protected(stable: &Sim, dir: &Path, protect_reads: bool) -> String {
    let top = format!(
        "admin:\n  listen: 127.0.0.1:0\n  protect_reads: {protect_reads}\n  token_file: {:?}\n  \
         tokens: [ {{ name: prometheus, file: {:?}, roles: [read] }} ]\n",
        dir.join("admin-token"),
        dir.join("read-token"),
    );
    config(stable, None, "", &top).replace("admin: { listen: 127.0.0.1:0 }\n", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_reads_answer_the_read_token_that_prometheus_and_ctl_send() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let dir = temp_dir("protect-reads");
    std::fs::write(dir.join("admin-token"), "admin-s3cret\n").expect("token");
    std::fs::write(dir.join("read-token"), "scrape-s3cret\n").expect("token");
    let gw = Gateway::start(&protected(&stable, &dir, true));
    let metrics = gw.admin_url("/metrics");

    let (code, body) = curl(&metrics, None);
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("missing or wrong bearer token"), "{body}");
    assert_eq!(curl(&metrics, Some("scrape-s3cretx")).0, "401");
    let (code, body) = curl(&metrics, Some("scrape-s3cret"));
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("rollgate_config_info{revision="), "{body}");
    assert_eq!(
        curl(&gw.admin_url("/healthz"), None).0,
        "200",
        "probes stay open"
    );

    let (code, out) = ctl(gw.admin, None, &["status"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("401") && out.contains("--token-file"), "{out}");
    let (code, out) = ctl(
        gw.admin,
        None,
        &[
            "--token-file",
            &dir.join("read-token").to_string_lossy(),
            "status",
            "m",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"model\": \"m\""), "{out}");
    let (code, out) = ctl(gw.admin, Some("scrape-s3cret"), &["status"]);
    assert_eq!(code, 0, "{out}");

    // Read at start: turning it off takes a restart, and until then reads stay closed.
    gw.write_config(&protected(&stable, &dir, false));
    assert_eq!(curl_post(&gw.admin_url("/reload"), None).0, "401");
    // `success`, or `unchanged` when the file watcher applied the new file first.
    let (code, body) = curl_post(&gw.admin_url("/reload"), Some("scrape-s3cret"));
    assert_eq!(code, "200", "{body}");
    assert_eq!(
        curl(&metrics, None).0,
        "401",
        "still closed until a restart"
    );
    let (code, status) = curl(&gw.admin_url("/status"), Some("admin-s3cret"));
    assert_eq!(code, "200", "{status}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let pending = "admin.protect_reads: true -> false (restart required)";
    assert_eq!(status["restart_pending"], serde_json::json!([pending]));
    assert_eq!(
        status["last_reload"]["changes"],
        serde_json::json!([pending])
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn protected_reads_without_any_token_are_refused_by_validate() {
    let dir = temp_dir("protect-reads-validate");
    let file = dir.join("rollgate.yaml");
    std::fs::write(
        &file,
        "listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0, protect_reads: true }\nmodels:\n  \
         - name: m\n    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n",
    )
    .expect("write");
    let validate = |env_token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollgate"));
        cmd.arg("validate")
            .arg(&file)
            .env_remove("ROLLGATE_ADMIN_TOKEN");
        if let Some(t) = env_token {
            cmd.env("ROLLGATE_ADMIN_TOKEN", t);
        }
        let out = cmd.output().expect("run rollgate validate");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap_or(-1), err)
    };
    let (code, err) = validate(None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("admin.protect_reads: no admin token"), "{err}");
    // The deploy manifests hand the token over as ROLLGATE_ADMIN_TOKEN.
    let (code, err) = validate(Some("s3cret"));
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
