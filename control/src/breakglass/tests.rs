use super::*;
use crate::rollout::{Condition, RolloutStatus};

const CONFIG: &str = "listen: 127.0.0.1:0
models:
  - name: m
    stable: { endpoints: [\"http://127.0.0.1:1\"] }
    candidate: { endpoints: [\"http://127.0.0.1:2\"], revision: v2 }
    weight: 10%
    rollout:
      steps: [ { weight: 5%, for: 1m }, { weight: 50%, for: 1m } ]
  - name: plain
    stable: { endpoints: [\"http://127.0.0.1:3\"] }
";

fn config() -> Config {
    rollgate_config::parse(CONFIG).expect("test config")
}

fn ppm(s: &str) -> Ppm {
    rollgate_config::parse_ppm(s).expect("test weight")
}

fn status(phase: Phase, paused: Option<&str>, pinned: Option<&str>) -> RolloutStatus {
    RolloutStatus {
        started_revision: None,
        model: "m".into(),
        candidate: Some("c".into()),
        change: Some("revision"),
        phase,
        paused: paused.map(str::to_owned),
        pinned: pinned.map(str::to_owned),
        weight: "0%".into(),
        mirror: "0%".into(),
        reason: "gate failed during step 1: error_rate: 5% > 1%".into(),
        since_unix_ms: 0,
        gates: None,
        transition_gates: None,
        conditions: vec![Condition {
            kind: "Ready",
            status: "False",
            reason: "Previous",
            message: String::new(),
        }],
    }
}

fn note(by: &str, reason: &str) -> Option<Note> {
    Some(Note {
        by: by.into(),
        reason: reason.into(),
    })
}

#[test]
fn roles_decide_401_and_403() {
    let auth = AdminAuth::new("root")
        .with("alice", "a-secret", &[Role::Operate, Role::Sync])
        .with("ci", "ci-secret", &[Role::Read])
        .with("ops", "ops-secret", &[Role::Operate]);
    let bearer = |t: &str| format!("Bearer {t}");
    let check = |token: Option<&str>, role| {
        let header = token.map(bearer);
        match auth.authorize(header.as_deref().map(str::as_bytes), role) {
            Ok(c) => Ok(c.name.to_owned()),
            Err(Refused::Unauthorized) => Err(401),
            Err(Refused::Forbidden(_)) => Err(403),
            Err(e) => panic!("unexpected {e}"),
        }
    };
    let table: &[(Option<&str>, Role, Result<&str, u16>)] = &[
        (None, Role::Read, Err(401)),
        (Some("wrong"), Role::Sync, Err(401)),
        (Some("a-secret "), Role::Sync, Err(401)),
        (Some("root"), Role::Sync, Ok("admin")),
        (Some("root"), Role::Operate, Ok("admin")),
        (Some("a-secret"), Role::Sync, Ok("alice")),
        (Some("a-secret"), Role::Read, Ok("alice")),
        (Some("ci-secret"), Role::Read, Ok("ci")),
        (Some("ci-secret"), Role::Operate, Err(403)),
        (Some("ci-secret"), Role::Sync, Err(403)),
        (Some("ops-secret"), Role::Sync, Err(403)),
        (Some("ops-secret"), Role::Operate, Ok("ops")),
    ];
    for (token, role, want) in table {
        let want = want.map(str::to_owned);
        assert_eq!(check(*token, *role), want, "{token:?} {role}");
    }
    assert!(
        auth.identify(Some(b"a-secret")).is_none(),
        "no Bearer prefix"
    );
    // The scheme is case-insensitive (RFC 7235); the token is not.
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let header = format!("{scheme} ops-secret");
        assert_eq!(
            auth.identify(Some(header.as_bytes())).map(|c| c.name),
            Some("ops"),
            "{scheme}"
        );
    }
    assert!(auth.identify(Some(b"Bearer OPS-SECRET")).is_none());
    assert!(auth.identify(Some(b"Bearer")).is_none());
    assert!(
        !auth.check(Some(b"Bearer ci-secret")),
        "read cannot operate"
    );
    let Err(Refused::Forbidden(why)) = auth.authorize(Some(b"Bearer ci-secret"), Role::Sync) else {
        panic!("read-only token must be forbidden");
    };
    assert!(why.contains("`ci`") && why.contains("`sync`"), "{why}");
}

#[test]
fn a_second_approver_is_another_person_with_a_named_sync_token() {
    let auth = AdminAuth::new("root")
        .with("alice", "a", &[Role::Sync])
        .with("bob", "b", &[Role::Sync, Role::Read])
        .with("ci", "c", &[Role::Read]);
    let forbidden = |header: Option<&[u8]>, requester: &str, by: &str| match second_approver(
        &auth, requester, by, header,
    ) {
        Err(Refused::Forbidden(why)) => why,
        other => panic!("expected 403, got {other:?}"),
    };
    assert!(forbidden(None, "alice", "alice").contains("second approver"));
    assert!(forbidden(Some(b"Bearer nope"), "alice", "alice").contains("missing or wrong"));
    assert!(forbidden(Some(b"Bearer a"), "alice", "alice").contains("different token"));
    assert!(forbidden(Some(b"Bearer c"), "alice", "alice").contains("lacks the `sync` role"));
    // Someone calling themselves bob with alice's token is still alice: refused by name too.
    assert!(forbidden(Some(b"Bearer b"), "alice", "bob").contains("different person"));
    // The shared token names no person, on either side.
    assert!(forbidden(Some(b"Bearer root"), "bob", "bob").contains("cannot approve"));
    let why = forbidden(Some(b"Bearer a"), "admin", "alice");
    assert!(why.contains("shared `admin` token cannot pause"), "{why}");
    assert!(forbidden(Some(b"Bearer b"), "admin", "admin-token").contains("cannot pause"));
    assert_eq!(
        second_approver(&auth, "alice", "alice", Some(b"Bearer b")).ok(),
        Some("bob")
    );
}

#[test]
fn the_shared_token_takes_the_actor_header_and_a_named_token_stays_itself() {
    assert_eq!(actor("admin", Some("carol")), "carol");
    assert_eq!(actor("admin", None), "admin-token");
    assert_eq!(actor("alice", Some("carol")), "alice");
    assert_eq!(actor("alice", None), "alice");
}

/// Live weight, rollout status, notes, and the expected (reason prefix, out of sync).
type Case<'a> = (
    &'a str,
    Option<RolloutStatus>,
    &'a ModelNotes,
    Option<(&'a str, bool)>,
);

#[test]
fn drift_reasons_and_what_counts_as_out_of_sync() {
    let config = config();
    let m = &config.models[0];
    let pinned = ModelNotes {
        pin: note("alice", "load test"),
        pause: None,
    };
    let paused = ModelNotes {
        pin: None,
        pause: note("bob", "investigating"),
    };
    let none = ModelNotes::default();
    let canary = status(Phase::Canary(0), None, None);
    let table: &[Case<'_>] = &[
        // Live equals desired: no drift whatever the phase.
        (
            "10%",
            Some(status(Phase::Canary(0), None, Some("10%"))),
            &pinned,
            None,
        ),
        (
            "40%",
            Some(status(Phase::Canary(0), None, Some("40%"))),
            &pinned,
            Some(("pinned by alice: load test", true)),
        ),
        (
            "40%",
            Some(status(Phase::Canary(0), None, Some("40%"))),
            &none,
            Some(("pinned at 40% (author unknown", true)),
        ),
        (
            "5%",
            Some(status(Phase::Canary(0), Some("investigating"), None)),
            &paused,
            Some(("rollout paused: investigating (by bob)", true)),
        ),
        (
            "0%",
            Some(status(Phase::Previous, None, None)),
            &none,
            Some(("rolled back: gate failed during step 1", true)),
        ),
        (
            "100%",
            Some(status(Phase::Full, None, None)),
            &none,
            Some(("rollout complete (Full)", true)),
        ),
        (
            "5%",
            Some(canary),
            &none,
            Some(("rollout in progress (Canary step 1)", false)),
        ),
        (
            "0%",
            Some(status(Phase::ValidateHealth, None, None)),
            &none,
            Some(("rollout in progress (ValidateHealth)", false)),
        ),
        // A pin during a rollout is still a pin.
        (
            "50%",
            Some(status(Phase::Canary(1), Some("x"), Some("50%"))),
            &pinned,
            Some(("pinned by alice", true)),
        ),
    ];
    for (live, st, notes, want) in table {
        let got = drift(m, ppm(live), st.as_ref(), notes);
        match want {
            None => assert!(got.is_empty(), "{live}: {got:?}"),
            Some((reason, oos)) => {
                assert_eq!(got.len(), 1, "{live}: {got:?}");
                let d = &got[0];
                assert_eq!(
                    (d.field, d.desired.as_str(), d.live.as_str()),
                    ("weight", "10%", *live)
                );
                assert!(
                    d.reason.starts_with(reason),
                    "{live}: {:?} lacks {reason:?}",
                    d.reason
                );
                assert_eq!(d.out_of_sync, *oos, "{live}: {d:?}");
            }
        }
    }
}

fn sync_state(desired: Option<&str>, applied: &str, paused: bool) -> SyncState {
    SyncState {
        source: "file /etc/rollgate/rollgate.yaml".into(),
        desired: desired.map(str::to_owned),
        applied: applied.into(),
        paused: paused.then(|| SyncPause {
            by: "alice".into(),
            approver: Some("bob".into()),
            reason: "incident 42".into(),
            since_unix: 1_700_000_000,
        }),
    }
}

#[test]
fn sync_status_follows_revisions_pause_and_drift() {
    let progressing = vec![(
        "m".to_owned(),
        vec![Drift {
            field: "weight",
            desired: "10%".into(),
            live: "5%".into(),
            reason: "rollout in progress (Canary step 1)".into(),
            out_of_sync: false,
        }],
    )];
    let synced = sync_report(sync_state(Some("r1"), "r1", false), None, &progressing);
    assert_eq!((synced.status, synced.reasons.len()), ("Synced", 0));
    // Paused with nothing new in the source is still synced.
    let paused = sync_report(sync_state(Some("r1"), "r1", true), None, &[]);
    assert_eq!(paused.status, "Synced");
    assert!(paused.paused.is_some());

    let held = sync_report(sync_state(Some("r2"), "r1", true), None, &[]);
    assert_eq!(held.status, "OutOfSync");
    assert_eq!(
        held.reasons,
        ["sync paused by alice (approved by bob): incident 42; source at r2, serving r1"]
    );
    let invalid = sync_report(sync_state(Some("r2"), "r1", false), Some("r2"), &[]);
    assert!(invalid.reasons[0].contains("r2 is invalid"), "{invalid:?}");
    let pending = sync_report(sync_state(Some("r2"), "r1", false), Some("r0"), &[]);
    assert!(
        pending.reasons[0].contains("not applied yet"),
        "{pending:?}"
    );

    let pinned = vec![(
        "m".to_owned(),
        vec![Drift {
            field: "weight",
            desired: "10%".into(),
            live: "40%".into(),
            reason: "pinned by alice: load test".into(),
            out_of_sync: true,
        }],
    )];
    let drifted = sync_report(sync_state(Some("r1"), "r1", false), None, &pinned);
    assert_eq!(drifted.status, "OutOfSync");
    assert_eq!(
        drifted.reasons,
        ["model m: weight 40% live, 10% desired (pinned by alice: load test)"]
    );
}

#[test]
fn live_config_carries_live_weights_and_validates() {
    let config = config();
    let live = BTreeMap::from([
        ("m".to_owned(), ppm("40%")),
        ("plain".to_owned(), Ppm::ZERO),
    ]);
    let drift = vec![(
        "m".to_owned(),
        vec![Drift {
            field: "weight",
            desired: "10%".into(),
            live: "40%".into(),
            reason: "pinned by alice: load\ntest".into(),
            out_of_sync: true,
        }],
    )];
    let state = sync_state(Some("r2"), "r1", true);
    let text = live_config(CONFIG, &config, &live, &drift, &state, 1_700_000_000).expect("export");
    let exported = rollgate_config::parse(&text).expect("exported config validates");
    assert_eq!(exported.models[0].weight, ppm("40%"));
    assert_eq!(exported.models[1], config.models[1]);
    assert_eq!(exported.models[0].rollout, config.models[0].rollout);
    assert!(
        text.starts_with(
            "# rollgate live state, exported 2023-11-14T22:13:20Z from serving revision r1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("(now at r2: changes made there since are NOT in this file"),
        "{text}"
    );
    assert!(
        text.contains(
            "# sync paused at 2023-11-14T22:13:20Z by alice (approved by bob): incident 42\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("#   model m: weight 40% (source says 10%): pinned by alice: load test\n"),
        "{text}"
    );

    // Nothing differs: the text keeps the source's weights and says so.
    let same = BTreeMap::from([("m".to_owned(), ppm("10%"))]);
    let text = live_config(
        CONFIG,
        &config,
        &same,
        &[],
        &sync_state(Some("r1"), "r1", false),
        0,
    )
    .expect("export");
    assert!(
        text.contains("# The live weights are the ones this revision sets."),
        "{text}"
    );
    assert_eq!(rollgate_config::parse(&text).expect("valid"), config);
}

#[test]
fn notes_follow_pin_unpin_pause_resume_abort() {
    let notes = OperatorNotes::default();
    notes.record("m", "pin", "alice", "load test");
    notes.record("m", "pause", "bob", "look");
    assert_eq!(notes.get("m").pin, note("alice", "load test"));
    assert_eq!(notes.get("m").pause, note("bob", "look"));
    notes.record("m", "abort", "bob", "bad");
    notes.record("m", "resume", "bob", "ok");
    assert_eq!(notes.get("m"), ModelNotes::default());
    assert_eq!(notes.get("other"), ModelNotes::default());
}

#[test]
fn notes_are_rebuilt_from_the_audit_log() {
    let dir = std::env::temp_dir().join(format!("rollgate-notes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("audit.log");
    let lines = [
        r#"{"action":"pin","actor":"alice","model":"m","reason":"first"}"#,
        r#"{"action":"pause-sync","actor":"alice","approver":"bob","reason":"x"}"#,
        r#"{"action":"pause","actor":"bob","model":"m","reason":"look"}"#,
        r#"{"action":"unpin","actor":"bob","model":"m","reason":"done"}"#,
        r#"{"action":"pin","actor":"carol","model":"m","reason":"again"}"#,
        r#"{"action":"pin","actor":"dave","model":"n","reas"#,
    ];
    std::fs::write(&log, lines.join("\n")).expect("log");
    let notes = OperatorNotes::from_audit(Some(&log));
    assert_eq!(notes.get("m").pin, note("carol", "again"));
    assert_eq!(notes.get("m").pause, note("bob", "look"));
    assert_eq!(
        notes.get("n"),
        ModelNotes::default(),
        "a torn line is skipped"
    );
    let none = OperatorNotes::from_audit(Some(&dir.join("missing.log")));
    assert_eq!(none.get("m"), ModelNotes::default());
    std::fs::remove_dir_all(&dir).ok();
}

fn pause(by: &str) -> SyncPause {
    SyncPause {
        by: by.into(),
        approver: Some("bob".into()),
        reason: "incident 42".into(),
        since_unix: 1_700_000_000,
    }
}

#[test]
fn a_saved_pause_survives_a_restart_with_the_revision_it_held() {
    let dir = std::env::temp_dir().join(format!("rollgate-held-{}", std::process::id()));
    let store = PauseStore::new(Some(dir.join("state")));
    assert_eq!(store.load(), Ok(None));
    let held = HeldSync::new(&pause("alice"), "sha-1", CONFIG);
    let path = store.save(&held).expect("save");
    assert_eq!(path, Some(dir.join("state").join("sync-pause.json")));
    assert_eq!(store.load(), Ok(Some(held.clone())));
    assert_eq!(held.pause(), pause("alice"));
    // The saved pause wins over the audit log; a resume forgets it.
    let (restored, error) = store.restore(Some(&dir.join("missing.log")));
    assert_eq!((restored, error), (Some(Restored::Held(held)), None));
    store.clear().expect("clear");
    store.clear().expect("clearing twice is fine");
    assert_eq!(store.restore(None), (None, None));
    // Without a state_dir nothing is saved, and nothing fails.
    let none = PauseStore::new(None);
    assert_eq!(none.save(&HeldSync::new(&pause("a"), "r", "t")), Ok(None));
    assert_eq!(none.load(), Ok(None));
    // A file that does not parse is said, and the audit log is read instead.
    std::fs::write(dir.join("state").join("sync-pause.json"), "{").expect("corrupt");
    let log = dir.join("audit.log");
    std::fs::write(
        &log,
        r#"{"action":"pause-sync","actor":"alice","approver":"bob","reason":"x","time":5.5,"applied":"sha-0"}"#,
    )
    .expect("log");
    let (restored, error) = store.restore(Some(&log));
    assert!(
        error.is_some_and(|e| e.contains("not a saved sync pause")),
        "the error is named"
    );
    assert!(
        matches!(restored, Some(Restored::Audited { revision: Some(ref r), .. }) if r == "sha-0")
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_audit_log_names_a_pause_no_resume_followed() {
    let dir = std::env::temp_dir().join(format!("rollgate-unresumed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("audit.log");
    let pause_line = r#"{"action":"pause-sync","actor":"alice","approver":"bob","reason":"incident 42","time":1700000000.25,"applied":"sha-1"}"#;
    let resume_line = r#"{"action":"resume-sync","actor":"bob"}"#;
    let pin_line = r#"{"action":"pin","actor":"carol","model":"m","reason":"x"}"#;
    let cases: [(&[&str], bool); 5] = [
        (&[], false),
        (&[pause_line, resume_line], false),
        (&[pause_line, pin_line], true),
        (
            &[
                pause_line,
                resume_line,
                pause_line,
                r#"{"action":"resume-sy"#,
            ],
            true,
        ),
        (&[resume_line, pause_line, resume_line, pin_line], false),
    ];
    for (lines, paused) in cases {
        std::fs::write(&log, lines.join("\n")).expect("log");
        let found = unresumed_pause(&log);
        assert_eq!(found.is_some(), paused, "{lines:?}");
        if let Some((p, revision)) = found {
            assert_eq!(p, pause("alice"), "{lines:?}");
            assert_eq!(revision.as_deref(), Some("sha-1"));
        }
    }
    assert_eq!(unresumed_pause(&dir.join("missing.log")), None);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tokens_load_from_files_and_must_be_distinct() {
    let dir = std::env::temp_dir().join(format!("rollgate-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("a"), "same\n").expect("a");
    std::fs::write(dir.join("b"), "same").expect("b");
    std::fs::write(dir.join("c"), "other\n").expect("c");
    let token = |name: &str, file: &str| rollgate_config::AdminToken {
        name: name.into(),
        file: dir.join(file),
        roles: vec![Role::Sync],
    };
    let mut admin = rollgate_config::parse(CONFIG).expect("config").admin;
    admin.tokens = vec![token("alice", "a"), token("bob", "c")];
    let auth = AdminAuth::load(&admin).expect("load").expect("tokens");
    let names: Vec<&str> = auth.names().iter().map(|(n, _)| *n).collect();
    // `admin` comes first when ROLLGATE_ADMIN_TOKEN is set in the test's environment.
    assert!(names.ends_with(&["alice", "bob"]), "{names:?}");
    assert_eq!(
        auth.identify(Some(b"Bearer other")).map(|c| c.name),
        Some("bob")
    );

    admin.tokens = vec![token("alice", "a"), token("bob", "b")];
    let err = AdminAuth::load(&admin).expect_err("same secret twice");
    assert!(
        err.to_string()
            .contains("`bob` has the same token as `alice`"),
        "{err}"
    );
    admin.tokens = vec![token("alice", "missing")];
    let err = AdminAuth::load(&admin).expect_err("missing file");
    assert!(err.to_string().contains("missing"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
