//! Root distribution: the mesh root where workloads can read it. Kubernetes mode keeps the
//! ConfigMap `mesh-ca-root-cert` (key `root-cert.pem`) in every namespace, restoring it when it
//! is changed or deleted; local mode writes `root-cert.pem` to a directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tracing::{info, warn};

/// Name of the ConfigMap holding the root in every namespace.
pub const CONFIGMAP_NAME: &str = "mesh-ca-root-cert";
/// Key of the root in that ConfigMap.
pub const CONFIGMAP_KEY: &str = "root-cert.pem";
/// Field manager of the CA's server-side applies.
const MANAGER: &str = "mesh-ca";

/// Writes `root-cert.pem` into `dir` (local mode), atomically.
pub fn write_root_file(dir: &Path, root_pem: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".root-cert.pem.tmp");
    std::fs::write(&tmp, root_pem)?;
    std::fs::rename(tmp, dir.join(CONFIGMAP_KEY))
}

/// The ConfigMap a namespace should hold.
pub fn root_configmap(namespace: &str, root_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([("mesh.io/config".to_owned(), "root-cert".to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(CONFIGMAP_KEY.to_owned(), root_pem.to_owned())])),
        ..ConfigMap::default()
    }
}

/// What every reconcile of the distribution controller shares.
pub struct Context {
    /// Client the ConfigMaps are applied with.
    pub client: kube::Client,
    /// The root certificate (PEM) written under [`CONFIGMAP_KEY`] in every namespace.
    pub root_pem: String,
}

/// Why a namespace could not be given its ConfigMap.
#[derive(Debug, thiserror::Error)]
#[error("cannot write ConfigMap {CONFIGMAP_NAME} in namespace {namespace}: {source}")]
pub struct DistributeError {
    namespace: String,
    source: kube::Error,
}

/// Puts the root ConfigMap into one namespace (server-side apply: creates it, or restores
/// what someone changed).
pub async fn reconcile(
    namespace: Arc<Namespace>,
    ctx: Arc<Context>,
) -> Result<Action, DistributeError> {
    let name = namespace.metadata.name.clone().unwrap_or_default();
    if namespace.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let desired = root_configmap(&name, &ctx.root_pem);
    api.patch(CONFIGMAP_NAME, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired))
        .await
        .map_err(|source| DistributeError { namespace: name.clone(), source })?;
    Ok(Action::requeue(Duration::from_secs(3600)))
}

fn error_policy(_: Arc<Namespace>, err: &DistributeError, _: Arc<Context>) -> Action {
    warn!("{err}");
    Action::requeue(Duration::from_secs(10))
}

/// Runs the distribution controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    root_pem: String,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let configmaps: Api<ConfigMap> = Api::all(client.clone());
    let ctx = Arc::new(Context { client, root_pem });
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            configmaps,
            watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}")),
            |cm: ConfigMap| cm.metadata.namespace.map(|ns| ObjectRef::<Namespace>::new(&ns)),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((namespace, _)) => info!(namespace = %namespace.name, "root ConfigMap in place"),
                Err(err) => warn!("root distribution: {err}"),
            }
        })
        .await;
}
