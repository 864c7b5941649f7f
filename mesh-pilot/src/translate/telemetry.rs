//! Telemetry: which Telemetry applies to a proxy and what it says, merged as istiod merges it
//! (`pilot/pkg/model/telemetry.go`), and the HTTP connection manager fields that carry it
//! (`tracing` and `access_log`, as `pilot/pkg/networking/core/tracing.go` and `accesslog.go`
//! write them). Pure: the snapshot and the proxy in, Envoy's messages out.
//!
//! Scopes: the root namespace's Telemetry without a selector, then the proxy's namespace's,
//! then the first (oldest) in its namespace whose selector (or gateway target) matches it;
//! each later one overrides what it sets. Tracing: the mesh's default provider, overridden by
//! each rule's provider, sampling, span reporting and custom tags, for the client side, the
//! server side or both (`match.mode`). Access logging: by provider, a narrower rule replacing
//! the providers and disabling or enabling them. Without any Telemetry or default provider,
//! the mesh config's older settings apply (`enableTracing`, `accessLogFile`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing as HcmTracing;
use mesh_api::mesh::ExtensionProvider;
use mesh_api::telemetry::{AccessLogging, CustomTag, Filter, Telemetry, WorkloadMode};

use crate::model::{Proxy, Snapshot};

mod access_log;
mod trace;

pub use access_log::{compile_filter, envoy_access_logs, listener_access_logs};
pub use trace::{OPENTELEMETRY_TRACER, envoy_tracing, service_name};

/// Which kind of HTTP connection manager (Istio's listener classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A sidecar's inbound side: the workload is the server.
    SidecarInbound,
    /// A sidecar's outbound side: the workload is the client.
    SidecarOutbound,
    /// A gateway (client traffic, as Istio counts it).
    Gateway,
}

impl Class {
    /// The side of the traffic the workload is on.
    fn mode(self) -> WorkloadMode {
        match self {
            Class::SidecarInbound => WorkloadMode::Server,
            Class::SidecarOutbound | Class::Gateway => WorkloadMode::Client,
        }
    }
}

/// Puts Telemetries in Istio's order: oldest first, then by `name.namespace`.
pub fn sort(telemetries: &mut [Telemetry]) {
    telemetries.sort_by_cached_key(|t| {
        let created = t.metadata.creation_timestamp.as_ref().map(|time| time.0);
        let name = t.metadata.name.as_deref().unwrap_or_default();
        let namespace = t.metadata.namespace.as_deref().unwrap_or_default();
        (created, format!("{name}.{namespace}"))
    });
}

/// The Telemetries that apply to a proxy, widest first.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Applicable<'a> {
    /// The root namespace's Telemetry without a selector.
    pub root: Option<&'a Telemetry>,
    /// The proxy's namespace's Telemetry without a selector (none in the root namespace).
    pub namespace: Option<&'a Telemetry>,
    /// The oldest Telemetry of the proxy's namespace that selects it.
    pub workload: Option<&'a Telemetry>,
}

impl<'a> Applicable<'a> {
    /// The applicable Telemetries, widest first.
    pub fn levels(&self) -> impl Iterator<Item = &'a Telemetry> + use<'a> {
        [self.root, self.namespace, self.workload].into_iter().flatten()
    }
}

fn namespace_of(t: &Telemetry) -> &str {
    t.metadata.namespace.as_deref().unwrap_or("default")
}

/// Label Istio puts on the pods of a Gateway API gateway, naming it.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Whether a Telemetry with a selector or targets applies to the proxy.
fn selects(t: &Telemetry, proxy: &Proxy) -> bool {
    if let Some(selector) = t.spec.selector.as_ref().filter(|_| t.spec.has_selector()) {
        return selector.match_labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v));
    }
    t.spec.targets().any(|target| {
        target.kind == "Gateway"
            && target.group == mesh_api::gateway_api::GROUP
            && target.namespace.as_deref().is_none_or(|ns| ns == namespace_of(t))
            && proxy.labels.get(GATEWAY_NAME_LABEL) == Some(&target.name)
    })
}

/// The Telemetries that apply to `proxy` (Istio's `applicableTelemetries`).
pub fn applicable<'a>(snapshot: &'a Snapshot, proxy: &Proxy) -> Applicable<'a> {
    let namespace_wide = |namespace: &str| {
        snapshot
            .telemetries
            .iter()
            .find(|t| namespace_of(t) == namespace && t.spec.namespace_wide())
    };
    let root_namespace = snapshot.root_namespace.as_str();
    Applicable {
        root: (!root_namespace.is_empty()).then(|| namespace_wide(root_namespace)).flatten(),
        namespace: (proxy.namespace != root_namespace)
            .then(|| namespace_wide(&proxy.namespace))
            .flatten(),
        workload: snapshot.telemetries.iter().find(|t| {
            namespace_of(t) == proxy.namespace && !t.spec.namespace_wide() && selects(t, proxy)
        }),
    }
}

/// What one side of a proxy's traffic traces (Istio's `TracingSpec`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TracingSpec<'a> {
    /// The provider spans are reported to; none disables tracing.
    pub provider: Option<Cow<'a, ExtensionProvider>>,
    /// No tracing configuration at all (no provider, or `disableSpanReporting`).
    pub disabled: bool,
    /// The sampling percentage a Telemetry set.
    pub random_sampling_percentage: Option<f64>,
    /// The custom tags a Telemetry set (replacing the mesh config's).
    pub custom_tags: Option<&'a BTreeMap<String, CustomTag>>,
}

/// Tracing for both sides of a proxy's traffic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TracingConfig<'a> {
    /// Outbound (and gateway) traffic.
    pub client: TracingSpec<'a>,
    /// Inbound traffic.
    pub server: TracingSpec<'a>,
}

/// The provider named `name`, or none (a name the mesh config does not declare).
fn provider<'a>(snapshot: &'a Snapshot, name: &str) -> Option<Cow<'a, ExtensionProvider>> {
    snapshot.mesh_config.extension_provider(name)
}

/// The tracing that applies to `proxy` (Istio's `Telemetries.Tracing`): `None` when neither a
/// Telemetry nor the mesh's default provider says anything (the mesh config's older settings
/// apply then).
pub fn tracing<'a>(snapshot: &'a Snapshot, proxy: &Proxy) -> Option<TracingConfig<'a>> {
    let rules: Vec<_> =
        applicable(snapshot, proxy).levels().flat_map(|t| &t.spec.tracing).collect();
    let defaults = snapshot.mesh_config.default_tracing_providers();
    if rules.is_empty() && defaults.is_empty() {
        return None;
    }
    let mut config = TracingConfig::default();
    if let Some(name) = defaults.first() {
        config.client.provider = provider(snapshot, name);
        config.server.provider = config.client.provider.clone();
    }
    for rule in rules {
        let mode = rule.match_.as_ref().and_then(|m| m.mode.clone());
        let mut specs: Vec<&mut TracingSpec<'a>> = match mode {
            Some(WorkloadMode::Client) => vec![&mut config.client],
            Some(WorkloadMode::Server) => vec![&mut config.server],
            _ => vec![&mut config.client, &mut config.server],
        };
        // Only one provider per side: the first, as Istio does.
        let named = rule.providers.first().map(|p| provider(snapshot, &p.name));
        for spec in &mut specs {
            if let Some(named) = &named {
                spec.provider = named.clone();
            }
            if let Some(disabled) = rule.disable_span_reporting {
                spec.disabled = disabled;
            }
            if !rule.custom_tags.is_empty() {
                spec.custom_tags = Some(&rule.custom_tags);
            }
            if let Some(percentage) = rule.random_sampling_percentage {
                spec.random_sampling_percentage = Some(percentage);
            }
        }
    }
    for spec in [&mut config.client, &mut config.server] {
        if spec.provider.is_none() {
            spec.disabled = true;
        }
    }
    Some(config)
}

/// One access log provider for one side of a proxy's traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggingSpec<'a> {
    /// The provider.
    pub provider: Cow<'a, ExtensionProvider>,
    /// Which requests it logs (all when absent).
    pub filter: Option<&'a Filter>,
    /// It writes nothing: a rule turned it off.
    pub disabled: bool,
}

/// The access logging that applies to one side of `proxy`'s traffic (Istio's
/// `Telemetries.AccessLogging` with `mergeLogs`), by provider name: `None` when neither a
/// Telemetry nor the mesh's default providers say anything (the mesh config's
/// `accessLogFile` applies then). Providers the mesh config does not declare are left out.
pub fn access_logging<'a>(
    snapshot: &'a Snapshot,
    proxy: &Proxy,
    class: Class,
) -> Option<Vec<LoggingSpec<'a>>> {
    let levels: Vec<&'a [AccessLogging]> = applicable(snapshot, proxy)
        .levels()
        .map(|t| t.spec.access_logging.as_slice())
        .filter(|rules| !rules.is_empty())
        .collect();
    let defaults = snapshot.mesh_config.default_access_logging_providers();
    if levels.is_empty() && defaults.is_empty() {
        return None;
    }
    let mode = class.mode();
    let covers = |rule: &AccessLogging| {
        rule.match_.as_ref().and_then(|m| m.mode.as_ref()).is_none_or(|m| m.covers(&mode))
    };
    let names = |rule: &'a AccessLogging| rule.providers.iter().map(|p| p.name.as_str());
    let mut merged: BTreeMap<&'a str, (Option<&'a Filter>, bool)> = BTreeMap::new();
    if levels.is_empty() {
        merged.extend(defaults.iter().map(|name| (name.as_str(), (None, false))));
    } else {
        // The providers of the narrowest level that names any, else the defaults; a filter
        // belongs to the providers its rule names.
        let mut in_scope: BTreeSet<&'a str> = defaults.iter().map(String::as_str).collect();
        let mut filters: BTreeMap<&'a str, Option<&'a Filter>> = BTreeMap::new();
        for level in &levels {
            let mut named = BTreeSet::new();
            for rule in level.iter().filter(|r| covers(r)) {
                for name in names(rule) {
                    named.insert(name);
                    filters.insert(name, rule.filter.as_ref());
                }
            }
            if !named.is_empty() {
                in_scope = named;
            }
        }
        let mut parent: Vec<&'a str> = defaults.iter().map(String::as_str).collect();
        for rule in levels.iter().flat_map(|level| level.iter()) {
            let mut providers: Vec<&'a str> = names(rule).collect();
            if providers.is_empty() {
                providers = parent.clone();
            }
            parent = providers.clone();
            if !covers(rule) {
                continue;
            }
            for name in providers.into_iter().filter(|n| in_scope.contains(n)) {
                let state = if rule.disabled == Some(true) {
                    (None, true)
                } else {
                    (filters.get(name).copied().flatten(), false)
                };
                merged.insert(name, state);
            }
        }
    }
    let specs = merged
        .into_iter()
        .filter_map(|(name, (filter, disabled))| {
            Some(LoggingSpec { provider: provider(snapshot, name)?, filter, disabled })
        })
        .collect();
    Some(specs)
}

/// The `tracing` and `access_log` of one kind of HTTP connection manager of a proxy, computed
/// once per listener and copied into each of its HCMs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HcmTelemetry {
    /// The HCM's `tracing`.
    pub tracing: Option<HcmTracing>,
    /// The HCM's `access_log`.
    pub access_log: Vec<AccessLog>,
}

impl HcmTelemetry {
    /// What `proxy`'s HCMs of `class` carry.
    pub fn of(snapshot: &Snapshot, proxy: &Proxy, class: Class) -> Self {
        Self {
            tracing: envoy_tracing(snapshot, proxy, class),
            access_log: envoy_access_logs(snapshot, proxy, class),
        }
    }

    /// Writes the fields into an HCM.
    pub fn apply(&self, hcm: &mut HttpConnectionManager) {
        hcm.tracing.clone_from(&self.tracing);
        hcm.access_log.clone_from(&self.access_log);
    }

    /// The listener's own `access_log` (for connections no chain takes).
    pub fn listener_access_log(&self) -> Vec<AccessLog> {
        listener_access_logs(&self.access_log)
    }
}

#[cfg(test)]
mod tests;
