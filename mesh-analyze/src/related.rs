//! The objects that apply to a service, for views that show one service's findings (the
//! dashboard's Config view).

use std::collections::BTreeSet;

use mesh_api::ObjectRef;

use crate::context::{Context, Workload, host_matches, selects};
use crate::input::Input;
use crate::virtual_service::{MESH_GATEWAY, gateway_name};

/// The objects of `input` that apply to the Service `namespace/name`: the Service and its
/// Namespace; the VirtualServices for its host or routing to it, and their Gateways; its
/// DestinationRules and ServiceEntries; the workloads it selects; and the Sidecars and
/// security policies that select those workloads (or their whole namespace, or the mesh).
/// Keep the findings whose object is among them to show a service's findings.
pub fn related_to_service(input: &Input, namespace: &str, name: &str) -> BTreeSet<ObjectRef> {
    let cx = Context::new(input);
    let host = cx.fqdn(namespace, name);
    let mut related = BTreeSet::new();
    related.insert(ObjectRef::new("Namespace", None, namespace));
    let mut backends: Vec<&Workload<'_>> = Vec::new();
    for svc in cx.services.iter().filter(|s| s.namespace() == namespace && s.name() == name) {
        related.insert(svc.reference.clone());
        let selector = svc.spec.spec.as_ref().and_then(|s| s.selector.as_ref());
        if let Some(selector) = selector.filter(|s| !s.is_empty()) {
            backends.extend(cx.workloads_in(namespace).filter(|w| selects(selector, w.labels)));
        }
    }
    related.extend(backends.iter().map(|w| w.reference.clone()));
    for vs in &cx.virtual_services {
        let spec = &vs.spec.spec;
        let ns = vs.namespace();
        let names_host = spec.hosts.iter().any(|h| host_matches(&cx.fqdn(ns, h), &host));
        let routes_to = spec
            .http
            .iter()
            .flat_map(|r| r.route.iter().map(|d| &d.destination))
            .chain(spec.tcp.iter().flat_map(|r| r.route.iter().map(|d| &d.destination)))
            .chain(spec.tls.iter().flat_map(|r| r.route.iter().map(|d| &d.destination)))
            .any(|d| cx.fqdn(ns, &d.host) == host);
        if names_host || routes_to {
            related.insert(vs.reference.clone());
            for gateway in spec.gateways.iter().filter(|g| *g != MESH_GATEWAY) {
                let full = gateway_name(ns, gateway);
                related.extend(
                    cx.gateways
                        .iter()
                        .filter(|g| g.full_name() == full)
                        .map(|g| g.reference.clone()),
                );
            }
        }
    }
    for dr in &cx.destination_rules {
        if host_matches(&cx.fqdn(dr.namespace(), &dr.spec.spec.host), &host) {
            related.insert(dr.reference.clone());
        }
    }
    for se in &cx.service_entries {
        if se.spec.spec.hosts.iter().any(|h| cx.fqdn(se.namespace(), h) == host) {
            related.insert(se.reference.clone());
        }
    }
    let root = input.mesh.root_namespace.as_str();
    // A policy applies when it is in the service's namespace (or the root namespace) and
    // selects one of its workloads, or selects nothing in particular.
    let applies =
        |policy_ns: &str, selector: Option<&std::collections::BTreeMap<String, String>>| {
            (policy_ns == namespace || policy_ns == root)
                && selector.is_none_or(|s| backends.iter().any(|w| selects(s, w.labels)))
        };
    for sc in &cx.sidecars {
        let selector = sc.spec.spec.workload_selector.as_ref().map(|s| &s.labels);
        if sc.namespace() == namespace && applies(namespace, selector) {
            related.insert(sc.reference.clone());
        }
    }
    for ap in &cx.authorization_policies {
        if applies(ap.namespace(), ap.spec.spec.selector.as_ref().map(|s| &s.match_labels)) {
            related.insert(ap.reference.clone());
        }
    }
    for pa in &cx.peer_authentications {
        if applies(pa.namespace(), pa.spec.spec.selector.as_ref().map(|s| &s.match_labels)) {
            related.insert(pa.reference.clone());
        }
    }
    for ra in &cx.request_authentications {
        if applies(ra.namespace(), ra.spec.spec.selector.as_ref().map(|s| &s.match_labels)) {
            related.insert(ra.reference.clone());
        }
    }
    related
}
