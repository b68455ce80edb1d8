//! Acceptance: Git as the config source. Real repositories made with the `git` CLI in a temp
//! dir are the remote (a local path). A commit is applied within the poll interval, at once on a
//! signed webhook, without a failed request; an invalid commit keeps the last good config and
//! `/status` names the commit and every error; a new candidate commit rolls out to Full and the
//! outcome lands as a note on that commit (never a commit on the branch); reverting a candidate
//! mid-rollout rolls it back and it is not retried until a commit changes it; in signed mode an
//! unsigned commit is refused.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rollgate_control::git::hook::{hex, hmac_sha256};
use rollgate_loadtest::sim::Sim;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::*;

/// The webhook secret every test uses.
const SECRET: &str = "hook-secret-for-tests";
/// Poll interval of the tests that wait for the poller.
const FAST_POLL: Duration = Duration::from_secs(1);
/// Longest a rollout phase may take to show (samples arrive slowly on a busy machine).
const PHASE_DEADLINE: Duration = Duration::from_secs(60);
/// Gates of the rollout tests (as in rollout.rs): error rate alone and vs stable, a generous
/// latency ceiling.
const GATES: &str =
    "gates: { error_rate: { max: 1%, max_vs_stable: +0.5% }, latency_p99: { max: 2s } }";

/// A repository with a working tree: the remote the gateway watches.
struct Repo {
    dir: PathBuf,
}

/// User traffic until [`Load::finish`]; every status code seen.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Vec<u16>>,
}

// === impl Repo ===

impl Repo {
    fn init(root: &Path) -> Repo {
        let dir = root.join("origin");
        std::fs::create_dir_all(&dir).expect("repo dir");
        let repo = Repo { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.name", "Test Author"]);
        repo.git(&["config", "user.email", "author@example.com"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    /// Runs git in the work tree; stdout, trimmed. Panics with stderr on failure.
    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Commits `yaml` as rollgate.yaml with extra commit flags (`-S` and friends); the SHA.
    fn commit_with(&self, yaml: &str, msg: &str, config: &[&str], flags: &[&str]) -> String {
        std::fs::write(self.dir.join("rollgate.yaml"), yaml).expect("write config");
        self.git(&["add", "rollgate.yaml"]);
        let mut args: Vec<&str> = config.iter().flat_map(|c| ["-c", c]).collect();
        args.extend(["commit", "-q", "--allow-empty", "-m", msg]);
        args.extend(flags);
        self.git(&args);
        self.head()
    }

    fn commit(&self, yaml: &str, msg: &str) -> String {
        self.commit_with(yaml, msg, &[], &[])
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// `git log main` as SHAs, newest first.
    fn log(&self) -> Vec<String> {
        self.git(&["log", "--format=%H", "main"])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

// === impl Load ===

impl Load {
    fn start(gw: &Gateway, tasks: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (c, url) = (client(), gw.url("/v1/chat/completions"));
        let mut set = JoinSet::new();
        for t in 0..tasks {
            let (c, url, stop) = (c.clone(), url.clone(), stop.clone());
            set.spawn(async move {
                let mut seen = Vec::new();
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    let user = format!("u{t}-{n}");
                    n += 1;
                    let r = send(&c, &url, &[("x-user-id", &user)], chat("m", "hi", false)).await;
                    seen.push(r.status);
                }
                seen
            });
        }
        Load { stop, tasks: set }
    }

    /// Stops and asserts that every request was answered 200; how many were sent.
    async fn finish_all_ok(mut self, what: &str) -> usize {
        self.stop.store(true, Relaxed);
        let mut all = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            all.extend(done.expect("load task"));
        }
        let failed = all.iter().filter(|s| **s != 200).count();
        assert_eq!(
            failed,
            0,
            "{what}: {failed} of {} requests failed",
            all.len()
        );
        assert!(!all.is_empty(), "{what}: no request was sent");
        all.len()
    }
}

/// A gateway watching `repo`'s main branch, its mirror and secret under `root`.
fn start_git(root: &Path, repo: &Repo, poll: Duration, extra: &[OsString]) -> Gateway {
    let secret = root.join("webhook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret");
    let mut args: Vec<OsString> = vec![
        "--git".into(),
        repo.dir.clone().into(),
        "--branch".into(),
        "main".into(),
        "--path".into(),
        "rollgate.yaml".into(),
        "--poll".into(),
        format!("{}ms", poll.as_millis()).into(),
        "--git-dir".into(),
        root.join("mirror.git").into(),
        "--webhook-secret-file".into(),
        secret.into(),
    ];
    args.extend(extra.iter().cloned());
    Gateway::start_args(root.to_owned(), &args)
}

/// Model `m` with stable and candidate simulators at `weight`, no rollout plan.
fn weights(stable: &Sim, candidate: &Sim, weight: &str) -> String {
    config(
        stable,
        Some(candidate),
        &format!("    weight: {weight}\n"),
        "",
    )
}

/// Model `m` with a candidate `revision` rolled out by `steps` (YAML flow list of steps);
/// without a candidate, stable alone (a plan needs a candidate).
fn rollout(stable: &Sim, candidate: Option<(&Sim, &str)>, steps: &str) -> String {
    let plan = candidate.map_or(String::new(), |(c, rev)| {
        format!(
            "    candidate: {{ endpoints: [\"{}\"], engine: vllm, revision: {rev} }}\n    \
             rollout: {{ steps: {steps}, {GATES}, min_samples: 30 }}\n",
            c.url()
        )
    });
    format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nworkers: 2\nmodels:\n  - name: m\n    \
         stable: {{ endpoints: [\"{}\"], engine: vllm }}\n    cohort: {{ header: x-user-id }}\n{plan}",
        stable.url()
    )
}

/// Polls `/status` until `done` holds (bounded); the status and when it was seen.
async fn until_status(
    gw: &Gateway,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> (Value, Instant) {
    let deadline = Instant::now() + limit;
    loop {
        let s = gw.status().await;
        let at = Instant::now();
        if done(&s) {
            return (s, at);
        }
        assert!(
            at < deadline,
            "{what}: not within {limit:?}; status {:#}; logs:\n{}",
            s,
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `GET /rollouts` for model `m` until `done` holds (bounded).
async fn until_rollout(gw: &Gateway, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PHASE_DEADLINE;
    loop {
        let s = rollout_status(gw).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {PHASE_DEADLINE:?}; now {s:#}; logs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn applied(s: &Value, sha: &str, weight: &str) -> bool {
    s["revision"] == sha && s["models"][0]["desired_weight"] == weight
}

/// The `Stalled` condition of the config source, if any.
fn stalled(s: &Value) -> Option<&Value> {
    s["sync"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Stalled" && c["status"] == "True")
}

async fn hook(gw: &Gateway, headers: &[(&str, &str)], body: &str) -> Reply {
    send(
        &client(),
        &gw.admin_url("/hooks/git"),
        headers,
        body.to_owned(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_applied_within_the_poll_interval_without_a_failed_request() {
    let _heavy = heavy().await;
    let root = temp_dir("git-poll");
    let repo = Repo::init(&root);
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let first = repo.commit(&weights(&stable, &candidate, "10%"), "10% to the candidate");
    let gw = start_git(&root, &repo, FAST_POLL, &[]);
    assert_eq!(gw.status().await["revision"], first.as_str());
    let load = Load::start(&gw, 4);

    let mut took = Vec::new();
    for (i, weight) in ["30%", "60%", "20%"].iter().enumerate() {
        let sha = repo.commit(&weights(&stable, &candidate, weight), &format!("step {i}"));
        let committed = Instant::now();
        let (_, seen) = until_status(&gw, Duration::from_secs(10), "commit applied", |s| {
            applied(s, &sha, weight)
        })
        .await;
        took.push(seen - committed);
        let page = gw.metrics().await;
        assert_eq!(
            metric(
                &page,
                &format!("rollgate_config_info{{revision=\"{sha}\"}}")
            ),
            Some(1.0),
            "the revision metric names the commit"
        );
        let logs = gw
            .wait_logs("reload line names the commit", |l| {
                l.lines()
                    .any(|line| line.contains("config reloaded") && line.contains(&sha))
            })
            .await;
        assert!(logs.contains("trigger=Poll"), "applied by the poller");
    }
    let sent = load.finish_all_ok("while commits were applied").await;
    eprintln!("commit → applied (poll {FAST_POLL:?}): {took:?}; {sent} requests, none failed");
    for t in &took {
        assert!(
            *t <= FAST_POLL + Duration::from_secs(1),
            "applied {t:?} after the commit, more than the poll interval + 1 s"
        );
    }
    let page = gw.metrics().await;
    assert!(metric(&page, "rollgate_git_fetch_total{result=\"success\"}").unwrap_or(0.0) >= 3.0);
    assert_eq!(
        metric(&page, "rollgate_git_fetch_total{result=\"failure\"}"),
        Some(0.0)
    );
    assert!(metric(&page, "rollgate_git_last_fetch_timestamp_seconds").unwrap_or(0.0) > 1.6e9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_applies_at_once_and_a_wrong_signature_is_refused() {
    let _heavy = heavy().await;
    let root = temp_dir("git-hook");
    let repo = Repo::init(&root);
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    repo.commit(&weights(&stable, &candidate, "10%"), "start");
    // A poll far longer than the test: only the webhook can bring commits in.
    let gw = start_git(&root, &repo, Duration::from_secs(60), &[]);
    let load = Load::start(&gw, 4);

    let sha = repo.commit(&weights(&stable, &candidate, "40%"), "40%");
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{sha}"}}"#);
    let wrong = format!(
        "sha256={}",
        hex(&hmac_sha256(b"not the secret", body.as_bytes()))
    );
    let refused = hook(&gw, &[("x-hub-signature-256", &wrong)], &body).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert!(
        refused.json()["error"].as_str().is_some(),
        "{}",
        refused.text()
    );
    assert_eq!(
        refused.json()["error"],
        "X-Hub-Signature-256 does not match the body"
    );
    // The right HMAC without its `sha256=` prefix: the format is named, not a mismatch.
    let bare = hex(&hmac_sha256(SECRET.as_bytes(), body.as_bytes()));
    let unprefixed = hook(&gw, &[("x-hub-signature-256", &bare)], &body).await;
    assert_eq!(unprefixed.status, 401, "{}", unprefixed.text());
    let error = unprefixed.json()["error"].as_str().unwrap_or("").to_owned();
    assert!(
        error.contains("expected format `sha256=<64 hex digits>`"),
        "{error}"
    );
    let missing = hook(&gw, &[], &body).await;
    assert_eq!(missing.status, 401, "{}", missing.text());
    let bad_token = hook(&gw, &[("authorization", "Bearer nope")], &body).await;
    assert_eq!(bad_token.status, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ne!(
        gw.status().await["revision"],
        sha.as_str(),
        "refused hooks fetch nothing"
    );

    let good = format!(
        "sha256={}",
        hex(&hmac_sha256(SECRET.as_bytes(), body.as_bytes()))
    );
    let sent = Instant::now();
    let accepted = hook(
        &gw,
        &[("x-hub-signature-256", &good), ("x-github-event", "push")],
        &body,
    )
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let (_, seen) = until_status(&gw, Duration::from_secs(5), "webhook commit", |s| {
        applied(s, &sha, "40%")
    })
    .await;
    let took = seen - sent;

    // The bearer form (and GitLab's token header) work the same way.
    let sha2 = repo.commit(&weights(&stable, &candidate, "70%"), "70%");
    let bearer = format!("Bearer {SECRET}");
    let r = hook(&gw, &[("authorization", &bearer)], "{}").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let (s, _) = until_status(&gw, Duration::from_secs(5), "bearer commit", |s| {
        applied(s, &sha2, "70%")
    })
    .await;
    assert_eq!(s["sync"]["desired"], sha2.as_str());
    assert_eq!(s["sync"]["applied"], sha2.as_str());
    let page = gw.metrics().await;
    assert_eq!(
        metric(
            &page,
            &format!("rollgate_config_info{{revision=\"{sha2}\"}}")
        ),
        Some(1.0)
    );
    let n = load.finish_all_ok("while webhooks applied commits").await;
    eprintln!("webhook → applied in {took:?}; {n} requests, none failed");
    assert!(
        took < Duration::from_secs(1),
        "webhook commit applied after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_commit_keeps_the_last_good_and_status_names_it_and_every_error() {
    let root = temp_dir("git-invalid");
    let repo = Repo::init(&root);
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let good = repo.commit(&weights(&stable, &candidate, "10%"), "good");
    let gw = start_git(&root, &repo, FAST_POLL, &[]);

    let bad_yaml = config(
        &stable,
        Some(&candidate),
        "    weight: 150%\n",
        "surprise: 1\n",
    );
    let bad = repo.commit(&bad_yaml, "broken");
    let (s, _) = until_status(
        &gw,
        Duration::from_secs(10),
        "invalid commit reported",
        |s| stalled(s).is_some(),
    )
    .await;
    let cond = stalled(&s).expect("stalled");
    assert_eq!(cond["revision"], bad.as_str(), "{cond:#}");
    let errors: Vec<&str> = cond["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors
        .iter()
        .any(|e| e.contains("surprise") && e.contains("unknown key")));
    assert!(errors
        .iter()
        .any(|e| e.contains("models[0].weight") && e.contains("150%")));
    assert!(cond["message"].as_str().unwrap_or("").contains(&bad));
    assert_eq!(s["revision"], good.as_str(), "the last good keeps serving");
    assert_eq!(s["models"][0]["desired_weight"], "10%");
    assert_eq!(s["sync"]["desired"], bad.as_str());
    assert_eq!(s["last_reload"]["revision"], bad.as_str());
    assert_serves(&gw).await;
    let logs = gw
        .wait_logs("rejection logged with the SHA", |l| {
            l.contains("config reload rejected") && l.contains(&bad)
        })
        .await;
    assert!(logs.contains("surprise"), "every error logged");
    // Polls keep seeing the same bad commit: judged and counted once.
    tokio::time::sleep(FAST_POLL * 3).await;
    let page = gw.metrics().await;
    assert_eq!(
        metric(&page, "rollgate_config_reload_total{result=\"invalid\"}"),
        Some(1.0)
    );

    let fixed = repo.commit(&weights(&stable, &candidate, "35%"), "fixed");
    let (s, _) = until_status(&gw, Duration::from_secs(10), "next valid commit", |s| {
        applied(s, &fixed, "35%")
    })
    .await;
    assert!(stalled(&s).is_none(), "{:#}", s["sync"]);
    assert_eq!(s["sync"]["conditions"][0]["status"], "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_commit_rolls_out_to_full_and_the_note_records_it() {
    let _heavy = heavy().await;
    let root = temp_dir("git-rollout");
    let repo = Repo::init(&root);
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let steps = "[{ weight: 50%, for: 1s }]";
    let base = repo.commit(&rollout(&stable, None, steps), "stable only");
    let gw = start_git(&root, &repo, FAST_POLL, &["--push-notes".into()]);
    let load = Load::start(&gw, 6);

    let sha = repo.commit(
        &rollout(&stable, Some((&candidate, "v2")), steps),
        "candidate v2",
    );
    let full = until_rollout(&gw, "v2 to Full", |s| {
        phase(s) == "Full"
            && s["candidate"]
                .as_str()
                .is_some_and(|c| c.starts_with("v2@"))
    })
    .await;
    assert_eq!(full["weight"], "100%");
    load.finish_all_ok("during the rollout").await;

    // The Full note reaches the origin (written and pushed off the driver's path).
    let deadline = Instant::now() + Duration::from_secs(15);
    let note = loop {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo.dir)
            .args(["notes", "--ref", "rollgate", "show", &sha])
            .output()
            .expect("git notes");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("phase: Full") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no Full note on {sha}: {text:?} {}; logs:\n{}",
            String::from_utf8_lossy(&out.stderr),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&note).expect("note is YAML");
    assert_eq!(doc["revision"].as_str(), Some(sha.as_str()), "{note}");
    assert_eq!(doc["models"]["m"]["phase"].as_str(), Some("Full"), "{note}");
    assert_eq!(
        doc["models"]["m"]["weight"].as_str(),
        Some("100%"),
        "{note}"
    );
    assert!(doc["models"]["m"]["conditions"].is_sequence(), "{note}");
    assert_eq!(
        repo.log(),
        vec![sha.clone(), base],
        "the watched branch holds only the test's commits"
    );
    let page = gw.metrics().await;
    assert!(metric(&page, "rollgate_git_notes_total{result=\"pushed\"}").unwrap_or(0.0) >= 1.0);
    assert_eq!(
        metric(&page, "rollgate_git_notes_total{result=\"dropped\"}"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverting_a_candidate_mid_rollout_rolls_it_back_until_a_commit_changes_it() {
    let _heavy = heavy().await;
    let root = temp_dir("git-revert");
    let repo = Repo::init(&root);
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    // Steps long enough that the revert lands mid-rollout.
    let steps = "[{ weight: 30%, for: 10m }, { weight: 60%, for: 10m }]";
    repo.commit(&rollout(&stable, None, steps), "stable only");
    let gw = start_git(&root, &repo, Duration::from_secs(60), &[]);
    let load = Load::start(&gw, 4);
    let push = || async {
        let body = "{}";
        let sig = format!(
            "sha256={}",
            hex(&hmac_sha256(SECRET.as_bytes(), body.as_bytes()))
        );
        let r = hook(&gw, &[("x-hub-signature-256", &sig)], body).await;
        assert_eq!(r.status, 202, "{}", r.text());
    };

    repo.commit(
        &rollout(&stable, Some((&candidate, "v2")), steps),
        "candidate v2",
    );
    push().await;
    let canary = until_rollout(&gw, "v2 in Canary(0)", |s| phase(s) == "Canary(0)").await;
    assert_eq!(canary["weight"], "30%");

    repo.git(&["revert", "--no-edit", "HEAD"]);
    let revert = repo.head();
    let started = Instant::now();
    push().await;
    let back = until_rollout(&gw, "v2 rolled back", |s| phase(s) == "Previous").await;
    let took = started.elapsed();
    assert_eq!(back["weight"], "0%", "{back:#}");
    let reason = back["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains(&format!("withdrawn by config revision {revert}")),
        "{reason}"
    );
    assert!(back["candidate"]
        .as_str()
        .is_some_and(|c| c.starts_with("v2@")));
    let stalled_cond = back["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Stalled"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(stalled_cond["status"], "True", "{back:#}");
    gw.wait_logs("the rollback is logged with the revert", |l| {
        l.lines()
            .any(|line| line.contains("rollout transition") && line.contains(&revert))
    })
    .await;
    eprintln!("revert pushed → candidate at 0% in {took:?}");
    // The driver judges a new config when it is applied, not on its next tick (1 s).
    assert!(
        took < Duration::from_secs(1),
        "rollback {took:?} after the revert was pushed"
    );

    // Reverting the revert names v2 again: not retried.
    repo.git(&["revert", "--no-edit", "HEAD"]);
    let again = repo.head();
    push().await;
    until_status(&gw, Duration::from_secs(5), "re-revert applied", |s| {
        s["revision"] == again.as_str()
    })
    .await;
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let s = rollout_status(&gw).await;
        assert_eq!(
            (phase(&s).as_str(), &s["weight"]),
            ("Previous", &Value::from("0%")),
            "{s:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every user request went to stable once v2 was rolled back.
    let r = send(
        &client(),
        &gw.url("/v1/chat/completions"),
        &[("x-user-id", "after")],
        chat("m", "hi", false),
    )
    .await;
    assert_eq!(r.header("x-rollgate-variant"), Some("stable"));

    // A commit that changes the candidate starts a new rollout.
    repo.commit(
        &rollout(&stable, Some((&candidate, "v3")), steps),
        "candidate v3",
    );
    push().await;
    until_rollout(&gw, "v3 rolls out", |s| {
        s["candidate"]
            .as_str()
            .is_some_and(|c| c.starts_with("v3@"))
            && phase(s) != "Previous"
    })
    .await;
    load.finish_all_ok("through the revert").await;
}

/// Polls the origin's `refs/notes/rollgate` note on `sha` until `done` holds (bounded); the
/// note's YAML.
async fn until_note(
    gw: &Gateway,
    repo: &Repo,
    sha: &str,
    what: &str,
    done: impl Fn(&serde_yaml_ng::Value) -> bool,
) -> serde_yaml_ng::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo.dir)
            .args(["notes", "--ref", "rollgate", "show", sha])
            .output()
            .expect("git notes");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let doc = serde_yaml_ng::from_str(&text).unwrap_or(serde_yaml_ng::Value::Null);
        if done(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: note on {sha} is {text:?} {}; logs:\n{}",
            String::from_utf8_lossy(&out.stderr),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_withdrawn_mid_rollout_ends_at_previous_in_the_note_of_its_commit() {
    let _heavy = heavy().await;
    let root = temp_dir("git-withdrawn-note");
    let repo = Repo::init(&root);
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let steps = "[{ weight: 10%, for: 10m }, { weight: 60%, for: 10m }]";
    repo.commit(&rollout(&stable, None, steps), "stable only");
    let gw = start_git(&root, &repo, FAST_POLL, &["--push-notes".into()]);

    let started = repo.commit(
        &rollout(&stable, Some((&candidate, "v2")), steps),
        "candidate v2",
    );
    until_rollout(&gw, "v2 in Canary(0)", |s| phase(s) == "Canary(0)").await;
    let m =
        |doc: &serde_yaml_ng::Value, key: &str| doc["models"]["m"][key].as_str().map(str::to_owned);
    until_note(&gw, &repo, &started, "Canary note", |d| {
        m(d, "phase").as_deref() == Some("Canary")
    })
    .await;

    // Withdraw v2 for a static split on another candidate: v2 is rolled back (Previous), and
    // on the next step the model is Idle (no rollout plan) under the same commit.
    let withdrawn = repo.commit(
        &config(
            &stable,
            None,
            &format!(
                "    candidate: {{ endpoints: [\"{}\"], engine: vllm, revision: v3 }}\n    weight: 0%\n",
                candidate.url()
            ),
            "",
        ),
        "withdraw v2: static split on v3",
    );
    until_rollout(&gw, "Idle after the withdrawal", |s| phase(s) == "Idle").await;
    gw.wait_logs("the rollback is logged with the withdrawing commit", |l| {
        l.lines().any(|line| {
            line.contains("rollout transition")
                && line.contains(&withdrawn)
                && line.contains("Previous")
        })
    })
    .await;

    // The commit that started the rollout shows how it ended: rolled back, and by which commit.
    let doc = until_note(
        &gw,
        &repo,
        &started,
        "the rollback on the starting commit",
        |d| m(d, "phase").as_deref() == Some("Previous"),
    )
    .await;
    assert!(
        m(&doc, "candidate").is_some_and(|c| c.starts_with("v2@")),
        "{doc:?}"
    );
    assert_eq!(m(&doc, "weight").as_deref(), Some("0%"), "{doc:?}");
    let reason = m(&doc, "reason").unwrap_or_default();
    assert!(
        reason.contains(&format!("withdrawn by config revision {withdrawn}")),
        "{reason}"
    );
    // The withdrawing commit's own note is the state under its config (Idle), written too.
    let own = until_note(
        &gw,
        &repo,
        &withdrawn,
        "the withdrawing commit's note",
        |d| m(d, "phase").as_deref() == Some("Idle"),
    )
    .await;
    assert_eq!(
        own["revision"].as_str(),
        Some(withdrawn.as_str()),
        "{own:?}"
    );
    // The Idle that followed did not replace the outcome on the starting commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let doc = until_note(&gw, &repo, &started, "still Previous", |_| true).await;
    assert_eq!(m(&doc, "phase").as_deref(), Some("Previous"), "{doc:?}");
    let page = gw.metrics().await;
    assert_eq!(
        metric(&page, "rollgate_git_notes_total{result=\"dropped\"}"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_mode_refuses_unsigned_commits_and_applies_signed_ones() {
    let root = temp_dir("git-signed");
    let repo = Repo::init(&root);
    let keygen = |name: &str| {
        let key = root.join(name);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen")
            .success();
        assert!(ok, "ssh-keygen failed");
        key
    };
    let allowed = keygen("allowed");
    let other = keygen("other");
    let public = std::fs::read_to_string(allowed.with_extension("pub")).expect("pub key");
    let signers = root.join("allowed_signers");
    std::fs::write(
        &signers,
        format!("author@example.com namespaces=\"git\" {public}"),
    )
    .expect("signers");
    let signing_key = |key: &Path| format!("user.signingkey={}", key.display());
    let signed = |yaml: &str, msg: &str, key: &Path| {
        repo.commit_with(yaml, msg, &["gpg.format=ssh", &signing_key(key)], &["-S"])
    };
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let first = signed(
        &weights(&stable, &candidate, "10%"),
        "signed start",
        &allowed,
    );
    let gw = start_git(
        &root,
        &repo,
        FAST_POLL,
        &["--allowed-signers".into(), signers.into()],
    );
    assert_eq!(gw.status().await["revision"], first.as_str());

    let commits: [(&str, &dyn Fn() -> String); 2] = [
        ("unsigned", &|| {
            repo.commit(&weights(&stable, &candidate, "90%"), "unsigned")
        }),
        ("signed by another key", &|| {
            signed(&weights(&stable, &candidate, "80%"), "other key", &other)
        }),
    ];
    for (what, commit) in commits {
        let sha = commit();
        let (s, _) = until_status(&gw, Duration::from_secs(10), what, |s| {
            stalled(s).is_some_and(|c| c["revision"] == sha.as_str())
        })
        .await;
        let cond = stalled(&s).expect("stalled");
        let message = cond["errors"][0].as_str().unwrap_or("");
        assert!(
            message.starts_with(&format!("commit {sha} is not signed by an allowed key: ")),
            "{what}: {message}"
        );
        // git's `Good "git" signature … / No principal matched.` read like a success.
        assert!(!message.contains("Good"), "{what}: {message}");
        if what == "signed by another key" {
            assert!(
                message.contains("which is not in the allowed signers"),
                "{what}: {message}"
            );
        }
        assert_eq!(
            s["revision"],
            first.as_str(),
            "{what}: the last good keeps serving"
        );
        assert_eq!(s["models"][0]["desired_weight"], "10%");
    }
    let page = gw.metrics().await;
    assert_eq!(
        metric(&page, "rollgate_git_unsigned_commits_total"),
        Some(2.0)
    );
    assert_eq!(
        metric(&page, "rollgate_config_reload_total{result=\"invalid\"}"),
        Some(2.0)
    );

    let good = signed(&weights(&stable, &candidate, "25%"), "signed", &allowed);
    let (s, _) = until_status(&gw, Duration::from_secs(10), "signed commit applied", |s| {
        applied(s, &good, "25%")
    })
    .await;
    assert!(stalled(&s).is_none());
}

#[test]
fn run_takes_exactly_one_of_config_and_git() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
            .arg("run")
            .args(args)
            .output()
            .expect("run rollgate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--config", "a.yaml", "--git", "/srv/repo"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--config") && err.contains("--git"), "{err}");
    let (code, err) = run(&["--config", "a.yaml", "--branch", "dev"]);
    assert_eq!(code, Some(2), "Git flags need --git: {err}");
    let (code, err) = run(&[
        "--git",
        "/nonexistent/repo",
        "--git-dir",
        "/nonexistent/x",
        "--poll",
        "10ms",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at least 100ms"), "{err}");
}
