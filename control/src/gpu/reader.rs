//! NVML access: a synchronous [`GpuReader`] that lives on its own OS thread, and the async
//! [`ReaderHandle`] the refresh loop asks for readings.
//!
//! NVML calls block (and can hang when a GPU falls off the bus). On tokio's blocking pool a
//! hung call would also hang runtime shutdown, so SIGTERM could not exit; a plain thread is
//! left behind at exit instead, and a timeout keeps the agent answering meanwhile.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use tokio::sync::{mpsc, oneshot};

use super::snapshot::{GpuInfo, GpuProcess};

/// The library nvml-wrapper opens when no path is given (resolved by the dynamic loader).
const DEFAULT_LIB: &str = "libnvidia-ml.so.1";

/// What one read found.
#[derive(Debug, PartialEq)]
pub(crate) enum Reading {
    /// NVML answered for every device.
    Gpus(Vec<GpuInfo>),
    /// No usable NVML: library missing, init failed, or no devices. A normal state.
    NoGpu(String),
    /// NVML is up but a read failed, timed out, or the reader is gone. Counted as an error.
    Failed(String),
}

/// Owns the NVML handle; initialises it lazily so a driver that appears later is picked up.
pub(crate) struct GpuReader {
    lib_path: Option<PathBuf>,
    nvml: Option<Nvml>,
}

/// Asks the reader thread for readings. One request in flight at most, so a hung NVML call
/// cannot pile up requests behind it.
#[derive(Debug)]
pub(crate) struct ReaderHandle {
    requests: mpsc::Sender<oneshot::Sender<Reading>>,
}

// === impl GpuReader ===

impl GpuReader {
    pub(crate) fn new(lib_path: Option<PathBuf>) -> Self {
        Self {
            lib_path,
            nvml: None,
        }
    }

    /// Initialises NVML if needed, then reads every device.
    pub(crate) fn read(&mut self) -> Reading {
        let nvml = match self.nvml.take() {
            Some(nvml) => nvml,
            None => match self.init() {
                Ok(nvml) => nvml,
                Err(reason) => return Reading::NoGpu(reason),
            },
        };
        match read_all(&nvml) {
            // Dropping the handle shuts NVML down; the next read after the retry delay
            // initialises again, in case devices appear.
            Ok(gpus) if gpus.is_empty() => Reading::NoGpu("NVML reports 0 GPUs".to_owned()),
            Ok(gpus) => {
                self.nvml = Some(nvml);
                Reading::Gpus(gpus)
            }
            Err(e) => {
                self.nvml = Some(nvml);
                Reading::Failed(e)
            }
        }
    }

    fn init(&self) -> Result<Nvml, String> {
        let lib = self
            .lib_path
            .as_deref()
            .map_or(OsStr::new(DEFAULT_LIB), |p| p.as_os_str());
        let res = match &self.lib_path {
            Some(path) => Nvml::builder().lib_path(path.as_os_str()).init(),
            None => Nvml::init(),
        };
        res.map_err(|e| match e {
            // The loader's message names the file it tried.
            NvmlError::LibloadingError(e) => format!("cannot load NVML: {e}"),
            NvmlError::FailedToLoadSymbol(e) => format!(
                "{} is not a usable NVML library: {e}",
                lib.to_string_lossy()
            ),
            other => format!("NVML init failed: {other}"),
        })
    }
}

/// Every device, or the first error: a partial picture would under-report memory.
fn read_all(nvml: &Nvml) -> Result<Vec<GpuInfo>, String> {
    let count = nvml
        .device_count()
        .map_err(|e| format!("counting GPUs: {e}"))?;
    (0..count)
        .map(|i| {
            let dev = nvml
                .device_by_index(i)
                .map_err(|e| format!("GPU {i}: opening: {e}"))?;
            read_device(i, &dev).map_err(|e| format!("GPU {i}: {e}"))
        })
        .collect()
}

fn read_device(index: u32, dev: &Device<'_>) -> Result<GpuInfo, String> {
    let uuid = dev.uuid().map_err(|e| format!("uuid: {e}"))?;
    let name = dev.name().map_err(|e| format!("name: {e}"))?;
    let mem = dev.memory_info().map_err(|e| format!("memory: {e}"))?;
    // Utilization is informative only; many parts (MIG, some vGPU) do not support it.
    let utilization_gpu_percent = dev.utilization_rates().ok().map(|u| u.gpu);
    Ok(GpuInfo {
        index,
        uuid,
        name,
        memory_used_bytes: mem.used,
        memory_total_bytes: mem.total,
        memory_free_bytes: mem.free,
        utilization_gpu_percent,
        processes: read_processes(index, dev),
    })
}

/// Best effort: memory is what gates, and process listing is refused in some containers.
fn read_processes(index: u32, dev: &Device<'_>) -> Vec<GpuProcess> {
    match dev.running_compute_processes() {
        Ok(procs) => procs
            .into_iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                memory_used_bytes: match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                },
            })
            .collect(),
        Err(e) => {
            tracing::debug!(gpu = index, error = %e, "cannot list compute processes");
            Vec::new()
        }
    }
}

// === impl ReaderHandle ===

impl ReaderHandle {
    /// Moves `reader` onto its own thread. The thread ends, shutting NVML down, when the
    /// handle is dropped and no read is in progress.
    pub(crate) fn spawn(mut reader: GpuReader) -> std::io::Result<Self> {
        let (requests, mut rx) = mpsc::channel::<oneshot::Sender<Reading>>(1);
        thread::Builder::new()
            .name("rollgate-nvml".to_owned())
            .spawn(move || {
                while let Some(reply) = rx.blocking_recv() {
                    // The asker may have timed out and gone; the reading is simply dropped.
                    let _ = reply.send(reader.read());
                }
            })?;
        Ok(Self { requests })
    }

    /// One reading, or `Failed` when the thread is busy, gone, or slower than `timeout`.
    pub(crate) async fn read(&self, timeout: Duration) -> Reading {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.requests.try_send(tx) {
            return Reading::Failed(match e {
                mpsc::error::TrySendError::Full(_) => "previous NVML read still running".into(),
                mpsc::error::TrySendError::Closed(_) => "NVML reader thread stopped".into(),
            });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reading)) => reading,
            Ok(Err(_)) => Reading::Failed("NVML reader thread stopped".into()),
            Err(_) => Reading::Failed(format!("NVML read timed out after {timeout:?}")),
        }
    }
}
