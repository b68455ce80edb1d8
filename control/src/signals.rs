//! Signal sources the rollout driver reads besides the data plane's own observations: candidate
//! health, and (through the engine scraper) queue time and GPU memory.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate_config::{Engine, Model};

use crate::rollout::{Health, ModelSignals, SignalSource};

/// Per-check timeout: a model server that cannot answer its health check in this long is not
/// ready for users.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads signals over HTTP from the candidate's endpoints.
#[derive(Clone, Debug)]
pub struct HttpSignals {
    client: Client<HttpConnector, Empty<Bytes>>,
}

// === impl HttpSignals ===

impl Default for HttpSignals {
    fn default() -> Self {
        HttpSignals {
            client: Client::builder(TokioExecutor::new()).build_http(),
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

impl SignalSource for HttpSignals {
    fn read<'a>(
        &'a self,
        model: &'a Model,
    ) -> Pin<Box<dyn Future<Output = ModelSignals> + Send + 'a>> {
        Box::pin(async move {
            ModelSignals {
                health: self.health(model).await,
                queue_time: Err("engine metrics are not scraped yet".into()),
                gpu_memory: Err("GPU memory is not read yet".into()),
            }
        })
    }
}
