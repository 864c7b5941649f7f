//! Gateway classes and Gateways: what a gateway proxy listens on.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::{GatewayClassStatus, GatewayStatus};

/// The `spec` of a GatewayClass: which controller serves the Gateways of the class.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GatewayClass",
    plural = "gatewayclasses",
    status = "GatewayClassStatus",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct GatewayClassSpec {
    /// The controller: `mesh.io/gateway-controller` for the mesh's classes.
    pub controller_name: String,
    /// What the class is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The `spec` of a Gateway.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    plural = "gateways",
    namespaced,
    status = "GatewayStatus",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// The class: `mesh` (or `istio`) for the mesh's gateways.
    pub gateway_class_name: String,
    /// What the gateway listens on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
}

/// One listener of a Gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// Its name (routes may attach to it by `sectionName`).
    pub name: String,
    /// The host it serves (all when absent); may start with `*.`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The port.
    pub port: u16,
    /// `HTTP`, `HTTPS`, `TLS` or `TCP`.
    pub protocol: String,
    /// TLS: terminated with certificates from Secrets, or passed through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Which routes may attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// TLS of a listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    /// `Terminate` (the default) or `Passthrough`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The Secrets holding the certificate (the first is used).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificate_refs: Vec<ObjectReference>,
}

/// Which routes may attach to a listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedRoutes {
    /// From which namespaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
}

/// The namespaces routes may attach from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteNamespaces {
    /// `Same` (the default) or `All`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// A reference to an object (a Secret, a Service).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    /// Its API group (core when absent or empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Its kind (`Secret`, `Service`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its name.
    pub name: String,
    /// Its namespace (the referrer's when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
