//! What a signal read needs from which page, and what its errors say: over loopback, with small
//! servers that answer each path as told and a real `rollgate gpu-agent` without NVML.

use std::collections::HashMap;
use std::convert::Infallible;

use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;

/// A page a GPU agent serves: 40 of 80 bytes used.
const HALF_FULL: &str = "rollgate_gpu_available 1\n\
    rollgate_gpu_memory_used_bytes{gpu=\"0\"} 40\n\
    rollgate_gpu_memory_total_bytes{gpu=\"0\"} 80\n";
/// A vLLM page with a queue-time histogram.
const VLLM: &str = "vllm:request_queue_time_seconds_bucket{le=\"0.5\"} 1\n\
    vllm:request_queue_time_seconds_bucket{le=\"+Inf\"} 1\n\
    vllm:request_queue_time_seconds_sum 0.1\n\
    vllm:request_queue_time_seconds_count 1\n";

/// Answers each path as told (404 for the rest) on 127.0.0.1:0 and counts requests per path.
struct Server {
    url: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(routes: &[(&'static str, u16, &'static str)]) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<HashMap<&str, (u16, &str)>> =
            Arc::new(routes.iter().map(|(p, s, b)| (*p, (*s, *b))).collect());
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counted = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (routes, hits) = (routes.clone(), counted.clone());
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let path = req.uri().path().to_owned();
                    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let (status, body) = routes.get(path.as_str()).copied().unwrap_or((404, ""));
                    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                tokio::spawn(async move {
                    // A client that hangs up early is not these tests' concern.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server { url, hits, task }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Model `m` with `candidate` (a YAML flow mapping) and a plan with `gates`.
fn model(candidate: &str, gates: &str) -> Model {
    let yaml = format!(
        "listen: 127.0.0.1:0\nmodels:\n  - name: m\n    \
         stable: {{ endpoints: [\"http://127.0.0.1:1\"], engine: vllm }}\n    \
         candidate: {candidate}\n    \
         rollout: {{ steps: [{{ weight: 10%, for: 1m }}], gates: {gates} }}\n"
    );
    let config = rollgate_config::parse(&yaml).expect("config");
    config.models.into_iter().next().expect("model m")
}

#[tokio::test]
async fn an_openai_candidate_needs_no_metrics_page_of_its_own_beside_gpu_metrics() {
    // A plain OpenAI server: no `/metrics` (404); its GPU memory on an agent's page.
    let server = Server::start(&[("/v1/models", 200, "{}")]).await;
    let agent = Server::start(&[("/metrics", 200, HALF_FULL)]).await;
    let m = model(
        &format!(
            "{{ endpoints: [\"{}\"], engine: openai, revision: v2, gpu_metrics: [\"{}\"] }}",
            server.url, agent.url
        ),
        "{ gpu_memory_used: { max: 92% } }",
    );
    let read = HttpSignals::default().read(&m).await;
    assert_eq!(read.gpu_memory, Ok(Some(0.5)));
    assert_eq!(read.health, Health::Passing);
    assert_eq!(
        server.hits("/metrics"),
        0,
        "nothing needs the server's own page"
    );
    assert_eq!(agent.hits("/metrics"), 1);
}

#[tokio::test]
async fn an_unreadable_page_fails_only_the_signals_it_feeds() {
    let engine = Server::start(&[("/health", 200, ""), ("/metrics", 200, VLLM)]).await;
    let agent = Server::start(&[]).await;
    let gates = "{ queue_time_p95: { max: 1s }, gpu_memory_used: { max: 92% } }";
    let candidate = |engine: &Server, agent: &Server| {
        format!(
            "{{ endpoints: [\"{}\"], engine: vllm, revision: v2, gpu_metrics: [\"{}\"] }}",
            engine.url, agent.url
        )
    };
    let signals = HttpSignals::default();
    // The GPU page is down: queue time still reads, GPU memory names the page and its answer.
    let read = signals
        .read(&model(&candidate(&engine, &agent), gates))
        .await;
    assert!(matches!(read.queue_time, Ok(Some(_))), "{read:?}");
    let want = format!("{}/metrics: answered HTTP 404", agent.url);
    assert_eq!(read.gpu_memory, Err(want));
    // The engine's own page is down: GPU memory still reads from the agent's.
    let engine = Server::start(&[("/health", 200, "")]).await;
    let agent = Server::start(&[("/metrics", 200, HALF_FULL)]).await;
    let read = signals
        .read(&model(&candidate(&engine, &agent), gates))
        .await;
    let want = format!("{}/metrics: answered HTTP 404", engine.url);
    assert_eq!(read.queue_time, Err(want));
    assert_eq!(read.gpu_memory, Ok(Some(0.5)));
    // Read but lacking what the gate needs: the page is named.
    let read = signals
        .read(&model(&candidate(&agent, &engine), gates))
        .await;
    let want = format!("{}/metrics has no queue-time histogram", agent.url);
    assert_eq!(read.queue_time, Err(want));
}

#[tokio::test]
async fn a_gpu_agent_without_a_gpu_is_relayed_with_its_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let args = crate::gpu::GpuAgentArgs {
        listen: listener.local_addr().unwrap(),
        refresh_interval: Duration::from_millis(50),
        nvml_lib: Some("/nonexistent/rollgate/libnvidia-ml.so.1".into()),
    };
    let agent = tokio::spawn(crate::gpu::serve(listener, args, std::future::pending()));
    let server = Server::start(&[("/v1/models", 200, "{}")]).await;
    let m = model(
        &format!(
            "{{ endpoints: [\"{}\"], engine: openai, revision: v2, gpu_metrics: [\"{agent_url}\"] }}",
            server.url
        ),
        "{ gpu_memory_used: { max: 92% } }",
    );
    let signals = HttpSignals::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    let why = loop {
        let read = signals.read(&m).await;
        // Until its first NVML attempt the agent says it is starting.
        match read.gpu_memory {
            Err(why) if why.contains("cannot load NVML") => break why,
            other if Instant::now() > deadline => panic!("{other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let prefix = format!("{agent_url}: gpu-agent reports no GPU: cannot load NVML");
    assert!(why.starts_with(&prefix), "{why}");
    assert!(why.contains("/nonexistent/rollgate/"), "{why}");
    agent.abort();
}

#[tokio::test]
async fn a_failed_health_check_names_the_url_and_its_answer() {
    let healthy = Server::start(&[("/v2/health/ready", 200, "")]).await;
    let missing = Server::start(&[]).await;
    let triton = |endpoints: &[&Server]| {
        let urls: Vec<String> = endpoints.iter().map(|s| format!("\"{}\"", s.url)).collect();
        let candidate = format!(
            "{{ endpoints: [{}], engine: triton, revision: v2 }}",
            urls.join(", ")
        );
        model(&candidate, "{ error_rate: { max: 1% } }")
    };
    let signals = HttpSignals::default();
    let check = format!("GET {}/v2/health/ready answered 404", missing.url);
    assert_eq!(
        signals.health(&triton(&[&missing])).await,
        Health::Failing(check.clone())
    );
    assert_eq!(
        signals.health(&triton(&[&healthy, &missing])).await,
        Health::Partial(check)
    );
    assert_eq!(signals.health(&triton(&[&healthy])).await, Health::Passing);
    // Nothing listening: the connect error is named.
    let gone = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let m = model(
        &format!("{{ endpoints: [\"{gone}\"], engine: triton, revision: v2 }}"),
        "{ error_rate: { max: 1% } }",
    );
    let Health::Failing(why) = signals.health(&m).await else {
        panic!("nothing listening fails");
    };
    let prefix = format!("GET {gone}/v2/health/ready failed: ");
    assert!(why.starts_with(&prefix) && why.contains("onnect"), "{why}");
}
