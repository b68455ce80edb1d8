//! The Git config source: a branch of a repository (local path, `file://`, `https://` with a
//! token from a file, `ssh://` with a key) fetched into a bare mirror with the `git` CLI; the
//! config is `git show <sha>:<path>` and its revision is the commit SHA. Polled with jitter and
//! fetched at once on `POST /hooks/git`; every commit goes through the reload funnel like a file
//! change. Optionally only commits with an SSH signature from an allowed key are applied.
//! Rollout status goes back as notes on the evaluated commit (`refs/notes/rollgate`), and on the
//! commit that started the rollout when its phase changes under a later one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use tokio::sync::mpsc;

use crate::reload::{Fetched, ReadError, ReloadTrigger, ReloaderHandle};

mod cli;
pub mod hook;
mod notes;

pub use notes::{note_content, NOTES_REF};

use cli::{Credentials, GitCli};
use notes::{Note, Origins, NOTE_RESULTS};

/// Longest one `git` command may run (a fetch over a slow link included).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Poll jitter: each wait is the interval ±10%, so replicas do not fetch in lockstep.
const JITTER: f64 = 0.1;

/// What `rollgate run --git ...` asks for.
#[derive(Clone, Debug)]
pub struct GitSettings {
    /// Remote URL or local path.
    pub url: String,
    pub branch: String,
    /// Path of the config file inside the repository.
    pub path: String,
    pub poll: Duration,
    /// The bare mirror (created when missing).
    pub git_dir: PathBuf,
    pub token_file: Option<PathBuf>,
    pub ssh_key: Option<PathBuf>,
    pub webhook_secret_file: Option<PathBuf>,
    pub allowed_signers: Option<PathBuf>,
    pub push_notes: bool,
    pub command_timeout: Duration,
}

/// An opened Git source. Shared by the funnel, the poller, the webhook and the notes writer.
#[derive(Debug)]
pub struct GitSource {
    settings: GitSettings,
    cli: GitCli,
    webhook_secret: Option<Vec<u8>>,
    /// One git operation on the mirror at a time (fetches and notes both move refs).
    repo: tokio::sync::Mutex<()>,
    stats: Stats,
    notes_tx: mpsc::Sender<Note>,
    notes_rx: Mutex<Option<mpsc::Receiver<Note>>>,
    /// The commit that started each model's rollout (its later notes go there too).
    origins: Mutex<Origins>,
}

#[derive(Debug, Default)]
struct Stats {
    /// `[success, failure]`.
    fetches: [AtomicU64; 2],
    last_fetch_unix: AtomicU64,
    /// Commits refused in signed mode.
    unsigned: AtomicU64,
    notes: [AtomicU64; NOTE_RESULTS.len()],
}

/// `rollgate_git_*` metrics.
#[derive(Debug)]
pub struct GitCollector(Arc<GitSource>);

// === impl GitSource ===

impl GitSource {
    /// Creates the bare mirror when missing and reads the webhook secret; fetches nothing yet.
    pub async fn open(settings: GitSettings) -> Result<Arc<GitSource>, String> {
        let webhook_secret = match &settings.webhook_secret_file {
            Some(f) => Some(read_secret(f)?),
            None => None,
        };
        let creds = Credentials {
            token_file: settings.token_file.clone(),
            ssh_key: settings.ssh_key.clone(),
        };
        let cli = GitCli::new(settings.git_dir.clone(), creds, settings.command_timeout);
        if !cli.dir().join("HEAD").exists() {
            std::fs::create_dir_all(cli.dir())
                .map_err(|e| format!("git dir {}: {e}", cli.dir().display()))?;
            cli.run(&["init", "--bare", "--quiet"], None).await?;
        }
        let (notes_tx, notes_rx) = notes::channel();
        Ok(Arc::new(GitSource {
            settings,
            cli,
            webhook_secret,
            repo: tokio::sync::Mutex::new(()),
            stats: Stats::default(),
            notes_tx,
            notes_rx: Mutex::new(Some(notes_rx)),
            origins: Mutex::new(Origins::default()),
        }))
    }

    pub fn settings(&self) -> &GitSettings {
        &self.settings
    }

    /// `git <url> <branch>:<path>`, without credentials.
    pub fn describe(&self) -> String {
        format!(
            "git {} {}:{}",
            cli::redact(&self.settings.url),
            self.settings.branch,
            self.settings.path
        )
    }

    /// The webhook secret, when `--webhook-secret-file` was given.
    pub fn webhook_secret(&self) -> Option<&[u8]> {
        self.webhook_secret.as_deref()
    }

    /// Fetches the branch and reads the config at its head: the text only for a revision that
    /// `known` does not recognise, after the signature check in signed mode.
    pub(crate) async fn read(
        &self,
        known: &(dyn Fn(&str) -> bool + Sync),
        offline_ok: bool,
    ) -> Result<Fetched, ReadError> {
        let _repo = self.repo.lock().await;
        let sha = match self.fetch().await {
            Ok(sha) => sha,
            // At startup a remote outage must not keep the gateway down when the mirror
            // already holds the branch: serve what was last fetched; polls catch up.
            Err(e) if offline_ok => match self.mirror_head().await {
                Some(sha) => {
                    tracing::warn!(error = %e, revision = %sha, "remote unreachable; starting from the mirror's last fetched commit");
                    sha
                }
                None => return Err(ReadError::Unreadable(e)),
            },
            Err(e) => return Err(ReadError::Unreadable(e)),
        };
        if known(&sha) {
            return Ok(Fetched::Known(sha));
        }
        if let Err(why) = self.verify(&sha).await {
            self.stats.unsigned.fetch_add(1, Relaxed);
            return Err(ReadError::Refused {
                error: format!("commit {sha} is not signed by an allowed key: {why}"),
                revision: sha,
            });
        }
        let spec = format!("{sha}:{}", self.settings.path);
        match self.cli.run(&["show", &spec], None).await {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Ok(Fetched::New {
                    revision: sha,
                    text,
                }),
                Err(_) => Err(ReadError::Refused {
                    error: format!("{} in commit {sha} is not UTF-8", self.settings.path),
                    revision: sha,
                }),
            },
            Err(e) => Err(ReadError::Refused {
                error: format!("{} not readable in commit {sha}: {e}", self.settings.path),
                revision: sha,
            }),
        }
    }

    /// The branch head as last fetched into the mirror, if any.
    async fn mirror_head(&self) -> Option<String> {
        let spec = format!("refs/remotes/origin/{}^{{commit}}", self.settings.branch);
        let out = self
            .cli
            .run(&["rev-parse", "--verify", "--quiet", &spec], None)
            .await
            .ok()?;
        let sha = String::from_utf8_lossy(&out).trim().to_owned();
        (!sha.is_empty()).then_some(sha)
    }

    /// Fetches the watched branch into the mirror; its head commit SHA.
    async fn fetch(&self) -> Result<String, String> {
        let tracking = format!("refs/remotes/origin/{}", self.settings.branch);
        let refspec = format!("+refs/heads/{}:{tracking}", self.settings.branch);
        let fetched = self
            .cli
            .run(
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    &self.settings.url,
                    &refspec,
                ],
                None,
            )
            .await;
        let result = match fetched {
            Ok(_) => {
                let spec = format!("{tracking}^{{commit}}");
                self.cli
                    .run(&["rev-parse", "--verify", "--quiet", &spec], None)
                    .await
                    .map(|out| String::from_utf8_lossy(&out).trim().to_owned())
            }
            Err(e) => Err(e),
        };
        let (idx, result) = match result {
            Ok(sha) if !sha.is_empty() => (0, Ok(sha)),
            Ok(_) => (1, Err(format!("{tracking}: no commit"))),
            Err(e) => (1, Err(format!("{}: {}", self.describe(), self.scrub(&e)))),
        };
        self.stats.fetches[idx].fetch_add(1, Relaxed);
        if idx == 0 {
            self.stats.last_fetch_unix.store(unix_now(), Relaxed);
        }
        result
    }

    /// A git message without the URL's credentials, if the URL carries any.
    pub(crate) fn scrub(&self, msg: &str) -> String {
        msg.replace(&self.settings.url, &cli::redact(&self.settings.url))
    }

    /// Signed mode: `git verify-commit` against the allowed signers file.
    async fn verify(&self, sha: &str) -> Result<(), String> {
        let Some(signers) = &self.settings.allowed_signers else {
            return Ok(());
        };
        let signers = format!("gpg.ssh.allowedSignersFile={}", signers.display());
        let args = ["-c", "gpg.format=ssh", "-c", &signers, "verify-commit", sha];
        self.cli
            .run(&args, None)
            .await
            .map(drop)
            .map_err(|e| verify_refusal(&e))
    }

    /// Triggers a reload every poll interval (±10% jitter) until the funnel is gone.
    pub async fn poll(self: Arc<Self>, reloader: ReloaderHandle) {
        loop {
            tokio::time::sleep(jittered(self.settings.poll, fastrand::f64())).await;
            // A full queue means a reload is already pending; it fetches anyway.
            let _ = reloader.trigger(ReloadTrigger::Poll);
        }
    }

    /// Registers `rollgate_git_*` metrics.
    pub fn register_metrics(
        self: &Arc<Self>,
        registry: &mut prometheus_client::registry::Registry,
    ) {
        registry.register_collector(Box::new(GitCollector(self.clone())));
    }
}

/// Why `git verify-commit` refused, from its error. git names the command by its first
/// argument (`-c`); an unsigned commit fails without any message. A key missing from the
/// allowed signers reads `Good "git" signature with … key SHA256:… / No principal matched.`:
/// the "Good" is about the signature's maths, not the key, and read as a success, so that case
/// is said in words and git's line about it is left out.
fn verify_refusal(error: &str) -> String {
    let msg = error.strip_prefix("git -c: ").unwrap_or(error);
    if msg == cli::NO_MESSAGE {
        return "no signature".to_owned();
    }
    let mut parts = msg.split(" / ");
    let Some(good) = parts
        .next()
        .filter(|_| msg.contains("No principal matched"))
    else {
        return msg.to_owned();
    };
    let Some(key) = good.strip_prefix("Good \"git\" signature with ") else {
        return format!("signed by a key not in the allowed signers (git: {msg})");
    };
    let rest: Vec<&str> = parts.collect();
    format!(
        "signed by {key}, which is not in the allowed signers (git: {})",
        rest.join(" / ")
    )
}

/// `every` scaled by a factor in `[0.9, 1.1)` given `unit` in `[0, 1)`.
pub fn jittered(every: Duration, unit: f64) -> Duration {
    every.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0))
}

fn read_secret(file: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("webhook secret file {}: {e}", file.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("webhook secret file {} is empty", file.display()));
    }
    Ok(secret.as_bytes().to_vec())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl GitCollector ===

impl Collector for GitCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0.stats;
        let mut f = enc.encode_descriptor(
            "rollgate_git_fetch",
            "Fetches of the watched branch by result (success, failure)",
            None,
            MetricType::Counter,
        )?;
        for (i, result) in ["success", "failure"].iter().enumerate() {
            f.encode_family(&[("result", *result)])?
                .encode_counter::<[(&str, &str); 0], _, u64>(&s.fetches[i].load(Relaxed), None)?;
        }
        let mut f = enc.encode_descriptor(
            "rollgate_git_last_fetch_timestamp_seconds",
            "Unix time of the last successful fetch",
            None,
            MetricType::Gauge,
        )?;
        f.encode_gauge(&s.last_fetch_unix.load(Relaxed))?;
        let mut f = enc.encode_descriptor(
            "rollgate_git_unsigned_commits",
            "Commits refused in signed mode (no signature from an allowed key)",
            None,
            MetricType::Counter,
        )?;
        f.encode_counter::<[(&str, &str); 0], _, u64>(&s.unsigned.load(Relaxed), None)?;
        let mut f = enc.encode_descriptor(
            "rollgate_git_notes",
            "Rollout status notes by result (written, write_failed, pushed, push_failed, dropped)",
            None,
            MetricType::Counter,
        )?;
        for (i, result) in NOTE_RESULTS.iter().enumerate() {
            f.encode_family(&[("result", *result)])?
                .encode_counter::<[(&str, &str); 0], _, u64>(&s.notes[i].load(Relaxed), None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_signature_says_why_in_words() {
        let cases = [
            ("git -c: failed (no message)", "no signature"),
            (
                "git -c: Good \"git\" signature with ED25519 key SHA256:Xk/P78 / No principal matched.",
                "signed by ED25519 key SHA256:Xk/P78, which is not in the allowed signers \
                 (git: No principal matched.)",
            ),
            // A shape git may change: still said in words, with git's whole text.
            (
                "git -c: No principal matched.",
                "signed by a key not in the allowed signers (git: No principal matched.)",
            ),
            (
                "git -c: Could not verify signature.",
                "Could not verify signature.",
            ),
        ];
        for (error, want) in cases {
            let got = verify_refusal(error);
            assert_eq!(got, want, "{error}");
            assert!(!got.starts_with("Good"), "{got}");
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let every = Duration::from_secs(15);
        assert_eq!(jittered(every, 0.0), Duration::from_millis(13_500));
        assert_eq!(jittered(every, 0.5), every);
        assert!(jittered(every, 0.999_999) < Duration::from_millis(16_500));
        assert!(jittered(every, 0.999_999) > Duration::from_millis(16_499));
        // Out-of-range inputs are clamped, never outside the band.
        assert_eq!(jittered(every, -3.0), Duration::from_millis(13_500));
        assert_eq!(jittered(every, 7.0), Duration::from_millis(16_500));
        let mut rng = fastrand::Rng::with_seed(7);
        let waits: Vec<Duration> = (0..1000).map(|_| jittered(every, rng.f64())).collect();
        assert!(waits
            .iter()
            .all(|w| (13_500..16_500).contains(&w.as_millis())));
        // Spread over the band, not stuck at one end.
        assert!(waits.iter().any(|w| w.as_millis() < 14_000));
        assert!(waits.iter().any(|w| w.as_millis() > 16_000));
    }
}
