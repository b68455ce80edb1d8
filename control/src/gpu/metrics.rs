//! `rollgate_gpu_…` metrics, set from each published snapshot.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::snapshot::GpuSnapshot;

/// One device. Bounded: a node has a handful of GPUs, and uuid/name are fixed per device.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GpuLabels {
    gpu: u32,
    uuid: String,
    name: String,
}

/// One compute process on one device. Bounded by what fits on the node's GPUs; series of
/// exited processes are removed at the next refresh.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProcessLabels {
    gpu: u32,
    pid: u32,
}

/// Handles to the registered metrics, owned by the refresh loop (the only writer).
#[derive(Debug)]
pub(crate) struct GpuMetrics {
    available: Gauge,
    devices: Gauge,
    memory_used: Family<GpuLabels, Gauge>,
    memory_total: Family<GpuLabels, Gauge>,
    used_ratio: Family<GpuLabels, Gauge<f64, AtomicU64>>,
    process_memory: Family<ProcessLabels, Gauge>,
    refresh_errors: Counter,
    /// Series set last time, so a vanished GPU or process is removed rather than frozen.
    shown_gpus: HashSet<GpuLabels>,
    shown_processes: HashSet<ProcessLabels>,
}

// === impl GpuMetrics ===

impl GpuMetrics {
    /// Registers under `rollgate_gpu_`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            available: Gauge::default(),
            devices: Gauge::default(),
            memory_used: Family::default(),
            memory_total: Family::default(),
            used_ratio: Family::default(),
            process_memory: Family::default(),
            refresh_errors: Counter::default(),
            shown_gpus: HashSet::new(),
            shown_processes: HashSet::new(),
        };
        let reg = registry.sub_registry_with_prefix("rollgate_gpu");
        reg.register(
            "available",
            "1 when the last refresh read every GPU through NVML, else 0 (see /gpus for why)",
            m.available.clone(),
        );
        // Not `count`: promtool rejects a `_count` suffix outside histograms and summaries.
        reg.register(
            "devices",
            "GPUs read by the last refresh, 0 when unavailable",
            m.devices.clone(),
        );
        reg.register(
            "memory_used_bytes",
            "GPU memory in use, bytes",
            m.memory_used.clone(),
        );
        reg.register(
            "memory_total_bytes",
            "GPU memory installed, bytes",
            m.memory_total.clone(),
        );
        reg.register(
            "memory_used_ratio",
            "GPU memory in use over memory installed, 0 to 1",
            m.used_ratio.clone(),
        );
        reg.register(
            "process_memory_bytes",
            "GPU memory used by one compute process, bytes",
            m.process_memory.clone(),
        );
        reg.register(
            "refresh_errors",
            "Refreshes that failed with NVML loaded (read error, timeout); no-GPU is not an error",
            m.refresh_errors.clone(),
        );
        m
    }

    /// Makes the per-GPU series match `snap` exactly.
    pub(crate) fn publish(&mut self, snap: &GpuSnapshot) {
        self.available.set(i64::from(snap.available));
        self.devices
            .set(i64::try_from(snap.gpus.len()).unwrap_or(i64::MAX));
        let mut gpus = HashSet::new();
        let mut processes = HashSet::new();
        for g in &snap.gpus {
            let labels = GpuLabels {
                gpu: g.index,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
            };
            self.memory_used
                .get_or_create(&labels)
                .set(bytes(g.memory_used_bytes));
            self.memory_total
                .get_or_create(&labels)
                .set(bytes(g.memory_total_bytes));
            match g.memory_used_ratio() {
                Some(r) => {
                    self.used_ratio.get_or_create(&labels).set(r);
                }
                None => {
                    self.used_ratio.remove(&labels);
                }
            }
            gpus.insert(labels);
            for p in &g.processes {
                let Some(used) = p.memory_used_bytes else {
                    continue;
                };
                let labels = ProcessLabels {
                    gpu: g.index,
                    pid: p.pid,
                };
                self.process_memory.get_or_create(&labels).set(bytes(used));
                processes.insert(labels);
            }
        }
        for gone in self.shown_gpus.difference(&gpus) {
            self.memory_used.remove(gone);
            self.memory_total.remove(gone);
            self.used_ratio.remove(gone);
        }
        for gone in self.shown_processes.difference(&processes) {
            self.process_memory.remove(gone);
        }
        self.shown_gpus = gpus;
        self.shown_processes = processes;
    }

    pub(crate) fn refresh_failed(&self) {
        self.refresh_errors.inc();
    }
}

/// Gauges are i64; no GPU has 8 EiB, but saturate rather than wrap.
fn bytes(b: u64) -> i64 {
    i64::try_from(b).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::snapshot::{GpuInfo, GpuProcess};

    fn gpu(index: u32, pids: &[u32]) -> GpuInfo {
        GpuInfo {
            index,
            uuid: format!("GPU-{index}"),
            name: "Test GPU".into(),
            memory_used_bytes: 1,
            memory_total_bytes: 4,
            memory_free_bytes: 3,
            utilization_gpu_percent: None,
            processes: pids
                .iter()
                .map(|&pid| GpuProcess {
                    pid,
                    memory_used_bytes: Some(1),
                })
                .collect(),
        }
    }

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn vanished_gpus_and_processes_lose_their_series() {
        let mut registry = Registry::default();
        let mut m = GpuMetrics::register(&mut registry);
        let at = "2024-01-01T00:00:00.000Z".to_owned();
        m.publish(&GpuSnapshot::read(
            vec![gpu(0, &[7, 8]), gpu(1, &[])],
            at.clone(),
        ));
        let text = encode(&registry);
        assert!(text.contains("pid=\"8\""), "{text}");
        assert!(text.contains("gpu=\"1\",uuid=\"GPU-1\""), "{text}");

        m.publish(&GpuSnapshot::read(vec![gpu(0, &[7])], at));
        let text = encode(&registry);
        assert!(text.contains("pid=\"7\""), "{text}");
        assert!(!text.contains("pid=\"8\""), "{text}");
        assert!(!text.contains("GPU-1"), "{text}");
        assert!(text.contains("rollgate_gpu_devices 1"), "{text}");
    }
}
