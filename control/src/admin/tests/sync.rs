//! The break-glass sync endpoints over loopback: the two-person pause against one person with
//! two tokens, `release_pins` needing `operate`, a resume with nothing to act on, and bodies
//! over the limit.

use super::*;

const ALICE: &str = "alice-secret";
const BOB: &str = "bob-secret";
/// `sync` and `operate`.
const LEAD: &str = "lead-secret";

fn sync_tokens() -> AdminAuth {
    AdminAuth::new(ADMIN)
        .with("alice", ALICE, &[Role::Sync])
        .with("bob", BOB, &[Role::Sync])
        .with("lead", LEAD, &[Role::Sync, Role::Operate])
        .with("ops", OPS, &[Role::Operate])
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `Authorization`, `X-Rollgate-Approver` and `x-rollgate-actor` as given.
fn headers(
    token: &str,
    approver: Option<&str>,
    actor: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut h = vec![(AUTHORIZATION.as_str(), bearer(token))];
    h.extend(approver.map(|a| ("x-rollgate-approver", bearer(a))));
    h.extend(actor.map(|a| ("x-rollgate-actor", a.to_owned())));
    h
}

fn error(a: &Answer) -> String {
    let v: Value = serde_json::from_str(&a.body).expect("a JSON error");
    v["error"].as_str().expect("error").to_owned()
}

fn audit_lines(gw: &Fixture) -> Vec<Value> {
    let text = std::fs::read_to_string(gw.dir.join("audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("audit JSON"))
        .collect()
}

#[tokio::test]
async fn one_person_with_the_shared_token_and_their_own_is_not_two_approvers() {
    let gw = Fixture::start_with("two-person", false, Some(sync_tokens()), 2).await;
    let body = r#"{"reason":"one person"}"#;
    // QA's case: the shared token named `alice` by header, approved by alice's own token.
    let refused = [
        (
            ADMIN,
            Some(ALICE),
            Some("alice"),
            "shared `admin` token cannot pause",
        ),
        (
            ADMIN,
            Some(BOB),
            Some("carol"),
            "shared `admin` token cannot pause",
        ),
        (
            ALICE,
            Some(ADMIN),
            None,
            "shared `admin` token cannot approve",
        ),
        (ALICE, Some(ALICE), None, "different token"),
    ];
    for (token, approver, actor, why) in refused {
        let a = gw
            .call_with(
                "POST",
                "/sync/pause",
                &headers(token, approver, actor),
                body,
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{why}: {}", a.body);
        assert!(error(&a).contains(why), "{why}: {}", a.body);
    }
    assert!(gw.json("/status").await["sync"]["paused"].is_null());
    assert!(audit_lines(&gw).is_empty());

    // Two people, two named tokens.
    let a = gw
        .call_with(
            "POST",
            "/sync/pause",
            &headers(ALICE, Some(BOB), None),
            body,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let audit = audit_lines(&gw);
    assert_eq!(
        (&audit[0]["actor"], &audit[0]["approver"]),
        (&Value::from("alice"), &Value::from("bob")),
        "{audit:?}"
    );
}

#[tokio::test]
async fn release_pins_needs_operate_and_a_resume_with_nothing_to_do_is_409() {
    let gw = Fixture::start("release-pins", false, Some(sync_tokens())).await;
    let resume = |token: &'static str, body: &'static str| {
        let gw = &gw;
        async move {
            gw.call_with("POST", "/sync/resume", &headers(token, None, None), body)
                .await
        }
    };
    // Not paused, nothing pinned: nothing to resume, and nothing written.
    for body in ["", r#"{"release_pins":true}"#] {
        let a = resume(LEAD, body).await;
        assert_eq!(a.status, StatusCode::CONFLICT, "{body}: {}", a.body);
        assert!(error(&a).contains("not paused"), "{}", a.body);
    }
    assert!(audit_lines(&gw).is_empty());

    let pin = r#"{"reason":"hold","weight":"40%"}"#;
    let a = gw.call("POST", "/rollouts/a/pin", Some(OPS), pin).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // A `sync`-only token may resume, not release an operator's pin.
    let a = resume(ALICE, r#"{"release_pins":true}"#).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(
        error(&a).contains("token `alice` lacks the `operate` role"),
        "{}",
        a.body
    );
    let rollouts = gw.json("/rollouts").await;
    assert_eq!(rollouts[0]["pinned"], "40%", "{rollouts:#}");
    // Pinned but not paused: a plain resume still has nothing to do.
    let a = resume(ALICE, "").await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);

    let a = resume(LEAD, r#"{"release_pins":true}"#).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let rollouts = gw.json("/rollouts").await;
    assert!(rollouts[0]["pinned"].is_null(), "{rollouts:#}");

    // A pause, then a resume by a `sync`-only token.
    let a = gw
        .call_with(
            "POST",
            "/sync/pause",
            &headers(BOB, None, None),
            r#"{"reason":"r"}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = resume(ALICE, "").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let actions: Vec<String> = audit_lines(&gw)
        .iter()
        .filter_map(|l| l["action"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(actions, ["pin", "resume-sync", "pause-sync", "resume-sync"]);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_with_a_json_error() {
    let gw = Fixture::start("too-large", false, Some(sync_tokens())).await;
    let big = format!(r#"{{"reason":"{}","weight":"40%"}}"#, "x".repeat(3 << 20));
    for path in ["/rollouts/a/pin", "/sync/pause"] {
        let a = gw.call("POST", path, Some(LEAD), &big).await;
        assert_eq!(
            a.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {}",
            a.body
        );
        assert_eq!(error(&a), "body over 64 KiB", "{path}");
    }
    // Just under the limit is read (and refused for what it says, not for its size).
    let fits = format!(r#"{{"reason":"{}"}}"#, "x".repeat(60 << 10));
    let a = gw.call("POST", "/rollouts/c/pin", Some(LEAD), &fits).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
}

#[tokio::test]
async fn the_webhook_limit_is_named_in_its_unit() {
    let body = Full::new(Bytes::from(vec![b'x'; MAX_HOOK_BODY + 1]));
    let Err(resp) = read_body(body, MAX_HOOK_BODY).await else {
        panic!("a body over the limit must be refused");
    };
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&text).expect("JSON");
    assert_eq!(v["error"], "body over 25 MiB");
    let exact = Full::new(Bytes::from(vec![b'x'; MAX_HOOK_BODY]));
    assert_eq!(
        read_body(exact, MAX_HOOK_BODY).await.map(|b| b.len()).ok(),
        Some(MAX_HOOK_BODY)
    );
    assert_eq!(size(1000), "1000 bytes");
}
