//! The binary's choices for the rollout driver: how shadow pairs are scored and how synthetic
//! suites run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rollgate_control::rollout::{PairScorer, SyntheticRunner, SyntheticState};
use rollgate_control::scoring::{self, Answer};
use rollgate_control::synthetic::{run_suite, Suite, SyntheticClient};

/// Longest a synthetic check may take end to end.
const SYNTHETIC_TIMEOUT: Duration = Duration::from_secs(30);

/// A pair's score in `0..=1` (the driver counts it as agreeing from 0.8); pairs with a
/// truncated capture or a broken stream are not comparable (those failures are the error
/// gate's).
pub(crate) fn scorer() -> PairScorer {
    Arc::new(|p| {
        let side = |s: &rollgate_proxy::Side| Answer {
            status: s.status,
            body: s.body.clone(),
            overflow: s.overflow,
            failed: s.failed,
        };
        let score = scoring::score(&p.path, p.streamed, &side(&p.primary), &side(&p.shadow));
        score.comparable.then_some(score.score)
    })
}

/// Runs a model's suite (path relative to the config file's directory) against the first
/// candidate endpoint, directly: synthetic requests never pass through the data plane, so they
/// never count in user metrics.
pub(crate) fn synthetic_runner(config_dir: PathBuf) -> SyntheticRunner {
    let client = SyntheticClient::new(SYNTHETIC_TIMEOUT);
    Arc::new(move |model| {
        let (client, dir) = (client.clone(), config_dir.clone());
        Box::pin(async move {
            let (Some(spec), Some(candidate)) = (
                model.rollout.as_ref().and_then(|r| r.synthetic.as_ref()),
                model.candidate.as_ref(),
            ) else {
                return SyntheticState::None;
            };
            let path = dir.join(&spec.suite);
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(t) => t,
                Err(e) => return SyntheticState::Failed(format!("{}: {e}", path.display())),
            };
            let suite = match Suite::from_yaml(&text) {
                Ok(s) => s,
                Err(e) => return SyntheticState::Failed(format!("{}: {e}", path.display())),
            };
            let Some(ep) = candidate.endpoints.first() else {
                return SyntheticState::Failed("the candidate has no endpoint".into());
            };
            let result = run_suite(&suite, &ep.url, &client).await;
            if result.failed == 0 {
                tracing::info!(model = %model.name, passed = result.passed, "synthetic suite passed");
                return SyntheticState::Passed;
            }
            let reasons: Vec<String> = result
                .results
                .iter()
                .filter(|r| !r.passed)
                .map(|r| format!("{}: {}", r.name, r.failures.join(", ")))
                .collect();
            SyntheticState::Failed(reasons.join("; "))
        })
    })
}
