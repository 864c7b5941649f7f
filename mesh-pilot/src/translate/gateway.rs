//! What a gateway proxy (`router~...`) gets instead of a sidecar's capture listeners: one
//! listener per port of the Gateway servers that select it, and for each port one route
//! configuration (`http.<port>`) whose virtual hosts are the hosts of the VirtualServices bound
//! to those Gateways (`gateways: [ns/name]`), kept apart from the mesh's (`mesh`) routes.
//!
//! Istio's rules: a Gateway selects the proxies whose labels include its `selector`; a server's
//! hosts are `[namespace/]host` (`*/` any namespace, `./` the Gateway's own) and may be
//! wildcards; a Gateway port that a Service of the gateway maps to another target port is
//! listened on at that target port (`80` is served on `8080`, where uid 1337 may bind).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    Rds, http_connection_manager,
};
use envoy_types::pb::google::protobuf::BoolValue;
use mesh_api::networking::{Gateway, Server, VirtualService};

use super::route::{Binding, host_matches, vs_routes};
use crate::model::{Proxy, Snapshot};

/// The name of a gateway port's route configuration (Istio's `http.<port>`).
pub fn route_name(port: u16) -> String {
    format!("http.{port}")
}

/// A Gateway server that selects the proxy, with the Gateway it belongs to.
struct Selected<'a> {
    gateway: &'a Gateway,
    server: &'a Server,
    port: u16,
}

impl Selected<'_> {
    fn namespace(&self) -> &str {
        self.gateway.metadata.namespace.as_deref().unwrap_or("default")
    }

    fn binding(&self) -> Binding<'_> {
        Binding::Gateway {
            namespace: self.namespace(),
            name: self.gateway.metadata.name.as_deref().unwrap_or_default(),
        }
    }

    /// Whether the server carries HTTP the gateway routes (plain HTTP ports; TLS is served
    /// by the TLS support when it lands).
    fn is_http(&self) -> bool {
        matches!(
            self.server.port.protocol.to_ascii_uppercase().as_str(),
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB"
        )
    }
}

/// The servers of the Gateways whose selector the proxy's labels satisfy, in a stable order.
fn selected<'a>(snapshot: &'a Snapshot, proxy: &Proxy) -> Vec<Selected<'a>> {
    let mut gateways: Vec<&Gateway> = snapshot
        .gateways
        .iter()
        .filter(|g| g.spec.selector.iter().all(|(k, v)| proxy.labels.get(k) == Some(v)))
        .collect();
    gateways.sort_by_key(|g| (g.metadata.namespace.clone(), g.metadata.name.clone()));
    gateways
        .into_iter()
        .flat_map(|gateway| {
            gateway.spec.servers.iter().filter_map(move |server| {
                let port = u16::try_from(server.port.number).ok().filter(|p| *p != 0)?;
                Some(Selected { gateway, server, port })
            })
        })
        .collect()
}

/// The port the proxy listens on for a Gateway port: the target port of a Service port of
/// that number that selects the proxy (Istio's mapping), else the number itself.
pub fn listen_port(snapshot: &Snapshot, proxy: &Proxy, port: u16) -> u16 {
    snapshot
        .endpoints
        .iter()
        .filter(|((_, service_port), _)| *service_port == port)
        .flat_map(|(_, endpoints)| endpoints)
        .find(|e| proxy.ips.contains(&e.address))
        .map_or(port, |e| e.port)
}

/// One listener per Gateway port with HTTP servers: `0.0.0.0_<listen port>`, HTTP with the
/// routes of `http.<gateway port>`.
pub fn listeners(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Listener> {
    let ports: BTreeMap<u16, ()> =
        selected(snapshot, proxy).iter().filter(|s| s.is_http()).map(|s| (s.port, ())).collect();
    ports
        .into_keys()
        .map(|port| {
            let listen = listen_port(snapshot, proxy, port);
            let rds = http_connection_manager::RouteSpecifier::Rds(Rds {
                route_config_name: route_name(port),
                config_source: Some(super::cluster::ads()),
            });
            Listener {
                name: format!("0.0.0.0_{listen}"),
                address: Some(super::endpoint::socket("0.0.0.0", listen)),
                filter_chains: vec![FilterChain {
                    filters: vec![super::listener::gateway_hcm(
                        &format!("outbound_0.0.0.0_{listen}"),
                        rds,
                    )],
                    ..FilterChain::default()
                }],
                traffic_direction: TrafficDirection::Outbound as i32,
                ..Listener::default()
            }
        })
        .collect()
}

/// A server host (`[namespace/]host`) as the host pattern it admits for a VirtualService of
/// `vs_namespace`, or `None` when the namespace part excludes it.
fn admitted_host<'h>(
    server_host: &'h str,
    gateway_namespace: &str,
    vs_namespace: &str,
) -> Option<&'h str> {
    match server_host.split_once('/') {
        Some(("*", host)) => Some(host),
        Some((".", host)) => (vs_namespace == gateway_namespace).then_some(host),
        Some((ns, host)) => (vs_namespace == ns).then_some(host),
        None => Some(server_host),
    }
}

/// The host a request must name for a VirtualService host under a server host: the more
/// specific of the two, when one covers the other.
fn effective_host(vs_host: &str, server_host: &str) -> Option<String> {
    if host_matches(server_host, vs_host) {
        Some(vs_host.to_owned())
    } else if host_matches(vs_host, server_host) {
        Some(server_host.to_owned())
    } else {
        None
    }
}

/// The route configuration of each Gateway port: a virtual host per host of the bound
/// VirtualServices that a server on that port admits, with their routes; a request for any
/// other host gets 404.
pub fn route_configs(snapshot: &Snapshot, proxy: &Proxy) -> Vec<RouteConfiguration> {
    let servers = selected(snapshot, proxy);
    let mut by_port: BTreeMap<u16, Vec<&Selected<'_>>> = BTreeMap::new();
    for server in servers.iter().filter(|s| s.is_http()) {
        by_port.entry(server.port).or_default().push(server);
    }
    let mut virtual_services: Vec<&VirtualService> = snapshot.virtual_services.iter().collect();
    virtual_services.sort_by_key(|vs| (vs.metadata.namespace.clone(), vs.metadata.name.clone()));
    by_port
        .into_iter()
        .map(|(port, servers)| {
            // Virtual hosts by domain: the first VirtualService (by namespace and name) that
            // claims a host gives its routes first; others add theirs after.
            let mut hosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
            for server in &servers {
                for vs in &virtual_services {
                    let vs_namespace = vs.metadata.namespace.as_deref().unwrap_or("default");
                    if !server.binding().named_in(&vs.spec.gateways, vs_namespace) {
                        continue;
                    }
                    for vs_host in &vs.spec.hosts {
                        let Some(host) = server.server.hosts.iter().find_map(|h| {
                            let admitted = admitted_host(h, server.namespace(), vs_namespace)?;
                            effective_host(vs_host, admitted)
                        }) else {
                            continue;
                        };
                        let routes = vs_routes(snapshot, proxy, vs, port, server.binding());
                        let entry = hosts.entry(host.clone()).or_insert_with(|| VirtualHost {
                            name: format!("{host}:{port}"),
                            domains: if host == "*" {
                                vec!["*".to_owned()]
                            } else {
                                vec![host.clone(), format!("{host}:*")]
                            },
                            ..VirtualHost::default()
                        });
                        entry.routes.extend(routes);
                    }
                }
            }
            RouteConfiguration {
                name: route_name(port),
                virtual_hosts: hosts.into_values().collect(),
                validate_clusters: Some(BoolValue { value: false }),
                ..RouteConfiguration::default()
            }
        })
        .collect()
}
