//! ServiceEntry and WorkloadEntry: services and workloads the mesh knows about without a
//! Kubernetes Service or Pod (external APIs, VMs, the local mode's "pods").

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Port, WorkloadSelector};

/// The `spec` of a ServiceEntry (`networking.istio.io/v1`).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    plural = "serviceentries",
    shortname = "se",
    category = "istio-io",
    category = "networking-istio-io",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts"}"#,
    printcolumn = r#"{"name": "Location", "type": "string", "jsonPath": ".spec.location"}"#,
    printcolumn = r#"{"name": "Resolution", "type": "string", "jsonPath": ".spec.resolution"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// Host names of the service (required).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs of the service.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ports the service exposes, with their protocols.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Inside or outside the mesh (decides mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How the proxy finds the endpoints: NONE, STATIC, DNS, DNS_ROUND_ROBIN or DYNAMIC_DNS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Endpoints listed inline, instead of selected with `workloadSelector`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Pods and WorkloadEntries selected as endpoints (instead of `endpoints`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces that can see this entry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Names the endpoints' certificates must carry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

string_enum! {
    /// Whether a ServiceEntry's endpoints are part of the mesh.
    pub enum Location {
        /// Outside the mesh: no mTLS, no mesh identity.
        MeshExternal = "MESH_EXTERNAL",
        /// Part of the mesh.
        MeshInternal = "MESH_INTERNAL",
    }
}

string_enum! {
    /// How a ServiceEntry's endpoints are resolved.
    pub enum Resolution {
        /// Forward to the address the caller connected to.
        None = "NONE",
        /// The endpoints' IP addresses as listed.
        Static = "STATIC",
        /// Resolve endpoint host names (or the hosts) with DNS, using every address.
        Dns = "DNS",
        /// Resolve with DNS, using the first address per connection.
        DnsRoundRobin = "DNS_ROUND_ROBIN",
        /// Resolve the requested host dynamically (wildcard hosts).
        DynamicDns = "DYNAMIC_DNS",
    }
}

/// The `spec` of a WorkloadEntry (`networking.istio.io/v1`): one non-Kubernetes workload. Also
/// the shape of a ServiceEntry endpoint.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "WorkloadEntry",
    plural = "workloadentries",
    shortname = "we",
    category = "istio-io",
    category = "networking-istio-io",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name": "Address", "type": "string", "jsonPath": ".spec.address"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntrySpec {
    /// IP address, DNS name or `unix://` socket of the workload.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port number per service port name, when it differs from the service's.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Labels of the workload (subsets and selectors match on them).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Network the workload is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Locality of the workload, `region/zone/subzone`, for locality-aware load balancing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load balancing weight: endpoints get traffic in proportion to it (1 when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Service account of the workload (its mesh identity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}
