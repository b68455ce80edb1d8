//! The image build (Dockerfile, .dockerignore) and the config the base ConfigMap serves.

use std::collections::BTreeSet;
use std::process::Command;

use super::{read, root, run, text, yaml_docs};

/// The config in the base ConfigMap is valid for this rollgate and listens where the pod's
/// ports, probes and Services expect. Its paths (`state_dir`) are the pod's, not this
/// machine's: `--config-only`.
#[test]
fn base_config_is_valid_and_matches_the_ports() {
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_rollgate")).args([
            "validate",
            "--config-only",
            "deploy/base/rollgate.yaml",
        ]),
        "rollgate",
    );
    assert!(out.status.success(), "{}", text(&out));
    let config = &yaml_docs(&read("deploy/base/rollgate.yaml"))[0];
    assert_eq!(config["listen"], "0.0.0.0:8080");
    assert_eq!(config["admin"]["listen"], "0.0.0.0:9090");
}

/// Every path the Dockerfile copies exists and survives .dockerignore; every workspace member is
/// copied (a crate left out breaks `cargo build --locked` in the image); the default command's
/// config is baked in.
#[test]
fn dockerfile_copies_what_the_build_needs() {
    let dockerfile = read("deploy/Dockerfile");
    let ignore: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let mut copied = BTreeSet::new();
    let mut dests = BTreeSet::new();
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (dest, srcs) = words.split_last().expect("COPY has a destination");
        dests.insert(dest.to_string());
        if words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        for src in srcs.iter().filter(|w| !w.starts_with("--")) {
            assert!(
                root().join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            assert!(
                !docker_ignored(&ignore, src),
                ".dockerignore drops {src}, which the Dockerfile copies"
            );
            copied.insert(src.trim_end_matches('/').to_string());
        }
    }
    let manifest = read("Cargo.toml");
    let members = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("workspace members");
    for member in members.split('"').skip(1).step_by(2) {
        assert!(
            copied.contains(member),
            "the Dockerfile does not copy workspace member {member}"
        );
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(
            copied.contains(needed),
            "the Dockerfile does not copy {needed}"
        );
    }
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(
        dests.contains("/usr/local/bin/rollgate"),
        "the binary is not installed as /usr/local/bin/rollgate"
    );
    assert!(
        dests.contains("/etc/rollgate/rollgate.yaml"),
        "CMD's config is not baked in"
    );
    assert!(dockerfile.contains(r#"CMD ["run", "--config", "/etc/rollgate/rollgate.yaml"]"#));
    assert!(
        dockerfile.contains("\nUSER 10001"),
        "the image does not run as a non-root user"
    );
}

/// Whether `.dockerignore` patterns (plain paths, `!` exceptions; last match wins) drop `path`.
fn docker_ignored(patterns: &[String], path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let mut ignored = false;
    for p in patterns {
        let (negate, p) = p
            .strip_prefix('!')
            .map_or((false, p.as_str()), |p| (true, p));
        let p = p.trim_end_matches('/');
        if path == p || path.starts_with(&format!("{p}/")) {
            ignored = !negate;
        }
    }
    ignored
}
