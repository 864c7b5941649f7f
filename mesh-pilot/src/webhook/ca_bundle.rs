//! Keeps the `caBundle` of the webhook configurations equal to the mesh root, so the API server
//! trusts the pilot's certificate: set after install (the chart leaves it empty), and put back
//! when someone blanks or changes it. [`patch`] is the pure part (a configuration and the root
//! in, the JSON Patch that mends it out); [`run`] watches the configurations by name and applies
//! it, and reads the root file again every [`RESYNC`] (a rotated root reaches the bundle).

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// How often the configurations are checked even without a change to them.
pub const RESYNC: Duration = Duration::from_secs(30);

/// The JSON Patch that sets every webhook's `clientConfig.caBundle` of `configuration` (a
/// Mutating- or ValidatingWebhookConfiguration as JSON) to `root_pem`; `None` when all are
/// right. Each change is guarded by a test of the webhook's name, so a concurrent edit that
/// reorders the webhooks makes the patch fail instead of landing on the wrong one.
pub fn patch(configuration: &Value, root_pem: &str) -> Option<json_patch::Patch> {
    let bundle = base64::engine::general_purpose::STANDARD.encode(root_pem);
    let mut operations = Vec::new();
    for (i, webhook) in configuration["webhooks"].as_array().into_iter().flatten().enumerate() {
        if webhook["clientConfig"]["caBundle"].as_str() == Some(bundle.as_str()) {
            continue;
        }
        operations.push(
            json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook["name"]}),
        );
        // `add` replaces a member that exists and creates one that does not.
        operations.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}));
    }
    if operations.is_empty() {
        return None;
    }
    serde_json::from_value(Value::Array(operations)).ok()
}

/// Why a configuration could not be mended.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The root certificate file could not be read.
    #[error("cannot read the mesh root {path}: {source}")]
    Root {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The API refused the patch or could not be reached.
    #[error("cannot set the caBundle of {kind} {name}: {source}")]
    Api {
        /// The configuration's kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

/// Mends one configuration as [`patch`] says; returns whether it had to.
pub async fn reconcile<K>(
    api: &Api<K>,
    configuration: &K,
    root_pem: &str,
) -> Result<bool, BundleError>
where
    K: Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
    K::DynamicType: Default,
{
    let value = serde_json::to_value(configuration).unwrap_or_default();
    let Some(patch) = patch(&value, root_pem) else { return Ok(false) };
    let name = configuration.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch)).await.map_err(
        |source| BundleError::Api { kind: kind_name::<K>(), name: name.clone(), source },
    )?;
    tracing::info!(kind = kind_name::<K>(), %name, "caBundle set to the mesh root");
    Ok(true)
}

fn kind_name<K: Resource>() -> &'static str
where
    K::DynamicType: Default,
{
    if K::kind(&K::DynamicType::default()) == "MutatingWebhookConfiguration" {
        "MutatingWebhookConfiguration"
    } else {
        "ValidatingWebhookConfiguration"
    }
}

/// Keeps the caBundle of the injector's and the validator's configurations right, from the
/// root in `root_cert`, until the future is dropped.
pub async fn run(client: Client, root_cert: PathBuf) {
    tokio::join!(
        keep::<MutatingWebhookConfiguration>(
            Api::all(client.clone()),
            super::INJECTOR_CONFIGURATION,
            &root_cert
        ),
        keep::<ValidatingWebhookConfiguration>(
            Api::all(client),
            super::VALIDATOR_CONFIGURATION,
            &root_cert
        ),
    );
}

/// Watches the configuration `name` and mends it on every change and every [`RESYNC`].
async fn keep<K>(api: Api<K>, name: &str, root_cert: &PathBuf)
where
    K: Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api.clone(), config).default_backoff());
    let mut resync = tokio::time::interval(RESYNC);
    let mut latest: Option<K> = None;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object))) => {
                    latest = Some(object);
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    latest = None;
                    continue;
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => {
                    tracing::warn!(%name, "watching the webhook configuration: {err}");
                    continue;
                }
                None => return,
            },
            _ = resync.tick() => {}
        }
        let Some(object) = &latest else { continue };
        let root = match tokio::fs::read_to_string(root_cert).await {
            Ok(root) => root,
            Err(source) => {
                let err = BundleError::Root { path: root_cert.clone(), source };
                tracing::warn!("{err}");
                continue;
            }
        };
        if let Err(err) = reconcile(&api, object, &root).await {
            tracing::warn!("{err}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn configuration(bundles: &[Option<&str>]) -> Value {
        let webhooks: Vec<Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut hook = json!({"name": format!("hook-{i}.mesh.io"), "clientConfig": {"service": {"name": "mesh-pilot"}}});
                if let Some(b) = b {
                    hook["clientConfig"]["caBundle"] = json!(b);
                }
                hook
            })
            .collect();
        json!({"metadata": {"name": "mesh-sidecar-injector"}, "webhooks": webhooks})
    }

    #[test]
    fn blank_and_stale_bundles_are_set_and_right_ones_left_alone() {
        let root = "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n";
        let right = base64::engine::general_purpose::STANDARD.encode(root);
        let mut config = configuration(&[None, Some(&right), Some("c3RhbGU=")]);
        let mend = patch(&config, root).unwrap();
        let ops = serde_json::to_value(&mend).unwrap();
        let paths: Vec<&str> =
            ops.as_array().unwrap().iter().map(|o| o["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/webhooks/0/name",
                "/webhooks/0/clientConfig/caBundle",
                "/webhooks/2/name",
                "/webhooks/2/clientConfig/caBundle"
            ]
        );
        json_patch::patch(&mut config, &mend).unwrap();
        for hook in config["webhooks"].as_array().unwrap() {
            assert_eq!(hook["clientConfig"]["caBundle"], right);
        }
        assert!(patch(&config, root).is_none(), "nothing left to mend");
    }

    #[test]
    fn a_reordered_configuration_makes_the_patch_fail_rather_than_land_on_another_webhook() {
        let config = configuration(&[None, None]);
        let mend = patch(&config, "root").unwrap();
        let mut reordered = config.clone();
        reordered["webhooks"].as_array_mut().unwrap().reverse();
        assert!(json_patch::patch(&mut reordered, &mend).is_err());
    }

    #[tokio::test]
    async fn reconcile_patches_through_the_api_only_when_needed() {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let api: Api<MutatingWebhookConfiguration> = Api::all(client);
        let config: MutatingWebhookConfiguration =
            serde_json::from_value(configuration(&[None])).unwrap();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::PATCH);
            assert_eq!(
                request.uri().path(),
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mesh-sidecar-injector"
            );
            assert_eq!(request.headers()["content-type"], "application/json-patch+json");
            let body = request.into_body().collect_bytes().await.unwrap();
            let ops: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(ops[1]["value"], base64::engine::general_purpose::STANDARD.encode("root"));
            let mut patched = serde_json::to_value(configuration(&[Some("cm9vdA==")])).unwrap();
            patched["apiVersion"] = json!("admissionregistration.k8s.io/v1");
            patched["kind"] = json!("MutatingWebhookConfiguration");
            send.send_response(Response::new(Body::from(serde_json::to_vec(&patched).unwrap())));
        });
        assert!(reconcile(&api, &config, "root").await.unwrap());
        server.await.unwrap();
        let right: MutatingWebhookConfiguration =
            serde_json::from_value(configuration(&[Some("cm9vdA==")])).unwrap();
        assert!(!reconcile(&api, &right, "root").await.unwrap(), "no request when right");
    }
}
