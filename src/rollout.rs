//! The binary's choices for the rollout driver: how shadow pairs are scored and how synthetic
//! suites run.

use std::sync::Arc;

use rollgate_control::rollout::{PairScorer, SyntheticRunner, SyntheticState};

/// Pairs agree when both sides have the same status class and the same body; pairs with a
/// truncated capture or a broken stream are not comparable.
pub(crate) fn scorer() -> PairScorer {
    Arc::new(|p| {
        if p.primary.overflow || p.shadow.overflow || p.primary.failed || p.shadow.failed {
            return None;
        }
        Some(p.primary.status / 100 == p.shadow.status / 100 && p.primary.body == p.shadow.body)
    })
}

/// Synthetic suites are not wired into this build yet: a rollout that names one fails
/// validation with that reason rather than pretending the checks passed.
pub(crate) fn synthetic_runner() -> SyntheticRunner {
    Arc::new(|_model| {
        Box::pin(async {
            SyntheticState::Failed("synthetic suites are not supported by this build yet".into())
        })
    })
}
