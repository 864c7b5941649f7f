//! The Gateway API's statuses written back: the pilot's GatewayClasses made when missing, and
//! after every change the conditions [`gateway_api::status`](super::super::gateway_api::status)
//! computes, written only where they differ from what the object holds (so a write, seen by
//! the watch, does not cause another). Routes' `status.parents` keep other controllers'
//! entries; the write names the `resourceVersion` read, and a conflict is retried.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt as _};
use mesh_api::ObjectRef;
use mesh_api::gateway_api::status::GatewayAddress;
use mesh_api::gateway_api::{
    CONTROLLER_NAME, GATEWAY_CLASSES, GATEWAY_NAME_LABEL, GRPCRoute, Gateway as KubeGateway,
    GatewayClass, HTTPRoute, TLSRoute,
};
use serde_json::json;
use tracing::{debug, info, warn};

use super::Objects;
use crate::model::Snapshot;
use crate::source::Rejected;
use crate::source::gateway_api::status::{Cluster, Statuses};
use crate::source::gateway_api::{Inputs, RouteKind};

const FIELD_MANAGER: &str = "mesh-pilot";

/// The cluster as the status sees it: the model's Services and credentials, and the Pods and
/// Services of the gateways.
pub struct KubeCluster<'a> {
    /// The model built from the same objects.
    pub snapshot: &'a Snapshot,
    /// The objects.
    pub objects: &'a Objects,
}

fn labelled(labels: Option<&std::collections::BTreeMap<String, String>>, gateway: &str) -> bool {
    labels.and_then(|l| l.get(GATEWAY_NAME_LABEL)).is_some_and(|v| v == gateway)
}

impl Cluster for KubeCluster<'_> {
    fn service_exists(&self, host: &str) -> bool {
        self.snapshot.services.contains_key(host)
    }

    fn certificate_exists(&self, namespace: &str, name: &str) -> bool {
        self.snapshot
            .credentials
            .get(&(namespace.to_owned(), name.to_owned()))
            .is_some_and(|c| c.certificate_chain.is_some() && c.private_key.is_some())
    }

    fn ready_proxies(&self, namespace: &str, gateway: &str) -> usize {
        self.objects
            .pods
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .filter(|p| labelled(Some(p.labels()), gateway))
            .filter(|p| ready(p))
            .count()
    }

    fn addresses(&self, namespace: &str, gateway: &str) -> Vec<GatewayAddress> {
        let mut out = Vec::new();
        for service in &self.objects.services {
            let selects = service.spec.as_ref().and_then(|s| s.selector.as_ref());
            if service.namespace().as_deref() != Some(namespace) || !labelled(selects, gateway) {
                continue;
            }
            let ingress = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.clone())
                .unwrap_or_default();
            for i in ingress {
                if let Some(ip) = i.ip {
                    out.push(address("IPAddress", ip));
                } else if let Some(host) = i.hostname {
                    out.push(address("Hostname", host));
                }
            }
            if out.is_empty() {
                let ips = service.spec.as_ref().and_then(|s| s.cluster_ips.clone());
                out.extend(
                    ips.unwrap_or_default()
                        .into_iter()
                        .filter(|ip| ip != "None")
                        .map(|ip| address("IPAddress", ip)),
                );
            }
        }
        out
    }
}

fn address(kind: &str, value: String) -> GatewayAddress {
    GatewayAddress { address_type: Some(kind.to_owned()), value }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Gateway API objects of `objects`, for the conversion and the status.
pub fn inputs(objects: &Objects) -> Inputs<'_> {
    Inputs {
        classes: objects.gateway_classes.iter().map(AsRef::as_ref).collect(),
        gateways: objects.kube_gateways.iter().map(AsRef::as_ref).collect(),
        http_routes: objects.http_routes.iter().map(AsRef::as_ref).collect(),
        grpc_routes: objects.grpc_routes.iter().map(AsRef::as_ref).collect(),
        tls_routes: objects.tls_routes.iter().map(AsRef::as_ref).collect(),
        grants: objects.reference_grants.iter().map(AsRef::as_ref).collect(),
    }
}

/// The statuses the objects should have now.
pub fn compute(
    objects: &Objects,
    snapshot: &Snapshot,
    rejected: &[Rejected],
    now: &str,
) -> Statuses {
    let mut invalid: HashMap<ObjectRef, String> = HashMap::new();
    for r in rejected {
        if let Some(object) = &r.object {
            let entry = invalid.entry(object.clone()).or_default();
            if !entry.is_empty() {
                entry.push_str("; ");
            }
            entry.push_str(&r.reason);
        }
    }
    let cluster = KubeCluster { snapshot, objects };
    crate::source::gateway_api::status::statuses(
        &inputs(objects),
        &cluster,
        &invalid,
        &snapshot.domain,
        now,
    )
}

/// Creates the mesh's GatewayClasses where the cluster has none of that name. Server-side
/// apply without force: a class of that name owned by another controller is left as it is.
pub async fn ensure_classes(client: &Client) {
    let api: Api<GatewayClass> = Api::all(client.clone());
    for name in GATEWAY_CLASSES {
        if let Ok(Some(_)) = api.get_opt(name).await {
            continue;
        }
        let class = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": name},
            "spec": {"controllerName": CONTROLLER_NAME, "description": "The mesh's gateways (mesh-proxy)"},
        });
        match api.patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(class)).await {
            Ok(_) => info!(class = name, "created the GatewayClass"),
            Err(err) => warn!(class = name, "cannot create the GatewayClass: {err}"),
        }
    }
}

/// Writes the statuses that differ from the objects'. Returns whether every write went
/// through (a conflict or an error asks for another pass).
pub async fn write(client: &Client, objects: &Objects, statuses: &Statuses) -> bool {
    let mut ok = true;
    let params =
        PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    for class in &objects.gateway_classes {
        let Some(status) = statuses.classes.get(&class.name_any()) else { continue };
        if class.status.as_ref() == Some(status) {
            continue;
        }
        let api: Api<GatewayClass> = Api::all(client.clone());
        let patch = json!({"status": status});
        ok &= report(
            "GatewayClass",
            &class.name_any(),
            api.patch_status(&class.name_any(), &params, &Patch::Merge(patch)).await,
        );
    }
    for gateway in &objects.kube_gateways {
        let (namespace, name) = (gateway.namespace().unwrap_or_default(), gateway.name_any());
        let Some(status) = statuses.gateways.get(&(namespace.clone(), name.clone())) else {
            continue;
        };
        if gateway.status.as_ref() == Some(status) {
            continue;
        }
        let api: Api<KubeGateway> = Api::namespaced(client.clone(), &namespace);
        let patch = json!({"status": status});
        ok &=
            report("Gateway", &name, api.patch_status(&name, &params, &Patch::Merge(patch)).await);
    }
    macro_rules! routes {
        ($list:expr, $kind:ty, $route_kind:expr) => {
            for route in &$list {
                let (namespace, name) = (route.namespace().unwrap_or_default(), route.name_any());
                let Some(status) = statuses.routes.get(&($route_kind, namespace.clone(), name.clone())) else { continue };
                if route.status.as_ref() == Some(status) {
                    continue;
                }
                let api: Api<$kind> = Api::namespaced(client.clone(), &namespace);
                // The parents list is shared with other controllers: the write is conditional
                // on the version read, so theirs are never lost.
                let patch = json!({
                    "metadata": {"resourceVersion": route.resource_version()},
                    "status": {"parents": status.parents},
                });
                ok &= report($route_kind.name(), &name, api.patch_status(&name, &params, &Patch::Merge(patch)).await);
            }
        };
    }
    routes!(objects.http_routes, HTTPRoute, RouteKind::Http);
    routes!(objects.grpc_routes, GRPCRoute, RouteKind::Grpc);
    routes!(objects.tls_routes, TLSRoute, RouteKind::Tls);
    ok
}

fn report<T>(kind: &str, name: &str, result: kube::Result<T>) -> bool {
    match result {
        Ok(_) => {
            debug!(kind, name, "status written");
            true
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            debug!(kind, name, "status changed meanwhile: written again on the next pass");
            false
        }
        Err(err) => {
            warn!(kind, name, "cannot write the status: {err}");
            false
        }
    }
}
