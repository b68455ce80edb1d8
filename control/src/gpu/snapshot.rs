//! What one refresh saw: the `/gpus` document, and the values the metrics are set from.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// `2024-03-09T17:04:05.123Z`, without a date crate: days to civil date after Howard Hinnant's
/// `civil_from_days` (proleptic Gregorian). Times before 1970 print as the epoch; the agent
/// only stamps "now".
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        let at = |s: u64, ms: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.005Z"),
            (1_709_999_999, 999, "2024-03-09T15:59:59.999Z"),
            (4_107_542_400, 0, "2100-03-01T00:00:00.000Z"),
        ];
        for (secs, ms, want) in cases {
            assert_eq!(at(secs, ms), want, "{secs}s");
        }
    }

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
