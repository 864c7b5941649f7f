//! What `meshctl install` applies, in which order, and what it records so `uninstall` removes
//! exactly that: pure functions of the rendered manifests.
//!
//! Order, as Helm installs and as the mesh needs: the namespace, the CRDs, identities and RBAC,
//! configuration, Services, workloads, disruption budgets, and the webhook configurations last,
//! so the API server never calls a webhook whose pilot does not exist yet.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The ConfigMap in the release namespace that records what install applied.
pub const RECORD_NAME: &str = "meshctl-install";
/// The field manager of server-side apply, and the managed-by label of the install record.
pub const MANAGER: &str = "meshctl";

/// Where the API serves a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindInfo {
    /// The API group (`""` for core).
    pub group: &'static str,
    /// The version.
    pub version: &'static str,
    /// The plural resource name.
    pub plural: &'static str,
    /// Whether objects of the kind live in a namespace.
    pub namespaced: bool,
}

/// The kinds the charts use, by `(apiVersion, kind)`, with their rank in the install order.
const KINDS: &[(&str, &str, &str, bool, u8)] = &[
    ("v1", "Namespace", "namespaces", false, 0),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", false, 1),
    ("v1", "ServiceAccount", "serviceaccounts", true, 2),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", false, 3),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", false, 3),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true, 3),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", true, 3),
    ("v1", "ConfigMap", "configmaps", true, 4),
    ("v1", "Secret", "secrets", true, 4),
    ("v1", "Service", "services", true, 5),
    ("apps/v1", "Deployment", "deployments", true, 6),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, 7),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", true, 7),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
        8,
    ),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
        8,
    ),
];

/// Where the API serves `kind` of `api_version`, if it is one the charts use.
pub fn kind_info(api_version: &str, kind: &str) -> Option<KindInfo> {
    KINDS.iter().find(|k| k.0 == api_version && k.1 == kind).map(|k| {
        let (group, version) = k.0.split_once('/').unwrap_or(("", k.0));
        KindInfo { group, version, plural: k.2, namespaced: k.3 }
    })
}

fn rank(object: &Value) -> u8 {
    let (api_version, kind) = (text(object, "apiVersion"), text(object, "kind"));
    KINDS.iter().find(|k| k.0 == api_version && k.1 == kind).map_or(u8::MAX, |k| k.4)
}

fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object[field].as_str().unwrap_or_default()
}

/// One object install applies, by reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Its `apiVersion`.
    pub api_version: String,
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace, for namespaced kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ObjectRef {
    /// The reference of `object`.
    pub fn of(object: &Value) -> Self {
        Self {
            api_version: text(object, "apiVersion").to_owned(),
            kind: text(object, "kind").to_owned(),
            name: object["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    /// As kubectl prints it: `deployment.apps/mesh-pilot` (and ` -n NS`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = self.api_version.split_once('/').map(|(g, _)| g);
        write!(f, "{}", self.kind.to_ascii_lowercase())?;
        if let Some(group) = group {
            write!(f, ".{group}")?;
        }
        write!(f, "/{}", self.name)?;
        if let Some(ns) = &self.namespace {
            write!(f, " -n {ns}")?;
        }
        Ok(())
    }
}

/// What install will do: every object, in order, with its namespace set.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The release namespace.
    pub namespace: String,
    /// The objects, in the order they are applied.
    pub objects: Vec<Value>,
}

/// Why the manifests cannot be installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// An object of a kind install does not know how to apply.
    #[error("{object}: install does not know the kind {kind} of {api_version}")]
    UnknownKind {
        /// The object.
        object: String,
        /// Its apiVersion.
        api_version: String,
        /// Its kind.
        kind: String,
    },
    /// An object without a name.
    #[error("a {kind} without metadata.name")]
    Unnamed {
        /// Its kind.
        kind: String,
    },
}

/// Orders `crds` and `objects` for applying into `namespace`: the namespace itself first,
/// namespaced objects without a namespace put into it. The objects are otherwise as the charts
/// render them for Helm (labels included), so both ways install the same thing.
pub fn plan(namespace: &str, crds: Vec<Value>, objects: Vec<Value>) -> Result<Plan, PlanError> {
    let mut all =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})];
    all.extend(crds);
    all.extend(objects);
    for object in &mut all {
        let (api_version, kind) =
            (text(object, "apiVersion").to_owned(), text(object, "kind").to_owned());
        if object["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            return Err(PlanError::Unnamed { kind });
        }
        let info = kind_info(&api_version, &kind).ok_or_else(|| PlanError::UnknownKind {
            object: ObjectRef::of(object).to_string(),
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
        if info.namespaced && object["metadata"]["namespace"].is_null() {
            object["metadata"]["namespace"] = json!(namespace);
        }
        if !info.namespaced
            && let Some(meta) = object["metadata"].as_object_mut()
        {
            meta.remove("namespace");
        }
    }
    // Stable: within a rank, the charts' own order.
    all.sort_by_key(rank);
    Ok(Plan { namespace: namespace.to_owned(), objects: all })
}

/// The record install leaves: a ConfigMap listing every object it applied (the CRDs marked, so
/// that only `--purge` removes them).
pub fn record(plan: &Plan) -> Value {
    let (crds, others): (Vec<ObjectRef>, Vec<ObjectRef>) = plan
        .objects
        .iter()
        .map(ObjectRef::of)
        .filter(|r| r.kind != "Namespace")
        .partition(|r| r.kind == "CustomResourceDefinition");
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": RECORD_NAME,
            "namespace": plan.namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGER}
        },
        "data": {
            "objects": serde_json::to_string(&others).unwrap_or_default(),
            "crds": serde_json::to_string(&crds).unwrap_or_default(),
        }
    })
}

/// What uninstall removes, in order (the reverse of install's), read from the record; the CRDs
/// only when `purge`.
pub fn removals(record: &Value, purge: bool) -> Result<Vec<ObjectRef>, String> {
    let list = |key: &str| -> Result<Vec<ObjectRef>, String> {
        match record["data"][key].as_str() {
            Some(text) => {
                serde_json::from_str(text).map_err(|e| format!("the record's {key}: {e}"))
            }
            None => Ok(Vec::new()),
        }
    };
    let mut out = list("objects")?;
    out.reverse();
    if purge {
        // Last: the mesh's objects of those kinds go with them.
        out.extend(list("crds")?.into_iter().rev());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn object(api_version: &str, kind: &str, name: &str) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}})
    }

    #[test]
    fn objects_are_applied_in_dependency_order_into_the_namespace() {
        let crd = object(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "virtualservices.networking.istio.io",
        );
        let objects = vec![
            object(
                "admissionregistration.k8s.io/v1",
                "MutatingWebhookConfiguration",
                "mesh-sidecar-injector",
            ),
            object("apps/v1", "Deployment", "mesh-pilot"),
            object("v1", "Service", "mesh-pilot"),
            object("rbac.authorization.k8s.io/v1", "ClusterRole", "mesh-pilot"),
            object("v1", "ServiceAccount", "mesh-pilot"),
            object("v1", "ConfigMap", "mesh"),
        ];
        let plan = plan("mesh-system", vec![crd], objects).unwrap();
        let order: Vec<String> =
            plan.objects.iter().map(|o| ObjectRef::of(o).to_string()).collect();
        assert_eq!(
            order,
            [
                "namespace/mesh-system",
                "customresourcedefinition.apiextensions.k8s.io/virtualservices.networking.istio.io",
                "serviceaccount/mesh-pilot -n mesh-system",
                "clusterrole.rbac.authorization.k8s.io/mesh-pilot",
                "configmap/mesh -n mesh-system",
                "service/mesh-pilot -n mesh-system",
                "deployment.apps/mesh-pilot -n mesh-system",
                "mutatingwebhookconfiguration.admissionregistration.k8s.io/mesh-sidecar-injector",
            ]
        );
    }

    #[test]
    fn unknown_kinds_and_nameless_objects_are_refused() {
        let err = plan("mesh-system", vec![], vec![object("v1", "Pod", "x")]).unwrap_err();
        assert_eq!(err.to_string(), "pod/x: install does not know the kind Pod of v1");
        let nameless = json!({"apiVersion": "v1", "kind": "Service", "metadata": {}});
        assert_eq!(
            plan("mesh-system", vec![], vec![nameless]).unwrap_err(),
            PlanError::Unnamed { kind: "Service".into() }
        );
    }

    #[test]
    fn uninstall_removes_what_was_recorded_in_reverse_and_crds_only_when_purging() {
        let crd = object(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "gateways.networking.istio.io",
        );
        let plan = plan(
            "mesh-system",
            vec![crd],
            vec![
                object("v1", "ServiceAccount", "mesh-ca"),
                object("apps/v1", "Deployment", "mesh-ca"),
            ],
        )
        .unwrap();
        let record = record(&plan);
        let names = |purge| -> Vec<String> {
            removals(&record, purge).unwrap().iter().map(ToString::to_string).collect()
        };
        assert_eq!(
            names(false),
            ["deployment.apps/mesh-ca -n mesh-system", "serviceaccount/mesh-ca -n mesh-system"]
        );
        assert_eq!(
            names(true).last().unwrap(),
            "customresourcedefinition.apiextensions.k8s.io/gateways.networking.istio.io"
        );
    }
}
