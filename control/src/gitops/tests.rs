//! Tables for the status conditions, the verdicts, the Flagger answers; the Flux sink against
//! a real HTTP receiver on loopback.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::*;
use crate::reload::ReloadOutcome;

fn rollout(phase: Phase, weight: &str) -> RolloutStatus {
    RolloutStatus {
        started_revision: None,
        weight: weight.to_owned(),
        reason: "gates passed".to_owned(),
        candidate: Some("v2@abc".to_owned()),
        ..idle("m", rollgate_config::Ppm::ZERO)
    }
    .with_phase(phase)
}

trait WithPhase {
    fn with_phase(self, p: Phase) -> Self;
}

impl WithPhase for RolloutStatus {
    fn with_phase(mut self, p: Phase) -> Self {
        self.phase = p;
        self
    }
}

fn cx(latest: Option<&ReloadOutcome>) -> Context<'_> {
    Context {
        serving: "rev-a",
        latest,
        has_candidate: true,
        generation: 3,
    }
}

/// `(status, reason)` of each condition, in order Ready, Reconciling, Stalled.
fn conds(s: &ModelStatus) -> Vec<(String, String)> {
    s.conditions
        .iter()
        .map(|c| (c.status.clone(), c.reason.clone()))
        .collect()
}

fn c(v: &[(&str, &str); 3]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[test]
fn conditions_follow_the_phase() {
    let table: &[(Phase, [(&str, &str); 3])] = &[
        (
            Phase::Idle,
            [("True", "Idle"), ("False", "Settled"), ("False", "Healthy")],
        ),
        (
            Phase::Deploy,
            [
                ("False", "Deploy"),
                ("True", "Deploy"),
                ("False", "Healthy"),
            ],
        ),
        (
            Phase::Shadow,
            [
                ("False", "Shadow"),
                ("True", "Shadow"),
                ("False", "Healthy"),
            ],
        ),
        (
            Phase::Canary(1),
            [
                ("False", "Canary"),
                ("True", "Canary"),
                ("False", "Healthy"),
            ],
        ),
        (
            Phase::Promote,
            [
                ("False", "Promote"),
                ("True", "Promote"),
                ("False", "Healthy"),
            ],
        ),
        (
            Phase::Full,
            [("True", "Full"), ("False", "Settled"), ("False", "Healthy")],
        ),
        (
            Phase::Rollback,
            [
                ("False", "RolledBack"),
                ("False", "Settled"),
                ("True", "RolledBack"),
            ],
        ),
        (
            Phase::Previous,
            [
                ("False", "RolledBack"),
                ("False", "Settled"),
                ("True", "RolledBack"),
            ],
        ),
    ];
    for (phase, want) in table {
        let s = build(&rollout(*phase, "30%"), cx(None));
        assert_eq!(conds(&s), c(want), "{phase:?}");
        assert_eq!(s.observed_revision, "rev-a");
        assert_eq!(s.observed_generation, 3);
    }
    let s = build(&rollout(Phase::Canary(1), "30%"), cx(None));
    assert_eq!((s.phase.as_str(), s.step), ("Canary", Some(1)));
    assert_eq!(
        s.conditions[1].message,
        "Canary step 2 at 30%: gates passed"
    );
    let stable = build(
        &rollout(Phase::Idle, "0%"),
        Context {
            has_candidate: false,
            ..cx(None)
        },
    );
    assert_eq!(conds(&stable)[0], ("True".to_owned(), "Stable".to_owned()));
}

#[test]
fn pause_pin_and_metric_holds_stall_without_reconciling() {
    let mut r = rollout(Phase::Canary(0), "10%");
    r.paused = Some("investigating p99".to_owned());
    let s = build(&r, cx(None));
    assert_eq!(
        conds(&s),
        c(&[("False", "Canary"), ("False", "Held"), ("True", "Paused")])
    );
    assert!(s.conditions[2].message.contains("investigating p99"));
    assert_eq!(verdict(&s), Verdict::Hold);
    let mut r = rollout(Phase::Full, "100%");
    r.pinned = Some("100%".to_owned());
    let s = build(&r, cx(None));
    assert_eq!(s.conditions[2].reason, "Pinned");
    assert_eq!(
        verdict(&s),
        Verdict::Hold,
        "a pinned Full waits for the operator"
    );
    let mut r = rollout(Phase::Canary(0), "10%");
    r.reason = "holding: 2 metric errors in a row".to_owned();
    assert_eq!(build(&r, cx(None)).conditions[2].reason, "Holding");
}

#[test]
fn a_newer_invalid_config_stalls_with_every_error_and_a_revert_clears_it() {
    let invalid = ReloadOutcome::Invalid {
        revision: "rev-b".to_owned(),
        errors: vec![
            "models[0].weight: 120% is above 100%".to_owned(),
            "models[0].x: unknown key".to_owned(),
        ],
    };
    let s = build(&rollout(Phase::Full, "100%"), cx(Some(&invalid)));
    let stalled = condition(&s, "Stalled").expect("stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "InvalidConfig")
    );
    for part in [
        "rev-b",
        "120% is above 100%",
        "models[0].x: unknown key",
        "rev-a keeps serving",
    ] {
        assert!(
            stalled.message.contains(part),
            "{part} missing in {}",
            stalled.message
        );
    }
    assert_eq!(verdict(&s), Verdict::Hold);
    let reverted = ReloadOutcome::Unchanged {
        revision: "rev-a".to_owned(),
    };
    let s = build(&rollout(Phase::Full, "100%"), cx(Some(&reverted)));
    assert_eq!(condition(&s, "Stalled").expect("stalled").status, "False");
    assert_eq!(verdict(&s), Verdict::Promote);
}

#[test]
fn an_invalid_newer_config_stalls_without_holding_a_moving_rollout() {
    let invalid = ReloadOutcome::Invalid {
        revision: "rev-b".to_owned(),
        errors: vec!["bogus: unknown key".to_owned()],
    };
    let s = build(&rollout(Phase::Canary(1), "30%"), cx(Some(&invalid)));
    assert_eq!(
        conds(&s),
        c(&[
            ("False", "Canary"),
            ("True", "Canary"),
            ("True", "InvalidConfig")
        ]),
        "the rollout keeps advancing on the serving revision"
    );
    let mut r = rollout(Phase::Canary(1), "30%");
    r.paused = Some("investigating".to_owned());
    let s = build(&r, cx(Some(&invalid)));
    assert_eq!(
        conds(&s),
        c(&[
            ("False", "Canary"),
            ("False", "Held"),
            ("True", "InvalidConfig")
        ]),
        "a pause still holds under the more urgent Stalled reason"
    );
}

#[test]
fn verdicts_per_phase() {
    let table = [
        (Phase::Idle, Verdict::Hold),
        (Phase::Deploy, Verdict::Hold),
        (Phase::ValidateHealth, Verdict::Hold),
        (Phase::Shadow, Verdict::Hold),
        (Phase::Canary(2), Verdict::Hold),
        (Phase::Promote, Verdict::Promote),
        (Phase::Full, Verdict::Promote),
        (Phase::Rollback, Verdict::Rollback),
        (Phase::Previous, Verdict::Rollback),
    ];
    for (phase, want) in table {
        let s = build(&rollout(phase, "10%"), cx(None));
        assert_eq!(verdict(&s), want, "{phase:?}");
        let body = serde_json::to_value(web_metric(&s)).expect("json");
        assert_eq!(body["verdict"], serde_json::to_value(want).expect("json"));
        assert_eq!(body["revision"], "rev-a");
    }
    // Promote waiting for a person's `approve` holds: nothing outside may promote first.
    let mut waiting = rollout(Phase::Promote, "50%");
    waiting.reason = crate::rollout::AWAITING_APPROVAL.to_owned();
    let s = build(&waiting, cx(None));
    assert_eq!(verdict(&s), Verdict::Hold);
    assert_eq!(Hook::ConfirmPromotion.answer(&s).status, 412);
}

#[test]
fn flagger_answers_per_hook_and_state() {
    let mut paused = rollout(Phase::Canary(0), "10%");
    paused.paused = Some("x".to_owned());
    let states = [
        ("promote", build(&rollout(Phase::Full, "100%"), cx(None))),
        (
            "progressing",
            build(&rollout(Phase::Canary(0), "10%"), cx(None)),
        ),
        ("held", build(&paused, cx(None))),
        ("rollback", build(&rollout(Phase::Previous, "0%"), cx(None))),
    ];
    // Columns as `states`; the table in the flagger module docs.
    let table: [(Hook, [u16; 4]); 8] = [
        (Hook::ConfirmRollout, [200, 200, 412, 412]),
        (Hook::PreRollout, [200, 200, 200, 412]),
        (Hook::Rollout, [200, 200, 200, 412]),
        (Hook::ConfirmTrafficIncrease, [200, 200, 412, 412]),
        (Hook::ConfirmPromotion, [200, 412, 412, 412]),
        (Hook::PostRollout, [200, 200, 200, 200]),
        (Hook::Rollback, [412, 412, 412, 200]),
        (Hook::Event, [202, 202, 202, 202]),
    ];
    for (hook, codes) in table {
        for ((name, s), want) in states.iter().zip(codes) {
            assert_eq!(hook.answer(s).status, want, "{} when {name}", hook.as_str());
        }
        assert_eq!(Hook::parse(hook.as_str()), Some(hook));
    }
    assert_eq!(Hook::parse("confirm"), None);
}

#[test]
fn transition_times_move_only_when_a_status_flips() {
    let mut clock = ConditionClock::default();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_166_174);
    let t1 = t0 + Duration::from_secs(60);
    let mut a = build(&rollout(Phase::Canary(0), "10%"), cx(None));
    clock.stamp("m", &mut a, t0);
    assert!(a
        .conditions
        .iter()
        .all(|c| c.last_transition_time == "2025-11-26T14:09:34Z"));
    // Step 1 → 2: the reason text changes, no status flips.
    let mut b = build(&rollout(Phase::Canary(1), "30%"), cx(None));
    clock.stamp("m", &mut b, t1);
    assert!(b
        .conditions
        .iter()
        .all(|c| c.last_transition_time == "2025-11-26T14:09:34Z"));
    let mut full = build(&rollout(Phase::Full, "100%"), cx(None));
    clock.stamp("m", &mut full, t1);
    let times: Vec<&str> = full
        .conditions
        .iter()
        .map(|c| c.last_transition_time.as_str())
        .collect();
    assert_eq!(
        times,
        [
            "2025-11-26T14:10:34Z",
            "2025-11-26T14:10:34Z",
            "2025-11-26T14:09:34Z"
        ]
    );
}

#[test]
fn flux_event_shape() {
    let prev = build(&rollout(Phase::Canary(0), "10%"), cx(None));
    let change = Change {
        model: "m".to_owned(),
        status: build(&rollout(Phase::Previous, "0%"), cx(None)),
        previous: Some(prev),
    };
    let e = flux_event(&change, "ml", SystemTime::UNIX_EPOCH);
    let v = serde_json::to_value(&e).expect("json");
    assert_eq!(
        v["involvedObject"],
        serde_json::json!({"kind": "ModelRollout", "namespace": "ml", "name": "m", "apiVersion": "rollgate.dev/v1alpha1"})
    );
    assert_eq!(v["severity"], "error");
    assert_eq!(v["reason"], "RolledBack");
    assert_eq!(v["reportingController"], "rollgate");
    assert_eq!(v["timestamp"], "1970-01-01T00:00:00Z");
    assert_eq!(v["metadata"]["revision"], "rev-a");
    let msg = v["message"].as_str().expect("message");
    assert!(
        msg.starts_with("model m: Previous at 0% (was Canary step 1 at 10%)"),
        "{msg}"
    );
    // A change that leaves the phase and weight as they were (a reload of the split) says
    // neither "(was …)" nor an empty reason.
    let mut idle = rollout(Phase::Idle, "40%");
    idle.reason = String::new();
    let same = Change {
        model: "m".to_owned(),
        status: build(&idle, cx(None)),
        previous: Some(build(&idle, cx(None))),
    };
    let e = flux_event(&same, "ml", SystemTime::UNIX_EPOCH);
    assert_eq!(e.message, "model m: Idle at 40%");
}

/// A loopback receiver answering `status`; every request body is sent to the returned channel.
async fn receiver(status: u16) -> (String, mpsc::UnboundedReceiver<(String, Bytes)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let ctype = req
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let _ = tx.send((ctype, body));
                        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, rx)
}

fn counter(registry: &Registry, sink: &str, result: &str) -> Option<f64> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
    let series = format!("rollgate_gitops_events_total{{sink=\"{sink}\",result=\"{result}\"}} ");
    out.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse().ok())
}

fn change(phase: Phase) -> Change {
    Change {
        model: "m".to_owned(),
        status: build(&rollout(phase, "10%"), cx(None)),
        previous: None,
    }
}

#[tokio::test]
async fn flux_sink_posts_events_and_counts_failures() {
    let mut registry = Registry::default();
    let counters = EventCounters::register(&mut registry);
    let (url, mut got) = receiver(200).await;
    let sink = flux_sink(&url, "ml", counters.clone()).expect("sink");
    sink.offer(change(Phase::Canary(0)));
    let (ctype, body) = tokio::time::timeout(Duration::from_secs(5), got.recv())
        .await
        .expect("in time")
        .expect("event");
    assert_eq!(ctype, "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["reason"], "Canary");
    assert_eq!(v["involvedObject"]["namespace"], "ml");
    let (bad, mut got_bad) = receiver(500).await;
    let failing = flux_sink(&bad, "ml", counters).expect("sink");
    failing.offer(change(Phase::Full));
    got_bad.recv().await.expect("request");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while counter(&registry, "flux", "failed").is_none()
        || counter(&registry, "flux", "sent").is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "counters did not move"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(counter(&registry, "flux", "sent"), Some(1.0));
    assert_eq!(counter(&registry, "flux", "failed"), Some(1.0));
}

#[tokio::test]
async fn a_stuck_sink_drops_and_counts_instead_of_blocking() {
    let mut registry = Registry::default();
    let counters = EventCounters::register(&mut registry);
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let sink = SinkQueue::spawn("flux", counters, false, move |_| {
        let _ = started_tx.send(());
        std::future::pending::<Result<(), String>>()
    });
    sink.offer(change(Phase::Canary(0)));
    started.recv().await.expect("worker took the first change");
    // The worker is stuck on the first; the queue holds SINK_QUEUE more; the rest drop.
    for _ in 0..SINK_QUEUE + 10 {
        sink.offer(change(Phase::Canary(0)));
    }
    assert_eq!(counter(&registry, "flux", "dropped"), Some(10.0));
}

fn sink_into(
    initial: bool,
    registry: &mut Registry,
) -> (SinkQueue, mpsc::UnboundedReceiver<Change>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = SinkQueue::spawn(
        "flux",
        EventCounters::register(registry),
        initial,
        move |c| {
            let _ = tx.send(c);
            std::future::ready(Ok(()))
        },
    );
    (sink, rx)
}

#[tokio::test(start_paused = true)]
async fn the_publisher_sends_changes_once_and_skips_a_quiet_start_where_asked() {
    let yaml = "listen: 127.0.0.1:0\nmodels:\n  - name: m\n    stable: { endpoints: [\"http://127.0.0.1:9\"], engine: vllm }\n";
    let mut registry = Registry::default();
    let proxy = ProxyHandle::new(
        rollgate_config::parse(yaml).expect("config"),
        "rev-1",
        &mut registry,
    );
    let (_reloader, handle) = crate::reload::Reloader::new(
        crate::reload::ConfigSource::File("/nonexistent".into()),
        yaml,
        proxy.clone(),
        &mut registry,
    );
    let gitops = Gitops::new(proxy.clone(), handle, None);
    let (all, mut all_rx) = sink_into(true, &mut registry);
    let (changes, mut changes_rx) = sink_into(false, &mut registry);
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(gitops.publish(vec![all, changes], stop));

    let first = all_rx.recv().await.expect("initial status");
    assert_eq!(
        (
            first.status.phase.as_str(),
            first.status.observed_revision.as_str()
        ),
        ("Idle", "rev-1")
    );
    assert!(first.previous.is_none());
    // Several quiet ticks: nothing more, and nothing at all for the sink that skips a quiet start.
    tokio::time::sleep(PUBLISH_TICK * 3).await;
    assert!(all_rx.try_recv().is_err());
    assert!(changes_rx.try_recv().is_err());

    proxy.apply(rollgate_config::parse(yaml).expect("config"), "rev-2");
    for rx in [&mut all_rx, &mut changes_rx] {
        let c = rx.recv().await.expect("change");
        assert_eq!(c.status.observed_revision, "rev-2");
        assert_eq!(
            c.previous.map(|p| p.observed_revision).as_deref(),
            Some("rev-1")
        );
    }
    tokio::time::sleep(PUBLISH_TICK * 3).await;
    assert!(all_rx.try_recv().is_err(), "published once per change");
    stop_tx.send(true).expect("stop");
    task.await.expect("publisher ends on shutdown");
}

/// Never read here: the driver is not run, its restored statuses are all the test needs.
struct NoSignals;

impl crate::rollout::SignalSource for NoSignals {
    fn read<'a>(
        &'a self,
        _: &'a rollgate_config::Model,
    ) -> std::pin::Pin<Box<dyn Future<Output = crate::rollout::ModelSignals> + Send + 'a>> {
        Box::pin(std::future::ready(crate::rollout::ModelSignals {
            health: crate::rollout::Health::Unknown,
            promql: Vec::new(),
            queue_time: Ok(None),
            gpu_memory: Ok(None),
        }))
    }
}

/// A restart does not re-announce to Flux a rollback made before it: the first status of a
/// model still in the phase restored from the state file goes to the sinks that want every
/// first status (Kubernetes writes it), not to those that want changes (Flux events).
#[tokio::test(start_paused = true)]
async fn a_restart_does_not_announce_a_restored_rollback_again() {
    use crate::rollout::{Driver, RolloutState, StateStore, SyntheticRunner, SyntheticState};
    let yaml = "listen: 127.0.0.1:0\nmodels:\n  - name: m\n    \
                stable: { endpoints: [\"http://127.0.0.1:9\"], engine: vllm }\n    \
                candidate: { endpoints: [\"http://127.0.0.1:8\"], engine: vllm, revision: v2 }\n    \
                rollout: { steps: [{ weight: 10%, for: 1m }], gates: { error_rate: { max: 1% } } }\n";
    let dir = std::env::temp_dir().join(format!("rollgate-flux-restart-{}", std::process::id()));
    let store = StateStore::new(Some(dir.clone()));
    let previous = RolloutState {
        phase: Phase::Previous,
        entered_ms: 1_700_000_000_000,
        reason: "rolled back: error rate 9% above 1%".into(),
        ..RolloutState::idle()
    };
    store
        .save(&BTreeMap::from([("m".to_owned(), &previous)]))
        .expect("save");
    let mut registry = Registry::default();
    let proxy = ProxyHandle::new(
        rollgate_config::parse(yaml).expect("config"),
        "rev-1",
        &mut registry,
    );
    let synthetic: SyntheticRunner =
        Arc::new(|_| Box::pin(std::future::ready(SyntheticState::None)));
    let (_driver, driver) = Driver::new(
        proxy.clone(),
        store,
        Arc::new(NoSignals),
        Arc::new(|_| None),
        synthetic,
        Duration::from_secs(3600),
    );
    std::fs::remove_dir_all(&dir).ok();
    let (_reloader, handle) = crate::reload::Reloader::new(
        crate::reload::ConfigSource::File("/nonexistent".into()),
        yaml,
        proxy.clone(),
        &mut registry,
    );
    let gitops = Gitops::new(proxy.clone(), handle, Some(driver));
    let (all, mut all_rx) = sink_into(true, &mut registry);
    let (changes, mut changes_rx) = sink_into(false, &mut registry);
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(gitops.publish(vec![all, changes], stop));

    let first = all_rx.recv().await.expect("initial status");
    assert_eq!(first.status.phase, "Previous");
    assert_eq!(
        flux::event(&first, "ml", SystemTime::UNIX_EPOCH).severity,
        "error",
        "what a Flux sink would have been sent"
    );
    tokio::time::sleep(PUBLISH_TICK * 3).await;
    assert!(
        changes_rx.try_recv().is_err(),
        "the restored rollback was announced again"
    );
    // A change after the restart is announced as usual.
    proxy.apply(rollgate_config::parse(yaml).expect("config"), "rev-2");
    let c = changes_rx.recv().await.expect("change");
    assert_eq!(c.status.observed_revision, "rev-2");
    stop_tx.send(true).expect("stop");
    task.await.expect("publisher ends on shutdown");
}

#[test]
fn kubernetes_object_names_keep_valid_names_and_map_the_rest_apart() {
    for name in ["llama", "chat-small", "qwen2.5-7b", "a"] {
        assert_eq!(object_name(name), name);
    }
    let hf = object_name("meta-llama/Llama-3-8B");
    assert!(hf.starts_with("meta-llama-llama-3-8b-"), "{hf}");
    // Names that map alike stay apart; the result is always a DNS-1123 subdomain.
    let others = [
        "meta-llama/llama-3-8b",
        "Chat",
        "my model",
        "模型",
        "-x-",
        &"a".repeat(300),
    ];
    let mut seen = std::collections::BTreeSet::from([hf.clone()]);
    for name in others {
        let o = object_name(name);
        assert!(seen.insert(o.clone()), "{name} -> {o} collides");
        let b = o.as_bytes();
        assert!(o.len() <= 253, "{o}");
        assert!(
            b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric(),
            "{o}"
        );
        assert!(
            b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.'),
            "{o}"
        );
    }
    // The Flux event is about that object.
    let mut c = change(Phase::Canary(0));
    c.model = "meta-llama/Llama-3-8B".into();
    let e = crate::gitops::flux_event(&c, "ml", std::time::SystemTime::UNIX_EPOCH);
    assert_eq!(e.involved_object.name, hf);
}
