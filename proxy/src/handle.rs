//! The data plane's public handle: publish snapshots, read observations.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use rollgate_config::Config;

use crate::access_log::AccessLog;
use crate::endpoint::EndpointRegistry;
use crate::observe::{ModelObservation, ProxyCollector, StatsRegistry};
use crate::shadow::{ShadowPair, ShadowPairs};
use crate::snapshot::{Directive, Directives, Snapshot};

/// Cheap to clone; shared by every worker, the control loop and the admin API.
#[derive(Clone, Debug)]
pub struct ProxyHandle {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    /// Serialises publishing (config reloads and directives) so that one build always starts
    /// from the latest of both; never taken on the request path.
    publish: Mutex<Published>,
    pub(crate) stats: Arc<StatsRegistry>,
    pub(crate) endpoints: Arc<EndpointRegistry>,
    pub(crate) pairs: Arc<ShadowPairs>,
    pub(crate) access: AccessLog,
}

#[derive(Debug)]
struct Published {
    config: Arc<Config>,
    revision: String,
    directives: Directives,
}

/// Shadow pairs kept for scoring; the oldest are dropped and counted
/// (`rollgate_proxy_shadow_pairs_unscored_total`). The driver takes them every 100 ms, so this
/// bounds one scoring batch (the scorer shares cores with the workers: it works in 0.5 ms
/// slices, 5 ms a batch at most) and the pairs scored per second (640: ample for any
/// correctness gate; a 50 ms shadow at the default 64 in flight answers about twice that).
pub const SHADOW_PAIRS_KEPT: usize = 64;

// === impl ProxyHandle ===

impl ProxyHandle {
    /// Builds the first snapshot and registers the data-plane metrics (`rollgate_proxy_*`).
    pub fn new(config: Config, revision: &str, registry: &mut Registry) -> ProxyHandle {
        let stats = Arc::new(StatsRegistry::default());
        let endpoints = Arc::new(EndpointRegistry::new());
        let config = Arc::new(config);
        let directives = Directives::new();
        let snapshot = Snapshot::build(config.clone(), revision, &directives, &stats, &endpoints);
        let published = Published {
            config,
            revision: revision.to_owned(),
            directives,
        };
        let pairs = Arc::new(ShadowPairs::new(SHADOW_PAIRS_KEPT));
        let access = AccessLog::default();
        access.configure(published.config.access_log.as_ref());
        registry.register_collector(Box::new(ProxyCollector {
            stats: stats.clone(),
            endpoints: endpoints.clone(),
            pairs: pairs.clone(),
            access: access.counts.clone(),
        }));
        ProxyHandle {
            shared: Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(snapshot),
                publish: Mutex::new(published),
                stats,
                endpoints,
                pairs,
                access,
            }),
        }
    }

    /// Writes the access log's queued lines and stops its writer: call once, when the data
    /// plane has drained and the process is about to exit.
    pub fn close_access_log(&self) {
        self.shared.access.close();
    }

    /// Builds a snapshot from an already validated config and publishes it in one swap.
    /// Requests in flight finish on the snapshot they started with.
    pub fn apply(&self, config: Config, revision: &str) -> Arc<Snapshot> {
        let mut p = self.lock();
        self.shared.access.configure(config.access_log.as_ref());
        p.config = Arc::new(config);
        revision.clone_into(&mut p.revision);
        self.publish(&p)
    }

    /// Sets (or with `None` clears) a model's live weight and mirror, in one snapshot swap.
    pub fn set_directive(&self, model: &str, directive: Option<Directive>) -> Arc<Snapshot> {
        let mut p = self.lock();
        match directive {
            Some(d) => p.directives.insert(model.to_owned(), d),
            None => p.directives.remove(model),
        };
        self.publish(&p)
    }

    /// Sets (or with `None` clears) several models' directives in one snapshot swap: a step
    /// that moves many rollouts builds the routes once, not once per model.
    pub fn set_directives(
        &self,
        changes: impl IntoIterator<Item = (String, Option<Directive>)>,
    ) -> Arc<Snapshot> {
        let mut p = self.lock();
        for (model, directive) in changes {
            match directive {
                Some(d) => p.directives.insert(model, d),
                None => p.directives.remove(&model),
            };
        }
        self.publish(&p)
    }

    /// The directives in force.
    pub fn directives(&self) -> Directives {
        self.lock().directives.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Published> {
        self.shared
            .publish
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, p: &Published) -> Arc<Snapshot> {
        let s = &self.shared;
        let snapshot = Arc::new(Snapshot::build(
            p.config.clone(),
            &p.revision,
            &p.directives,
            &s.stats,
            &s.endpoints,
        ));
        s.snapshot.store(snapshot.clone());
        // What the new config no longer names leaves the registries (and `/metrics`).
        let config = &p.config;
        let names: std::collections::HashSet<&str> =
            config.models.iter().map(|m| m.name.as_str()).collect();
        s.stats.retain(|name| names.contains(name));
        let urls: std::collections::HashSet<&str> = (config.models.iter())
            .flat_map(|m| std::iter::once(&m.stable).chain(&m.candidate))
            .flat_map(|b| b.endpoints.iter().map(|e| e.url.as_str()))
            .collect();
        s.endpoints.retain(|url| urls.contains(url));
        snapshot
    }

    /// The snapshot serving now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Cumulative observations of one configured model: what a rollout's gates read, without
    /// copying every other model's histograms.
    pub fn observe_model(&self, model: &str) -> Option<ModelObservation> {
        self.shared.stats.get(model).map(|m| m.observe())
    }

    /// Cumulative observations of every model configured.
    pub fn observe(&self) -> Vec<ModelObservation> {
        self.shared
            .stats
            .all()
            .iter()
            .map(|m| m.observe())
            .collect()
    }

    /// Resolves when a candidate request fails (or already has since the last call): the
    /// control loop's early wake-up for hard breaches.
    pub async fn candidate_failure(&self) {
        self.shared.stats.breach.notified().await;
    }

    /// Takes the completed shadow pairs collected so far (for scoring).
    pub fn take_shadow_pairs(&self) -> Vec<ShadowPair> {
        self.shared.pairs.take()
    }

    /// Counts pairs the scorer took but dropped unscored (its time budget was spent) in
    /// `rollgate_proxy_shadow_pairs_unscored_total`, with those dropped before it took them.
    pub fn count_unscored_pairs(&self, n: u64) {
        self.shared
            .pairs
            .unscored
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}
