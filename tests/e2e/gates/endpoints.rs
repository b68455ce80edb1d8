//! Candidate endpoints for the gate tests: a front that forwards inference and health to a
//! simulator and serves a chosen `/metrics` page, and the real `rollgate gpu-agent` reading a
//! fake NVML library.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rollgate_loadtest::sim::Sim;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::support::*;

/// GiB, for the fake NVML state file.
const GIB: u64 = 1 << 30;

/// A candidate endpoint in front of a simulator, as the gateway sees a model server with a
/// sidecar: inference and `/health` are forwarded to the simulator; `/metrics` is what
/// [`Page`] says. The gateway scrapes GPU memory and queue time from the endpoint's own page,
/// so this is how a gpu-agent's series reach it, and how a broken exporter looks.
pub(super) struct Front {
    addr: SocketAddr,
    pub(super) page: Arc<Mutex<Page>>,
    task: JoinHandle<()>,
}

#[derive(Clone, Debug)]
pub(super) enum Page {
    /// The simulator's page.
    Sim,
    /// The simulator's page followed by the page at this URL (a gpu-agent's `/metrics`).
    SimAnd(String),
    /// `503`: the exporter is down.
    Down,
}

type FrontBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// `rollgate gpu-agent` (the real binary) reading a fake `libnvidia-ml.so.1` built from
/// `control/src/gpu/fake_nvml.c`, whose memory numbers come from a state file.
pub(super) struct GpuAgent {
    child: Child,
    pub(super) url: String,
    dir: PathBuf,
    state: PathBuf,
}

// === impl Front ===

impl Front {
    pub(super) async fn start(sim: &Sim, page: Page) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
        let addr = listener.local_addr().expect("front address");
        let page = Arc::new(Mutex::new(page));
        let (sim_url, shared) = (sim.url(), page.clone());
        let task = tokio::spawn(async move {
            // Connections end with the task (dropping the set aborts them).
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors: let the open connections finish first.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let (sim_url, page, c) = (sim_url.clone(), shared.clone(), client());
                let svc = hyper::service::service_fn(move |req| {
                    let page = page.lock().expect("page").clone();
                    let (sim_url, c) = (sim_url.clone(), c.clone());
                    async move { Ok::<_, Infallible>(serve_front(req, &sim_url, page, &c).await) }
                });
                conns.spawn(async move {
                    // A client that goes away mid-exchange is no concern of the test.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Front { addr, page, task }
    }

    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_front(
    req: Request<Incoming>,
    sim: &str,
    page: Page,
    c: &HttpClient,
) -> Response<FrontBody> {
    if req.uri().path() != "/metrics" {
        return forward(req, sim, c)
            .await
            .unwrap_or_else(|e| plain(502, format!("front: {e}\n")));
    }
    let pages = match page {
        Page::Down => return plain(503, "metrics exporter down\n".into()),
        Page::Sim => vec![format!("{sim}/metrics")],
        Page::SimAnd(other) => vec![format!("{sim}/metrics"), other],
    };
    let mut text = String::new();
    for url in pages {
        match fetch(c, &url).await {
            Ok(t) => text.push_str(&t),
            Err(e) => return plain(502, format!("front: {url}: {e}\n")),
        }
    }
    plain(200, text)
}

/// Forwards a request to the simulator, streaming the answer back.
async fn forward(
    req: Request<Incoming>,
    sim: &str,
    c: &HttpClient,
) -> Result<Response<FrontBody>, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::builder()
        .method(parts.method)
        .uri(format!("{sim}{path}"));
    for (k, v) in parts
        .headers
        .iter()
        .filter(|(k, _)| *k != hyper::header::HOST)
    {
        out = out.header(k, v);
    }
    let resp = c.request(out.body(Full::new(body))?).await?;
    Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync()))
}

async fn fetch(
    c: &HttpClient,
    url: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let req = Request::get(url).body(Full::new(Bytes::new()))?;
    let resp = c.request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {status}").into());
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn plain(status: u16, text: String) -> Response<FrontBody> {
    let body = Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    resp
}

// === impl GpuAgent ===

impl GpuAgent {
    /// Builds the fake NVML library into a fresh temp dir and starts the agent on it.
    pub(super) fn start() -> GpuAgent {
        let dir = temp_dir("nvml");
        let lib = dir.join("libnvidia-ml.so.1");
        let state = dir.join("state");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("control/src/gpu/fake_nvml.c");
        // `cc` is what rustc links with on Linux, so it is there wherever this test builds.
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&lib)
            .arg(&src)
            .arg(format!("-DFAKE_NVML_STATE_PATH=\"{}\"", state.display()))
            .output()
            .expect("running cc to build the fake NVML library");
        assert!(
            out.status.success(),
            "cc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollgate"))
            .args([
                "gpu-agent",
                "--listen",
                "127.0.0.1:0",
                "--refresh-interval",
                "200ms",
            ])
            .arg("--nvml-lib")
            .arg(&lib)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gpu-agent");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.next().and_then(Result::ok).unwrap_or_default();
        // Keep draining stdout so the agent never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let url = ready
            .strip_prefix("rollgate gpu-agent ready: ")
            .unwrap_or_else(|| panic!("no ready line from gpu-agent: {ready:?}"))
            .to_owned();
        GpuAgent {
            child,
            url,
            dir,
            state,
        }
    }

    /// Writes `(used, total)` GiB per GPU (the fake has two) atomically: the library reads the
    /// file on every call.
    pub(super) fn set_used(&self, gpus: &[(u64, u64); 2]) {
        let text = format!(
            "{} {} {} {}\n",
            gpus[0].0 * GIB,
            gpus[0].1 * GIB,
            gpus[1].0 * GIB,
            gpus[1].1 * GIB
        );
        let tmp = self.dir.join("state.tmp");
        std::fs::write(&tmp, text).expect("write NVML state");
        std::fs::rename(&tmp, &self.state).expect("rename NVML state");
    }
}

impl Drop for GpuAgent {
    fn drop(&mut self) {
        // Already exited is fine.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
