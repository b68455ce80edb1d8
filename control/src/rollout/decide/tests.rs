use std::time::Duration;

use rollgate_config::{
    Approval, MetricErrors, OnMetricErrors, Ppm, Rollout, ShadowPhase, Step, PPM_MAX,
};

use super::*;
use crate::rollout::gates::{Evaluation, GateResult, Verdict};

fn plan() -> Rollout {
    Rollout {
        synthetic: None,
        shadow: Some(ShadowPhase {
            sample: ppm(200_000),
            duration: Duration::from_secs(60),
            min_pairs: 10,
        }),
        steps: vec![
            Step {
                weight: ppm(10_000),
                duration: Duration::from_secs(60),
            },
            Step {
                weight: ppm(250_000),
                duration: Duration::from_secs(60),
            },
        ],
        gates: Default::default(),
        min_samples: 10,
        metric_errors: MetricErrors {
            limit: 3,
            then: OnMetricErrors::Hold,
        },
        approval: Approval::Auto,
        cooldown: Duration::from_secs(300),
        validate_timeout: Duration::from_secs(120),
    }
}

fn ppm(v: u32) -> Ppm {
    Ppm::new(v).expect("ppm")
}

fn eval(verdict: Verdict, metric_error: bool) -> Evaluation {
    Evaluation {
        verdict,
        metric_error,
        results: vec![GateResult {
            gate: "error_rate",
            verdict,
            value: None,
            threshold: None,
            samples: 100,
            reason: "because".into(),
            metric_error,
        }],
    }
}

#[derive(Clone)]
struct Tick<'a> {
    at_s: u64,
    eval: Option<Evaluation>,
    health: Health,
    synthetic: SyntheticState,
    command: Option<Command>,
    candidate: Option<&'a str>,
}

fn at(at_s: u64) -> Tick<'static> {
    Tick {
        at_s,
        eval: None,
        health: Health::Passing,
        synthetic: SyntheticState::None,
        command: None,
        candidate: Some("v2"),
    }
}

fn run(state: &RolloutState, plan: &Rollout, step: &Tick<'_>) -> (RolloutState, Vec<Action>) {
    let inputs = Inputs {
        now_ms: step.at_s * 1000,
        revision: "rev-test",
        candidate: step.candidate,
        rollout: Some(plan),
        evaluation: step.eval.as_ref(),
        health: step.health.clone(),
        synthetic: &step.synthetic,
        command: step.command.clone(),
    };
    decide(state, &inputs)
}

fn pass(at_s: u64) -> Tick<'static> {
    Tick {
        eval: Some(eval(Verdict::Pass, false)),
        ..at(at_s)
    }
}

#[test]
fn a_good_candidate_walks_every_phase_to_full() {
    let p = plan();
    let mut s = RolloutState::idle();
    let expected = [
        // Deploy is passed through on the first tick: the candidate is known, validation starts.
        (at(0), Phase::ValidateHealth, 0, 0),
        (at(2), Phase::Shadow, 0, 200_000),
        (pass(30), Phase::Shadow, 0, 200_000), // held: 60 s not over
        (pass(62), Phase::Canary(0), 10_000, 0),
        (pass(100), Phase::Canary(0), 10_000, 0),
        (pass(122), Phase::Canary(1), 250_000, 0),
        (pass(182), Phase::Promote, 250_000, 0),
        (at(183), Phase::Full, PPM_MAX, 0),
        (pass(999), Phase::Full, PPM_MAX, 0),
    ];
    for (i, (step, phase, weight, mirror)) in expected.iter().enumerate() {
        let (next, actions) = run(&s, &p, step);
        assert_eq!(
            (next.phase, next.weight, next.mirror),
            (*phase, *weight, *mirror),
            "row {i}: {}",
            next.reason
        );
        if (next.weight, next.mirror) != (s.weight, s.mirror) {
            assert_eq!(
                actions.first(),
                Some(&Action::SetTraffic {
                    weight: *weight,
                    mirror: *mirror
                }),
                "row {i}: traffic first"
            );
        }
        s = next;
    }
}

#[test]
fn leaving_idle_sets_the_traffic_even_at_zero() {
    // Idle serves the configured split (`weight`, `shadow`); a rollout replaces it with its
    // own, so that no user reaches a candidate before validation, nor one rolled back before.
    let p = plan();
    let none = Some(&Action::SetTraffic {
        weight: 0,
        mirror: 0,
    });
    let (s, actions) = run(&RolloutState::idle(), &p, &at(0));
    assert_eq!((s.phase, actions.first()), (Phase::ValidateHealth, none));
    let failed = RolloutState {
        failed: vec!["v2".into()],
        ..RolloutState::idle()
    };
    let (s, actions) = run(&failed, &p, &at(0));
    assert_eq!((s.phase, actions.first()), (Phase::Previous, none));
    let no_candidate = Tick {
        candidate: None,
        ..at(0)
    };
    let (s, actions) = run(&RolloutState::idle(), &p, &no_candidate);
    assert_eq!((s.phase, actions), (Phase::Idle, Vec::new()));
}

#[test]
fn a_failing_gate_rolls_back_at_once_traffic_first_and_is_not_retried() {
    let p = plan();
    let mut s = RolloutState::idle();
    for step in [at(0), at(1), at(2), pass(62)] {
        s = run(&s, &p, &step).0;
    }
    assert_eq!(s.phase, Phase::Canary(0));
    let (s, actions) = run(
        &s,
        &p,
        &Tick {
            eval: Some(eval(Verdict::Fail, false)),
            ..at(63)
        },
    );
    assert_eq!((s.phase, s.weight, s.mirror), (Phase::Previous, 0, 0));
    assert!(s.reason.contains("error_rate"), "{}", s.reason);
    assert_eq!(
        &actions[..3],
        &[
            Action::SetTraffic {
                weight: 0,
                mirror: 0
            },
            Action::ResetWindow,
            Action::Persist
        ]
    );
    assert!(actions.contains(&Action::Publish));
    assert_eq!(actions.last(), Some(&Action::Cleanup), "cleanup comes last");
    // The same candidate stays rolled back, across any number of ticks.
    let (s2, _) = run(&s, &p, &pass(5000));
    assert_eq!((s2.phase, s2.weight), (Phase::Previous, 0));
    // A changed candidate starts again, after the cooldown.
    let mut s3 = run(
        &s2,
        &p,
        &Tick {
            candidate: Some("v3"),
            ..at(100)
        },
    )
    .0;
    assert_eq!(s3.phase, Phase::Deploy, "{}", s3.reason);
    s3 = run(
        &s3,
        &p,
        &Tick {
            candidate: Some("v3"),
            ..at(200)
        },
    )
    .0;
    assert_eq!(s3.phase, Phase::Deploy, "cooling down until 363 s");
    assert_eq!(
        s3.reason,
        "cooling down after a rollback until 1970-01-01T00:06:03Z"
    );
    s3 = run(
        &s3,
        &p,
        &Tick {
            candidate: Some("v3"),
            ..at(364)
        },
    )
    .0;
    assert_eq!(s3.phase, Phase::ValidateHealth);
    // Going back to the failed one is not a retry either.
    let s4 = run(&s3, &p, &at(400)).0;
    assert_eq!(s4.phase, Phase::Previous);
}

#[test]
fn inconclusive_never_promotes_and_metric_errors_hold_or_abort() {
    for (then, want) in [
        (OnMetricErrors::Hold, Phase::Canary(0)),
        (OnMetricErrors::Abort, Phase::Previous),
    ] {
        let mut p = plan();
        p.metric_errors.then = then;
        let mut s = RolloutState::idle();
        for step in [at(0), at(1), at(2), pass(62)] {
            s = run(&s, &p, &step).0;
        }
        for t in 0..5 {
            s = run(
                &s,
                &p,
                &Tick {
                    eval: Some(eval(Verdict::Inconclusive, true)),
                    ..at(200 + t)
                },
            )
            .0;
        }
        assert_eq!(s.phase, want, "{then:?}: {}", s.reason);
        // The reason names the gates that could not read their signal, and why.
        let why = match then {
            OnMetricErrors::Abort => "signals unreadable 3 times in a row: error_rate: because",
            OnMetricErrors::Hold => {
                "holding: signals unreadable 5 times in a row: error_rate: because"
            }
        };
        assert_eq!(s.reason, why);
        // Plain inconclusive (too few samples) holds forever without counting as errors.
        let mut h = RolloutState {
            phase: Phase::Canary(0),
            candidate: Some("v2".into()),
            weight: 10_000,
            ..RolloutState::idle()
        };
        for t in 0..10 {
            h = run(
                &h,
                &p,
                &Tick {
                    eval: Some(eval(Verdict::Inconclusive, false)),
                    ..at(1000 + t)
                },
            )
            .0;
        }
        assert_eq!((h.phase, h.metric_error_streak), (Phase::Canary(0), 0));
    }
}

#[test]
fn validation_failures_keep_users_away_from_the_candidate() {
    let p = Rollout {
        synthetic: None,
        ..plan()
    };
    let cases = [
        // A model server still loading its weights fails its health check: waited out.
        (
            Health::Failing("GET http://c/health answered 503".into()),
            SyntheticState::None,
            Phase::ValidateHealth,
        ),
        (
            Health::Passing,
            SyntheticState::Failed("capital: expected Paris".into()),
            Phase::Previous,
        ),
        (
            Health::Passing,
            SyntheticState::Pending,
            Phase::ValidateHealth,
        ),
        (Health::Unknown, SyntheticState::None, Phase::ValidateHealth),
        (Health::Passing, SyntheticState::Passed, Phase::Shadow),
    ];
    for (health, synthetic, want) in cases {
        let s = run(&RolloutState::idle(), &p, &at(0)).0;
        let s = run(
            &s,
            &p,
            &Tick {
                health: health.clone(),
                synthetic: synthetic.clone(),
                ..at(1)
            },
        )
        .0;
        let (s, _) = run(
            &s,
            &p,
            &Tick {
                health: health.clone(),
                synthetic: synthetic.clone(),
                ..at(2)
            },
        );
        assert_eq!(s.phase, want, "{health:?} {synthetic:?}: {}", s.reason);
        assert_eq!(s.weight, 0, "no user traffic before validation passes");
    }
    // Validation that never completes times out into a rollback naming the check that never
    // passed and its last answer.
    let check = "GET http://127.0.0.1:2/v2/health/ready answered 404";
    for (health, why) in [
        (
            Health::Unknown,
            "the candidate's health has not been read".to_owned(),
        ),
        (
            Health::Partial(check.into()),
            format!("not every candidate endpoint answers its health check: {check}"),
        ),
        (
            Health::Failing(check.into()),
            format!("no candidate endpoint answers its health check: {check}"),
        ),
    ] {
        let s = run(&RolloutState::idle(), &p, &at(0)).0;
        let health = &health;
        let s = run(
            &s,
            &p,
            &Tick {
                health: health.clone(),
                ..at(1)
            },
        )
        .0;
        let s = run(
            &s,
            &p,
            &Tick {
                health: health.clone(),
                ..at(200)
            },
        )
        .0;
        assert_eq!(s.phase, Phase::Previous, "{health:?}");
        assert_eq!(s.reason, format!("validation timed out after 120s: {why}"));
    }
}

#[test]
fn manual_approval_waits_in_promote() {
    let p = Rollout {
        approval: Approval::Manual,
        steps: vec![],
        shadow: None,
        ..plan()
    };
    let mut s = RolloutState::idle();
    for step in [at(0), at(1), at(2)] {
        s = run(&s, &p, &step).0;
    }
    assert_eq!(s.phase, Phase::Promote);
    s = run(&s, &p, &at(50)).0;
    assert_eq!(s.phase, Phase::Promote, "{}", s.reason);
    s = run(
        &s,
        &p,
        &Tick {
            command: Some(Command::Approve),
            ..at(51)
        },
    )
    .0;
    assert_eq!((s.phase, s.weight), (Phase::Full, PPM_MAX));
}

#[test]
fn an_operators_promote_skips_the_steps_but_not_manual_approval() {
    let p = Rollout {
        approval: Approval::Manual,
        ..plan()
    };
    let canary = in_canary(&p);
    let promote = |t| Tick {
        command: Some(Command::Promote),
        ..at(t)
    };
    let s = run(&canary, &p, &promote(70)).0;
    assert_eq!(s.phase, Phase::Promote, "{}", s.reason);
    let s = run(&s, &p, &at(71)).0;
    assert_eq!(
        (s.phase, s.reason.as_str()),
        (Phase::Promote, "waiting for manual approval")
    );
    assert_ne!(s.weight, PPM_MAX, "not at 100 % before the approval");
    let (s, actions) = run(&s, &p, &promote(72));
    let why = refused(&actions).expect("a second promote is refused");
    assert!(why.contains("waits for `approve`"), "{why}");
    assert_eq!(s.phase, Phase::Promote);
    let s = run(
        &s,
        &p,
        &Tick {
            command: Some(Command::Approve),
            ..at(73)
        },
    )
    .0;
    assert_eq!((s.phase, s.weight), (Phase::Full, PPM_MAX));
}

#[test]
fn a_new_candidate_starts_unpaused_and_a_pin_holds_until_released() {
    let p = plan();
    let held = RolloutState {
        paused: Some("incident 7".into()),
        pinned: Some(0),
        ..in_canary(&p)
    };
    let next = Tick {
        candidate: Some("v3"),
        ..at(80)
    };
    // The old rollout is withdrawn first, the new one starts on the next step.
    let s = run(&held, &p, &next).0;
    let s = run(
        &s,
        &p,
        &Tick {
            at_s: 81,
            ..next.clone()
        },
    )
    .0;
    assert_eq!(s.candidate.as_deref(), Some("v3"));
    // v2's withdrawal mid-rollout was a rollback: it released the pin too.
    assert_eq!((s.paused, s.pinned), (None, None), "they held v2's rollout");
    // After a rollout that ended, a late pause does not hold the next one; a pin, on the
    // model's traffic, stays until an operator releases it.
    let full = RolloutState {
        phase: Phase::Full,
        weight: PPM_MAX,
        ..held
    };
    let s = run(&full, &p, &next).0;
    assert_eq!(s.candidate.as_deref(), Some("v3"));
    assert_eq!((s.paused, s.pinned), (None, Some(0)));
    assert_ne!(s.phase, Phase::Full, "v3's rollout started");
}

#[test]
fn pause_and_pin_stop_the_automation_until_released() {
    let p = plan();
    let mut s = RolloutState::idle();
    for step in [at(0), at(1), at(2), pass(62)] {
        s = run(&s, &p, &step).0;
    }
    s = run(
        &s,
        &p,
        &Tick {
            command: Some(Command::Pause("investigating".into())),
            ..pass(63)
        },
    )
    .0;
    let paused = run(&s, &p, &pass(500)).0;
    assert_eq!(
        (paused.phase, paused.weight),
        (Phase::Canary(0), 10_000),
        "paused holds the step"
    );
    let failing = run(
        &paused,
        &p,
        &Tick {
            eval: Some(eval(Verdict::Fail, false)),
            ..at(501)
        },
    )
    .0;
    assert_eq!(
        failing.phase,
        Phase::Canary(0),
        "paused means no automatic action at all"
    );
    let (pinned, actions) = run(
        &failing,
        &p,
        &Tick {
            command: Some(Command::Pin(500_000)),
            ..at(502)
        },
    );
    assert_eq!(pinned.weight, 500_000);
    assert_eq!(
        actions[0],
        Action::SetTraffic {
            weight: 500_000,
            mirror: 0
        }
    );
    let resumed = run(
        &pinned,
        &p,
        &Tick {
            command: Some(Command::Resume),
            ..pass(600)
        },
    )
    .0;
    assert_eq!(
        resumed.weight, 500_000,
        "the pin holds after resume until unpinned"
    );
    let unpinned = run(
        &resumed,
        &p,
        &Tick {
            command: Some(Command::Unpin),
            ..pass(601)
        },
    )
    .0;
    assert_eq!(unpinned.phase, Phase::Canary(1));
    assert_eq!(unpinned.weight, 250_000);
    // Unpinned before the step's hold is over: the step's own weight comes back at once.
    let early = run(
        &resumed,
        &p,
        &Tick {
            command: Some(Command::Unpin),
            ..at(503)
        },
    );
    assert_eq!((early.0.phase, early.0.weight), (Phase::Canary(0), 10_000));
    assert_eq!(
        early.1[0],
        Action::SetTraffic {
            weight: 10_000,
            mirror: 0
        }
    );
}

#[test]
fn abort_rolls_back_and_no_candidate_goes_idle() {
    let p = plan();
    let mut s = RolloutState::idle();
    for step in [at(0), at(1), at(2), pass(62)] {
        s = run(&s, &p, &step).0;
    }
    let aborted = run(
        &s,
        &p,
        &Tick {
            command: Some(Command::Abort("bad vibes".into())),
            ..at(70)
        },
    )
    .0;
    assert_eq!((aborted.phase, aborted.weight), (Phase::Previous, 0));
    assert!(aborted.reason.contains("bad vibes"));
    let idle = run(
        &aborted,
        &p,
        &Tick {
            candidate: None,
            ..at(80)
        },
    )
    .0;
    assert_eq!(idle.phase, Phase::Idle);
    assert_eq!(
        idle.failed,
        vec!["v2".to_owned()],
        "the failed list survives"
    );
}

#[test]
fn the_state_round_trips_through_json() {
    let s = RolloutState {
        phase: Phase::Canary(1),
        candidate: Some("v2".into()),
        weight: 250_000,
        ..RolloutState::idle()
    };
    let text = serde_json::to_string(&s).expect("json");
    let back: RolloutState = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, s);
}

/// Walks to `Canary(0)` for candidate v2.
fn in_canary(p: &Rollout) -> RolloutState {
    let mut s = RolloutState::idle();
    for step in [at(0), at(1), pass(62)] {
        s = run(&s, p, &step).0;
    }
    assert_eq!(s.phase, Phase::Canary(0), "{s:?}");
    s
}

#[test]
fn a_candidate_withdrawn_mid_rollout_is_rolled_back_and_not_retried() {
    let p = plan();
    // (what the config names next, phase and weight after that step, retried later?)
    let cases: [(Option<&str>, &str); 2] = [(None, "removed"), (Some("v1"), "changed back")];
    for (next, what) in cases {
        let s = in_canary(&p);
        let step = |at_s: u64, candidate| {
            let inputs = Inputs {
                now_ms: at_s * 1000,
                revision: "c0ffee",
                candidate,
                rollout: Some(&p),
                evaluation: None,
                health: Health::Passing,
                synthetic: &SyntheticState::None,
                command: None,
            };
            decide(&s, &inputs)
        };
        let (back, actions) = step(130, next);
        assert_eq!(
            (back.phase, back.weight, back.mirror),
            (Phase::Previous, 0, 0),
            "{what}"
        );
        assert_eq!(
            actions.first(),
            Some(&Action::SetTraffic {
                weight: 0,
                mirror: 0
            }),
            "{what}: traffic first"
        );
        assert!(actions.contains(&Action::Persist), "{what}: {actions:?}");
        assert!(
            back.reason.contains("withdrawn by config revision c0ffee"),
            "{what}: {}",
            back.reason
        );
        assert_eq!(back.failed, vec!["v2".to_owned()], "{what}");
        assert_eq!(
            back.candidate.as_deref(),
            Some("v2"),
            "{what}: the status names it"
        );

        // The next step: a removed candidate keeps showing the rollback; a changed-back one
        // starts its own rollout.
        let later = run(
            &back,
            &p,
            &Tick {
                candidate: next,
                ..at(131)
            },
        )
        .0;
        match next {
            None => {
                assert_eq!(later, back, "{what}: nothing moves without a candidate");
            }
            Some(c) => {
                assert_eq!(later.candidate.as_deref(), Some(c));
                assert!(
                    matches!(later.phase, Phase::Deploy | Phase::ValidateHealth),
                    "{later:?}"
                );
                assert_eq!(later.weight, 0);
            }
        }
        // Naming v2 again (reverting the revert) does not retry it.
        let again = run(&later, &p, &at(140)).0;
        assert_eq!(
            (again.phase, again.weight),
            (Phase::Previous, 0),
            "{what}: {again:?}"
        );
        let again = run(&again, &p, &pass(300)).0;
        assert_eq!((again.phase, again.weight), (Phase::Previous, 0), "{what}");
        // A new commit that changes the candidate starts a rollout.
        let fresh = run(
            &again,
            &p,
            &Tick {
                candidate: Some("v3"),
                ..at(310)
            },
        )
        .0;
        assert_eq!(fresh.candidate.as_deref(), Some("v3"), "{what}");
        assert!(
            matches!(fresh.phase, Phase::Deploy | Phase::ValidateHealth),
            "{what}: a new rollout starts: {fresh:?}"
        );
    }
}

#[test]
fn a_finished_rollout_is_not_withdrawn() {
    let p = plan();
    let full = RolloutState {
        candidate: Some("v2".into()),
        phase: Phase::Full,
        weight: PPM_MAX,
        ..RolloutState::idle()
    };
    let (idle, _) = run(
        &full,
        &p,
        &Tick {
            candidate: None,
            ..at(10)
        },
    );
    assert_eq!(
        idle.phase,
        Phase::Idle,
        "removing a promoted candidate is no rollback"
    );
    assert!(idle.failed.is_empty());
    let previous = RolloutState {
        candidate: Some("v2".into()),
        phase: Phase::Previous,
        failed: vec!["v2".into()],
        reason: "gate failed".into(),
        ..RolloutState::idle()
    };
    let (idle, _) = run(
        &previous,
        &p,
        &Tick {
            candidate: None,
            ..at(10)
        },
    );
    assert_eq!(idle.phase, Phase::Idle);
    assert_eq!(idle.failed, vec!["v2".to_owned()]);
}

/// One step of a model the config gives no plan (`candidate`: its candidate, if any).
fn unplanned(
    state: &RolloutState,
    candidate: Option<&str>,
    command: Option<Command>,
) -> (RolloutState, Vec<Action>) {
    let inputs = Inputs {
        now_ms: 1_000_000,
        revision: "rev-test",
        candidate,
        rollout: None,
        evaluation: None,
        health: Health::Unknown,
        synthetic: &SyntheticState::None,
        command,
    };
    decide(state, &inputs)
}

fn refused(actions: &[Action]) -> Option<&str> {
    actions.iter().find_map(|a| match a {
        Action::Refuse(why) => Some(why.as_str()),
        _ => None,
    })
}

#[test]
fn a_static_split_takes_a_pin_and_refuses_rollout_commands() {
    let idle = unplanned(&RolloutState::idle(), Some("v2"), None).0;
    // Pinned at 0 %: the pin takes the traffic over from the configured split (mirror off),
    // although the state's weight was 0 already.
    let (pinned, actions) = unplanned(&idle, Some("v2"), Some(Command::Pin(0)));
    assert_eq!(
        (pinned.phase, pinned.pinned, pinned.weight, pinned.mirror),
        (Phase::Idle, Some(0), 0, 0)
    );
    assert_eq!(
        actions,
        [
            Action::SetTraffic {
                weight: 0,
                mirror: 0
            },
            Action::Persist,
            Action::Publish
        ]
    );
    assert!(pinned.directs_traffic());
    // It holds on later steps (a reload that moves `weight` included: it is not read).
    assert_eq!(
        unplanned(&pinned, Some("v2"), None),
        (pinned.clone(), vec![])
    );
    let (moved, actions) = unplanned(&pinned, Some("v2"), Some(Command::Pin(400_000)));
    assert_eq!((moved.weight, refused(&actions)), (400_000, None));
    assert_eq!(
        actions[0],
        Action::SetTraffic {
            weight: 400_000,
            mirror: 0
        }
    );

    // Commands that act on a rollout have none to act on: refused, nothing changes.
    for cmd in [
        Command::Pause("p99".into()),
        Command::Resume,
        Command::Abort("bad".into()),
        Command::Promote,
        Command::Approve,
    ] {
        for state in [&idle, &pinned] {
            let (next, actions) = unplanned(state, Some("v2"), Some(cmd.clone()));
            let why = refused(&actions).unwrap_or_else(|| panic!("{cmd:?} accepted"));
            assert!(why.contains("no rollout plan"), "{cmd:?}: {why}");
            assert!(why.contains(cmd.name()), "{cmd:?}: {why}");
            assert_eq!(&next, state, "{cmd:?} changed the state");
            assert_eq!(actions.len(), 1, "{cmd:?}: {actions:?}");
        }
    }
    // Unpinned: the configured split serves again.
    let (released, actions) = unplanned(&moved, Some("v2"), Some(Command::Unpin));
    assert_eq!((released.pinned, released.weight), (None, 0));
    assert!(!released.directs_traffic());
    assert_eq!(
        actions,
        [Action::ReleaseTraffic, Action::Persist, Action::Publish]
    );
    // A second unpin has nothing to release.
    let (same, actions) = unplanned(&released, Some("v2"), Some(Command::Unpin));
    assert_eq!(same, released);
    assert_eq!(refused(&actions), Some("nothing is pinned"));

    // Without a candidate there is nothing to pin either.
    for cmd in [Command::Pin(0), Command::Unpin, Command::Pause("x".into())] {
        let (next, actions) = unplanned(&idle, None, Some(cmd.clone()));
        let why = refused(&actions).unwrap_or_else(|| panic!("{cmd:?} accepted"));
        assert!(why.contains("no candidate"), "{cmd:?}: {why}");
        assert_eq!(next.pinned, None);
    }
}

#[test]
fn a_pause_ends_with_its_plan_and_a_pin_with_its_candidate() {
    let p = plan();
    let mut s = in_canary(&p);
    for cmd in [Command::Pause("p99".into()), Command::Pin(300_000)] {
        s = run(
            &s,
            &p,
            &Tick {
                command: Some(cmd),
                ..at(70)
            },
        )
        .0;
    }
    assert_eq!(
        (s.paused.as_deref(), s.pinned),
        (Some("p99"), Some(300_000))
    );

    // The plan leaves the config: the pause has no rollout left to hold; the pin still holds
    // the candidate (the data plane keeps serving it), as it holds a static split.
    let (idle, actions) = unplanned(&s, Some("v2"), None);
    assert_eq!(
        (
            idle.phase,
            idle.paused.as_deref(),
            idle.pinned,
            idle.weight,
            idle.mirror
        ),
        (Phase::Idle, None, Some(300_000), 300_000, 0)
    );
    assert!(idle.directs_traffic());
    assert!(!actions.contains(&Action::ReleaseTraffic), "{actions:?}");
    assert!(actions.contains(&Action::Persist), "{actions:?}");

    // The plan comes back: a new rollout starts, held by the pin until it is released.
    let back = run(&idle, &p, &at(200)).0;
    assert_eq!(
        (back.phase, back.pinned, back.weight),
        (Phase::Deploy, Some(300_000), 300_000)
    );

    // The candidate leaves the config: nothing is left to pin; the configured split serves.
    let (gone, actions) = unplanned(&idle, None, None);
    assert_eq!((gone.pinned, gone.paused.as_deref()), (None, None));
    assert_eq!(actions[0], Action::ReleaseTraffic);

    // A paused state saved while Idle (before this rule) is cleared on the first step.
    let stale = RolloutState {
        paused: Some("old".into()),
        ..RolloutState::idle()
    };
    let (fresh, actions) = unplanned(&stale, Some("v2"), None);
    assert_eq!(fresh.paused, None);
    assert!(actions.contains(&Action::Publish), "{actions:?}");
}

#[test]
fn commands_with_nothing_to_act_on_are_refused_during_a_rollout() {
    let p = plan();
    let canary = in_canary(&p);
    let paused = RolloutState {
        paused: Some("p99".into()),
        ..canary.clone()
    };
    let full = RolloutState {
        phase: Phase::Full,
        weight: PPM_MAX,
        ..canary.clone()
    };
    let previous = RolloutState {
        phase: Phase::Previous,
        weight: 0,
        failed: vec!["v2".into()],
        ..canary.clone()
    };
    let cases: [(&RolloutState, Command, Option<&str>); 11] = [
        (&canary, Command::Resume, Some("not paused")),
        // A pause after the end would hold the next candidate's rollout.
        (
            &full,
            Command::Pause("late".into()),
            Some("the rollout is over"),
        ),
        (
            &previous,
            Command::Pause("late".into()),
            Some("the rollout is over"),
        ),
        (&canary, Command::Unpin, Some("nothing is pinned")),
        (
            &paused,
            Command::Pause("again".into()),
            Some("already paused: p99"),
        ),
        (&full, Command::Promote, Some("nothing to promote")),
        (&previous, Command::Approve, Some("nothing to approve")),
        (
            &previous,
            Command::Abort("x".into()),
            Some("already rolled back"),
        ),
        // Accepted: they act on this rollout.
        (&paused, Command::Resume, None),
        (&canary, Command::Promote, None),
        (&full, Command::Abort("regret".into()), None),
    ];
    for (state, cmd, want) in cases {
        let (next, actions) = run(
            state,
            &p,
            &Tick {
                command: Some(cmd.clone()),
                ..at(70)
            },
        );
        match want {
            Some(w) => {
                let why = refused(&actions).unwrap_or_else(|| panic!("{cmd:?} accepted"));
                assert!(why.contains(w), "{cmd:?} in {:?}: {why}", state.phase);
                assert_eq!(
                    (next.phase, next.paused, next.pinned),
                    (state.phase, state.paused.clone(), state.pinned),
                    "{cmd:?}"
                );
            }
            None => assert_eq!(refused(&actions), None, "{cmd:?} in {:?}", state.phase),
        }
    }
}

#[test]
fn a_withdrawn_candidate_gives_way_to_a_static_split() {
    let p = plan();
    let withdrawn = run(
        &in_canary(&p),
        &p,
        &Tick {
            candidate: None,
            ..at(130)
        },
    )
    .0;
    assert_eq!(withdrawn.phase, Phase::Previous);
    // Still shown while no candidate is named...
    assert_eq!(unplanned(&withdrawn, None, None).0.phase, Phase::Previous);
    // ...but a new candidate with a static split (no plan) is served by its split.
    let (split, actions) = unplanned(&withdrawn, Some("v3"), None);
    assert_eq!(split.phase, Phase::Idle);
    assert_eq!(actions[0], Action::ReleaseTraffic);
}

#[test]
fn the_revision_that_named_the_candidate_is_kept_for_its_whole_rollout() {
    let p = plan();
    let step = |s: &RolloutState, revision, candidate| {
        let inputs = Inputs {
            now_ms: 1_000,
            revision,
            candidate,
            rollout: Some(&p),
            evaluation: None,
            health: Health::Passing,
            synthetic: &SyntheticState::None,
            command: None,
        };
        decide(s, &inputs).0
    };
    let started = step(&RolloutState::idle(), "c1", Some("v2"));
    assert_eq!(started.started_revision.as_deref(), Some("c1"));
    // An unrelated later commit does not restart it; a withdrawal keeps naming where it began.
    let later = step(&started, "c2", Some("v2"));
    assert_eq!(later.started_revision.as_deref(), Some("c1"));
    let withdrawn = step(&later, "c3", None);
    assert_eq!(withdrawn.phase, Phase::Previous);
    assert_eq!(withdrawn.started_revision.as_deref(), Some("c1"));
    // The next candidate is its own commit's.
    let next = step(&withdrawn, "c4", Some("v3"));
    assert_eq!(next.started_revision.as_deref(), Some("c4"));
}
