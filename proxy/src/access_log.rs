//! The access log (`access_log:`): one JSON line per request, written by a thread of its own.
//!
//! A request's line is built in a buffer of its own on the worker — what is known when the
//! route is found (start time, method, path, model, `x-request-id`) first, the outcome
//! (variant, status, times, bytes) when the exchange ends — and handed to the writer through a
//! bounded channel. A full channel drops the line and counts it, so a slow disk never holds a
//! request. Senders never wake the writer: it wakes every [`TICK`], writes what came and
//! flushes, so a line reaches the file within about 100 ms. Every second it also checks that the
//! configured path still names the file it has open; when the file was moved or removed (a
//! rotation) it flushes to the old one and opens a new one at the path.
//!
//! With `access_log` unset nothing of this runs: a request pays one check of the config.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rollgate_config::{AccessLog as Target, Config};
use tokio::time::Instant;

use crate::split::Variant;

/// Lines waiting for the writer; more are dropped and counted.
pub(crate) const QUEUE: usize = 65_536;
/// How often the writer wakes to write and flush.
const TICK: Duration = Duration::from_millis(100);
/// How often, in ticks, the writer checks that its file is still at the configured path.
const ROTATION_TICKS: u32 = 10;
/// A line's buffer to begin with: a chat request's line is about 350 bytes.
const LINE: usize = 512;

/// The access log of one data plane; the writer starts with the first config that asks for it.
#[derive(Debug, Default)]
pub(crate) struct AccessLog {
    writer: OnceLock<Arc<Writer>>,
    pub(crate) counts: Arc<Counts>,
}

/// `rollgate_proxy_access_log_lines_total{outcome}`.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) written: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

#[derive(Debug)]
struct Writer {
    tx: SyncSender<Vec<u8>>,
    /// Where lines go now; the writer reopens when it changes (a reload).
    target: Mutex<Option<Target>>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    counts: Arc<Counts>,
}

/// One request's line, begun when its route is known.
#[derive(Debug)]
pub(crate) struct Entry {
    line: Vec<u8>,
    writer: Arc<Writer>,
    /// The request's start: the line's times are the user's, from here (a fallback's wait
    /// for the candidate included).
    origin: Instant,
    /// The candidate could not take it and stable answered (`routing.candidate_fallback`).
    pub(crate) fell_back: bool,
    /// The variant chosen, for a line the gateway ends itself (its 502 for a failed backend).
    pub(crate) variant: Option<Variant>,
    has_model: bool,
    /// Response body bytes relayed; time to the first of them and to the first SSE event.
    bytes: u64,
    ttfb: Option<Duration>,
    ttft: Option<Duration>,
}

/// How a request ended, for its line.
pub(crate) struct End<'a> {
    /// Who answered; `None` for the gateway's own answers made before a backend was chosen.
    pub(crate) variant: Option<Variant>,
    /// 0: no answer was sent (the client went away first).
    pub(crate) status: u16,
    pub(crate) endpoint: Option<&'a str>,
    pub(crate) end: Instant,
    /// A stream that broke after its head, or `cancelled` (the client went away).
    pub(crate) failure: Option<&'static str>,
    /// The gateway answered itself (`rollgate_proxy_rejected_total`'s reason).
    pub(crate) error: Option<&'static str>,
}

// === impl AccessLog ===

impl AccessLog {
    /// Points the log at `target` (every config applied comes here, under the publish lock),
    /// starting the writer the first time one is set.
    pub(crate) fn configure(&self, target: Option<&Target>) {
        if target.is_none() && self.writer.get().is_none() {
            return;
        }
        let writer = self
            .writer
            .get_or_init(|| Writer::start(self.counts.clone()));
        *writer.target.lock().unwrap_or_else(PoisonError::into_inner) = target.cloned();
    }

    /// A line for a request, when `cfg` asks for one.
    /// `origin`: the request's start.
    /// Boxed: off, a request carries one word for it.
    pub(crate) fn entry(&self, cfg: &Config, origin: Instant) -> Option<Box<Entry>> {
        cfg.access_log.as_ref()?;
        let writer = self.writer.get()?.clone();
        Some(Box::new(Entry {
            line: Vec::with_capacity(LINE),
            writer,
            origin,
            fell_back: false,
            variant: None,
            has_model: false,
            bytes: 0,
            ttfb: None,
            ttft: None,
        }))
    }

    /// Writes what is queued and stops the writer (the process is exiting).
    pub(crate) fn close(&self) {
        let Some(w) = self.writer.get() else {
            return;
        };
        w.stop.store(true, Relaxed);
        let thread = w
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

// === impl Writer ===

impl Writer {
    fn start(counts: Arc<Counts>) -> Arc<Writer> {
        let (tx, rx) = sync_channel(QUEUE);
        let w = Arc::new(Writer {
            tx,
            target: Mutex::new(None),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            counts,
        });
        let run = w.clone();
        let spawned = std::thread::Builder::new()
            .name("rollgate-access-log".into())
            .spawn(move || run.run(&rx));
        match spawned {
            Ok(t) => *w.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(t),
            // Lines then wait in the channel until it is full, and are dropped and counted.
            Err(e) => tracing::error!(error = %e, "access log: cannot start its writer thread"),
        }
        w
    }

    fn run(&self, rx: &Receiver<Vec<u8>>) {
        let mut open: Option<(Target, Box<dyn Write>)> = None;
        // The open file's identity (device, inode), to notice that it was rotated away.
        let mut opened: Option<(u64, u64)> = None;
        let mut batch = Vec::with_capacity(64 * 1024);
        let mut ticks = 0u32;
        loop {
            let stopping = self.stop.load(Relaxed);
            ticks = ticks.wrapping_add(1);
            if ticks % ROTATION_TICKS == 0 {
                if let (Some((Target::File(path), w)), Some(id)) = (open.as_mut(), opened) {
                    if identity(path).ok() != Some(id) {
                        // Moved or removed (logrotate's `create`, a `mv` by hand): what is
                        // buffered goes to the old file, the next lines to a new one.
                        let _ = w.flush();
                        tracing::info!(to = %path.display(), "access log: the file was moved or removed; reopening");
                        open = None;
                    }
                }
            }
            let want = self
                .target
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if open.as_ref().map(|(t, _)| t) != want.as_ref() {
                open = want.and_then(|t| match sink(&t) {
                    Ok(w) => {
                        tracing::info!(to = %t, "access log: writing");
                        opened = match &t {
                            Target::File(path) => identity(path).ok(),
                            Target::Stdout => None,
                        };
                        Some((t, w))
                    }
                    Err(e) => {
                        tracing::error!(to = %t, error = %e, "access log: cannot open; lines are dropped and counted");
                        None
                    }
                });
            }
            let mut lines = 0u64;
            for line in rx.try_iter() {
                batch.extend_from_slice(&line);
                lines += 1;
                if batch.len() >= 64 * 1024 {
                    self.write(&mut open, &mut batch, lines);
                    lines = 0;
                }
            }
            self.write(&mut open, &mut batch, lines);
            if let Some((_, w)) = open.as_mut() {
                let _ = w.flush();
            }
            if stopping {
                return;
            }
            std::thread::park_timeout(TICK);
        }
    }

    /// Writes `batch` (`lines` lines) to the open sink, or counts them dropped.
    fn write(&self, open: &mut Option<(Target, Box<dyn Write>)>, batch: &mut Vec<u8>, lines: u64) {
        if lines == 0 {
            return;
        }
        let written = match open.as_mut() {
            Some((t, w)) => match w.write_all(batch) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(to = %t, error = %e, "access log: write failed; lines dropped and counted");
                    false
                }
            },
            None => false,
        };
        let count = if written {
            &self.counts.written
        } else {
            &self.counts.dropped
        };
        count.fetch_add(lines, Relaxed);
        batch.clear();
    }
}

/// The device and inode of the file at `path`.
fn identity(path: &std::path::Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

fn sink(t: &Target) -> io::Result<Box<dyn Write>> {
    Ok(match t {
        Target::Stdout => Box::new(io::stdout()),
        Target::File(path) => {
            // Its directory too, as the audit log's and the state's are made.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file: File = OpenOptions::new().create(true).append(true).open(path)?;
            Box::new(io::BufWriter::with_capacity(64 * 1024, file))
        }
    })
}

// === impl Entry ===

impl Entry {
    /// The request's part of the line: its start (wall clock), method, path (without the
    /// query, which may carry credentials) and `x-request-id`.
    pub(crate) fn begin(
        &mut self,
        at: SystemTime,
        method: &str,
        path: &str,
        request_id: Option<&[u8]>,
    ) {
        let l = &mut self.line;
        l.extend_from_slice(b"{\"time\":\"");
        crate::clock::write_rfc3339_millis(l, at);
        l.extend_from_slice(b"\",\"method\":");
        string(l, method);
        l.extend_from_slice(b",\"path\":");
        string(l, path);
        l.extend_from_slice(b",\"request_id\":");
        match request_id {
            Some(id) => string(l, &String::from_utf8_lossy(id)),
            None => l.extend_from_slice(b"null"),
        }
    }

    /// The model the request was routed as (once known; `null` in the line if never).
    pub(crate) fn model(&mut self, name: &str) {
        if !self.has_model {
            self.has_model = true;
            self.line.extend_from_slice(b",\"model\":");
            string(&mut self.line, name);
        }
    }

    /// Body bytes relayed at `now`: the first of the response, the first SSE event, or more.
    pub(crate) fn on_data(&mut self, n: usize, first_byte: bool, first_event: bool, now: Instant) {
        self.bytes += n as u64;
        let t = now.saturating_duration_since(self.origin);
        if first_byte {
            self.ttfb = Some(t);
        }
        if first_event {
            self.ttft = Some(t);
        }
    }

    /// Completes the line of a request the gateway answered itself (`error`: the rejection's
    /// reason; `status` 0 with `failure` when the client went away before an answer).
    pub(crate) fn finish_here(
        &mut self,
        variant: Option<Variant>,
        status: u16,
        error: Option<&'static str>,
        failure: Option<&'static str>,
    ) {
        let now = Instant::now();
        self.finish(&End {
            variant,
            status,
            endpoint: None,
            end: now,
            failure,
            error,
        });
    }

    /// Completes the line and queues it for the writer; the entry is spent (its drop writes
    /// nothing more).
    pub(crate) fn finish(&mut self, end: &End<'_>) {
        let l = &mut self.line;
        if !self.has_model {
            l.extend_from_slice(b",\"model\":null");
        }
        l.extend_from_slice(b",\"variant\":");
        match end.variant.or(self.variant) {
            Some(v) => string(l, v.as_str()),
            None => l.extend_from_slice(b"null"),
        }
        let _ = write!(l, ",\"fell_back\":{},\"status\":", self.fell_back);
        match end.status {
            0 => l.extend_from_slice(b"null"),
            s => {
                let _ = write!(l, "{s}");
            }
        }
        l.extend_from_slice(b",\"endpoint\":");
        match end.endpoint {
            Some(e) => string(l, e),
            None => l.extend_from_slice(b"null"),
        }
        millis(
            l,
            "duration_ms",
            Some(end.end.saturating_duration_since(self.origin)),
        );
        millis(l, "ttfb_ms", self.ttfb);
        millis(l, "ttft_ms", self.ttft);
        let _ = write!(l, ",\"bytes\":{},\"failure\":", self.bytes);
        match end.failure {
            Some(f) => string(l, f),
            None => l.extend_from_slice(b"null"),
        }
        l.extend_from_slice(b",\"error\":");
        match end.error {
            Some(e) => string(l, e),
            None => l.extend_from_slice(b"null"),
        }
        l.extend_from_slice(b"}\n");
        let line = std::mem::take(&mut self.line);
        match self.writer.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.writer.counts.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// A line nobody ended (the client went away while the request waited, and its task was
/// dropped) is written as cancelled.
impl Drop for Entry {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.finish_here(None, 0, None, Some("cancelled"));
        }
    }
}

/// A JSON string (escaped as JSON requires).
fn string(l: &mut Vec<u8>, s: &str) {
    // Writing a `&str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *l, s);
}

/// `,"name":1.234` (milliseconds, to the microsecond) or `,"name":null`.
fn millis(l: &mut Vec<u8>, name: &str, d: Option<Duration>) {
    let _ = match d {
        Some(d) => write!(l, ",\"{name}\":{:.3}", d.as_secs_f64() * 1e3),
        None => write!(l, ",\"{name}\":null"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let log = AccessLog::default();
        let dir = std::env::temp_dir().join(format!("rollgate-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        log.configure(Some(&Target::File(path.clone())));
        let cfg: Config = rollgate_config::parse(&format!(
            "listen: 127.0.0.1:0\naccess_log: {}\nmodels: [{{ name: m, stable: {{ endpoints: [\"http://a:1\"] }} }}]\n",
            path.display()
        ))
        .expect("config");
        let origin = Instant::now();
        let mut e = log
            .entry(&cfg, origin)
            .expect("an entry: the config asks for a log");
        e.begin(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_858_367_250),
            "POST",
            "/v1/chat/\"completions\"",
            Some(b"req-\x01\xff"),
        );
        e.model("org/m:1");
        e.fell_back = true;
        // Times run from the request's start (a fallback's wait for the candidate included).
        e.on_data(300, true, false, origin + Duration::from_millis(3));
        e.on_data(21, false, false, origin + Duration::from_millis(5));
        e.finish(&End {
            variant: Some(Variant::Stable),
            status: 200,
            endpoint: Some("http://a:1"),
            end: origin + Duration::from_micros(12_345),
            failure: Some("truncated"),
            error: None,
        });
        log.close();
        let text = std::fs::read_to_string(&path).expect("log written");
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).expect("JSON");
        assert_eq!(v["time"], "2026-11-28T09:32:47.250Z");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/v1/chat/\"completions\"");
        assert_eq!(v["model"], "org/m:1");
        assert_eq!(v["request_id"], "req-\u{1}\u{fffd}");
        assert_eq!(v["variant"], "stable");
        assert_eq!(v["fell_back"], true);
        assert_eq!(v["status"], 200);
        assert_eq!(v["endpoint"], "http://a:1");
        assert_eq!(v["duration_ms"], 12.345);
        assert_eq!(v["ttfb_ms"], 3.0);
        assert_eq!(v["ttft_ms"], serde_json::Value::Null);
        assert_eq!(v["bytes"], 321);
        assert_eq!(v["failure"], "truncated");
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(log.counts.written.load(Relaxed), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_log_configured_means_no_entry_and_no_thread() {
        let log = AccessLog::default();
        log.configure(None);
        let cfg: Config = rollgate_config::parse(
            "listen: 127.0.0.1:0\nmodels: [{ name: m, stable: { endpoints: [\"http://a:1\"] } }]\n",
        )
        .expect("config");
        assert!(log.entry(&cfg, Instant::now()).is_none());
        assert!(log.writer.get().is_none(), "no writer thread without a log");
    }
}
