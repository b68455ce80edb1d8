//! An open-loop run offered more than the target serves: the report gives the rate the target
//! took requests at, not the schedule's, and says that it fell behind. The scripted runs go through the
//! same schedule, window and report code as `execute`, in paused time; one run drives the real
//! generator against the simulator over loopback.

use super::*;
use crate::load::run::{execute, setup_for, slots_for};

/// Runs `plan` (one thread) in paused time against one connection to a scripted target that
/// takes `service` per request, and reports it as `rollgate loadtest` would.
pub(super) async fn scripted_report(plan: &Plan, service: Duration) -> Report {
    let exchange = Scripted {
        service,
        stall: service,
        stall_at: u64::MAX,
        count: Rc::default(),
    };
    report_of(plan, exchange).await
}

/// Runs `plan` (one thread) in paused time over one `exchange` and reports it.
pub(super) async fn report_of(plan: &Plan, exchange: impl Exchange + 'static) -> Report {
    let start = Instant::now();
    let exchanges = vec![exchange];
    let (tx, rx) = mpsc::sync_channel(64);
    let run = drive(
        exchanges,
        slots_for(0, plan, start),
        setup_for(plan, start, Duration::from_millis(100)),
        tx,
    );
    let mut total = LocalSet::new().run_until(run).await;
    for interval in rx.try_iter() {
        for (t, i) in total.iter_mut().zip(&interval) {
            t.merge(i);
        }
    }
    Report::new(plan, &Outcome::new(plan, start, total))
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_open_loop_reports_the_served_rate_and_the_shortfall() {
    // 1,000 req/s offered for 1 s to a target serving one request per 10 ms: 100 req/s. The
    // generator keeps sending the window's backlog for one timeout after it, then drops the
    // rest.
    let plan = Plan::try_from(&args(&[
        "http://127.0.0.1:1",
        "--rate",
        "1000",
        "-d",
        "1s",
        "--timeout",
        "500ms",
    ]))
    .unwrap();
    let report = scripted_report(&plan, Duration::from_millis(10)).await;
    let t = &report.targets[0];
    assert!((t.rate - 100.0).abs() <= 2.0, "rate {} (served)", t.rate);
    assert_eq!(t.fell_short, Some(true));
    assert_eq!(t.offered, Some(1000));
    assert_eq!(
        t.requests + t.dropped,
        1000,
        "every due request sent or dropped"
    );
    // One every 10 ms until 1.5 s: 100 in the window, 51 from the backlog after it.
    assert_eq!((t.requests, t.backlog), (151, 51));
    assert!((t.measured_s - 1.5).abs() < 0.001, "{}", t.measured_s);
    // The backlog's latency, from each due time, is in the percentiles.
    assert!(t.latency_us.total.count == t.ok && t.latency_us.total.max >= 1_000_000);
    let table = report.table();
    for want in [
        "backlog 51  dropped 849  rate 100.7/s (target 1000/s)",
        "warning: the target fell behind the schedule: of the 1000 requests due in the window, \
         51 went out only after it ended",
        "runs until the last was sent (1.50s), so the rate, 100.7/s, is what the target took",
        "so they are optimistic",
    ] {
        assert!(table.contains(want), "{want:?} missing from\n{table}");
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["targets"][0]["fell_short"], true);
    assert_eq!(json["targets"][0]["backlog"], 51);
    assert_eq!(report.warnings().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_target_that_keeps_up_is_not_flagged() {
    let plan = Plan::try_from(&args(&["http://127.0.0.1:1", "--rate", "50", "-d", "2s"])).unwrap();
    let report = scripted_report(&plan, Duration::from_millis(10)).await;
    let t = &report.targets[0];
    // Every request due in the 2 s was sent on time: the schedule's rate, exactly.
    assert_eq!((t.requests, t.backlog, t.dropped), (100, 0, 0));
    assert_eq!(t.rate, 50.0);
    assert_eq!(t.fell_short, Some(false));
    assert!(!report.table().contains("warning"));
    assert!(report.warnings().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_warm_up_backlog_sent_in_the_window_counts_toward_the_rate() {
    // 200 req/s to a 100 req/s target: by the end of the 500 ms warm-up 50 warm-up requests
    // wait; the target spends the window's first half on them. It still took 100 req/s.
    let plan = Plan::try_from(&args(&[
        "http://127.0.0.1:1",
        "--rate",
        "200",
        "--warmup",
        "500ms",
        "-d",
        "1s",
        "--timeout",
        "100ms",
    ]))
    .unwrap();
    let report = scripted_report(&plan, Duration::from_millis(10)).await;
    let t = &report.targets[0];
    assert!((t.rate - 100.0).abs() <= 2.0, "rate {}", t.rate);
    assert_eq!(
        t.sent - t.requests,
        50,
        "the warm-up requests sent in the window count"
    );
    assert_eq!(t.fell_short, Some(true));
}

#[tokio::test(start_paused = true)]
async fn with_a_request_count_the_window_lasts_until_the_last_one_ended() {
    let plan = Plan::try_from(&args(&[
        "http://127.0.0.1:1",
        "--rate",
        "1000",
        "-n",
        "100",
    ]))
    .unwrap();
    let report = scripted_report(&plan, Duration::from_millis(10)).await;
    let t = &report.targets[0];
    assert_eq!((t.requests, t.sent, t.backlog), (100, 100, 0));
    assert!((t.measured_s - 1.0).abs() < 0.02, "{}", t.measured_s);
    assert!((t.rate - 100.0).abs() <= 2.0, "rate {}", t.rate);
    assert_eq!(t.fell_short, None, "no fixed window to fall behind in");
}

#[test]
fn with_compare_a_stretched_window_keeps_each_targets_share() {
    let plan = Plan::try_from(&args(&[
        "--compare",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "--rate",
        "100",
        "-d",
        "2s",
        "--slice",
        "250ms",
    ]))
    .unwrap();
    let start = Instant::now();
    let mut recorders: [Recorder; 2] = Default::default();
    let outcome = Outcome::new(&plan, start, recorders.clone());
    assert_eq!(outcome.measured, [Duration::from_secs(1); 2], "kept up");
    // B's backlog went out until 3 s: both targets' time grows by half.
    recorders[1].last_backlog = Some(start + Duration::from_secs(3));
    let outcome = Outcome::new(&plan, start, recorders);
    assert_eq!(outcome.measured, [Duration::from_millis(1500); 2]);
}

/// The whole generator (threads, real time, HTTP) against a simulator that answers in 20 ms
/// over one connection, offered 1,000 req/s. Its rate can only come out lower on a busy
/// machine, so the bound is safe; the run takes under a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_reports_what_an_overloaded_simulator_served() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_args = crate::sim::SimArgs {
        listen: listener.local_addr().unwrap(),
        ttft: Duration::from_millis(20),
        ..crate::sim::SimArgs::default()
    };
    let sim = crate::sim::start(sim_args, listener).await.unwrap();
    let url = sim.url();
    let load = args(&[
        &url,
        "--rate",
        "1000",
        "-d",
        "400ms",
        "--timeout",
        "300ms",
        "--max-tokens",
        "1",
    ]);
    let plan = Plan::try_from(&load).unwrap();
    let outcome = tokio::task::spawn_blocking(move || execute(&plan, false))
        .await
        .unwrap()
        .unwrap();
    let report = Report::new(&Plan::try_from(&load).unwrap(), &outcome);
    let t = &report.targets[0];
    // One connection, each request at least 20 ms: at most about 50 req/s, not the 1,000
    // offered (nor the ~85/s of everything sent by the give-up over the 400 ms window).
    assert!(t.rate <= 55.0, "rate {}\n{}", t.rate, report.table());
    assert!(t.requests > 0 && t.errors_total == 0, "{}", report.table());
    assert_eq!(t.fell_short, Some(true));
    assert!(t.dropped > 0);
    drop(sim);
}
