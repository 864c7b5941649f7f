//! VirtualService checks: every destination names a service that exists (IST0101 host,
//! `host:port`), a port where the service has several (IST0112) and a subset its
//! DestinationRule declares (IST0101); every gateway exists (IST0101) and serves one of the
//! hosts (IST0132); no two VirtualServices of the mesh gateway claim a host (IST0109); and
//! every route can be reached ([`crate::unreachable`]).

use std::collections::BTreeMap;

use mesh_api::networking::{Destination, VirtualService};

use crate::context::{Context, Obj, export_scopes, host_matches};
use crate::finding::{
    CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS, Finding, REFERENCED_RESOURCE_NOT_FOUND,
    VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED, VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
    go_list, go_quote,
};
use crate::registry::Registry;

/// The gateway name that means "the sidecars".
pub(crate) const MESH_GATEWAY: &str = "mesh";

pub(crate) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let registry = Registry::new(cx);
    let subsets = subsets(cx);
    for vs in &cx.virtual_services {
        destinations(cx, &registry, &subsets, vs, out);
        gateways(cx, vs, out);
        crate::unreachable::check(vs, out);
    }
    mesh_gateway_conflicts(cx, out);
}

/// A destination and whether it is a mirror.
struct Dest<'a> {
    destination: &'a Destination,
    mirror: bool,
}

/// Every destination of a VirtualService: its routes (TCP, TLS, HTTP, in Istio's order) and
/// its HTTP mirrors.
fn all_destinations(vs: &VirtualService) -> Vec<Dest<'_>> {
    let spec = &vs.spec;
    let routes = spec
        .tcp
        .iter()
        .flat_map(|r| r.route.iter().map(|d| &d.destination))
        .chain(spec.tls.iter().flat_map(|r| r.route.iter().map(|d| &d.destination)))
        .chain(spec.http.iter().flat_map(|r| r.route.iter().map(|d| &d.destination)))
        .map(|destination| Dest { destination, mirror: false });
    let mirrors = spec
        .http
        .iter()
        .flat_map(|r| r.mirror.iter().chain(r.mirrors.iter().map(|m| &m.destination)))
        .map(|destination| Dest { destination, mirror: true });
    routes.chain(mirrors).collect()
}

/// Every subset a DestinationRule declares: the rule's full host and the subset's name.
fn subsets<'a>(cx: &Context<'a>) -> Vec<(String, &'a str)> {
    cx.destination_rules
        .iter()
        .flat_map(|dr| {
            let host = cx.fqdn(dr.namespace(), &dr.spec.spec.host);
            dr.spec.spec.subsets.iter().map(move |s| (host.clone(), s.name.as_str()))
        })
        .collect()
}

fn destinations(
    cx: &Context<'_>,
    registry: &Registry,
    subsets: &[(String, &str)],
    vs: &Obj<'_, VirtualService>,
    out: &mut Vec<Finding>,
) {
    let ns = vs.namespace();
    for Dest { destination: d, mirror } in all_destinations(vs.spec) {
        let not_found = |what: &str, value: String| {
            vs.finding(
                &REFERENCED_RESOURCE_NOT_FOUND,
                format!("Referenced {what} not found: {}", go_quote(&value)),
            )
        };
        match registry.lookup(cx, ns, &vs.spec.spec.export_to, &d.host) {
            None => out.push(not_found(if mirror { "mirror host" } else { "host" }, d.host.clone())),
            Some(entry) => match &d.port {
                None if entry.ports.len() > 1 => out.push(vs.finding(
                    &VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED,
                    format!(
                        "This VirtualService routes to a service {} that exposes multiple ports {}. Specifying a port in the destination is required to disambiguate.",
                        go_quote(&d.host),
                        go_list(&entry.ports)
                    ),
                )),
                Some(port) if !entry.ports.contains(&port.number) => {
                    out.push(not_found("host:port", format!("{}:{}", d.host, port.number)))
                }
                _ => {}
            },
        }
        if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) {
            let host = cx.fqdn(ns, &d.host);
            let declared = subsets.iter().any(|(dr_host, name)| {
                *name == subset
                    && (*dr_host == host
                        || (dr_host.starts_with('*') && host_matches(dr_host, &host)))
            });
            if !declared {
                let what = if mirror {
                    "mirror+subset in destinationrule"
                } else {
                    "host+subset in destinationrule"
                };
                out.push(not_found(what, format!("{}+{subset}", d.host)));
            }
        }
    }
}

/// `namespace/name` of a gateway a VirtualService of `namespace` names (`name` or
/// `namespace/name`).
pub(crate) fn gateway_name(namespace: &str, gateway: &str) -> String {
    if gateway.contains('/') { gateway.to_owned() } else { format!("{namespace}/{gateway}") }
}

fn gateways(cx: &Context<'_>, vs: &Obj<'_, VirtualService>, out: &mut Vec<Finding>) {
    let ns = vs.namespace();
    for name in &vs.spec.spec.gateways {
        if name == MESH_GATEWAY {
            continue;
        }
        let full = gateway_name(ns, name);
        let Some(gateway) = cx.gateways.iter().find(|g| g.full_name() == full) else {
            out.push(vs.finding(
                &REFERENCED_RESOURCE_NOT_FOUND,
                format!("Referenced gateway not found: {}", go_quote(name)),
            ));
            continue;
        };
        let served: Vec<String> = gateway
            .spec
            .spec
            .servers
            .iter()
            .flat_map(|server| server_hosts(&server.hosts, gateway.namespace()))
            .filter_map(|host| match host.split_once('/') {
                Some((host_ns, host)) if host_ns == ns || host_ns == "*" => Some(host.to_owned()),
                Some(_) => None,
                None => Some(host),
            })
            .collect();
        let found = served.iter().any(|g| vs.spec.spec.hosts.iter().any(|h| host_matches(g, h)));
        if !found {
            out.push(vs.finding(
                &VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
                format!(
                    "one or more host {} defined in VirtualService {} not found in Gateway {full}.",
                    go_list(&vs.spec.spec.hosts),
                    vs.full_name()
                ),
            ));
        }
    }
}

/// A server's hosts with `./` made the gateway's namespace and `*/` dropped, as Istio reads
/// them for VirtualServices.
fn server_hosts(hosts: &[String], namespace: &str) -> Vec<String> {
    let mut out = Vec::new();
    for host in hosts {
        match host.split_once('/') {
            Some(("*", "*")) => return vec!["*".to_owned()],
            Some((".", host)) => out.push(format!("{namespace}/{host}")),
            Some(("*", host)) => out.push(host.to_owned()),
            _ => out.push(host.clone()),
        }
    }
    out
}

/// Whether a VirtualService applies to the sidecars (no gateways, or `mesh` among them).
pub(crate) fn is_mesh(vs: &VirtualService) -> bool {
    vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == MESH_GATEWAY)
}

fn mesh_gateway_conflicts(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut by_host: BTreeMap<String, Vec<&Obj<'_, VirtualService>>> = BTreeMap::new();
    for vs in cx.virtual_services.iter().filter(|vs| is_mesh(vs.spec)) {
        for scope in export_scopes(&vs.spec.spec.export_to, vs.namespace()) {
            for host in &vs.spec.spec.hosts {
                let key = format!("{scope}/{}", cx.fqdn(vs.namespace(), host));
                by_host.entry(key).or_default().push(vs);
            }
        }
    }
    for (host, list) in by_host.into_iter().filter(|(_, list)| list.len() > 1) {
        let mut names: Vec<String> = list.iter().map(|vs| vs.full_name()).collect();
        names.sort();
        for vs in list {
            out.push(vs.finding(
                &CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
                format!(
                    "The VirtualServices {} associated with mesh gateway define the same host {host} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                    names.join(",")
                ),
            ));
        }
    }
}
