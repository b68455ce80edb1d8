//! The mirror queue between a primary body (the tee) and a shadow exchange (the body): what the
//! shadow reads, and why a mirror is given up.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use rollgate_config::{Ppm, Shadow};

use super::*;

fn cfg(buffer: usize, max_body: u64) -> Shadow {
    Shadow {
        sample: Ppm::default(),
        saturated_sample: Ppm::default(),
        max_inflight: 64,
        max_body,
        buffer,
        timeout: Duration::from_secs(60),
        capture: 1024,
    }
}

fn pair(buffer: usize, max_body: u64) -> (Rc<Link>, ShadowTee, ShadowBody) {
    queue(
        Arc::from("m"),
        Some(Arc::from("/v1/chat/completions")),
        &cfg(buffer, max_body),
    )
}

/// Reads the body to its end: the bytes, or the error that ended it.
async fn read_all(body: &mut ShadowBody) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

#[tokio::test]
async fn chunks_queued_before_the_end_are_read_in_order_then_the_body_ends() {
    let (link, mut tee, mut body) = pair(1 << 20, 1 << 20);
    assert!(tee.send(Bytes::from_static(b"{\"model\":")));
    assert!(tee.send(Bytes::from_static(b"\"m\"}")));
    assert!(body.has_queued());
    tee.end();
    assert_eq!(read_all(&mut body).await.unwrap(), b"{\"model\":\"m\"}");
    assert_eq!(link.why.get(), None);
}

// Paused time: a reader never woken would leave the runtime idle, and the timeout would fire.
#[tokio::test(start_paused = true)]
async fn a_shadow_waiting_for_the_body_is_woken_by_the_next_chunk() {
    let (_link, mut tee, mut body) = pair(1 << 20, 1 << 20);
    let reader = tokio::task::LocalSet::new();
    let read = reader.spawn_local(async move { read_all(&mut body).await });
    reader
        .run_until(async move {
            tokio::task::yield_now().await; // the reader now waits on an empty queue
            assert!(tee.send(Bytes::from_static(b"late")));
            tokio::task::yield_now().await;
            assert!(tee.send(Bytes::from_static(b" chunk")));
            tee.end();
            let read = tokio::time::timeout(Duration::from_secs(5), read).await;
            assert_eq!(read.expect("woken").unwrap().unwrap(), b"late chunk");
        })
        .await;
}

#[tokio::test]
async fn a_primary_body_abandoned_midway_fails_the_mirror_after_what_was_queued() {
    let (link, mut tee, mut body) = pair(1 << 20, 1 << 20);
    assert!(tee.send(Bytes::from_static(b"part")));
    drop(tee);
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "part");
    assert!(matches!(
        body.frame().await,
        Some(Err(BodyError::MirrorAbandoned))
    ));
    assert_eq!(link.why.get(), Some(ShadowDrop::PrimaryAborted));
}

#[tokio::test]
async fn a_shadow_that_reads_too_slowly_is_given_up_for_backpressure() {
    let (link, mut tee, mut body) = pair(16, 1 << 20);
    assert!(tee.send(Bytes::from_static(b"12345")));
    assert!(!tee.pressed());
    assert!(tee.send(Bytes::from_static(b"678901")));
    assert!(
        tee.pressed(),
        "over half the budget: the primary should yield"
    );
    assert!(
        !tee.send(Bytes::from_static(b"234567")),
        "past the byte budget"
    );
    assert_eq!(link.why.get(), Some(ShadowDrop::Backpressure));
    drop(tee);
    // The reason given stays the one that ended the mirror.
    assert_eq!(link.why.get(), Some(ShadowDrop::Backpressure));
    assert!(read_all(&mut body).await.is_err());
}

#[tokio::test]
async fn a_body_over_max_body_is_given_up_as_too_large() {
    let (link, mut tee, _body) = pair(1 << 20, 10);
    assert!(tee.send(Bytes::from_static(b"0123456789")));
    assert!(!tee.send(Bytes::from_static(b"a")));
    assert_eq!(link.why.get(), Some(ShadowDrop::BodyTooLarge));
}

#[tokio::test]
async fn once_the_shadow_stops_reading_the_tee_stops_queueing() {
    let (link, mut tee, body) = pair(1 << 20, 1 << 20);
    assert!(tee.send(Bytes::from_static(b"a")));
    drop(body); // the exchange ended (answered early, or failed)
    assert!(!tee.send(Bytes::from_static(b"b")));
    assert_eq!(link.queued.get(), 0, "what was queued is released");
}

/// Pairs the scorer has not taken yet are bounded: the oldest go first, and each one dropped is
/// counted, so a scrape shows how many answers were never scored.
#[test]
fn pairs_beyond_the_bound_are_dropped_oldest_first_and_counted() {
    let side = |n: u8| Side {
        status: 200,
        body: Bytes::from(vec![n]),
        overflow: false,
        failed: false,
    };
    let pairs = ShadowPairs::new(2);
    for n in 0..5u8 {
        assert_eq!(pairs.wanted(), n < 2, "{n} pairs queued of 2");
        pairs.push(ShadowPair {
            model: Arc::from("m"),
            path: Arc::from("/v1/chat/completions"),
            streamed: false,
            primary: side(n),
            shadow: side(n),
        });
    }
    let kept: Vec<u8> = pairs.take().iter().map(|p| p.primary.body[0]).collect();
    assert_eq!(kept, [3, 4]);
    assert_eq!(pairs.unscored.load(Relaxed), 3);
    assert!(pairs.wanted(), "taken: room again");
    assert!(pairs.take().is_empty());
}

/// Both sides of a pair, from a mirror started with `path` (`None`: the queue was full).
fn complete_pair(pairs: &Arc<ShadowPairs>, path: Option<&str>) -> (usize, usize) {
    let (link, _tee, _body) = queue(Arc::from("m"), path.map(Arc::from), &cfg(1024, 1024));
    let side = |primary| PairSide {
        link: link.clone(),
        primary,
        pairs: pairs.clone(),
    };
    let (p, s) = (side(true), side(false));
    let (mut cp, mut cs) = (p.capture(1024), s.capture(1024));
    cp.push(b"primary answer");
    cs.push(b"shadow answer");
    let captured = (cp.buf.len(), cs.buf.len());
    p.complete(200, cp, false, false);
    s.complete(200, cs, false, false);
    captured
}

/// `shadow.capture: 0` keeps nothing of an answer and marks it overflowed (not comparable); a
/// capture that is off keeps nothing and marks nothing.
#[test]
fn a_zero_capture_overflows_but_an_off_one_does_not() {
    let mut zero = Capture::new(0);
    zero.push(b"answer");
    assert!(zero.buf.is_empty() && zero.overflow);
    let mut off = Capture::off();
    off.push(b"answer");
    assert!(off.buf.is_empty() && !off.overflow);
}

/// A mirror that starts while the scorer's queue is full captures neither answer (its pair
/// would only push out an older one) and is counted as unscored once both sides are in.
#[test]
fn a_pair_started_while_the_queue_is_full_is_not_captured_but_counted() {
    let pairs = Arc::new(ShadowPairs::new(1));
    assert_eq!(complete_pair(&pairs, Some("/v1/x")), (14, 13));
    assert!(!pairs.wanted());
    assert_eq!(complete_pair(&pairs, None), (0, 0));
    assert_eq!(pairs.unscored.load(Relaxed), 1);
    let kept = pairs.take();
    assert_eq!(kept.len(), 1);
    assert_eq!(&*kept[0].path, "/v1/x");
    assert_eq!(&kept[0].shadow.body[..], b"shadow answer");
}

/// A pace whose shadow answers in 50 ms, the bound having just refused a mirror at `t0`.
fn refused_against_a_50ms_shadow() -> (Pace, Instant) {
    let pace = Pace::default();
    pace.exchanged(Duration::from_millis(50));
    let t0 = pace.epoch + Duration::from_secs(1);
    pace.refused(t0);
    (pace, t0)
}

#[test]
fn mirrors_are_not_paced_before_an_exchange_has_been_timed() {
    let pace = Pace::default();
    let t = pace.epoch + Duration::from_secs(1);
    pace.refused(t);
    assert!((0..100).all(|_| pace.admit(64, t)));
}

#[test]
fn mirrors_are_not_paced_until_the_bound_refuses_one() {
    let pace = Pace::default();
    pace.exchanged(Duration::from_millis(50));
    let t = pace.epoch + Duration::from_secs(1);
    assert!((0..100).all(|_| pace.admit(64, t)));
}

#[test]
fn a_full_bound_starts_mirrors_evenly_at_the_rate_the_shadow_sustains() {
    let (pace, t0) = refused_against_a_50ms_shadow();
    // 64 in flight against a 50 ms shadow sustain one mirror every 781 µs; they start at most
    // every 521 µs (2/3 of that), so that the bound, not the pace, sets the rate.
    assert!(pace.admit(64, t0));
    assert!(!pace.admit(64, t0 + Duration::from_micros(100)));
    assert!(!pace.admit(64, t0 + Duration::from_micros(520)));
    assert!(pace.admit(64, t0 + Duration::from_micros(521)));
    // A sampled request every 27 µs for a second (37k req/s): 1,920 start, evenly, never two
    // within much less than a spacing of each other.
    let mut started = Vec::new();
    let t1 = t0 + Duration::from_millis(1);
    for i in 0..37_000u32 {
        let t = t1 + Duration::from_micros(27) * i;
        if pace.admit(64, t) {
            started.push(t);
        }
    }
    assert!(
        (1_900..=1_921).contains(&started.len()),
        "{}",
        started.len()
    );
    assert!(started
        .windows(2)
        .all(|w| w[1] - w[0] >= Duration::from_micros(490)));
}

#[test]
fn pacing_ends_once_nothing_is_refused_for_a_mean_exchange_time() {
    let (pace, t0) = refused_against_a_50ms_shadow();
    assert!(pace.admit(64, t0));
    assert!(!pace.admit(64, t0 + Duration::from_micros(10)));
    // Refused at +10 µs: still paced 49.8 ms later, refused again a microsecond after that.
    let t1 = t0 + Duration::from_micros(49_800);
    assert!(pace.admit(64, t1));
    let last = t1 + Duration::from_micros(1);
    assert!(!pace.admit(64, last));
    // A mean exchange time (50 ms) after the last refusal, every mirror starts again.
    let later = last + Duration::from_millis(50);
    assert!((0..100).all(|_| pace.admit(64, later)));
}

#[test]
fn the_pace_follows_the_shadows_exchange_time() {
    let pace = Pace::default();
    pace.exchanged(Duration::from_millis(50));
    for _ in 0..64 {
        pace.exchanged(Duration::from_millis(5));
    }
    // Ten times faster: ten times the mirrors (spacing ≈ 52 µs for 64 in flight).
    let t0 = pace.epoch + Duration::from_secs(1);
    pace.refused(t0);
    let n = (0..10_000u32)
        .filter(|i| pace.admit(64, t0 + Duration::from_micros(10) * *i))
        .count();
    assert!((1_850..=1_930).contains(&n), "{n}");
}

/// While a worker is saturated it mirrors `saturated_sample` of the requests, not `sample`, and
/// counts the rest of the sample as `saturated` drops; otherwise the sample stands.
#[test]
fn a_saturated_worker_mirrors_only_its_saturated_sample() {
    let stats = ModelStats::new(Arc::from("m"), Default::default());
    let cfg = Shadow {
        sample: Ppm::new(500_000).expect("ppm"),
        saturated_sample: Ppm::new(10_000).expect("ppm"),
        ..cfg(1024, 1024)
    };
    let mirrored = |n: usize| {
        (0..n)
            .filter(|_| sampled(&cfg, &stats, std::time::Instant::now))
            .count()
    };
    let drops = || stats.observe().shadow_drops[ShadowDrop::Saturated as usize];
    crate::load::force(Some(false));
    let calm = mirrored(100_000);
    assert!((48_000..52_000).contains(&calm), "50 % sampled: {calm}");
    assert_eq!(drops(), 0);
    crate::load::force(Some(true));
    let busy = mirrored(100_000);
    assert!(
        (700..1_300).contains(&busy),
        "1 % sampled while saturated: {busy}"
    );
    let shed = drops();
    assert!(
        (47_000..52_000).contains(&shed),
        "the rest of the 50 % counted as saturated drops: {shed}"
    );
    crate::load::force(None);
}
