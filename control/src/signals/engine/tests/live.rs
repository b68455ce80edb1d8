//! Scraping over loopback: the simulator in each engine profile, and small servers that fail in
//! each way a real endpoint can.

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};
use rollgate_loadtest::sim::{self, Faults, Ratio, Sim, SimArgs};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
    time::{sleep, Instant},
};

use super::*;
use crate::signals::promtext::ParseError;

/// Long enough for a loaded CI machine; polling returns as soon as the condition holds.
const DEADLINE: Duration = Duration::from_secs(20);
/// Between polls of a condition that is not there yet.
const POLL: Duration = Duration::from_millis(10);
/// Requests sent to each simulator; with one slot, all but one must queue.
const REQUESTS: usize = 3;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

async fn start_sim(engine: sim::Engine) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let args = SimArgs {
        engine,
        listen: listener.local_addr().unwrap(),
        // One slot and a slow first token, so queue and running are both visible mid-way.
        max_concurrency: 1,
        kv_cache_tokens: 1000,
        faults: Faults {
            extra_latency: Duration::from_millis(300),
            ..Faults::default()
        },
        ..SimArgs::default()
    };
    sim::start(args, listener).await.unwrap()
}

fn metrics_url(sim: &Sim) -> String {
    format!("{}/metrics", sim.url())
}

/// One chat completion, answered in full.
async fn chat(base: String) -> StatusCode {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let body = serde_json::json!({
        "model": "sim-model",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 4,
    });
    let req = Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client.request(req).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

/// Scrapes until `done` holds, failing the test with the last reading at the deadline.
async fn scrape_until(
    scraper: &Scraper,
    url: &str,
    engine: Engine,
    what: &str,
    done: impl Fn(&EngineReading) -> bool,
) -> EngineReading {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let reading = scraper.scrape(url, engine).await.unwrap();
        if done(&reading) {
            return reading;
        }
        assert!(
            Instant::now() < deadline,
            "{engine:?}: never {what}: {reading:?}"
        );
        sleep(POLL).await;
    }
}

fn gpu_ratio_near(r: &EngineReading, want: f64) -> bool {
    r.gpu_memory_ratio()
        .is_some_and(|got| (got - want).abs() < 1e-6)
}

async fn live_engine(sim_engine: sim::Engine, engine: Engine) {
    let sim = start_sim(sim_engine).await;
    let url = metrics_url(&sim);
    let scraper = Scraper::default();

    let idle = scraper.scrape(&url, engine).await.unwrap();
    assert_eq!(idle.queue_depth, Some(0.0), "{idle:?}");
    assert_eq!(idle.running, Some(0.0), "{idle:?}");
    let has_kv = engine != Engine::Tgi;
    assert_eq!(idle.kv_cache_usage, has_kv.then_some(0.0), "{idle:?}");
    assert_eq!(idle.gpu_memory_total_bytes, Some(80.0 * GIB), "{idle:?}");
    assert!(gpu_ratio_near(&idle, 0.6), "{idle:?}");

    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| tokio::spawn(chat(sim.url())))
        .collect();
    let busy = scrape_until(&scraper, &url, engine, "busy", |r| {
        r.queue_depth >= Some(1.0) && r.running == Some(1.0)
    })
    .await;
    if has_kv {
        let kv = busy.kv_cache_usage.unwrap();
        assert!(kv > 0.0 && kv <= 1.0, "{busy:?}");
        // The simulator fills GPU memory with the KV cache.
        assert!(busy.gpu_memory_ratio().unwrap() > 0.6, "{busy:?}");
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }

    let done = scraper.scrape(&url, engine).await.unwrap();
    assert_eq!(
        (done.queue_depth, done.running),
        (Some(0.0), Some(0.0)),
        "{done:?}"
    );
    let n = REQUESTS as f64;
    match engine {
        Engine::Vllm | Engine::Tgi => {
            let q = done.queue_time.clone().unwrap();
            assert_eq!(q.count, n, "{q:?}");
            // The later requests waited behind a ≥ 300 ms one.
            assert!(q.sum >= 0.3, "{q:?}");
            assert!(q.quantile(0.5).is_some_and(f64::is_finite), "{q:?}");
            assert_eq!(done.queue_time_mean_since(&idle), q.mean());
        }
        Engine::Triton => {
            assert_eq!(done.queue_count, Some(n), "{done:?}");
            assert!(done.queue_time_total_seconds >= Some(0.3), "{done:?}");
            assert!(done.queue_time_mean_since(&idle) >= Some(0.1), "{done:?}");
        }
        Engine::Sglang | Engine::Openai => assert_eq!(done.queue_time, None),
    }
    if matches!(engine, Engine::Vllm | Engine::Sglang) {
        let ttft = done.ttft.clone().unwrap();
        assert_eq!(ttft.count, n, "{ttft:?}");
        // Every first token took at least the 300 ms of injected latency.
        assert!(ttft.quantile(0.5).unwrap() >= 0.3, "{ttft:?}");
    } else {
        assert_eq!(done.ttft, None);
    }

    sim.set_faults(Faults {
        gpu_memory_used: Some(Ratio::new(0.95).unwrap()),
        ..Faults::default()
    });
    let full = scrape_until(&scraper, &url, engine, "at 95% GPU memory", |r| {
        gpu_ratio_near(r, 0.95)
    })
    .await;
    assert_eq!(full.gpu_memory_total_bytes, Some(80.0 * GIB));
    sim.shutdown().await;
}

#[tokio::test]
async fn live_vllm() {
    live_engine(sim::Engine::Vllm, Engine::Vllm).await;
}

#[tokio::test]
async fn live_sglang() {
    live_engine(sim::Engine::Sglang, Engine::Sglang).await;
}

#[tokio::test]
async fn live_tgi() {
    live_engine(sim::Engine::Tgi, Engine::Tgi).await;
}

#[tokio::test]
async fn live_triton() {
    live_engine(sim::Engine::Triton, Engine::Triton).await;
}

#[tokio::test]
async fn model_filter_on_a_live_page() {
    let sim = start_sim(sim::Engine::Vllm).await;
    let url = metrics_url(&sim);
    let scraper = Scraper::default();
    let ours = scraper
        .scrape_model(&url, Engine::Vllm, Some("sim-model"))
        .await
        .unwrap();
    assert_eq!(ours.queue_depth, Some(0.0));
    let other = scraper
        .scrape_model(&url, Engine::Vllm, Some("not-served"))
        .await
        .unwrap();
    assert_eq!((other.queue_depth, other.kv_cache_usage), (None, None));
    assert!(gpu_ratio_near(&other, 0.6), "{other:?}");
    // A generic server reads only the GPU memory beside it.
    let generic = scraper.scrape(&url, Engine::Openai).await.unwrap();
    assert_eq!(generic.queue_depth, None);
    assert!(gpu_ratio_near(&generic, 0.6), "{generic:?}");
}

/// Serves `body` with `status` to every request, with a real hyper server.
async fn fixed_server(status: StatusCode, body: &'static str) -> (String, JoinHandle<()>) {
    serve(move |mut stream| async move {
        let svc = hyper::service::service_fn(move |_req| async move {
            let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        });
        let io = TokioIo::new(&mut stream);
        // A client that hangs up early is not this test's concern.
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .await;
    })
    .await
}

/// Accepts connections on 127.0.0.1:0 and hands each to `conn`.
async fn serve<F, Fut>(conn: F) -> (String, JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(conn(stream));
        }
    });
    (url, task)
}

/// Reads a request head, so that an answer written next is not an unsolicited one.
async fn read_head(stream: &mut tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

async fn unreachable_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/metrics")
}

#[tokio::test]
async fn unreachable_is_a_connect_error() {
    let url = unreachable_url().await;
    let err = Scraper::default()
        .scrape(&url, Engine::Vllm)
        .await
        .unwrap_err();
    assert!(matches!(err, ScrapeError::Connect(_)), "{err:?}");
    assert_eq!(err.reason(), "connect");
}

#[tokio::test]
async fn garbage_is_a_parse_error() {
    let (url, server) = fixed_server(
        StatusCode::OK,
        "vllm:num_requests_waiting 1\n<html>oops</html>\n",
    )
    .await;
    let err = Scraper::default()
        .scrape(&url, Engine::Vllm)
        .await
        .unwrap_err();
    match err {
        ScrapeError::Parse(ParseError::Line { line, .. }) => assert_eq!(line, 2),
        other => panic!("expected a parse error, got {other:?}"),
    }
    server.abort();
}

#[tokio::test]
async fn error_status_is_a_status_error() {
    let (url, server) = fixed_server(
        StatusCode::SERVICE_UNAVAILABLE,
        "vllm:num_requests_waiting 1\n",
    )
    .await;
    let err = Scraper::default()
        .scrape(&url, Engine::Vllm)
        .await
        .unwrap_err();
    assert_eq!(err, ScrapeError::Status(503));
    server.abort();
}

#[tokio::test]
async fn oversized_pages_are_refused() {
    const PAGE: &str = "vllm:num_requests_waiting 1\nvllm:num_requests_running 2\n";
    let scraper = Scraper::new(DEFAULT_SCRAPE_TIMEOUT, 40);
    // Declared by Content-Length.
    let (url, server) = fixed_server(StatusCode::OK, PAGE).await;
    let err = scraper.scrape(&url, Engine::Vllm).await.unwrap_err();
    assert_eq!(err, ScrapeError::TooLarge { limit: 40 });
    server.abort();
    // Chunked, so only counting while reading catches it.
    let (url, server) = serve(|mut stream| async move {
        read_head(&mut stream).await;
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let chunk = format!("{:x}\r\n{PAGE}\r\n", PAGE.len());
        let _ = stream.write_all(head.as_bytes()).await;
        // Keep sending: the scraper must stop on its own.
        while stream.write_all(chunk.as_bytes()).await.is_ok() {}
    })
    .await;
    let err = scraper.scrape(&url, Engine::Vllm).await.unwrap_err();
    assert_eq!(err, ScrapeError::TooLarge { limit: 40 });
    server.abort();
    // The same page fits a larger cap.
    let (url, server) = fixed_server(StatusCode::OK, PAGE).await;
    let ok = Scraper::new(DEFAULT_SCRAPE_TIMEOUT, PAGE.len())
        .scrape(&url, Engine::Vllm)
        .await;
    assert_eq!(ok.unwrap().running, Some(2.0));
    server.abort();
}

#[tokio::test]
async fn silent_server_is_a_timeout() {
    let (url, server) = serve(|stream| async move {
        // Hold the connection open and never answer.
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let err = Scraper::new(timeout, 1 << 20)
        .scrape(&url, Engine::Vllm)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, ScrapeError::Timeout(timeout));
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(5),
        "{took:?}"
    );
    server.abort();
}

#[tokio::test]
async fn bad_urls_are_errors() {
    let scraper = Scraper::default();
    for url in [
        "",
        "not a url",
        "https://127.0.0.1:1/metrics",
        "/metrics",
        "ftp://h/x",
    ] {
        let err = scraper.scrape(url, Engine::Vllm).await.unwrap_err();
        assert!(
            matches!(err, ScrapeError::InvalidUrl(_)),
            "{url:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn scrape_all_keeps_order_and_errors() {
    let sim = start_sim(sim::Engine::Sglang).await;
    let (garbage, server) = fixed_server(StatusCode::OK, "{{{").await;
    let endpoints = vec![
        (unreachable_url().await, Engine::Vllm),
        (metrics_url(&sim), Engine::Sglang),
        (garbage.clone(), Engine::Tgi),
    ];
    let results = Scraper::default().scrape_all(&endpoints).await;
    let urls: Vec<_> = results.iter().map(|(u, _)| u.clone()).collect();
    let want: Vec<_> = endpoints.iter().map(|(u, _)| u.clone()).collect();
    assert_eq!(urls, want);
    let reasons: Vec<_> = results
        .iter()
        .map(|(_, r)| {
            r.as_ref()
                .map_err(ScrapeError::reason)
                .map(|r| r.queue_depth)
        })
        .collect();
    assert_eq!(reasons, [Err("connect"), Ok(Some(0.0)), Err("parse")]);
    assert!(Scraper::default().scrape_all(&[]).await.is_empty());
    server.abort();
}
