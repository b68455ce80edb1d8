//! Argo Rollouts `web` metric: `GET|POST|PUT /gitops/argo-rollouts/{model}` answers 200 with the
//! model's verdict whenever the model exists. Argo counts a non-2xx answer or a missing
//! `jsonPath` as a measurement *error* (not a failure), so a verdict is always in the body.

use serde::Serialize;

use super::status::{verdict, ModelStatus, Verdict};

/// The body of a web metric answer; select `{$.verdict}` with `jsonPath`.
#[derive(Clone, Debug, Serialize)]
pub struct WebMetric<'a> {
    pub verdict: Verdict,
    pub phase: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    /// The serving config revision.
    pub revision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<&'a str>,
    pub weight: &'a str,
    /// Why: the Stalled condition's message when held, else the rollout's last reason.
    pub reason: String,
    pub gates: Option<&'a serde_json::Value>,
}

/// The answer for one model's status.
pub fn web_metric(s: &ModelStatus) -> WebMetric<'_> {
    let stalled = super::status::condition(s, "Stalled").filter(|c| c.status == "True");
    WebMetric {
        verdict: verdict(s),
        phase: &s.phase,
        step: s.step,
        revision: &s.observed_revision,
        candidate: s.candidate.as_deref(),
        weight: &s.weight,
        reason: stalled.map_or_else(
            || s.reason.clone(),
            |c| format!("{}: {}", c.reason, c.message),
        ),
        gates: s.gates.as_ref(),
    }
}
