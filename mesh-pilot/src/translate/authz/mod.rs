//! AuthorizationPolicy, compiled into Envoy's RBAC filters as Istio compiles it, so that stock
//! Envoy and mesh-proxy enforce the same configuration: on a sidecar's inbound chains and on
//! gateways, never on a sidecar's outbound side. Which policies apply: those of the root
//! namespace without a selector (the mesh) or whose selector matches, and those of the
//! workload's namespace without a selector or whose selector matches; a policy with
//! `targetRef(s)` applies to the Gateway API gateway it names only. The filters come in
//! Istio's order, AUDIT (LOG), DENY, ALLOW: the first that denies ends the request. An ALLOW
//! policy with no rules allows nothing. CUSTOM is not implemented: its rules deny (fail
//! closed), as Istio does with a provider it does not know. A policy marked
//! `istio.io/dry-run: "true"` is not enforced. Pure.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::config::rbac::v3::{Rbac, rbac};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_api::gateway_api::GATEWAY_NAME_LABEL;
use mesh_api::security::{
    AuthorizationAction, AuthorizationPolicy, LabelSelector, PolicyTargetReference,
};

use crate::model::{Proxy, Snapshot};

mod encode;
pub mod rules;

pub use encode::{HTTP_FILTER, NETWORK_FILTER};
pub use rules::Chain;

/// The annotation that makes a policy a dry run (Istio's).
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Whether a policy (of `meta`'s namespace, with this selector or these targets) applies to
/// `proxy`: a root-namespace policy without a selector to the whole mesh, with one to the
/// workloads it selects in every namespace; another namespace's to its own workloads; a
/// policy with targets to the Gateway API gateways it names only. Dry runs do not apply.
pub fn applies(
    snapshot: &Snapshot,
    proxy: &Proxy,
    meta: &ObjectMeta,
    selector: Option<&LabelSelector>,
    targets: &[&PolicyTargetReference],
) -> bool {
    let dry_run = meta.annotations.as_ref().and_then(|a| a.get(DRY_RUN_ANNOTATION));
    if dry_run.is_some_and(|v| v == "true") {
        return false;
    }
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let labels = &proxy.labels;
    if !targets.is_empty() {
        return proxy.router
            && ns == proxy.namespace
            && targets
                .iter()
                .any(|t| t.kind == "Gateway" && labels.get(GATEWAY_NAME_LABEL) == Some(&t.name));
    }
    let selected = selector
        .filter(|s| !s.match_labels.is_empty())
        .is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)));
    selected && (ns == snapshot.root_namespace || ns == proxy.namespace)
}

/// The policies that apply to `proxy`, in a stable order (namespace, name).
pub fn applicable<'a>(snapshot: &'a Snapshot, proxy: &Proxy) -> Vec<&'a AuthorizationPolicy> {
    let mut found: Vec<&AuthorizationPolicy> = snapshot
        .authorization_policies
        .iter()
        .filter(|p| {
            let spec = &p.spec;
            let targets: Vec<_> = spec.target_ref.iter().chain(&spec.target_refs).collect();
            applies(snapshot, proxy, &p.metadata, spec.selector.as_ref(), &targets)
        })
        .collect();
    found.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    found
}

/// The RBAC configurations of `policies` for a chain, in Istio's order (AUDIT, DENY, ALLOW),
/// each present only when a policy of that action applies.
pub fn configs(policies: &[&AuthorizationPolicy], chain: Chain) -> Vec<Rbac> {
    let mut by_action: BTreeMap<u8, (rbac::Action, bool, Rbac)> = BTreeMap::new();
    for policy in policies {
        let action = policy.spec.action.clone().unwrap_or(AuthorizationAction::Allow);
        let (order, envoy, narrowing) = match action {
            AuthorizationAction::Audit => (0, rbac::Action::Log, rules::Narrowing::DropPart),
            AuthorizationAction::Allow => (2, rbac::Action::Allow, rules::Narrowing::DropRule),
            // CUSTOM (not implemented) and unknown actions deny what they match: fail closed.
            _ => (1, rbac::Action::Deny, rules::Narrowing::DropPart),
        };
        let entry = by_action
            .entry(order)
            .or_insert_with(|| (envoy, false, Rbac { action: envoy as i32, ..Rbac::default() }));
        // An ALLOW policy counts even without rules: it allows nothing, so it denies all.
        entry.1 = true;
        entry.2.policies.extend(rules::policies(policy, chain, narrowing));
    }
    by_action
        .into_values()
        .filter(|(action, present, config)| {
            *present && (*action == rbac::Action::Allow || !config.policies.is_empty())
        })
        .map(|(_, _, config)| config)
        .collect()
}

/// The security filters for an HTTP connection manager of `proxy`'s: token validation
/// (RequestAuthentication) first, then the RBAC filters, as Istio orders them.
pub fn http_filters(snapshot: &Snapshot, proxy: &Proxy) -> Vec<HttpFilter> {
    let mut filters = super::authn::http_filters(snapshot, proxy);
    filters
        .extend(configs(&applicable(snapshot, proxy), Chain::Http).iter().map(encode::http_filter));
    filters
}

/// The network RBAC filters for a TCP chain of `proxy`'s (before its `tcp_proxy`).
pub fn network_filters(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Filter> {
    configs(&applicable(snapshot, proxy), Chain::Tcp).iter().map(encode::network_filter).collect()
}
