//! Acceptance: the PR pipeline against a real Git repository made with the `git` CLI.
//! `rollgate diff` between two commits lists exactly the changes (Markdown and `--json`), a
//! policy violation exits 3 naming each rule, and `validate --repo --rev` on an invalid commit
//! exits 1 naming every error.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::temp_dir;

/// A throwaway repository; removed on drop.
struct Repo {
    dir: PathBuf,
}

/// What a `rollgate` run left: exit code, stdout, stderr.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

const HEAD: &str = "listen: 0.0.0.0:8080
env: prod
policy:
  max_step: 25%
  require_gates: { prod: [error_rate] }
  require_approval: [prod]
  immutable_candidates: true
models:
  - name: embed
    stable: { endpoints: [\"http://10.0.1.1:8000\"], engine: tgi }
";

/// The base commit: `chat` at 10 % on candidate v2, two steps, one gate, manual approval.
fn v1() -> String {
    format!(
        "{HEAD}  - name: chat
    stable:    {{ endpoints: [\"http://10.0.0.1:8000\"], engine: vllm, revision: v1 }}
    candidate: {{ endpoints: [\"http://10.0.0.2:8000\"], engine: vllm, revision: v2 }}
    weight: 10%
    rollout:
      steps: [ {{ weight: 10%, for: 1m }}, {{ weight: 30%, for: 1m }} ]
      gates: {{ error_rate: {{ max: 1% }} }}
      approval: manual
"
    )
}

// === impl Repo ===

impl Repo {
    fn new() -> Repo {
        let repo = Repo {
            dir: temp_dir("pr-repo"),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(["-c", "commit.gpgsign=false"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "dev")
            .env("GIT_AUTHOR_EMAIL", "dev@example.invalid")
            .env("GIT_COMMITTER_NAME", "dev")
            .env("GIT_COMMITTER_EMAIL", "dev@example.invalid")
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Commits `text` as `rollgate.yaml`; returns the commit SHA.
    fn commit(&self, text: &str, message: &str) -> String {
        std::fs::write(self.dir.join("rollgate.yaml"), text).expect("write config");
        self.git(&["add", "rollgate.yaml"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless.
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn rollgate(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(args)
        .output()
        .expect("run rollgate");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn diff(repo: &Repo, from: &str, to: &str, json: bool) -> Run {
    let repo = repo.path().to_str().expect("utf-8 temp path");
    let mut args = vec!["diff", "--repo", repo, "--from", from, "--to", to];
    if json {
        args.push("--json");
    }
    rollgate(&args)
}

fn validate(repo: &Repo, rev: &str) -> Run {
    let repo = repo.path().to_str().expect("utf-8 temp path");
    rollgate(&["validate", "--repo", repo, "--rev", rev])
}

#[test]
fn diff_between_two_commits_lists_exactly_the_changes() {
    let repo = Repo::new();
    let a = repo.commit(&v1(), "chat: candidate v2 at 10%");
    let changed = v1()
        .replace("revision: v2", "revision: v3")
        .replace("weight: 10%\n", "weight: 20%\n")
        .replace(
            "{ weight: 30%, for: 1m } ]",
            "{ weight: 20%, for: 1m }, { weight: 40%, for: 2m } ]",
        )
        .replace(
            "{ error_rate: { max: 1% } }",
            "{ error_rate: { max: 1% }, latency_p99: { max: 2s } }",
        );
    let b = repo.commit(&changed, "chat: candidate v3, finer steps, latency gate");

    let run = diff(&repo, &a, "main", true);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("--json is JSON");
    let changes: Vec<(String, String, String, String)> = report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("path"), s("kind"), s("old"), s("new"))
        })
        .collect();
    let want = [
        ("models[chat].candidate.revision", "changed", "v2", "v3"),
        ("models[chat].weight", "changed", "10%", "20%"),
        (
            "models[chat].rollout.steps",
            "changed",
            "[10%/60s, 30%/60s]",
            "[10%/60s, 20%/60s, 40%/120s]",
        ),
        (
            "models[chat].rollout.gates.latency_p99",
            "added",
            "",
            "max 2s",
        ),
    ];
    let want: Vec<(String, String, String, String)> = want
        .iter()
        .map(|(p, k, o, n)| (p.to_string(), k.to_string(), o.to_string(), n.to_string()))
        .collect();
    assert_eq!(changes, want, "{:#}", report);
    assert_eq!(report["from"]["commit"], a.as_str());
    assert_eq!(report["to"]["commit"], b.as_str());
    assert_eq!(report["to"]["rev"], "main");
    assert_eq!(report["models"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["models"][0]["name"], "chat");
    assert_eq!(report["models"][0]["candidate_change"], "revision");
    assert_eq!(report["violations"], Value::Array(vec![]));

    // The Markdown says the same, one line per change, under the model.
    let run = diff(&repo, &a, &b, false);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for line in [
        "**Model `chat`** (its candidate differs from stable in: revision)",
        "- `candidate.revision`: v2 -> v3",
        "- `weight`: 10% -> 20%",
        "- `rollout.steps`: [10%/60s, 30%/60s] -> [10%/60s, 20%/60s, 40%/120s]",
        "- `rollout.gates.latency_p99`: added (max 2s)",
        "No policy violations.",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?} in:\n{}",
            run.stdout
        );
    }
    assert_eq!(run.stdout.matches("\n- `").count(), 4, "{}", run.stdout);
    assert!(!run.stdout.contains("embed"), "{}", run.stdout);
}

#[test]
fn a_policy_violation_exits_3_and_names_each_rule() {
    let repo = Repo::new();
    let a = repo.commit(&v1(), "chat: candidate v2");
    let bad = v1()
        .replace("revision: v2", "revision: latest")
        .replace("{ weight: 30%, for: 1m }", "{ weight: 60%, for: 1m }")
        .replace("      approval: manual\n", "");
    let b = repo.commit(&bad, "chat: yolo");

    let run = diff(&repo, &a, &b, false);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    for text in [
        "**max_step** model `chat`: rollout.steps[1]: 10% -> 60% rises by 50%, above max_step 25%",
        "**immutable_candidates** model `chat`: candidate.revision: `latest` is a mutable reference",
        "**require_approval** model `chat`: env prod requires rollout.approval: manual",
    ] {
        assert!(run.stdout.contains(text), "missing {text:?} in:\n{}", run.stdout);
    }
    let run = diff(&repo, &a, &b, true);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("--json is JSON");
    let rules: Vec<&str> = report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter_map(|v| v["rule"].as_str())
        .collect();
    assert_eq!(
        rules,
        ["max_step", "require_approval", "immutable_candidates"]
    );

    // validate --repo --rev judges the commit against its parent: the same rules, exit 3.
    let run = validate(&repo, &b);
    assert_eq!(run.code, 3, "{}", run.stderr);
    for rule in ["[max_step]", "[require_approval]", "[immutable_candidates]"] {
        assert!(
            run.stderr.contains(rule),
            "missing {rule} in:\n{}",
            run.stderr
        );
    }
    // The parent itself is fine.
    let run = validate(&repo, &a);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn validate_an_invalid_commit_exits_1_naming_every_error() {
    let repo = Repo::new();
    repo.commit(&v1(), "good");
    let broken = v1()
        .replace("weight: 10%\n", "weight: 120%\n")
        .replace("env: prod\n", "env: prod\nworkerz: 2\n")
        .replace(
            "candidate: { endpoints: [\"http://10.0.0.2:8000\"], engine: vllm",
            "candidate: { endpoints: [\"http://10.0.0.2:8000\"], engine: sglang",
        )
        .replace(
            "{ error_rate: { max: 1% } }",
            "{ error_rate: { max: 1% }, queue_time_p95: { max: 500ms } }",
        )
        .replace(
            "require_gates: { prod: [error_rate] }",
            "require_gates: { prod: [error_rat] }",
        );
    let b = repo.commit(&broken, "broken");

    let run = validate(&repo, "HEAD");
    assert_eq!(run.code, 1, "{}", run.stderr);
    let at = format!("HEAD ({}):rollgate.yaml", &b[..12]);
    for path in [
        "workerz",
        "policy.require_gates.prod[0]",
        "models[1].weight",
        "models[1].rollout.gates.queue_time_p95",
    ] {
        assert!(
            run.stderr.contains(&format!("{at}: {path}:")),
            "missing {path} in:\n{}",
            run.stderr
        );
    }
    assert!(
        run.stderr.contains(&format!("{at}: 4 errors")),
        "{}",
        run.stderr
    );

    // diff refuses an invalid side too, with the same errors, also as JSON on stdout.
    let run = diff(&repo, "HEAD~1", "HEAD", false);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("queue_time_p95"), "{}", run.stderr);
    let run = diff(&repo, "HEAD~1", "HEAD", true);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(doc["valid"], false);
    assert!(
        doc["errors"].to_string().contains("queue_time_p95"),
        "{doc}"
    );

    // A revision or path that is not there is an error, not a crash.
    let run = validate(&repo, "no-such-branch");
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("revision `no-such-branch` not found"),
        "{}",
        run.stderr
    );
    let dir = repo.path().to_str().expect("utf-8");
    let run = rollgate(&[
        "validate",
        "--repo",
        dir,
        "--rev",
        "HEAD",
        "--path",
        "nope.yaml",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("cannot read the config"),
        "{}",
        run.stderr
    );
    // A folder, or a tree instead of a commit, is named as what it is.
    std::fs::create_dir_all(repo.path().join("conf")).expect("mkdir");
    std::fs::write(repo.path().join("conf/a.yaml"), "x: 1\n").expect("write");
    repo.git(&["add", "conf"]);
    repo.git(&["commit", "-qm", "a folder"]);
    let run = rollgate(&["validate", "--repo", dir, "--rev", "HEAD", "--path", "conf"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains(":conf: is a directory in the commit, not a file"),
        "{}",
        run.stderr
    );
    let run = validate(&repo, "HEAD^{tree}");
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("`HEAD^{tree}` is a tree, not a commit"),
        "{}",
        run.stderr
    );
}
