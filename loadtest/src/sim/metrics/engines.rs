//! Each engine's own series, named and labelled as that engine names and labels them.

use std::sync::atomic::Ordering::Relaxed;

use super::{Page, State};

pub(super) fn vllm(page: &mut Page, state: &State, model: &str) {
    let (m, load) = (&state.metrics, &state.load);
    page.labels = format!("model_name=\"{model}\"");
    page.gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        load.running.load(Relaxed),
    );
    page.gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        load.waiting.load(Relaxed),
    );
    page.gauge(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        state.kv_usage(),
    );
    page.histogram(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &m.ttft,
    );
    page.histogram(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &m.e2e,
    );
    page.histogram(
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        &m.queue,
    );
    page.family(
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
    );
    page.sample(
        "vllm:request_success_total",
        "finished_reason=\"stop\"",
        m.success_stop.load(Relaxed),
    );
    page.sample(
        "vllm:request_success_total",
        "finished_reason=\"length\"",
        m.success_length.load(Relaxed),
    );
    page.sample(
        "vllm:request_success_total",
        "finished_reason=\"abort\"",
        m.success_abort.load(Relaxed),
    );
    page.counter(
        "vllm:prompt_tokens_total",
        "Number of prefill tokens processed.",
        m.prompt_tokens.load(Relaxed),
    );
    page.counter(
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        m.generation_tokens.load(Relaxed),
    );
}

pub(super) fn sglang(page: &mut Page, state: &State, model: &str) {
    let (m, load) = (&state.metrics, &state.load);
    page.labels = format!("model_name=\"{model}\"");
    page.gauge(
        "sglang:num_running_reqs",
        "The number of running requests.",
        load.running.load(Relaxed),
    );
    page.gauge(
        "sglang:num_queue_reqs",
        "The number of requests in the waiting queue.",
        load.waiting.load(Relaxed),
    );
    page.gauge("sglang:token_usage", "The token usage.", state.kv_usage());
    page.histogram(
        "sglang:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &m.ttft,
    );
    page.histogram(
        "sglang:e2e_request_latency_seconds",
        "Histogram of End-to-end request latency in seconds",
        &m.e2e,
    );
    page.counter(
        "sglang:prompt_tokens_total",
        "Number of prefill tokens processed.",
        m.prompt_tokens.load(Relaxed),
    );
    page.counter(
        "sglang:generation_tokens_total",
        "Number of generation tokens processed.",
        m.generation_tokens.load(Relaxed),
    );
    page.counter(
        "sglang:num_requests_total",
        "Number of requests processed.",
        m.successes(),
    );
}

pub(super) fn tgi(page: &mut Page, state: &State) {
    let (m, load) = (&state.metrics, &state.load);
    // TGI's exporter puts no model label on its series.
    page.gauge(
        "tgi_queue_size",
        "Current queue size",
        load.waiting.load(Relaxed),
    );
    page.gauge(
        "tgi_batch_current_size",
        "Current batch size",
        load.running.load(Relaxed),
    );
    page.histogram(
        "tgi_request_queue_duration",
        "Time spent in the queue per request",
        &m.queue,
    );
    page.histogram(
        "tgi_request_duration",
        "Total time spent per request",
        &m.e2e,
    );
    let total = m.successes() + m.failed.load(Relaxed);
    page.counter("tgi_request_count", "Total number of requests", total);
    page.counter(
        "tgi_request_success",
        "Number of successful requests",
        m.successes(),
    );
    page.counter(
        "tgi_request_failure",
        "Number of failed requests",
        m.failed.load(Relaxed),
    );
}

pub(super) fn triton(page: &mut Page, state: &State, model: &str) {
    let (m, load) = (&state.metrics, &state.load);
    page.labels = format!("model=\"{model}\",version=\"1\"");
    page.gauge(
        "nv_inference_pending_request_count",
        "Instantaneous number of pending requests awaiting execution per-model.",
        load.waiting.load(Relaxed),
    );
    page.counter(
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        m.queue_micros.load(Relaxed),
    );
    page.counter(
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes",
        m.successes(),
    );
    page.counter(
        "nv_inference_request_failure",
        "Number of failed inference requests, all batch sizes",
        m.failed.load(Relaxed),
    );
    let running = load.running.load(Relaxed) as u64;
    let max = state.args.max_concurrency as u64;
    page.family(
        "nv_trt_llm_request_metrics",
        "gauge",
        "TRT LLM request metrics",
    );
    page.sample(
        "nv_trt_llm_request_metrics",
        "request_type=\"active\"",
        running,
    );
    page.sample("nv_trt_llm_request_metrics", "request_type=\"max\"", max);
    page.sample(
        "nv_trt_llm_request_metrics",
        "request_type=\"scheduled\"",
        running,
    );
    page.sample(
        "nv_trt_llm_request_metrics",
        "request_type=\"waiting\"",
        load.waiting.load(Relaxed),
    );
    let capacity = state.args.kv_cache_tokens;
    let used = load.kv_tokens.load(Relaxed).min(capacity);
    page.family(
        "nv_trt_llm_kv_cache_block_metrics",
        "gauge",
        "TRT LLM KV cache block metrics",
    );
    page.sample(
        "nv_trt_llm_kv_cache_block_metrics",
        "kv_cache_block_type=\"max\"",
        capacity,
    );
    page.sample(
        "nv_trt_llm_kv_cache_block_metrics",
        "kv_cache_block_type=\"used\"",
        used,
    );
    page.sample(
        "nv_trt_llm_kv_cache_block_metrics",
        "kv_cache_block_type=\"free\"",
        capacity - used,
    );
    page.sample(
        "nv_trt_llm_kv_cache_block_metrics",
        "kv_cache_block_type=\"tokens_per\"",
        1,
    );
    page.sample(
        "nv_trt_llm_kv_cache_block_metrics",
        "kv_cache_block_type=\"fraction\"",
        state.kv_usage(),
    );
    let (gpu_used, gpu_total) = state.gpu_memory();
    page.labels = format!("gpu_uuid=\"{}\"", state.gpu_uuid);
    page.gauge(
        "nv_gpu_memory_total_bytes",
        "GPU total memory, in bytes",
        gpu_total,
    );
    page.gauge(
        "nv_gpu_memory_used_bytes",
        "GPU used memory, in bytes",
        gpu_used,
    );
}
