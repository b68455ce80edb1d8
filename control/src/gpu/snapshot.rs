//! What one refresh saw: the `/gpus` document, and the values the metrics are set from.

use serde::{Deserialize, Serialize};

/// The `/gpus` document. `available` is true only when the last refresh read every GPU;
/// otherwise `reason` says why and `gpus` is empty, so a gate never acts on stale numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuSnapshot {
    pub available: bool,
    pub reason: Option<String>,
    /// RFC 3339 UTC time of the refresh that produced this snapshot; `null` before the first.
    pub refreshed_at: Option<String>,
    pub gpus: Vec<GpuInfo>,
}

/// One device as NVML reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
    /// `null` where the device does not support utilization sampling.
    pub utilization_gpu_percent: Option<u32>,
    pub processes: Vec<GpuProcess>,
}

/// One compute process (a CUDA context) on a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    /// `null` where the driver cannot attribute memory (NVML_VALUE_NOT_AVAILABLE).
    pub memory_used_bytes: Option<u64>,
}

// === impl GpuSnapshot ===

impl GpuSnapshot {
    /// Before the first refresh has answered.
    pub(crate) fn starting() -> Self {
        Self::unavailable("starting: first NVML read pending".to_owned(), None)
    }

    pub(crate) fn unavailable(reason: String, refreshed_at: Option<String>) -> Self {
        Self {
            available: false,
            reason: Some(reason),
            refreshed_at,
            gpus: Vec::new(),
        }
    }

    pub(crate) fn read(gpus: Vec<GpuInfo>, refreshed_at: String) -> Self {
        Self {
            available: true,
            reason: None,
            refreshed_at: Some(refreshed_at),
            gpus,
        }
    }
}

// === impl GpuInfo ===

impl GpuInfo {
    /// Used over total, `None` for a device that reports no memory (avoids NaN in metrics).
    pub fn memory_used_ratio(&self) -> Option<f64> {
        if self.memory_total_bytes == 0 {
            return None;
        }
        // Precision loss above 2^53 bytes (8 PiB) is irrelevant for a ratio.
        Some(self.memory_used_bytes as f64 / self.memory_total_bytes as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_of_an_empty_device_is_none() {
        let mut g = GpuInfo {
            index: 0,
            uuid: "GPU-x".into(),
            name: "x".into(),
            memory_used_bytes: 0,
            memory_total_bytes: 0,
            memory_free_bytes: 0,
            utilization_gpu_percent: None,
            processes: vec![],
        };
        assert_eq!(g.memory_used_ratio(), None);
        g.memory_used_bytes = 3;
        g.memory_total_bytes = 4;
        assert_eq!(g.memory_used_ratio(), Some(0.75));
    }
}
