//! The Kubernetes Gateway API (`gateway.networking.k8s.io`): GatewayClass, Gateway, HTTPRoute,
//! GRPCRoute, TLSRoute and ReferenceGrant, as far as the mesh serves them. The CRDs are Kubernetes', not the mesh's
//! (`charts/base` does not install them); the pilot turns these objects into the same model as
//! Istio's Gateway and VirtualService. A field the mesh does not implement is refused by the
//! loader with its path, never dropped. Statuses are read leniently (other controllers write
//! there too) and written by the pilot in Kubernetes mode.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The versions read (`v1`, and `v1beta1` for older manifests).
pub const READ_VERSIONS: &[&str] = &["v1", "v1beta1"];
/// The GatewayClass the mesh implements (Istio's `istio` is accepted too).
pub const GATEWAY_CLASS: &str = "mesh";
/// The classes the pilot creates and serves: its own, and Istio's name for people who move
/// from Istio with their manifests.
pub const GATEWAY_CLASSES: &[&str] = &[GATEWAY_CLASS, "istio"];
/// The `controllerName` of the mesh's GatewayClasses, and of the statuses the pilot writes.
pub const CONTROLLER_NAME: &str = "mesh.io/gateway-controller";
/// The versions of TLSRoute read (it is in the experimental channel).
pub const TLS_ROUTE_VERSIONS: &[&str] = &["v1alpha2", "v1alpha3", "v1"];
/// The label the mesh's gateway proxies for a Gateway carry: `<label>: <Gateway name>`.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

mod gateway;
mod route;
pub mod status;

pub use gateway::*;
pub use route::*;

/// The `spec` of a ReferenceGrant: who may refer to what in this namespace.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1beta1",
    kind = "ReferenceGrant",
    plural = "referencegrants",
    namespaced,
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantSpec {
    /// The referrers: group, kind and namespace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<GrantFrom>,
    /// What they may refer to: group, kind, and a name if only one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<GrantTo>,
}

/// A referrer a ReferenceGrant admits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantFrom {
    /// Its group.
    pub group: String,
    /// Its kind.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
}

/// What a ReferenceGrant lets be referred to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantTo {
    /// Its group.
    pub group: String,
    /// Its kind.
    pub kind: String,
    /// One name only, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
