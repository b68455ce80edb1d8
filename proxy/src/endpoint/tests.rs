use std::time::Duration;

use super::*;

fn registry_with(n: usize) -> (EndpointRegistry, Vec<Arc<EndpointState>>) {
    let reg = EndpointRegistry::new();
    let eps = (0..n)
        .map(|i| {
            reg.get(&Endpoint {
                url: format!("http://10.0.0.{i}:8000"),
                authority: format!("10.0.0.{i}:8000"),
            })
        })
        .collect();
    (reg, eps)
}

fn policy() -> Ejection {
    Ejection {
        consecutive_failures: 3,
        base: Duration::from_secs(5),
        max: Duration::from_secs(60),
    }
}

#[test]
fn same_url_same_state_across_builds() {
    let (reg, eps) = registry_with(2);
    let again = reg.get(&Endpoint {
        url: "http://10.0.0.1:8000".into(),
        authority: "10.0.0.1:8000".into(),
    });
    assert!(Arc::ptr_eq(&eps[1], &again));
}

#[test]
fn p2c_prefers_the_less_loaded() {
    let (_reg, eps) = registry_with(2);
    let set = EndpointSet::new(eps.clone(), None);
    let _busy: Vec<_> = (0..10).map(|_| eps[0].acquire()).collect();
    let now = Instant::now();
    for _ in 0..100 {
        let e = set.pick(None, now).expect("endpoint");
        assert!(Arc::ptr_eq(e, &eps[1]));
    }
}

#[tokio::test(start_paused = true)]
async fn ejection_after_consecutive_failures_and_readmission() {
    let (_reg, eps) = registry_with(2);
    let set = EndpointSet::new(eps.clone(), None);
    let p = policy();
    let now = Instant::now();
    assert!(!eps[0].record(Outcome::Failure, &p, now));
    assert!(!eps[0].record(Outcome::Failure, &p, now));
    assert!(
        eps[0].record(Outcome::Failure, &p, now),
        "third failure ejects"
    );
    for _ in 0..50 {
        assert!(Arc::ptr_eq(
            set.pick(None, Instant::now()).expect("ep"),
            &eps[1]
        ));
    }
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(
        !eps[0].is_ejected(Instant::now()),
        "re-admitted after the backoff"
    );
    // A second ejection in a row doubles the backoff.
    for _ in 0..3 {
        eps[0].record(Outcome::Failure, &p, Instant::now());
    }
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(eps[0].is_ejected(Instant::now()));
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(!eps[0].is_ejected(Instant::now()));
}

#[test]
fn all_ejected_still_picks() {
    let (_reg, eps) = registry_with(2);
    let set = EndpointSet::new(eps.clone(), None);
    let now = Instant::now();
    for e in &eps {
        for _ in 0..3 {
            e.record(Outcome::Failure, &policy(), now);
        }
    }
    assert!(set.pick(None, now).is_some());
}

#[test]
fn affinity_is_sticky_and_bounded_by_load() {
    let (_reg, eps) = registry_with(4);
    let set = EndpointSet::new(eps.clone(), Some(1.25));
    let now = Instant::now();
    let first = set.pick(Some(b"conversation-7"), now).expect("ep").clone();
    for _ in 0..20 {
        assert!(Arc::ptr_eq(
            set.pick(Some(b"conversation-7"), now).expect("ep"),
            &first
        ));
    }
    // Overload the preferred endpoint: the key spills to another one.
    let _busy: Vec<_> = (0..8).map(|_| first.acquire()).collect();
    let spilled = set.pick(Some(b"conversation-7"), now).expect("ep");
    assert!(!Arc::ptr_eq(spilled, &first));
    // Keys spread over endpoints.
    let distinct: std::collections::HashSet<u64> = (0..200)
        .map(|i| {
            set.pick(Some(format!("k{i}").as_bytes()), now)
                .expect("ep")
                .id
        })
        .collect();
    assert!(distinct.len() >= 3);
}

#[test]
fn a_retry_passes_over_the_endpoints_already_tried_while_another_is_left() {
    let (_reg, eps) = registry_with(3);
    let now = Instant::now();
    for affinity in [None, Some(1.25)] {
        let set = EndpointSet::new(eps.clone(), affinity);
        for i in 0..200u32 {
            let key = i.to_le_bytes();
            let key = affinity.map(|_| &key[..]);
            let first = set.pick_untried(key, now, &[]).expect("pick").id;
            let second = set.pick_untried(key, now, &[first]).expect("pick").id;
            assert_ne!(
                first, second,
                "{affinity:?}: the retry went back to {first}"
            );
            let third = set
                .pick_untried(key, now, &[first, second])
                .expect("pick")
                .id;
            assert!(third != first && third != second, "{affinity:?}");
            // Every one tried: any may be picked again.
            assert!(set
                .pick_untried(key, now, &[first, second, third])
                .is_some());
        }
    }
    // An ejected endpoint is still passed over for an untried healthy one, and an untried
    // ejected one is preferred to a tried healthy one only when nothing else is left.
    let set = EndpointSet::new(eps.clone(), None);
    for _ in 0..3 {
        eps[2].record(Outcome::Failure, &policy(), now);
    }
    assert!(eps[2].is_ejected(now));
    for _ in 0..50 {
        let e = set.pick_untried(None, now, &[eps[0].id]).expect("pick");
        assert_eq!(e.id, eps[1].id);
        let e = set
            .pick_untried(None, now, &[eps[0].id, eps[1].id])
            .expect("pick");
        assert_eq!(e.id, eps[2].id);
    }
}
