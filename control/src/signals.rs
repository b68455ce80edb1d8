//! Signal sources the rollout driver reads besides the data plane's own observations: candidate
//! health, and (through the engine scraper) queue time and GPU memory.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate_config::{Engine, Model};

use crate::rollout::{Dist, Health, ModelSignals, SignalSource};

pub mod engine;
pub mod promql;
pub mod promtext;

/// Per-check timeout: a model server that cannot answer its health check in this long is not
/// ready for users.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Cumulative queue-time histograms of one endpoint, oldest first.
type Readings = VecDeque<(Instant, engine::Hist)>;

/// Queue-time quantiles are computed over this trailing window of engine histograms.
const QUEUE_WINDOW: Duration = Duration::from_secs(30);

/// Reads signals over HTTP from the candidate's endpoints: health, and the engine's `/metrics`
/// (queue time, GPU memory — from the engine, the simulator, a DCGM exporter or a
/// `rollgate gpu-agent` on the same page).
#[derive(Clone, Debug)]
pub struct HttpSignals {
    client: Client<HttpConnector, Empty<Bytes>>,
    scraper: engine::Scraper,
    /// Per endpoint URL: cumulative queue-time histograms seen in the trailing window.
    history: Arc<Mutex<HashMap<String, Readings>>>,
}

// === impl HttpSignals ===

impl Default for HttpSignals {
    fn default() -> Self {
        HttpSignals {
            client: Client::builder(TokioExecutor::new()).build_http(),
            scraper: engine::Scraper::default(),
            history: Arc::default(),
        }
    }
}

impl HttpSignals {
    /// All candidate endpoints healthy → Passing; none → Failing; some → Unknown (wait).
    pub async fn health(&self, model: &Model) -> Health {
        let Some(c) = &model.candidate else {
            return Health::Unknown;
        };
        let path = health_path(c.engine);
        let mut ok = 0;
        for ep in &c.endpoints {
            if self.get_ok(&format!("{}{path}", ep.url)).await {
                ok += 1;
            }
        }
        match ok {
            0 => Health::Failing,
            n if n == c.endpoints.len() => Health::Passing,
            _ => Health::Unknown,
        }
    }

    async fn get_ok(&self, url: &str) -> bool {
        let Ok(uri) = url.parse::<hyper::Uri>() else {
            return false;
        };
        let req = hyper::Request::get(uri).body(Empty::new());
        let Ok(req) = req else { return false };
        let call = async {
            let resp = self.client.request(req).await.ok()?;
            let ok = resp.status().is_success();
            // Read the (small) body so the connection can be reused.
            resp.into_body().collect().await.ok()?;
            Some(ok)
        };
        matches!(
            tokio::time::timeout(HEALTH_TIMEOUT, call).await,
            Ok(Some(true))
        )
    }
}

/// The readiness path each engine serves.
fn health_path(engine: Engine) -> &'static str {
    match engine {
        Engine::Triton => "/v2/health/ready",
        Engine::Openai => "/v1/models",
        Engine::Vllm | Engine::Sglang | Engine::Tgi => "/health",
    }
}

impl HttpSignals {
    /// Scrapes every candidate endpoint: queue time over the trailing window and the highest
    /// GPU memory share. Any unreadable endpoint makes both a metric error.
    async fn engine(
        &self,
        model: &Model,
    ) -> (Result<Option<Dist>, String>, Result<Option<f64>, String>) {
        let Some(c) = &model.candidate else {
            return (Ok(None), Ok(None));
        };
        // Each endpoint's own page, plus the backend's extra GPU pages (gpu-agent, DCGM).
        let pages = c
            .gpu_metrics
            .iter()
            .map(|p| (p.url.clone(), engine::Engine::Openai));
        let targets: Vec<(String, engine::Engine)> = c
            .endpoints
            .iter()
            .map(|e| (format!("{}/metrics", e.url), c.engine.into()))
            .chain(pages)
            .collect();
        let now = Instant::now();
        let mut windows = Vec::new();
        let mut gpu: Option<f64> = None;
        for (url, result) in self.scraper.scrape_all(&targets).await {
            let reading = match result {
                Ok(r) => r,
                Err(e) => {
                    let why = format!("{url}: {e}");
                    return (Err(why.clone()), Err(why));
                }
            };
            if let Some(ratio) = reading.gpu_memory_ratio() {
                gpu = Some(gpu.map_or(ratio, |g| g.max(ratio)));
            }
            if let Some(h) = reading.queue_time {
                windows.push(self.window(&url, now, h));
            }
        }
        let queue = windows
            .into_iter()
            .reduce(|a, b| a.merge(&b))
            .map(|h| Dist {
                count: h.count,
                sum: h.sum,
                buckets: h.buckets,
            });
        (Ok(queue), Ok(gpu))
    }

    /// Every PromQL gate's value, by query name.
    async fn promql(&self, model: &Model) -> Vec<(String, Result<f64, String>)> {
        let Some(p) = model.rollout.as_ref().and_then(|r| r.gates.promql.as_ref()) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(p.queries.len());
        for q in &p.queries {
            let v = promql::query(&self.client, &p.url, &q.query, &model.name, p.timeout).await;
            out.push((q.name.clone(), v));
        }
        out
    }

    /// The histogram's growth since the oldest reading inside the trailing window.
    fn window(&self, url: &str, now: Instant, latest: engine::Hist) -> engine::Hist {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = history.entry(url.to_owned()).or_default();
        while seen
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > QUEUE_WINDOW)
        {
            seen.pop_front();
        }
        // The first reading has no baseline: an empty window, not the engine's whole history.
        let delta = seen
            .front()
            .map_or_else(|| latest.since(&latest), |(_, first)| latest.since(first));
        seen.push_back((now, latest));
        delta
    }
}

impl SignalSource for HttpSignals {
    fn read<'a>(
        &'a self,
        model: &'a Model,
    ) -> Pin<Box<dyn Future<Output = ModelSignals> + Send + 'a>> {
        Box::pin(async move {
            let (queue_time, gpu_memory) = self.engine(model).await;
            let promql = self.promql(model).await;
            ModelSignals {
                health: self.health(model).await,
                promql,
                queue_time,
                gpu_memory,
            }
        })
    }
}
