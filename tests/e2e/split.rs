//! Acceptance 2: a weighted split with sticky cohorts. At 10 % the candidate takes its share of
//! 8,000 distinct users, a user always lands on the same variant, and raising the weight to 30 %
//! by a reload moves users only from stable to candidate, never back.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use rollgate_loadtest::sim::Sim;
use tokio::task::JoinSet;

use crate::support::*;

/// Distinct cohort keys (users).
const KEYS: usize = 8_000;
/// Requests in flight at once.
const IN_FLIGHT: usize = 32;
/// Keys re-sent to check stickiness, and how many times each.
const STICKY_KEYS: usize = 500;
const STICKY_ROUNDS: usize = 3;

fn split_config(stable: &Sim, candidate: &Sim, weight: &str) -> String {
    let model = format!("    weight: {weight}\n    cohort: {{ header: x-user-id }}\n");
    config(stable, Some(candidate), &model, "")
}

/// Standard deviation of a candidate share `p` measured over `KEYS` keys. The keys are fixed
/// strings, so the measured share is deterministic; the bound says how far an unbiased hash may
/// put it from the weight.
fn sd(p: f64) -> f64 {
    (p * (1.0 - p) / KEYS as f64).sqrt()
}

/// The acceptance bound at 10 % is 1.2 pp; sd(0.10) ≈ 0.335 pp, so that is ≈ 3.6 sd. Other
/// weights get the same number of standard deviations (≈ 1.8 pp at 30 %).
fn tolerance(p: f64) -> f64 {
    0.012 / sd(0.10) * sd(p)
}

/// Sends one request per key, at most `IN_FLIGHT` at once; true where the candidate answered.
async fn route_all(c: &HttpClient, url: &str, keys: &Arc<Vec<String>>) -> Vec<bool> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (c, url, keys, next) = (c.clone(), url.to_owned(), keys.clone(), next.clone());
        tasks.spawn(async move {
            let mut seen = Vec::new();
            loop {
                let i = next.fetch_add(1, Relaxed);
                let Some(key) = keys.get(i) else { break };
                seen.push((i, on_candidate(&c, &url, key).await));
            }
            seen
        });
    }
    let mut out = vec![false; keys.len()];
    while let Some(done) = tasks.join_next().await {
        for (i, cand) in done.expect("request task") {
            out[i] = cand;
        }
    }
    out
}

async fn on_candidate(c: &HttpClient, url: &str, key: &str) -> bool {
    let r = send(c, url, &[("x-user-id", key)], chat("m", "hi", false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let variant = r.header("x-rollgate-variant").expect("x-rollgate-variant");
    // The header must name the simulator that really answered (sims are named after roles).
    assert_eq!(r.header("x-sim-name"), Some(variant), "key {key}");
    match variant {
        "candidate" => true,
        "stable" => false,
        other => panic!("unexpected variant {other:?} for key {key}"),
    }
}

fn share(on: &[bool]) -> f64 {
    on.iter().filter(|c| **c).count() as f64 / on.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_sticky_and_only_grows() {
    let _heavy = heavy().await;
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let gw = Gateway::start(&split_config(&stable, &candidate, "10%"));
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("user-{i}")).collect());

    let at10 = route_all(&c, &url, &keys).await;
    let s10 = share(&at10);
    eprintln!("candidate share at 10%: {:.2}%", s10 * 100.0);
    assert!(
        (s10 - 0.10).abs() <= tolerance(0.10),
        "candidate share {:.2}% is not within 10% ± {:.2} pp",
        s10 * 100.0,
        tolerance(0.10) * 100.0
    );

    let sample: Arc<Vec<String>> = Arc::new(keys[..STICKY_KEYS].to_vec());
    for round in 0..STICKY_ROUNDS {
        let again = route_all(&c, &url, &sample).await;
        for (i, (was, now)) in at10.iter().zip(&again).enumerate() {
            assert_eq!(was, now, "round {round}: {} changed variant", sample[i]);
        }
    }

    let outcome = gw
        .apply_config(&split_config(&stable, &candidate, "30%"))
        .await;
    assert_eq!(outcome["result"], "success", "{outcome}");

    let at30 = route_all(&c, &url, &keys).await;
    let moved_back: Vec<&String> = (0..KEYS)
        .filter(|&i| at10[i] && !at30[i])
        .map(|i| &keys[i])
        .collect();
    assert!(
        moved_back.is_empty(),
        "back on stable after raising the weight: {moved_back:?}"
    );
    let s30 = share(&at30);
    eprintln!("candidate share at 30%: {:.2}%", s30 * 100.0);
    assert!(
        (s30 - 0.30).abs() <= tolerance(0.30),
        "candidate share {:.2}% is not within 30% ± {:.2} pp",
        s30 * 100.0,
        tolerance(0.30) * 100.0
    );
    // Every request reached the simulator its variant names: 8,000 × 2 + the sticky rounds.
    let total = stable.requests_total() + candidate.requests_total();
    assert_eq!(total, (2 * KEYS + STICKY_KEYS * STICKY_ROUNDS) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_header_is_honoured_only_when_allowed() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let with_routing =
        |routing: &str| config(&stable, Some(&candidate), "    weight: 0%\n", routing);
    let gw = Gateway::start(&with_routing(""));
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let ask = |variant: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            send(
                &c,
                &url,
                &[("x-rollgate-variant", variant)],
                chat("m", "hi", false),
            )
            .await
        }
    };

    // Off by default: a client cannot pick its own variant.
    let r = ask("candidate").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sim-name"), Some("stable"));
    assert_eq!(r.header("x-rollgate-variant"), Some("stable"));

    let outcome = gw
        .apply_config(&with_routing("routing: { allow_override: true }\n"))
        .await;
    assert_eq!(outcome["result"], "success", "{outcome}");
    let r = ask("candidate").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sim-name"), Some("candidate"));
    assert_eq!(r.header("x-rollgate-variant"), Some("candidate"));
    let r = ask("stable").await;
    assert_eq!(r.header("x-sim-name"), Some("stable"));
    let r = ask("newest").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "bad_override");
    // Without the header the weight (0 %) still decides.
    let r = send(&c, &url, &[], chat("m", "hi", false)).await;
    assert_eq!(r.header("x-sim-name"), Some("stable"));

    let outcome = gw
        .apply_config(&with_routing(
            "routing: { allow_override: true, variant_header: false }\n",
        ))
        .await;
    assert_eq!(outcome["result"], "success", "{outcome}");
    let r = ask("candidate").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-sim-name"),
        Some("candidate"),
        "the override still works"
    );
    assert_eq!(r.header("x-rollgate-variant"), None);
    let r = send(&c, &url, &[], chat("m", "hi", false)).await;
    assert_eq!(r.header("x-sim-name"), Some("stable"));
    assert_eq!(r.header("x-rollgate-variant"), None);

    // Served requests are counted under the variant that served them, overrides included.
    let m = gw.metrics().await;
    let served = |v: &str| {
        metric(
            &m,
            &format!(
                r#"rollgate_proxy_requests_total{{model="m",variant="{v}",status_class="2xx"}}"#
            ),
        )
    };
    assert_eq!(served("candidate"), Some(2.0), "{m}");
    assert_eq!(served("stable"), Some(4.0), "{m}");
    assert_eq!(candidate.requests_total(), 2);
}
