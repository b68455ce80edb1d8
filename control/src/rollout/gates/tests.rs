use std::time::Duration;

use rollgate_config::{CorrectnessGate, ErrorRateGate, Gates, GpuMemoryGate, LatencyGate, Ppm};

use super::*;

/// `n` requests, `k` failures, latencies all at `secs` (placed in a bucket grid).
fn window(n: u64, k: u64, secs: f64) -> VariantWindow {
    VariantWindow {
        requests: n,
        failures: k,
        latency: dist(n, secs),
        ttft: dist(n, secs),
    }
}

fn dist(n: u64, secs: f64) -> Dist {
    let bounds = [
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        f64::INFINITY,
    ];
    dist_over(&bounds, n, secs)
}

/// `n` samples at `secs` over the bucket bounds `bounds` (the last one `+Inf`).
fn dist_over(bounds: &[f64], n: u64, secs: f64) -> Dist {
    let buckets = bounds
        .iter()
        .map(|&le| (le, if secs <= le { n as f64 } else { 0.0 }))
        .collect();
    Dist {
        buckets,
        count: n as f64,
        sum: n as f64 * secs,
    }
}

fn ppm(p: u32) -> Ppm {
    Ppm::new(p).expect("ppm")
}

fn inputs(stable: VariantWindow, candidate: VariantWindow) -> GateInputs {
    GateInputs {
        stable,
        candidate,
        queue_time: Ok(None),
        gpu_memory: Ok(None),
        ..Default::default()
    }
}

fn one(gates: &Gates, i: &GateInputs) -> Verdict {
    evaluate(gates, 200, i).verdict
}

#[test]
fn error_rate_needs_samples_and_significance() {
    let g = Gates {
        error_rate: Some(ErrorRateGate {
            max: Some(ppm(10_000)),
            max_vs_stable: Some(ppm(5_000)),
        }),
        ..Default::default()
    };
    let rows = [
        (
            window(400, 0, 0.1),
            window(100, 50, 0.1),
            Verdict::Inconclusive,
            "too few candidate samples",
        ),
        (
            window(400, 0, 0.1),
            window(400, 0, 0.1),
            Verdict::Pass,
            "clean",
        ),
        (
            window(400, 0, 0.1),
            window(400, 20, 0.1),
            Verdict::Fail,
            "5 % errors",
        ),
        (
            window(400, 0, 0.1),
            window(400, 5, 0.1),
            Verdict::Inconclusive,
            "1.25 %: above 1 % but not significant",
        ),
        (
            window(100, 0, 0.1),
            window(400, 0, 0.1),
            Verdict::Inconclusive,
            "too few stable samples for the comparison",
        ),
    ];
    for (stable, candidate, want, why) in rows {
        assert_eq!(one(&g, &inputs(stable, candidate)), want, "{why}");
    }
}

#[test]
fn latency_quantiles_against_a_bound_and_against_stable() {
    let max = Gates {
        latency_p99: Some(LatencyGate {
            max: Some(Duration::from_secs(2)),
            max_ratio_vs_stable: None,
        }),
        ..Default::default()
    };
    assert_eq!(
        one(&max, &inputs(window(400, 0, 0.1), window(400, 0, 0.4))),
        Verdict::Pass
    );
    assert_eq!(
        one(&max, &inputs(window(400, 0, 0.1), window(400, 0, 4.0))),
        Verdict::Fail
    );
    let ratio = Gates {
        latency_p99: Some(LatencyGate {
            max: None,
            max_ratio_vs_stable: Some(1.2),
        }),
        ..Default::default()
    };
    // +300 ms on a 100 ms stable: far beyond 1.2×.
    assert_eq!(
        one(&ratio, &inputs(window(400, 0, 0.09), window(400, 0, 0.4))),
        Verdict::Fail
    );
    assert_eq!(
        one(&ratio, &inputs(window(400, 0, 0.09), window(400, 0, 0.09))),
        Verdict::Pass
    );
    let ttft = Gates {
        ttft_p95: Some(LatencyGate {
            max: Some(Duration::from_millis(800)),
            max_ratio_vs_stable: None,
        }),
        ..Default::default()
    };
    assert_eq!(
        one(&ttft, &inputs(window(400, 0, 0.1), window(400, 0, 2.0))),
        Verdict::Fail
    );
}

#[test]
fn gpu_memory_and_queue_time_read_engine_signals_and_count_metric_errors() {
    let g = Gates {
        gpu_memory_used: Some(GpuMemoryGate { max: ppm(920_000) }),
        queue_time_p95: Some(LatencyGate {
            max: Some(Duration::from_millis(500)),
            max_ratio_vs_stable: None,
        }),
        ..Default::default()
    };
    let mut i = inputs(window(400, 0, 0.1), window(400, 0, 0.1));
    i.gpu_memory = Ok(Some(0.80));
    i.queue_time = Ok(Some(dist(400, 0.05)));
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Pass);
    i.gpu_memory = Ok(Some(0.95));
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Fail);
    i.gpu_memory = Ok(Some(0.80));
    i.queue_time = Ok(Some(dist(400, 1.0)));
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Fail);
    i.queue_time = Err("connect refused".into());
    let e = evaluate(&g, 200, &i);
    assert_eq!((e.verdict, e.metric_error), (Verdict::Inconclusive, true));
}

#[test]
fn signal_gates_wait_for_a_first_reading_without_an_error_while_the_others_judge() {
    let g = Gates {
        gpu_memory_used: Some(GpuMemoryGate { max: ppm(920_000) }),
        queue_time_p95: Some(LatencyGate {
            max: Some(Duration::from_millis(500)),
            max_ratio_vs_stable: None,
        }),
        error_rate: Some(ErrorRateGate {
            max: Some(ppm(10_000)),
            max_vs_stable: None,
        }),
        ..Default::default()
    };
    let mut i = inputs(window(400, 0, 0.1), window(400, 0, 0.1));
    i.signals_pending = true;
    let e = evaluate(&g, 200, &i);
    assert_eq!((e.verdict, e.metric_error), (Verdict::Inconclusive, false));
    assert!(
        e.results
            .iter()
            .filter(|r| r.gate != "error_rate")
            .all(|r| r.verdict == Verdict::Inconclusive && r.reason.contains("first reading")),
        "{e:#?}"
    );
    // A breach on the data plane's own observations is judged at once.
    let mut i = inputs(window(400, 0, 0.1), window(400, 40, 0.1));
    i.signals_pending = true;
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Fail);
}

#[test]
fn correctness_from_shadow_pairs_and_synthetic_checks() {
    let g = Gates {
        correctness: Some(CorrectnessGate { min: 0.98 }),
        ..Default::default()
    };
    let mut i = inputs(window(0, 0, 0.1), window(0, 0, 0.1));
    i.correctness = Some(Correctness {
        comparable_pairs: 50,
        agreeing_pairs: 50,
        ..Default::default()
    });
    assert_eq!(
        evaluate(&g, 200, &i).verdict,
        Verdict::Inconclusive,
        "too few pairs"
    );
    i.correctness = Some(Correctness {
        comparable_pairs: 300,
        agreeing_pairs: 300,
        ..Default::default()
    });
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Pass);
    i.correctness = Some(Correctness {
        comparable_pairs: 300,
        agreeing_pairs: 150,
        ..Default::default()
    });
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Fail);
    i.correctness = Some(Correctness {
        comparable_pairs: 300,
        agreeing_pairs: 300,
        synthetic_failed: 1,
        synthetic_passed: 4,
        ..Default::default()
    });
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Fail);
}

#[test]
fn shadow_min_pairs_hold_a_pass_but_not_a_significant_failure() {
    let g = Gates {
        correctness: Some(CorrectnessGate { min: 0.98 }),
        ..Default::default()
    };
    let mut i = inputs(window(0, 0, 0.1), window(0, 0, 0.1));
    let pairs = |comparable, agreeing, synthetic_passed| Correctness {
        comparable_pairs: comparable,
        agreeing_pairs: agreeing,
        synthetic_passed,
        min_pairs: 500,
        ..Default::default()
    };
    i.correctness = Some(pairs(300, 300, 0));
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Inconclusive);
    i.correctness = Some(pairs(0, 0, 1));
    assert_eq!(
        evaluate(&g, 200, &i).verdict,
        Verdict::Inconclusive,
        "a passed suite does not stand in for shadow pairs"
    );
    i.correctness = Some(pairs(500, 500, 0));
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Pass);
    i.correctness = Some(pairs(300, 150, 0));
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Fail);
}

#[test]
fn an_ejected_candidate_fails_instead_of_waiting_for_data() {
    let mut i = inputs(window(0, 0, 0.1), window(0, 0, 0.1));
    i.ejections = 1;
    let e = evaluate(&Gates::default(), 200, &i);
    assert_eq!(e.verdict, Verdict::Fail);
    assert_eq!(e.results[0].gate, "ejection");
}

#[test]
fn count_above_interpolates_inside_a_bucket() {
    let d = Dist {
        buckets: vec![(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)],
        count: 100.0,
        sum: 10.0,
    };
    assert!((d.count_above(0.15) - 25.0).abs() < 1e-9);
    assert!((d.count_above(0.05) - 75.0).abs() < 1e-9);
    assert_eq!(d.count_above(0.3), 0.0);
    assert_eq!(
        d.count_surely_above(0.15),
        0.0,
        "the (0.1, 0.2] bucket may lie below 0.15"
    );
    assert_eq!(d.count_surely_above(0.1), 50.0);
}

#[test]
fn a_bound_inside_a_coarse_first_bucket_neither_fails_nor_blocks_a_fast_candidate() {
    // vLLM-style queue time: the first bucket is (0, 0.3]; everything waited ~1 ms.
    let coarse = |n: f64, mean: f64| Dist {
        buckets: vec![(0.3, n), (0.5, n), (f64::INFINITY, n)],
        count: n,
        sum: n * mean,
    };
    let g = Gates {
        queue_time_p95: Some(LatencyGate {
            max: Some(Duration::from_millis(100)),
            max_ratio_vs_stable: None,
        }),
        ..Default::default()
    };
    let mut i = inputs(window(400, 0, 0.1), window(400, 0, 0.1));
    i.queue_time = Ok(Some(coarse(400.0, 0.001)));
    assert_eq!(
        evaluate(&g, 200, &i).verdict,
        Verdict::Pass,
        "Markov: mean 1 ms bounds P(X > 100 ms) by 1 %"
    );
    i.queue_time = Ok(Some(coarse(400.0, 0.2)));
    assert_eq!(
        evaluate(&g, 200, &i).verdict,
        Verdict::Inconclusive,
        "cannot tell inside the bucket"
    );
    let slow = Dist {
        buckets: vec![(0.3, 0.0), (0.5, 400.0), (f64::INFINITY, 400.0)],
        count: 400.0,
        sum: 160.0,
    };
    i.queue_time = Ok(Some(slow));
    assert_eq!(
        evaluate(&g, 200, &i).verdict,
        Verdict::Fail,
        "surely above 100 ms"
    );
}

#[test]
fn promql_values_against_bounds_and_unanswered_queries() {
    let q = |name: &str, max: Option<f64>, min: Option<f64>| rollgate_config::PromqlQuery {
        name: name.into(),
        query: "x".into(),
        max,
        min,
    };
    let g = Gates {
        promql: Some(rollgate_config::PromqlGates {
            url: "http://127.0.0.1:9".into(),
            timeout: Duration::from_secs(1),
            queries: vec![
                q("errors", Some(0.0), None),
                q("throughput", None, Some(10.0)),
            ],
        }),
        ..Default::default()
    };
    let mut i = inputs(window(0, 0, 0.1), window(0, 0, 0.1));
    i.promql = vec![("errors".into(), Ok(0.0)), ("throughput".into(), Ok(25.0))];
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Pass);
    i.promql = vec![("errors".into(), Ok(3.0)), ("throughput".into(), Ok(25.0))];
    let e = evaluate(&g, 200, &i);
    assert_eq!(e.verdict, Verdict::Fail);
    assert!(e
        .results
        .iter()
        .any(|r| r.reason.starts_with("errors: 3 is above 0")));
    i.promql = vec![("errors".into(), Ok(0.0)), ("throughput".into(), Ok(2.0))];
    assert_eq!(evaluate(&g, 200, &i).verdict, Verdict::Fail);
    i.promql = vec![("errors".into(), Err("connection refused".into()))];
    let e = evaluate(&g, 200, &i);
    assert_eq!((e.verdict, e.metric_error), (Verdict::Inconclusive, true));
}

/// `n` samples at `secs` in the data plane's own histogram layout.
fn gateway_dist(n: u64, secs: f64) -> Dist {
    let mut bounds = rollgate_proxy::LATENCY_BUCKETS.to_vec();
    bounds.push(f64::INFINITY);
    dist_over(&bounds, n, secs)
}

/// Gates are written with round bounds, and the gateway's buckets have them: a healthy
/// candidate under a 200 ms TTFT or 2 s latency bound passes, one above it fails, both at
/// once. (With one bucket from 100 to 250 ms a TTFT of 150 ms stayed inconclusive: a third
/// of that bucket interpolates above 200 ms.)
#[test]
fn round_bounds_in_the_gateways_buckets_give_verdicts() {
    let gates = Gates {
        ttft_p95: Some(LatencyGate {
            max: Some(Duration::from_millis(200)),
            max_ratio_vs_stable: None,
        }),
        latency_p99: Some(LatencyGate {
            max: Some(Duration::from_secs(2)),
            max_ratio_vs_stable: None,
        }),
        ..Default::default()
    };
    let w = |ttft: f64, latency: f64| VariantWindow {
        requests: 400,
        failures: 0,
        latency: gateway_dist(400, latency),
        ttft: gateway_dist(400, ttft),
    };
    let stable = w(0.05, 0.5);
    assert_eq!(
        one(&gates, &inputs(stable.clone(), w(0.15, 1.55))),
        Verdict::Pass
    );
    assert_eq!(
        one(&gates, &inputs(stable.clone(), w(0.24, 1.55))),
        Verdict::Fail
    );
    assert_eq!(one(&gates, &inputs(stable, w(0.15, 2.4))), Verdict::Fail);
}
