//! Validation of the `networking.istio.io` kinds, one module per kind as in
//! [`crate::networking`]. What is here is checked the same way in more than one kind.

use std::collections::{BTreeMap, BTreeSet};

use super::{Checker, Code, Path, is_host_label};
use crate::identity::{is_dns_label, is_dns_subdomain};
use crate::networking::{Destination, PROTOCOLS, Port};

mod destination_rule;
mod gateway;
mod service_entry;
mod sidecar;
mod virtual_service;
mod workload_entry;

pub use destination_rule::destination_rule;
pub use gateway::gateway;
pub use service_entry::service_entry;
pub use sidecar::sidecar;
pub(crate) use virtual_service::http_retry;
pub use virtual_service::{GRPC_STATUSES, RETRY_ON, virtual_service};
pub use workload_entry::workload_entry;

/// Where traffic goes (a route, a mirror, a sidecar's egress proxy).
fn destination(c: &mut Checker, path: &Path, dest: &Destination) {
    if dest.host.is_empty() {
        c.required(&path.field("host"), "host");
    } else if dest.host == "*" {
        c.error(
            &path.field("host"),
            Code::InvalidHost,
            "a destination must name a service, not '*'",
        );
    } else {
        c.host(&path.field("host"), &dest.host);
    }
    if let Some(subset) = &dest.subset
        && !is_host_label(subset)
    {
        c.error(
            &path.field("subset"),
            Code::InvalidName,
            format!("subset {subset:?} is not a valid subset name"),
        );
    }
    if let Some(port) = &dest.port {
        c.port(&path.field("port").field("number"), port.number);
    }
}

/// Workload labels, as Kubernetes accepts them in selectors.
fn labels(c: &mut Checker, path: &Path, labels: &BTreeMap<String, String>) {
    for (key, value) in labels {
        let name = key.rsplit_once('/').map_or(key.as_str(), |(_, name)| name);
        let key_ok = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && key.rsplit_once('/').is_none_or(|(prefix, _)| is_dns_subdomain(prefix));
        if !key_ok {
            c.error(
                &path.key(key),
                Code::InvalidLabel,
                format!("{key:?} is not a valid label key"),
            );
        }
        let value_ok = value.len() <= 63
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !value_ok {
            c.error(
                &path.key(key),
                Code::InvalidLabel,
                format!("{value:?} is not a valid label value"),
            );
        }
    }
}

/// A port with number, protocol and name; `protocol_required` for gateway servers.
fn port(c: &mut Checker, path: &Path, port: &Port, protocol_required: bool) {
    c.port(&path.field("number"), port.number);
    if port.protocol.is_empty() {
        if protocol_required {
            c.required(&path.field("protocol"), "protocol");
        }
    } else if !PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(&port.protocol)) {
        c.error(
            &path.field("protocol"),
            Code::UnknownValue,
            format!(
                "unknown protocol {:?}: must be one of {}",
                port.protocol,
                PROTOCOLS.join(", ")
            ),
        );
    }
    if let Some(target) = port.target_port {
        c.port(&path.field("targetPort"), target);
    }
}

/// A port number not declared before in the same list (`seen`).
fn unique_port(c: &mut Checker, path: &Path, seen: &mut BTreeSet<u32>, number: u32) {
    if !seen.insert(number) {
        c.error(path, Code::Duplicate, format!("port {number} is declared twice"));
    }
}

/// `[namespace/]dnsName` (gateways) or `namespace/dnsName` (sidecar egress, `namespace_required`).
fn namespaced_host(c: &mut Checker, path: &Path, host: &str, namespace_required: bool) {
    let (namespace, name) = match host.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, host),
    };
    match namespace {
        None if namespace_required => {
            c.error(
                path,
                Code::InvalidHost,
                format!(
                    "host {host:?} must be namespace/dnsName, as in \"./*\" or \"istio-system/*\""
                ),
            );
            return;
        }
        Some(ns) if !(matches!(ns, "*" | "." | "~") || is_dns_label(ns)) => {
            c.error(
                path,
                Code::InvalidHost,
                format!("{ns:?} in host {host:?} is not a namespace, '.', '~' or '*'"),
            );
        }
        _ => {}
    }
    c.host(path, name);
}
