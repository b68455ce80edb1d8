//! The latency model, the concurrency limit and queue, and shutdown, all under paused time.

use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::*;

const MS: Duration = Duration::from_millis(1);

/// Yields until the metrics page says `needle`; time does not move while it spins.
async fn until_metrics(sim: &Sim, needle: &str) {
    for _ in 0..100_000 {
        if sim.metrics_text().contains(needle) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("metrics never showed {needle}:\n{}", sim.metrics_text());
}

fn tokens(n: u64) -> Value {
    let mut request = chat("time me");
    request["max_tokens"] = json!(n);
    request
}

#[tokio::test(start_paused = true)]
async fn latency_is_ttft_plus_tokens() {
    let sim = sim(args()).await;
    let start = Instant::now();
    let reply = post(&sim, "/v1/chat/completions", &tokens(10)).await;
    assert_eq!(reply.status, StatusCode::OK);
    // 20 ms to the first token, then 9 more at 5 ms.
    assert_eq!(start.elapsed(), 65 * MS);
}

#[tokio::test(start_paused = true)]
async fn stream_events_are_paced_per_token() {
    let sim = sim(args()).await;
    let mut request = tokens(4);
    request["stream"] = json!(true);
    let start = Instant::now();
    let streamed = stream(&sim, "/v1/chat/completions", &request).await;
    let at: Vec<Duration> = streamed.frames.iter().map(|(t, _)| *t - start).collect();
    // Four tokens, then the finish event and [DONE] right after the last one.
    assert_eq!(at, [20 * MS, 25 * MS, 30 * MS, 35 * MS, 35 * MS, 35 * MS]);
}

#[tokio::test(start_paused = true)]
async fn extra_latency_and_stall_first_event() {
    let faults = Faults {
        extra_latency: 300 * MS,
        stall_first_event: Duration::from_secs(1),
        ..Faults::default()
    };
    let sim = sim(SimArgs { faults, ..args() }).await;
    let mut request = tokens(3);
    request["stream"] = json!(true);
    let start = Instant::now();
    let streamed = stream(&sim, "/v1/chat/completions", &request).await;
    let at: Vec<Duration> = streamed.frames.iter().map(|(t, _)| *t - start).collect();
    assert_eq!(at[..3], [320 * MS, 1325 * MS, 1330 * MS]);
}

#[tokio::test(start_paused = true)]
async fn stall_delays_the_whole_request() {
    let faults = Faults {
        stall: Duration::from_secs(10),
        ..Faults::default()
    };
    let sim = sim(SimArgs { faults, ..args() }).await;
    let request = tokens(1);
    let start = Instant::now();
    let (reply, ()) = tokio::join!(post(&sim, "/v1/chat/completions", &request), async {
        until_metrics(
            &sim,
            "rollgate_sim_faults_injected_total{fault=\"stall\"} 1",
        )
        .await;
        // Stalled before reading: nothing is recorded yet.
        assert_eq!(sim.requests_total(), 0);
    });
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_secs(10) + 20 * MS);
}

#[tokio::test(start_paused = true)]
async fn max_concurrency_queues_fifo() {
    let sim = sim(SimArgs {
        max_concurrency: 1,
        ..args()
    })
    .await;
    let start = Instant::now();
    let timed = || async {
        let reply = post(&sim, "/v1/chat/completions", &tokens(10)).await;
        assert_eq!(reply.status, StatusCode::OK);
        start.elapsed()
    };
    let (a, b, ()) = tokio::join!(timed(), timed(), async {
        until_metrics(
            &sim,
            "vllm:num_requests_waiting{model_name=\"sim-model\"} 1",
        )
        .await;
        assert!(sim
            .metrics_text()
            .contains("vllm:num_requests_running{model_name=\"sim-model\"} 1"));
    });
    let mut done = [a, b];
    done.sort();
    // The second waits the whole of the first: 65 ms queued, then its own 65 ms.
    assert_eq!(done, [65 * MS, 130 * MS]);
    let text = sim.metrics_text();
    assert!(
        text.contains("vllm:request_queue_time_seconds_sum{model_name=\"sim-model\"} 0.065\n"),
        "{text}"
    );
    assert!(text.contains("vllm:num_requests_waiting{model_name=\"sim-model\"} 0\n"));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_with_503() {
    let sim = sim(SimArgs {
        max_concurrency: 1,
        max_queue: 1,
        ..args()
    })
    .await;
    let request = tokens(10);
    let one = || post(&sim, "/v1/chat/completions", &request);
    let (a, b, c) = tokio::join!(one(), one(), one());
    let mut statuses = [a.status, b.status, c.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE
        ]
    );
    let refused = [a, b, c]
        .into_iter()
        .find(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .unwrap();
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.error()["code"], "queue_full");
    assert!(sim
        .metrics_text()
        .contains("rollgate_sim_queue_full_total 1\n"));
}

#[tokio::test(start_paused = true)]
async fn jitter_is_bounded_and_seeded() {
    let jittery = || {
        sim(SimArgs {
            jitter: Ratio::new(0.5).unwrap(),
            seed: 7,
            ..args()
        })
    };
    let (a, b) = (jittery().await, jittery().await);
    let mut runs = Vec::new();
    for sim in [&a, &b] {
        let mut times = Vec::new();
        for _ in 0..20 {
            let start = Instant::now();
            post(sim, "/v1/chat/completions", &tokens(10)).await;
            times.push(start.elapsed());
        }
        runs.push(times);
    }
    assert_eq!(runs[0], runs[1], "the same seed gives the same latencies");
    // Each of TTFT (20 ms) and TPOT (5 ms) is scaled within 1 ± 0.5, rounded up to the ms.
    assert!(
        runs[0].iter().all(|t| *t >= 32 * MS && *t <= 99 * MS),
        "{runs:?}"
    );
    assert!(runs[0].iter().any(|t| *t != runs[0][0]), "{runs:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_bounded_with_a_request_in_flight() {
    let faults = Faults {
        stall: Duration::from_secs(3600),
        ..Faults::default()
    };
    let sim = sim(SimArgs { faults, ..args() }).await;
    let addr = sim.local_addr();
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(chat("hi").to_string())))
        .unwrap();
    let client = tokio::spawn(try_open(addr, req));
    until_metrics(
        &sim,
        "rollgate_sim_faults_injected_total{fault=\"stall\"} 1",
    )
    .await;
    let start = Instant::now();
    sim.shutdown().await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "--shutdown-grace, then cut"
    );
    let cut = client.await.unwrap();
    assert!(cut.is_err(), "the stalled request's connection was cut");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_after_the_header_timeout() {
    let sim = sim(args()).await;
    let mut stream = tokio::net::TcpStream::connect(sim.local_addr())
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let read = stream.read(&mut buf).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}
