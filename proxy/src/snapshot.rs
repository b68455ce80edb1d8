//! A snapshot: one validated config plus everything pre-built from it, swapped atomically.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rollgate_config::{Cohort, Config, Ppm, Shadow};

use crate::endpoint::{EndpointRegistry, EndpointSet};
use crate::error::Reject;
use crate::fasthash::FastMap;
use crate::observe::{ModelStats, StatsRegistry};

/// One immutable routing state. Requests read it once (`ArcSwap::load_full`) and finish on it
/// even if a reload publishes a newer one meanwhile.
#[derive(Debug)]
pub struct Snapshot {
    config: Arc<Config>,
    revision: Arc<str>,
    models: FastMap<String, Arc<ModelRoute>>,
    default: Option<Arc<ModelRoute>>,
    /// The cohort body field read while looking for the model (see [`Snapshot::body_field`]).
    body_field: Option<String>,
    /// Pre-rendered `GET /v1/models` body.
    pub(crate) models_json: Bytes,
}

#[derive(Debug)]
pub(crate) struct ModelRoute {
    pub(crate) name: Arc<str>,
    pub(crate) stable: BackendRoute,
    pub(crate) candidate: Option<BackendRoute>,
    pub(crate) weight: Ppm,
    pub(crate) cohort: Cohort,
    pub(crate) shadow: Option<Shadow>,
    pub(crate) stats: Arc<ModelStats>,
}

/// Live traffic settings the control plane sets per model, overriding the config's `weight`
/// and shadow `sample` (the directives of the control → data plane boundary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directive {
    pub weight: Ppm,
    /// Share of stable-bound requests mirrored to the candidate; zero turns mirroring off.
    pub mirror: Ppm,
}

/// Directives by model name.
pub type Directives = HashMap<String, Directive>;

#[derive(Debug)]
pub(crate) struct BackendRoute {
    pub(crate) endpoints: EndpointSet,
}

// === impl Directive ===

impl Directive {
    /// The shadow settings under this directive: the config's limits with the directive's
    /// sample, or the defaults when the config has no `shadow:` section.
    fn mirror_shadow(&self, configured: Option<&Shadow>) -> Option<Shadow> {
        if self.mirror.is_zero() {
            return None;
        }
        Some(match configured {
            Some(s) => Shadow {
                sample: self.mirror,
                ..s.clone()
            },
            None => Shadow {
                sample: self.mirror,
                saturated_sample: Shadow::DEFAULT_SATURATED_SAMPLE,
                max_inflight: Shadow::DEFAULT_MAX_INFLIGHT,
                max_body: Shadow::DEFAULT_MAX_BODY,
                buffer: Shadow::DEFAULT_BUFFER,
                timeout: Shadow::DEFAULT_TIMEOUT,
                capture: Shadow::DEFAULT_CAPTURE,
            },
        })
    }
}

// === impl Snapshot ===

impl Snapshot {
    pub(crate) fn build(
        config: Arc<Config>,
        revision: &str,
        directives: &Directives,
        stats: &StatsRegistry,
        endpoints: &EndpointRegistry,
    ) -> Snapshot {
        let mut models = FastMap::with_capacity_and_hasher(config.models.len(), Default::default());
        let mut default = None;
        for m in &config.models {
            let affinity = m.affinity.as_ref().map(|a| a.load_factor);
            let backend = |b: &rollgate_config::Backend| BackendRoute {
                endpoints: EndpointSet::new(
                    b.endpoints.iter().map(|e| endpoints.get(e)).collect(),
                    affinity,
                ),
            };
            let route = Arc::new(ModelRoute {
                name: Arc::from(m.name.as_str()),
                stable: backend(&m.stable),
                candidate: m.candidate.as_ref().map(backend),
                weight: match (&m.candidate, directives.get(&m.name)) {
                    (None, _) => Ppm::ZERO,
                    (Some(_), Some(d)) => d.weight,
                    (Some(_), None) => m.weight,
                },
                cohort: m.cohort.clone(),
                shadow: match directives.get(&m.name) {
                    Some(d) => d.mirror_shadow(m.shadow.as_ref()),
                    None => m.shadow.clone(),
                }
                .filter(|_| m.candidate.is_some()),
                stats: stats.model(&m.name),
            });
            if m.default {
                default = Some(route.clone());
            }
            models.insert(m.name.clone(), route);
        }
        let models_json = render_models(&config);
        let body_field = config.models.iter().find_map(|m| match &m.cohort {
            Cohort::BodyField(f) => Some(f.clone()),
            _ => None,
        });
        Snapshot {
            config,
            revision: Arc::from(revision),
            models,
            default,
            body_field,
            models_json,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The config revision this snapshot was built from (a content hash or a Git commit).
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The body field scanned for a cohort key when the model itself comes from the body. One
    /// scan serves every model, so when models name different fields the first one is read
    /// (a model found through a routing header always gets its own field).
    pub(crate) fn body_field(&self) -> Option<&str> {
        self.body_field.as_deref()
    }

    pub(crate) fn model(&self, name: &str) -> Option<&Arc<ModelRoute>> {
        self.models.get(name)
    }

    pub(crate) fn default_model(&self) -> Option<&Arc<ModelRoute>> {
        self.default.as_ref()
    }

    /// `GET /v1/models/{id}`'s body, or the 404 for a model this config does not serve.
    pub(crate) fn model_json(&self, id: &str) -> Result<Bytes, Reject> {
        if self.models.contains_key(id) {
            Ok(Bytes::from(model_entry(id).to_string()))
        } else {
            Err(Reject::UnknownModel(id.to_owned()))
        }
    }
}

fn render_models(config: &Config) -> Bytes {
    let data: Vec<_> = config.models.iter().map(|m| model_entry(&m.name)).collect();
    let body = serde_json::json!({ "object": "list", "data": data });
    Bytes::from(body.to_string())
}

/// One model as `GET /v1/models` lists it.
fn model_entry(name: &str) -> serde_json::Value {
    serde_json::json!({ "id": name, "object": "model", "created": 0, "owned_by": "rollgate" })
}

/// What `GET /v1/models/{id}` names: the rest of the path, percent-decoded (`%2F` for a `/` in
/// an id, as some clients write it). `None` for any other path or an undecodable id.
pub(crate) fn model_id_in(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    rollgate_config::percent_decode(path.strip_prefix("/v1/models/")?).ok()
}

#[cfg(test)]
mod tests {
    use super::model_id_in;

    #[test]
    fn a_model_path_names_its_id_percent_decoded() {
        let cases = [
            ("/v1/models/m", Some("m")),
            (
                "/v1/models/meta-llama/Llama-3.1-8B",
                Some("meta-llama/Llama-3.1-8B"),
            ),
            (
                "/v1/models/meta-llama%2FLlama-3.1-8B",
                Some("meta-llama/Llama-3.1-8B"),
            ),
            ("/v1/models/%zz", None),
            ("/v1/models/%2", None),
            ("/v1/models/%FF", None),
            ("/v1/models", None),
            ("/v1/chat/completions", None),
        ];
        for (path, want) in cases {
            assert_eq!(model_id_in(path).as_deref(), want, "{path}");
        }
    }
}
