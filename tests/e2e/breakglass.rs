//! Break-glass on the source of truth: token roles, a two-person sync pause, a paused source
//! that is not applied until resumed, pins shown as drift that survive reloads, and the live
//! state exported as a config file that validates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rollgate_loadtest::sim::Sim;
use serde_json::Value;

use crate::support::*;

/// Named tokens: (name, secret, roles).
const TOKENS: &[(&str, &str, &str)] = &[
    ("alice", "alice-secret", "[operate, sync]"),
    ("bob", "bob-secret", "[sync]"),
    ("ci", "ci-secret", "[read]"),
    ("ops", "ops-secret", "[operate]"),
];
const ROOT: &str = "root-secret";

/// Writes every token file into `dir` and returns the `admin:` section for them.
fn admin_section(dir: &Path, approvers: u32) -> String {
    std::fs::write(dir.join("root"), format!("{ROOT}\n")).expect("root token");
    let mut tokens = String::new();
    for (name, secret, roles) in TOKENS {
        let file = dir.join(name);
        std::fs::write(&file, format!("{secret}\n")).expect("token file");
        tokens.push_str(&format!(
            "    - {{ name: {name}, file: {file:?}, roles: {roles} }}\n"
        ));
    }
    format!(
        "admin:\n  listen: 127.0.0.1:0\n  token_file: {:?}\n  audit_log: {:?}\n  sync_pause_approvers: {approvers}\n  tokens:\n{tokens}",
        dir.join("root"),
        dir.join("audit.log"),
    )
}

/// `config()` with our own `admin:` section instead of the default one.
fn with_admin(yaml: &str, admin: &str) -> String {
    yaml.replace("admin: { listen: 127.0.0.1:0 }\n", admin)
}

/// Model `m` on `stable`, `candidate` at `weight`, with the `admin:` section given and `top`
/// top-level lines.
fn weighted(stable: &Sim, candidate: &Sim, admin: &str, weight: &str, top: &str) -> String {
    let model = format!("    weight: {weight}\n");
    with_admin(&config(stable, Some(candidate), &model, top), admin)
}

/// An admin request, with the operator token and a second approver's when given.
pub(crate) async fn call(
    gw: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    approver: Option<&str>,
    body: &str,
) -> Reply {
    call_as(gw, None, method, path, token, approver, body).await
}

/// [`call`] with an `x-rollgate-actor` header when `actor` is given.
async fn call_as(
    gw: &Gateway,
    actor: Option<&str>,
    method: &str,
    path: &str,
    token: Option<&str>,
    approver: Option<&str>,
    body: &str,
) -> Reply {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(gw.admin_url(path));
    if let Some(a) = actor {
        req = req.header("x-rollgate-actor", a);
    }
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(t) = approver {
        req = req.header("x-rollgate-approver", format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = client().request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

fn audit_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

/// `rollgate ctl --admin … [--token-file F] ARGS`.
pub(crate) fn ctl(gw: &Gateway, token_file: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollgate"));
    cmd.args(["ctl", "--admin", &gw.admin_url("")]);
    if let Some(t) = token_file {
        cmd.arg("--token-file").arg(t);
    }
    let out = cmd
        .args(args)
        .env_remove("ROLLGATE_ADMIN_TOKEN")
        .output()
        .expect("run rollgate ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_and_a_two_person_pause_holds_the_source_until_resumed() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = Scratch(temp_dir("breakglass-roles"));
    let dir = &dir.0;
    let admin = admin_section(dir, 2);
    let yaml = |weight: &str| weighted(&stable, &candidate, &admin, weight, "");
    let gw = Gateway::start(&yaml("10%"));
    let first = gw.status().await;
    assert_eq!(first["sync"]["status"], "Synced", "{first:#}");
    assert_eq!(first["sync"]["applied"], first["revision"]);
    assert_eq!(first["sync"]["desired"], first["revision"]);
    assert!(first["sync"]["source"]
        .as_str()
        .is_some_and(|s| s.starts_with("file ")));

    // 401 without a valid token; 403 with a token that lacks the role.
    let pause = r#"{"reason":"incident 42: bad merge"}"#;
    for (token, want) in [
        (None, 401),
        (Some("wrong"), 401),
        (Some("ci-secret"), 403),
        (Some("ops-secret"), 403),
    ] {
        let r = call(&gw, "POST", "/sync/pause", token, Some("bob-secret"), pause).await;
        assert_eq!(r.status, want, "pause with {token:?}: {}", r.text());
        let r = call(&gw, "POST", "/sync/resume", token, None, "").await;
        assert_eq!(r.status, want, "resume with {token:?}: {}", r.text());
    }
    let r = call(&gw, "POST", "/sync/pause", Some("ci-secret"), None, pause).await;
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("`sync` role")),
        "{}",
        r.text()
    );
    // A read-only token can neither run rollout commands nor pause; it can read the live state.
    let r = call(
        &gw,
        "POST",
        "/rollouts/m/pause",
        Some("ci-secret"),
        None,
        pause,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = call(&gw, "GET", "/live-config", None, None, "").await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = call(&gw, "GET", "/live-config", Some("ci-secret"), None, "").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Two approvers required: one token, the same token twice, or a non-sync approver fail.
    for (approver, why) in [
        (None, "second approver"),
        (Some("alice-secret"), "different token"),
        (Some("ci-secret"), "lacks the `sync` role"),
        (Some("wrong"), "missing or wrong"),
    ] {
        let r = call(
            &gw,
            "POST",
            "/sync/pause",
            Some("alice-secret"),
            approver,
            pause,
        )
        .await;
        assert_eq!(r.status, 403, "approver {approver:?}: {}", r.text());
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(why), "approver {approver:?}: {error}");
    }
    // One person is not two: the shared token named `alice` with alice's own token as approver,
    // or the shared token approving.
    for (token, actor, approver, why) in [
        (
            ROOT,
            Some("alice"),
            "alice-secret",
            "shared `admin` token cannot pause",
        ),
        (
            "alice-secret",
            None,
            ROOT,
            "shared `admin` token cannot approve",
        ),
    ] {
        let r = call_as(
            &gw,
            actor,
            "POST",
            "/sync/pause",
            Some(token),
            Some(approver),
            pause,
        )
        .await;
        assert_eq!(r.status, 403, "{why}: {}", r.text());
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(why), "{why}: {error}");
    }
    assert!(gw.status().await["sync"]["paused"].is_null());
    assert!(audit_lines(&dir.join("audit.log")).is_empty());

    // Two distinct sync tokens, through the CLI.
    let (code, out, err) = ctl(
        &gw,
        Some(&dir.join("alice")),
        &[
            "pause-sync",
            "--reason",
            "incident 42: bad merge",
            "--approver-token-file",
            dir.join("bob").to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let r = call(
        &gw,
        "POST",
        "/sync/pause",
        Some("bob-secret"),
        Some("alice-secret"),
        pause,
    )
    .await;
    assert_eq!(r.status, 409, "already paused: {}", r.text());

    // While paused a changed file is read (desired moves) but not applied, even on a reload.
    gw.write_config(&yaml("30%"));
    let outcome = gw.reload().await;
    assert_eq!(outcome["result"], "unchanged", "{outcome:#}");
    let s = gw.status().await;
    let sync = &s["sync"];
    assert_eq!(s["revision"], first["revision"], "{s:#}");
    assert_eq!(s["models"][0]["weight"], "10%");
    assert_eq!(sync["status"], "OutOfSync", "{sync:#}");
    assert_eq!(sync["applied"], first["revision"]);
    assert_ne!(sync["desired"], sync["applied"], "{sync:#}");
    assert_eq!(sync["paused"]["by"], "alice");
    assert_eq!(sync["paused"]["approver"], "bob");
    assert_eq!(sync["paused"]["reason"], "incident 42: bad merge");
    let reasons = sync["reasons"].to_string();
    assert!(
        reasons.contains("sync paused by alice (approved by bob)"),
        "{reasons}"
    );
    // The file watcher does not apply it either (it polls every second).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(gw.status().await["models"][0]["weight"], "10%");

    // Resume applies the source at once.
    let r = call(&gw, "POST", "/sync/resume", Some("bob-secret"), None, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = gw.status().await;
    assert_eq!(s["models"][0]["weight"], "30%", "{s:#}");
    assert_eq!(s["sync"]["status"], "Synced", "{:#}", s["sync"]);
    assert_eq!(s["sync"]["applied"], s["sync"]["desired"]);
    assert!(s["sync"]["paused"].is_null());

    let audit = audit_lines(&dir.join("audit.log"));
    let actions: Vec<&str> = audit.iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(actions, ["pause-sync", "resume-sync"], "{audit:#?}");
    assert_eq!(audit[0]["actor"], "alice", "{}", audit[0]);
    assert_eq!(audit[0]["approver"], "bob", "{}", audit[0]);
    assert_eq!(audit[0]["reason"], "incident 42: bad merge");
    assert_eq!(audit[1]["actor"], "bob", "{}", audit[1]);
    assert_eq!(audit[1]["was_paused"]["by"], "alice", "{}", audit[1]);
    assert_eq!(audit[1]["reload"]["result"], "success", "{}", audit[1]);
    let text = std::fs::read_to_string(dir.join("audit.log")).expect("audit");
    for (_, secret, _) in TOKENS {
        assert!(!text.contains(secret), "a token reached the audit log");
    }
}

/// The shared `admin` token takes the name in `x-rollgate-actor` (or `admin-token`) on the
/// sync endpoints as on the rollout commands; a named token stays itself whatever the header
/// says; the audit's `token` is always the token used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_endpoints_take_the_actor_as_the_rollout_commands_do() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = Scratch(temp_dir("breakglass-actor"));
    let dir = &dir.0;
    let admin = admin_section(dir, 1);
    let yaml = with_admin(
        &config(&stable, Some(&candidate), "    weight: 10%\n", ""),
        &admin,
    );
    let gw = Gateway::start(&yaml);
    let pause = r#"{"reason":"inc42"}"#;
    let paused_by = |s: &Value| {
        (
            s["sync"]["paused"]["by"].as_str().map(str::to_owned),
            s["sync"]["reasons"].to_string(),
        )
    };

    // The admin token with a name: carol pauses, dave resumes.
    let r = call_as(
        &gw,
        Some("carol"),
        "POST",
        "/sync/pause",
        Some(ROOT),
        None,
        pause,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["audit"]["actor"], "carol", "{}", r.text());
    // The desired revision must move for `/status` to give the pause as a reason.
    gw.write_config(&yaml.replace("weight: 10%", "weight: 20%"));
    assert_eq!(gw.reload().await["result"], "unchanged");
    let (by, reasons) = paused_by(&gw.status().await);
    assert_eq!(by.as_deref(), Some("carol"), "{reasons}");
    assert!(reasons.contains("sync paused by carol: inc42"), "{reasons}");
    let r = call_as(
        &gw,
        Some("dave"),
        "POST",
        "/sync/resume",
        Some(ROOT),
        None,
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The admin token without a name is `admin-token` (`ctl` sends `$USER` by default).
    let r = call(&gw, "POST", "/sync/pause", Some(ROOT), None, pause).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        paused_by(&gw.status().await).0.as_deref(),
        Some("admin-token")
    );
    let r = call(&gw, "POST", "/sync/resume", Some(ROOT), None, "").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // `ctl --actor` names the admin token's user.
    let root = dir.join("root");
    let (code, out, err) = ctl(
        &gw,
        Some(&root),
        &["--actor", "qa", "pause-sync", "--reason", "inc43"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(paused_by(&gw.status().await).0.as_deref(), Some("qa"));
    let (code, out, err) = ctl(&gw, Some(&root), &["--actor", "qa", "resume-sync"]);
    assert_eq!(code, 0, "{out}{err}");

    // A named token cannot be renamed by the header.
    let r = call_as(
        &gw,
        Some("carol"),
        "POST",
        "/sync/pause",
        Some("bob-secret"),
        None,
        pause,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(paused_by(&gw.status().await).0.as_deref(), Some("bob"));
    let r = call_as(
        &gw,
        Some("carol"),
        "POST",
        "/sync/resume",
        Some("bob-secret"),
        None,
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let audit = audit_lines(&dir.join("audit.log"));
    let who: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|a| {
            let f = |k: &str| a[k].as_str().unwrap_or("-");
            (f("action"), f("actor"), f("token"))
        })
        .collect();
    assert_eq!(
        who,
        [
            ("pause-sync", "carol", "admin"),
            ("resume-sync", "dave", "admin"),
            ("pause-sync", "admin-token", "admin"),
            ("resume-sync", "admin-token", "admin"),
            ("pause-sync", "qa", "admin"),
            ("resume-sync", "qa", "admin"),
            ("pause-sync", "bob", "bob"),
            ("resume-sync", "bob", "bob"),
        ],
        "{audit:#?}"
    );
    assert_eq!(audit[1]["was_paused"]["by"], "carol", "{}", audit[1]);
}

/// A model with a candidate and a one-step plan that holds its step for ten minutes.
fn rollout_yaml(stable: &Sim, candidate: &Sim, admin: &str, weight: &str, state: &Path) -> String {
    let plan = format!(
        "    weight: {weight}\n    rollout:\n      steps: [ {{weight: 10%, for: 10m}} ]\n      min_samples: 10\n"
    );
    with_admin(
        &config(
            stable,
            Some(candidate),
            &plan,
            &format!("state_dir: {state:?}\n"),
        ),
        admin,
    )
}

async fn wait_status(gw: &Gateway, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = gw.status().await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_is_drift_survives_a_reload_and_a_restart_and_export_live_carries_it() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = Scratch(temp_dir("breakglass-pin"));
    let dir = &dir.0;
    let admin = admin_section(dir, 1);
    let state = dir.join("state");
    let mut gw = Gateway::start(&rollout_yaml(&stable, &candidate, &admin, "0%", &state));

    // An automated rollout moving the weight is drift, but not out of sync.
    let s = wait_status(&gw, "in Canary", |s| {
        s["rollouts"][0]["phase"] == "Canary" && s["models"][0]["weight"] == "10%"
    })
    .await;
    let drift = &s["models"][0]["drift"][0];
    assert_eq!(drift["field"], "weight", "{s:#}");
    assert_eq!(drift["desired"], "0%");
    assert_eq!(drift["live"], "10%");
    assert_eq!(drift["reason"], "rollout in progress (Canary step 1)");
    assert_eq!(s["sync"]["status"], "Synced", "{:#}", s["sync"]);

    // A pin is out of sync, named with who and why.
    let r = call(
        &gw,
        "POST",
        "/rollouts/m/pin",
        Some("alice-secret"),
        None,
        r#"{"reason":"load test","weight":"40%"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = wait_status(&gw, "pinned", |s| s["models"][0]["weight"] == "40%").await;
    let drift = &s["models"][0]["drift"][0];
    assert_eq!(drift["reason"], "pinned by alice: load test", "{s:#}");
    assert_eq!(drift["live"], "40%");
    assert_eq!(s["sync"]["status"], "OutOfSync", "{:#}", s["sync"]);
    assert!(s["sync"]["reasons"]
        .to_string()
        .contains("model m: weight 40% live, 0% desired (pinned by alice: load test)"));

    // A changed config is applied; the pin still holds over it.
    let outcome = gw
        .apply_config(&rollout_yaml(&stable, &candidate, &admin, "5%", &state))
        .await;
    assert_eq!(outcome["result"], "success", "{outcome:#}");
    tokio::time::sleep(Duration::from_millis(1_500)).await; // a driver step over the new config
    let s = gw.status().await;
    assert_eq!(s["models"][0]["desired_weight"], "5%", "{s:#}");
    assert_eq!(s["models"][0]["weight"], "40%", "{s:#}");
    assert_eq!(s["rollouts"][0]["pinned"], "40%");
    let drift = &s["models"][0]["drift"][0];
    assert_eq!(
        (&drift["desired"], &drift["live"], &drift["reason"]),
        (
            &Value::from("5%"),
            &Value::from("40%"),
            &Value::from("pinned by alice: load test")
        ),
        "{s:#}"
    );

    // And over a restart, with its author (rebuilt from the audit log).
    gw.signal("TERM");
    let exit = gw.wait(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}; logs:\n{}", gw.logs());
    // The stopped gateway owns the config's temp dir until the end of the test.
    let stopped = gw;
    let gw = stopped.start_again();
    let s = gw.status().await;
    assert_eq!(s["models"][0]["weight"], "40%", "{s:#}");
    assert_eq!(
        s["models"][0]["drift"][0]["reason"], "pinned by alice: load test",
        "{s:#}"
    );

    // The way back: export the live state; it validates and carries the live weight.
    let (code, out, err) = ctl(&gw, None, &["export-live"]);
    assert_ne!(code, 0, "an export without a token must fail: {out}");
    assert!(err.contains("token"), "{err}");
    let exported = dir.join("live.yaml");
    let (code, out, err) = ctl(
        &gw,
        Some(&dir.join("ci")),
        &["export-live", "-o", exported.to_str().expect("utf-8 path")],
    );
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&exported).expect("exported file");
    assert!(
        text.starts_with("# rollgate live state, exported "),
        "{text}"
    );
    assert!(
        text.contains("#   model m: weight 40% (source says 5%): pinned by alice: load test"),
        "{text}"
    );
    let validate = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .arg("validate")
        .arg(&exported)
        .output()
        .expect("rollgate validate");
    assert!(
        validate.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&validate.stdout)
    );
    let config = rollgate_config::parse(&text).expect("exported config");
    assert_eq!(config.models[0].weight.to_string(), "40%");
    assert!(config.models[0].rollout.is_some(), "the plan is kept");
    let (code, stdout, err) = ctl(&gw, Some(&dir.join("ci")), &["export-live"]);
    assert_eq!(
        (code, stdout.contains("weight: 40%")),
        (0, true),
        "{stdout}{err}"
    );

    // Or re-apply the source: resume with release_pins hands the weight back to the rollout.
    let (code, out, err) = ctl(
        &gw,
        Some(&dir.join("ops")),
        &["resume-sync", "--release-pins"],
    );
    assert_ne!(code, 0, "ops has no sync role: {out}{err}");
    assert!(out.contains("`sync` role"), "{out}");
    let (code, out, err) = ctl(
        &gw,
        Some(&dir.join("bob")),
        &["resume-sync", "--release-pins"],
    );
    assert_ne!(code, 0, "bob may resume, not release pins: {out}{err}");
    assert!(out.contains("lacks the `operate` role"), "{out}");
    assert_eq!(gw.status().await["rollouts"][0]["pinned"], "40%");
    let (code, out, err) = ctl(
        &gw,
        Some(&dir.join("alice")),
        &["resume-sync", "--release-pins"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let s = wait_status(&gw, "unpinned", |s| {
        s["rollouts"][0]["pinned"].is_null() && s["models"][0]["weight"] == "10%"
    })
    .await;
    assert_eq!(
        s["models"][0]["drift"][0]["reason"], "rollout in progress (Canary step 1)",
        "{s:#}"
    );
    assert_eq!(s["sync"]["status"], "Synced", "{:#}", s["sync"]);
    // Not paused and nothing pinned now: nothing to resume, and nothing audited.
    let (code, out, err) = ctl(&gw, Some(&dir.join("alice")), &["resume-sync"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("409") && out.contains("not paused"),
        "{out}{err}"
    );
    let audit = audit_lines(&dir.join("audit.log"));
    let last = audit.last().expect("audit lines");
    assert_eq!(last["action"], "resume-sync", "{last}");
    assert_eq!(last["actor"], "alice");
    assert_eq!(last["released_pins"], serde_json::json!(["m"]));
    assert_eq!(audit[0]["action"], "pin");
    assert_eq!(audit[0]["actor"], "alice", "a named token is the actor");

    // A rollback leaves live below desired until the source changes the candidate.
    let r = call(
        &gw,
        "POST",
        "/rollouts/m/abort",
        Some("alice-secret"),
        None,
        r#"{"reason":"bad answers"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = wait_status(&gw, "rolled back", |s| s["models"][0]["weight"] == "0%").await;
    let drift = &s["models"][0]["drift"][0];
    assert_eq!(
        drift["reason"], "rolled back: aborted by operator: bad answers",
        "{s:#}"
    );
    assert_eq!(
        (&drift["desired"], &drift["live"]),
        (&"5%".into(), &"0%".into())
    );
    assert_eq!(s["sync"]["status"], "OutOfSync", "{:#}", s["sync"]);
    let r = call(&gw, "GET", "/live-config", Some("bob-secret"), None, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let config = rollgate_config::parse(&r.text()).expect("exported config");
    assert_eq!(config.models[0].weight.to_string(), "0%", "{}", r.text());
}

/// With two approvers the shared token names no person: a start with it and one named `sync`
/// token warns that sync cannot be paused; with two named ones it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_warns_when_two_approvers_cannot_be_found_among_named_tokens() {
    let stable = start_sim("stable", "m", |_| {}).await;
    for (named, warns) in [(&["bob"][..], true), (&["alice", "bob"][..], false)] {
        let dir = temp_dir("approvers");
        std::fs::write(dir.join("root"), format!("{ROOT}\n")).expect("root token");
        let mut tokens = String::new();
        for name in named {
            std::fs::write(dir.join(name), format!("{name}-secret\n")).expect("token file");
            tokens.push_str(&format!(
                "    - {{ name: {name}, file: {:?}, roles: [sync] }}\n",
                dir.join(name)
            ));
        }
        let admin = format!(
            "admin:\n  listen: 127.0.0.1:0\n  token_file: {:?}\n  sync_pause_approvers: 2\n  tokens:\n{tokens}",
            dir.join("root")
        );
        let gw = Gateway::start(&with_admin(&config(&stable, None, "", ""), &admin));
        assert_serves(&gw).await;
        let logs = gw.logs();
        assert_eq!(
            logs.contains("sync cannot be paused"),
            warns,
            "{named:?}: {logs}"
        );
        drop(gw);
        let _ = std::fs::remove_dir_all(&dir);
    }
    stable.shutdown().await;
}

/// Pauses sync with alice and bob's tokens; the answer.
async fn pause_two_person(gw: &Gateway) -> Value {
    let r = call(
        gw,
        "POST",
        "/sync/pause",
        Some("alice-secret"),
        Some("bob-secret"),
        r#"{"reason":"incident 42: bad merge"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Stops `gw` (SIGTERM, a clean exit) and starts it again on the same config file.
async fn restart(mut gw: Gateway) -> (Gateway, Gateway) {
    gw.signal("TERM");
    let exit = gw.wait(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}; logs:\n{}", gw.logs());
    let again = gw.start_again();
    // The stopped gateway owns the config's temp dir until the end of the test.
    (gw, again)
}

/// A restart during a sync pause comes back paused on the revision the pause held (saved in
/// `state_dir`), says so in its log and in `/status`; the commit made meanwhile waits for the
/// resume, which also forgets the saved pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_comes_back_paused_on_the_revision_the_pause_held() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = Scratch(temp_dir("breakglass-restart"));
    let dir = &dir.0;
    let admin = admin_section(dir, 2);
    let state = dir.join("state");
    let top = format!("state_dir: {state:?}\n");
    let yaml = |weight: &str| weighted(&stable, &candidate, &admin, weight, &top);
    let gw = Gateway::start(&yaml("10%"));
    let held = gw.status().await["revision"].clone();
    let paused = pause_two_person(&gw).await;
    assert_eq!(
        paused["saved"].as_str(),
        state.join("sync-pause.json").to_str(),
        "{paused:#}"
    );
    gw.write_config(&yaml("30%"));
    assert_eq!(gw.reload().await["result"], "unchanged");

    let (_stopped, gw) = restart(gw).await;
    let s = gw.status().await;
    assert_eq!(s["revision"], held, "the held revision serves: {s:#}");
    assert_eq!(s["models"][0]["weight"], "10%", "{s:#}");
    let sync = wait_status(&gw, "the source read", |s| {
        s["sync"]["desired"].is_string() && s["sync"]["desired"] != held
    })
    .await["sync"]
        .clone();
    assert_eq!(sync["status"], "OutOfSync", "{sync:#}");
    assert_eq!(sync["paused"]["by"], "alice", "{sync:#}");
    assert_eq!(sync["paused"]["approver"], "bob");
    assert_eq!(sync["paused"]["reason"], "incident 42: bad merge");
    assert!(
        sync["reasons"]
            .to_string()
            .contains("sync paused by alice (approved by bob)"),
        "{sync:#}"
    );
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("sync was paused before this start"))
        .unwrap_or_else(|| panic!("no restore line in:\n{logs}"));
    assert!(
        line.contains("WARN") && line.contains("alice") && line.contains("incident 42"),
        "{line}"
    );
    // The file watcher does not apply the newer file either.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(gw.status().await["models"][0]["weight"], "10%");

    // Resume applies the source and forgets the pause: the next restart is not paused.
    let r = call(&gw, "POST", "/sync/resume", Some("bob-secret"), None, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.status().await["models"][0]["weight"], "30%");
    assert!(!state.join("sync-pause.json").exists());
    let (_stopped_again, gw) = restart(gw).await;
    let s = gw.status().await;
    assert_eq!(s["models"][0]["weight"], "30%", "{s:#}");
    assert!(s["sync"]["paused"].is_null(), "{:#}", s["sync"]);
    assert!(!gw.logs().contains("sync was paused before this start"));
}

/// Without `state_dir` the pause is not saved, but the audit log names it: the restart serves
/// the source (the held revision was not kept), comes back paused, logs an error naming who
/// paused, when and why, and `/status` says what the restart did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_state_dir_stays_paused_and_says_the_held_revision_was_lost() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = Scratch(temp_dir("breakglass-restart-audit"));
    let dir = &dir.0;
    let admin = admin_section(dir, 2);
    let yaml = |weight: &str| weighted(&stable, &candidate, &admin, weight, "");
    let gw = Gateway::start(&yaml("10%"));
    let held = gw.status().await["revision"].clone();
    let paused = pause_two_person(&gw).await;
    assert!(paused["saved"].is_null(), "{paused:#}");
    gw.write_config(&yaml("30%"));

    let (_stopped, gw) = restart(gw).await;
    let s = gw.status().await;
    assert_ne!(s["revision"], held);
    let sync = &s["sync"];
    assert_eq!(sync["paused"]["by"], "alice", "{sync:#}");
    assert_eq!(sync["paused"]["approver"], "bob");
    let reason = sync["paused"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("incident 42: bad merge [after a restart the revision it held, ")
            && reason.contains("was not saved"),
        "{reason}"
    );
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("unresumed pause-sync"))
        .unwrap_or_else(|| panic!("no restore line in:\n{logs}"));
    assert!(
        line.contains("ERROR") && line.contains("alice") && line.contains("incident 42"),
        "{line}"
    );
    // Still paused: a newer file is not applied.
    gw.write_config(&yaml("50%"));
    assert_eq!(gw.reload().await["result"], "unchanged");
    assert_eq!(gw.status().await["models"][0]["weight"], "30%");
}
