//! The Kubernetes kinds a mixed load reads besides mesh config: the workloads whose pod
//! templates carry the labels selectors and subsets match, service accounts and config maps.
//! Other kinds of groups the mesh does not read are skipped, so that a whole application's
//! manifests can be analyzed as they are.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSpec, ReplicationController, ServiceAccount};
use kube::Resource as _;
use serde::de::DeserializeOwned;

use super::split::Document;
use super::{DocError, Input, LoadReport, Origin, load_path_with, load_reader_with, load_str_with};
use crate::{ObjectRef, Resource};

/// Like [`load_path`](super::load_path), for manifests that mix mesh config with any other
/// Kubernetes kinds (Deployments, ServiceAccounts, ConfigMaps...): those are read into
/// [`LoadReport::kubernetes`] when a check needs them and listed in [`LoadReport::skipped`]
/// otherwise, never an error. Documents of the API groups the mesh reads (`*.istio.io`, the
/// Gateway API) must still be kinds and versions it reads.
pub fn load_path_mixed(path: &std::path::Path) -> LoadReport {
    load_path_with(path, Kinds::Mixed)
}

/// Like [`load_stdin`](super::load_stdin), for mixed manifests ([`load_path_mixed`]).
pub fn load_stdin_mixed() -> LoadReport {
    load_reader_with("<stdin>", std::io::stdin().lock(), Kinds::Mixed)
}

/// Like [`load_reader`](super::load_reader), for mixed manifests ([`load_path_mixed`]).
pub fn load_reader_mixed(source: &str, reader: impl std::io::Read) -> LoadReport {
    load_reader_with(source, reader, Kinds::Mixed)
}

/// Like [`load_str`](super::load_str), for mixed manifests ([`load_path_mixed`]).
pub fn load_str_mixed(source: &str, text: &str) -> LoadReport {
    load_str_with(source, text, Kinds::Mixed)
}

/// Which kinds a load accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kinds {
    /// Mesh config only: any other kind is an error.
    Mesh,
    /// Any Kubernetes kind: the ones checks need are typed, the others skipped.
    Mixed,
}

/// What one object of a document turned out to be.
#[allow(clippy::large_enum_variant)] // One at a time, moved straight into the report.
pub(super) enum Decoded {
    /// Mesh config, or a core kind the mesh reads.
    Mesh(Resource),
    /// A Kubernetes kind read for the checks (mixed loads only).
    Kube(KubeObject),
    /// Any other kind, read past (mixed loads only).
    Skipped {
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
    },
}

/// The kind, namespace and name a document declares, for errors about it; `None` when they
/// cannot be read (not YAML, no kind, a List).
pub(super) fn document_object(doc: &Document<'_>) -> Option<ObjectRef> {
    let value: serde_json::Value = super::typed(doc).ok()?;
    let kind = value.get("kind")?.as_str().filter(|kind| !kind.ends_with("List"))?;
    let metadata = value.get("metadata");
    let field = |name: &str| metadata.and_then(|m| m.get(name)).and_then(|v| v.as_str());
    Some(ObjectRef::new(kind, field("namespace"), field("name").unwrap_or_default()))
}

/// The API groups whose documents must be kinds the mesh reads, even in a mixed load: a typo in
/// one of them (`VirtualSevice`) is a mistake to report, not a kind to skip.
const MESH_GROUPS: &[&str] = &[
    crate::networking::GROUP,
    crate::security::GROUP,
    "telemetry.istio.io",
    "extensions.istio.io",
    crate::gateway_api::GROUP,
];

/// Whether documents of `group` must be kinds the mesh reads.
pub(super) fn is_mesh_group(group: &str) -> bool {
    MESH_GROUPS.contains(&group)
}

/// A Kubernetes object that is not mesh config, read by a mixed load for the checks that need
/// it (the labels of a workload's pods, a namespace's service accounts).
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // Read once per file; boxing would only add noise.
pub enum KubeObject {
    /// `apps/v1` Deployment.
    Deployment(Deployment),
    /// `apps/v1` StatefulSet.
    StatefulSet(StatefulSet),
    /// `apps/v1` DaemonSet.
    DaemonSet(DaemonSet),
    /// `apps/v1` ReplicaSet.
    ReplicaSet(ReplicaSet),
    /// Core `v1` ReplicationController.
    ReplicationController(ReplicationController),
    /// `batch/v1` Job.
    Job(Job),
    /// `batch/v1` CronJob.
    CronJob(CronJob),
    /// Core `v1` Pod.
    Pod(Pod),
    /// Core `v1` ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// Core `v1` ConfigMap.
    ConfigMap(ConfigMap),
}

/// A Kubernetes object and where it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeLoaded {
    /// File, document and line the object came from.
    pub origin: Origin,
    /// The object.
    pub object: KubeObject,
}

/// An object of a kind a mixed load reads past.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// File, document and line the object came from.
    pub origin: Origin,
    /// Its `apiVersion`.
    pub api_version: String,
    /// Its `kind`.
    pub kind: String,
}

/// The pods a workload runs, as its template (or, for a Pod, itself) describes them.
#[derive(Clone, Copy, Debug)]
pub struct PodTemplate<'a> {
    /// The pods' labels.
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// The pods' annotations.
    pub annotations: Option<&'a BTreeMap<String, String>>,
    /// The pods' spec.
    pub spec: Option<&'a PodSpec>,
}

/// Applies `$body` to the object inside any variant, bound as `$o`.
macro_rules! each {
    ($self:expr, $o:ident => $body:expr) => {
        match $self {
            KubeObject::Deployment($o) => $body,
            KubeObject::StatefulSet($o) => $body,
            KubeObject::DaemonSet($o) => $body,
            KubeObject::ReplicaSet($o) => $body,
            KubeObject::ReplicationController($o) => $body,
            KubeObject::Job($o) => $body,
            KubeObject::CronJob($o) => $body,
            KubeObject::Pod($o) => $body,
            KubeObject::ServiceAccount($o) => $body,
            KubeObject::ConfigMap($o) => $body,
        }
    };
}

impl KubeObject {
    /// Kind, namespace and name of the object.
    pub fn object_ref(&self) -> ObjectRef {
        each!(self, o => ObjectRef::of(o))
    }

    /// Puts the object in `namespace` when it names none, as `kubectl apply` does (all these
    /// kinds live in a namespace).
    pub fn default_namespace(&mut self, namespace: &str) {
        each!(self, o => {
            if o.meta().namespace.is_none() {
                o.meta_mut().namespace = Some(namespace.to_owned());
            }
        })
    }

    /// The pods the object runs; `None` for kinds that run none (ServiceAccount, ConfigMap).
    pub fn pod_template(&self) -> Option<PodTemplate<'_>> {
        let template = match self {
            KubeObject::Pod(pod) => {
                return Some(PodTemplate {
                    labels: pod.metadata.labels.as_ref(),
                    annotations: pod.metadata.annotations.as_ref(),
                    spec: pod.spec.as_ref(),
                });
            }
            KubeObject::Deployment(o) => o.spec.as_ref().map(|s| &s.template),
            KubeObject::StatefulSet(o) => o.spec.as_ref().map(|s| &s.template),
            KubeObject::DaemonSet(o) => o.spec.as_ref().map(|s| &s.template),
            KubeObject::ReplicaSet(o) => o.spec.as_ref().and_then(|s| s.template.as_ref()),
            KubeObject::ReplicationController(o) => {
                o.spec.as_ref().and_then(|s| s.template.as_ref())
            }
            KubeObject::Job(o) => o.spec.as_ref().map(|s| &s.template),
            KubeObject::CronJob(o) => {
                o.spec.as_ref().and_then(|s| s.job_template.spec.as_ref()).map(|s| &s.template)
            }
            KubeObject::ServiceAccount(_) | KubeObject::ConfigMap(_) => return None,
        };
        // A workload always runs pods, even when its template is left empty.
        let metadata = template.and_then(|t| t.metadata.as_ref());
        Some(PodTemplate {
            labels: metadata.and_then(|m| m.labels.as_ref()),
            annotations: metadata.and_then(|m| m.annotations.as_ref()),
            spec: template.and_then(|t| t.spec.as_ref()),
        })
    }

    /// The object's own labels (not its pods').
    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        each!(self, o => o.meta().labels.as_ref())
    }
}

/// Decodes a document of `kind` into its type.
type Decode = fn(&Input<'_>) -> Result<KubeObject, DocError>;

fn typed<T: DeserializeOwned>(input: &Input<'_>) -> Result<T, DocError> {
    input.decode()
}

/// The kinds read: name, API group (empty for core), version, decoder.
const KINDS: &[(&str, &str, &str, Decode)] = &[
    ("Deployment", "apps", "v1", |i| Ok(KubeObject::Deployment(typed(i)?))),
    ("StatefulSet", "apps", "v1", |i| Ok(KubeObject::StatefulSet(typed(i)?))),
    ("DaemonSet", "apps", "v1", |i| Ok(KubeObject::DaemonSet(typed(i)?))),
    ("ReplicaSet", "apps", "v1", |i| Ok(KubeObject::ReplicaSet(typed(i)?))),
    ("ReplicationController", "", "v1", |i| Ok(KubeObject::ReplicationController(typed(i)?))),
    ("Job", "batch", "v1", |i| Ok(KubeObject::Job(typed(i)?))),
    ("CronJob", "batch", "v1", |i| Ok(KubeObject::CronJob(typed(i)?))),
    ("Pod", "", "v1", |i| Ok(KubeObject::Pod(typed(i)?))),
    ("ServiceAccount", "", "v1", |i| Ok(KubeObject::ServiceAccount(typed(i)?))),
    ("ConfigMap", "", "v1", |i| Ok(KubeObject::ConfigMap(typed(i)?))),
];

/// The object, when `api_version` and `kind` name one of [`KINDS`]; `None` for any other kind.
pub(super) fn decode(
    input: &Input<'_>,
    api_version: &str,
    kind: &str,
) -> Option<Result<KubeObject, DocError>> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let (.., decode) =
        KINDS.iter().find(|(k, g, v, _)| *k == kind && *g == group && *v == version)?;
    Some(decode(input))
}
