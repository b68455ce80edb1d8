use super::*;
use crate::signals::promtext::parse;

mod hist;
mod live;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

fn read(engine: Engine, page: &str) -> EngineReading {
    EngineReading::from_samples(&parse(page).unwrap(), engine, None)
}

fn read_model(engine: Engine, model: &str, page: &str) -> EngineReading {
    EngineReading::from_samples(&parse(page).unwrap(), engine, Some(model))
}

#[test]
fn vllm_kv_aliases_across_versions() {
    // (page, expected kv usage)
    let cases: &[(&str, Option<f64>)] = &[
        ("vllm:kv_cache_usage_perc{model_name=\"m\"} 0.25", Some(0.25)),
        ("vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5", Some(0.5)),
        // Both served during the rename: the new name wins, nothing is added up.
        (
            "vllm:gpu_cache_usage_perc 0.5\nvllm:kv_cache_usage_perc 0.25",
            Some(0.25),
        ),
        // Usage takes the fullest data-parallel engine.
        (
            "vllm:kv_cache_usage_perc{engine=\"0\"} 0.2\nvllm:kv_cache_usage_perc{engine=\"1\"} 0.7",
            Some(0.7),
        ),
        ("sglang:token_usage 0.9", None),
        ("", None),
    ];
    for &(page, want) in cases {
        assert_eq!(read(Engine::Vllm, page).kv_cache_usage, want, "{page}");
    }
}

#[test]
fn counts_sum_across_engine_labels() {
    let page = "\
vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3
vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 4
vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 10
vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 12
";
    let r = read(Engine::Vllm, page);
    assert_eq!(r.queue_depth, Some(7.0));
    assert_eq!(r.running, Some(22.0));
    assert_eq!(r.kv_cache_usage, None);
}

/// (engine, page, queue, running, kv)
type NamesCase = (Engine, &'static str, Option<f64>, Option<f64>, Option<f64>);

#[test]
fn engine_names() {
    // (engine, page, queue, running, kv)
    let cases: &[NamesCase] = &[
        (
            Engine::Sglang,
            "sglang:num_queue_reqs 2\nsglang:num_running_reqs 5\nsglang:token_usage 0.4",
            Some(2.0),
            Some(5.0),
            Some(0.4),
        ),
        (
            Engine::Tgi,
            "tgi_queue_size 1\ntgi_batch_current_size 8",
            Some(1.0),
            Some(8.0),
            None,
        ),
        (
            Engine::Triton,
            "nv_inference_pending_request_count{model=\"m\",version=\"1\"} 6
nv_trt_llm_request_metrics{model=\"m\",request_type=\"active\"} 9
nv_trt_llm_request_metrics{model=\"m\",request_type=\"scheduled\"} 4
nv_trt_llm_request_metrics{model=\"m\",request_type=\"max\"} 64
nv_trt_llm_kv_cache_block_metrics{model=\"m\",kv_cache_block_type=\"max\"} 100
nv_trt_llm_kv_cache_block_metrics{model=\"m\",kv_cache_block_type=\"fraction\"} 0.3",
            Some(6.0),
            Some(4.0),
            Some(0.3),
        ),
        // Older TRT-LLM: no fraction, used/max instead; TRT-LLM's own waiting gauge.
        (
            Engine::Triton,
            "trtllm_num_requests_waiting 2
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"max\"} 200
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"used\"} 50",
            Some(2.0),
            None,
            Some(0.25),
        ),
        // Another engine's names are not read.
        (Engine::Tgi, "vllm:num_requests_waiting 3", None, None, None),
        (
            Engine::Openai,
            "vllm:num_requests_waiting 3",
            None,
            None,
            None,
        ),
    ];
    for &(engine, page, queue, running, kv) in cases {
        let r = read(engine, page);
        assert_eq!(
            (r.queue_depth, r.running, r.kv_cache_usage),
            (queue, running, kv),
            "{engine:?}: {page}"
        );
    }
}

#[test]
fn non_finite_gauges_are_not_readings() {
    let r = read(
        Engine::Vllm,
        "vllm:num_requests_waiting NaN\nvllm:num_requests_running{engine=\"0\"} +Inf\nvllm:num_requests_running{engine=\"1\"} 2",
    );
    assert_eq!(r.queue_depth, None);
    assert_eq!(r.running, Some(2.0));
}

#[test]
fn model_filter() {
    let page = "\
vllm:num_requests_waiting{model_name=\"a\"} 1
vllm:num_requests_waiting{model_name=\"b\"} 10
rollgate_sim_gpu_memory_used_bytes 5
rollgate_sim_gpu_memory_total_bytes 10
";
    assert_eq!(read(Engine::Vllm, page).queue_depth, Some(11.0));
    let a = read_model(Engine::Vllm, "a", page);
    assert_eq!(a.queue_depth, Some(1.0));
    // GPU memory is per device and never filtered.
    assert_eq!(a.gpu_memory_ratio(), Some(0.5));
    assert_eq!(read_model(Engine::Vllm, "c", page).queue_depth, None);
    // Triton labels `model`; an unlabelled series is kept.
    let triton = "nv_inference_pending_request_count{model=\"a\"} 2\nnv_inference_pending_request_count{model=\"b\"} 3\ntrtllm_num_requests_waiting 9";
    assert_eq!(
        read_model(Engine::Triton, "b", triton).queue_depth,
        Some(3.0)
    );
    // TGI has no model label: the filter cannot drop anything.
    assert_eq!(
        read_model(Engine::Tgi, "x", "tgi_queue_size{model_name=\"y\"} 4").queue_depth,
        Some(4.0)
    );
}

#[test]
fn dcgm_frame_buffer_is_mib() {
    let page = "\
DCGM_FI_DEV_FB_USED{gpu=\"0\",UUID=\"GPU-a\",modelName=\"NVIDIA H100\",Hostname=\"h\"} 1000
DCGM_FI_DEV_FB_FREE{gpu=\"0\",UUID=\"GPU-a\",modelName=\"NVIDIA H100\",Hostname=\"h\"} 3000
DCGM_FI_DEV_FB_USED{gpu=\"1\",UUID=\"GPU-b\",modelName=\"NVIDIA H100\",Hostname=\"h\"} 2000
DCGM_FI_DEV_FB_FREE{gpu=\"1\",UUID=\"GPU-b\",modelName=\"NVIDIA H100\",Hostname=\"h\"} 2000
";
    let r = read(Engine::Vllm, page);
    assert_eq!(r.gpu_memory_used_bytes, Some(3000.0 * MIB));
    assert_eq!(r.gpu_memory_total_bytes, Some(8000.0 * MIB));
    assert_eq!(r.gpu_memory_ratio(), Some(3000.0 / 8000.0));
    // Newer DCGM splits off driver-reserved memory; it is not free, so it counts as used.
    let reserved =
        "DCGM_FI_DEV_FB_USED 1000\nDCGM_FI_DEV_FB_FREE 2500\nDCGM_FI_DEV_FB_RESERVED 500";
    let r = read(Engine::Sglang, reserved);
    assert_eq!(r.gpu_memory_used_bytes, Some(1500.0 * MIB));
    assert_eq!(r.gpu_memory_total_bytes, Some(4000.0 * MIB));
    // DCGM's `modelName` is the GPU's model, not the served one: the filter leaves it alone.
    let r = read_model(Engine::Vllm, "llama", page);
    assert_eq!(r.gpu_memory_total_bytes, Some(8000.0 * MIB));
}

#[test]
fn gpu_sources_in_order() {
    let agent = "rollgate_gpu_memory_used_bytes{gpu=\"0\"} 1\nrollgate_gpu_memory_total_bytes{gpu=\"0\"} 4\nrollgate_gpu_memory_used_bytes{gpu=\"1\"} 1\nrollgate_gpu_memory_total_bytes{gpu=\"1\"} 4\n";
    let triton =
        "nv_gpu_memory_used_bytes{gpu_uuid=\"x\"} 3\nnv_gpu_memory_total_bytes{gpu_uuid=\"x\"} 4\n";
    let dcgm = "DCGM_FI_DEV_FB_USED 1\nDCGM_FI_DEV_FB_FREE 1\n";
    let sim = "rollgate_sim_gpu_memory_used_bytes 9\nrollgate_sim_gpu_memory_total_bytes 10\n";
    // (page, used, total)
    let cases: Vec<(String, Option<f64>, Option<f64>)> = vec![
        (format!("{sim}{dcgm}{triton}{agent}"), Some(2.0), Some(8.0)),
        (format!("{sim}{dcgm}{triton}"), Some(3.0), Some(4.0)),
        (format!("{sim}{dcgm}"), Some(MIB), Some(2.0 * MIB)),
        (sim.to_owned(), Some(9.0), Some(10.0)),
        // Used without total is no reading; the next source is tried.
        (
            format!("rollgate_gpu_memory_used_bytes 1\n{sim}"),
            Some(9.0),
            Some(10.0),
        ),
        (String::new(), None, None),
    ];
    for (page, used, total) in cases {
        for engine in Engine::ALL {
            let r = read(engine, &page);
            assert_eq!(
                (r.gpu_memory_used_bytes, r.gpu_memory_total_bytes),
                (used, total),
                "{engine:?}: {page}"
            );
        }
    }
    assert_eq!(read(Engine::Openai, "x 1").gpu_memory_ratio(), None);
    let zero = "rollgate_sim_gpu_memory_used_bytes 0\nrollgate_sim_gpu_memory_total_bytes 0";
    assert_eq!(read(Engine::Openai, zero).gpu_memory_ratio(), None);
    assert_eq!(80.0 * GIB, (80u64 << 30) as f64);
}

#[test]
fn triton_queue_counter() {
    let earlier = read(
        Engine::Triton,
        "nv_inference_queue_duration_us{model=\"m\",version=\"1\"} 1000000\nnv_inference_request_success{model=\"m\",version=\"1\"} 2",
    );
    assert_eq!(earlier.queue_time_total_seconds, Some(1.0));
    assert_eq!(earlier.queue_count, Some(2.0));
    assert_eq!(earlier.queue_time, None);
    let later = read(
        Engine::Triton,
        "nv_inference_queue_duration_us{model=\"m\",version=\"1\"} 2500000\nnv_inference_request_success{model=\"m\",version=\"1\"} 5",
    );
    assert_eq!(later.queue_time_mean_since(&earlier), Some(0.5));
    // A restart resets the counters: the later page is the whole window.
    assert_eq!(earlier.queue_time_mean_since(&later), Some(0.5));
    assert_eq!(later.queue_time_mean_since(&later), None);
    assert_eq!(
        later.queue_time_mean_since(&EngineReading::default()),
        Some(0.5)
    );
    // The time without the count is not a reading.
    let half = read(Engine::Triton, "nv_inference_queue_duration_us 5");
    assert_eq!(
        (half.queue_time_total_seconds, half.queue_count),
        (None, None)
    );
}

#[test]
fn wants_only_profile_series() {
    // (engine, name, wanted)
    let cases: &[(Engine, &str, bool)] = &[
        (Engine::Vllm, "vllm:num_requests_waiting", true),
        (Engine::Vllm, "vllm:gpu_cache_usage_perc", true),
        (
            Engine::Vllm,
            "vllm:time_to_first_token_seconds_bucket",
            true,
        ),
        (Engine::Vllm, "vllm:time_to_first_token_seconds_sum", true),
        (Engine::Vllm, "vllm:time_to_first_token_seconds_count", true),
        (Engine::Vllm, "vllm:time_to_first_token_seconds", false),
        (
            Engine::Vllm,
            "vllm:e2e_request_latency_seconds_bucket",
            false,
        ),
        (Engine::Vllm, "DCGM_FI_DEV_FB_FREE", true),
        (Engine::Tgi, "tgi_request_queue_duration_bucket", true),
        (Engine::Tgi, "vllm:num_requests_waiting", false),
        (Engine::Triton, "nv_inference_queue_duration_us", true),
        (Engine::Triton, "nv_trt_llm_kv_cache_block_metrics", true),
        (Engine::Openai, "rollgate_sim_gpu_memory_used_bytes", true),
        (Engine::Openai, "sglang:num_queue_reqs", false),
    ];
    for &(engine, name, want) in cases {
        assert_eq!(engine.wants(name), want, "{engine:?} {name}");
    }
}

#[test]
fn combine_backend() {
    let h = |counts: [f64; 3]| Hist {
        buckets: vec![
            (0.1, counts[0]),
            (1.0, counts[1]),
            (f64::INFINITY, counts[2]),
        ],
        sum: counts[2],
        count: counts[2],
    };
    let a = EngineReading {
        queue_depth: Some(2.0),
        running: Some(3.0),
        kv_cache_usage: Some(0.5),
        queue_time: Some(h([1.0, 2.0, 3.0])),
        ttft: Some(h([1.0, 1.0, 1.0])),
        gpu_memory_used_bytes: Some(60.0),
        gpu_memory_total_bytes: Some(80.0),
        ..Default::default()
    };
    let b = EngineReading {
        queue_depth: Some(5.0),
        running: None,
        kv_cache_usage: Some(0.25),
        queue_time: Some(h([0.0, 4.0, 4.0])),
        queue_time_total_seconds: Some(2.0),
        queue_count: Some(4.0),
        gpu_memory_used_bytes: Some(36.0),
        gpu_memory_total_bytes: Some(40.0),
        ..Default::default()
    };
    let c = combine(&[a.clone(), b, EngineReading::default()]);
    assert_eq!(c.queue_depth, Some(7.0));
    assert_eq!(c.running, Some(3.0));
    assert_eq!(c.kv_cache_usage, Some(0.5));
    assert_eq!(c.queue_time, Some(h([1.0, 6.0, 7.0])));
    assert_eq!(c.ttft, Some(h([1.0, 1.0, 1.0])));
    assert_eq!(
        (c.queue_time_total_seconds, c.queue_count),
        (Some(2.0), Some(4.0))
    );
    // The fullest GPU (36/40) wins over the one using more bytes (60/80).
    assert_eq!(c.gpu_memory_used_bytes, Some(36.0));
    assert_eq!(c.gpu_memory_total_bytes, Some(40.0));
    assert_eq!(combine(&[]), EngineReading::default());
    assert_eq!(combine(std::slice::from_ref(&a)), a);
}

/// The config refuses `queue_time_p95` on engines whose page has no queue-time histogram; that
/// list and this alias table must agree.
#[test]
fn config_knows_which_engines_report_queue_time() {
    use rollgate_config::Engine as C;
    for engine in [C::Vllm, C::Sglang, C::Tgi, C::Triton, C::Openai] {
        let histogram = !Profile::of(engine.into()).queue_time.is_empty();
        assert_eq!(engine.reports_queue_time(), histogram, "{engine}");
    }
}
