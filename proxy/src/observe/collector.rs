//! Exports the per-model stats on each scrape. The model set changes with reloads, so the
//! families are encoded from the stats registry instead of being registered one by one.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;

use super::{HistogramSnapshot, ShadowDrop, StatsRegistry, StatusClass, StreamFailure};
use crate::split::Variant;

/// Registered once on the process registry; reads atomics only.
#[derive(Debug)]
pub(crate) struct ProxyCollector {
    pub(crate) stats: Arc<StatsRegistry>,
    pub(crate) endpoints: Arc<crate::endpoint::EndpointRegistry>,
    pub(crate) pairs: Arc<crate::shadow::ShadowPairs>,
    pub(crate) access: Arc<crate::access_log::Counts>,
}

type Fmt = Result<(), std::fmt::Error>;

// === impl ProxyCollector ===

impl Collector for ProxyCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Fmt {
        let models: Vec<_> = self.stats.all().iter().map(|m| m.observe()).collect();
        let variants = |m: &super::ModelObservation| {
            [
                (Variant::Stable, m.stable.clone()),
                (Variant::Candidate, m.candidate.clone()),
                (Variant::Shadow, m.shadow.clone()),
            ]
        };

        let mut f = enc.encode_descriptor(
            "rollgate_proxy_rejected",
            "Requests answered by the gateway itself (OpenAI-shaped error), by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in crate::error::REJECT_REASONS
            .iter()
            .zip(self.stats.rejected_counts())
        {
            f.encode_family(&[("reason", *reason)])?
                .encode_counter::<[(&str, &str); 0], _, u64>(&n, None)?;
        }

        let mut f = enc.encode_descriptor(
            "rollgate_proxy_requests",
            "Requests completed, by model, variant and response status class (error: no upstream response)",
            None,
            MetricType::Counter,
        )?;
        for m in &models {
            for (v, o) in variants(m) {
                for class in StatusClass::ALL {
                    let labels = [
                        ("model", &*m.model),
                        ("variant", v.as_str()),
                        ("status_class", class.as_str()),
                    ];
                    f.encode_family(&labels)?
                        .encode_counter::<[(&str, &str); 0], _, u64>(
                            &o.status[class as usize],
                            None,
                        )?;
                }
            }
        }

        let mut f = enc.encode_descriptor(
            "rollgate_proxy_stream_failures",
            "Failures after a 200 response head (SSE error event, truncated stream, idle timeout, upstream reset)",
            None,
            MetricType::Counter,
        )?;
        for m in &models {
            for (v, o) in variants(m) {
                for r in StreamFailure::ALL {
                    let labels = [
                        ("model", &*m.model),
                        ("variant", v.as_str()),
                        ("reason", r.as_str()),
                    ];
                    f.encode_family(&labels)?
                        .encode_counter::<[(&str, &str); 0], _, u64>(
                            &o.stream_failures[r as usize],
                            None,
                        )?;
                }
            }
        }

        let mut f = enc.encode_descriptor(
            "rollgate_proxy_cancelled",
            "Requests abandoned by the client before the response ended",
            None,
            MetricType::Counter,
        )?;
        for m in &models {
            for (v, o) in variants(m) {
                let labels = [("model", &*m.model), ("variant", v.as_str())];
                f.encode_family(&labels)?
                    .encode_counter::<[(&str, &str); 0], _, u64>(&o.cancelled, None)?;
            }
        }

        let mut f = enc.encode_descriptor(
            "rollgate_proxy_inflight_requests",
            "Requests in flight",
            None,
            MetricType::Gauge,
        )?;
        for m in &models {
            for (v, o) in variants(m) {
                let labels = [("model", &*m.model), ("variant", v.as_str())];
                f.encode_family(&labels)?.encode_gauge(&o.inflight)?;
            }
        }

        // A histogram is 21 series; one with nothing observed yet (a variant a model does not
        // have, TTFT of a model never streamed) is left out, so that many models do not make a
        // scrape of empty buckets. Once observed it stays (its counts never go back to 0).
        for (name, help, pick) in HISTOGRAMS {
            let mut f = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for m in &models {
                for (v, o) in variants(m) {
                    let h = pick(&o);
                    if h.count == 0 {
                        continue;
                    }
                    let labels = [("model", &*m.model), ("variant", v.as_str())];
                    encode_histogram(f.encode_family(&labels)?, h)?;
                }
            }
        }

        let mut f = enc.encode_descriptor(
            "rollgate_proxy_shadow_dropped",
            "Mirrored requests not sent or abandoned, by reason",
            None,
            MetricType::Counter,
        )?;
        for m in &models {
            for r in ShadowDrop::ALL {
                let labels = [("model", &*m.model), ("reason", r.as_str())];
                f.encode_family(&labels)?
                    .encode_counter::<[(&str, &str); 0], _, u64>(
                        &m.shadow_drops[r as usize],
                        None,
                    )?;
            }
        }

        let mut f = enc.encode_descriptor(
            "rollgate_proxy_access_log_lines",
            "Access log lines (access_log) written, or dropped: the writer's queue was full, or the log could not be opened or written",
            None,
            MetricType::Counter,
        )?;
        let counts = [
            ("written", &self.access.written),
            ("dropped", &self.access.dropped),
        ];
        for (outcome, n) in counts {
            f.encode_family(&[("outcome", outcome)])?
                .encode_counter::<[(&str, &str); 0], _, u64>(
                    &n.load(std::sync::atomic::Ordering::Relaxed),
                    None,
                )?;
        }

        enc.encode_descriptor(
            "rollgate_proxy_shadow_pairs_unscored",
            "Shadow pairs (primary and shadow answer) not scored: the scorer takes a bounded batch every 100 ms and spends at most 5 ms of a core on it; a mirror started while a batch's worth waits is not captured",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<[(&str, &str); 0], _, u64>(
            &self.pairs.unscored.load(std::sync::atomic::Ordering::Relaxed),
            None,
        )?;

        let mut f = enc.encode_descriptor(
            "rollgate_proxy_endpoint_ejections",
            "Endpoints ejected by passive health checking, by backend role",
            None,
            MetricType::Counter,
        )?;
        for m in &models {
            for (i, role) in ["stable", "candidate"].iter().enumerate() {
                let labels = [("model", &*m.model), ("role", *role)];
                f.encode_family(&labels)?
                    .encode_counter::<[(&str, &str); 0], _, u64>(&m.ejections[i], None)?;
            }
        }

        let mut f = enc.encode_descriptor(
            "rollgate_proxy_candidate_fallbacks",
            "Candidate-bound requests answered by the stable backend because no candidate endpoint could be reached (routing.candidate_fallback) or the candidate answered a status in routing.candidate_fallback_status; each also counts as a candidate error",
            None,
            MetricType::Counter,
        )?;
        for m in &models {
            f.encode_family(&[("model", &*m.model)])?
                .encode_counter::<[(&str, &str); 0], _, u64>(&m.fallbacks, None)?;
        }

        let mut f = enc.encode_descriptor(
            "rollgate_proxy_upstream_exchanges",
            "Upstream exchanges (primary and mirrored) by endpoint and whether the connection was new or pooled",
            None,
            MetricType::Counter,
        )?;
        for ep in self.endpoints.all() {
            for (origin, n) in [("new", &ep.exchanges_new), ("pooled", &ep.exchanges_pooled)] {
                let labels = [("endpoint", &*ep.url), ("connection", origin)];
                f.encode_family(&labels)?
                    .encode_counter::<[(&str, &str); 0], _, u64>(
                        &n.load(std::sync::atomic::Ordering::Relaxed),
                        None,
                    )?;
            }
        }
        Ok(())
    }
}

type Pick = fn(&super::VariantObservation) -> &HistogramSnapshot;

const HISTOGRAMS: [(&str, &str, Pick); 3] = [
    (
        "rollgate_proxy_request_duration_seconds",
        "Time from request head to the end of the response body",
        |o| &o.latency,
    ),
    (
        "rollgate_proxy_time_to_first_byte_seconds",
        "Time from request head to the first response body byte",
        |o| &o.ttfb,
    ),
    (
        "rollgate_proxy_time_to_first_token_seconds",
        "Time from request head to the first SSE data event (streams only)",
        |o| &o.ttft,
    ),
];

/// prometheus-client takes per-bucket (non-cumulative) counts and spells +Inf as `f64::MAX`.
fn encode_histogram(mut enc: MetricEncoder<'_>, h: &HistogramSnapshot) -> Fmt {
    let mut below = 0;
    let buckets: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .map(|&(le, cum)| {
            let n = cum - below;
            below = cum;
            (if le.is_infinite() { f64::MAX } else { le }, n)
        })
        .collect();
    enc.encode_histogram::<[(&str, &str); 0]>(h.sum_seconds, h.count, &buckets, None)
}
