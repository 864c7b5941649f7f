//! Gateway checks: the selector selects workloads (IST0101) whose Services target every
//! server port (IST0162); the TLS Secrets exist (IST0101); no two Gateways of the same
//! workloads serve one port and host (IST0145) or share a certificate (IST0138).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_api::networking::{Gateway, ServerTlsSettings};

use crate::context::{Context, Obj, Workload, host_matches, selector_string, selects};
use crate::finding::{
    CONFLICTING_GATEWAYS, Finding, GATEWAY_DUPLICATE_CERTIFICATE,
    GATEWAY_PORT_NOT_DEFINED_ON_SERVICE, REFERENCED_RESOURCE_NOT_FOUND, go_list, go_quote,
};

pub(crate) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for gw in &cx.gateways {
        if cx.has_workloads() {
            workloads(cx, gw, out);
        }
        conflicts(cx, gw, out);
        duplicate_certificates(cx, gw, out);
    }
}

/// The workloads a Gateway's selector selects, in any namespace (Istio's default).
fn selected<'c, 'a>(cx: &'c Context<'a>, gw: &Obj<'_, Gateway>) -> Vec<&'c Workload<'a>> {
    cx.workloads.iter().filter(|w| selects(&gw.spec.spec.selector, w.labels)).collect()
}

fn workloads(cx: &Context<'_>, gw: &Obj<'_, Gateway>, out: &mut Vec<Finding>) {
    let selector = &gw.spec.spec.selector;
    if selector.is_empty() {
        return;
    }
    let pods = selected(cx, gw);
    let Some(first) = pods.first() else {
        out.push(gw.finding(
            &REFERENCED_RESOURCE_NOT_FOUND,
            format!("Referenced selector not found: {}", go_quote(&selector_string(selector))),
        ));
        return;
    };
    // The ports the workloads' Services send traffic to, on the workloads.
    let mut targets = BTreeSet::new();
    let mut any_service = false;
    for pod in &pods {
        for svc in cx.services.iter().filter(|s| s.namespace() == pod.namespace) {
            let Some(spec) = &svc.spec.spec else { continue };
            let Some(svc_selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
                continue;
            };
            if !selects(svc_selector, pod.labels) {
                continue;
            }
            any_service = true;
            for port in spec.ports.iter().flatten() {
                if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                    continue;
                }
                let target = match &port.target_port {
                    Some(IntOrString::Int(target)) if *target != 0 => *target,
                    _ => port.port,
                };
                targets.insert(target);
            }
        }
    }
    if any_service {
        for server in &gw.spec.spec.servers {
            let port = i32::try_from(server.port.number).unwrap_or(0);
            if !targets.contains(&port) {
                out.push(gw.finding(
                    &GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
                    format!(
                        "The gateway is listening on a target port (port {port}) that is not defined in the Service associated with its workload instances (Pod selector {}). If you need to access the gateway port through the gateway Service, it will not be available.",
                        selector_string(selector)
                    ),
                ));
            }
        }
    }
    if !cx.secrets.is_empty() {
        secrets(cx, gw, &first.namespace, out);
    }
}

/// Every `credentialName` names a Secret of the gateway workloads' namespace.
fn secrets(cx: &Context<'_>, gw: &Obj<'_, Gateway>, namespace: &str, out: &mut Vec<Finding>) {
    for tls in gw.spec.spec.servers.iter().filter_map(|s| s.tls.as_ref()) {
        let names = tls.credential_name.iter().chain(&tls.credential_names);
        for name in names.filter(|n| !n.is_empty()) {
            let (ns, secret) = name.split_once('/').unwrap_or((namespace, name));
            if !cx.secrets.iter().any(|s| s.namespace() == ns && s.name() == secret) {
                out.push(gw.finding(
                    &REFERENCED_RESOURCE_NOT_FOUND,
                    format!("Referenced credentialName not found: {}", go_quote(name)),
                ));
            }
        }
    }
}

/// Two Gateways with the same selector that serve a port for overlapping hosts.
fn conflicts(cx: &Context<'_>, gw: &Obj<'_, Gateway>, out: &mut Vec<Finding>) {
    let selector = selector_string(&gw.spec.spec.selector);
    let me = gw.full_name();
    // Port of each server of every other Gateway with the same selector, with its hosts.
    let mut others: BTreeMap<u32, Vec<(String, &[String])>> = BTreeMap::new();
    for other in cx.gateways.iter().filter(|o| o.full_name() != me) {
        if selector_string(&other.spec.spec.selector) != selector {
            continue;
        }
        for server in &other.spec.spec.servers {
            others.entry(server.port.number).or_default().push((other.full_name(), &server.hosts));
        }
    }
    for server in &gw.spec.spec.servers {
        let mut conflicting = BTreeSet::new();
        for (name, hosts) in others.get(&server.port.number).into_iter().flatten() {
            let overlap = server
                .hosts
                .iter()
                .any(|mine| hosts.iter().any(|theirs| host_matches(bare(mine), bare(theirs))));
            if overlap {
                conflicting.insert(name.clone());
            }
        }
        if !conflicting.is_empty() {
            out.push(gw.finding(
                &CONFLICTING_GATEWAYS,
                format!(
                    "Conflict with gateways {} (workload selector {selector}, port {}, hosts {}).",
                    conflicting.into_iter().collect::<Vec<_>>().join(","),
                    server.port.number,
                    server.hosts.join(",")
                ),
            ));
        }
    }
}

/// A server host without its `namespace/` part.
fn bare(host: &str) -> &str {
    host.split_once('/').map_or(host, |(_, h)| h)
}

/// Whether two servers present the same certificate (Istio's rule: the same credential, or
/// the same certificate and key files).
fn same_certificate(a: &ServerTlsSettings, b: &ServerTlsSettings) -> bool {
    fn set(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }
    match (set(&a.credential_name), set(&b.credential_name)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => {
            matches!((set(&a.server_certificate), set(&b.server_certificate)), (Some(x), Some(y)) if x == y)
                && matches!((set(&a.private_key), set(&b.private_key)), (Some(x), Some(y)) if x == y)
        }
        _ => false,
    }
}

/// Another Gateway whose selector includes this one's and a server with the same
/// certificate as one of this one's.
fn duplicate_certificates(cx: &Context<'_>, gw: &Obj<'_, Gateway>, out: &mut Vec<Finding>) {
    let me = gw.full_name();
    for other in cx.gateways.iter().filter(|o| o.full_name() != me) {
        if !selects(&gw.spec.spec.selector, &other.spec.spec.selector) {
            continue;
        }
        let shared = gw.spec.spec.servers.iter().filter_map(|s| s.tls.as_ref()).any(|mine| {
            other
                .spec
                .spec
                .servers
                .iter()
                .filter_map(|s| s.tls.as_ref())
                .any(|theirs| same_certificate(mine, theirs))
        });
        if shared {
            out.push(gw.finding(
                &GATEWAY_DUPLICATE_CERTIFICATE,
                format!(
                    "Duplicate certificate in multiple gateways {} may cause 404s if clients re-use HTTP2 connections.",
                    go_list(&[me.clone(), other.full_name()])
                ),
            ));
        }
    }
}
