//! Operator commands reach the driver in order and are acknowledged only once applied; the
//! scorer works in paced slices within a budget.

use super::*;
use prometheus_client::registry::Registry;

/// A candidate held out of all traffic: weight and mirror 0.
const HELD_OUT: Directive = Directive {
    weight: Ppm::ZERO,
    mirror: Ppm::ZERO,
};

/// Health is never known, so a rollout waits in `ValidateHealth`: commands are all that moves.
struct Unknown;

impl SignalSource for Unknown {
    fn read<'a>(&'a self, _: &'a Model) -> Pin<Box<dyn Future<Output = ModelSignals> + Send + 'a>> {
        Box::pin(std::future::ready(ModelSignals {
            health: Health::Unknown,
            promql: Vec::new(),
            queue_time: Ok(None),
            gpu_memory: Ok(None),
        }))
    }
}

fn driver() -> (Driver, DriverHandle) {
    let yaml = "listen: 127.0.0.1:0\nmodels:\n  - name: m\n    \
                stable: { endpoints: [\"http://127.0.0.1:1\"], engine: vllm }\n    \
                candidate: { endpoints: [\"http://127.0.0.1:2\"], engine: vllm, revision: v2 }\n    \
                rollout: { steps: [{ weight: 10%, for: 1m }], \
                gates: { error_rate: { max: 1% } } }\n";
    driver_on(yaml, &mut Registry::default())
}

/// A driver (its rollouts waiting in `ValidateHealth`) over a data plane serving `yaml`.
fn driver_on(yaml: &str, registry: &mut Registry) -> (Driver, DriverHandle) {
    let proxy = ProxyHandle::new(
        rollgate_config::parse(yaml).expect("config"),
        "rev-1",
        registry,
    );
    let synthetic: SyntheticRunner =
        Arc::new(|_| Box::pin(std::future::ready(SyntheticState::None)));
    Driver::new(
        proxy,
        StateStore::new(None),
        Arc::new(Unknown),
        Arc::new(|_| None),
        synthetic,
        Duration::from_secs(3600),
    )
}

fn status(handle: &DriverHandle) -> RolloutStatus {
    handle
        .status()
        .into_iter()
        .find(|s| s.model == "m")
        .expect("status of m")
}

#[tokio::test(start_paused = true)]
async fn commands_sent_between_steps_are_all_applied_in_order_without_waiting_for_a_tick() {
    let (driver, handle) = driver();
    let (stop, stopped) = watch::channel(false);
    let began = tokio::time::Instant::now();
    let task = tokio::spawn(driver.run(stopped));
    // Sent back to back, before the driver runs: all wait for the same step. A lost or
    // reordered one leaves a different end state.
    let sent = [
        Command::Pause("first".into()),
        Command::Pin(300_000),
        Command::Resume,
        Command::Pause("second".into()),
    ]
    .map(|c| handle.command("m", c).expect("queued"));
    for applied in sent {
        applied.await.expect("applied").expect("accepted");
    }
    let s = status(&handle);
    assert_eq!(
        (s.paused.as_deref(), s.pinned.as_deref(), s.weight.as_str()),
        (Some("second"), Some("30%"), "30%")
    );
    // The driver's tick is an hour and time is paused: a command left for a tick would have
    // moved the clock by that hour.
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    stop.send(true).expect("driver running");
    task.await.expect("driver stopped");
}

#[tokio::test(start_paused = true)]
async fn a_command_for_an_unknown_model_is_dropped_not_left_waiting() {
    let (driver, handle) = driver();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(driver.run(stopped));
    let ghost = handle.command("ghost", Command::Resume).expect("queued");
    assert!(ghost.await.is_err(), "told it was applied to no model");
    stop.send(true).expect("driver running");
    task.await.expect("driver stopped");
}

#[test]
fn scoring_pauses_between_slices_and_stops_when_its_budget_is_spent() {
    let t0 = std::time::Instant::now();
    let at = |us: u64| t0 + Duration::from_micros(us);
    let mut pace = ScorePace::new(t0);
    assert_eq!(pace.next(at(100)), Pace::Go);
    assert_eq!(pace.next(at(499)), Pace::Go);
    assert_eq!(pace.next(at(500)), Pace::Pause);
    // A long pause counts neither against the slice nor the budget.
    pace.resumed(at(500), at(20_500));
    assert_eq!(pace.next(at(20_600)), Pace::Go);
    assert_eq!(pace.next(at(21_000)), Pace::Pause);
    pace.resumed(at(21_000), at(22_000));
    // Worked so far: 1 ms of 5. One pair that runs long is finished, then the batch stops.
    assert_eq!(pace.next(at(22_100)), Pace::Go);
    assert_eq!(pace.next(at(25_999)), Pace::Pause);
    assert_eq!(pace.next(at(26_000)), Pace::Stop);
    assert_eq!(pace.next(at(90_000)), Pace::Stop);
}

#[tokio::test(start_paused = true)]
async fn every_model_has_score_tallies_before_its_first_pair() {
    let (mut d, _handle) = driver();
    // As the scoring tick does: the serving config first, then the batch.
    d.sync_config(d.proxy.snapshot().config());
    d.score_pairs().await;
    let tallies = lock(&d.tallies);
    let m = tallies.get("m").expect("tallies of m");
    assert_eq!((m.not_comparable, m.scores.iter().sum::<u64>()), (0, 0));
}

/// Models without a rollout plan: `s` splits `weight` to its candidate and mirrors every
/// request to it; `n` has no candidate.
fn static_split(weight: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nmodels:\n  - name: s\n    \
         stable: {{ endpoints: [\"http://127.0.0.1:1\"] }}\n    \
         candidate: {{ endpoints: [\"http://127.0.0.1:2\"], revision: v2 }}\n    \
         weight: {weight}\n    shadow: {{ sample: 100% }}\n  - name: n\n    \
         stable: {{ endpoints: [\"http://127.0.0.1:3\"] }}\n"
    )
}

/// A model's phase, candidate, weight and mirror as `GET /rollouts` shows them.
fn split(handle: &DriverHandle, model: &str) -> String {
    let s = handle
        .status()
        .into_iter()
        .find(|s| s.model == model)
        .expect("status");
    let candidate = s.candidate.as_deref().unwrap_or("none");
    format!("{:?} {candidate} {} mirror {}", s.phase, s.weight, s.mirror)
}

fn weight_ratio(registry: &Registry, model: &str) -> Option<f64> {
    gauge(registry, "rollgate_rollout_candidate_weight_ratio", model)
}

#[tokio::test(start_paused = true)]
async fn a_model_without_a_plan_reports_the_split_it_is_served_with() {
    let mut registry = Registry::default();
    let (mut d, handle) = driver_on(&static_split("30%"), &mut registry);
    d.register_metrics(&mut registry);
    d.step().await;
    let snap = d.proxy.snapshot();
    let candidate = snap.config().models[0]
        .candidate
        .as_ref()
        .map(fingerprint)
        .expect("s has a candidate");
    assert_eq!(
        split(&handle, "s"),
        format!("Idle {candidate} 30% mirror 100%")
    );
    assert_eq!(split(&handle, "n"), "Idle none 0% mirror 0%");
    assert_eq!(weight_ratio(&registry, "s"), Some(0.3));
    assert_eq!(weight_ratio(&registry, "n"), Some(0.0));

    // A reload that moves the weight is reported at once, not after the driver's next step.
    let config = rollgate_config::parse(&static_split("50%")).expect("config");
    d.proxy.apply(config, "rev-2");
    let moved = format!("Idle {candidate} 50% mirror 100%");
    assert_eq!(split(&handle, "s"), moved);
    assert_eq!(weight_ratio(&registry, "s"), Some(0.5));
    d.step().await;
    assert_eq!(split(&handle, "s"), moved);
}

#[tokio::test(start_paused = true)]
async fn a_rollout_takes_the_traffic_over_from_the_configured_split_as_it_starts() {
    // Under a plan `weight` and `shadow` are not read: no user and no mirror reaches the
    // candidate while it is validated.
    let yaml = "listen: 127.0.0.1:0\nmodels:\n  - name: m\n    \
                stable: { endpoints: [\"http://127.0.0.1:1\"], engine: vllm }\n    \
                candidate: { endpoints: [\"http://127.0.0.1:2\"], engine: vllm, revision: v2 }\n    \
                weight: 30%\n    shadow: { sample: 50% }\n    \
                rollout: { steps: [{ weight: 10%, for: 1m }], \
                gates: { error_rate: { max: 1% } } }\n";
    let (mut d, handle) = driver_on(yaml, &mut Registry::default());
    d.step().await;
    let s = status(&handle);
    assert_eq!(
        (s.phase, s.weight.as_str(), s.mirror.as_str()),
        (Phase::ValidateHealth, "0%", "0%")
    );
    let none = Directive {
        weight: Ppm::ZERO,
        mirror: Ppm::ZERO,
    };
    assert_eq!(d.proxy.directives().get("m"), Some(&none));
}

fn gauge(registry: &Registry, name: &str, model: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    let series = format!("{name}{{model=\"{model}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(start_paused = true)]
async fn a_pin_directs_a_static_split_until_unpinned_and_rollout_commands_are_refused() {
    let mut registry = Registry::default();
    let (d, handle) = driver_on(&static_split("30%"), &mut registry);
    d.register_metrics(&mut registry);
    let proxy = d.proxy.clone();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(d.run(stopped));
    let send = |model: &str, cmd| handle.command(model, cmd).expect("queued");

    send("s", Command::Pin(0))
        .await
        .expect("applied")
        .expect("accepted");
    assert_eq!(
        proxy.directives().get("s"),
        Some(&HELD_OUT),
        "the data plane serves the pin"
    );
    let s = handle
        .status()
        .into_iter()
        .find(|s| s.model == "s")
        .expect("s");
    assert_eq!(
        (
            s.phase,
            s.pinned.as_deref(),
            s.weight.as_str(),
            s.mirror.as_str()
        ),
        (Phase::Idle, Some("0%"), "0%", "0%")
    );
    assert_eq!(
        gauge(&registry, "rollgate_rollout_candidate_weight_ratio", "s"),
        Some(0.0)
    );
    assert_eq!(gauge(&registry, "rollgate_rollout_paused", "s"), Some(1.0));

    for cmd in [
        Command::Pause("p99".into()),
        Command::Resume,
        Command::Promote,
    ] {
        let why = send("s", cmd.clone())
            .await
            .expect("answered")
            .expect_err("refused");
        assert!(why.contains("no rollout plan"), "{cmd:?}: {why}");
    }
    let why = send("n", Command::Pin(0))
        .await
        .expect("answered")
        .expect_err("refused");
    assert!(why.contains("no candidate"), "{why}");
    assert_eq!(gauge(&registry, "rollgate_rollout_paused", "n"), Some(0.0));

    send("s", Command::Unpin)
        .await
        .expect("applied")
        .expect("accepted");
    assert_eq!(
        proxy.directives().get("s"),
        None,
        "the configured split serves again"
    );
    assert_eq!(
        split(&handle, "s").split_once(' ').map(|(p, _)| p),
        Some("Idle")
    );
    assert!(
        split(&handle, "s").ends_with("30% mirror 100%"),
        "{}",
        split(&handle, "s")
    );
    assert_eq!(gauge(&registry, "rollgate_rollout_paused", "s"), Some(0.0));
    let why = send("s", Command::Unpin)
        .await
        .expect("answered")
        .expect_err("refused");
    assert_eq!(why, "nothing is pinned");
    stop.send(true).expect("driver running");
    task.await.expect("driver stopped");
}

#[tokio::test(start_paused = true)]
async fn a_saved_pin_on_a_static_split_is_served_from_the_start_and_a_stale_pause_is_dropped() {
    let dir = std::env::temp_dir().join(format!("rollgate-driver-pin-{}", std::process::id()));
    let store = StateStore::new(Some(dir.clone()));
    let pinned = RolloutState {
        pinned: Some(0),
        paused: Some("left over from a removed plan".into()),
        ..RolloutState::idle()
    };
    let stale = RolloutState {
        paused: Some("left over".into()),
        ..RolloutState::idle()
    };
    let saved = BTreeMap::from([("s".to_owned(), &pinned), ("n".to_owned(), &stale)]);
    store.save(&saved).expect("save");
    let mut registry = Registry::default();
    let proxy = ProxyHandle::new(
        rollgate_config::parse(&static_split("30%")).expect("config"),
        "rev-1",
        &mut registry,
    );
    let synthetic: SyntheticRunner =
        Arc::new(|_| Box::pin(std::future::ready(SyntheticState::None)));
    let (mut d, handle) = Driver::new(
        proxy.clone(),
        store.clone(),
        Arc::new(Unknown),
        Arc::new(|_| None),
        synthetic,
        Duration::from_secs(3600),
    );
    d.register_metrics(&mut registry);
    d.restore_traffic();
    assert_eq!(
        proxy.directives().get("s"),
        Some(&HELD_OUT),
        "before the first request"
    );
    d.step().await;
    assert_eq!(proxy.directives().get("s"), Some(&HELD_OUT));
    for (model, pinned) in [("s", Some("0%")), ("n", None)] {
        let s = handle
            .status()
            .into_iter()
            .find(|s| s.model == model)
            .expect(model);
        assert_eq!(
            (s.paused.as_deref(), s.pinned.as_deref()),
            (None, pinned),
            "{model}"
        );
    }
    assert_eq!(gauge(&registry, "rollgate_rollout_paused", "n"), Some(0.0));
    let on_disk = store.load().expect("load");
    assert_eq!(on_disk.get("n").map(|s| s.paused.clone()), Some(None));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn rollout_conditions_carry_a_kstatus_reason_and_the_words_apart() {
    let state = |phase, paused: Option<&str>, pinned| RolloutState {
        phase,
        paused: paused.map(str::to_owned),
        pinned,
        reason: "validated; mirroring 50%".into(),
        ..RolloutState::idle()
    };
    let holding = RolloutState {
        reason: "holding: signals unreadable (metric errors 2 of 3)".into(),
        ..state(Phase::Canary(1), None, None)
    };
    // docs/gitops.md's conditions table: a pause, a pin or a metric hold stops a progressing
    // rollout (`Reconciling=False Held`), as the kstatus object says.
    let cases = [
        (
            state(Phase::Canary(0), None, None),
            [("True", "Canary"), ("False", "Healthy")],
        ),
        (
            state(Phase::Canary(0), Some("incident 7"), None),
            [("False", "Held"), ("True", "Paused")],
        ),
        (
            state(Phase::Shadow, None, Some(0)),
            [("False", "Held"), ("True", "Pinned")],
        ),
        (holding, [("False", "Held"), ("True", "Holding")]),
        (
            state(Phase::Idle, None, Some(250_000)),
            [("False", "Settled"), ("True", "Pinned")],
        ),
        (
            state(Phase::Previous, None, None),
            [("False", "Settled"), ("True", "RolledBack")],
        ),
        (
            state(Phase::Full, None, None),
            [("False", "Settled"), ("False", "Healthy")],
        ),
    ];
    for (s, [reconciling, stalled]) in cases {
        let status = status_of("m", None, &Run::new(s.clone()));
        let cond = |kind| {
            let c = status
                .conditions
                .iter()
                .find(|c| c.kind == kind)
                .expect(kind);
            (c.status, c.reason)
        };
        assert_eq!(cond("Reconciling"), reconciling, "{:?}", s.phase);
        assert_eq!(cond("Stalled"), stalled, "{:?} {:?}", s.phase, s.paused);
        let ready = status
            .conditions
            .iter()
            .find(|c| c.kind == "Ready")
            .expect("Ready");
        assert_eq!(ready.message, s.reason, "the words stay in the message");
    }
}

/// `rollouts[].conditions` and the model's kstatus object (`/status/models/{m}`) agree on
/// `Reconciling` and `Stalled` for every hold and phase (an invalid newer config aside, which
/// only the kstatus object knows).
#[test]
fn rollout_conditions_agree_with_the_kstatus_object() {
    let reasons = [
        "validated",
        "holding: signals unreadable (metric errors 2 of 3)",
    ];
    let phases = [
        Phase::Idle,
        Phase::Deploy,
        Phase::ValidateHealth,
        Phase::Shadow,
        Phase::Canary(1),
        Phase::Promote,
        Phase::Full,
        Phase::Rollback,
        Phase::Previous,
    ];
    for phase in phases {
        for reason in reasons {
            for (paused, pinned) in [(None, None), (Some("qa"), None), (None, Some(100_000))] {
                let s = RolloutState {
                    phase,
                    paused: paused.map(str::to_owned),
                    pinned,
                    reason: reason.into(),
                    ..RolloutState::idle()
                };
                let status = status_of("m", None, &Run::new(s));
                let cx = crate::gitops::Context {
                    serving: "rev-1",
                    latest: None,
                    has_candidate: true,
                    generation: 1,
                };
                let kstatus = crate::gitops::build(&status, cx);
                for kind in ["Reconciling", "Stalled"] {
                    let ours = status.conditions.iter().find(|c| c.kind == kind);
                    let theirs = crate::gitops::condition(&kstatus, kind);
                    assert_eq!(
                        ours.map(|c| (c.status, c.reason)),
                        theirs.map(|c| (c.status.as_str(), c.reason.as_str())),
                        "{kind} at {phase:?}, {reason:?}, paused {paused:?}, pinned {pinned:?}"
                    );
                }
            }
        }
    }
}

/// Models in QA's scale report: `n` static splits (a candidate at `weight`, no rollout plan).
fn static_splits(n: usize, weight: &str) -> String {
    use std::fmt::Write as _;
    let mut yaml = String::from("listen: 127.0.0.1:0\nmodels:\n");
    for i in 0..n {
        let _ = write!(
            yaml,
            "  - name: model-{i:05}\n    stable: {{ endpoints: [\"http://127.0.0.1:1\"] }}\n    \
             candidate: {{ endpoints: [\"http://127.0.0.1:2\"], revision: v2 }}\n    \
             weight: {weight}\n"
        );
    }
    yaml
}

/// Enough models that a scan of the config per model (4 × 10⁸ name comparisons a step) takes
/// seconds, while a lookup per model takes about a millisecond.
const MANY: usize = 20_000;

fn weight_of(handle: &DriverHandle, model: &str) -> (String, Option<String>) {
    let s = handle
        .status()
        .into_iter()
        .find(|s| s.model == model)
        .expect(model);
    (s.weight, s.pinned)
}

#[tokio::test(start_paused = true)]
async fn idle_steps_over_20_000_static_splits_evaluate_nothing_again() {
    let (mut d, handle) = driver_on(&static_splits(MANY, "10%"), &mut Registry::default());
    d.step().await;
    assert_eq!(handle.status().len(), MANY);
    assert_eq!(
        d.known.unsettled.as_deref(),
        Some(&[][..]),
        "left to evaluate"
    );
    // Nothing moves a static split but a command or a reload: further steps publish nothing,
    // and cost a lookup per model. 100× the expected time, unoptimised; the old step, which
    // scanned every model for each model, took seconds each.
    let published = handle.status_version();
    let began = std::time::Instant::now();
    for _ in 0..10 {
        d.step().await;
    }
    let idle = began.elapsed();
    assert_eq!(
        handle.status_version(),
        published,
        "an idle step republished"
    );
    assert!(idle < Duration::from_secs(5), "10 idle steps took {idle:?}");

    // A command still reaches a settled model on the next step.
    let pinned = handle
        .command("model-00042", Command::Pin(250_000))
        .expect("queued");
    while let Ok(queued) = d.commands.try_recv() {
        d.queue(queued);
    }
    d.step().await;
    for (ack, answer) in d.applied.drain(..) {
        let _ = ack.send(answer);
    }
    pinned.await.expect("applied").expect("accepted");
    assert_eq!(
        weight_of(&handle, "model-00042"),
        ("25%".to_owned(), Some("25%".to_owned()))
    );

    // A reload has every model evaluated again; models that left it are forgotten.
    let fewer = rollgate_config::parse(&static_splits(MANY / 2, "20%")).expect("config");
    d.proxy.apply(fewer, "rev-2");
    d.step().await;
    assert_eq!(handle.status().len(), MANY / 2);
    assert_eq!(d.runs.len(), MANY / 2);
    let generation = d.known.generation;
    assert!(d.runs.values().all(|r| r.settled == Some(generation)));
    assert_eq!(weight_of(&handle, "model-00007"), ("20%".to_owned(), None));
    assert_eq!(
        weight_of(&handle, "model-00042"),
        ("25%".to_owned(), Some("25%".to_owned())),
        "the pin outlasts the reload"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_driver_mid_step_over_20_000_models() {
    let (d, handle) = driver_on(&static_splits(MANY, "10%"), &mut Registry::default());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(d.run(stopped));
    // The driver's first step starts at once and yields after YIELD_EVERY models.
    tokio::task::yield_now().await;
    stop.send(true).expect("driver running");
    task.await.expect("driver stopped");
    let evaluated = handle.status().len();
    assert!(
        evaluated <= 2 * YIELD_EVERY,
        "{evaluated} of {MANY} models evaluated after shutdown was asked for"
    );
}

/// Model `slow`'s signal read never finishes (a candidate whose `/metrics` and health check
/// hang); every other model's candidate is healthy.
struct OneHangs;

impl SignalSource for OneHangs {
    fn read<'a>(&'a self, m: &'a Model) -> Pin<Box<dyn Future<Output = ModelSignals> + Send + 'a>> {
        if m.name == "slow" {
            return Box::pin(std::future::pending());
        }
        Box::pin(std::future::ready(healthy()))
    }
}

/// A reading of a healthy candidate that no signal gate needs.
fn healthy() -> ModelSignals {
    ModelSignals {
        health: Health::Passing,
        promql: Vec::new(),
        queue_time: Ok(None),
        gpu_memory: Ok(None),
    }
}

#[tokio::test(start_paused = true)]
async fn a_candidate_whose_signals_hang_holds_no_other_model_s_rollout() {
    let model = |name: &str| {
        format!(
            "  - name: {name}\n    stable: {{ endpoints: [\"http://127.0.0.1:1\"], engine: vllm }}\n    \
             candidate: {{ endpoints: [\"http://127.0.0.1:2\"], engine: vllm, revision: v2 }}\n    \
             rollout: {{ steps: [{{ weight: 10%, for: 1m }}], gates: {{ error_rate: {{ max: 1% }} }} }}\n"
        )
    };
    let yaml = format!(
        "listen: 127.0.0.1:0\nmodels:\n{}{}",
        model("slow"),
        model("m")
    );
    let proxy = ProxyHandle::new(
        rollgate_config::parse(&yaml).expect("config"),
        "rev-1",
        &mut Registry::default(),
    );
    let synthetic: SyntheticRunner =
        Arc::new(|_| Box::pin(std::future::ready(SyntheticState::None)));
    let (mut d, handle) = Driver::new(
        proxy,
        StateStore::new(None),
        Arc::new(OneHangs),
        Arc::new(|_| None),
        synthetic,
        Duration::from_secs(3600),
    );
    let phase_of = |name: &str| {
        handle
            .status()
            .into_iter()
            .find(|s| s.model == name)
            .map(|s| s.phase)
    };
    let began = tokio::time::Instant::now();
    // Deploy, then ValidateHealth with `m`'s candidate healthy: on to Canary. Each step waits
    // for the reads it started at most READ_WAIT; `slow`'s, still in flight, is not started
    // (nor waited for) again.
    for _ in 0..4 {
        tokio::time::timeout(Duration::from_secs(5), d.step())
            .await
            .expect("a step ends while one model's signal read hangs");
    }
    assert!(
        began.elapsed() <= READ_WAIT * 2,
        "{:?}: steps waited for the hung read more than once",
        began.elapsed()
    );
    assert_eq!(phase_of("m"), Some(Phase::Canary(0)));
    // `slow` has no health reading: it waits in ValidateHealth, and its gates are not judged.
    assert_eq!(phase_of("slow"), Some(Phase::ValidateHealth));
}

/// Every candidate is healthy.
struct Healthy;

impl SignalSource for Healthy {
    fn read<'a>(&'a self, _: &'a Model) -> Pin<Box<dyn Future<Output = ModelSignals> + Send + 'a>> {
        Box::pin(std::future::ready(healthy()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_synthetic_run_slower_than_every_still_rolls_back_when_it_fails() {
    let yaml = "listen: 127.0.0.1:0\nmodels:\n  - name: m\n    \
                stable: { endpoints: [\"http://127.0.0.1:1\"], engine: vllm }\n    \
                candidate: { endpoints: [\"http://127.0.0.1:2\"], engine: vllm, revision: v2 }\n    \
                rollout: { steps: [{ weight: 10%, for: 1m }], \
                synthetic: { suite: suite.yaml, every: 2s }, \
                gates: { error_rate: { max: 1% } } }\n";
    let proxy = ProxyHandle::new(
        rollgate_config::parse(yaml).expect("config"),
        "rev-1",
        &mut Registry::default(),
    );
    // The run in ValidateHealth passes at once; every later one takes 2.5 s (longer than
    // `every`) and fails.
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    let synthetic: SyntheticRunner = Arc::new(move |_| {
        let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if n == 0 {
                return SyntheticState::Passed;
            }
            tokio::time::sleep(Duration::from_millis(2500)).await;
            SyntheticState::Failed("capital: took 2.5s, over max_latency 2s".into())
        })
    });
    let (mut d, handle) = Driver::new(
        proxy,
        StateStore::new(None),
        Arc::new(Healthy),
        Arc::new(|_| None),
        synthetic,
        Duration::from_secs(3600),
    );
    // Deploy → ValidateHealth (the first run passes) → Canary(0).
    d.step().await;
    tokio::task::yield_now().await;
    d.step().await;
    assert_eq!(status(&handle).phase, Phase::Canary(0));
    // The first periodic run starts, and is found finished (failed) and due again at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.step().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.step().await;
    let s = status(&handle);
    assert_eq!(s.phase, Phase::Previous, "{}", s.reason);
    assert_eq!(
        s.reason,
        "synthetic checks failed during step 1: capital: took 2.5s, over max_latency 2s"
    );
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
}
