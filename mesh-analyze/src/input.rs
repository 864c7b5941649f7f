//! [`Input`]: everything an analysis looks at, as the loader read it.

use std::collections::BTreeSet;

use mesh_api::ObjectRef;
use mesh_api::load::{KubeLoaded, LoadError, LoadReport, Loaded};
use mesh_api::mesh::MeshConfig;

/// The cluster DNS domain services live under, unless told otherwise.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// The objects to analyze: mesh config and core kinds as `mesh-api` loads them (with their
/// origin), the Kubernetes objects the checks read (workloads, service accounts), and the
/// documents that did not load.
#[derive(Debug)]
pub struct Input {
    /// Istio kinds, Gateway API kinds, Services, Namespaces and Secrets.
    pub objects: Vec<Loaded>,
    /// Workloads (Deployments, StatefulSets, DaemonSets, Pods...), ServiceAccounts, ConfigMaps.
    pub kubernetes: Vec<KubeLoaded>,
    /// Documents that did not load: each is a finding (IST0106).
    pub errors: Vec<LoadError>,
    /// Objects of kinds the mesh reads but does not implement: each is a finding (MESH0001).
    pub not_enforced: Vec<LoadError>,
    /// The mesh's config: its root namespace makes policies mesh-wide.
    pub mesh: MeshConfig,
    /// The cluster DNS domain (`cluster.local`).
    pub domain: String,
}

impl Default for Input {
    fn default() -> Self {
        Self {
            objects: Vec::new(),
            kubernetes: Vec::new(),
            errors: Vec::new(),
            not_enforced: Vec::new(),
            mesh: MeshConfig::default(),
            domain: DEFAULT_DOMAIN.to_owned(),
        }
    }
}

impl Input {
    /// The input of what a (mixed) load read.
    ///
    /// An object read twice (the same kind, namespace and name) counts once, as the last
    /// read, as applying the files in order would leave it.
    pub fn from_report(report: LoadReport) -> Self {
        let mut input = Self {
            objects: report.objects,
            kubernetes: report.kubernetes,
            errors: report.errors,
            not_enforced: report.warnings,
            ..Self::default()
        };
        input.dedup();
        input
    }

    /// Keeps the last of the objects that share a kind, namespace and name.
    fn dedup(&mut self) {
        fn last_wins<T>(items: &mut Vec<T>, reference: impl Fn(&T) -> ObjectRef) {
            let mut seen = BTreeSet::new();
            let mut kept: Vec<T> = Vec::with_capacity(items.len());
            for item in items.drain(..).rev() {
                if seen.insert(reference(&item)) {
                    kept.push(item);
                }
            }
            kept.reverse();
            *items = kept;
        }
        last_wins(&mut self.objects, |o| o.resource.object_ref());
        last_wins(&mut self.kubernetes, |k| k.object.object_ref());
    }

    /// Puts every namespaced object that names no namespace in `namespace`, as `kubectl apply
    /// -n` would (and the documents that did not load, so that their findings are listed with
    /// that namespace).
    pub fn default_namespace(&mut self, namespace: &str) {
        for loaded in &mut self.objects {
            loaded.resource.default_namespace(namespace);
        }
        for loaded in &mut self.kubernetes {
            loaded.object.default_namespace(namespace);
        }
        for err in self.errors.iter_mut().chain(&mut self.not_enforced) {
            if let Some(object) = &mut err.object
                && object.namespace.is_none()
                && !CLUSTER_SCOPED.contains(&object.kind.as_str())
            {
                object.namespace = Some(namespace.to_owned());
            }
        }
        self.dedup();
    }

    /// Adds `other` on top of this input: an object of `other` replaces the one of the same
    /// kind, namespace and name here, as applying files to a running mesh would.
    pub fn overlay(&mut self, other: Input) {
        let replaced: BTreeSet<_> = other
            .objects
            .iter()
            .map(|o| o.resource.object_ref())
            .chain(other.kubernetes.iter().map(|k| k.object.object_ref()))
            .collect();
        self.objects.retain(|o| !replaced.contains(&o.resource.object_ref()));
        self.kubernetes.retain(|k| !replaced.contains(&k.object.object_ref()));
        self.objects.extend(other.objects);
        self.kubernetes.extend(other.kubernetes);
        self.errors.extend(other.errors);
        self.not_enforced.extend(other.not_enforced);
    }
}

/// Kinds without a namespace, for documents that did not load.
const CLUSTER_SCOPED: &[&str] =
    &["Namespace", "GatewayClass", "ClusterRole", "ClusterRoleBinding", "Node"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_replace_the_live_objects_they_name() {
        let live = mesh_api::load::load_str_mixed(
            "live",
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: x}\n",
        );
        let file = mesh_api::load::load_str_mixed(
            "file.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: 80}]}\n",
        );
        let mut input = Input::from_report(live);
        let mut top = Input::from_report(file);
        top.default_namespace("x");
        input.overlay(top);
        let origins: Vec<(String, String)> = input
            .objects
            .iter()
            .map(|o| (o.resource.object_ref().to_string(), o.origin.file.clone()))
            .collect();
        assert_eq!(
            origins,
            [
                ("Service x/a".to_owned(), "live".to_owned()),
                ("Service x/b".to_owned(), "file.yaml".to_owned())
            ]
        );
    }
}
