//! `/metrics` per engine: names, syntax and values.

use std::{collections::BTreeMap, time::Duration};

use super::*;

/// Parses Prometheus text: every sample line is `name{labels} value` and belongs to a family
/// declared by a `# TYPE` line above it. Returns `name{labels}` → value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut families = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
            assert!(
                families.insert(name.to_owned(), kind.to_owned()).is_none(),
                "twice: {line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        let valid_name = name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
        assert!(valid_name && !name.is_empty(), "bad name in {line}");
        if name_end < series.len() {
            let labels = series[name_end..]
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'));
            for pair in labels
                .unwrap_or_else(|| panic!("bad labels in {line}"))
                .split(',')
            {
                let (key, value) = pair.split_once('=').unwrap();
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(
                    value.starts_with('"') && value.ends_with('"') && value.len() >= 2,
                    "{line}"
                );
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| families.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(families.contains_key(family), "no # TYPE for {line}");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate {line}"
        );
    }
    samples
}

async fn page(sim: &Sim) -> (String, BTreeMap<String, f64>) {
    let reply = call(sim, Method::GET, "/metrics", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let samples = parse(&text);
    (text, samples)
}

#[tokio::test(start_paused = true)]
async fn every_engine_serves_its_names() {
    let table: [(Engine, &[&str]); 4] = [
        (
            Engine::Vllm,
            &[
                "vllm:num_requests_waiting{model_name=\"sim-model\"}",
                "vllm:num_requests_running{model_name=\"sim-model\"}",
                "vllm:kv_cache_usage_perc{model_name=\"sim-model\"}",
                "vllm:time_to_first_token_seconds_bucket{model_name=\"sim-model\",le=\"+Inf\"}",
                "vllm:e2e_request_latency_seconds_count{model_name=\"sim-model\"}",
                "vllm:request_queue_time_seconds_sum{model_name=\"sim-model\"}",
                "vllm:request_success_total{model_name=\"sim-model\",finished_reason=\"stop\"}",
            ],
        ),
        (
            Engine::Sglang,
            &[
                "sglang:num_queue_reqs{model_name=\"sim-model\"}",
                "sglang:num_running_reqs{model_name=\"sim-model\"}",
                "sglang:token_usage{model_name=\"sim-model\"}",
                "sglang:time_to_first_token_seconds_count{model_name=\"sim-model\"}",
            ],
        ),
        (
            Engine::Tgi,
            &["tgi_queue_size", "tgi_batch_current_size", "tgi_request_queue_duration_count"],
        ),
        (
            Engine::Triton,
            &[
                "nv_inference_pending_request_count{model=\"sim-model\",version=\"1\"}",
                "nv_inference_queue_duration_us{model=\"sim-model\",version=\"1\"}",
                "nv_trt_llm_kv_cache_block_metrics{model=\"sim-model\",version=\"1\",kv_cache_block_type=\"fraction\"}",
            ],
        ),
    ];
    for (engine, names) in table {
        let sim = sim(SimArgs { engine, ..args() }).await;
        post(&sim, "/v1/chat/completions", &chat("count me")).await;
        let (text, samples) = page(&sim).await;
        for name in names {
            assert!(
                samples.contains_key(*name),
                "{engine:?}: {name} missing from\n{text}"
            );
        }
        let used = samples["rollgate_sim_gpu_memory_used_bytes"];
        let total = samples["rollgate_sim_gpu_memory_total_bytes"];
        assert_eq!(total, (80u64 << 30) as f64);
        assert!(used >= 0.6 * total && used < total, "{engine:?}: {used}");
        assert_eq!(
            samples["rollgate_sim_requests_total{shadow=\"false\"}"],
            1.0
        );
        if engine == Engine::Triton {
            let gpu = samples
                .keys()
                .find(|k| k.starts_with("nv_gpu_memory_used_bytes{gpu_uuid=\"GPU-"));
            assert!(gpu.is_some(), "{text}");
            assert!(text.contains("nv_gpu_memory_total_bytes{gpu_uuid=\"GPU-"));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn vllm_values_follow_requests() {
    let sim = sim(args()).await;
    post(&sim, "/v1/chat/completions", &chat("one")).await;
    let mut capped = chat("two");
    capped["max_tokens"] = json!(4);
    post(&sim, "/v1/chat/completions", &capped).await;
    let (_, s) = page(&sim).await;
    let m = |name: &str| s[&format!("vllm:{name}")];
    assert_eq!(
        m("request_success_total{model_name=\"sim-model\",finished_reason=\"stop\"}"),
        1.0
    );
    assert_eq!(
        m("request_success_total{model_name=\"sim-model\",finished_reason=\"length\"}"),
        1.0
    );
    assert_eq!(
        m("time_to_first_token_seconds_count{model_name=\"sim-model\"}"),
        2.0
    );
    // TTFT is 20 ms: in the 0.02 bucket, not the 0.01 one.
    assert_eq!(
        m("time_to_first_token_seconds_bucket{model_name=\"sim-model\",le=\"0.01\"}"),
        0.0
    );
    assert_eq!(
        m("time_to_first_token_seconds_bucket{model_name=\"sim-model\",le=\"0.02\"}"),
        2.0
    );
    // 95 ms and 35 ms.
    assert!((m("e2e_request_latency_seconds_sum{model_name=\"sim-model\"}") - 0.130).abs() < 1e-9);
    assert_eq!(m("generation_tokens_total{model_name=\"sim-model\"}"), 20.0);
}

#[tokio::test(start_paused = true)]
async fn kv_usage_and_gpu_memory_grow_with_running_requests() {
    let sim = sim(SimArgs {
        kv_cache_tokens: 1000,
        ..args()
    })
    .await;
    let idle = parse(&sim.metrics_text());
    assert_eq!(
        idle["vllm:kv_cache_usage_perc{model_name=\"sim-model\"}"],
        0.0
    );
    let total = (80u64 << 30) as f64;
    assert_eq!(
        idle["rollgate_sim_gpu_memory_used_bytes"],
        (0.6 * total).floor()
    );

    let mut request = chat("hold the cache");
    request["stream"] = json!(true);
    request["max_tokens"] = json!(500);
    let response = open(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        &[],
        request.to_string(),
    )
    .await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    let busy = parse(&sim.metrics_text());
    assert_eq!(
        busy["vllm:num_requests_running{model_name=\"sim-model\"}"],
        1.0
    );
    let kv = busy["vllm:kv_cache_usage_perc{model_name=\"sim-model\"}"];
    assert!(
        kv > 0.5 && kv < 0.52,
        "500 output tokens and a short prompt of 1000: {kv}"
    );
    let used = busy["rollgate_sim_gpu_memory_used_bytes"];
    assert!((used - (0.6 + 0.4 * kv) * total).abs() < 2.0, "{used}");
    drop(body);
}

#[tokio::test(start_paused = true)]
async fn gpu_memory_faults() {
    let sim = sim(args()).await;
    let total = (80u64 << 30) as f64;
    sim.set_faults(Faults {
        gpu_memory_growth: 1 << 30,
        ..Faults::default()
    });
    tokio::time::advance(Duration::from_secs(10)).await;
    let grown = parse(&sim.metrics_text())["rollgate_sim_gpu_memory_used_bytes"];
    assert_eq!(grown, (0.6 * total + 10.0 * (1u64 << 30) as f64).floor());
    // Growth stops at the total.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(
        parse(&sim.metrics_text())["rollgate_sim_gpu_memory_used_bytes"],
        total
    );

    sim.set_faults(Faults {
        gpu_memory_used: Some(Ratio::new(0.95).unwrap()),
        ..Faults::default()
    });
    let fixed = parse(&sim.metrics_text())["rollgate_sim_gpu_memory_used_bytes"];
    assert_eq!(fixed, (0.95 * total).floor());
}

#[tokio::test(start_paused = true)]
async fn triton_counts_queue_microseconds() {
    let sim = sim(SimArgs {
        engine: Engine::Triton,
        max_concurrency: 1,
        ..args()
    })
    .await;
    let request = json!({"prompt": "p", "max_tokens": 10});
    let one = || post(&sim, "/v1/completions", &request);
    tokio::join!(one(), one());
    let (_, s) = page(&sim).await;
    assert_eq!(
        s["nv_inference_queue_duration_us{model=\"sim-model\",version=\"1\"}"],
        65_000.0
    );
    assert_eq!(
        s["nv_inference_request_success{model=\"sim-model\",version=\"1\"}"],
        2.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_the_client_leaves_is_counted_as_aborted() {
    let sim = sim(SimArgs {
        output_tokens: 50,
        ..args()
    })
    .await;
    let mut body = chat("leave early");
    body["stream"] = json!(true);
    let response = open(
        &sim,
        Method::POST,
        "/v1/chat/completions",
        &[],
        body.to_string(),
    )
    .await;
    let mut stream = response.into_body();
    // Two token events, then the client hangs up.
    for _ in 0..2 {
        stream.frame().await.expect("an event").expect("a frame");
    }
    drop(stream);
    let abort = "vllm:request_success_total{model_name=\"sim-model\",finished_reason=\"abort\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        let (_, s) = page(&sim).await;
        if s[abort] == 1.0 {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no abort counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let m = |name: &str| s[&format!("vllm:{name}")];
    let tokens = m("generation_tokens_total{model_name=\"sim-model\"}");
    assert!(
        (2.0..50.0).contains(&tokens),
        "tokens sent before the abort: {tokens}"
    );
    assert_eq!(
        m("e2e_request_latency_seconds_count{model_name=\"sim-model\"}"),
        1.0
    );
    assert_eq!(
        m("request_success_total{model_name=\"sim-model\",finished_reason=\"stop\"}"),
        0.0
    );
}

/// `DELETE /sim/requests` restarts the received log and its counts, which tests read; the
/// Prometheus counter keeps counting, since a counter that goes back reads as a restart.
#[tokio::test(start_paused = true)]
async fn clearing_the_received_log_leaves_the_requests_counter_monotonic() {
    let sim = sim(args()).await;
    let shadowed = [("x-rollgate-shadow", "1")];
    post(&sim, "/v1/chat/completions", &chat("one")).await;
    let body = chat("two").to_string();
    call_with(&sim, Method::POST, "/v1/chat/completions", &shadowed, body).await;
    let counts = |samples: &BTreeMap<String, f64>| {
        (
            samples["rollgate_sim_requests_total{shadow=\"false\"}"],
            samples["rollgate_sim_requests_total{shadow=\"true\"}"],
        )
    };
    assert_eq!(counts(&page(&sim).await.1), (1.0, 1.0));

    let cleared = call(&sim, Method::DELETE, "/sim/requests", "").await.json();
    assert_eq!(
        (cleared["total"].as_u64(), cleared["shadow"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!((sim.requests_total(), sim.shadow_requests_total()), (0, 0));
    assert_eq!(counts(&page(&sim).await.1), (1.0, 1.0), "not reset");

    post(&sim, "/v1/chat/completions", &chat("three")).await;
    sim.reset_received();
    assert_eq!(sim.requests_total(), 0);
    assert_eq!(counts(&page(&sim).await.1), (2.0, 1.0));
}
