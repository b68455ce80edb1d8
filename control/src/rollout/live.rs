//! The traffic a model is served with now, as the data plane builds it: a rollout's directive
//! when one is set, else the config's `weight` and `shadow.sample` (nothing without a
//! candidate). A model no rollout directs (Idle: no plan, or none started) reports it, so that
//! `/rollouts`, `ctl status` and `rollgate_rollout_*` say what `/status` says and users get.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rollgate_config::{Model, Ppm};
use rollgate_proxy::{Directive, ProxyHandle};

use super::decide::Phase;
use super::driver::{fingerprint, RolloutStatus};

/// A model's candidate weight and mirror sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traffic {
    pub weight: Ppm,
    pub mirror: Ppm,
}

/// The statuses the driver publishes, read with the live traffic of Idle models: the driver
/// republishes on its steps, but a reload changes the configured split at once.
#[derive(Clone, Debug)]
pub(crate) struct Statuses {
    published: Arc<RwLock<BTreeMap<String, RolloutStatus>>>,
    /// Bumped on every write: readers that rebuild from the statuses (the GitOps publisher)
    /// skip the rebuild while it has not moved.
    version: Arc<AtomicU64>,
    proxy: ProxyHandle,
}

/// What the data plane serves `m` with under directive `d` (`rollgate_proxy::Snapshot` builds
/// its routes by the same rule).
pub fn traffic(m: &Model, d: Option<&Directive>) -> Traffic {
    match (&m.candidate, d) {
        (None, _) => Traffic {
            weight: Ppm::ZERO,
            mirror: Ppm::ZERO,
        },
        (Some(_), Some(d)) => Traffic {
            weight: d.weight,
            mirror: d.mirror,
        },
        (Some(_), None) => Traffic {
            weight: m.weight,
            mirror: m.shadow.as_ref().map_or(Ppm::ZERO, |s| s.sample),
        },
    }
}

/// Gives an Idle status the candidate, weight and mirror `m` is served with. Other phases
/// already carry the traffic their rollout set.
pub(crate) fn overlay(s: &mut RolloutStatus, m: &Model, d: Option<&Directive>) {
    if s.phase != Phase::Idle {
        return;
    }
    let t = traffic(m, d);
    s.candidate = m.candidate.as_ref().map(fingerprint);
    s.weight = t.weight.to_string();
    s.mirror = t.mirror.to_string();
}

// === impl Statuses ===

impl Statuses {
    pub(crate) fn new(proxy: ProxyHandle) -> Statuses {
        Statuses {
            published: Arc::default(),
            version: Arc::default(),
            proxy,
        }
    }

    /// Every published status, in model order, Idle ones with their live traffic.
    pub(crate) fn read(&self) -> Vec<RolloutStatus> {
        let mut all: Vec<RolloutStatus> = self
            .published
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let snap = self.proxy.snapshot();
        let directives = self.proxy.directives();
        // By name: a scan of the config per status made `/rollouts` quadratic in the models.
        let models: HashMap<&str, &Model> = snap
            .config()
            .models
            .iter()
            .map(|m| (m.name.as_str(), m))
            .collect();
        for s in &mut all {
            if let Some(m) = models.get(s.model.as_str()) {
                overlay(s, m, directives.get(&m.name));
            }
        }
        all
    }

    /// One model's published status, with its live traffic when Idle (what [`Statuses::read`]
    /// has for it, without copying every other model's).
    pub(crate) fn read_one(&self, m: &Model, d: Option<&Directive>) -> Option<RolloutStatus> {
        let mut s = self
            .published
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&m.name)
            .cloned()?;
        overlay(&mut s, m, d);
        Some(s)
    }

    /// Changes after every update (see [`Statuses::update`]).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Changes the published statuses. The version moves after the change: a reader that
    /// sees the new version reads the new statuses.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut BTreeMap<String, RolloutStatus>) -> R) -> R {
        let r = f(&mut self
            .published
            .write()
            .unwrap_or_else(PoisonError::into_inner));
        self.version.fetch_add(1, Ordering::AcqRel);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_traffic_is_the_directive_else_the_config_and_nothing_without_a_candidate() {
        let yaml = "listen: 127.0.0.1:0\nmodels:\n  - name: shadowed\n    \
                    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n    \
                    candidate: { endpoints: [\"http://127.0.0.1:2\"] }\n    \
                    weight: 30%\n    shadow: { sample: 5% }\n  - name: split\n    \
                    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n    \
                    candidate: { endpoints: [\"http://127.0.0.1:2\"] }\n    \
                    weight: 30%\n  - name: stable\n    \
                    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n";
        let config = rollgate_config::parse(yaml).expect("config");
        let ppm = |v: u32| Ppm::new(v).expect("ppm");
        let pinned = Directive {
            weight: ppm(400_000),
            mirror: Ppm::ZERO,
        };
        let cases = [
            ("shadowed", None, (300_000, 50_000)),
            ("shadowed", Some(&pinned), (400_000, 0)),
            ("split", None, (300_000, 0)),
            ("stable", None, (0, 0)),
            ("stable", Some(&pinned), (0, 0)),
        ];
        for (name, d, (weight, mirror)) in cases {
            let m = config.models.iter().find(|m| m.name == name).expect(name);
            let want = Traffic {
                weight: ppm(weight),
                mirror: ppm(mirror),
            };
            assert_eq!(traffic(m, d), want, "{name} under {d:?}");
        }
    }
}
