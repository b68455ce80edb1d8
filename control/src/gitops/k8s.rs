//! Kubernetes (feature `k8s`): the `ModelRollout` custom resource, generated from Rust types, and
//! the sink that writes each model's [`ModelStatus`] into its `.status` with server-side apply
//! (field manager `rollgate`, forced), after reading the object's `metadata.generation` so that
//! `observedGeneration` means what kstatus readers (Flux, `kubectl wait`) expect.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResource, CustomResourceExt};
use serde::{Deserialize, Serialize};

use super::{Change, EventCounters, ModelStatus, SinkQueue, API_VERSION, KIND};

/// The field manager of every status patch.
pub const FIELD_MANAGER: &str = "rollgate";

/// `spec` of a `ModelRollout`: which model of the gateway it reports on. The object is named
/// after the model; rollgate owns only `.status`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[kube(
    group = "rollgate.dev",
    version = "v1alpha1",
    kind = "ModelRollout",
    plural = "modelrollouts",
    shortname = "mro",
    namespaced,
    status = "ModelStatus",
    crates(schemars = "::schemars"),
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"string","jsonPath":".status.weight"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.observedRevision"}"#
)]
pub struct ModelRolloutSpec {
    /// The model name in the gateway's config.
    pub model: String,
}

/// The CRD as YAML (what `rollgate crd` prints and `deploy/base/crd.yaml` holds).
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&ModelRollout::crd())
}

/// The Kubernetes sink: one status patch per change, in order, off the driver's path.
pub fn sink(client: Client, namespace: &str, counters: EventCounters) -> SinkQueue {
    let api: Api<ModelRollout> = Api::namespaced(client, namespace);
    let namespace = namespace.to_owned();
    SinkQueue::spawn("kubernetes", counters, true, move |change| {
        let (api, namespace) = (api.clone(), namespace.clone());
        async move { apply_status(&api, &namespace, change).await }
    })
}

/// The Kubernetes sink with a client from the environment (in-cluster service account, or
/// `KUBECONFIG`).
pub async fn sink_from_env(namespace: &str, counters: EventCounters) -> Result<SinkQueue, String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client config (in-cluster or KUBECONFIG): {e}"))?;
    Ok(sink(client, namespace, counters))
}

/// Reads the object's generation, then server-side-applies `.status`.
pub async fn apply_status(
    api: &Api<ModelRollout>,
    namespace: &str,
    change: Change,
) -> Result<(), String> {
    let name = super::object_name(&change.model);
    let object = api
        .get_opt(&name)
        .await
        .map_err(|e| format!("reading ModelRollout {namespace}/{name}: {e}"))?
        .ok_or_else(|| {
            format!("ModelRollout {namespace}/{name} does not exist: create it (see deploy/base) so that rollgate can write its status")
        })?;
    let mut status = change.status;
    status.observed_generation = object.metadata.generation.unwrap_or(0);
    let patch = serde_json::json!({ "apiVersion": API_VERSION, "kind": KIND, "status": status });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&name, &params, &Patch::Apply(&patch))
        .await
        .map_err(|e| format!("patching ModelRollout {namespace}/{name} status: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests;
