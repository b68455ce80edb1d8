//! Acceptance: progressive delivery. A good candidate walks every canary step to Full without a
//! failed user request; a candidate that starts failing during a step is rolled back at once and
//! not retried; `kill -9` mid-step resumes at the same step with the same weight; operators can
//! pause and pin (authenticated and audited), and a pin survives a restart.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rollgate_loadtest::sim::{Faults, Ratio, Sim};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::*;

/// Request loops driving user traffic at once; each request comes from a new user.
const LOAD_TASKS: usize = 6;
/// Period of `GET /rollouts` polls. Also the resolution of the rollback time measured below.
const POLL: Duration = Duration::from_millis(10);
/// Gates every test uses: failures judged alone and against stable, and a latency ceiling far
/// above the simulators' few milliseconds (a ratio to stable would make a slow CI box flaky).
const GATES: &str =
    "gates: { error_rate: { max: 1%, max_vs_stable: +0.5% }, latency_p99: { max: 2s } }";
/// Samples per variant a gate needs in a step's window; small, so that steps last seconds.
const MIN_SAMPLES: u32 = 30;
/// Longest an awaited rollout phase may take to show. Generous: each step needs its samples,
/// which a slow machine sends slowly; here whole rollouts take about 10 s.
const PHASE_DEADLINE: Duration = Duration::from_secs(45);
/// The operator token of the tests that use the admin API.
const TOKEN: &str = "s3cret-operator-token";

/// One user request as the client saw it.
#[derive(Debug)]
struct Sent {
    started: Instant,
    ended: Instant,
    status: u16,
    variant: Option<String>,
}

/// Continuous user traffic until [`Load::finish`], every request from a new user
/// (`x-user-id: {tag}-{n}`), so each canary step sees its share of users.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Vec<Sent>>,
}

/// A test's own temp dir (state, token), removed when the test ends, failed or not.
struct Scratch(std::path::PathBuf);

/// Phases of one model's rollout as `GET /rollouts` showed them, in order, once per visit,
/// with the weight first seen in each.
#[derive(Debug, Default)]
struct Phases(Vec<(String, String)>);

// === impl Scratch ===

impl Drop for Scratch {
    fn drop(&mut self) {
        // Already gone is fine.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// === impl Load ===

impl Load {
    fn start(gw: &Gateway, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let (c, url) = (client(), gw.url("/v1/chat/completions"));
        let mut tasks = JoinSet::new();
        for _ in 0..LOAD_TASKS {
            let (c, url, stop, next) = (c.clone(), url.clone(), stop.clone(), next.clone());
            let tag = tag.to_owned();
            tasks.spawn(async move {
                let mut sent = Vec::new();
                while !stop.load(Relaxed) {
                    let user = format!("{tag}-{}", next.fetch_add(1, Relaxed));
                    let started = Instant::now();
                    let r = send(&c, &url, &[("x-user-id", &user)], chat("m", "hi", false)).await;
                    sent.push(Sent {
                        started,
                        ended: Instant::now(),
                        status: r.status,
                        variant: r.header("x-rollgate-variant").map(str::to_owned),
                    });
                }
                sent
            });
        }
        Load { stop, tasks }
    }

    /// Stops the loops and returns every request, once all in flight have been answered.
    async fn finish(mut self) -> Vec<Sent> {
        self.stop.store(true, Relaxed);
        let mut all = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            all.extend(done.expect("load task"));
        }
        all
    }
}

// === impl Phases ===

impl Phases {
    /// Polls `GET /rollouts` until `done` holds for model `m` (bounded); returns that status
    /// and the instant its response arrived.
    async fn until(
        &mut self,
        gw: &Gateway,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> (Value, Instant) {
        let deadline = Instant::now() + PHASE_DEADLINE;
        loop {
            let s = rollout_status(gw).await;
            let at = Instant::now();
            self.record(&s);
            if done(&s) {
                return (s, at);
            }
            assert!(
                at < deadline,
                "{what}: not within {PHASE_DEADLINE:?}; phases {:?}; now {s:#}; logs:\n{}",
                self.0,
                gw.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn record(&mut self, s: &Value) {
        let p = phase(s);
        // Before the driver's first step there is no status yet.
        if s.is_null() {
            return;
        }
        if self.0.last().map(|(last, _)| last) != Some(&p) {
            let weight = s["weight"].as_str().unwrap_or("?").to_owned();
            self.0.push((p, weight));
        }
    }

    fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(p, _)| p.as_str()).collect()
    }

    /// The phases seen were visited in `order`, none twice, and include every one of `must`.
    /// (A phase shorter than a poll may be missed, so only the long ones are required.)
    fn assert_walk(&self, order: &[&str], must: &[&str]) {
        let seen = self.names();
        let mut rest = order.iter();
        for p in &seen {
            assert!(
                rest.any(|o| o == p),
                "phase {p} out of order or repeated: saw {:?}, expected an ordered walk of {order:?}",
                self.0
            );
        }
        for m in must {
            assert!(seen.contains(m), "phase {m} never seen: {:?}", self.0);
        }
    }

    /// The weight shown when `phase` was first seen.
    fn weight(&self, phase: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(p, _)| p == phase)
            .map(|(_, w)| w.as_str())
    }
}

/// A config for model `m`: stable and candidate simulators, cohorts by `x-user-id`, the given
/// rollout `plan` (a YAML flow mapping). With `dir`, state goes to `dir/state`, and the admin
/// token is read from `dir/token` where that file exists.
fn rollout_config(stable: &Sim, candidate: &Sim, plan: &str, dir: Option<&Path>) -> String {
    let state = dir.map_or(String::new(), |d| {
        format!("state_dir: {:?}\n", d.join("state"))
    });
    let token = dir
        .map(|d| d.join("token"))
        .filter(|t| t.exists())
        .map_or(String::new(), |t| format!(", token_file: {t:?}"));
    format!(
        "listen: 127.0.0.1:0\nworkers: 2\n{state}admin: {{ listen: 127.0.0.1:0{token} }}\n\
         models:\n  - name: m\n    stable: {{ endpoints: [\"{}\"], engine: vllm }}\n    \
         candidate: {{ endpoints: [\"{}\"], engine: vllm, revision: v2 }}\n    \
         cohort: {{ header: x-user-id }}\n    rollout: {plan}\n",
        stable.url(),
        candidate.url()
    )
}

/// A plan with these canary steps (`(weight, for)`), [`GATES`] and [`MIN_SAMPLES`].
fn plan(steps: &[(&str, &str)]) -> String {
    let steps: Vec<String> = steps
        .iter()
        .map(|(w, d)| format!("{{ weight: {w}, for: {d} }}"))
        .collect();
    format!(
        "{{ steps: [{}], {GATES}, min_samples: {MIN_SAMPLES} }}",
        steps.join(", ")
    )
}

/// The status (`True`/`False`) of a kstatus condition, or `missing`.
fn condition<'a>(s: &'a Value, kind: &str) -> &'a str {
    s["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("missing")
}

fn is(s: &Value, want: &str) -> bool {
    phase(s) == want
}

/// Asserts that every request was answered 200 by the variant its header names; returns how
/// many the candidate answered.
fn all_ok(sent: &[Sent], what: &str) -> usize {
    let failed: Vec<&Sent> = sent.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} user requests failed, e.g. {:?}",
        failed.len(),
        sent.len(),
        failed.first()
    );
    on(sent, "candidate")
}

fn on(sent: &[Sent], variant: &str) -> usize {
    sent.iter()
        .filter(|s| s.variant.as_deref() == Some(variant))
        .count()
}

/// One request per user, a few at a time; true where the candidate answered. All must be 200.
async fn on_candidate(gw: &Gateway, users: &[String]) -> Vec<bool> {
    let (c, url) = (client(), gw.url("/v1/chat/completions"));
    let mut out = Vec::with_capacity(users.len());
    for chunk in users.chunks(LOAD_TASKS * 2) {
        let mut batch = JoinSet::new();
        for (i, user) in chunk.iter().enumerate() {
            let (c, url, user) = (c.clone(), url.clone(), user.clone());
            batch.spawn(async move {
                let r = send(&c, &url, &[("x-user-id", &user)], chat("m", "hi", false)).await;
                assert_eq!(r.status, 200, "{user}: {}", r.text());
                (i, r.header("x-rollgate-variant") == Some("candidate"))
            });
        }
        let mut got = vec![false; chunk.len()];
        while let Some(done) = batch.join_next().await {
            let (i, cand) = done.expect("request task");
            got[i] = cand;
        }
        out.extend(got);
    }
    out
}

fn users(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-{i}")).collect()
}

/// `POST /rollouts/m/{action}` with an optional bearer token, as `actor`.
async fn command(gw: &Gateway, action: &str, token: Option<&str>, body: &str) -> Reply {
    let url = gw.admin_url(&format!("/rollouts/m/{action}"));
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("x-rollgate-actor", "oncall-alice")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b));
    }
    send(&client(), &url, &headers, body.to_owned()).await
}

/// The audit log's lines, each parsed.
fn audit_lines(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("state/audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

/// Polls for `how_long` and asserts that every status seen satisfies `holds`: for "nothing
/// changes" claims, which need a window of several driver ticks.
async fn holds_for(gw: &Gateway, how_long: Duration, what: &str, holds: impl Fn(&Value) -> bool) {
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        let s = rollout_status(gw).await;
        assert!(holds(&s), "{what}: {s:#}");
        tokio::time::sleep(POLL * 5).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_candidate_reaches_full_through_every_step_without_a_failed_request() {
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let steps = [("5%", "2s"), ("25%", "2s"), ("50%", "2s")];
    let gw = Gateway::start(&rollout_config(&stable, &candidate, &plan(&steps), None));
    let began = Instant::now();
    let load = Load::start(&gw, "user");

    let mut phases = Phases::default();
    let (full, _) = phases.until(&gw, "Full", |s| is(s, "Full")).await;
    let took = began.elapsed();
    let sent = load.finish().await;

    let served = all_ok(&sent, "during the rollout");
    eprintln!(
        "rollout to Full in {took:?}: {} user requests, {served} on the candidate; phases {:?}",
        sent.len(),
        phases.0
    );
    phases.assert_walk(
        &[
            "ValidateHealth",
            "Canary(0)",
            "Canary(1)",
            "Canary(2)",
            "Promote",
            "Full",
        ],
        &["Canary(0)", "Canary(1)", "Canary(2)", "Full"],
    );
    for (i, (w, _)) in steps.iter().enumerate() {
        assert_eq!(
            phases.weight(&format!("Canary({i})")),
            Some(*w),
            "{phases:?}"
        );
    }
    assert_eq!(full["weight"], "100%", "{full:#}");
    assert_eq!(
        full["candidate"].as_str().map(|c| c.starts_with("v2@")),
        Some(true)
    );
    // Stable and candidate name no artifact or runtime: a revision rollout.
    assert_eq!(full["change"], "revision", "{full:#}");
    assert_eq!(condition(&full, "Ready"), "True", "{full:#}");
    assert!(served > 0, "the candidate served no user during the canary");

    // Every user, new or not, is now on the candidate.
    let after = on_candidate(&gw, &users("after", 100)).await;
    assert!(
        after.iter().all(|c| *c),
        "a user still reached stable after Full"
    );
    let status = gw.status().await;
    assert_eq!(status["rollouts"][0]["phase"], "Full", "{status:#}");
    assert_eq!(status["models"][0]["weight"], "100%", "{status:#}");
}

/// Canary steps held long: only a gate can end one early.
const LONG_STEPS: [(&str, &str); 2] = [("25%", "60s"), ("50%", "60s")];

async fn sim(name: &str) -> Sim {
    start_sim(name, "m", |_| {}).await
}

/// A gateway rolling `candidate` out over [`LONG_STEPS`] under user load, once the first
/// canary step shows; returns its status then.
async fn first_canary_step(stable: &Sim, candidate: &Sim) -> (Gateway, Load, Phases, Value) {
    let plan = plan(&LONG_STEPS);
    let gw = Gateway::start(&rollout_config(stable, candidate, &plan, None));
    let load = Load::start(&gw, "user");
    let mut phases = Phases::default();
    let (canary, _) = phases
        .until(&gw, "first canary step", |s| is(s, "Canary(0)"))
        .await;
    (gw, load, phases, canary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_candidate_is_rolled_back_at_once_and_not_retried() {
    let _heavy = heavy().await;
    let (stable, candidate) = (sim("stable").await, sim("candidate").await);
    let steps = LONG_STEPS;
    let (gw, load, mut phases, canary) = first_canary_step(&stable, &candidate).await;
    let fingerprint = canary["candidate"].clone();

    candidate.set_faults(Faults {
        error_rate: Ratio::new(0.05).expect("ratio"),
        ..Faults::default()
    });
    let fault_at = Instant::now();
    let (rolled, zero_at) = phases
        .until(&gw, "rollback", |s| {
            is(s, "Previous") && s["weight"] == "0%"
        })
        .await;
    let sent = load.finish().await;

    let to_zero = zero_at - fault_at;
    let failed_at: Vec<Instant> = sent
        .iter()
        .filter(|s| s.status != 200 && s.ended < zero_at)
        .map(|s| s.ended)
        .collect();
    let first_failure = *failed_at
        .iter()
        .min()
        .expect("a failure before the rollback");
    let last_failure = *failed_at
        .iter()
        .max()
        .expect("a failure before the rollback");
    let failures = sent.iter().filter(|s| s.status != 200).count();
    let cand_in_breach = sent
        .iter()
        .filter(|s| s.started >= fault_at && s.variant.as_deref() == Some("candidate"))
        .count();
    // Each end point is when a /rollouts response first showed Previous at 0 % (polled every
    // POLL, so up to one poll late); the gateway swaps traffic just before it publishes that.
    eprintln!(
        "rollback: fault set → weight 0 %: {to_zero:?}; first failed user response → weight \
         0 %: {:?}; last failed user response before the rollback → weight 0 %: {:?}; \
         {cand_in_breach} candidate requests after the fault, {failures} failed; reason: {}",
        zero_at - first_failure,
        zero_at - last_failure,
        rolled["reason"]
    );

    // Users on stable never noticed; only candidate-routed requests failed, and none of those
    // began after the rollback showed.
    for s in &sent {
        match s.variant.as_deref() {
            Some("stable") => assert_eq!(s.status, 200, "a stable request failed: {s:?}"),
            Some("candidate") => {
                assert!(
                    s.started < zero_at,
                    "routed to the candidate after rollback: {s:?}"
                );
                assert!(s.status == 200 || s.status == 500, "{s:?}");
            }
            _ => panic!("no variant header: {s:?}"),
        }
    }
    assert!(phases.0.iter().all(|(p, _)| p != "Canary(1)"), "{phases:?}");
    let reason = rolled["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("error_rate"),
        "reason does not name the gate: {reason}"
    );
    assert_eq!(rolled["candidate"], fingerprint, "{rolled:#}");
    assert_eq!(condition(&rolled, "Stalled"), "True", "{rolled:#}");

    // From now on no user reaches the candidate, even once it is healthy again and the config
    // is reloaded: the same candidate is not retried.
    let reached = candidate.requests_total();
    candidate.set_faults(Faults::default());
    let yaml = rollout_config(&stable, &candidate, &plan(&steps), None);
    let outcome = gw.apply_config(&format!("drain_timeout: 7s\n{yaml}")).await;
    assert_eq!(outcome["result"], "success", "{outcome}");
    let load = Load::start(&gw, "later");
    holds_for(
        &gw,
        Duration::from_millis(3_000),
        "rolled back for good",
        |s| is(s, "Previous") && s["weight"] == "0%" && s["candidate"] == fingerprint,
    )
    .await;
    let later = load.finish().await;
    assert_eq!(all_ok(&later, "after the rollback"), 0);
    assert!(!later.is_empty());
    assert_eq!(
        candidate.requests_total(),
        reached,
        "the candidate got requests after rollback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_goes_down_mid_canary_is_rolled_back_and_no_user_sees_it() {
    let _heavy = heavy().await;
    let (stable, candidate) = (sim("stable").await, sim("candidate").await);
    let (gw, load, mut phases, _) = first_canary_step(&stable, &candidate).await;
    // The candidate's server stops (its pod is gone): in-flight answers finish, then every
    // connection to it is refused.
    let down_at = Instant::now();
    candidate.shutdown().await;
    let (rolled, zero_at) = phases
        .until(&gw, "rollback", |s| {
            is(s, "Previous") && s["weight"] == "0%"
        })
        .await;
    let sent = load.finish().await;
    // Candidate-bound requests after the fall were answered by stable
    // (`routing.candidate_fallback`): not one user request failed.
    all_ok(&sent, "candidate down mid-canary");
    let after = sent.iter().filter(|s| s.started > down_at).count();
    assert!(after > 0, "no traffic after the candidate went down");
    let reason = rolled["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("ejection") || reason.contains("error_rate"),
        "reason: {reason}"
    );
    let m = gw.metrics().await;
    let fallbacks = metric(&m, "rollgate_proxy_candidate_fallbacks_total{model=\"m\"}");
    assert!(fallbacks.is_some_and(|n| n > 0.0), "{m}");
    eprintln!(
        "candidate down → weight 0 %: {:?}; {after} requests after, none failed, {} fell back; \
         reason: {reason}",
        zero_at - down_at,
        fallbacks.unwrap_or_default()
    );
    drop(gw);
    stable.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_canary_resumes_at_the_same_step_with_the_same_weight() {
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = Scratch(temp_dir("rollout-kill"));
    let dir = &dir.0;
    // Step 2 is held long enough to kill and restart inside it.
    let steps = [("10%", "1s"), ("30%", "6s"), ("60%", "1s")];
    let mut gw = Gateway::start(&rollout_config(
        &stable,
        &candidate,
        &plan(&steps),
        Some(dir.as_path()),
    ));
    let load = Load::start(&gw, "user");
    let mut phases = Phases::default();
    phases
        .until(&gw, "second canary step", |s| is(s, "Canary(1)"))
        .await;
    all_ok(&load.finish().await, "before the kill");
    let sticky = users("sticky", 200);
    let before = on_candidate(&gw, &sticky).await;
    let at_kill = rollout_status(&gw).await;
    assert!(
        is(&at_kill, "Canary(1)"),
        "the step ended before the kill: {at_kill:#}"
    );
    assert_eq!(at_kill["weight"], "30%");

    gw.signal("KILL");
    let exit = gw.wait(Duration::from_secs(5)).await;
    assert!(!exit.success(), "{exit:?}");
    // What the restarted process will read: the step and the weight at the kill.
    let saved: Value = serde_json::from_slice(
        &std::fs::read(dir.join("state/rollout-state.json")).expect("state file"),
    )
    .expect("state JSON");
    let m = &saved["m"];
    assert_eq!(
        (&m["phase"]["phase"], &m["phase"]["step"], &m["weight"]),
        (&"Canary".into(), &1.into(), &300_000.into()),
        "{saved:#}"
    );

    let again = gw.start_again();
    let first = rollout_status(&again).await;
    assert!(
        is(&first, "Canary(1)"),
        "first status after restart: {first:#}"
    );
    assert_eq!(first["weight"], "30%", "{first:#}");
    assert_eq!(first["candidate"], at_kill["candidate"]);
    // The same users are on the candidate as before the kill: the weight never reset.
    let after = on_candidate(&again, &sticky).await;
    let share = after.iter().filter(|c| **c).count();
    assert_eq!(before, after, "users changed variant across the restart");
    eprintln!(
        "restart: {share} of {} sticky users stayed on the candidate",
        sticky.len()
    );

    let load = Load::start(&again, "resumed");
    let mut resumed = Phases::default();
    resumed.record(&first);
    resumed.until(&again, "Full", |s| is(s, "Full")).await;
    all_ok(&load.finish().await, "after the restart");
    eprintln!(
        "phases before the kill {:?}, after {:?}",
        phases.0, resumed.0
    );
    resumed.assert_walk(
        &["Canary(1)", "Canary(2)", "Promote", "Full"],
        &["Canary(1)", "Canary(2)", "Full"],
    );
    assert_eq!(resumed.weight("Canary(2)"), Some("60%"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_pin_hold_the_rollout_are_audited_and_the_pin_survives_a_restart() {
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = Scratch(temp_dir("rollout-operator"));
    let dir = &dir.0;
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token file");
    let steps = [("10%", "2s"), ("50%", "1s")];
    let mut gw = Gateway::start(&rollout_config(
        &stable,
        &candidate,
        &plan(&steps),
        Some(dir.as_path()),
    ));
    let mut phases = Phases::default();
    phases
        .until(&gw, "first canary step", |s| is(s, "Canary(0)"))
        .await;
    // Longer than the step's hold plus a driver tick: automation would have moved on.
    let hold = Duration::from_millis(3_500);

    // Without the token, or with a wrong one: refused, and nothing changes.
    for token in [None, Some("wrong")] {
        let r = command(&gw, "pause", token, r#"{"reason":"x"}"#).await;
        assert_eq!(r.status, 401, "{token:?}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let r = command(&gw, "pin", Some(TOKEN), r#"{"reason":"no weight"}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(rollout_status(&gw).await["paused"].is_null());

    let r = command(
        &gw,
        "pause",
        Some(TOKEN),
        r#"{"reason":"investigating p99"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"]["paused"], "investigating p99");
    let load = Load::start(&gw, "user");
    holds_for(&gw, hold, "paused at step 1", |s| {
        is(s, "Canary(0)") && s["weight"] == "10%" && s["paused"] == "investigating p99"
    })
    .await;
    // Held by the pause, not by a lack of evidence: the gates pass.
    let s = rollout_status(&gw).await;
    assert_eq!(s["gates"]["verdict"], "pass", "{s:#}");

    let r = command(
        &gw,
        "pin",
        Some(TOKEN),
        r#"{"reason":"hold at 30%","weight":"30%"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"]["weight"], "30%");
    let r = command(&gw, "resume", Some(TOKEN), r#"{"reason":"p99 fine"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    holds_for(&gw, hold, "pinned at 30 % after resume", |s| {
        is(s, "Canary(0)") && s["weight"] == "30%" && s["pinned"] == "30%" && s["paused"].is_null()
    })
    .await;
    all_ok(&load.finish().await, "while paused and pinned");
    let sticky = users("sticky", 1_000);
    let pinned_users = on_candidate(&gw, &sticky).await;
    let share = pinned_users.iter().filter(|c| **c).count() as f64 / sticky.len() as f64;
    // Fixed keys make the share deterministic; 4 sd of a binomial share over 1,000 keys bounds it.
    let tolerance = 4.0 * (0.3 * 0.7 / sticky.len() as f64).sqrt();
    assert!(
        (share - 0.3).abs() <= tolerance,
        "candidate share {share} at a 30 % pin"
    );

    let audit = audit_lines(dir);
    let actions: Vec<&str> = audit.iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(actions, ["pause", "pin", "resume"], "{audit:#?}");
    for a in &audit {
        assert!(a["time"].as_f64().is_some_and(|t| t > 1.6e9), "{a}");
        assert_eq!(a["actor"], "oncall-alice", "{a}");
        assert_eq!(a["model"], "m", "{a}");
        assert!(a["reason"].as_str().is_some_and(|r| !r.is_empty()), "{a}");
        assert!(a["before"].is_object() && a["after"].is_object(), "{a}");
        assert!(
            !a.to_string().contains(TOKEN),
            "the token reached the audit log"
        );
    }
    assert_eq!(audit[0]["after"]["paused"], "investigating p99");
    assert_eq!(audit[1]["before"]["weight"], "10%");
    assert_eq!(audit[1]["after"]["weight"], "30%");
    assert_eq!(audit[1]["after"]["pinned"], "30%");
    assert_eq!(audit[1]["weight"], "30%");
    assert!(audit[2]["after"]["paused"].is_null(), "{:#}", audit[2]);
    assert_eq!(audit[2]["after"]["pinned"], "30%");

    // A clean restart keeps the pin.
    gw.signal("TERM");
    let exit = gw.wait(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}; logs:\n{}", gw.logs());
    assert!(!gw.logs().contains(TOKEN), "the token reached a log line");
    let again = gw.start_again();
    let first = rollout_status(&again).await;
    assert!(
        is(&first, "Canary(0)"),
        "first status after restart: {first:#}"
    );
    assert_eq!(
        (&first["weight"], &first["pinned"]),
        (&"30%".into(), &"30%".into())
    );
    assert_eq!(on_candidate(&again, &sticky).await, pinned_users);

    // Unpinned, the automation picks up where it was.
    let load = Load::start(&again, "unpinned");
    let r = command(&again, "unpin", Some(TOKEN), r#"{"reason":"carry on"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut resumed = Phases::default();
    resumed.until(&again, "Full", |s| is(s, "Full")).await;
    all_ok(&load.finish().await, "after the unpin");
    resumed.assert_walk(
        &["Canary(0)", "Canary(1)", "Promote", "Full"],
        &["Canary(1)", "Full"],
    );
    let audit = audit_lines(dir);
    let actions: Vec<&str> = audit.iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(actions, ["pause", "pin", "resume", "unpin"], "{audit:#?}");
}

/// A state file that does not parse is not overwritten: it is moved aside, the startup error
/// says where, and the rollouts start fresh with a new file beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_moved_aside_and_named_in_the_startup_error() {
    let stable = sim("stable").await;
    let candidate = sim("candidate").await;
    let dir = Scratch(temp_dir("rollout-corrupt"));
    let dir = &dir.0;
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let bad = br#"{"m": {"phase": "#;
    std::fs::write(state.join("rollout-state.json"), bad).expect("bad state");
    let plan = plan(&LONG_STEPS);
    let gw = Gateway::start(&rollout_config(&stable, &candidate, &plan, Some(dir)));
    wait_status(&gw, "a fresh rollout", |s| {
        s["rollouts"][0]["phase"]
            .as_str()
            .is_some_and(|p| p != "Idle")
    })
    .await;
    let kept: Vec<_> = std::fs::read_dir(&state)
        .expect("read state dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("rollout-state.json.corrupt-"))
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).expect("kept file"), bad);
    let name = kept[0].display().to_string();
    let logs = gw
        .wait_logs("the startup error", |l| l.contains("moved aside to"))
        .await;
    assert!(logs.contains(&name), "{name} not named in:\n{logs}");
    // The fresh state is saved beside it, not over it.
    wait_status(&gw, "a state file", |_| {
        std::fs::read(state.join("rollout-state.json"))
            .ok()
            .is_some_and(|b| serde_json::from_slice::<Value>(&b).is_ok())
    })
    .await;
    assert_eq!(std::fs::read(&kept[0]).expect("still kept"), bad);
}
