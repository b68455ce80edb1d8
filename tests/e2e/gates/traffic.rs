//! User traffic and rollout watching for the gate tests: loops of user requests (each from a
//! new user), and a record of every status `GET /rollouts` showed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rollgate_loadtest::sim::Sim;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::*;

/// Period of `GET /rollouts` polls; also the resolution of the reaction times the tests print.
pub(super) const POLL: Duration = Duration::from_millis(20);
/// Longest an awaited phase may take. The driver ticks every second and a gate needs its
/// samples; here each awaited phase comes within about 3 s, so this only bounds a broken run
/// on a slow machine.
pub(super) const DEADLINE: Duration = Duration::from_secs(15);

/// One user request as the client saw it.
#[derive(Debug)]
pub(super) struct Sent {
    status: u16,
    variant: Option<String>,
    /// A streamed answer ended with `data: [DONE]` (always true for plain JSON answers).
    complete: bool,
}

/// Continuous user traffic until [`Load::finish`]: `tasks` loops, each request from a new user
/// (`x-user-id: {tag}-{n}`), so a canary step sees its share of users.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered so far.
    pub(super) count: Arc<AtomicU64>,
    tasks: JoinSet<Vec<Sent>>,
}

/// Every status of model `m` seen by polling `GET /rollouts`, in order.
#[derive(Default)]
pub(super) struct Watch {
    pub(super) seen: Vec<Value>,
}

// === impl Load ===

impl Load {
    /// `pace` is a pause between one loop's requests (zero: closed loop).
    pub(super) fn start(
        gw: &Gateway,
        tag: &str,
        tasks: usize,
        stream: bool,
        pace: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let (c, url) = (client(), gw.url("/v1/chat/completions"));
        let mut set = JoinSet::new();
        for _ in 0..tasks {
            let (c, url, stop, next) = (c.clone(), url.clone(), stop.clone(), next.clone());
            let answered = answered.clone();
            let tag = tag.to_owned();
            set.spawn(async move {
                let mut sent = Vec::new();
                while !stop.load(Relaxed) {
                    let user = format!("{tag}-{}", next.fetch_add(1, Relaxed));
                    let prompt = format!("question {}", sent.len() % 20);
                    let r = send(
                        &c,
                        &url,
                        &[("x-user-id", &user)],
                        chat("m", &prompt, stream),
                    )
                    .await;
                    sent.push(Sent {
                        status: r.status,
                        variant: r.header("x-rollgate-variant").map(str::to_owned),
                        complete: !stream || r.text().trim_end().ends_with("data: [DONE]"),
                    });
                    answered.fetch_add(1, Relaxed);
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                }
                sent
            });
        }
        Load {
            stop,
            count: answered,
            tasks: set,
        }
    }

    /// Waits (bounded) until `n` requests have been answered.
    pub(super) async fn answered(&self, n: u64) {
        let deadline = Instant::now() + DEADLINE;
        while self.count.load(Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "{n} user requests not answered within {DEADLINE:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the loops and returns every request, once all in flight have been answered.
    pub(super) async fn finish(mut self) -> Vec<Sent> {
        self.stop.store(true, Relaxed);
        let mut all = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            all.extend(done.expect("load task"));
        }
        all
    }
}

/// Every request got 200 with a complete answer; returns how many the candidate answered.
pub(super) fn all_ok(sent: &[Sent], what: &str) -> usize {
    let failed: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.status != 200 || !s.complete)
        .collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} user requests failed or were cut, e.g. {:?}",
        failed.len(),
        sent.len(),
        failed.first()
    );
    assert!(!sent.is_empty(), "{what}: no user request was sent");
    sent.iter()
        .filter(|s| s.variant.as_deref() == Some("candidate"))
        .count()
}

/// After a rollback: stops `load`, then sends a fresh round of user traffic and checks that
/// none of it reached the candidate, neither as seen by users (`x-rollgate-variant`) nor by
/// the candidate simulator (its count of `POST /v1/*`, mirrors included, does not move).
/// Returns the requests `load` sent, all checked to be 200.
pub(super) async fn assert_candidate_gets_nothing(
    gw: &Gateway,
    candidate: &Sim,
    load: Load,
    what: &str,
) -> Vec<Sent> {
    let before = load.finish().await;
    all_ok(&before, what);
    let seen = candidate.requests_total();
    let after = Load::start(gw, "after-rollback", 3, false, Duration::ZERO);
    // Enough users for a 10 % (or more) share to show many times over.
    after.answered(300).await;
    let after = after.finish().await;
    assert_eq!(
        all_ok(&after, "after the rollback"),
        0,
        "{what}: users reached the candidate after the rollback"
    );
    assert_eq!(
        candidate.requests_total(),
        seen,
        "{what}: the candidate received requests after the rollback"
    );
    before
}

// === impl Watch ===

impl Watch {
    /// Polls `GET /rollouts` until `done` holds for model `m` (bounded); returns that status
    /// and when it was seen.
    pub(super) async fn until(
        &mut self,
        gw: &Gateway,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> (Value, Instant) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = rollout_status(gw).await;
            let at = Instant::now();
            if !s.is_null() {
                self.seen.push(s.clone());
            }
            if done(&s) {
                return (s, at);
            }
            assert!(
                at < deadline,
                "{what}: not within {DEADLINE:?}; phases {:?}; now {s:#}; logs:\n{}",
                self.phases(),
                gw.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls for `how_long`, asserting `holds` on every status.
    pub(super) async fn holds(
        &mut self,
        gw: &Gateway,
        how_long: Duration,
        what: &str,
        holds: impl Fn(&Value) -> bool,
    ) {
        let end = Instant::now() + how_long;
        while Instant::now() < end {
            let s = rollout_status(gw).await;
            self.seen.push(s.clone());
            assert!(holds(&s), "{what}: {s:#}; phases {:?}", self.phases());
            tokio::time::sleep(POLL).await;
        }
    }

    /// The phases seen, each once per visit, in order.
    pub(super) fn phases(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.seen.iter().map(phase) {
            if out.last() != Some(&p) {
                out.push(p);
            }
        }
        out
    }

    /// No phase outside `allowed` was ever seen.
    pub(super) fn only(&self, allowed: &[&str], what: &str) {
        let phases = self.phases();
        assert!(
            phases.iter().all(|p| allowed.contains(&p.as_str())),
            "{what}: phases {phases:?}, expected only {allowed:?}"
        );
    }
}

pub(super) fn is(s: &Value, want: &str) -> bool {
    phase(s) == want
}

/// Gate `name`'s result in an evaluation (`gates` or `transition_gates` of a status).
pub(super) fn gate<'a>(evaluation: &'a Value, name: &str) -> Option<&'a Value> {
    evaluation["results"]
        .as_array()?
        .iter()
        .find(|r| r["gate"] == name)
}

pub(super) fn reason(s: &Value) -> &str {
    s["reason"].as_str().unwrap_or_default()
}

pub(super) fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}
