//! Service checks: every port's protocol can be told from its name or `appProtocol`
//! (IST0118, IST0150 for ExternalName), no port targets the sidecar's own ports (MESH0003),
//! and the Services of a Deployment agree on protocols (IST0116) and ports (IST0137).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::context::{Context, Obj, is_system_namespace, selects};
use crate::finding::{
    DEPLOYMENT_ASSOCIATED_TO_MULTIPLE_SERVICES, DEPLOYMENT_CONFLICTING_PORTS,
    EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME, Finding,
    PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION, TARGET_PORT_RESERVED_BY_PROXY, go_list, go_quote,
};

pub(crate) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let root = &cx.input.mesh.root_namespace;
    for svc in &cx.services {
        if is_system_namespace(svc.namespace(), root) || is_control_plane(svc) {
            continue;
        }
        ports(svc, out);
    }
    deployments(cx, out);
}

/// Istio's own Services, which name their ports as they like.
fn is_control_plane(svc: &Obj<'_, Service>) -> bool {
    svc.labels().contains_key("istio") || svc.labels().get("release").is_some_and(|r| r == "istio")
}

/// Protocols a port name (before its first `-`) or `appProtocol` may give, as Istio parses them.
const PROTOCOLS: &[&str] = &[
    "tcp",
    "udp",
    "grpc",
    "grpc-web",
    "http",
    "http_proxy",
    "http2",
    "https",
    "tls",
    "mongo",
    "redis",
    "mysql",
];

/// Ports taken as TCP whatever their name: server-first protocols Istio never sniffs.
const WELL_KNOWN_PORTS: &[i32] = &[25, 53, 3306, 27017];

/// Whether Istio can tell the port's protocol (its `ConvertProtocol` is not "unsupported").
fn protocol_known(port: &ServicePort) -> bool {
    if port.protocol.as_deref() == Some("UDP") {
        return true;
    }
    let name = match port.app_protocol.as_deref() {
        Some("kubernetes.io/h2c" | "kubernetes.io/ws" | "kubernetes.io/wss") => return true,
        Some(app_protocol) => app_protocol,
        None => port.name.as_deref().unwrap_or_default(),
    };
    let name = name.to_ascii_lowercase();
    if name.starts_with("grpc-web") {
        return true;
    }
    let prefix = name.split('-').next().unwrap_or_default();
    PROTOCOLS.contains(&prefix) || WELL_KNOWN_PORTS.contains(&port.port)
}

/// A target port as Kubernetes prints it (`0` when unset, as Istio reads a file's).
fn target_string(port: &ServicePort) -> String {
    match &port.target_port {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => "0".to_owned(),
    }
}

fn ports(svc: &Obj<'_, Service>, out: &mut Vec<Finding>) {
    let Some(spec) = &svc.spec.spec else { return };
    let external_name = spec.type_.as_deref() == Some("ExternalName");
    for port in spec.ports.iter().flatten() {
        let name = port.name.as_deref().unwrap_or_default();
        if !protocol_known(port) || (name == "tcp" && external_name) {
            out.push(if external_name {
                svc.finding(
                    &EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME,
                    "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for ports serving TCP protocol from being forwarded correctly".to_owned(),
                )
            } else {
                svc.finding(
                    &PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
                    format!(
                        "Port name {name} (port: {}, targetPort: {}) doesn't follow the naming convention of Istio port.",
                        port.port,
                        target_string(port)
                    ),
                )
            });
        }
        let target = match &port.target_port {
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(_)) => continue,
            None => port.port,
        };
        if u16::try_from(target).is_ok_and(mesh_api::ports::is_proxy_port) {
            out.push(svc.finding(
                &TARGET_PORT_RESERVED_BY_PROXY,
                format!(
                    "Port {name} (port: {}, targetPort: {target}) targets a port the sidecar reserves (15000 to 15090): the mesh sends nothing to it.",
                    port.port
                ),
            ));
        }
    }
}

/// The label of waypoint Deployments, which Istio leaves out.
const MANAGED: (&str, &str) = ("gateway.istio.io/managed", "istio.io-mesh-controller");

fn deployments(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (deployment, pods) in &cx.deployments {
        if deployment.labels().get(MANAGED.0).is_some_and(|v| v == MANAGED.1) || !cx.in_mesh(pods) {
            continue;
        }
        let services: Vec<&Obj<'_, Service>> = cx
            .services
            .iter()
            .filter(|s| s.namespace() == pods.namespace)
            .filter(|s| {
                let selector = s.spec.spec.as_ref().and_then(|spec| spec.selector.as_ref());
                selector.is_some_and(|sel| !sel.is_empty() && selects(sel, pods.labels))
            })
            .collect();
        // Port -> protocol -> Services; target port -> port -> Service.
        let mut protocols: BTreeMap<i32, BTreeMap<&str, Vec<String>>> = BTreeMap::new();
        let mut targets: BTreeMap<String, BTreeMap<i32, String>> = BTreeMap::new();
        for svc in &services {
            for port in svc.spec.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                protocols
                    .entry(port.port)
                    .or_default()
                    .entry(protocol)
                    .or_default()
                    .push(svc.full_name());
                let target = match &port.target_port {
                    Some(IntOrString::Int(0)) | None => port.port.to_string(),
                    Some(_) => target_string(port),
                };
                targets.entry(target).or_default().insert(port.port, svc.full_name());
            }
        }
        let name = deployment.name();
        for (port, by_protocol) in protocols.iter().filter(|(_, p)| p.len() > 1) {
            let names: BTreeSet<&String> = by_protocol.values().flatten().collect();
            out.push(deployment.finding(
                &DEPLOYMENT_ASSOCIATED_TO_MULTIPLE_SERVICES,
                format!(
                    "This deployment {name} is associated with multiple services using port {port} but different protocols: {}",
                    go_list(&names.into_iter().collect::<Vec<_>>())
                ),
            ));
        }
        for (target, by_port) in targets.iter().filter(|(_, p)| p.len() > 1) {
            let names: BTreeSet<&String> = by_port.values().collect();
            let ports: Vec<&i32> = by_port.keys().collect();
            out.push(deployment.finding(
                &DEPLOYMENT_CONFLICTING_PORTS,
                format!(
                    "This deployment {name} is associated with multiple services {} using targetPort {} but different ports: {}.",
                    go_list(&names.into_iter().collect::<Vec<_>>()),
                    go_quote(target),
                    go_list(&ports)
                ),
            ));
        }
    }
}
