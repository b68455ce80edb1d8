//! Test support: start the real binary with a config, start simulators, make requests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate_loadtest::sim::{self, Sim, SimArgs};
use tokio::net::TcpListener;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The real `rollgate run` process with its config in a private temp dir.
pub struct Gateway {
    child: Option<Child>,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    /// The `rollgate ready: …` line the process printed.
    pub ready: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// stderr of the process (logs), collected by a thread.
    logs: std::sync::Arc<std::sync::Mutex<String>>,
}

/// A response read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// Held by tests that send thousands of requests or compare latencies, so that no two of them
/// run at once: the one measuring would otherwise time the other's load.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until no other heavy test runs; hold the guard for the whole test.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}

/// A fresh temp dir for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("rollgate-test-{}-{tag}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Starts a simulator on `127.0.0.1:0` serving `model`, answering with `x-sim-name: name`.
pub async fn start_sim(name: &str, model: &str, tweak: impl FnOnce(&mut SimArgs)) -> Sim {
    let mut args = SimArgs {
        model: model.into(),
        name: Some(name.into()),
        ttft: Duration::from_millis(2),
        tpot: Duration::from_millis(1),
        output_tokens: 4,
        ..SimArgs::default()
    };
    tweak(&mut args);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
    sim::start(args, listener).await.expect("start sim")
}

/// A config with one model `m` in front of the given simulators; `extra` is appended to the
/// model's mapping (indented by the caller with four spaces) and `top` to the top level.
pub fn config(stable: &Sim, candidate: Option<&Sim>, model_extra: &str, top: &str) -> String {
    let cand = candidate.map_or(String::new(), |c| {
        format!(
            "    candidate: {{ endpoints: [\"{}\"], engine: vllm, revision: v2 }}\n",
            c.url()
        )
    });
    format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nworkers: 2\n{top}models:\n  - name: m\n    stable: {{ endpoints: [\"{}\"], engine: vllm }}\n{cand}{model_extra}",
        stable.url()
    )
}

/// [`config`] with one model on `stable`, on data plane `plane` (`fast` or `hyper`).
pub fn config_on(plane: &str, stable: &Sim) -> String {
    config(stable, None, "", &format!("data_plane: {plane}\n"))
}

/// Runs the suite against either HTTP/1.1 implementation: `ROLLGATE_E2E_DATA_PLANE=fast` (or
/// `hyper`) adds `data_plane:` to every config that does not set it.
fn with_data_plane(yaml: &str) -> String {
    match std::env::var("ROLLGATE_E2E_DATA_PLANE") {
        Ok(dp) if !yaml.contains("data_plane:") && !yaml.trim().is_empty() => {
            // Appended, so line numbers in error messages stay as the test wrote them.
            let sep = if yaml.ends_with('\n') { "" } else { "\n" };
            format!("{yaml}{sep}data_plane: {dp}\n")
        }
        _ => yaml.to_owned(),
    }
}

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A JSON chat body for model `m` with a given prompt.
pub fn chat(model: &str, prompt: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    )
}

pub async fn send(
    client: &HttpClient,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = hyper::Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let resp = client.request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// A listener for a hand-written upstream on a free loopback port, and its URL.
pub async fn raw_upstream() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    (listener, url)
}

/// Reads from `io` until a whole request head has arrived (and perhaps some body bytes).
/// `false`: the peer closed first.
pub async fn read_request_head(io: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// A one-worker fast-path gateway with model `m` on the upstream at `url`; `top` adds
/// top-level lines.
pub fn fast_config(url: &str, top: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nworkers: 1\ndata_plane: fast\n\
         {top}models:\n  - name: m\n    stable: {{ endpoints: [\"{url}\"], engine: vllm }}\n"
    )
}

/// Writes a chat body for model `m` of about `mib` MiB to `dir/body.json`.
pub fn big_chat_file(dir: &std::path::Path, mib: usize) -> PathBuf {
    let file = dir.join("body.json");
    std::fs::write(&file, chat("m", &"x".repeat(mib << 20), false)).expect("write body");
    file
}

/// How `curl_upload` sends a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upload {
    /// Head and body at once.
    Plain,
    /// `Expect: 100-continue` (curl's default above 1 MiB), waiting up to 10 s for the
    /// interim `100 Continue` before sending the body.
    Expect,
}

/// POSTs `file` with curl, giving up after `max_time`. Returns the status (0: no answer), the
/// body and curl's stderr.
pub async fn curl_upload(
    url: &str,
    file: &std::path::Path,
    how: Upload,
    max_time: Duration,
) -> (u16, String, String) {
    let (url, file) = (url.to_owned(), file.to_owned());
    let expect = match how {
        Upload::Plain => ["-H", "Expect:"],
        Upload::Expect => ["--expect100-timeout", "10"],
    };
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "-H", "content-type: application/json"])
            .args(expect)
            .args(["--max-time", &max_time.as_secs_f64().to_string()])
            .args(["-w", "\n%{http_code}", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(&url)
            .output()
            .expect("curl must be installed (scripts/install-test-deps)")
    })
    .await
    .expect("curl ran");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub async fn get(client: &HttpClient, url: &str) -> Reply {
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client.request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// The value of a metric sample line (exact series text before the value), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Model `m`'s entry in `GET /rollouts` (`null` before the driver's first step).
pub async fn rollout_status(gw: &Gateway) -> serde_json::Value {
    let r = get(&client(), &gw.admin_url("/rollouts")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
        .as_array()
        .and_then(|all| all.iter().find(|s| s["model"] == "m").cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// `Canary(1)`, `Full`: a status's phase and step as one word (`none` without a status).
pub fn phase(s: &serde_json::Value) -> String {
    use serde_json::Value;
    match (&s["phase"], &s["step"]) {
        (Value::String(p), Value::Number(n)) => format!("{p}({n})"),
        (Value::String(p), _) => p.clone(),
        _ => "none".to_owned(),
    }
}

// === impl Reply ===

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// === impl Gateway ===

impl Gateway {
    /// Writes `yaml` to a temp dir and starts `rollgate run` on it; waits for it to be ready.
    pub fn start(yaml: &str) -> Gateway {
        let dir = temp_dir("gw");
        let config = dir.join("rollgate.yaml");
        std::fs::write(&config, with_data_plane(yaml)).expect("write config");
        Gateway::spawn(dir, config)
    }

    /// Starts `rollgate run` again on this gateway's config file (so on its `state_dir` too),
    /// once the previous process has exited. Both values remove the shared temp dir on drop.
    pub fn start_again(&self) -> Gateway {
        Gateway::spawn(self.dir.clone(), self.config.clone())
    }

    /// Starts `rollgate run --config <config>`; waits for it to be ready.
    fn spawn(dir: PathBuf, config: PathBuf) -> Gateway {
        let args = vec!["--config".into(), config.clone().into_os_string()];
        Gateway::spawn_args(dir, config, &args)
    }

    /// Starts `rollgate run <args>` (e.g. `--git <repo> ...`); `dir` is removed on drop.
    pub fn start_args(dir: PathBuf, args: &[std::ffi::OsString]) -> Gateway {
        let config = dir.join("rollgate.yaml");
        Gateway::spawn_args(dir, config, args)
    }

    fn spawn_args(dir: PathBuf, config: PathBuf, args: &[std::ffi::OsString]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollgate"))
            .arg("run")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rollgate");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().expect("logs");
                l.push_str(&line);
                l.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.next().and_then(Result::ok).unwrap_or_else(|| {
            panic!(
                "rollgate exited before ready; logs:\n{}",
                logs.lock().expect("logs")
            )
        });
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = |key: &str| -> SocketAddr {
            let start = ready
                .find(key)
                .unwrap_or_else(|| panic!("no {key} in {ready:?}"))
                + key.len();
            let rest = &ready[start..];
            // `https://` when the data plane speaks TLS.
            let rest = rest
                .strip_prefix("http://")
                .or_else(|| rest.strip_prefix("https://"))
                .unwrap_or_else(|| panic!("no URL after {key} in {ready:?}"));
            let end = rest.find(' ').unwrap_or(rest.len());
            rest[..end].parse().expect("address")
        };
        let data = addr("data=");
        let admin = addr("admin=");
        Gateway {
            child: Some(child),
            data,
            admin,
            ready: ready.clone(),
            dir,
            config,
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.data)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Replaces the config file atomically (write + rename), as a deploy tool would.
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.join("rollgate.yaml.tmp");
        std::fs::write(&tmp, with_data_plane(yaml)).expect("write config");
        std::fs::rename(&tmp, &self.config).expect("rename config");
    }

    /// Writes a new config and reloads: the outcome for that content. The file watcher may
    /// apply the write before `POST /reload` reads the file; the reload then finds the content
    /// unchanged, and what counts is that its revision is now serving (reported as `success`,
    /// `"by": "watcher"`). Content equal to the serving config stays `unchanged`.
    pub async fn apply_config(&self, yaml: &str) -> serde_json::Value {
        let before = self.status().await["revision"].clone();
        self.write_config(yaml);
        let outcome = self.reload().await;
        if outcome["result"] == "unchanged" && outcome["revision"] != before {
            let serving = self.status().await["revision"].clone();
            assert_eq!(serving, outcome["revision"], "{outcome}");
            return serde_json::json!({
                "result": "success",
                "revision": outcome["revision"],
                "by": "watcher",
            });
        }
        outcome
    }

    pub async fn metrics(&self) -> String {
        get(&client(), &self.admin_url("/metrics")).await.text()
    }

    /// Polls `/metrics` until `series` reads `want` (bounded); returns the page that did.
    /// Counters move when a response body ends, which can be just after the client saw it.
    pub async fn wait_metric(&self, series: &str, want: f64, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let page = self.metrics().await;
            let got = metric(&page, series);
            if got == Some(want) {
                return page;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} is {got:?}, not {want}, after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn status(&self) -> serde_json::Value {
        get(&client(), &self.admin_url("/status")).await.json()
    }

    /// Asks for a reload through the admin API and returns its outcome.
    pub async fn reload(&self) -> serde_json::Value {
        let req = hyper::Request::post(self.admin_url("/reload"))
            .body(Full::new(Bytes::new()))
            .expect("req");
        let resp = client().request(req).await.expect("reload");
        serde_json::from_slice(&resp.into_body().collect().await.expect("body").to_bytes())
            .expect("json")
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -s {sig} {pid} failed");
    }

    /// Waits for the process to exit (bounded).
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rollgate did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").clone()
    }

    /// Polls the logs (bounded) until `done` holds; returns them. Logs reach the test through
    /// a reader thread, a little after the gateway wrote them.
    pub async fn wait_logs(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let logs = self.logs();
            if done(&logs) {
                return logs;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}; logs:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Already exited is fine.
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `/status` (bounded) until `done` holds; returns that status.
pub async fn wait_status(
    gw: &Gateway,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = gw.status().await;
        if done(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {status:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One small chat request for model `m` through the gateway, with `headers`.
pub async fn chat_once(gw: &Gateway, headers: &[(&str, &str)]) -> Reply {
    let url = gw.url("/v1/chat/completions");
    send(&client(), &url, headers, chat("m", "hi", false)).await
}

/// A small chat request through the gateway gets 200: it still serves (model `m`).
pub async fn assert_serves(gw: &Gateway) {
    let r = chat_once(gw, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Python start-up and `import openai` take about a second; this only bounds a hung client.
const PYTHON_LIMIT: Duration = Duration::from_secs(60);

/// Runs the Python script `tests/e2e/{script}` with `base_url model prompt` and returns the JSON
/// it prints. Exit 3 is the scripts' "the openai package is missing".
pub async fn openai_script(
    script: &str,
    base_url: &str,
    model: &str,
    prompt: &str,
) -> serde_json::Value {
    let path = format!("{}/tests/e2e/{script}", env!("CARGO_MANIFEST_DIR"));
    let args = [
        path,
        base_url.to_owned(),
        model.to_owned(),
        prompt.to_owned(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("python3")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 ({e}); scripts/install-test-deps installs it")
            });
        let deadline = std::time::Instant::now() + PYTHON_LIMIT;
        while child.try_wait().expect("try_wait").is_none() {
            if std::time::Instant::now() > deadline {
                // Killing a process that just exited is harmless.
                let _ = child.kill();
                panic!("{} did not finish within {PYTHON_LIMIT:?}", args[0]);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("python output")
    })
    .await
    .expect("python task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(3),
        "{stderr}\n{script} needs the openai package"
    );
    assert!(output.status.success(), "{script} failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
