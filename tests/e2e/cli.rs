//! `rollgate validate`: every error with its path and exit 1; exit 0 on a valid file.

use std::process::Command;

use crate::support::temp_dir;

fn validate(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .arg("validate")
        .arg(path)
        .output()
        .expect("run rollgate validate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_names_every_error_and_exits_1() {
    let dir = temp_dir("validate");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: 127.0.0.1:8080\nworkerz: 2\nmodels:\n  - name: a\n    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n    weight: 120%\n  - name: b\n    stable: { endpoints: [\"https://x:1\"], engin: vllm }\n",
    )
    .expect("write");
    let (code, err) = validate(&bad);
    assert_eq!(code, 1, "{err}");
    for expected in [
        "workerz",
        "models[0].weight",
        "models[1].stable.engin",
        "models[1].stable.endpoints[0]",
    ] {
        assert!(err.contains(expected), "missing {expected} in:\n{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_example_config_is_valid() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/rollgate.yaml");
    let (code, err) = validate(&example);
    assert_eq!(code, 0, "{err}");
}

/// Runs `rollgate demo` quickly (1 s steps, 200 users a second) with `scenario`; asserts it
/// exits 0 and returns what it printed.
async fn demo(scenario: &'static str) -> String {
    let _heavy = crate::support::heavy().await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_rollgate"))
            .args([
                "demo",
                "--step-seconds",
                "1",
                "--rate",
                "200",
                "--duration",
                "90",
                "--scenario",
                scenario,
            ])
            .output()
            .expect("run rollgate demo")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The README's first command: the demo promotes the good candidate, rolls back the bad one,
/// stops by itself, exits 0 and removes its temp dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_the_whole_lifecycle_and_stops_by_itself() {
    let text = demo("latency").await;
    let full = text
        .find(" Full ")
        .unwrap_or_else(|| panic!("never reached Full:\n{text}"));
    let back = text
        .find(" Previous ")
        .unwrap_or_else(|| panic!("never rolled back:\n{text}"));
    assert!(full < back, "Full comes before the rollback:\n{text}");
    assert!(
        text.contains("latency_p99") && text.contains("[FAIL]"),
        "the failing gate is shown:\n{text}"
    );
    let dir = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("config, suite, state"))
        .map(str::trim)
        .expect("dir line");
    assert!(
        !std::path::Path::new(dir).exists(),
        "the demo removes {dir}"
    );
}

/// `--scenario crash`: v3's pod goes away in its first canary step; the rollback follows
/// and not one simulated user's request fails (candidate fallback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crash_demo_rolls_back_without_a_failed_user_request() {
    let text = demo("crash").await;
    let down = text
        .find("pod goes away")
        .unwrap_or_else(|| panic!("v3 never went down:\n{text}"));
    let back = text
        .rfind(" Previous ")
        .unwrap_or_else(|| panic!("never rolled back:\n{text}"));
    assert!(down < back, "the rollback follows the crash:\n{text}");
    let users = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("users: "))
        .unwrap_or_else(|| panic!("no users line:\n{text}"));
    let answered: u64 = users
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{users}"));
    assert!(answered > 1_000, "{users}");
    assert!(users.contains(" 0 failed"), "{users}\n{text}");
    let fell_back: u64 = users
        .rsplit("; ")
        .next()
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{users}"));
    assert!(fell_back > 0, "the fallback was not needed?\n{text}");
}

/// A valid config that `rollgate run` could not start here (a TLS file and a golden suite that
/// do not exist) fails `validate` with each named, and passes with `--config-only`.
#[test]
fn validate_checks_what_run_needs_from_this_machine() {
    let dir = temp_dir("validate-machine");
    let file = dir.join("rollgate.yaml");
    std::fs::write(
        &file,
        format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\ntls: {{ cert: {d}/tls.crt, key: {d}/tls.key }}\naccess_log: /dev/null/access.log\nmodels:\n  - name: m\n    stable: {{ endpoints: [\"http://127.0.0.1:1\"] }}\n    candidate: {{ endpoints: [\"http://127.0.0.1:2\"] }}\n    rollout:\n      synthetic: {{ suite: golden.yaml }}\n      steps: [ {{ weight: 10%, for: 1m }} ]\n",
            d = dir.display()
        ),
    )
    .expect("write");
    let (code, err) = validate(&file);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("tls.cert: ") && err.contains("tls.key: "),
        "{err}"
    );
    assert!(
        err.contains("models[0].rollout.synthetic.suite") && err.contains("golden.yaml"),
        "{err}"
    );
    assert!(err.contains("access_log: /dev/null/access.log: "), "{err}");
    assert!(
        err.contains("cannot start it on this machine (4 problems"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["validate", "--config-only"])
        .arg(&file)
        .output()
        .expect("run rollgate validate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// An invalid golden suite is named invalid, with each of its errors and its model by index as
/// every config error names it; not "valid, but cannot start on this machine".
#[test]
fn validate_names_an_invalid_suite_invalid_with_its_errors() {
    let dir = temp_dir("validate-suite");
    let file = dir.join("v3.yaml");
    std::fs::write(
        &file,
        "listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nmodels:\n  - name: first\n    stable: { endpoints: [\"http://127.0.0.1:3\"] }\n  - name: m\n    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n    candidate: { endpoints: [\"http://127.0.0.1:2\"] }\n    rollout:\n      synthetic: { suite: golden.yaml }\n      steps: [ { weight: 10%, for: 1m } ]\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("golden.yaml"),
        "requests:\n  - { name: a, path: v1/completions, body: { prompt: hi } }\n  - { name: a, path: /v1/completions, body: { prompt: hi } }\n",
    )
    .expect("write");
    let (code, err) = validate(&file);
    assert_eq!(code, 1, "{err}");
    let golden = dir.join("golden.yaml");
    let at = format!(
        "v3.yaml: models[1].rollout.synthetic.suite: {}: ",
        golden.display()
    );
    for issue in [
        "requests[0].path: \"v1/completions\" must start with /",
        "requests[1].name: \"a\" is also the name of requests[0]",
    ] {
        assert!(err.contains(&format!("{at}{issue}")), "{err}");
    }
    assert!(
        err.contains(&format!(
            "v3.yaml: invalid: the synthetic suite {} (models[1].rollout.synthetic.suite) has 2 errors",
            golden.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("valid, but") && !err.contains("models[m]"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
