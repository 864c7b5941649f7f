//! Validation of ServiceEntry: hosts, ports, how endpoints are found, and the endpoints.

use std::collections::BTreeSet;

use super::workload_entry::workload_entry_spec;
use super::{labels, port, unique_port};
use crate::ObjectRef;
use crate::networking::*;
use crate::validate::{Checker, Code, Path, ValidationError};

/// Validates a ServiceEntry.
pub fn service_entry(se: &ServiceEntry) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(se));
    let spec = &se.spec;
    let root = Path::root("spec");
    if spec.hosts.is_empty() {
        c.required(&root.field("hosts"), "at least one host");
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        let path = root.field("hosts").index(i);
        if host == "*" {
            c.error(&path, Code::InvalidHost, "'*' is not allowed as a ServiceEntry host");
        } else {
            c.host(&path, host);
        }
    }
    for (i, address) in spec.addresses.iter().enumerate() {
        c.ip_or_cidr(&root.field("addresses").index(i), address);
    }
    let mut numbers = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let path = root.field("ports").index(i);
        // An empty protocol asks the proxy to detect it, as in Istio.
        port(&mut c, &path, p, false);
        unique_port(&mut c, &path.field("number"), &mut numbers, p.number);
        if p.name.is_empty() {
            c.required(&path.field("name"), "port name");
        } else if !names.insert(p.name.as_str()) {
            c.error(
                &path.field("name"),
                Code::Duplicate,
                format!("port name {:?} is declared twice", p.name),
            );
        }
    }
    if let Some(location) = &spec.location {
        c.known(&root.field("location"), location);
    }
    let resolution = spec.resolution.clone().unwrap_or(Resolution::None);
    c.known(&root.field("resolution"), &resolution);
    if !spec.endpoints.is_empty() && spec.workload_selector.is_some() {
        c.not_both(&root.field("workloadSelector"), "endpoints", "workloadSelector");
    }
    match resolution {
        Resolution::None if !spec.endpoints.is_empty() => {
            c.error(
                &root.field("endpoints"),
                Code::ConflictingFields,
                "endpoints cannot be set with resolution NONE",
            );
        }
        Resolution::Dns | Resolution::DnsRoundRobin if spec.endpoints.is_empty() => {
            for (i, host) in spec.hosts.iter().enumerate() {
                if host.starts_with('*') {
                    c.error(&root.field("hosts").index(i), Code::WildcardNotResolvable, format!("wildcard host {host:?} cannot be resolved with DNS: add endpoints or use resolution NONE or DYNAMIC_DNS"));
                }
            }
        }
        _ => {}
    }
    for (i, endpoint) in spec.endpoints.iter().enumerate() {
        let path = root.field("endpoints").index(i);
        workload_entry_spec(&mut c, &path, endpoint);
        if resolution == Resolution::Static
            && !endpoint.address.is_empty()
            && !endpoint.address.starts_with("unix://")
            && endpoint.address.parse::<std::net::IpAddr>().is_err()
        {
            c.error(
                &path.field("address"),
                Code::InvalidAddress,
                format!("{:?} must be an IP address with resolution STATIC", endpoint.address),
            );
        }
        for name in endpoint.ports.keys() {
            if !spec.ports.iter().any(|p| &p.name == name) {
                c.error(
                    &path.field("ports").key(name),
                    Code::UndeclaredPort,
                    format!("no port named {name:?} is declared in spec.ports"),
                );
            }
        }
    }
    if let Some(selector) = &spec.workload_selector {
        labels(&mut c, &root.field("workloadSelector").field("labels"), &selector.labels);
    }
    c.export_to(&root.field("exportTo"), &spec.export_to);
    c.finish()
}
