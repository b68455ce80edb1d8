//! `rollgate loadtest`, the real binary, against simulators and a gateway: open and closed loop,
//! streaming and not, HTTP/1.1 and h2c, errors counted (500s, cut streams, error events) and not
//! fatal, `--compare` of a simulator directly and through the gateway, rate sweeps (stopping at
//! the first rate the simulator falls short at or sheds load at), setup failures exit 1. Each run loads loopback
//! for at most 3 s.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rollgate_loadtest::sim::{Faults, Ratio};
use serde_json::Value;

use crate::support::*;

/// Bounds a hung generator; every run here lasts a few seconds.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Runs `rollgate loadtest ARGS` to its end.
async fn loadtest(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollgate"))
            .arg("loadtest")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rollgate loadtest");
        let deadline = std::time::Instant::now() + RUN_LIMIT;
        while child.try_wait().expect("try_wait").is_none() {
            if std::time::Instant::now() > deadline {
                // Killing a process that just exited is harmless.
                let _ = child.kill();
                panic!("rollgate loadtest {args:?} did not finish within {RUN_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("loadtest output")
    })
    .await
    .expect("loadtest task")
}

/// Runs it with `--json --quiet`, expects exit 0 and returns the report.
async fn report(args: &[&str]) -> Value {
    let mut all = vec!["--json", "--quiet", "--timeout", "5s"];
    all.extend_from_slice(args);
    let out = loadtest(&all).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest {all:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

#[tokio::test]
async fn open_loop_streams_are_counted_with_ttft_and_token_gaps() {
    let _heavy = heavy().await;
    let sim = start_sim("a", "m", |a| {
        a.ttft = Duration::from_millis(20);
        a.tpot = Duration::from_millis(2);
    })
    .await;
    let r = report(&[
        &sim.url(),
        "--model",
        "m",
        "--rate",
        "50",
        "--duration",
        "1s",
        "--connections",
        "4",
        "--stream",
        "--max-tokens",
        "5",
    ])
    .await;
    let t = &r["targets"][0];
    assert_eq!(r["run"]["mode"], "open");
    assert_eq!(n(&t["errors_total"]), 0, "{t}");
    assert_eq!(n(&t["requests"]), 50, "{t}");
    assert_eq!(
        n(&t["ok"]),
        sim.requests_total(),
        "every request the sim got is counted"
    );
    let lat = &t["latency_us"];
    assert!(
        n(&lat["ttft"]["p50"]) >= 20_000,
        "TTFT below the sim's 20 ms: {lat}"
    );
    assert!(n(&lat["ttft"]["max"]) <= n(&lat["total"]["max"]), "{lat}");
    assert_eq!(
        n(&lat["itl"]["count"]),
        4 * 50,
        "4 gaps between 5 tokens: {lat}"
    );
    // The sim paces tokens by due time, so one late event makes the next gap short; the mean
    // keeps the pace.
    let itl_mean = lat["itl"]["mean"].as_f64().expect("mean");
    assert!(itl_mean >= 1_800.0, "gaps below the sim's 2 ms: {lat}");
    let rate = t["rate"].as_f64().expect("rate");
    assert!((rate - 50.0).abs() < 1.0, "rate {rate}");
}

/// Checks one target's token figures against 40 requests of 12 output tokens in about 1 s, and
/// returns its TPOT p50 (µs) and total tokens/s (`None` when the prompt tokens are unknown).
fn token_figures(t: &Value) -> (u64, Option<f64>) {
    let tokens = &t["tokens"];
    let f = |v: &Value| {
        v.as_f64()
            .unwrap_or_else(|| panic!("{v} is not a number: {t}"))
    };
    let secs = f(&t["measured_s"]);
    assert_eq!((n(&t["ok"]), n(&t["errors_total"])), (40, 0), "{t}");
    assert_eq!(
        (n(&tokens["output"]), f(&tokens["mean_output"])),
        (480, 12.0),
        "{t}"
    );
    let out_per_s = f(&tokens["output_per_s"]);
    assert!((out_per_s - 480.0 / secs).abs() < 1e-6, "{t}");
    // The rate times the tokens per request (the window is 1 s when the target keeps up).
    assert!((out_per_s - 40.0 * 12.0).abs() < 10.0, "{t}");
    let total_per_s = tokens["total_per_s"].as_f64();
    if let Some(total) = total_per_s {
        let prompt = n(&tokens["prompt"]) as f64;
        assert!(prompt > 0.0, "{t}");
        assert!((total - (prompt + 480.0) / secs).abs() < 1e-6, "{t}");
    }
    (n(&t["latency_us"]["tpot"]["p50"]), total_per_s)
}

/// TPOT p50 in µs around the simulator's 10 ms: a stream whose first token went out late has
/// shorter gaps after it (the simulator paces tokens by their due times), a loaded machine
/// lengthens them.
const TPOT_P50_US: std::ops::RangeInclusive<u64> = 9_000..=15_000;

#[tokio::test]
async fn tpot_token_throughput_and_goodput_follow_the_simulators_pace() {
    let _heavy = heavy().await;
    // 12 tokens, one every 10 ms after a 20 ms TTFT: a request takes about 130 ms.
    let sim = start_sim("a", "m", |a| {
        a.ttft = Duration::from_millis(20);
        a.tpot = Duration::from_millis(10);
        a.output_tokens = 12;
    })
    .await;
    let url = sim.url();
    // 40 requests due in 1 s, 12 tokens each: 480 output tokens/s.
    let load = [
        "--model",
        "m",
        "--rate",
        "40",
        "--duration",
        "1s",
        "-c",
        "12",
    ];
    let run = |extra: &[&str]| {
        let mut all = vec![url.as_str()];
        all.extend_from_slice(&load);
        all.extend_from_slice(extra);
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        async move { report(&all.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    // Generated streams ask for the usage chunk: an exact count, and the prompt's.
    let slo = "ttft=2s,tpot=500ms";
    let r = run(&["--stream", "--max-tokens", "12", "--slo", slo]).await;
    let t = &r["targets"][0];
    let (tpot, total_per_s) = token_figures(t);
    assert!(
        TPOT_P50_US.contains(&tpot),
        "TPOT p50 {tpot} µs, sim 10 ms: {t}"
    );
    assert!(
        total_per_s.is_some(),
        "the usage chunk has the prompt tokens: {t}"
    );
    assert_eq!(t["goodput"]["met"], 40, "{t}");
    assert_eq!(t["goodput"]["share"], 1.0, "{t}");
    assert_eq!(r["run"]["slo_us"]["tpot"], 500_000);

    // A whole body without stream_options (nor max_tokens: the sim's 12 apply): tokens
    // counted from the events, prompt tokens unknown; no request meets a 2 ms TPOT.
    let dir = temp_dir("loadtest-tokens");
    let prompts = dir.join("bodies.jsonl");
    std::fs::write(
        &prompts,
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n",
    )
    .expect("write prompts");
    let path = prompts.to_str().expect("utf-8 path");
    let r = run(&["--stream", "--prompts", path, "--slo", "tpot=2ms"]).await;
    let t = &r["targets"][0];
    let (tpot, total_per_s) = token_figures(t);
    assert!(TPOT_P50_US.contains(&tpot), "TPOT p50 {tpot} µs: {t}");
    assert_eq!(total_per_s, None, "no usage, no prompt count: {t}");
    let goodput = &t["goodput"];
    assert_eq!(
        (n(&goodput["met"]), goodput["share"].as_f64()),
        (0, Some(0.0)),
        "{t}"
    );

    // Whole (non-stream) answers: the counts come from their `usage`; no TPOT.
    let r = run(&["--max-tokens", "12"]).await;
    let t = &r["targets"][0];
    let (_, total_per_s) = token_figures(t);
    assert_eq!(n(&t["latency_us"]["tpot"]["count"]), 0, "{t}");
    assert!(total_per_s.is_some(), "{t}");
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
}

#[tokio::test]
async fn closed_loop_runs_a_request_count_after_warmup_cycling_prompts_and_writes_csv() {
    let _heavy = heavy().await;
    let sim = start_sim("a", "m", |_| {}).await;
    let dir = temp_dir("loadtest-csv");
    let csv = dir.join("out.csv");
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(
        &prompts,
        "\"first prompt\"\n{\"model\":\"m\",\"prompt\":\"second\"}\n",
    )
    .expect("write prompts");
    let r = report(&[
        &sim.url(),
        "--connections",
        "2",
        "--requests",
        "100",
        "--warmup",
        "200ms",
        "--api",
        "completions",
        "--prompts",
        prompts.to_str().expect("utf-8 path"),
        "--csv",
        csv.to_str().expect("utf-8 path"),
    ])
    .await;
    let t = &r["targets"][0];
    assert_eq!(r["run"]["mode"], "closed");
    assert_eq!((n(&t["requests"]), n(&t["ok"])), (100, 100), "{t}");
    assert!(
        sim.requests_total() > 100,
        "warm-up requests are sent, not counted"
    );
    let received = sim.received();
    assert!(received.iter().all(|q| q.path == "/v1/completions"));
    let bodies: std::collections::HashSet<&str> =
        received.iter().map(|q| q.sha256.as_str()).collect();
    assert_eq!(bodies.len(), 2, "both prompt lines are used in turn");
    assert_eq!(
        n(&t["latency_us"]["ttft"]["count"]),
        0,
        "no stream, no TTFT"
    );
    let rows = std::fs::read_to_string(&csv).expect("csv written");
    assert!(
        rows.starts_with("target,url,metric,stat,value_us\n"),
        "{rows}"
    );
    let p99 = n(&t["latency_us"]["total"]["p99"]);
    assert!(rows.contains(&format!("total,p99,{p99}\n")), "{rows}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn h2c_multiplexes_streams_on_one_connection() {
    let _heavy = heavy().await;
    let sim = start_sim("a", "m", |_| {}).await;
    let r = report(&[
        &sim.url(),
        "--h2c",
        "--streams",
        "4",
        "--requests",
        "80",
        "--stream",
    ])
    .await;
    let t = &r["targets"][0];
    assert_eq!(r["run"]["protocol"], "h2c");
    assert_eq!((n(&t["ok"]), n(&t["errors_total"])), (80, 0), "{t}");
    assert_eq!(n(&t["latency_us"]["ttft"]["count"]), 80);
}

#[tokio::test]
async fn failures_are_counted_by_kind_and_not_fatal() {
    let _heavy = heavy().await;
    let sim = start_sim("a", "m", |a| {
        a.seed = 5;
        a.faults = Faults {
            error_rate: Ratio::new(0.25).expect("share"),
            truncate_rate: Ratio::new(0.25).expect("share"),
            error_event_rate: Ratio::new(0.25).expect("share"),
            ..Faults::default()
        };
    })
    .await;
    let r = report(&[
        &sim.url(),
        "--requests",
        "80",
        "--connections",
        "2",
        "--stream",
    ])
    .await;
    let t = &r["targets"][0];
    let e = &t["errors"];
    for kind in ["status_5xx", "cut_after_200", "error_event"] {
        assert!(n(&e[kind]) > 0, "no {kind}: {e}");
    }
    assert_eq!(
        n(&e["connect"]) + n(&e["timeout"]) + n(&e["status_4xx"]),
        0,
        "{e}"
    );
    assert_eq!(n(&t["ok"]) + n(&t["errors_total"]), 80, "{t}");
    assert!(n(&t["ok"]) > 0, "{t}");
}

#[tokio::test]
async fn compare_reports_what_the_gateway_adds_over_the_upstream() {
    let _heavy = heavy().await;
    let sim = start_sim("a", "m", |_| {}).await;
    let gw = Gateway::start(&config(&sim, None, "", ""));
    let out = loadtest(&[
        "--compare",
        &sim.url(),
        &gw.url(""),
        "--model",
        "m",
        "--rate",
        "100",
        // Each request takes the sim ≈ 17 ms: one connection would fall behind 100 a second.
        "--connections",
        "4",
        "--duration",
        "2s",
        "--slice",
        "250ms",
        "--quiet",
    ])
    .await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "A http://",
        "B http://",
        "B - A (what B adds)",
        "throughput B/A",
    ] {
        assert!(table.contains(want), "{want:?} missing from\n{table}");
    }
    let stable_2xx =
        r#"rollgate_proxy_requests_total{model="m",variant="stable",status_class="2xx"}"#;
    let before = metric(&gw.metrics().await, stable_2xx).unwrap_or(0.0);
    let r = report(&[
        "--compare",
        &sim.url(),
        &gw.url(""),
        "--model",
        "m",
        "--rate",
        "100",
        // Each request takes the sim ≈ 17 ms: one connection would fall behind 100 a second.
        "--connections",
        "4",
        "--duration",
        "2s",
        "--slice",
        "250ms",
    ])
    .await;
    let (a, b) = (&r["targets"][0], &r["targets"][1]);
    for t in [a, b] {
        assert_eq!(n(&t["errors_total"]), 0, "{t}");
        // Half of 2 s at 100 req/s each.
        assert!(n(&t["requests"]).abs_diff(100) <= 2, "{t}");
        assert_eq!(t["fell_short"], false, "kept up with the schedule: {t}");
    }
    let through = metric(&gw.metrics().await, stable_2xx).unwrap_or(0.0) - before;
    assert_eq!(through, n(&b["ok"]) as f64, "B went through the gateway");
    let added = &r["compare"]["added_us"]["total"];
    for p in ["p50", "p90", "p99", "p99.9"] {
        assert!(added[p].is_i64(), "no added {p}: {added}");
    }
    let ratio = r["compare"]["throughput_ratio"].as_f64().expect("ratio");
    assert!(
        (0.95..=1.05).contains(&ratio),
        "same open-loop rate on both: {ratio}"
    );
}

#[tokio::test]
async fn setup_failures_exit_non_zero_and_say_why() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let out = loadtest(&[&format!("http://{closed}"), "--duration", "1s"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
    let out = loadtest(&[
        "http://127.0.0.1:1",
        "--rate=0",
        "--prompts",
        "/nonexistent",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--rate") && stderr.contains("/nonexistent"),
        "{stderr}"
    );
}

/// A number in a report.
fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

#[tokio::test]
async fn a_rate_sweep_runs_each_rate_and_its_summary_agrees_with_the_runs() {
    let _heavy = heavy().await;
    // About 5 ms a stream: 80 a second keep well under one connection busy.
    let sim = start_sim("a", "m", |_| {}).await;
    let dir = temp_dir("loadtest-sweep");
    let csv = dir.join("sweep.csv");
    let r = report(&[
        &sim.url(),
        "--model",
        "m",
        "--rate",
        "20,40,80",
        "--duration",
        "1s",
        "-c",
        "8",
        "--stream",
        "--max-tokens",
        "4",
        "--csv",
        csv.to_str().expect("utf-8 path"),
    ])
    .await;
    let runs = r["runs"].as_array().expect("runs");
    let summary = &r["summary"];
    let rows = summary["rows"].as_array().expect("rows");
    assert_eq!((runs.len(), rows.len()), (3, 3), "{r}");
    let mut ok = 0;
    for ((asked, run), row) in [20.0, 40.0, 80.0].into_iter().zip(runs).zip(rows) {
        let t = &run["targets"][0];
        assert_eq!(f(&run["run"]["target_rate"]), asked, "{run}");
        assert_eq!(n(&t["errors_total"]), 0, "{t}");
        assert_eq!(t["fell_short"], false, "{t}");
        // A target that keeps up gets exactly the schedule: `asked` requests in 1 s.
        assert!(n(&t["requests"]).abs_diff(asked as u64) <= 1, "{t}");
        let achieved = f(&t["rate"]);
        assert!((achieved - asked).abs() <= asked * 0.02, "{asked}: {t}");
        // The summary row is the run's figures.
        let lat = &t["latency_us"];
        assert_eq!(f(&row["rate"]), asked, "{row}");
        assert_eq!(row["achieved_rate"], t["rate"], "{row}");
        assert_eq!((&row["ok"], &row["errors"]), (&t["ok"], &t["errors_total"]));
        for (field, metric, p) in [
            ("total_p50_us", "total", "p50"),
            ("total_p99_us", "total", "p99"),
            ("ttft_p50_us", "ttft", "p50"),
            ("ttft_p99_us", "ttft", "p99"),
            ("tpot_p50_us", "tpot", "p50"),
            ("tpot_p99_us", "tpot", "p99"),
        ] {
            assert_eq!(row[field], lat[metric][p], "{field}: {row}");
        }
        assert_eq!(row["output_tokens_per_s"], t["tokens"]["output_per_s"]);
        assert!((f(&row["output_tokens_per_s"]) - asked * 4.0).abs() <= asked * 0.1);
        assert_eq!(row["fell_short"], false, "{row}");
        ok += n(&t["ok"]);
    }
    assert!(summary["saturated_at"].is_null(), "{summary}");
    assert_eq!(summary["not_run"], serde_json::json!([]), "{summary}");
    assert_eq!(sim.requests_total(), ok, "every rate went to the simulator");
    let rows = std::fs::read_to_string(&csv).expect("csv written");
    assert!(
        rows.starts_with("rate,target,url,metric,stat,value_us\n"),
        "{rows}"
    );
    for (rate, run) in ["20", "40", "80"].iter().zip(runs) {
        let p99 = n(&run["targets"][0]["latency_us"]["total"]["p99"]);
        let want = format!("\n{rate},A,{},total,p99,{p99}\n", sim.url());
        assert!(rows.contains(&want), "{want:?} missing from\n{rows}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_sweep_stops_after_the_first_rate_the_simulator_falls_short_at() {
    let _heavy = heavy().await;
    // One request generating at a time, 40 ms each: the simulator serves at most 25 a second.
    let sim = start_sim("a", "m", |a| {
        a.ttft = Duration::from_millis(40);
        a.output_tokens = 1;
        a.max_concurrency = 1;
    })
    .await;
    let mut all = vec!["--json", "--quiet", "--timeout", "1s"];
    let url = sim.url();
    all.extend_from_slice(&[
        &url, "--model", "m", "--rate", "5,50,100", "-d", "1s", "-c", "4",
    ]);
    let out = loadtest(&all).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "falling short is not an error: {stderr}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let runs = r["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "100/s is not run: {r}");
    let (low, high) = (&runs[0]["targets"][0], &runs[1]["targets"][0]);
    assert_eq!(low["fell_short"], false, "{low}");
    assert!((f(&low["rate"]) - 5.0).abs() < 0.2, "{low}");
    assert_eq!(high["fell_short"], true, "{high}");
    assert!(f(&high["rate"]) < 30.0, "what the simulator served: {high}");
    let summary = &r["summary"];
    assert_eq!(f(&summary["saturated_at"]), 50.0, "{summary}");
    assert_eq!(summary["not_run"], serde_json::json!([100.0]), "{summary}");
    let short: Vec<&Value> = summary["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| &row["fell_short"])
        .collect();
    assert_eq!(short, [false, true], "{summary}");
    let sent = n(&low["ok"]) + n(&low["errors_total"]) + n(&high["ok"]) + n(&high["errors_total"]);
    assert_eq!(sim.requests_total(), sent, "nothing went out at 100/s");
    assert!(
        stderr.contains("the target fell short at 50/s") && stderr.contains("not run: 100/s"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_sweep_stops_at_the_first_rate_the_simulator_sheds_load_at() {
    let _heavy = heavy().await;
    // One request generating at a time, 40 ms each, one more waiting: about 25 a second, and
    // the rest refused at once with 503 (queue full), so the generator never falls behind.
    let sim = start_sim("a", "m", |a| {
        a.ttft = Duration::from_millis(40);
        a.output_tokens = 1;
        a.max_concurrency = 1;
        a.max_queue = 1;
    })
    .await;
    let url = sim.url();
    let args = [
        "--json",
        "--quiet",
        "--timeout",
        "5s",
        &url,
        "--model",
        "m",
        "--rate",
        "5,100,200",
        "-d",
        "1s",
        "-c",
        "8",
    ];
    let out = loadtest(&args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shedding is not an error: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let summary = &r["summary"];
    let rows = summary["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "200/s is not run: {summary}");
    let (low, high) = (&rows[0], &rows[1]);
    assert_eq!(
        (&low["kept_up"], n(&low["errors"])),
        (&true.into(), 0),
        "{low}"
    );
    assert_eq!(
        high["fell_short"], false,
        "fast refusals leave no backlog: {high}"
    );
    assert_eq!(high["kept_up"], false, "{high}");
    assert!(f(&high["error_share"]) > 0.5, "{high}");
    assert!(
        n(&r["runs"][1]["targets"][0]["errors"]["status_5xx"]) > 0,
        "{r}"
    );
    assert_eq!(f(&summary["saturated_at"]), 100.0, "{summary}");
    assert_eq!(f(&summary["max_error_share"]), 0.01, "{summary}");
    assert!(
        stderr.contains("sweep: the target fell short at 100/s (errors ")
            && stderr.contains("not run: 200/s"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_rate_list_exits_non_zero_and_says_why() {
    let out = loadtest(&["http://127.0.0.1:1", "--rate", "10,5,,abc", "--sweep-all"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for want in [
        "--rate 10,5,,abc:",
        "rate 2 (5) is not above 10",
        "rate 3 is empty",
        "\"abc\" is not a number",
    ] {
        assert!(stderr.contains(want), "{want:?} missing from {stderr}");
    }
    // A negative rate is reported as the rate's problem, with the others, not as a flag.
    let out = loadtest(&["http://127.0.0.1:1", "--rate", "-5", "-c", "0"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--rate -5: must be above 0") && stderr.contains("--connections"),
        "{stderr}"
    );
    let out = loadtest(&[
        "--compare",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "--rate",
        "10,20",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--compare takes one --rate, not a list"),
        "{stderr}"
    );
}
