//! `networking.istio.io/v1`: VirtualService, DestinationRule, Gateway, ServiceEntry,
//! WorkloadEntry and Sidecar, with Istio's group, version, kind and JSON field names.
//!
//! Every struct refuses unknown fields (a typo such as `timout` is an error that names the field,
//! never a silent default) and defaults the missing ones, so that [`crate::validate`] can report
//! every missing required field of an object at once.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod destination_rule;
mod gateway;
mod service_entry;
mod sidecar;
mod virtual_service;

pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;

/// The API group of the networking kinds.
pub const GROUP: &str = "networking.istio.io";
/// The version the mesh writes. It also reads `v1beta1` and `v1alpha3`, which Istio serves with
/// the same schema.
pub const VERSION: &str = "v1";
/// Older versions of the group that carry the same schema.
pub const READ_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

/// How a string is matched: exactly one of `exact`, `prefix` or `regex` (RE2 syntax). In header
/// and query matches none at all means "present".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Matches when the value equals this string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Matches when the value starts with this string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2-style regular expression, matched against the whole value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    /// A match on the exact value.
    pub fn exact(value: impl Into<String>) -> Self {
        Self { exact: Some(value.into()), ..Self::default() }
    }

    /// A match on a prefix.
    pub fn prefix(value: impl Into<String>) -> Self {
        Self { prefix: Some(value.into()), ..Self::default() }
    }

    /// A match on a regular expression.
    pub fn regex(value: impl Into<String>) -> Self {
        Self { regex: Some(value.into()), ..Self::default() }
    }
}

/// A percentage in `0.0..=100.0` (`percentage: {value: 10}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Percent {
    /// The percentage, 0.0 to 100.0; fractions allowed (`0.1` is one in a thousand).
    pub value: f64,
}

/// A port given by number (`port: {number: 9080}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PortSelector {
    /// Port number on the destination service, 1 to 65535.
    pub number: u32,
}

/// Where traffic goes: a service host, an optional subset of a DestinationRule and a port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Service name from the registry: a short name (`reviews`), an FQDN or a ServiceEntry host.
    pub host: String,
    /// A subset declared by the host's DestinationRule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Port on the host; needed only when the service exposes more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// A named port with its protocol, as in Gateway servers, ServiceEntries and Sidecars.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Port number the service or listener takes traffic on, 1 to 65535.
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `GRPC-WEB`, `HTTP2`, `MONGO`, `TCP`, `TLS` and the others Istio
    /// knows.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Label for the port; a WorkloadEntry's `ports` map refers to service ports by it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The port on the endpoints the traffic is sent to, when it differs from `number`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Selects workloads by their labels (`workloadSelector: {labels: {...}}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must carry, all of them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Selects workloads by labels in the `matchLabels` form used by DestinationRule and the security
/// kinds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels a workload must carry, all of them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// The protocols a port may declare (matched without regard to case, as Istio does).
pub const PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "HTTP_PROXY",
    "MONGO",
    "MYSQL",
    "REDIS",
    "TCP",
    "TLS",
    "UDP",
    "THRIFT",
];
