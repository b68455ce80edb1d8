//! The rollout state machine. Pure: no clock, no I/O; table-tested.

use rollgate_config::{Approval, OnMetricErrors, Rollout, PPM_MAX};
use serde::{Deserialize, Serialize};

use super::gates::{Evaluation, Verdict};

/// Where a model's rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", content = "step")]
pub enum Phase {
    /// No candidate or no rollout plan: traffic is as the config says, unless an operator
    /// pinned the candidate's weight.
    Idle,
    Deploy,
    ValidateHealth,
    Shadow,
    /// Canary at `steps[i]`.
    Canary(usize),
    Promote,
    Full,
    Rollback,
    /// Rolled back: stable serves everything; the failed revision waits for a config change.
    Previous,
}

/// The persisted state of one model's rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// Fingerprint of the candidate this state is about.
    pub candidate: Option<String>,
    /// The config revision (a Git commit with a Git source) that first named `candidate`: the
    /// commit that started its rollout. Kept in the state file so that it outlasts a restart.
    #[serde(default)]
    pub started_revision: Option<String>,
    pub phase: Phase,
    /// Unix milliseconds when the current phase (or step) began.
    pub entered_ms: u64,
    /// Candidate weight and mirror sample in ppm, as last applied.
    pub weight: u32,
    pub mirror: u32,
    /// Candidates rolled back; not retried until the config changes them.
    pub failed: Vec<String>,
    pub cooldown_until_ms: u64,
    /// Consecutive inconclusive evaluations caused by metric errors.
    pub metric_error_streak: u32,
    pub approved: bool,
    /// Operator pause (reason); automation holds, traffic stays. Only a rollout can be paused:
    /// the pause ends with it (the plan or the candidate leaves the config).
    pub paused: Option<String>,
    /// Operator pin of the candidate weight (ppm), mirroring off; automation holds. A pin holds
    /// a static split (no plan) too, and outlasts the plan; it ends with the candidate.
    pub pinned: Option<u32>,
    /// Why the last transition happened.
    pub reason: String,
}

/// Health of the candidate's endpoints as the driver sees them. A failure carries the check
/// that failed and its answer (`GET http://…/health answered 503`), for the rollback to name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Passing,
    /// No candidate endpoint passes its check.
    Failing(String),
    /// Some endpoints pass, not all.
    Partial(String),
    /// Not read yet.
    Unknown,
}

/// The synthetic suite's latest run for this candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyntheticState {
    /// No suite configured.
    None,
    Pending,
    Passed,
    Failed(String),
}

/// Operator commands (break-glass), applied before automation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Pause(String),
    Resume,
    Abort(String),
    Promote,
    Approve,
    Pin(u32),
    Unpin,
}

#[derive(Debug)]
pub struct Inputs<'a> {
    pub now_ms: u64,
    /// Revision of the config being evaluated (commit SHA under Git), named when a config
    /// change withdraws a candidate mid-rollout.
    pub revision: &'a str,
    /// Fingerprint of the configured candidate, if any.
    pub candidate: Option<&'a str>,
    pub rollout: Option<&'a Rollout>,
    /// Gate evaluation over the current phase's window.
    pub evaluation: Option<&'a Evaluation>,
    pub health: Health,
    pub synthetic: &'a SyntheticState,
    pub command: Option<Command>,
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The operator command was refused (nothing it asked for changed); tell the caller why.
    Refuse(String),
    /// One snapshot swap: candidate weight and mirror sample (ppm).
    SetTraffic {
        weight: u32,
        mirror: u32,
    },
    /// One snapshot swap: the config's `weight` and `shadow` serve again (no rollout and no pin
    /// directs the traffic any more).
    ReleaseTraffic,
    /// Start a new observation window (a phase or step began).
    ResetWindow,
    /// Run the synthetic suite against the candidate now.
    RunSynthetic,
    Persist,
    Publish,
    /// Idempotent cleanup after a rollback or promotion.
    Cleanup,
}

// === impl RolloutState ===

impl RolloutState {
    pub fn idle() -> RolloutState {
        RolloutState {
            candidate: None,
            started_revision: None,
            phase: Phase::Idle,
            entered_ms: 0,
            weight: 0,
            mirror: 0,
            failed: Vec::new(),
            cooldown_until_ms: 0,
            metric_error_streak: 0,
            approved: false,
            paused: None,
            pinned: None,
            reason: String::new(),
        }
    }

    /// Whether this state sets the model's traffic (a rollout, or a pin), rather than the
    /// config's `weight` and `shadow`.
    pub fn directs_traffic(&self) -> bool {
        directs(self.phase, self.pinned)
    }

    fn enter(&mut self, phase: Phase, now_ms: u64, reason: impl Into<String>) {
        self.phase = phase;
        self.entered_ms = now_ms;
        self.metric_error_streak = 0;
        self.reason = reason.into();
    }
}

/// One step of the state machine.
pub fn decide(state: &RolloutState, inputs: &Inputs<'_>) -> (RolloutState, Vec<Action>) {
    let mut s = state.clone();
    let mut actions = Vec::new();
    let before = (
        s.weight,
        s.mirror,
        s.phase,
        s.paused.clone(),
        s.pinned,
        s.approved,
    );

    if in_progress(s.phase) && s.candidate.is_some() && s.candidate.as_deref() != inputs.candidate {
        // The config no longer names the candidate being rolled out (a revert, or a newer
        // candidate): it is rolled back at once; a different candidate starts on the next step.
        withdraw(&mut s, inputs.revision, inputs.now_ms);
        return finish(state, s, before, actions);
    }
    let (Some(candidate), Some(plan)) = (inputs.candidate, inputs.rollout) else {
        unplanned(&mut s, inputs, &mut actions);
        return finish(state, s, before, actions);
    };
    if s.candidate.as_deref() != Some(candidate) {
        new_candidate(&mut s, candidate, inputs.revision, inputs.now_ms);
    }
    if let Some(cmd) = inputs.command.clone() {
        match refusal(&s, &cmd, true, true) {
            Some(why) => actions.push(Action::Refuse(why)),
            None => command(&mut s, cmd, plan, inputs.now_ms),
        }
    }
    if s.paused.is_none() && s.pinned.is_none() {
        advance(&mut s, plan, inputs, &mut actions);
    }
    if s.phase == Phase::Previous
        && state.phase != Phase::Previous
        && s.candidate == state.candidate
    {
        // Rollback order: traffic, persist and publish come first (see `finish`), cleanup last.
        actions.push(Action::Cleanup);
    }
    if let Some(pin) = s.pinned {
        s.weight = pin;
        s.mirror = 0;
    }
    finish(state, s, before, actions)
}

type Before = (u32, u32, Phase, Option<String>, Option<u32>, bool);

fn directs(phase: Phase, pinned: Option<u32>) -> bool {
    phase != Phase::Idle || pinned.is_some()
}

/// No candidate, or no rollout plan: the config's split serves, unless a pin holds the
/// candidate's weight. Only `pin` and `unpin` act here (on a candidate); the rollout commands
/// have no rollout to act on and are refused.
fn unplanned(s: &mut RolloutState, i: &Inputs<'_>, actions: &mut Vec<Action>) {
    // A withdrawal stays visible until the config names a candidate again.
    let keep_withdrawal = s.phase == Phase::Previous && withdrawn(s) && i.candidate.is_none();
    if s.phase != Phase::Idle && !keep_withdrawal {
        s.enter(Phase::Idle, i.now_ms, "no candidate or no rollout plan");
        s.candidate = None;
        s.started_revision = None;
    }
    // A pause holds a rollout; with none left it would only claim to hold something.
    s.paused = None;
    if i.candidate.is_none() {
        // Nothing is left for a pin to hold (as when a rollout's candidate is withdrawn).
        s.pinned = None;
    }
    if let Some(cmd) = &i.command {
        match refusal(s, cmd, i.candidate.is_some(), i.rollout.is_some()) {
            Some(why) => actions.push(Action::Refuse(why)),
            None => match cmd {
                Command::Pin(w) => s.pinned = Some((*w).min(PPM_MAX)),
                Command::Unpin => s.pinned = None,
                _ => {}
            },
        }
    }
    match s.pinned {
        Some(pin) if s.phase == Phase::Idle => (s.weight, s.mirror) = (pin, 0),
        // Idle traffic is the config's split; the state's numbers are not read.
        None if s.phase == Phase::Idle => (s.weight, s.mirror) = (0, 0),
        _ => {}
    }
}

/// Why an operator command cannot act on this state (None: it can). `candidate` and `plan`:
/// whether the config names a candidate and a rollout plan for the model.
fn refusal(s: &RolloutState, cmd: &Command, candidate: bool, plan: bool) -> Option<String> {
    let name = cmd.name();
    let why = match cmd {
        _ if !candidate => {
            format!("the model has no candidate: there is no candidate weight or rollout to {name}")
        }
        Command::Pin(_) => return None,
        Command::Unpin if s.pinned.is_none() => "nothing is pinned".to_owned(),
        Command::Unpin => return None,
        _ if !plan => format!(
            "the model has no rollout plan (a static split): there is no rollout to {name}; \
             `pin` holds the candidate's weight"
        ),
        Command::Pause(_) if matches!(s.phase, Phase::Previous | Phase::Full | Phase::Idle) => {
            format!("the rollout is over ({:?}): nothing to {name}", s.phase)
        }
        Command::Pause(_) => match &s.paused {
            Some(reason) => format!("the rollout is already paused: {reason}"),
            None => return None,
        },
        Command::Resume if s.paused.is_none() => "the rollout is not paused".to_owned(),
        Command::Promote | Command::Approve if matches!(s.phase, Phase::Previous | Phase::Full) => {
            format!("the rollout is over ({:?}): nothing to {name}", s.phase)
        }
        Command::Promote if s.phase == Phase::Promote => {
            "the rollout is already promoting (with `approval: manual` it waits for `approve`)"
                .to_owned()
        }
        Command::Abort(_) if s.phase == Phase::Previous => {
            "the rollout is already rolled back (Previous)".to_owned()
        }
        _ => return None,
    };
    Some(why)
}

/// Appends traffic, window, persist and publish actions for what changed, in contract order.
fn finish(
    old: &RolloutState,
    s: RolloutState,
    before: Before,
    mut actions: Vec<Action>,
) -> (RolloutState, Vec<Action>) {
    // Leaving Idle (or pinning an Idle model), the rollout or the pin takes the traffic over
    // from the configured split even when its weight equals Idle's 0: `weight` and `shadow`
    // are not read while a plan or a pin directs the traffic.
    let (was, directed) = (directs(before.2, before.4), s.directs_traffic());
    let traffic = directed && ((s.weight, s.mirror) != (before.0, before.1) || !was);
    let mut ordered = Vec::new();
    if traffic {
        ordered.push(Action::SetTraffic {
            weight: s.weight,
            mirror: s.mirror,
        });
    }
    if was && !directed {
        ordered.push(Action::ReleaseTraffic);
    }
    let phase_changed = s.phase != before.2 || s.entered_ms != old.entered_ms;
    if phase_changed {
        ordered.push(Action::ResetWindow);
    }
    if s != *old {
        ordered.push(Action::Persist);
    }
    if phase_changed
        || traffic
        || was != directed
        || (s.paused.clone(), s.pinned, s.approved) != (before.3, before.4, before.5)
    {
        ordered.push(Action::Publish);
    }
    ordered.append(&mut actions);
    (s, ordered)
}

// === impl Command ===

impl Command {
    /// The action's name in the admin API (`POST /rollouts/{model}/{name}`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Pause(_) => "pause",
            Command::Resume => "resume",
            Command::Abort(_) => "abort",
            Command::Promote => "promote",
            Command::Approve => "approve",
            Command::Pin(_) => "pin",
            Command::Unpin => "unpin",
        }
    }
}

fn new_candidate(s: &mut RolloutState, candidate: &str, revision: &str, now: u64) {
    s.candidate = Some(candidate.to_owned());
    s.started_revision = Some(revision.to_owned());
    // A pause held the last candidate's rollout, not this one. A pin holds the model's traffic
    // and survives source changes until released (docs/break-glass.md); a rollback, the
    // withdrawal of a candidate mid-rollout included, has released it already.
    s.paused = None;
    s.approved = false;
    s.weight = 0;
    s.mirror = 0;
    if s.failed.iter().any(|f| f == candidate) {
        s.enter(
            Phase::Previous,
            now,
            "this candidate was rolled back; change it in the config to retry",
        );
    } else {
        s.enter(Phase::Deploy, now, "new candidate");
    }
}

/// Phases in which a candidate is being rolled out (traffic or verdicts pending).
fn in_progress(p: Phase) -> bool {
    matches!(
        p,
        Phase::Deploy
            | Phase::ValidateHealth
            | Phase::Shadow
            | Phase::Canary(_)
            | Phase::Promote
            | Phase::Rollback
    )
}

/// Start of the reason of a rollback caused by the config withdrawing the candidate.
const WITHDRAWN: &str = "candidate withdrawn by config revision";
/// Promote's reason while `approval: manual` waits for `approve`: GitOps verdicts hold on it.
pub const AWAITING_APPROVAL: &str = "waiting for manual approval";

fn withdrawn(s: &RolloutState) -> bool {
    s.reason.starts_with(WITHDRAWN)
}

/// Rolls back a candidate that the config stopped naming: weight 0 now, recorded as failed so
/// that naming it again does not retry it. No cooldown: the next candidate is a new decision.
fn withdraw(s: &mut RolloutState, revision: &str, now: u64) {
    let from = s.phase;
    if let Some(c) = s.candidate.clone() {
        if !s.failed.contains(&c) {
            s.failed.push(c);
        }
    }
    s.weight = 0;
    s.mirror = 0;
    s.pinned = None;
    s.approved = false;
    s.enter(
        Phase::Previous,
        now,
        format!("{WITHDRAWN} {revision} (during {from:?}); rolled back"),
    );
}

fn command(s: &mut RolloutState, cmd: Command, plan: &Rollout, now: u64) {
    match cmd {
        Command::Pause(reason) => s.paused = Some(reason),
        Command::Resume => s.paused = None,
        Command::Pin(w) => s.pinned = Some(w.min(PPM_MAX)),
        Command::Unpin => {
            // The plan's traffic for the phase comes back at once: a pin must not leave the
            // candidate at the pinned weight for the rest of a step.
            if s.pinned.take().is_some() {
                if let Some((weight, mirror)) = plan_traffic(s.phase, plan) {
                    s.weight = weight;
                    s.mirror = mirror;
                }
            }
        }
        Command::Approve => s.approved = true,
        Command::Abort(reason) => rollback(s, plan, now, format!("aborted by operator: {reason}")),
        // `refusal` turned away a promotion of a rollout that is over. Skipping the steps is
        // the operator's call; skipping `approval: manual` is not: Promote still waits for
        // `approve`, which a policy may require of another token.
        Command::Promote => s.enter(Phase::Promote, now, "promoted by operator"),
    }
}

/// The candidate weight and mirror sample the plan sets in a phase (None: keep what is live).
fn plan_traffic(phase: Phase, plan: &Rollout) -> Option<(u32, u32)> {
    match phase {
        Phase::Idle | Phase::Deploy | Phase::ValidateHealth | Phase::Rollback | Phase::Previous => {
            Some((0, 0))
        }
        Phase::Shadow => Some((0, plan.shadow.as_ref().map_or(0, |p| p.sample.get()))),
        Phase::Canary(k) => plan.steps.get(k).map(|st| (st.weight.get(), 0)),
        Phase::Full => Some((PPM_MAX, 0)),
        Phase::Promote => None,
    }
}

fn rollback(s: &mut RolloutState, plan: &Rollout, now: u64, reason: String) {
    if let Some(c) = s.candidate.clone() {
        if !s.failed.contains(&c) {
            s.failed.push(c);
        }
    }
    s.weight = 0;
    s.mirror = 0;
    s.pinned = None;
    s.cooldown_until_ms = now.saturating_add(plan.cooldown.as_millis() as u64);
    s.enter(Phase::Previous, now, reason);
}

fn advance(s: &mut RolloutState, plan: &Rollout, i: &Inputs<'_>, actions: &mut Vec<Action>) {
    let now = i.now_ms;
    let elapsed = now.saturating_sub(s.entered_ms);
    match s.phase {
        Phase::Idle | Phase::Previous | Phase::Full => {}
        Phase::Rollback => rollback(s, plan, now, s.reason.clone()),
        Phase::Deploy => {
            if now < s.cooldown_until_ms {
                // The end, not a countdown: the status (and GitOps events) change once.
                let until = crate::clock::rfc3339_unix(s.cooldown_until_ms.div_ceil(1000));
                s.reason = format!("cooling down after a rollback until {until}");
                return;
            }
            s.weight = 0;
            s.mirror = 0;
            s.enter(Phase::ValidateHealth, now, "candidate deployed; validating");
            if *i.synthetic != SyntheticState::None {
                actions.push(Action::RunSynthetic);
            }
        }
        Phase::ValidateHealth => {
            if let SyntheticState::Failed(why) = i.synthetic {
                return rollback(s, plan, now, format!("synthetic checks failed: {why}"));
            }
            // A failing health check is waited out until `validate_timeout`: a model server still
            // loading its weights refuses connections or answers 503 for minutes. It has no user
            // traffic meanwhile.
            let synthetic_ok = matches!(i.synthetic, SyntheticState::None | SyntheticState::Passed);
            if i.health == Health::Passing && synthetic_ok {
                next_after(s, plan, None, now);
            } else if elapsed >= plan.validate_timeout.as_millis() as u64 {
                let why = match &i.health {
                    Health::Failing(check) => {
                        format!("no candidate endpoint answers its health check: {check}")
                    }
                    Health::Partial(check) => {
                        format!("not every candidate endpoint answers its health check: {check}")
                    }
                    Health::Unknown => "the candidate's health has not been read".to_owned(),
                    Health::Passing => "the synthetic suite has not passed".to_owned(),
                };
                let timeout = plan.validate_timeout;
                rollback(
                    s,
                    plan,
                    now,
                    format!("validation timed out after {timeout:?}: {why}"),
                );
            } else if matches!(i.health, Health::Failing(_)) {
                s.reason = "waiting for the candidate's health check to pass".into();
            }
        }
        Phase::Shadow | Phase::Canary(_) => gated(s, plan, i, elapsed, actions),
        Phase::Promote => {
            if plan.approval == Approval::Manual && !s.approved {
                s.reason = AWAITING_APPROVAL.into();
                return;
            }
            s.weight = PPM_MAX;
            s.mirror = 0;
            s.enter(Phase::Full, now, "promoted");
            actions.push(Action::Cleanup);
        }
    }
}

/// Shadow and Canary: fail → rollback at once; pass after the hold time → next; metric errors
/// past the limit → hold or abort.
fn gated(
    s: &mut RolloutState,
    plan: &Rollout,
    i: &Inputs<'_>,
    elapsed: u64,
    actions: &mut Vec<Action>,
) {
    let now = i.now_ms;
    let (hold_ms, label) = match s.phase {
        Phase::Shadow => (
            plan.shadow
                .as_ref()
                .map_or(0, |p| p.duration.as_millis() as u64),
            "shadow".to_owned(),
        ),
        Phase::Canary(k) => (
            plan.steps
                .get(k)
                .map_or(0, |st| st.duration.as_millis() as u64),
            format!("step {}", k + 1),
        ),
        _ => return,
    };
    if let SyntheticState::Failed(why) = i.synthetic {
        return rollback(
            s,
            plan,
            now,
            format!("synthetic checks failed during {label}: {why}"),
        );
    }
    let Some(eval) = i.evaluation else { return };
    match eval.verdict {
        Verdict::Fail => {
            let why: Vec<String> = eval
                .results
                .iter()
                .filter(|r| r.verdict == Verdict::Fail)
                .map(|r| format!("{}: {}", r.gate, r.reason))
                .collect();
            rollback(
                s,
                plan,
                now,
                format!("gate failed during {label}: {}", why.join("; ")),
            );
        }
        Verdict::Inconclusive => {
            if eval.metric_error {
                s.metric_error_streak += 1;
                if s.metric_error_streak >= plan.metric_errors.limit {
                    // Which gates could not read what, as of this evaluation.
                    let why: Vec<String> = (eval.results.iter())
                        .filter(|r| r.metric_error)
                        .map(|r| format!("{}: {}", r.gate, r.reason))
                        .collect();
                    let unreadable = format!(
                        "signals unreadable {} times in a row: {}",
                        s.metric_error_streak,
                        why.join("; ")
                    );
                    if plan.metric_errors.then == OnMetricErrors::Abort {
                        return rollback(s, plan, now, unreadable);
                    }
                    s.reason = format!("holding: {unreadable}");
                }
            }
        }
        Verdict::Pass => {
            s.metric_error_streak = 0;
            if elapsed >= hold_ms {
                next_after(s, plan, Some(s.phase), now);
                if *i.synthetic != SyntheticState::None {
                    actions.push(Action::RunSynthetic);
                }
            }
        }
    }
}

/// The phase after `from` (None = after ValidateHealth) in the plan's order.
fn next_after(s: &mut RolloutState, plan: &Rollout, from: Option<Phase>, now: u64) {
    let first_step = if plan.steps.is_empty() {
        Phase::Promote
    } else {
        Phase::Canary(0)
    };
    let next = match from {
        None if plan.shadow.is_some() => Phase::Shadow,
        None | Some(Phase::Shadow) => first_step,
        Some(Phase::Canary(k)) if k + 1 < plan.steps.len() => Phase::Canary(k + 1),
        _ => Phase::Promote,
    };
    let (weight, mirror) = match next {
        Phase::Shadow => (0, plan.shadow.as_ref().map_or(0, |p| p.sample.get())),
        Phase::Canary(k) => (plan.steps.get(k).map_or(0, |st| st.weight.get()), 0),
        _ => (s.weight, 0),
    };
    s.weight = weight;
    s.mirror = mirror;
    let why = if from.is_none() {
        "validated"
    } else {
        "gates passed"
    };
    let reason = match next {
        Phase::Shadow => format!("{why}; mirroring {}", pct(mirror)),
        Phase::Canary(k) => format!("{why}; canary step {} at {}", k + 1, pct(weight)),
        _ => format!("{why}; promoting"),
    };
    s.enter(next, now, reason);
}

fn pct(ppm: u32) -> String {
    rollgate_config::Ppm::new(ppm).map_or_else(|| format!("{ppm}ppm"), |p| p.to_string())
}

#[cfg(test)]
mod tests;
