//! What every check reads: the input's objects by kind, each with its reference and origin,
//! the workloads (whatever runs pods, and WorkloadEntries) with their labels, and the rules
//! Istio's analyzers share (host names, visibility, selectors, namespaces).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, PodSpec, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_api::load::{KubeObject, Origin};
use mesh_api::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use mesh_api::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use mesh_api::{ObjectRef, Resource};

use crate::finding::{Finding, Location, MessageType};
use crate::input::Input;

/// No labels, for objects that have none.
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// An object of the input with what every finding about it needs.
pub(crate) struct Obj<'a, T> {
    /// The object.
    pub spec: &'a T,
    /// Its metadata.
    pub meta: &'a ObjectMeta,
    /// Kind, namespace and name.
    pub reference: ObjectRef,
    /// Where it was read.
    pub origin: &'a Origin,
}

impl<T> Obj<'_, T> {
    /// The object's namespace (`default` when it names none: cluster-scoped kinds only).
    pub fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or("default")
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or_default()
    }

    /// `namespace/name`, as Istio's messages name objects.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }

    /// The object's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.meta.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    /// The object's annotations.
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        self.meta.annotations.as_ref().unwrap_or(&NO_LABELS)
    }

    /// A finding of `kind` about this object.
    pub fn finding(&self, kind: &MessageType, message: String) -> Finding {
        Finding::new(kind, Some(self.reference.clone()), Some(Location::from(self.origin)), message)
    }
}

/// Something that runs the pods selectors match: a Pod, the template of a Deployment (or any
/// other workload kind), or a WorkloadEntry.
#[derive(Clone)]
pub(crate) struct Workload<'a> {
    /// The object that declares it.
    pub reference: ObjectRef,
    /// Its namespace.
    pub namespace: String,
    /// Its name (a pod's, or the workload's).
    pub name: String,
    /// The pods' labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The pods' annotations.
    pub annotations: &'a BTreeMap<String, String>,
    /// The pods' spec (absent for WorkloadEntries).
    pub spec: Option<&'a PodSpec>,
    /// What declares it.
    pub kind: WorkloadKind,
    /// Where the declaring object was read.
    pub origin: &'a Origin,
}

impl Workload<'_> {
    /// A finding of `kind` about the object that declares this workload.
    pub fn finding(&self, kind: &MessageType, message: String) -> Finding {
        Finding::new(kind, Some(self.reference.clone()), Some(Location::from(self.origin)), message)
    }
}

/// The input, indexed for the checks.
pub(crate) struct Context<'a> {
    pub input: &'a Input,
    pub virtual_services: Vec<Obj<'a, VirtualService>>,
    pub destination_rules: Vec<Obj<'a, DestinationRule>>,
    pub gateways: Vec<Obj<'a, Gateway>>,
    pub service_entries: Vec<Obj<'a, ServiceEntry>>,
    pub sidecars: Vec<Obj<'a, Sidecar>>,
    pub services: Vec<Obj<'a, Service>>,
    pub namespaces: Vec<Obj<'a, Namespace>>,
    pub secrets: Vec<Obj<'a, Secret>>,
    pub authorization_policies: Vec<Obj<'a, AuthorizationPolicy>>,
    pub peer_authentications: Vec<Obj<'a, PeerAuthentication>>,
    pub request_authentications: Vec<Obj<'a, RequestAuthentication>>,
    /// Deployments, with their pod templates.
    pub deployments: Vec<(Obj<'a, KubeObject>, Workload<'a>)>,
    pub workloads: Vec<Workload<'a>>,
}

fn obj<'a, T>(spec: &'a T, meta: &'a ObjectMeta, origin: &'a Origin, r: ObjectRef) -> Obj<'a, T> {
    Obj { spec, meta, reference: r, origin }
}

impl<'a> Context<'a> {
    pub fn new(input: &'a Input) -> Self {
        let mut cx = Context {
            input,
            virtual_services: Vec::new(),
            destination_rules: Vec::new(),
            gateways: Vec::new(),
            service_entries: Vec::new(),
            sidecars: Vec::new(),
            services: Vec::new(),
            namespaces: Vec::new(),
            secrets: Vec::new(),
            authorization_policies: Vec::new(),
            peer_authentications: Vec::new(),
            request_authentications: Vec::new(),
            deployments: Vec::new(),
            workloads: Vec::new(),
        };
        for loaded in &input.objects {
            let origin = &loaded.origin;
            let r = loaded.resource.object_ref();
            match &loaded.resource {
                Resource::VirtualService(o) => {
                    cx.virtual_services.push(obj(o, &o.metadata, origin, r))
                }
                Resource::DestinationRule(o) => {
                    cx.destination_rules.push(obj(o, &o.metadata, origin, r))
                }
                Resource::Gateway(o) => cx.gateways.push(obj(o, &o.metadata, origin, r)),
                Resource::ServiceEntry(o) => {
                    cx.service_entries.push(obj(o, &o.metadata, origin, r))
                }
                Resource::Sidecar(o) => cx.sidecars.push(obj(o, &o.metadata, origin, r)),
                Resource::Service(o) => cx.services.push(obj(o, &o.metadata, origin, r)),
                Resource::Namespace(o) => cx.namespaces.push(obj(o, &o.metadata, origin, r)),
                Resource::Secret(o) => cx.secrets.push(obj(o, &o.metadata, origin, r)),
                Resource::AuthorizationPolicy(o) => {
                    cx.authorization_policies.push(obj(o, &o.metadata, origin, r))
                }
                Resource::PeerAuthentication(o) => {
                    cx.peer_authentications.push(obj(o, &o.metadata, origin, r))
                }
                Resource::RequestAuthentication(o) => {
                    cx.request_authentications.push(obj(o, &o.metadata, origin, r))
                }
                Resource::WorkloadEntry(o) => cx.workloads.push(workload_entry(o, r, origin)),
                _ => {}
            }
        }
        for loaded in &input.kubernetes {
            let Some(template) = loaded.object.pod_template() else { continue };
            let reference = loaded.object.object_ref();
            let workload = Workload {
                namespace: reference.namespace.clone().unwrap_or_else(|| "default".to_owned()),
                name: reference.name.clone(),
                reference: reference.clone(),
                labels: template.labels.unwrap_or(&NO_LABELS),
                annotations: template.annotations.unwrap_or(&NO_LABELS),
                spec: template.spec,
                kind: if matches!(loaded.object, KubeObject::Pod(_)) {
                    WorkloadKind::Pod
                } else {
                    WorkloadKind::Template
                },
                origin: &loaded.origin,
            };
            if let KubeObject::Deployment(d) = &loaded.object {
                let deployment = obj(&loaded.object, &d.metadata, &loaded.origin, reference);
                cx.deployments.push((deployment, workload.clone()));
            }
            cx.workloads.push(workload);
        }
        cx
    }

    /// Whether the input holds any workload at all. Checks that look for the workloads a
    /// selector selects say nothing without any: a file of routing rules alone is not a
    /// mesh without pods.
    pub fn has_workloads(&self) -> bool {
        !self.workloads.is_empty()
    }

    /// The workloads of a namespace.
    pub fn workloads_in<'s>(
        &'s self,
        namespace: &'s str,
    ) -> impl Iterator<Item = &'s Workload<'a>> {
        self.workloads.iter().filter(move |w| w.namespace == namespace)
    }

    /// The Namespace object of that name, if the input has it.
    pub fn namespace_object(&self, name: &str) -> Option<&Obj<'a, Namespace>> {
        self.namespaces.iter().find(|n| n.name() == name)
    }

    /// Whether a workload runs with the sidecar, as far as the input tells: it has the proxy
    /// container, or asks for it (or not) itself, or its namespace does. A workload of a
    /// namespace the input does not describe is taken to be in the mesh: files are often
    /// analyzed before they are applied to a meshed namespace.
    pub fn in_mesh(&self, workload: &Workload<'_>) -> bool {
        if workload.kind == WorkloadKind::Entry || has_proxy(workload.spec) {
            return true;
        }
        let inject = mesh_api::inject::annotations::sidecar(Some(workload.labels), "inject")
            .or_else(|| {
                mesh_api::inject::annotations::sidecar(Some(workload.annotations), "inject")
            });
        if let Some(inject) = inject {
            return inject.trim().eq_ignore_ascii_case("true");
        }
        match self.namespace_object(&workload.namespace) {
            Some(namespace) => injection(namespace.labels()) == Injection::Enabled,
            None => true,
        }
    }

    /// A host written in config of `namespace` as a full name: a short name is a Service of
    /// that namespace, a name with a dot (or a wildcard) is taken as it is (Istio's rule).
    pub fn fqdn(&self, namespace: &str, host: &str) -> String {
        fqdn(namespace, host, &self.input.domain)
    }
}

/// See [`Context::fqdn`].
pub(crate) fn fqdn(namespace: &str, host: &str, domain: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{domain}")
    }
}

/// What a workload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkloadKind {
    /// A Pod.
    Pod,
    /// The pod template of a Deployment, StatefulSet, DaemonSet, Job...
    Template,
    /// A WorkloadEntry (a VM, or a pod of the local mesh).
    Entry,
}

fn workload_entry<'a>(
    entry: &'a WorkloadEntry,
    reference: ObjectRef,
    origin: &'a Origin,
) -> Workload<'a> {
    Workload {
        namespace: reference.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        name: reference.name.clone(),
        reference,
        labels: &entry.spec.labels,
        annotations: entry.metadata.annotations.as_ref().unwrap_or(&NO_LABELS),
        spec: None,
        kind: WorkloadKind::Entry,
        origin,
    }
}

/// The proxy container's names: the mesh's and Istio's.
const PROXY_CONTAINERS: [&str; 2] = [mesh_api::inject::PROXY_CONTAINER, "istio-proxy"];

/// Whether a pod spec has the sidecar (as a container, or as a native sidecar).
pub(crate) fn has_proxy(spec: Option<&PodSpec>) -> bool {
    spec.is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| PROXY_CONTAINERS.contains(&c.name.as_str()))
    })
}

/// What a namespace says about injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Injection {
    /// `mesh-injection=enabled` (or Istio's `istio-injection=enabled`, which the mesh honours).
    Enabled,
    /// One of the labels with another value: deliberately left out.
    Disabled,
    /// Neither label.
    Unlabelled,
}

/// The namespace label that turns injection on, and Istio's, which the mesh honours too.
pub(crate) const INJECTION_LABELS: [&str; 2] =
    [mesh_api::ports::INJECTION_NAMESPACE_LABEL.0, "istio-injection"];

/// What a namespace's labels say about injection (the mesh's label wins over Istio's).
pub(crate) fn injection(labels: &BTreeMap<String, String>) -> Injection {
    match INJECTION_LABELS.iter().find_map(|label| labels.get(*label)) {
        Some(value) if value == mesh_api::ports::INJECTION_NAMESPACE_LABEL.1 => Injection::Enabled,
        Some(_) => Injection::Disabled,
        None => Injection::Unlabelled,
    }
}

/// Namespaces the mesh leaves alone: Kubernetes' own and the control plane's.
pub(crate) fn is_system_namespace(namespace: &str, root: &str) -> bool {
    [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "local-path-storage",
        "istio-system",
        mesh_api::ports::CONTROL_PLANE_NAMESPACE,
    ]
    .contains(&namespace)
        || namespace == root
}

/// Whether `labels` carry every pair of `selector` (an empty selector selects everything).
pub(crate) fn selects(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A selector as Kubernetes prints it: `app=reviews,version=v1`.
pub(crate) fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Istio's host matching: equal names, or a wildcard (`*.example.com`, `*`) that covers the
/// other name, either way round.
pub(crate) fn host_matches(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(a), Some(b)) => {
            if a.len() < b.len() {
                b.ends_with(a)
            } else {
                a.ends_with(b)
            }
        }
        (Some(a), None) => b.ends_with(a),
        (None, Some(b)) => a.ends_with(b),
        (None, None) => a == b,
    }
}

/// The namespaces an `exportTo` list makes an object visible in: `*` for all.
pub(crate) fn export_scopes(export_to: &[String], own: &str) -> BTreeSet<String> {
    if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
        return BTreeSet::from(["*".to_owned()]);
    }
    export_to.iter().map(|e| if e == "." { own.to_owned() } else { e.clone() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_as_istio_matches_them() {
        assert!(host_matches("*", "reviews.default.svc.cluster.local"));
        assert!(host_matches("*.example.com", "api.example.com"));
        assert!(host_matches("api.example.com", "*.example.com"));
        assert!(host_matches("*.example.com", "*.api.example.com"));
        assert!(!host_matches("*.example.com", "example.org"));
        assert!(!host_matches("a.example.com", "b.example.com"));
    }

    #[test]
    fn short_names_are_services_of_the_namespace() {
        assert_eq!(fqdn("shop", "cart", "cluster.local"), "cart.shop.svc.cluster.local");
        assert_eq!(fqdn("shop", "cart.other", "cluster.local"), "cart.other");
        assert_eq!(fqdn("shop", "*.example.com", "cluster.local"), "*.example.com");
    }
}
