//! End-to-end tests of the agent on `127.0.0.1:0`: no NVML, a fake NVML loaded through the
//! real path (dlopen by nvml-wrapper), and shutdown. Plus the small pure pieces.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::*;

const GIB: u64 = 1024 * 1024 * 1024;
/// Generous: refreshes run every 50 ms, but CI machines stall.
const DEADLINE: Duration = Duration::from_secs(20);

/// A running agent; dropping it without `stop` leaves the task to the test runtime.
struct Agent {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// A fake `libnvidia-ml.so.1` built from `fake_nvml.c` into a fresh temporary folder, reading
/// its memory numbers from `state` (path compiled in, so no environment variable is touched).
struct FakeNvml {
    dir: PathBuf,
    lib: PathBuf,
    state: PathBuf,
}

// === impl Agent ===

impl Agent {
    async fn start(nvml_lib: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let args = GpuAgentArgs {
            listen: addr,
            refresh_interval: Duration::from_millis(50),
            nvml_lib: Some(nvml_lib),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, args, async move {
            // A dropped sender also means stop.
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn get(&self, path: &str, accept: Option<&str>) -> (StatusCode, String, String) {
        let io = TokioIo::new(TcpStream::connect(self.addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let mut req = Request::get(path).header("host", "agent");
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let resp = send
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await;
        let resp = resp.unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ctype, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn gpus(&self) -> GpuSnapshot {
        let (status, ctype, body) = self.get("/gpus", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ctype, "application/json");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls `/gpus` until `done` holds, failing the test after [`DEADLINE`].
    async fn wait_for(&self, what: &str, done: impl Fn(&GpuSnapshot) -> bool) -> GpuSnapshot {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let snap = self.gpus().await;
            if done(&snap) {
                return snap;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last /gpus: {snap:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/metrics` in the classic format, checked by promtool.
    async fn metrics(&self) -> String {
        let (status, ctype, body) = self.get("/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
        check_exposition(&body);
        body
    }
}

// === impl FakeNvml ===

impl FakeNvml {
    fn build() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("rollgate-fake-nvml-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libnvidia-ml.so.1");
        let state = dir.join("state");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gpu/fake_nvml.c");
        // `cc` is what rustc links with on Linux, so it is there wherever this test builds.
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
            .arg(&lib)
            .arg(&src)
            .arg(format!("-DFAKE_NVML_STATE_PATH=\"{}\"", state.display()))
            .output()
            .expect("running cc to build the fake NVML library");
        assert!(
            out.status.success(),
            "cc failed building {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir, lib, state }
    }

    /// Writes `used0 total0 used1 total1` atomically, so a read never sees half a file.
    fn set(&self, used0: u64, total0: u64, used1: u64, total1: u64) {
        let tmp = self.dir.join("state.tmp");
        std::fs::write(&tmp, format!("{used0} {total0} {used1} {total1}\n")).unwrap();
        std::fs::rename(&tmp, &self.state).unwrap();
    }
}

impl Drop for FakeNvml {
    fn drop(&mut self) {
        // Best effort: a leftover temp folder is harmless.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of the one sample of `name` whose label text contains every `labels` part.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let metric = series.split('{').next().unwrap_or_default();
            metric == name && labels.iter().all(|p| series.contains(p))
        })
        .map(|(_, v)| v.parse().unwrap())
}

/// Classic-format rules checked here always (counter families named `_total`, no OpenMetrics
/// trailer), and by `promtool check metrics` where promtool is installed.
fn check_exposition(text: &str) {
    assert!(!text.contains("# EOF"), "{text}");
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        if line.ends_with(" counter") {
            assert!(line.contains("_total counter"), "{line}");
        }
    }
    let promtool = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("promtool not run ({e}); structural checks only");
            return;
        }
    };
    let mut promtool = promtool;
    let mut stdin = promtool.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, text.as_bytes()).unwrap();
    drop(stdin);
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn without_nvml_the_agent_reports_no_gpu_and_keeps_serving() {
    let agent = Agent::start("/nonexistent/rollgate/libnvidia-ml.so.1".into()).await;
    let snap = agent
        .wait_for("the first NVML attempt", |s| s.refreshed_at.is_some())
        .await;
    assert!(!snap.available);
    assert!(snap.gpus.is_empty());
    let reason = snap.reason.unwrap();
    assert!(reason.contains("cannot load NVML"), "{reason}");
    assert!(reason.contains("/nonexistent/rollgate/"), "{reason}");

    let text = agent.metrics().await;
    assert_eq!(sample(&text, "rollgate_gpu_available", &[]), Some(0.0));
    assert_eq!(sample(&text, "rollgate_gpu_devices", &[]), Some(0.0));
    assert_eq!(
        sample(&text, "rollgate_gpu_refresh_errors_total", &[]),
        Some(0.0)
    );
    assert_eq!(sample(&text, "rollgate_gpu_memory_used_bytes", &[]), None);

    // Still serving, every endpoint, after more refresh ticks have passed.
    for _ in 0..3 {
        assert_eq!(agent.get("/healthz", None).await.0, StatusCode::OK);
        assert!(!agent.gpus().await.available);
        agent.metrics().await;
    }
    let (status, ctype, om) = agent
        .get("/metrics", Some("application/openmetrics-text"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(agent.get("/nope", None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_fake_nvml_is_loaded_and_memory_climbs_into_the_metrics() {
    let fake = FakeNvml::build();
    fake.set(10 * GIB, 80 * GIB, GIB, 40 * GIB);
    let agent = Agent::start(fake.lib.clone()).await;

    let snap = agent.wait_for("two GPUs", |s| s.available).await;
    assert_eq!(snap.reason, None);
    let [g0, g1] = &snap.gpus[..] else {
        panic!("want 2 GPUs: {snap:?}");
    };
    assert_eq!(
        (g0.index, g0.uuid.as_str(), g0.name.as_str()),
        (0, "GPU-fake-0000", "Fake GPU 0")
    );
    assert_eq!(
        (g0.memory_used_bytes, g0.memory_total_bytes),
        (10 * GIB, 80 * GIB)
    );
    assert_eq!(g0.memory_free_bytes, 70 * GIB);
    assert_eq!(g0.utilization_gpu_percent, Some(37));
    let pids: Vec<_> = g0
        .processes
        .iter()
        .map(|p| (p.pid, p.memory_used_bytes))
        .collect();
    assert_eq!(
        pids,
        [
            (4242, Some(7 * GIB + GIB / 2)),
            (4243, Some(2 * GIB + GIB / 2))
        ]
    );
    assert_eq!(
        (g1.uuid.as_str(), g1.memory_used_bytes),
        ("GPU-fake-0001", GIB)
    );
    assert_eq!(
        g1.utilization_gpu_percent, None,
        "NOT_SUPPORTED maps to null"
    );
    assert!(g1.processes.is_empty());

    let gpu0 = ["gpu=\"0\"", "uuid=\"GPU-fake-0000\"", "name=\"Fake GPU 0\""];
    let text = agent.metrics().await;
    assert_eq!(sample(&text, "rollgate_gpu_available", &[]), Some(1.0));
    assert_eq!(sample(&text, "rollgate_gpu_devices", &[]), Some(2.0));
    let used = sample(&text, "rollgate_gpu_memory_used_bytes", &gpu0);
    assert_eq!(used, Some((10 * GIB) as f64));
    assert_eq!(
        sample(&text, "rollgate_gpu_memory_used_ratio", &gpu0),
        Some(0.125)
    );
    let pid = ["gpu=\"0\"", "pid=\"4243\""];
    let proc_mem = sample(&text, "rollgate_gpu_process_memory_bytes", &pid);
    assert_eq!(proc_mem, Some((2 * GIB + GIB / 2) as f64));

    // Memory climbs past 92 %. The loop sets metrics before publishing the snapshot, so once
    // /gpus shows it, /metrics does too.
    fake.set(75 * GIB, 80 * GIB, GIB, 40 * GIB);
    agent
        .wait_for("GPU 0 at 75 GiB", |s| {
            s.gpus
                .first()
                .is_some_and(|g| g.memory_used_bytes == 75 * GIB)
        })
        .await;
    let text = agent.metrics().await;
    let ratio = sample(&text, "rollgate_gpu_memory_used_ratio", &gpu0).unwrap();
    assert!(ratio > 0.92, "ratio {ratio}");
    assert_eq!(ratio, 0.9375);

    // A failing read turns the agent unavailable (no stale numbers) and is counted.
    std::fs::remove_file(&fake.state).unwrap();
    let snap = agent.wait_for("a failed refresh", |s| !s.available).await;
    let reason = snap.reason.unwrap();
    assert!(
        reason.starts_with("refresh failed: GPU 0: memory:"),
        "{reason}"
    );
    let text = agent.metrics().await;
    assert!(sample(&text, "rollgate_gpu_refresh_errors_total", &[]).unwrap() >= 1.0);
    assert_eq!(sample(&text, "rollgate_gpu_memory_used_ratio", &gpu0), None);

    fake.set(20 * GIB, 80 * GIB, GIB, 40 * GIB);
    agent.wait_for("recovery", |s| s.available).await;
    let text = agent.metrics().await;
    assert_eq!(
        sample(&text, "rollgate_gpu_memory_used_ratio", &gpu0),
        Some(0.25)
    );
}

#[tokio::test]
async fn a_driver_that_appears_later_is_picked_up_on_retry() {
    let fake = FakeNvml::build();
    fake.set(GIB, 80 * GIB, GIB, 80 * GIB);
    let late = fake.dir.join("late").join("libnvidia-ml.so.1");
    let mut registry = Registry::default();
    let (tx, rx) = watch::channel(Arc::new(GpuSnapshot::starting()));
    let refresher = Refresher {
        reader: ReaderHandle::spawn(GpuReader::new(Some(late.clone()))).unwrap(),
        metrics: GpuMetrics::register(&mut registry),
        snapshot: tx,
        interval: Duration::from_millis(20),
        retry: Duration::from_millis(200),
        health: Health::Starting,
    };
    let task = tokio::spawn(refresher.run());
    let until = |rx: &watch::Receiver<Arc<GpuSnapshot>>, done: fn(&GpuSnapshot) -> bool| {
        let mut rx = rx.clone();
        async move {
            let wait = rx.wait_for(|s| done(s));
            let snap = tokio::time::timeout(DEADLINE, wait).await.unwrap().unwrap();
            GpuSnapshot::clone(&snap)
        }
    };
    let snap = until(&rx, |s| s.refreshed_at.is_some()).await;
    assert!(!snap.available, "{snap:?}");

    // The "driver" appears whole (copy, then rename) and the next retry loads it.
    std::fs::create_dir_all(late.parent().unwrap()).unwrap();
    let tmp = late.with_extension("tmp");
    std::fs::copy(&fake.lib, &tmp).unwrap();
    std::fs::rename(&tmp, &late).unwrap();
    let snap = until(&rx, |s| s.available).await;
    assert_eq!(snap.gpus.len(), 2);
    task.abort();
}

#[tokio::test]
async fn shutdown_returns_promptly_and_closes_the_listener() {
    let mut agent = Agent::start("/nonexistent/libnvidia-ml.so.1".into()).await;
    assert_eq!(agent.get("/healthz", None).await.0, StatusCode::OK);
    agent.stop.take().unwrap().send(()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), &mut agent.task).await;
    res.expect("serve returned within 5s").unwrap().unwrap();
    assert!(
        TcpStream::connect(agent.addr).await.is_err(),
        "listener closed"
    );
}

#[test]
fn no_gpu_is_logged_once_and_changes_are_logged() {
    use Health::*;
    let gpus = || Reading::Gpus(vec![]);
    let none = || Reading::NoGpu("x".into());
    let failed = || Reading::Failed("x".into());
    let cases = [
        (Starting, none(), NoGpu, Some(Level::INFO)),
        (NoGpu, none(), NoGpu, None),
        (NoGpu, gpus(), Ok, Some(Level::INFO)),
        (Starting, gpus(), Ok, Some(Level::INFO)),
        (Ok, gpus(), Ok, None),
        (Ok, failed(), Failing, Some(Level::WARN)),
        (Failing, failed(), Failing, None),
        (Failing, gpus(), Ok, Some(Level::INFO)),
        (Ok, none(), NoGpu, Some(Level::WARN)),
    ];
    for (prev, reading, next, level) in cases {
        assert_eq!(
            transition(prev, &reading),
            (next, level),
            "{prev:?} {reading:?}"
        );
    }
}

#[test]
fn refresh_interval_parses_and_is_bounded() {
    let ok = [
        ("2s", 2000),
        ("500ms", 500),
        ("1.5s", 1500),
        ("1m", 60_000),
        (" 100ms ", 100),
    ];
    for (s, ms) in ok {
        assert_eq!(parse_refresh(s), Ok(Duration::from_millis(ms)), "{s}");
    }
    for bad in ["", "2", "2h", "s", "-1s", "10ms", "6m", "1.2.3s"] {
        assert!(parse_refresh(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn cli_defaults_and_flags() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        agent: GpuAgentArgs,
    }
    <Cli as clap::CommandFactory>::command().debug_assert();
    let cli = <Cli as clap::Parser>::try_parse_from(["gpu-agent"]).unwrap();
    assert_eq!(cli.agent.listen, "0.0.0.0:9401".parse().unwrap());
    assert_eq!(cli.agent.refresh_interval, Duration::from_secs(2));
    assert_eq!(cli.agent.nvml_lib, None);
    let flags = [
        "gpu-agent",
        "--listen=127.0.0.1:9500",
        "--refresh-interval=500ms",
        "--nvml-lib=/opt/nvidia/libnvidia-ml.so.1",
    ];
    let cli = <Cli as clap::Parser>::try_parse_from(flags).unwrap();
    assert_eq!(cli.agent.refresh_interval, Duration::from_millis(500));
    assert_eq!(
        cli.agent.nvml_lib.as_deref(),
        Some(Path::new("/opt/nvidia/libnvidia-ml.so.1"))
    );
    assert!(<Cli as clap::Parser>::try_parse_from(["gpu-agent", "--refresh-interval=0s"]).is_err());
}
