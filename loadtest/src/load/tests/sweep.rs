//! `--rate 10,20,40`: the list parsed and checked with the other flags, and the sweep driven
//! through the same schedule, window and report code as a real run (scripted target, paused
//! time): it stops after the first rate the target falls short at, unless `--sweep-all`, and its
//! summary, table, JSON and CSV agree with the runs.

use super::{
    overload::{report_of, scripted_report},
    *,
};
use crate::load::{
    report::fmt_us,
    sweep::{Rates, Row, Sweep, SweepPlan},
};

#[test]
fn rate_lists_parse_in_increasing_order_and_every_bad_entry_is_named() {
    for (text, want) in [
        ("10", vec![10.0]),
        ("10,20,40,80", vec![10.0, 20.0, 40.0, 80.0]),
        (" 2.5, 5 ,1e3", vec![2.5, 5.0, 1000.0]),
    ] {
        let rates: Rates = text.parse().unwrap();
        assert_eq!(rates.as_slice(), want, "{text}");
    }
    for (text, problems) in [
        (
            "10,5",
            &["rate 2 (5) is not above 10: the rates of a sweep increase"][..],
        ),
        ("10,10", &["rate 2 (10) is not above 10"]),
        (
            "10,5,7",
            &["rate 2 (5) is not above 10", "rate 3 (7) is not above 10"],
        ),
        // One rate keeps the words a single --rate always had.
        ("0", &["must be above 0"]),
        ("-1", &["must be above 0"]),
        ("inf", &["must be above 0"]),
        ("10,0", &["rate 2 (0) must be above 0"]),
        ("10,,20", &["rate 2 is empty"]),
        ("10,", &["rate 2 is empty"]),
        ("abc", &["\"abc\" is not a number"]),
        (
            "abc,0,5",
            &["\"abc\" is not a number", "rate 2 (0) must be above 0"],
        ),
    ] {
        let err = text.parse::<Rates>().unwrap_err();
        for problem in problems {
            assert!(
                err.contains(problem),
                "{text}: {problem:?} missing from {err}"
            );
        }
        assert_eq!(err.split("; ").count(), problems.len(), "{text}: {err}");
    }
}

#[test]
fn a_single_rate_runs_as_before_and_a_list_makes_a_sweep() {
    let one = Plan::try_from(&args(&["http://127.0.0.1:1", "--rate", "100"])).unwrap();
    assert!(one.sweep.is_none());
    assert_eq!(
        one.mode,
        Mode::Open {
            rate: 100.0,
            arrival: Arrival::Constant
        }
    );
    // --sweep-all with one rate has nothing to go on to.
    let one = Plan::try_from(&args(&["http://127.0.0.1:1", "--rate", "5", "--sweep-all"]));
    assert!(one.unwrap().sweep.is_none());

    let list = Plan::try_from(&args(&[
        "http://127.0.0.1:1",
        "--rate",
        "10,20,40",
        "--arrival",
        "poisson",
    ]))
    .unwrap();
    let sweep = list.sweep.as_ref().unwrap();
    assert_eq!(sweep.rates.as_slice(), [10.0, 20.0, 40.0]);
    assert!(!sweep.all);
    let at = list.at_rate(40.0);
    assert_eq!(
        at.mode,
        Mode::Open {
            rate: 40.0,
            arrival: Arrival::Poisson
        }
    );
    assert!(at.sweep.is_none(), "each rate is a single run");
}

#[test]
fn a_bad_rate_list_is_reported_with_every_other_flag_problem() {
    let err = |flags: &[&str]| Plan::try_from(&args(flags)).unwrap_err().to_string();
    let e = err(&["http://127.0.0.1:1", "--rate", "10,5", "--connections", "0"]);
    assert!(
        e.contains("--rate 10,5: rate 2 (5) is not above 10") && e.contains("--connections"),
        "{e}"
    );
    let e = err(&[
        "--compare",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "--rate",
        "10,20",
        "-n",
        "100",
    ]);
    for want in [
        "--compare takes one --rate, not a list",
        "--requests does not go",
    ] {
        assert!(e.contains(want), "{want:?} missing from {e}");
    }
    // A negative rate is the rate's problem, not an unknown flag.
    for (flags, want) in [
        (
            &["http://127.0.0.1:1", "--rate", "-5", "-c", "0"][..],
            "--rate -5: must be above 0",
        ),
        (
            &["http://127.0.0.1:1", "--rate", "10,-5", "-c", "0"],
            "--rate 10,-5: rate 2 (-5) must be above 0",
        ),
    ] {
        let e = err(flags);
        assert!(e.contains(want) && e.contains("--connections"), "{e}");
    }
    let e = err(&["http://127.0.0.1:1", "--sweep-all"]);
    assert!(e.contains("--sweep-all needs a --rate list"), "{e}");
    // One rate still goes with --compare and --requests, as it always did.
    for flags in [
        &[
            "--compare",
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "--rate",
            "10",
        ][..],
        &["http://127.0.0.1:1", "--rate", "10", "-n", "5"],
    ] {
        Plan::try_from(&args(flags)).unwrap();
    }
}

/// Sweeps `rates` for 1 s each (500 ms give-up) over one connection to a scripted target that
/// serves one request per 10 ms (100 req/s), as `rollgate loadtest` would, in paused time.
async fn scripted_sweep(rates: &str, extra: &[&str]) -> Sweep {
    let mut flags = vec![
        "http://127.0.0.1:1",
        "--rate",
        rates,
        "-d",
        "1s",
        "--timeout",
        "500ms",
    ];
    flags.extend_from_slice(extra);
    let plan = Plan::try_from(&args(&flags)).unwrap();
    let mut sweep = Sweep::new(plan.sweep.clone().unwrap());
    while let Some(rate) = sweep.next_rate() {
        sweep.record(scripted_report(&plan.at_rate(rate), Duration::from_millis(10)).await);
    }
    sweep
}

#[tokio::test(start_paused = true)]
async fn a_sweep_stops_after_the_first_rate_the_target_falls_short_at() {
    let sweep = scripted_sweep("20,50,200,400", &[]).await;
    let summary = sweep.summary();
    let asked: Vec<f64> = summary.rows.iter().map(|r| r.rate).collect();
    assert_eq!(asked, [20.0, 50.0, 200.0], "400 is not run");
    assert_eq!(summary.saturated_at, Some(200.0));
    assert_eq!(summary.not_run, [400.0]);
    let [low, mid, high] = &summary.rows[..] else {
        panic!("{summary:?}")
    };
    // Kept up: exactly the schedule; saturated: what the target served.
    assert_eq!(
        (low.achieved_rate, low.ok, low.fell_short),
        (20.0, 20, false)
    );
    assert_eq!(
        (mid.achieved_rate, mid.ok, mid.fell_short),
        (50.0, 50, false)
    );
    assert!(high.fell_short, "{high:?}");
    assert!((high.achieved_rate - 100.0).abs() <= 2.0, "{high:?}");
    assert!(
        high.total_p99_us > Some(500_000),
        "the backlog's wait: {high:?}"
    );
    assert!(low.total_p99_us < Some(20_000), "{low:?}");

    let table = sweep.table();
    for want in [
        "sweep summary\n",
        "total p50",
        "kept up",
        "   20/s     20.0/s",
        "  200/s    100.",
        "the target fell short at 200/s: it is saturated there, so the sweep stopped (not run: \
         400/s; --sweep-all runs every rate)",
    ] {
        assert!(table.contains(want), "{want:?} missing from\n{table}");
    }
    assert!(
        !table.contains("ttft"),
        "no --stream, no TTFT columns:\n{table}"
    );
    assert!(!table.contains("goodput"), "no --slo:\n{table}");
    let rows: Vec<&str> = table.lines().filter(|l| l.ends_with(" yes")).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(table.contains("  no: behind the schedule\n"), "{table}");

    // JSON: each run as a single run prints it, and a summary that agrees with them.
    let json: serde_json::Value = serde_json::from_str(&sweep.json().unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for (run, row) in runs.iter().zip(json["summary"]["rows"].as_array().unwrap()) {
        let t = &run["targets"][0];
        assert_eq!(run["run"]["target_rate"], row["rate"]);
        assert_eq!(t["rate"], row["achieved_rate"]);
        assert_eq!(t["ok"], row["ok"]);
        assert_eq!(t["latency_us"]["total"]["p99"], row["total_p99_us"]);
        assert_eq!(t["fell_short"], row["fell_short"]);
        assert!(row["ttft_p50_us"].is_null(), "{row}");
    }
    assert_eq!(json["summary"]["saturated_at"], 200.0);
    assert_eq!(json["summary"]["not_run"], serde_json::json!([400.0]));
    assert_eq!(json["summary"]["rates"].as_array().unwrap().len(), 4);

    let csv = sweep.csv();
    assert!(
        csv.starts_with("rate,target,url,metric,stat,value_us\n"),
        "{csv}"
    );
    for (rate, run) in ["20", "50", "200"].iter().zip(runs) {
        let p99 = &run["targets"][0]["latency_us"]["total"]["p99"];
        let row = format!("\n{rate},A,http://127.0.0.1:1,total,p99,{p99}\n");
        assert!(csv.contains(&row), "{row:?} missing from\n{csv}");
    }
    assert!(!csv.contains("\n400,"), "{csv}");
}

/// A target that sheds load as a server with a full queue does: it takes one request per
/// `gap` and answers the others at once with a 503, so nothing waits and no backlog builds.
struct Shedding {
    gap: Duration,
    free_at: Option<Instant>,
}

impl Exchange for Shedding {
    async fn exchange(&mut self, _target: usize, s: &mut Sample) {
        let now = Instant::now();
        s.head = Some(now);
        if self.free_at.is_some_and(|free| now < free) {
            s.error = Some(ErrorKind::Status5xx);
            return;
        }
        self.free_at = Some(now + self.gap);
    }
}

/// Sweeps `rates` for 1 s each against a [`Shedding`] target that takes 100 req/s.
async fn shedding_sweep(rates: &str, extra: &[&str]) -> Sweep {
    let mut flags = vec!["http://127.0.0.1:1", "--rate", rates, "-d", "1s"];
    flags.extend_from_slice(extra);
    let plan = Plan::try_from(&args(&flags)).unwrap();
    let mut sweep = Sweep::new(plan.sweep.clone().unwrap());
    while let Some(rate) = sweep.next_rate() {
        let target = Shedding {
            gap: Duration::from_millis(10),
            free_at: None,
        };
        sweep.record(report_of(&plan.at_rate(rate), target).await);
    }
    sweep
}

#[tokio::test(start_paused = true)]
async fn a_sweep_stops_at_the_first_rate_the_target_refuses_a_material_share_of() {
    let sweep = shedding_sweep("50,200,400", &[]).await;
    let summary = sweep.summary();
    let [low, high] = &summary.rows[..] else {
        panic!("400/s is not run: {summary:?}")
    };
    // No backlog: the refusals are fast, so by the schedule alone it kept up.
    assert!(!low.fell_short && !high.fell_short, "{summary:?}");
    assert_eq!((low.errors, low.error_share, low.kept_up), (0, 0.0, true));
    // 200/s to a target taking one per 10 ms: every other request refused.
    assert_eq!((high.ok, high.errors), (100, 100), "{high:?}");
    assert_eq!((high.error_share, high.kept_up), (0.5, false));
    assert_eq!(summary.saturated_at, Some(200.0));
    assert_eq!(summary.not_run, [400.0]);
    assert_eq!(summary.max_error_share, 0.01);

    let table = sweep.table();
    for want in [
        "  yes\n",
        "  no: errors 50%\n",
        "the target fell short at 200/s (errors 50% of requests, over 1%): it is saturated \
         there, so the sweep stopped (not run: 400/s; --sweep-all runs every rate)",
    ] {
        assert!(table.contains(want), "{want:?} missing from\n{table}");
    }
    assert!(!table.contains("kept up at every rate"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&sweep.json().unwrap()).unwrap();
    let summary = &json["summary"];
    assert_eq!(summary["saturated_at"], 200.0);
    assert_eq!(summary["max_error_share"], 0.01);
    let row = &summary["rows"][1];
    assert_eq!(
        (&row["fell_short"], &row["error_share"], &row["kept_up"]),
        (&false.into(), &0.5.into(), &false.into()),
        "{row}"
    );

    // --sweep-all goes on; the rows say why each rate did not keep up.
    let all = shedding_sweep("50,200,400", &["--sweep-all"]).await;
    let kept: Vec<bool> = all.summary().rows.iter().map(|r| r.kept_up).collect();
    assert_eq!(kept, [true, false, false]);
    assert!(
        all.table().contains("  no: errors 75%\n"),
        "{}",
        all.table()
    );
}

#[test]
fn a_stray_error_still_counts_as_keeping_up() {
    let row = |ok: u64, errors: u64| {
        let plan = Plan::try_from(&args(&["http://127.0.0.1:1", "--rate", "10,20"])).unwrap();
        let t0 = Instant::now();
        let mut rec = Recorder::default();
        let slo = Slo::default();
        for i in 0..ok + errors {
            let s = Sample {
                head: Some(t0),
                error: (i < errors).then_some(ErrorKind::Status5xx),
                ..Sample::default()
            };
            rec.record(t0, t0 + Duration::from_millis(1), &s, &slo);
        }
        let outcome = Outcome {
            recorders: [rec, Recorder::default()],
            measured: [Duration::from_secs(10), Duration::ZERO],
        };
        let mut sweep = Sweep::new(plan.sweep.clone().unwrap());
        sweep.record(Report::new(&plan.at_rate(10.0), &outcome));
        (sweep.summary().rows.remove(0), sweep.next_rate())
    };
    // 1 in 100 is at the bound: kept up, the sweep goes on.
    let (at_bound, next) = row(99, 1);
    assert!(at_bound.kept_up && (at_bound.error_share - 0.01).abs() < 1e-12);
    assert_eq!(next, Some(20.0));
    // 2 in 100 is over it.
    let (over, next) = row(98, 2);
    assert!(!over.kept_up, "{over:?}");
    assert_eq!(next, None);
}

#[tokio::test(start_paused = true)]
async fn with_sweep_all_every_rate_runs_past_saturation() {
    let sweep = scripted_sweep("50,200,400", &["--sweep-all"]).await;
    let summary = sweep.summary();
    let short: Vec<bool> = summary.rows.iter().map(|r| r.fell_short).collect();
    assert_eq!(short, [false, true, true]);
    assert_eq!(summary.saturated_at, Some(200.0));
    assert!(summary.not_run.is_empty());
    assert!(
        sweep.table().contains(
            "fell short at 200/s: it is saturated there (--sweep-all ran the rates above it"
        ),
        "{}",
        sweep.table()
    );
}

#[tokio::test(start_paused = true)]
async fn a_target_that_keeps_up_at_every_rate_is_said_to() {
    let sweep = scripted_sweep("10,20", &[]).await;
    assert_eq!(sweep.runs().len(), 2);
    assert_eq!(sweep.summary().saturated_at, None);
    assert!(sweep.table().contains("the target kept up at every rate\n"));

    // A later rate whose setup failed: the summary says which rates did not run.
    let plan = Plan::try_from(&args(&["http://127.0.0.1:1", "--rate", "10,20,40"])).unwrap();
    let mut sweep = Sweep::new(plan.sweep.clone().unwrap());
    let first = scripted_report(&plan.at_rate(10.0), Duration::from_millis(10)).await;
    sweep.record(first);
    assert_eq!(sweep.summary().not_run, [20.0, 40.0]);
    assert!(
        sweep
            .table()
            .contains("the target kept up at every rate that ran (not run: 20/s, 40/s)"),
        "{}",
        sweep.table()
    );
}

#[test]
fn a_summary_row_has_the_runs_stream_latencies_tokens_and_goodput() {
    let plan = Plan::try_from(&args(&[
        "http://127.0.0.1:1",
        "--rate",
        "10,20",
        "--stream",
        "--slo",
        "ttft=20ms",
    ]))
    .unwrap();
    // 100 streams of 5 token events: total i ms, first token at i/4 ms.
    let t0 = Instant::now();
    let mut rec = Recorder::default();
    for i in 1..=100 {
        let s = Sample {
            head: Some(t0 + Duration::from_micros(i * 100)),
            first_token: Some(t0 + Duration::from_micros(i * 250)),
            streamed: true,
            token_events: 5,
            choices: 1,
            ..Sample::default()
        };
        let slo = plan.slo.unwrap();
        rec.record(t0, t0 + Duration::from_millis(i), &s, &slo);
    }
    let outcome = Outcome {
        recorders: [rec, Recorder::default()],
        measured: [Duration::from_secs(10), Duration::ZERO],
    };
    let report = Report::new(&plan.at_rate(10.0), &outcome);
    let mut sweep = Sweep::new(SweepPlan {
        rates: "10,20".parse().unwrap(),
        all: false,
    });
    sweep.record(report);
    let summary = sweep.summary();
    let t = &sweep.runs()[0].targets[0];
    let lat = &t.latency_us;
    assert_eq!(
        summary.rows,
        [Row {
            rate: 10.0,
            achieved_rate: 10.0,
            ok: 100,
            errors: 0,
            total_p50_us: Some(lat.total.p50),
            total_p99_us: Some(lat.total.p99),
            ttft_p50_us: Some(lat.ttft.p50),
            ttft_p99_us: Some(lat.ttft.p99),
            tpot_p50_us: Some(lat.tpot.p50),
            tpot_p99_us: Some(lat.tpot.p99),
            output_tokens_per_s: Some(50.0),
            goodput_per_s: t.goodput.as_ref().map(|g| g.per_s),
            fell_short: false,
            error_share: 0.0,
            kept_up: true,
        }]
    );
    // ttft ≤ 20 ms: the first 80 streams.
    assert_eq!(summary.rows[0].goodput_per_s, Some(8.0));
    let table = sweep.table();
    let ttft = fmt_us(lat.ttft.p50);
    assert!(
        ttft.starts_with("12.5"),
        "the 50th of 100 first tokens: {ttft}"
    );
    for want in [
        "ttft p50",
        "tpot p99",
        "out tok/s",
        "goodput/s",
        &ttft,
        "50.0",
        "8.0",
    ] {
        assert!(table.contains(want), "{want:?} missing from\n{table}");
    }
}
