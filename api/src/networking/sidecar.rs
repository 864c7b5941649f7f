//! Sidecar: narrows what a sidecar proxy sees and accepts (egress hosts, ingress ports,
//! outbound traffic policy). The lever that keeps proxy memory small in large meshes.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConnectionPoolSettings, Destination, Port, ServerTlsSettings, WorkloadSelector};

/// The `spec` of a Sidecar (`networking.istio.io/v1`).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Sidecar",
    plural = "sidecars",
    category = "istio-io",
    category = "networking-istio-io",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    /// Workloads this applies to; without it, the namespace default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Inbound ports and where they go.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressListener>,
    /// Which services the workload may reach.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressListener>,
    /// Default inbound connection pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// What happens to traffic for destinations outside the registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// An inbound port of the workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressListener {
    /// The port inbound traffic arrives on, with its protocol and name.
    pub port: Port,
    /// IP the listener binds to; chosen from the workload's addresses when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// How traffic reaches the listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Where the traffic goes (`127.0.0.1:8080`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// TLS the sidecar terminates on this port for callers outside the mesh, instead of mesh mTLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Connection pool limits for inbound traffic on this port, overriding `inboundConnectionPool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// Services the workload may reach, as `namespace/dnsName` (`./*`, `istio-system/*`, `*/foo.com`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressListener {
    /// The port this listener covers; without it, the ports of its hosts that no listener with a
    /// port claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// IP or unix socket (`unix:///path`) the listener binds to; needs `port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// How traffic reaches the listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Hosts in `namespace/dnsName` form (required).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

string_enum! {
    /// How traffic reaches a Sidecar listener.
    pub enum CaptureMode {
        /// Whatever the pod's capture does.
        Default = "DEFAULT",
        /// Captured by iptables.
        Iptables = "IPTABLES",
        /// The app talks to the listener directly.
        None = "NONE",
    }
}

/// Policy for destinations unknown to the mesh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// `ALLOW_ANY` (passthrough, the default) or `REGISTRY_ONLY` (blocked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficMode>,
    /// Send unknown traffic through this egress proxy (ALLOW_ANY only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

string_enum! {
    /// Outbound traffic policy modes.
    pub enum OutboundTrafficMode {
        /// Only services in the registry are reachable.
        RegistryOnly = "REGISTRY_ONLY",
        /// Unknown destinations are passed through.
        AllowAny = "ALLOW_ANY",
    }
}
