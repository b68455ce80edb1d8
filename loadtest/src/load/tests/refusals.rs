//! A run whose every request the target refused with one status says what the target answered
//! (the start of the first body), once; mixed outcomes only count.

use super::*;
use crate::load::run::execute;
use crate::sim::{Faults, Ratio, SimArgs};

/// Runs 6 closed-loop requests with `flags` against a simulator started with `sim_args`.
async fn run_against(sim_args: SimArgs, flags: &[&str]) -> Report {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_args = SimArgs {
        listen: listener.local_addr().unwrap(),
        ..sim_args
    };
    let sim = crate::sim::start(sim_args, listener).await.unwrap();
    let url = sim.url();
    let mut all = vec![
        url.as_str(),
        "-n",
        "6",
        "--warmup",
        "0s",
        "--max-tokens",
        "1",
    ];
    all.extend_from_slice(flags);
    let plan = Plan::try_from(&args(&all)).unwrap();
    let report_plan = Plan::try_from(&args(&all)).unwrap();
    let outcome = tokio::task::spawn_blocking(move || execute(&plan, false))
        .await
        .unwrap()
        .unwrap();
    drop(sim);
    Report::new(&report_plan, &outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_refused_alike_shows_the_first_body_once() {
    let strict = SimArgs {
        model: "served".into(),
        any_model: false,
        ..SimArgs::default()
    };
    let report = run_against(strict, &["--model", "unknown"]).await;
    let t = &report.targets[0];
    assert_eq!((t.ok, t.errors.status_4xx), (0, 6), "{}", report.table());
    let table = report.table();
    let want = "  every request got HTTP 404: {\"error\":{\"code\":\"model_not_found\",\
                \"message\":\"The model `unknown` does not exist.\"";
    assert_eq!(table.matches(want).count(), 1, "{table}");
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["targets"][0]["first_error"]["status"], 404);
    let body = json["targets"][0]["first_error"]["body"].as_str().unwrap();
    assert!(body.contains("model_not_found"), "{body}");
    // --json keeps stdout one object: the line goes to stderr with the warnings.
    let warnings = report.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("every request got HTTP 404: {"),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn some_successes_leave_only_the_counts() {
    let flaky = SimArgs {
        seed: 3,
        faults: Faults {
            error_rate: Ratio::new(0.5).unwrap(),
            ..Faults::default()
        },
        ..SimArgs::default()
    };
    let report = run_against(flaky, &[]).await;
    let t = &report.targets[0];
    assert!(t.ok > 0 && t.errors.status_5xx > 0, "{}", report.table());
    assert!(
        !report.table().contains("every request"),
        "{}",
        report.table()
    );
    assert_eq!(t.first_error.as_ref().map(|e| e.status), Some(500));
}

#[test]
fn a_long_body_is_cut_to_one_line_of_200_characters() {
    let mut refusals = Refusals::default();
    let body = format!("<html>\n  <body>{}</body>\n</html>", "é".repeat(300));
    refusals.add(502, body.as_bytes());
    refusals.add(502, b"other");
    let first = refusals.uniform().unwrap();
    assert_eq!(first.status, 502);
    assert!(first.body.starts_with("<html> <body>éé"), "{}", first.body);
    assert_eq!(first.body.chars().count(), 201, "{}", first.body);
    assert!(first.body.ends_with('…'));

    let mut other = Refusals::default();
    other.add(503, b"busy");
    refusals.merge(&other);
    assert_eq!(refusals.uniform(), None, "two statuses");
}
