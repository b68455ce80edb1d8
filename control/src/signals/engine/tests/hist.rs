//! `Hist` math and reading histograms off a page.

use super::*;

const INF: f64 = f64::INFINITY;

fn hist(buckets: &[(f64, f64)]) -> Hist {
    let count = buckets.last().map_or(0.0, |b| b.1);
    Hist {
        buckets: buckets.to_vec(),
        sum: 0.0,
        count,
    }
}

#[test]
fn quantile_like_promql() {
    // Prometheus' own `histogram_quantile` test histogram ("positive").
    let h = hist(&[(0.1, 50.0), (0.2, 70.0), (1.0, 110.0), (INF, 120.0)]);
    // (q, expected)
    let cases: &[(f64, Option<f64>)] = &[
        (0.0, Some(0.0)),
        (0.25, Some(0.06)),
        (0.5, Some(0.15)),
        (0.75, Some(0.2 + 0.8 * (20.0 / 40.0))),
        // In the +Inf bucket: the largest finite bound.
        (0.99, Some(1.0)),
        (1.0, Some(1.0)),
        (-0.1, None),
        (1.1, None),
        (f64::NAN, None),
    ];
    for &(q, want) in cases {
        let got = h.quantile(q);
        match (got, want) {
            (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "q={q}: {g} != {w}"),
            _ => assert_eq!(got, want, "q={q}"),
        }
    }
}

/// (buckets, q, expected)
type QuantileCase = (&'static [(f64, f64)], f64, Option<f64>);

#[test]
fn quantile_edge_cases() {
    // (buckets, q, expected)
    let cases: &[QuantileCase] = &[
        (&[(0.1, 0.0), (INF, 0.0)], 0.5, None),
        (&[(0.1, 1.0), (1.0, 2.0)], 0.5, None),
        (&[(INF, 3.0)], 0.5, None),
        (&[], 0.5, None),
        // Non-monotonic buckets (a racy scrape) are fixed up, not trusted.
        (&[(1.0, 10.0), (2.0, 8.0), (INF, 10.0)], 0.5, Some(0.5)),
        // A first bound at or below zero is returned as is.
        (&[(-1.0, 5.0), (1.0, 10.0), (INF, 10.0)], 0.2, Some(-1.0)),
        // Empty first bucket at q = 0.
        (&[(1.0, 0.0), (2.0, 4.0), (INF, 4.0)], 0.0, Some(0.0)),
    ];
    for &(buckets, q, want) in cases {
        assert_eq!(hist(buckets).quantile(q), want, "{buckets:?} q={q}");
    }
}

#[test]
fn since_is_a_window_delta() {
    let earlier = Hist {
        buckets: vec![(0.5, 1.0), (1.0, 2.0), (INF, 3.0)],
        sum: 2.0,
        count: 3.0,
    };
    let later = Hist {
        buckets: vec![(0.5, 4.0), (1.0, 6.0), (INF, 8.0)],
        sum: 7.5,
        count: 8.0,
    };
    let window = later.since(&earlier);
    assert_eq!(window.buckets, vec![(0.5, 3.0), (1.0, 4.0), (INF, 5.0)]);
    assert_eq!((window.sum, window.count), (5.5, 5.0));
    assert_eq!(window.mean(), Some(1.1));
    // Reset: the earlier page had more than the later one.
    assert_eq!(earlier.since(&later), earlier);
    // Changed bounds (a restart with other buckets): the later value is the window.
    let rebucketed = hist(&[(0.25, 9.0), (INF, 9.0)]);
    assert_eq!(rebucketed.since(&earlier), rebucketed);
    assert_eq!(later.since(&later).mean(), None);
}

#[test]
fn merge_keeps_shared_bounds() {
    let a = Hist {
        buckets: vec![(0.1, 1.0), (0.5, 2.0), (1.0, 3.0), (INF, 4.0)],
        sum: 1.0,
        count: 4.0,
    };
    let b = Hist {
        buckets: vec![(0.5, 10.0), (2.0, 20.0), (INF, 30.0)],
        sum: 2.0,
        count: 30.0,
    };
    let m = a.merge(&b);
    assert_eq!(m.buckets, vec![(0.5, 12.0), (INF, 34.0)]);
    assert_eq!((m.sum, m.count), (3.0, 34.0));
    assert_eq!(
        a.merge(&a).buckets,
        vec![(0.1, 2.0), (0.5, 4.0), (1.0, 6.0), (INF, 8.0)]
    );
}

#[test]
fn histograms_off_a_page() {
    // Two data-parallel engines, buckets out of order, the usual _sum/_count.
    let page = "\
# TYPE vllm:request_queue_time_seconds histogram
vllm:request_queue_time_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 4
vllm:request_queue_time_seconds_bucket{engine=\"0\",le=\"0.3\",model_name=\"m\"} 2
vllm:request_queue_time_seconds_bucket{engine=\"0\",le=\"1.0\",model_name=\"m\"} 3
vllm:request_queue_time_seconds_sum{engine=\"0\",model_name=\"m\"} 2.5
vllm:request_queue_time_seconds_count{engine=\"0\",model_name=\"m\"} 4
vllm:request_queue_time_seconds_bucket{engine=\"1\",le=\"0.3\",model_name=\"m\"} 1
vllm:request_queue_time_seconds_bucket{engine=\"1\",le=\"1.0\",model_name=\"m\"} 1
vllm:request_queue_time_seconds_bucket{engine=\"1\",le=\"+Inf\",model_name=\"m\"} 2
vllm:request_queue_time_seconds_sum{engine=\"1\",model_name=\"m\"} 3.5
vllm:request_queue_time_seconds_count{engine=\"1\",model_name=\"m\"} 2
vllm:time_to_first_token_seconds_bucket{le=\"0.1\"} 5
vllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 6
";
    let r = read(Engine::Vllm, page);
    let q = r.queue_time.unwrap();
    assert_eq!(q.buckets, vec![(0.3, 3.0), (1.0, 4.0), (INF, 6.0)]);
    assert_eq!((q.sum, q.count), (6.0, 6.0));
    // No _count or _sum: the count comes from +Inf.
    let t = r.ttft.unwrap();
    assert_eq!((t.sum, t.count), (0.0, 6.0));
    // The other model's histogram is not this one's.
    assert_eq!(read_model(Engine::Vllm, "other", page).queue_time, None);
}

#[test]
fn tgi_queue_histogram() {
    let page = "\
tgi_request_queue_duration_bucket{le=\"0.00015\"} 1
tgi_request_queue_duration_bucket{le=\"0.000225\"} 3
tgi_request_queue_duration_bucket{le=\"+Inf\"} 3
tgi_request_queue_duration_sum 0.0005
tgi_request_queue_duration_count 3
";
    let q = read(Engine::Tgi, page).queue_time.unwrap();
    assert_eq!(q.count, 3.0);
    assert_eq!(q.quantile(1.0), Some(0.000225));
}
