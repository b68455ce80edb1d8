//! Signal sources the rollout driver reads besides the data plane's own observations: candidate
//! health, and (through the engine scraper) queue time and GPU memory.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate_config::{Engine, Model};

use crate::gpu::GpuSnapshot;
use crate::rollout::{Dist, Health, ModelSignals, SignalSource};

pub mod engine;
pub mod promql;
pub mod promtext;

/// Per-check timeout: a model server that cannot answer its health check in this long is not
/// ready for users.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest gpu-agent `/gpus` document read for its `reason`: a few GPUs and their processes
/// take a few KiB.
const AGENT_DOC_MAX_BYTES: usize = 64 * 1024;

/// Cumulative queue-time histograms of one endpoint, oldest first.
type Readings = VecDeque<(Instant, engine::Hist)>;

/// Queue-time quantiles are computed over this trailing window of engine histograms.
const QUEUE_WINDOW: Duration = Duration::from_secs(30);

/// Reads signals over HTTP from the candidate's endpoints: health, and the `/metrics` pages its
/// gates need (queue time from the engine's own; GPU memory from the backend's `gpu_metrics`
/// pages — a `rollgate gpu-agent`, a DCGM exporter — or else from the engine's own).
#[derive(Clone, Debug)]
pub struct HttpSignals {
    client: Client<HttpConnector, Empty<Bytes>>,
    scraper: engine::Scraper,
    /// Per endpoint URL: cumulative queue-time histograms seen in the trailing window.
    history: Arc<Mutex<HashMap<String, Readings>>>,
}

/// The signals a scraped page is read for; its errors make only these unreadable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Feeds {
    queue: bool,
    gpu: bool,
}

/// One signal gathered over the pages that feed it.
struct Gathered<T> {
    /// One per page that carries the signal.
    values: Vec<T>,
    /// The first page that could not be read, and how many more could not.
    error: Option<(String, usize)>,
    /// Pages read that lack the signal, and why.
    missing: Vec<String>,
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
    /// All candidate endpoints healthy → Passing; none → Failing; some → Partial (wait). A
    /// failure names the last check that failed and its answer.
    pub async fn health(&self, model: &Model) -> Health {
        let Some(c) = &model.candidate else {
            return Health::Unknown;
        };
        let path = health_path(c.engine);
        let (mut ok, mut failed) = (0, None);
        for ep in &c.endpoints {
            let url = format!("{}{path}", ep.url);
            match self.check(&url).await {
                Ok(()) => ok += 1,
                Err(why) => failed = Some(format!("GET {url} {why}")),
            }
        }
        match failed {
            None if ok > 0 => Health::Passing,
            None => Health::Failing("the candidate has no endpoint".into()),
            Some(check) if ok == 0 => Health::Failing(check),
            Some(check) => Health::Partial(check),
        }
    }

    /// One health check: `Err` says how it failed (`answered 404`, `failed: connect…`).
    async fn check(&self, url: &str) -> Result<(), String> {
        let uri = url
            .parse::<hyper::Uri>()
            .map_err(|e| format!("failed: {e}"))?;
        let req = hyper::Request::get(uri)
            .body(Empty::new())
            .map_err(|e| format!("failed: {e}"))?;
        let call = async {
            let resp = self.client.request(req).await;
            let resp = resp.map_err(|e| format!("failed: {}", engine::chain(&e)))?;
            let status = resp.status();
            // Read the (small) body so the connection can be reused.
            let body = resp.into_body().collect().await;
            body.map_err(|e| format!("failed: {}", engine::chain(&e)))?;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("answered {}", status.as_u16()))
            }
        };
        tokio::time::timeout(HEALTH_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(format!("got no answer within {HEALTH_TIMEOUT:?}")))
    }
}

/// The pages the model's gates need, each with the engine it is read as and what it feeds:
/// each candidate endpoint's own `/metrics` for queue time (`queue_time_p95`), and for GPU
/// memory (`gpu_memory_used`) the backend's `gpu_metrics` pages, or without any the endpoints'
/// own pages (Triton's reports GPU memory). A page that feeds no gate is not scraped: an
/// `engine: openai` server, whose page has nothing rollgate reads, need not serve `/metrics` at
/// all when a gpu-agent's page carries its GPU memory.
fn pages(model: &Model) -> Vec<(String, engine::Engine, Feeds)> {
    let (Some(c), Some(r)) = (&model.candidate, &model.rollout) else {
        return Vec::new();
    };
    let want_gpu = r.gates.gpu_memory_used.is_some();
    let own = Feeds {
        queue: r.gates.queue_time_p95.is_some(),
        gpu: want_gpu && c.gpu_metrics.is_empty(),
    };
    let mut out = Vec::new();
    if own != Feeds::default() {
        let own_page =
            |e: &rollgate_config::Endpoint| (format!("{}/metrics", e.url), c.engine.into(), own);
        out.extend(c.endpoints.iter().map(own_page));
    }
    if want_gpu {
        let gpu = Feeds {
            queue: false,
            gpu: true,
        };
        out.extend((c.gpu_metrics.iter()).map(|p| (p.url.clone(), engine::Engine::Openai, gpu)));
    }
    out
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
    /// Scrapes the pages the model's gates need (see [`pages`]): queue time over the trailing
    /// window and the highest GPU memory share. A page that cannot be read makes the signals it
    /// feeds a metric error, and only those; so does a page that lacks the signal wanted.
    async fn engine(
        &self,
        model: &Model,
    ) -> (Result<Option<Dist>, String>, Result<Option<f64>, String>) {
        let pages = pages(model);
        if pages.is_empty() {
            return (Ok(None), Ok(None));
        }
        let targets: Vec<(String, engine::Engine)> =
            pages.iter().map(|(url, e, _)| (url.clone(), *e)).collect();
        let now = Instant::now();
        let (mut queue, mut gpu) = (Gathered::default(), Gathered::default());
        let scraped = self.scraper.scrape_all(&targets).await;
        for ((url, result), (_, _, feeds)) in scraped.into_iter().zip(&pages) {
            let reading = match result {
                Ok(r) => r,
                Err(e) => {
                    let why = format!("{url}: {e}");
                    queue.failed(feeds.queue, &why);
                    gpu.failed(feeds.gpu, &why);
                    continue;
                }
            };
            let (ratio, agent) = (reading.gpu_memory_ratio(), reading.gpu_agent_available);
            if feeds.queue {
                match reading.queue_time {
                    Some(h) => queue.found(self.window(&url, now, h)),
                    None => queue.missing(format!("{url} has no queue-time histogram")),
                }
            }
            if feeds.gpu {
                match ratio {
                    Some(ratio) => gpu.found(ratio),
                    None if agent == Some(false) => {
                        let why = self.agent_reason(&url).await;
                        gpu.missing(format!("{url}: gpu-agent reports no GPU: {why}"));
                    }
                    None => gpu.missing(format!("{url} has no GPU memory series")),
                }
            }
        }
        let queue = queue.into_result(|a, b| a.merge(&b)).map(|q| {
            q.map(|h| Dist {
                count: h.count,
                sum: h.sum,
                buckets: h.buckets,
            })
        });
        (queue, gpu.into_result(f64::max))
    }

    /// Why a `rollgate gpu-agent` whose page says `rollgate_gpu_available 0` has no GPU: the
    /// `reason` of its `/gpus` beside the `/metrics` page scraped.
    async fn agent_reason(&self, metrics_url: &str) -> String {
        let unknown = || "rollgate_gpu_available is 0".to_owned();
        let Some(base) = metrics_url.strip_suffix("/metrics") else {
            return unknown();
        };
        let Ok(uri) = format!("{base}/gpus").parse::<hyper::Uri>() else {
            return unknown();
        };
        let Ok(req) = hyper::Request::get(uri).body(Empty::new()) else {
            return unknown();
        };
        let call = async {
            let resp = self.client.request(req).await.ok()?;
            let body = Limited::new(resp.into_body(), AGENT_DOC_MAX_BYTES);
            let body = body.collect().await.ok()?.to_bytes();
            serde_json::from_slice::<GpuSnapshot>(&body).ok()?.reason
        };
        let reason = tokio::time::timeout(self.scraper.timeout(), call).await;
        reason.ok().flatten().unwrap_or_else(unknown)
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

// === impl Gathered ===

impl<T> Default for Gathered<T> {
    fn default() -> Self {
        Gathered {
            values: Vec::new(),
            error: None,
            missing: Vec::new(),
        }
    }
}

impl<T> Gathered<T> {
    /// A page this signal may come from could not be read (`feeds`: whether it feeds this one).
    fn failed(&mut self, feeds: bool, why: &str) {
        match &mut self.error {
            _ if !feeds => {}
            Some((_, more)) => *more += 1,
            None => self.error = Some((why.to_owned(), 0)),
        }
    }

    fn missing(&mut self, why: String) {
        self.missing.push(why);
    }

    fn found(&mut self, v: T) {
        self.values.push(v);
    }

    /// `combine`: how two pages' values make one (merge, take the fullest). Lacking the signal
    /// on every page read is an error too: the gate needs it.
    fn into_result(self, combine: impl Fn(T, T) -> T) -> Result<Option<T>, String> {
        match self.error {
            Some((why, 0)) => Err(why),
            Some((why, more)) => Err(format!("{why} (and {more} more unreadable)")),
            None if self.values.is_empty() && !self.missing.is_empty() => {
                Err(self.missing.join("; "))
            }
            None => Ok(self.values.into_iter().reduce(combine)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests;
