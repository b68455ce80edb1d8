//! Unit tests: schedules, coordinated-omission correction with a scripted server in paused
//! time, SSE token timing, the percentile table, flag validation and rate sweeps.

use std::{cell::Cell, rc::Rc, sync::mpsc, time::Duration};

use clap::Parser;
use tokio::{
    task::LocalSet,
    time::{sleep, Instant},
};

use super::{
    client::StreamEnd,
    engine::{drive, Exchange, Setup},
    report::Report,
    run::Outcome,
    schedule::{slice_shares, target_of, Arrival, Slot, Slots, Window},
    sse::{classify, Event, SseScanner},
    stats::{ErrorKind, Recorder, Refusals, Sample, Span},
    *,
};

mod overload;
mod refusals;
mod streams;
mod sweep;
mod tokens;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

fn args(flags: &[&str]) -> LoadArgs {
    let argv = std::iter::once("loadtest").chain(flags.iter().copied());
    Cli::try_parse_from(argv).unwrap().load
}

fn window(start: Instant, warmup: Duration, run: Option<Duration>, limit: Option<u64>) -> Window {
    let warm_end = start + warmup;
    Window {
        start,
        warm_end,
        end: run.map(|d| warm_end + d),
        limit,
        give_up: None,
    }
}

/// Takes every slot a free-running worker would get, as `(due, measured)`.
fn all_slots(slots: &mut Slots, now: Instant) -> Vec<(Instant, bool)> {
    let mut out = Vec::new();
    while let Slot::Go { due, measured } = slots.take(now) {
        out.push((due, measured));
        assert!(out.len() < 1_000_000, "schedule does not end");
    }
    out
}

#[test]
fn constant_schedule_is_evenly_spaced_at_the_rate() {
    let t0 = Instant::now();
    let w = window(t0, Duration::ZERO, Some(Duration::from_secs(2)), None);
    let slots = all_slots(
        &mut Slots::open(w, Arrival::Constant, 500.0, Duration::ZERO, 1),
        t0,
    );
    assert_eq!(slots.len(), 1000);
    for pair in slots.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap.abs_diff(Duration::from_millis(2)) < Duration::from_micros(1),
            "{gap:?}"
        );
    }
}

#[test]
fn poisson_schedule_hits_the_mean_rate_with_exponential_gaps() {
    let t0 = Instant::now();
    let n = 20_000;
    let w = window(t0, Duration::ZERO, None, Some(n));
    let slots = all_slots(
        &mut Slots::open(w, Arrival::Poisson, 1000.0, Duration::ZERO, 7),
        t0,
    );
    assert_eq!(slots.len() as u64, n);
    let gaps: Vec<f64> = std::iter::once(slots[0].0 - t0)
        .chain(slots.windows(2).map(|p| p[1].0 - p[0].0))
        .map(|d| d.as_secs_f64())
        .collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
    // Exponential gaps: sd = mean; the mean of 20,000 has a relative error of 1/√20000 ≈ 0.7 %,
    // so 3 % is over four standard errors.
    assert!((mean - 1e-3).abs() < 0.03e-3, "mean gap {mean}");
    assert!((sd / mean - 1.0).abs() < 0.05, "sd/mean {}", sd / mean);
    // Not all slots equally spaced: a constant schedule would have sd 0.
    let other = all_slots(
        &mut Slots::open(w, Arrival::Poisson, 1000.0, Duration::ZERO, 8),
        t0,
    );
    assert_ne!(slots[..10], other[..10], "the seed changes the draw");
}

#[test]
fn warmup_slots_are_sent_but_not_measured_and_the_limit_counts_measured_ones() {
    let t0 = Instant::now();
    let w = window(t0, Duration::from_millis(100), None, Some(50));
    let slots = all_slots(
        &mut Slots::open(w, Arrival::Constant, 100.0, Duration::ZERO, 1),
        t0,
    );
    assert_eq!(
        slots.iter().filter(|s| !s.1).count(),
        10,
        "10 slots in 100 ms warm-up"
    );
    assert_eq!(slots.iter().filter(|s| s.1).count(), 50);
    assert!(slots
        .iter()
        .all(|&(due, m)| m == (due >= t0 + Duration::from_millis(100))));
}

#[test]
fn a_generator_far_behind_drops_slots_and_says_so() {
    let t0 = Instant::now();
    let mut w = window(t0, Duration::ZERO, Some(Duration::from_secs(1)), None);
    w.give_up = Some(t0 + Duration::from_secs(2));
    let mut slots = Slots::open(w, Arrival::Constant, 10.0, Duration::ZERO, 1);
    assert!(matches!(slots.take(t0), Slot::Go { .. }));
    let late = t0 + Duration::from_secs(3);
    assert!(matches!(
        slots.take(late),
        Slot::Dropped { measured: true, .. }
    ));
}

#[test]
fn closed_slots_are_due_now_until_the_end() {
    let t0 = Instant::now();
    let w = window(t0, Duration::ZERO, Some(Duration::from_secs(1)), None);
    let mut slots = Slots::closed(w);
    let now = t0 + Duration::from_millis(300);
    assert_eq!(
        slots.take(now),
        Slot::Go {
            due: now,
            measured: true
        }
    );
    assert_eq!(slots.take(t0 + Duration::from_secs(1)), Slot::Stop);
}

#[test]
fn compare_slices_alternate_and_split_the_time() {
    let t0 = Instant::now();
    let s = Duration::from_millis(250);
    let ms = |n| t0 + Duration::from_millis(n);
    assert_eq!(target_of(t0, s, ms(0)), 0);
    assert_eq!(target_of(t0, s, ms(260)), 1);
    assert_eq!(target_of(t0, s, ms(510)), 0);
    assert_eq!(target_of(t0, Duration::ZERO, ms(260)), 0);
    // A: 100-250 and 500-750; B: 250-500 and 750-1000.
    let shares = slice_shares(t0, s, ms(100), ms(1000));
    assert_eq!(
        shares,
        [Duration::from_millis(400), Duration::from_millis(500)]
    );
    let all = slice_shares(t0, Duration::ZERO, ms(100), ms(1100));
    assert_eq!(all, [Duration::from_secs(1), Duration::ZERO]);
}

/// A scripted server: every request takes `service`, except the `stall_at`-th, which takes
/// `stall` (one hiccup, as a GC pause or a full queue would cause).
struct Scripted {
    service: Duration,
    stall: Duration,
    stall_at: u64,
    count: Rc<Cell<u64>>,
}

impl Exchange for Scripted {
    async fn exchange(&mut self, _target: usize, s: &mut Sample) {
        let n = self.count.get();
        self.count.set(n + 1);
        sleep(if n == self.stall_at {
            self.stall
        } else {
            self.service
        })
        .await;
        s.head = Some(Instant::now());
    }
}

/// Runs `workers` scripted workers over `slots` and returns target A's recorder.
async fn run_scripted(slots: Slots, closed: bool, workers: usize, start: Instant) -> Recorder {
    let count = Rc::new(Cell::new(0));
    let exchanges = (0..workers)
        .map(|_| Scripted {
            service: Duration::from_millis(1),
            stall: Duration::from_millis(200),
            stall_at: 20,
            count: count.clone(),
        })
        .collect();
    let setup = Setup {
        start,
        slice: Duration::ZERO,
        closed,
        spin: false,
        tick: Duration::from_millis(100),
        // These tests look at latencies, not at which requests ended in the window.
        span: Span {
            from: start,
            until: None,
        },
        slo: Slo::default(),
    };
    let (tx, rx) = mpsc::sync_channel(64);
    let last = LocalSet::new()
        .run_until(drive(exchanges, slots, setup, tx))
        .await;
    let mut total = last;
    for interval in rx.try_iter() {
        for (t, i) in total.iter_mut().zip(&interval) {
            t.merge(i);
        }
    }
    let [a, b] = total;
    assert_eq!(b.completed(), 0, "nothing goes to B without --compare");
    a
}

#[tokio::test(start_paused = true)]
async fn open_loop_charges_a_stall_to_every_request_queued_behind_it() {
    let t0 = Instant::now();
    let w = window(t0, Duration::ZERO, Some(Duration::from_secs(1)), None);
    // 200 req/s, one connection, 1 ms service: the 200 ms stall delays ~40 requests that were
    // due during it, and the backlog drains 4 ms per 5 ms slot after it.
    let slots = Slots::open(w, Arrival::Constant, 200.0, Duration::ZERO, 1);
    let open = run_scripted(slots, false, 1, t0).await;
    assert_eq!(open.ok, 200, "every due request was sent and counted");
    let p = |q: f64| Duration::from_micros(open.total.value_at_quantile(q));
    assert!(
        p(0.99) >= Duration::from_millis(150),
        "open p99 {:?}",
        p(0.99)
    );
    assert!(
        p(0.90) >= Duration::from_millis(50),
        "open p90 {:?}",
        p(0.90)
    );
    assert!(
        p(0.50) <= Duration::from_millis(2),
        "open p50 {:?}",
        p(0.50)
    );
    assert!(open.total.max() >= 200_000);
}

#[tokio::test(start_paused = true)]
async fn closed_loop_hides_the_same_stall_in_one_sample() {
    let t0 = Instant::now();
    let w = window(t0, Duration::ZERO, Some(Duration::from_secs(1)), None);
    let closed = run_scripted(Slots::closed(w), true, 1, t0).await;
    // About 800 requests of 1 ms plus the stalled one: p99 never sees it, only max does.
    assert!(closed.ok > 700, "{}", closed.ok);
    assert!(closed.total.value_at_quantile(0.99) <= 2_000);
    assert!(closed.total.max() >= 200_000);
}

#[tokio::test(start_paused = true)]
async fn open_loop_keeps_the_target_rate_across_workers() {
    let t0 = Instant::now();
    let w = window(
        t0,
        Duration::from_millis(500),
        Some(Duration::from_secs(2)),
        None,
    );
    let slots = Slots::open(w, Arrival::Poisson, 1000.0, Duration::ZERO, 3);
    let rec = run_scripted(slots, false, 8, t0).await;
    // 2,000 expected in 2 s; a Poisson count has sd √2000 ≈ 45, so ±200 is over four.
    assert!(rec.ok.abs_diff(2000) < 200, "{}", rec.ok);
    assert_eq!(rec.errors.total(), 0);
}

#[test]
fn sse_events_are_classified_across_any_chunking() {
    let stream = concat!(
        ": comment\r\n",
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "id: 3\ndata: {\"choices\":[{\"text\": \"lo\"}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"say \\\"error\\\": no\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"error\":{\"message\":\"boom\"}}\n\n",
        "event: error\ndata: {}\n\n",
        "data: [DONE]\n\n",
    )
    .as_bytes();
    let want = [
        Event::Other,
        Event::Token(0),
        Event::Token(0),
        Event::Token(0),
        Event::Other,
        Event::Error,
        Event::Error,
        Event::Done,
    ];
    for size in [1, 2, 3, 7, 64, stream.len()] {
        let mut scanner = SseScanner::default();
        let mut got = Vec::new();
        for chunk in stream.chunks(size) {
            scanner.feed(chunk, |e| got.push(e));
        }
        scanner.finish(|e| got.push(e));
        assert_eq!(got, want, "chunks of {size}");
    }
    assert_eq!(classify(b" [DONE]"), Event::Done);
    // Tool calls and reasoning are tokens too: a tool-calling or reasoning model's TTFT is its
    // first call or thought, not its first (maybe never sent) `content`.
    let tokens: [&[u8]; 4] = [
        br#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
        br#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]}}]}"#,
        br#"{"choices":[{"delta":{"reasoning_content":"Let me think"}}]}"#,
        br#"{"choices":[{"delta":{"content":null,"reasoning":"so"}}]}"#,
    ];
    for data in tokens {
        assert_eq!(
            classify(data),
            Event::Token(0),
            "{}",
            String::from_utf8_lossy(data)
        );
    }
    let not: [&[u8]; 2] = [
        br#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":""}}]}}]}"#,
        br#"{"choices":[{"delta":{"role":"assistant","reasoning_content":""}}]}"#,
    ];
    for data in not {
        assert_eq!(
            classify(data),
            Event::Other,
            "{}",
            String::from_utf8_lossy(data)
        );
    }
    let mut unterminated = SseScanner::default();
    let mut got = Vec::new();
    unterminated.feed(b"data: [DONE]", |e| got.push(e));
    unterminated.finish(|e| got.push(e));
    assert_eq!(
        got,
        [Event::Done],
        "a last event without its blank line still counts"
    );
}

#[test]
fn token_events_give_ttft_and_inter_token_gaps() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut s = Sample::default();
    let mut end = StreamEnd::default();
    let mut scanner = SseScanner::default();
    let chunks: [(u64, &[u8]); 5] = [
        (10, b"data: {\"delta\":{\"role\":\"assistant\"}}\n\n"),
        (25, b"data: {\"delta\":{\"content\":\"a\"}}\n\n"),
        (
            30,
            b"data: {\"delta\":{\"content\":\"b\"}}\n\ndata: {\"delta\"",
        ),
        (42, b":{\"content\":\"c\"}}\n\n"),
        (43, b"data: [DONE]\n\n"),
    ];
    for (ms, chunk) in chunks {
        scanner.feed(chunk, |e| end.on_event(e, at(ms), &mut s));
    }
    assert_eq!(s.first_token, Some(at(25)));
    assert_eq!(
        s.gaps,
        [Duration::from_millis(5), Duration::from_millis(12)]
    );
    assert!(end.done && !end.error_event);
    let mut rec = Recorder::default();
    rec.record(t0, at(43), &s, &Slo::default());
    // Three significant digits: within 0.1 %.
    assert!(rec.ttft.max().abs_diff(25_000) <= 25, "{}", rec.ttft.max());
    assert_eq!(rec.itl.len(), 2);
}

/// A recorder of successful requests with these total latencies (the head at half of it, the
/// first token at a quarter when `tokens`).
fn recorder_of(values_us: impl Iterator<Item = u64>, tokens: bool) -> Recorder {
    let t0 = Instant::now();
    let mut rec = Recorder::default();
    for v in values_us {
        let s = Sample {
            head: Some(t0 + Duration::from_micros(v / 2)),
            first_token: tokens.then(|| t0 + Duration::from_micros(v / 4)),
            ..Sample::default()
        };
        rec.record(t0, t0 + Duration::from_micros(v), &s, &Slo::default());
    }
    rec
}

#[test]
fn the_table_json_and_csv_report_percentiles_errors_and_what_b_adds() {
    let plan = Plan::try_from(&args(&[
        "--compare",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "--rate",
        "100",
    ]))
    .unwrap();
    let a = recorder_of(1..=1000, false);
    let mut b = recorder_of((1..=1000).map(|v| v + 40), false);
    b.errors.add(ErrorKind::Status5xx);
    b.errors.add(ErrorKind::Cut);
    let outcome = Outcome {
        recorders: [a, b],
        measured: [Duration::from_secs(10), Duration::from_secs(10)],
    };
    let report = Report::new(&plan, &outcome);
    let a = &report.targets[0].latency_us.total;
    assert_eq!(
        (a.p50, a.p90, a.p99, a.p99_9, a.max),
        (500, 900, 990, 999, 1000)
    );
    let cmp = report.compare.as_ref().unwrap();
    assert_eq!(cmp.added_us.total.p50, 40);
    assert_eq!(cmp.added_us.total.p99, 40);
    assert!(
        (cmp.throughput_ratio - 1.002).abs() < 1e-9,
        "{}",
        cmp.throughput_ratio
    );
    let table = report.table();
    for want in [
        "open loop, 100 req/s constant",
        "A http://127.0.0.1:1",
        "B http://127.0.0.1:2",
        "backlog 0  dropped 0  rate 100.0/s (target 100/s)",
        "500µs",
        "1.00ms",
        "errors: status_5xx 1, cut_after_200 1",
        "+40µs",
        "throughput B/A 1.002",
    ] {
        assert!(table.contains(want), "{want:?} missing from\n{table}");
    }
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["targets"][1]["errors"]["status_5xx"], 1);
    assert_eq!(json["targets"][0]["latency_us"]["total"]["p99.9"], 999);
    assert_eq!(json["compare"]["added_us"]["total"]["p90"], 40);
    let csv = report.csv();
    assert!(
        csv.starts_with("target,url,metric,stat,value_us\n"),
        "{csv}"
    );
    assert!(
        csv.contains("A,http://127.0.0.1:1,total,p99,990\n"),
        "{csv}"
    );
    assert!(csv.contains("B-A,,total,p50,40\n"), "{csv}");
    assert!(!table.contains("warning"), "{table}");
}

#[test]
fn token_latencies_are_reported_only_with_stream_in_table_json_and_csv() {
    let report = |stream: bool| {
        let mut flags = vec![
            "--compare",
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "--rate",
            "100",
        ];
        if stream {
            flags.push("--stream");
        }
        let plan = Plan::try_from(&args(&flags)).unwrap();
        let outcome = Outcome {
            recorders: [
                recorder_of(1..=1000, stream),
                recorder_of((1..=1000).map(|v| v + 40), stream),
            ],
            measured: [Duration::from_secs(10), Duration::from_secs(10)],
        };
        Report::new(&plan, &outcome)
    };
    let plain = report(false);
    let (table, csv) = (plain.table(), plain.csv());
    assert!(!table.contains("ttft"), "{table}");
    assert!(!csv.contains(",ttft,") && !csv.contains(",itl,"), "{csv}");
    assert!(csv.contains("B-A,,ttfb,p50,20\n"), "{csv}");
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json["compare"]["added_us"]["ttft"].is_null(), "{json}");
    assert_eq!(json["compare"]["added_us"]["ttfb"]["p50"], 20);
    // Per target, an empty latency still reads 0 with count 0.
    assert_eq!(json["targets"][0]["latency_us"]["ttft"]["count"], 0);

    let streamed = report(true);
    let (table, csv) = (streamed.table(), streamed.csv());
    assert!(table.contains("  ttft  "), "{table}");
    assert!(csv.contains("A,http://127.0.0.1:1,ttft,p50,125\n"), "{csv}");
    assert!(csv.contains("B-A,,ttft,p50,10\n"), "{csv}");
    let json = serde_json::to_value(&streamed).unwrap();
    assert_eq!(json["compare"]["added_us"]["ttft"]["p50"], 10);
}

#[test]
fn a_compare_warmup_of_an_odd_number_of_slices_is_pointed_out() {
    let plan = |flags: &[&str]| {
        let mut all = vec!["--compare", "http://127.0.0.1:1", "http://127.0.0.1:2"];
        all.extend_from_slice(flags);
        Plan::try_from(&args(&all)).unwrap()
    };
    let note = plan(&["--slice", "1s", "--warmup", "1s"])
        .uneven_warmup()
        .unwrap();
    assert!(note.contains("--warmup 2s"), "{note}");
    let note = plan(&["--slice", "1s", "--warmup", "3s"])
        .uneven_warmup()
        .unwrap();
    assert!(note.contains("--warmup 4s"), "{note}");
    assert_eq!(
        plan(&["--slice", "1s", "--warmup", "2s"]).uneven_warmup(),
        None
    );
    assert_eq!(
        plan(&["--slice", "250ms", "--warmup", "1s"]).uneven_warmup(),
        None
    );
    assert_eq!(plan(&["--slice", "1s"]).uneven_warmup(), None);
    // One target: nothing alternates.
    let one = Plan::try_from(&args(&["http://127.0.0.1:1", "--warmup", "1s"])).unwrap();
    assert_eq!(one.uneven_warmup(), None);
}

#[test]
fn every_bad_flag_is_reported_at_once() {
    let err = Plan::try_from(&args(&[
        "ftp://x",
        "--rate=-1",
        "--connections",
        "0",
        "--streams",
        "2",
        "--header",
        "nocolon",
    ]))
    .unwrap_err()
    .to_string();
    for want in ["ftp://x", "--rate", "--connections", "--streams", "nocolon"] {
        assert!(err.contains(want), "{want} missing from {err}");
    }
}

#[test]
fn generated_bodies_are_openai_requests_of_the_asked_size() {
    let plan = Plan::try_from(&args(&[
        "http://127.0.0.1:1",
        "--api",
        "completions",
        "--stream",
        "--prompt-tokens",
        "40",
        "--max-tokens",
        "7",
        "--model",
        "m",
    ]))
    .unwrap();
    let t = &plan.targets[0];
    assert_eq!(t.origin, "/v1/completions");
    let body: serde_json::Value = serde_json::from_slice(&plan.request.bodies[0]).unwrap();
    assert_eq!(body["model"], "m");
    assert_eq!(body["max_tokens"], 7);
    assert_eq!(body["stream"], true);
    // The usage chunk makes the output token count exact.
    assert_eq!(
        body["stream_options"],
        serde_json::json!({"include_usage": true})
    );
    assert_eq!(body["prompt"].as_str().unwrap().split(' ').count(), 40);
    let plain = Plan::try_from(&args(&["http://127.0.0.1:1"])).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&plain.request.bodies[0]).unwrap();
    assert!(body.get("stream_options").is_none(), "{body}");
    let raw = Plan::try_from(&args(&["http://127.0.0.1:1/index.html", "--api", "raw"])).unwrap();
    assert_eq!(raw.request.method, http::Method::GET);
    assert_eq!(raw.targets[0].origin, "/index.html");
}

#[test]
fn prompt_files_mix_prompts_and_whole_bodies() {
    let dir = std::env::temp_dir().join(format!("rollgate-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prompts.jsonl");
    std::fs::write(
        &file,
        "\"hello there\"\n\n{\"model\":\"x\",\"prompt\":\"raw\"}\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let plan = Plan::try_from(&args(&["http://127.0.0.1:1", "--prompts", path])).unwrap();
    assert_eq!(plan.request.bodies.len(), 2);
    let first: serde_json::Value = serde_json::from_slice(&plan.request.bodies[0]).unwrap();
    assert_eq!(first["messages"][0]["content"], "hello there");
    assert_eq!(
        &plan.request.bodies[1][..],
        br#"{"model":"x","prompt":"raw"}"#
    );
    std::fs::write(&file, "42\nnot json\n").unwrap();
    let err = Plan::try_from(&args(&["http://127.0.0.1:1", "--prompts", path]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1") && err.contains("line 2"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
