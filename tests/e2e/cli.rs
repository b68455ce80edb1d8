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
