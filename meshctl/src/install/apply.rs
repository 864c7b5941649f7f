//! The API calls of `install` and `uninstall`, through kube-rs: server-side apply of each object
//! in the plan's order, the waits a person needs to trust the result (CRDs established, mesh-ca
//! and mesh-pilot ready, the validation webhook answering through the API server), and the
//! deletes of uninstall. Progress goes to `out`, one line per step.

use std::io::Write;
use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Client, Error as KubeError};
use serde_json::{Value, json};

use super::plan::{self, MANAGER, ObjectRef, Plan, RECORD_NAME};

/// Why install or uninstall stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API refused a call or could not be reached.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The API's answer.
        source: KubeError,
    },
    /// Something did not become ready in time.
    #[error("{what} is not ready after {}s: {last}", .waited.as_secs())]
    NotReady {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// The last thing seen.
        last: String,
    },
    /// The install record cannot be read.
    #[error("the install record configmap/{RECORD_NAME}: {0}")]
    Record(String),
    /// An object of a kind the plan does not know (a bug: the plan checks them).
    #[error("{0}: unknown kind")]
    Kind(String),
}

/// How long and how often to wait.
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    /// The longest wait for each step.
    pub timeout: Duration,
    /// The time between checks.
    pub period: Duration,
}

fn api_for(client: &Client, reference: &ObjectRef) -> Result<Api<DynamicObject>, ApplyError> {
    let info = plan::kind_info(&reference.api_version, &reference.kind)
        .ok_or_else(|| ApplyError::Kind(reference.to_string()))?;
    let gvk = GroupVersionKind::gvk(info.group, info.version, &reference.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, info.plural);
    Ok(match (&reference.namespace, info.namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    })
}

/// Server-side apply of one object, owned by meshctl (conflicts forced, as `kubectl apply
/// --server-side --force-conflicts`: install is the owner of what it installs).
async fn apply(client: &Client, object: &Value) -> Result<(), ApplyError> {
    let reference = ObjectRef::of(object);
    let api = api_for(client, &reference)?;
    let params = PatchParams::apply(MANAGER).force();
    api.patch(&reference.name, &params, &Patch::Apply(object))
        .await
        .map(drop)
        .map_err(|source| ApplyError::Api { what: format!("applying {reference}"), source })
}

/// Polls `check` until it says ready (`Ok(None)`) or the timeout passes; `Ok(Some(why))` is
/// not ready yet.
async fn wait<F, Fut>(what: &str, waits: Waits, mut check: F) -> Result<(), ApplyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, ApplyError>>,
{
    let deadline = tokio::time::Instant::now() + waits.timeout;
    loop {
        let last = match check().await? {
            None => return Ok(()),
            Some(why) => why,
        };
        if tokio::time::Instant::now() + waits.period > deadline {
            return Err(ApplyError::NotReady {
                what: what.to_owned(),
                waited: waits.timeout,
                last,
            });
        }
        tokio::time::sleep(waits.period).await;
    }
}

async fn get(client: &Client, reference: &ObjectRef) -> Result<Option<Value>, ApplyError> {
    let api = api_for(client, reference)?;
    match api.get_opt(&reference.name).await {
        Ok(found) => Ok(found.map(|o| serde_json::to_value(o).unwrap_or_default())),
        Err(source) => Err(ApplyError::Api { what: format!("reading {reference}"), source }),
    }
}

/// Waits until `ready` finds nothing missing in the object `reference` names.
async fn wait_for(
    client: &Client,
    reference: &ObjectRef,
    waits: Waits,
    ready: fn(&Value) -> Option<String>,
) -> Result<(), ApplyError> {
    wait(&reference.to_string(), waits, || async {
        Ok(match get(client, reference).await? {
            Some(object) => ready(&object),
            None => Some("not found".to_owned()),
        })
    })
    .await
}

/// Whether a CRD says Established.
fn established(crd: &Value) -> Option<String> {
    let conditions = crd["status"]["conditions"].as_array().cloned().unwrap_or_default();
    if conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True") {
        None
    } else {
        Some("not Established yet".to_owned())
    }
}

/// Whether a Deployment has rolled out: its controller saw the current generation and every
/// replica is updated and available.
fn rolled_out(deployment: &Value) -> Option<String> {
    let want = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = &deployment["status"];
    let count = |field: &str| status[field].as_i64().unwrap_or(0);
    let generation = deployment["metadata"]["generation"].as_i64().unwrap_or(0);
    if status["observedGeneration"].as_i64().unwrap_or(0) < generation {
        return Some("its controller has not seen the new version yet".to_owned());
    }
    if count("updatedReplicas") < want || count("availableReplicas") < want {
        return Some(format!("{} of {want} replicas available", count("availableReplicas")));
    }
    None
}

/// A VirtualService the validation webhook must refuse (a weight over 100), sent as a dry run.
fn invalid_virtual_service(namespace: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "meshctl-webhook-check", "namespace": namespace},
        "spec": {"hosts": ["meshctl-webhook-check"], "http": [{"route": [{"destination": {"host": "meshctl-webhook-check"}, "weight": 150}]}]}
    })
}

/// Whether the validation webhook answers through the API server: a dry-run create of an
/// invalid VirtualService must be refused by it (which also proves the caBundle is right).
async fn webhook_answers(client: &Client, namespace: &str) -> Result<Option<String>, ApplyError> {
    let reference = ObjectRef {
        api_version: "networking.istio.io/v1".into(),
        kind: "VirtualService".into(),
        name: String::new(),
        namespace: Some(namespace.into()),
    };
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let object: DynamicObject = serde_json::from_value(invalid_virtual_service(namespace))
        .map_err(|e| ApplyError::Kind(format!("{reference}: {e}")))?;
    let params = PostParams { dry_run: true, ..PostParams::default() };
    match api.create(&params, &object).await {
        Err(KubeError::Api(status)) if status.message.contains("admission webhook") => Ok(None),
        Err(KubeError::Api(status)) => Ok(Some(status.message)),
        Ok(_) => {
            Ok(Some("an invalid VirtualService was admitted: the webhook is not called yet".into()))
        }
        Err(other) => Ok(Some(other.to_string())),
    }
}

/// Applies the plan, then waits: CRDs established, each Deployment rolled out, the webhook
/// answering. Records what it applied for uninstall.
pub async fn install(
    client: &Client,
    plan: &Plan,
    waits: Waits,
    out: &mut dyn Write,
) -> Result<(), ApplyError> {
    for object in &plan.objects {
        apply(client, object).await?;
        let _ = writeln!(out, "{} applied", ObjectRef::of(object));
        if object["kind"] == "CustomResourceDefinition" {
            wait_for(client, &ObjectRef::of(object), waits, established).await?;
        }
    }
    apply(client, &plan::record(plan)).await?;
    let crds = plan.objects.iter().filter(|o| o["kind"] == "CustomResourceDefinition").count();
    if crds > 0 {
        let _ = writeln!(out, "✔ {crds} CRDs established");
    }
    for object in plan.objects.iter().filter(|o| o["kind"] == "Deployment") {
        let reference = ObjectRef::of(object);
        wait_for(client, &reference, waits, rolled_out).await?;
        let _ = writeln!(out, "✔ {} ready", reference.name);
    }
    let validates = plan.objects.iter().any(|o| o["kind"] == "ValidatingWebhookConfiguration");
    if validates {
        wait("the validation webhook", waits, || webhook_answers(client, &plan.namespace)).await?;
        let _ = writeln!(out, "✔ webhook answering");
    }
    // The Gateway API's CRDs are Kubernetes', not the mesh's: say when they are missing.
    if client.list_api_group_resources("gateway.networking.k8s.io/v1").await.is_err() {
        let _ = writeln!(
            out,
            "note: this cluster has no Gateway API CRDs (gateway.networking.k8s.io/v1); Gateways and HTTPRoutes need them: {GATEWAY_API_CRDS}"
        );
    }
    Ok(())
}

/// Where the Gateway API's standard CRDs come from (the mesh does not ship them).
pub const GATEWAY_API_CRDS: &str = "kubectl apply -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.3.0/standard-install.yaml";

/// Deletes what install recorded in `namespace` (newest first), the CRDs too with `purge`, then
/// the record. Objects already gone are fine.
pub async fn uninstall(
    client: &Client,
    namespace: &str,
    purge: bool,
    out: &mut dyn Write,
) -> Result<usize, ApplyError> {
    let record_ref = ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: RECORD_NAME.into(),
        namespace: Some(namespace.into()),
    };
    let Some(record) = get(client, &record_ref).await? else {
        return Err(ApplyError::Record(format!(
            "not found in namespace {namespace}: nothing installed by meshctl there"
        )));
    };
    let mut removed = 0;
    for reference in
        plan::removals(&record, purge).map_err(ApplyError::Record)?.iter().chain([&record_ref])
    {
        let api = api_for(client, reference)?;
        match api.delete(&reference.name, &DeleteParams::background()).await {
            Ok(_) => {
                removed += 1;
                let _ = writeln!(out, "{reference} deleted");
            }
            Err(KubeError::Api(status)) if status.code == 404 => {
                let _ = writeln!(out, "{reference} was gone already");
            }
            Err(source) => {
                return Err(ApplyError::Api { what: format!("deleting {reference}"), source });
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn readiness_is_read_from_status_as_kubectl_rollout_status_does() {
        let deployment = |generation: i64, observed: i64, available: i64| {
            json!({"metadata": {"generation": generation}, "spec": {"replicas": 2},
                   "status": {"observedGeneration": observed, "updatedReplicas": available, "availableReplicas": available}})
        };
        assert_eq!(rolled_out(&deployment(2, 2, 2)), None);
        assert_eq!(rolled_out(&deployment(2, 2, 1)).unwrap(), "1 of 2 replicas available");
        assert!(rolled_out(&deployment(3, 2, 2)).unwrap().contains("not seen the new version"));
        let crd = json!({"status": {"conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}]}});
        assert_eq!(established(&crd), None);
        assert!(established(&json!({})).is_some());
    }
}
