//! Validation of Sidecar: the ingress and egress listeners of a workload's proxy and its
//! outbound traffic policy.

use std::collections::BTreeSet;

use super::destination_rule::connection_pool;
use super::{destination, labels, namespaced_host, port, unique_port};
use crate::ObjectRef;
use crate::networking::*;
use crate::validate::{Checker, Code, Path, ValidationError};

/// Validates a Sidecar.
pub fn sidecar(sc: &Sidecar) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(sc));
    let spec = &sc.spec;
    let root = Path::root("spec");
    if let Some(selector) = &spec.workload_selector {
        labels(&mut c, &root.field("workloadSelector").field("labels"), &selector.labels);
    }
    let mut ingress_ports = BTreeSet::new();
    for (i, ingress) in spec.ingress.iter().enumerate() {
        let path = root.field("ingress").index(i);
        port(&mut c, &path.field("port"), &ingress.port, false);
        let number = path.field("port").field("number");
        unique_port(&mut c, &number, &mut ingress_ports, ingress.port.number);
        if let Some(mode) = &ingress.capture_mode {
            c.known(&path.field("captureMode"), mode);
        }
        if let Some(endpoint) = &ingress.default_endpoint {
            default_endpoint(&mut c, &path.field("defaultEndpoint"), endpoint);
        }
        if let Some(pool) = &ingress.connection_pool {
            connection_pool(&mut c, &path.field("connectionPool"), pool);
        }
    }
    let mut catch_all = 0;
    for (i, egress) in spec.egress.iter().enumerate() {
        let path = root.field("egress").index(i);
        if egress.hosts.is_empty() {
            c.error(
                &path.field("hosts"),
                Code::Required,
                "at least one host is required, as namespace/dnsName",
            );
        }
        for (j, host) in egress.hosts.iter().enumerate() {
            namespaced_host(&mut c, &path.field("hosts").index(j), host, true);
        }
        match &egress.port {
            Some(p) => port(&mut c, &path.field("port"), p, false),
            None => catch_all += 1,
        }
        if catch_all > 1 && egress.port.is_none() {
            c.error(
                &path.field("port"),
                Code::Duplicate,
                "only one egress listener may leave out the port",
            );
        }
        if let Some(mode) = &egress.capture_mode {
            c.known(&path.field("captureMode"), mode);
        }
    }
    if let Some(pool) = &spec.inbound_connection_pool {
        connection_pool(&mut c, &root.field("inboundConnectionPool"), pool);
    }
    if let Some(policy) = &spec.outbound_traffic_policy {
        let path = root.field("outboundTrafficPolicy");
        if let Some(mode) = &policy.mode {
            c.known(&path.field("mode"), mode);
        }
        if let Some(proxy) = &policy.egress_proxy {
            if policy.mode != Some(OutboundTrafficMode::AllowAny) {
                c.error(
                    &path.field("egressProxy"),
                    Code::ConflictingFields,
                    "egressProxy only applies with mode ALLOW_ANY",
                );
            }
            destination(&mut c, &path.field("egressProxy"), proxy);
        }
    }
    c.finish()
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT` or `unix:///path`.
fn default_endpoint(c: &mut Checker, path: &Path, endpoint: &str) {
    if endpoint.starts_with("unix://") {
        return;
    }
    let ok = endpoint.parse::<std::net::SocketAddr>().is_ok_and(|addr| {
        addr.port() != 0 && (addr.ip().is_loopback() || addr.ip().is_unspecified())
    });
    if !ok {
        c.error(path, Code::InvalidAddress, format!("{endpoint:?} must be 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix:///path"));
    }
}
