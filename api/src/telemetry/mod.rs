//! `telemetry.istio.io/v1`: Telemetry (tracing, access logging and metrics of the workloads it
//! applies to), with Istio's field names.
//!
//! The mesh enforces `tracing` and `accessLogging`; `metrics` is read and reported as not
//! enforced. Which Telemetry applies to a proxy, and how the scopes merge, is the pilot's
//! translation (`mesh-pilot/src/translate/telemetry.rs`); what an access log `filter.expression`
//! may say is [`filter`].

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::security::{LabelSelector, PolicyTargetReference};

pub mod filter;

/// The API group of the Telemetry kind.
pub const GROUP: &str = "telemetry.istio.io";
/// The version the mesh writes; `v1alpha1` is read too.
pub const VERSION: &str = "v1";
/// Versions of the group that carry the same schema.
pub const READ_VERSIONS: &[&str] = &["v1", "v1alpha1"];

/// The `spec` of a Telemetry (`telemetry.istio.io/v1`): in the root namespace without a
/// selector it applies to the whole mesh, in another namespace without one to that namespace,
/// with a selector to the workloads it selects; the narrower scope overrides the wider.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "telemetry.istio.io",
    version = "v1",
    kind = "Telemetry",
    plural = "telemetries",
    shortname = "telemetry",
    category = "istio-io",
    category = "telemetry-istio-io",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySpec {
    /// Workloads this applies to; without it (and without `targetRefs`), the whole namespace
    /// (or the mesh, in the root namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// A Gateway API gateway this applies to, instead of `selector` (Istio hides it from its
    /// docs; `targetRefs` is the documented form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Gateway API gateways (`kind: Gateway`, `group: gateway.networking.k8s.io`, same
    /// namespace) this applies to, instead of `selector`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// How spans are made and reported.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    /// Metric overrides: read, and reported as not enforced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    /// Which access logs are written, and for which requests.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

string_enum! {
    /// Which side of a request a rule is for, seen from the workload.
    pub enum WorkloadMode {
        /// Both: the workload calling (outbound) and being called (inbound).
        ClientAndServer = "CLIENT_AND_SERVER",
        /// The workload calling another (outbound; a gateway's traffic is client traffic).
        Client = "CLIENT",
        /// The workload being called (inbound).
        Server = "SERVER",
    }
}

/// A provider of the mesh config's `extensionProviders`, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderRef {
    /// The provider's name (compared without regard to case, as Istio does).
    pub name: String,
}

/// One tracing rule: which provider reports spans, what share of requests is sampled, which
/// tags spans carry. A narrower scope overrides each field it sets and inherits the others.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// Which side of the workload's traffic this rule is for (both when absent).
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<TracingSelector>,
    /// The provider that reports spans (only the first is used, as in Istio); the mesh's
    /// default tracing provider when absent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Share of requests sampled when the caller made no decision, 0 to 100; the mesh
    /// config's `defaultConfig.tracing.sampling` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    /// `true`: no spans are reported (context is still propagated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    /// Tags added to every span, by tag name; when set, they replace the parent's.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Whether the sampling decision may come from the request id (Envoy's own ids);
    /// read, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
}

/// Which side of the traffic a tracing rule is for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSelector {
    /// CLIENT, SERVER or CLIENT_AND_SERVER (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// A span tag's value: exactly one of `literal`, `environment` or `header`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CustomTag {
    /// The same value on every span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub literal: Option<Literal>,
    /// The value of an environment variable of the proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// The value of a request header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<RequestHeader>,
}

/// A literal tag value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Literal {
    /// The value.
    pub value: String,
}

/// A tag taken from the proxy's environment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Environment {
    /// The variable's name.
    pub name: String,
    /// The value when the variable is not set.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

/// A tag taken from a request header.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestHeader {
    /// The header's name.
    pub name: String,
    /// The value when the request has no such header.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

/// Metric overrides (Istio's `Metrics`): read, not enforced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    /// The metrics providers this is for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Overrides, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverrides>,
    /// How often TCP metrics are reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<Duration>,
}

/// One metric override.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverrides {
    /// Which metrics, on which side.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    /// `true` turns the metrics off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Dimensions added, changed or removed, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Which metrics an override is for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    /// One of Istio's standard metrics (`REQUEST_COUNT`, `ALL_METRICS`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// A metric by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    /// CLIENT, SERVER or CLIENT_AND_SERVER.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// A change to one metric dimension.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TagOverride {
    /// `UPSERT` (the default) or `REMOVE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The value expression, for `UPSERT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// One access logging rule: which providers log, whether logging is off, and which requests
/// are logged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    /// Which side of the workload's traffic this rule is for (both when absent).
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<LogSelector>,
    /// The providers that log; the parent's (or the mesh's default ones) when absent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// `true`: these providers write nothing. A parent's `true` is undone only by an explicit
    /// `false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Which requests are logged; it applies to the providers this rule names (Istio's rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

/// Which side of the traffic an access logging rule is for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogSelector {
    /// CLIENT, SERVER or CLIENT_AND_SERVER (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// An access log filter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// A CEL expression of the forms [`filter::parse`] compiles (`response.code >= 400`).
    pub expression: String,
}

impl TelemetrySpec {
    /// Whether it selects workloads by labels (rather than a whole namespace).
    pub fn has_selector(&self) -> bool {
        self.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty())
    }

    /// The Gateway API gateways it names, `targetRef` and `targetRefs` together.
    pub fn targets(&self) -> impl Iterator<Item = &PolicyTargetReference> {
        self.target_ref.iter().chain(&self.target_refs)
    }

    /// Whether it applies to its whole namespace: neither a selector nor targets.
    pub fn namespace_wide(&self) -> bool {
        !self.has_selector() && self.targets().next().is_none()
    }
}

impl WorkloadMode {
    /// Whether a rule of this mode applies to traffic of `side` (CLIENT or SERVER).
    pub fn covers(&self, side: &WorkloadMode) -> bool {
        matches!(self, WorkloadMode::ClientAndServer) || self == side
    }
}
