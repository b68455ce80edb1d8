//! The alias table: which series each engine reports each signal under, across versions.
//!
//! Within a signal the aliases are tried in order and the first one present on the page wins;
//! they are never added together, because an engine in a rename transition may serve the old
//! and the new name side by side and summing would count everything twice.

use super::Engine;

/// One series: a name, optionally pinned to one value of one label (TRT-LLM multiplexes
/// several gauges into one name by a type label).
#[derive(Clone, Copy, Debug)]
pub(super) struct Series {
    pub name: &'static str,
    pub pin: Option<(&'static str, &'static str)>,
}

/// Where a 0..1 usage fraction comes from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Usage {
    /// A gauge that already is the fraction.
    Fraction(Series),
    /// `used / capacity`, for engines that only report the two counts.
    Ratio { used: Series, capacity: Series },
}

/// Where GPU memory comes from. Sources are tried in [`GPU_SOURCES`] order; used and total
/// always come from the same source.
#[derive(Clone, Copy, Debug)]
pub(super) enum GpuSource {
    UsedTotal {
        used: &'static str,
        total: &'static str,
        /// Bytes per reported unit.
        unit: f64,
    },
    /// DCGM reports used, free and (newer versions) reserved frame buffer, not a total.
    /// Reserved memory is unusable by the engine, so it counts as used: what a gate needs is the
    /// headroom, `free / total`.
    UsedFree {
        used: &'static str,
        free: &'static str,
        reserved: &'static str,
        unit: f64,
    },
}

/// One engine's names for every signal.
#[derive(Debug)]
pub(super) struct Profile {
    /// The label naming the served model, where the engine has one.
    pub model_label: Option<&'static str>,
    pub queue_depth: &'static [Series],
    pub running: &'static [Series],
    pub kv_cache_usage: &'static [Usage],
    /// Histogram base names (without `_bucket`).
    pub queue_time: &'static [&'static str],
    /// Triton's cumulative queue time: `(total, unit in seconds, count of requests)`.
    pub queue_counter: Option<(&'static str, f64, &'static str)>,
    pub ttft: &'static [&'static str],
}

const MIB: f64 = 1024.0 * 1024.0;

/// A `rollgate gpu-agent`'s gauge: 0 when it has no GPU reading (its `/gpus` says why).
pub(super) const GPU_AGENT_AVAILABLE: &str = "rollgate_gpu_available";

/// Every engine's page may carry GPU memory from an agent beside it; the order is most to least
/// trusted: our own NVML agent, the engine's own view, DCGM, and the simulator last so that a
/// real source always wins over a simulated one.
pub(super) const GPU_SOURCES: &[GpuSource] = &[
    GpuSource::UsedTotal {
        used: "rollgate_gpu_memory_used_bytes",
        total: "rollgate_gpu_memory_total_bytes",
        unit: 1.0,
    },
    GpuSource::UsedTotal {
        used: "nv_gpu_memory_used_bytes",
        total: "nv_gpu_memory_total_bytes",
        unit: 1.0,
    },
    GpuSource::UsedFree {
        used: "DCGM_FI_DEV_FB_USED",
        free: "DCGM_FI_DEV_FB_FREE",
        reserved: "DCGM_FI_DEV_FB_RESERVED",
        unit: MIB,
    },
    GpuSource::UsedTotal {
        used: "rollgate_sim_gpu_memory_used_bytes",
        total: "rollgate_sim_gpu_memory_total_bytes",
        unit: 1.0,
    },
];

const fn plain(name: &'static str) -> Series {
    Series { name, pin: None }
}

const fn pinned(name: &'static str, label: &'static str, value: &'static str) -> Series {
    Series {
        name,
        pin: Some((label, value)),
    }
}

const VLLM: Profile = Profile {
    model_label: Some("model_name"),
    queue_depth: &[plain("vllm:num_requests_waiting")],
    running: &[plain("vllm:num_requests_running")],
    // Renamed in vLLM V1 (0.10); the old name is what older deployments still serve.
    kv_cache_usage: &[
        Usage::Fraction(plain("vllm:kv_cache_usage_perc")),
        Usage::Fraction(plain("vllm:gpu_cache_usage_perc")),
    ],
    queue_time: &["vllm:request_queue_time_seconds"],
    queue_counter: None,
    ttft: &["vllm:time_to_first_token_seconds"],
};

const SGLANG: Profile = Profile {
    model_label: Some("model_name"),
    queue_depth: &[plain("sglang:num_queue_reqs")],
    running: &[plain("sglang:num_running_reqs")],
    kv_cache_usage: &[Usage::Fraction(plain("sglang:token_usage"))],
    queue_time: &[],
    queue_counter: None,
    ttft: &["sglang:time_to_first_token_seconds"],
};

const TGI: Profile = Profile {
    // TGI serves one model and labels nothing with it.
    model_label: None,
    queue_depth: &[plain("tgi_queue_size")],
    running: &[plain("tgi_batch_current_size")],
    kv_cache_usage: &[],
    queue_time: &["tgi_request_queue_duration"],
    queue_counter: None,
    ttft: &[],
};

const TRITON: Profile = Profile {
    model_label: Some("model"),
    queue_depth: &[
        plain("nv_inference_pending_request_count"),
        plain("trtllm_num_requests_waiting"),
    ],
    running: &[pinned(
        "nv_trt_llm_request_metrics",
        "request_type",
        "scheduled",
    )],
    // Older TRT-LLM backends report block counts but no fraction.
    kv_cache_usage: &[
        Usage::Fraction(pinned(
            "nv_trt_llm_kv_cache_block_metrics",
            "kv_cache_block_type",
            "fraction",
        )),
        Usage::Ratio {
            used: pinned(
                "nv_trt_llm_kv_cache_block_metrics",
                "kv_cache_block_type",
                "used",
            ),
            capacity: pinned(
                "nv_trt_llm_kv_cache_block_metrics",
                "kv_cache_block_type",
                "max",
            ),
        },
    ],
    queue_time: &[],
    queue_counter: Some((
        "nv_inference_queue_duration_us",
        1e-6,
        "nv_inference_request_success",
    )),
    ttft: &[],
};

/// A generic OpenAI-compatible server: no engine series, only GPU memory from an agent.
const OPENAI: Profile = Profile {
    model_label: None,
    queue_depth: &[],
    running: &[],
    kv_cache_usage: &[],
    queue_time: &[],
    queue_counter: None,
    ttft: &[],
};

// === impl Profile ===

impl Profile {
    pub fn of(engine: Engine) -> &'static Profile {
        match engine {
            Engine::Vllm => &VLLM,
            Engine::Sglang => &SGLANG,
            Engine::Tgi => &TGI,
            Engine::Triton => &TRITON,
            Engine::Openai => &OPENAI,
        }
    }

    /// Whether a sample named `name` can feed any signal of this profile; the parser skips the
    /// rest without allocating.
    pub fn wants(&self, name: &str) -> bool {
        let series = |list: &[Series]| list.iter().any(|s| s.name == name);
        let usage = self.kv_cache_usage.iter().any(|u| match u {
            Usage::Fraction(s) => s.name == name,
            Usage::Ratio { used, capacity } => used.name == name || capacity.name == name,
        });
        let hist = |bases: &[&str]| {
            ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| bases.contains(&base))
            })
        };
        let counter = self
            .queue_counter
            .is_some_and(|(total, _, count)| name == total || name == count);
        let gpu = name == GPU_AGENT_AVAILABLE
            || GPU_SOURCES.iter().any(|g| match *g {
                GpuSource::UsedTotal { used, total, .. } => name == used || name == total,
                GpuSource::UsedFree {
                    used,
                    free,
                    reserved,
                    ..
                } => name == used || name == free || name == reserved,
            });
        series(self.queue_depth)
            || series(self.running)
            || usage
            || hist(self.queue_time)
            || hist(self.ttft)
            || counter
            || gpu
    }
}
