//! Wiring of the pushed GitOps sinks from the `gitops:` config section, and `rollgate crd`.

use rollgate_control::gitops::{flux_sink, EventCounters, SinkQueue, DEFAULT_NAMESPACE};

/// The sinks the config asks for.
pub(crate) async fn sinks(
    config: &rollgate_config::Gitops,
    counters: EventCounters,
) -> anyhow::Result<Vec<SinkQueue>> {
    let namespace = config
        .kubernetes
        .as_ref()
        .map_or(DEFAULT_NAMESPACE, |k| k.namespace.as_str());
    let mut sinks = Vec::new();
    if let Some(url) = &config.flux_events_url {
        let sink = flux_sink(url, namespace, counters.clone())
            .map_err(|e| anyhow::anyhow!("gitops.flux_events_url: {e}"))?;
        sinks.push(sink);
    }
    if config.kubernetes.is_some() {
        sinks.push(kubernetes(namespace, counters).await?);
    }
    Ok(sinks)
}

#[cfg(feature = "k8s")]
async fn kubernetes(namespace: &str, counters: EventCounters) -> anyhow::Result<SinkQueue> {
    rollgate_control::gitops::k8s::sink_from_env(namespace, counters)
        .await
        .map_err(|e| anyhow::anyhow!("gitops.kubernetes: {e}"))
}

#[cfg(not(feature = "k8s"))]
async fn kubernetes(_namespace: &str, _counters: EventCounters) -> anyhow::Result<SinkQueue> {
    Err(anyhow::anyhow!(
        "gitops.kubernetes is set but this rollgate was built without the `k8s` feature: \
         remove the `gitops.kubernetes` key, or run a build with it (`cargo build --release \
         --features k8s`)"
    ))
}

/// `rollgate crd`: the `ModelRollout` CustomResourceDefinition as YAML.
#[cfg(feature = "k8s")]
pub(crate) fn crd() -> anyhow::Result<String> {
    rollgate_control::gitops::k8s::crd_yaml().map_err(|e| anyhow::anyhow!("{e}"))
}
