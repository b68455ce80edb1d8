//! Model-server load signals: one [`EngineReading`] per scrape of an engine's `/metrics`, read
//! through a per-engine alias table so that gates see one vocabulary whatever the engine and
//! its version.
//!
//! Aggregation follows the engines' own layout: counts (queue, running, requests) are summed
//! across the `engine`/rank labels of data-parallel workers, usage fractions take the maximum
//! (the fullest worker is the one that will refuse work first), histograms add bucket-wise.

use std::collections::HashMap;

use serde::Serialize;

use super::promtext::Sample;

use self::profile::{GpuSource, Profile, Series, Usage, GPU_AGENT_AVAILABLE, GPU_SOURCES};

mod hist;
mod profile;
mod scrape;

pub use hist::Hist;
pub(crate) use scrape::chain;
pub use scrape::{ScrapeError, Scraper, DEFAULT_SCRAPE_TIMEOUT};

/// The model server's engine; the same names as the gateway config's `Engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Vllm,
    Sglang,
    Tgi,
    Triton,
    /// Any other OpenAI-compatible server: GPU memory only, from an agent on the same page.
    Openai,
}

/// What one scrape says about load. `None` means the page does not carry that signal (the
/// engine has no such metric, or this version does not serve it) — never "zero".
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EngineReading {
    /// Requests waiting for a slot.
    pub queue_depth: Option<f64>,
    /// Requests being generated.
    pub running: Option<f64>,
    /// KV-cache usage, 0..1.
    pub kv_cache_usage: Option<f64>,
    /// Time spent queued, in seconds, where the engine keeps a histogram.
    pub queue_time: Option<Hist>,
    /// Where the engine keeps a cumulative counter instead (Triton): total seconds queued…
    pub queue_time_total_seconds: Option<f64>,
    /// …and the requests that time belongs to; see [`EngineReading::queue_time_mean_since`].
    pub queue_count: Option<f64>,
    /// Time to first token, in seconds.
    pub ttft: Option<Hist>,
    /// Summed over the GPUs the page reports.
    pub gpu_memory_used_bytes: Option<f64>,
    pub gpu_memory_total_bytes: Option<f64>,
    /// A `rollgate gpu-agent`'s `rollgate_gpu_available` on the page: `Some(false)` when it
    /// has no GPU reading (no GPU, no NVML; its `/gpus` says why).
    pub gpu_agent_available: Option<bool>,
}

/// `(le, cumulative count)` pairs of one histogram series.
type Buckets = Vec<(f64, f64)>;

/// The samples of one page, by name, after the model filter.
struct Page<'a> {
    by_name: HashMap<&'a str, Vec<&'a Sample>>,
}

// === impl Engine ===

impl From<rollgate_config::Engine> for Engine {
    fn from(e: rollgate_config::Engine) -> Engine {
        match e {
            rollgate_config::Engine::Vllm => Engine::Vllm,
            rollgate_config::Engine::Sglang => Engine::Sglang,
            rollgate_config::Engine::Tgi => Engine::Tgi,
            rollgate_config::Engine::Triton => Engine::Triton,
            rollgate_config::Engine::Openai => Engine::Openai,
        }
    }
}

impl Engine {
    pub const ALL: [Engine; 5] = [
        Self::Vllm,
        Self::Sglang,
        Self::Tgi,
        Self::Triton,
        Self::Openai,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vllm => "vllm",
            Self::Sglang => "sglang",
            Self::Tgi => "tgi",
            Self::Triton => "triton",
            Self::Openai => "openai",
        }
    }

    /// The label naming the served model on this engine's series, if it has one.
    pub fn model_label(self) -> Option<&'static str> {
        Profile::of(self).model_label
    }

    /// Whether a series named `name` can feed any signal for this engine.
    pub fn wants(self, name: &str) -> bool {
        Profile::of(self).wants(name)
    }
}

// === impl EngineReading ===

impl EngineReading {
    /// Reads one page. With `model`, engine series labelled with another model are ignored
    /// (unlabelled ones are kept: TGI labels nothing). GPU memory is per device, not per model,
    /// so the filter never applies to it.
    pub fn from_samples(samples: &[Sample], engine: Engine, model: Option<&str>) -> Self {
        let profile = Profile::of(engine);
        let filter = profile.model_label.zip(model);
        let page = &Page::new(samples, filter);
        let unfiltered;
        let device_page = match filter {
            Some(_) => {
                unfiltered = Page::new(samples, None);
                &unfiltered
            }
            None => page,
        };
        let gpu = device_page.gpu_memory();
        let (gpu_used, gpu_total) = gpu.unzip();
        let (queue_total, queue_count) = page.queue_counter(profile).unzip();
        Self {
            queue_depth: first(profile.queue_depth, |s| page.sum(s)),
            running: first(profile.running, |s| page.sum(s)),
            kv_cache_usage: first(profile.kv_cache_usage, |u| page.usage(u)),
            queue_time: first(profile.queue_time, |base| page.hist(base)),
            queue_time_total_seconds: queue_total,
            queue_count,
            ttft: first(profile.ttft, |base| page.hist(base)),
            gpu_memory_used_bytes: gpu_used,
            gpu_memory_total_bytes: gpu_total,
            gpu_agent_available: device_page.max_name(GPU_AGENT_AVAILABLE).map(|v| v > 0.0),
        }
    }

    /// Used share of GPU memory, 0..1.
    pub fn gpu_memory_ratio(&self) -> Option<f64> {
        let (used, total) = (self.gpu_memory_used_bytes?, self.gpu_memory_total_bytes?);
        (total > 0.0).then(|| used / total)
    }

    /// Mean queue time in seconds of the requests finished between `earlier` and `self`, from the
    /// histogram where there is one, else from Triton's counters. A reset (the server restarted)
    /// makes `self` the whole window. `None` when nothing finished in the window.
    pub fn queue_time_mean_since(&self, earlier: &EngineReading) -> Option<f64> {
        if let Some(now) = &self.queue_time {
            return match &earlier.queue_time {
                Some(before) => now.since(before).mean(),
                None => now.mean(),
            };
        }
        let (total, count) = (self.queue_time_total_seconds?, self.queue_count?);
        let (total, count) = match (earlier.queue_time_total_seconds, earlier.queue_count) {
            (Some(t0), Some(c0)) if total >= t0 && count >= c0 => (total - t0, count - c0),
            _ => (total, count),
        };
        (count > 0.0).then(|| total / count)
    }
}

/// One reading for a backend of several endpoints: queue, running and request counters add up,
/// KV usage and the GPU memory ratio take the fullest endpoint, histograms merge.
///
/// Cumulative fields (histograms, Triton's counters) of a combined reading only make a sound
/// window if the same endpoints answered both times: one failed scrape looks like a counter
/// reset. For windows, take [`Hist::since`] or [`EngineReading::queue_time_mean_since`] per
/// endpoint first, then combine the windows.
pub fn combine(readings: &[EngineReading]) -> EngineReading {
    let total = |f: fn(&EngineReading) -> Option<f64>| sum(readings.iter().filter_map(f));
    let merge = |f: fn(&EngineReading) -> Option<&Hist>| {
        readings
            .iter()
            .filter_map(f)
            .fold(None, |acc: Option<Hist>, h| {
                Some(acc.map_or_else(|| h.clone(), |a| a.merge(h)))
            })
    };
    // Used and total travel together so that their ratio is the fullest endpoint's.
    let gpu = readings
        .iter()
        .filter_map(|r| Some((r.gpu_memory_ratio()?, r)))
        .fold(
            None,
            |acc: Option<(f64, &EngineReading)>, (ratio, r)| match acc {
                Some((best, _)) if best >= ratio => acc,
                _ => Some((ratio, r)),
            },
        );
    EngineReading {
        queue_depth: total(|r| r.queue_depth),
        running: total(|r| r.running),
        kv_cache_usage: max(readings.iter().filter_map(|r| r.kv_cache_usage)),
        queue_time: merge(|r| r.queue_time.as_ref()),
        queue_time_total_seconds: total(|r| r.queue_time_total_seconds),
        queue_count: total(|r| r.queue_count),
        ttft: merge(|r| r.ttft.as_ref()),
        gpu_memory_used_bytes: gpu.and_then(|(_, r)| r.gpu_memory_used_bytes),
        gpu_memory_total_bytes: gpu.and_then(|(_, r)| r.gpu_memory_total_bytes),
        // Unavailable when any agent is.
        gpu_agent_available: readings
            .iter()
            .filter_map(|r| r.gpu_agent_available)
            .reduce(|a, b| a && b),
    }
}

fn sum(values: impl Iterator<Item = f64>) -> Option<f64> {
    values.fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

fn max(values: impl Iterator<Item = f64>) -> Option<f64> {
    values.fold(None, |acc, v| Some(acc.map_or(v, |a: f64| a.max(v))))
}

/// The first alias that yields a value.
fn first<T, R>(aliases: &[T], read: impl Fn(&T) -> Option<R>) -> Option<R> {
    aliases.iter().find_map(read)
}

// === impl Page ===

impl<'a> Page<'a> {
    /// `filter` is `(label, model)`: samples carrying `label` with another value are dropped.
    fn new(samples: &'a [Sample], filter: Option<(&str, &str)>) -> Self {
        let mut by_name: HashMap<&'a str, Vec<&'a Sample>> = HashMap::new();
        for s in samples {
            let other_model =
                filter.is_some_and(|(label, model)| s.label(label).is_some_and(|v| v != model));
            if !other_model {
                by_name.entry(s.name.as_str()).or_default().push(s);
            }
        }
        Self { by_name }
    }

    /// Samples named `name` (with `pin`'s label value, if any) that have a usable value. A NaN
    /// or infinite gauge is an engine bug, not a reading; it is skipped rather than poisoning a
    /// sum.
    fn values<'s>(
        &'s self,
        name: &str,
        pin: Option<(&'s str, &'s str)>,
    ) -> impl Iterator<Item = f64> + 's {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |s| pin.is_none_or(|(label, value)| s.label(label) == Some(value)))
            .map(|s| s.value)
            .filter(|v| v.is_finite())
    }

    fn sum(&self, series: &Series) -> Option<f64> {
        sum(self.values(series.name, series.pin))
    }

    fn sum_name(&self, name: &str) -> Option<f64> {
        sum(self.values(name, None))
    }

    fn max_name(&self, name: &str) -> Option<f64> {
        max(self.values(name, None))
    }

    fn max(&self, series: &Series) -> Option<f64> {
        max(self.values(series.name, series.pin))
    }

    /// `(used, total)` bytes from the first source on the page.
    fn gpu_memory(&self) -> Option<(f64, f64)> {
        GPU_SOURCES.iter().find_map(|source| match *source {
            GpuSource::UsedTotal { used, total, unit } => {
                Some((self.sum_name(used)? * unit, self.sum_name(total)? * unit))
            }
            GpuSource::UsedFree {
                used,
                free,
                reserved,
                unit,
            } => {
                let taken = self.sum_name(used)? + self.sum_name(reserved).unwrap_or(0.0);
                let free = self.sum_name(free)?;
                Some((taken * unit, (taken + free) * unit))
            }
        })
    }

    /// Triton's cumulative queue time in seconds and the request count it covers.
    fn queue_counter(&self, profile: &Profile) -> Option<(f64, f64)> {
        let (total, unit, count) = profile.queue_counter?;
        Some((self.sum_name(total)? * unit, self.sum_name(count)?))
    }

    fn usage(&self, usage: &Usage) -> Option<f64> {
        match usage {
            Usage::Fraction(series) => self.max(series),
            Usage::Ratio { used, capacity } => {
                let (used, capacity) = (self.sum(used)?, self.sum(capacity)?);
                (capacity > 0.0).then(|| used / capacity)
            }
        }
    }

    /// The histogram `base`, merged across its series (one per data-parallel worker).
    fn hist(&self, base: &str) -> Option<Hist> {
        let buckets = self.by_name.get(format!("{base}_bucket").as_str())?;
        // Group by every label but `le`; each group is one worker's histogram.
        let mut groups: HashMap<Vec<(&str, &str)>, Buckets> = HashMap::new();
        for s in buckets {
            let Some(le) = s.label("le").and_then(|le| le.parse::<f64>().ok()) else {
                continue;
            };
            let mut key: Vec<(&str, &str)> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            key.sort_unstable();
            groups.entry(key).or_default().push((le, s.value));
        }
        let mut merged: Option<Hist> = None;
        for (_, mut buckets) in groups {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let h = Hist {
                buckets,
                sum: 0.0,
                count: 0.0,
            };
            merged = Some(match merged {
                Some(m) => m.merge(&h),
                None => h,
            });
        }
        let mut hist = merged?;
        hist.sum = self.sum_name(&format!("{base}_sum")).unwrap_or(0.0);
        hist.count = self
            .sum_name(&format!("{base}_count"))
            .or_else(|| hist.buckets.last().map(|b| b.1))
            .unwrap_or(0.0);
        Some(hist)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests;
