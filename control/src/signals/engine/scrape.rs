//! Fetching `/metrics` pages: one pooled HTTP/1 client, a deadline over the whole exchange and a
//! size cap enforced while reading, so a slow or oversized endpoint costs a bounded amount.

use std::{error::Error as StdError, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{header, Request, Uri};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use tokio::task::JoinSet;

use super::{Engine, EngineReading};
use crate::signals::promtext::{self, ParseError};

/// A gate ticks about once a second; a page that takes longer than two is as good as missing.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle connections per endpoint: scrapes of one endpoint do not overlap, so one suffices; the
/// second covers a tick that starts before the previous response is fully released.
const IDLE_PER_HOST: usize = 2;

/// Ask for the classic text format: Python servers answer OpenMetrics when asked for it, and
/// the parser prefers the format it was written for.
const ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// Scrapes engine `/metrics` endpoints. Cheap to clone: clones share the connection pool.
#[derive(Clone, Debug)]
pub struct Scraper {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    max_page_bytes: usize,
}

/// Why a scrape produced no reading. Carries no URL: the caller knows which endpoint it asked,
/// and endpoint URLs stay out of error text that may reach a log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    #[error("invalid metrics URL: {0}")]
    InvalidUrl(String),
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("page is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The connection failed after it was made (reset, truncated body, bad HTTP).
    #[error("transport failed: {0}")]
    Transport(String),
    #[error("malformed page: {0}")]
    Parse(ParseError),
    /// The scrape task panicked or was cancelled; only `scrape_all` spawns tasks.
    #[error("scrape task ended early: {0}")]
    Task(String),
}

// === impl Scraper ===

impl Default for Scraper {
    fn default() -> Self {
        Self::new(DEFAULT_SCRAPE_TIMEOUT, promtext::MAX_PAGE_BYTES)
    }
}

impl Scraper {
    /// `timeout` bounds the whole exchange (connect, head, body); `max_page_bytes` the body.
    pub fn new(timeout: Duration, max_page_bytes: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .build(connector);
        Self {
            client,
            timeout,
            max_page_bytes,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Scrapes `url` (`http://host:port/metrics`) and reads it as `engine`'s page.
    pub async fn scrape(&self, url: &str, engine: Engine) -> Result<EngineReading, ScrapeError> {
        self.scrape_model(url, engine, None).await
    }

    /// As [`Scraper::scrape`], reading only `model`'s series where the engine labels by model.
    pub async fn scrape_model(
        &self,
        url: &str,
        engine: Engine,
        model: Option<&str>,
    ) -> Result<EngineReading, ScrapeError> {
        let result = self.fetch(url).await.and_then(|body| {
            let samples =
                promtext::parse_bytes_filtered(&body, self.max_page_bytes, |n| engine.wants(n))?;
            Ok(EngineReading::from_samples(&samples, engine, model))
        });
        if let Err(e) = &result {
            tracing::debug!(engine = engine.as_str(), reason = e.reason(), error = %e, "scrape failed");
        }
        result
    }

    /// Scrapes every endpoint at once; results come back in the order given. Each scrape is
    /// bounded by the timeout, so the whole call is too.
    pub async fn scrape_all(
        &self,
        endpoints: &[(String, Engine)],
    ) -> Vec<(String, Result<EngineReading, ScrapeError>)> {
        let mut tasks = JoinSet::new();
        for (i, (url, engine)) in endpoints.iter().enumerate() {
            let (scraper, url, engine) = (self.clone(), url.clone(), *engine);
            tasks.spawn(async move { (i, scraper.scrape(&url, engine).await) });
        }
        let mut results: Vec<Option<Result<EngineReading, ScrapeError>>> =
            endpoints.iter().map(|_| None).collect();
        let mut lost = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, result)) => {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(result);
                    }
                }
                // A JoinError does not say which task it was; the empty slot does.
                Err(e) => lost = Some(e.to_string()),
            }
        }
        endpoints
            .iter()
            .zip(results)
            .map(|((url, _), result)| {
                let result = result
                    .unwrap_or_else(|| Err(ScrapeError::Task(lost.clone().unwrap_or_default())));
                (url.clone(), result)
            })
            .collect()
    }

    /// The body of a 2xx answer, at most `max_page_bytes`.
    async fn fetch(&self, url: &str) -> Result<Bytes, ScrapeError> {
        let uri = parse_url(url)?;
        let request = Request::get(uri)
            .header(header::ACCEPT, ACCEPT)
            .header(header::USER_AGENT, "rollgate-scraper")
            .body(Empty::new())
            .map_err(|e| ScrapeError::InvalidUrl(e.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    ScrapeError::Connect(chain(&e))
                } else {
                    ScrapeError::Transport(chain(&e))
                }
            })?;
            let status = response.status();
            if !status.is_success() {
                return Err(ScrapeError::Status(status.as_u16()));
            }
            read_capped(response.into_body(), self.max_page_bytes).await
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ScrapeError::Timeout(self.timeout))?
    }
}

/// Only plain `http://host[:port]/path` is scraped: engines serve metrics without TLS.
fn parse_url(url: &str) -> Result<Uri, ScrapeError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| ScrapeError::InvalidUrl(e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(ScrapeError::InvalidUrl("only http:// is supported".into()));
    }
    if uri.authority().is_none() {
        return Err(ScrapeError::InvalidUrl("no host".into()));
    }
    Ok(uri)
}

/// Reads the body, failing as soon as it passes `limit` rather than after buffering it all.
async fn read_capped(mut body: hyper::body::Incoming, limit: usize) -> Result<Bytes, ScrapeError> {
    let declared = hyper::body::Body::size_hint(&body).exact();
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ScrapeError::TooLarge { limit });
    }
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ScrapeError::Transport(chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ScrapeError::TooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.into())
}

/// An error and its causes on one line: hyper's top-level messages ("client error (Connect)")
/// hide the part worth reading ("Connection refused").
pub(crate) fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

// === impl ScrapeError ===

impl ScrapeError {
    /// A bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "invalid_url",
            Self::Connect(_) => "connect",
            Self::Timeout(_) => "timeout",
            Self::Status(_) => "status",
            Self::TooLarge { .. } => "too_large",
            Self::Transport(_) => "transport",
            Self::Parse(_) => "parse",
            Self::Task(_) => "task",
        }
    }
}

impl From<ParseError> for ScrapeError {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::TooLarge { limit } => Self::TooLarge { limit },
            other => Self::Parse(other),
        }
    }
}
