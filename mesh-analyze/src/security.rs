//! Security policy checks: a selector selects workloads of the mesh (IST0127, Istio's for
//! AuthorizationPolicy; the same for PeerAuthentication and RequestAuthentication), and the
//! namespaces an AuthorizationPolicy names exist (IST0101).

use std::collections::BTreeSet;

use mesh_api::networking::LabelSelector;

use crate::context::{Context, Obj, Workload, selector_string, selects};
use crate::finding::{
    Finding, NO_MATCHING_WORKLOADS_FOUND, REFERENCED_RESOURCE_NOT_FOUND, go_quote,
};

pub(crate) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    if cx.has_workloads() {
        let meshed: Vec<&Workload<'_>> = cx.workloads.iter().filter(|w| cx.in_mesh(w)).collect();
        for ap in &cx.authorization_policies {
            let spec = &ap.spec.spec;
            if spec.target_ref.is_none() && spec.target_refs.is_empty() {
                selected(cx, ap, spec.selector.as_ref(), &meshed, true, out);
            }
        }
        for pa in &cx.peer_authentications {
            selected(cx, pa, pa.spec.spec.selector.as_ref(), &meshed, false, out);
        }
        for ra in &cx.request_authentications {
            let spec = &ra.spec.spec;
            if spec.target_ref.is_none() && spec.target_refs.is_empty() {
                selected(cx, ra, spec.selector.as_ref(), &meshed, false, out);
            }
        }
    }
    if !cx.namespaces.is_empty() {
        namespaces(cx, out);
    }
}

/// IST0127 for a policy whose selector selects none of the mesh's workloads (of its
/// namespace, or of any in the root namespace). `namespace_wide`: a policy without selector
/// in a namespace without workloads is reported too (Istio does so for AuthorizationPolicy).
fn selected<T>(
    cx: &Context<'_>,
    policy: &Obj<'_, T>,
    selector: Option<&LabelSelector>,
    meshed: &[&Workload<'_>],
    namespace_wide: bool,
    out: &mut Vec<Finding>,
) {
    let root = policy.namespace() == cx.input.mesh.root_namespace;
    let in_scope = |w: &&&Workload<'_>| root || w.namespace == policy.namespace();
    let labels = match selector {
        Some(selector) => {
            let labels = &selector.match_labels;
            if meshed.iter().filter(in_scope).any(|w| selects(labels, w.labels)) {
                return;
            }
            selector_string(labels)
        }
        None if namespace_wide && !root => {
            if meshed.iter().any(|w| w.namespace == policy.namespace()) {
                return;
            }
            String::new()
        }
        None => return,
    };
    out.push(policy.finding(
        &NO_MATCHING_WORKLOADS_FOUND,
        format!("No matching workloads for this resource with the following labels: {labels}"),
    ));
}

/// A namespace pattern of a policy (`prod`, `prod-*`, `*-test`, `*`) matches a namespace.
fn namespace_match(namespace: &str, pattern: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        namespace.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        namespace.starts_with(prefix)
    } else {
        namespace.eq_ignore_ascii_case(pattern)
    }
}

/// IST0101 for the source namespaces of AuthorizationPolicy rules that match no namespace
/// the input knows: its Namespaces, and the namespaces its objects are in.
fn namespaces(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut known: BTreeSet<String> = cx.namespaces.iter().map(|n| n.name().to_owned()).collect();
    known.insert("default".to_owned());
    known.extend(cx.input.objects.iter().filter_map(|o| o.resource.object_ref().namespace));
    known.extend(cx.workloads.iter().map(|w| w.namespace.clone()));
    for ap in &cx.authorization_policies {
        let sources = ap.spec.spec.rules.iter().flat_map(|r| &r.from).map(|f| &f.source);
        for pattern in sources.flat_map(|s| s.namespaces.iter().chain(&s.not_namespaces)) {
            if !known.iter().any(|ns| namespace_match(ns, pattern)) {
                out.push(ap.finding(
                    &REFERENCED_RESOURCE_NOT_FOUND,
                    format!("Referenced namespace not found: {}", go_quote(pattern)),
                ));
            }
        }
    }
}
