//! What a gateway proxy (`router~...`) gets instead of a sidecar's capture listeners: one
//! listener per port of the Gateway servers that select it, and for each port one route
//! configuration (`http.<port>`) whose virtual hosts are the hosts of the VirtualServices bound
//! to those Gateways (`gateways: [ns/name]`), kept apart from the mesh's (`mesh`) routes.
//!
//! Istio's rules: a Gateway selects the proxies whose labels include its `selector`; a server's
//! hosts are `[namespace/]host` (`*/` any namespace, `./` the Gateway's own) and may be
//! wildcards; a Gateway port that a Service of the gateway maps to another target port is
//! listened on at that target port (`80` is served on `8080`, where uid 1337 may bind).
//!
//! TLS: a server with `tls.mode` SIMPLE or MUTUAL terminates with its `credentialName`'s
//! certificate (a Secret in the gateway's namespace, served by the pilot over SDS as
//! `kubernetes://<name>`, its CA as `kubernetes://<name>-cacert`), one filter chain per server
//! matched by SNI, with routes `https.<port>.<namespace>.<gateway>.<server>`; PASSTHROUGH
//! routes by SNI from the bound VirtualServices' `tls` rules without terminating;
//! `httpsRedirect` answers plain HTTP with a redirect to HTTPS.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    RedirectAction, Route, RouteConfiguration, RouteMatch, VirtualHost, redirect_action, route,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    Rds, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::BoolValue;
use mesh_api::networking::{Gateway, Server, VirtualService};

use super::route::{Binding, destination_cluster, host_matches, vs_routes};
use crate::model::{Proxy, Snapshot};

/// The name of a gateway port's route configuration (Istio's `http.<port>`).
pub fn route_name(port: u16) -> String {
    format!("http.{port}")
}

/// A Gateway server that selects the proxy, with the Gateway it belongs to.
struct Selected<'a> {
    gateway: &'a Gateway,
    server: &'a Server,
    /// The server's place among its Gateway's servers.
    index: usize,
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

    /// What the gateway does with the server's connections.
    fn kind(&self) -> ServerKind {
        let protocol = self.server.port.protocol.to_ascii_uppercase();
        let tls = self.server.tls.as_ref();
        let mode = tls.and_then(|t| t.mode.as_ref()).map(|m| m.as_str().to_owned());
        match (protocol.as_str(), mode.as_deref()) {
            ("HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB", _) => {
                ServerKind::Http { redirect: tls.and_then(|t| t.https_redirect).unwrap_or(false) }
            }
            ("HTTPS" | "TLS", Some(mode @ ("SIMPLE" | "MUTUAL"))) => {
                match tls.and_then(|t| t.credential_name.clone()) {
                    Some(credential) => {
                        ServerKind::Terminate { credential, mutual: mode == "MUTUAL" }
                    }
                    None => ServerKind::Unsupported,
                }
            }
            ("HTTPS" | "TLS", Some("PASSTHROUGH")) => ServerKind::Passthrough,
            ("HTTPS" | "TLS", Some("ISTIO_MUTUAL")) => ServerKind::IstioMutual,
            _ => ServerKind::Unsupported,
        }
    }

    /// The server's hosts without their namespace part, for SNI matching; empty for `*`.
    fn server_names(&self) -> Vec<String> {
        self.server
            .hosts
            .iter()
            .map(|h| h.split_once('/').map_or(h.as_str(), |(_, host)| host).to_owned())
            .filter(|h| h != "*")
            .collect()
    }

    /// The name of a terminating server's route configuration.
    fn https_routes(&self) -> String {
        let name = self.gateway.metadata.name.as_deref().unwrap_or_default();
        format!("https.{}.{}.{name}.{}", self.port, self.namespace(), self.index)
    }
}

/// What a Gateway server is, as far as the gateway's listeners go.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ServerKind {
    /// Plain HTTP, routed; or every request redirected to HTTPS.
    Http {
        /// `tls.httpsRedirect`.
        redirect: bool,
    },
    /// TLS terminated with a credential's certificate, then HTTP routed.
    Terminate {
        /// `credentialName`.
        credential: String,
        /// MUTUAL: clients' certificates required and verified.
        mutual: bool,
    },
    /// TLS passed through to the backend the SNI names.
    Passthrough,
    /// Mesh mTLS terminated with the gateway's own workload certificate (clients in the mesh
    /// with a DestinationRule `ISTIO_MUTUAL`), then HTTP routed.
    IstioMutual,
    /// Not served (AUTO_PASSTHROUGH, TCP, or TLS without a credential).
    Unsupported,
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
            gateway.spec.servers.iter().enumerate().filter_map(move |(index, server)| {
                let port = u16::try_from(server.port.number).ok().filter(|p| *p != 0)?;
                Some(Selected { gateway, server, index, port })
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

/// One listener per Gateway port: a chain per terminating server (by SNI) and per
/// passed-through SNI, and a chain for plain HTTP.
pub fn listeners(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Listener> {
    let servers = selected(snapshot, proxy);
    let telemetry =
        super::telemetry::HcmTelemetry::of(snapshot, proxy, super::telemetry::Class::Gateway);
    let mut by_port: BTreeMap<u16, Vec<&Selected<'_>>> = BTreeMap::new();
    for server in &servers {
        if server.kind() != ServerKind::Unsupported {
            by_port.entry(server.port).or_default().push(server);
        }
    }
    by_port
        .into_iter()
        .filter_map(|(port, servers)| {
            let listen = listen_port(snapshot, proxy, port);
            let rbac = super::authz::http_filters(snapshot, proxy);
            let stat = format!("outbound_0.0.0.0_{listen}");
            let mut chains = Vec::new();
            let mut plain = false;
            for server in &servers {
                match server.kind() {
                    ServerKind::Http { .. } => plain = true,
                    ServerKind::Terminate { credential, mutual } => {
                        if !has_certificate(snapshot, proxy, &credential) {
                            continue;
                        }
                        let rds = http_connection_manager::RouteSpecifier::Rds(Rds {
                            route_config_name: server.https_routes(),
                            config_source: Some(super::cluster::ads()),
                        });
                        chains.push(FilterChain {
                            name: server.https_routes(),
                            filter_chain_match: sni(server.server_names()),
                            transport_socket: Some(super::tls::downstream_gateway(
                                &credential,
                                mutual,
                            )),
                            filters: vec![super::listener::gateway_hcm(
                                &stat, rds, &rbac, &telemetry,
                            )],
                            ..FilterChain::default()
                        });
                    }
                    ServerKind::Passthrough => {
                        chains.extend(passthrough(snapshot, server, &telemetry.access_log));
                    }
                    ServerKind::IstioMutual => {
                        let rds = http_connection_manager::RouteSpecifier::Rds(Rds {
                            route_config_name: server.https_routes(),
                            config_source: Some(super::cluster::ads()),
                        });
                        let alpn = ["istio-peer-exchange", "istio", "h2", "http/1.1"];
                        chains.push(FilterChain {
                            name: server.https_routes(),
                            filter_chain_match: sni(server.server_names()),
                            transport_socket: Some(super::tls::downstream_mesh(&alpn)),
                            filters: vec![super::listener::gateway_hcm(
                                &stat, rds, &rbac, &telemetry,
                            )],
                            ..FilterChain::default()
                        });
                    }
                    ServerKind::Unsupported => {}
                }
            }
            if plain {
                let rds = http_connection_manager::RouteSpecifier::Rds(Rds {
                    route_config_name: route_name(port),
                    config_source: Some(super::cluster::ads()),
                });
                chains.push(FilterChain {
                    name: route_name(port),
                    filters: vec![super::listener::gateway_hcm(&stat, rds, &rbac, &telemetry)],
                    ..FilterChain::default()
                });
            }
            if chains.is_empty() {
                return None;
            }
            let tls = chains.len() > usize::from(plain);
            Some(Listener {
                name: format!("0.0.0.0_{listen}"),
                address: Some(super::endpoint::socket("0.0.0.0", listen)),
                filter_chains: chains,
                listener_filters: if tls {
                    vec![super::listener::tls_inspector()]
                } else {
                    Vec::new()
                },
                traffic_direction: TrafficDirection::Outbound as i32,
                access_log: telemetry.listener_access_log(),
                ..Listener::default()
            })
        })
        .collect()
}

/// A chain match on these SNI names (none: any).
fn sni(names: Vec<String>) -> Option<FilterChainMatch> {
    (!names.is_empty())
        .then(|| FilterChainMatch { server_names: names, ..FilterChainMatch::default() })
}

/// Whether the gateway's namespace has the credential's certificate and key (a server whose
/// Secret is missing is not served, as Istio leaves it out).
fn has_certificate(snapshot: &Snapshot, proxy: &Proxy, credential: &str) -> bool {
    snapshot
        .credentials
        .get(&(proxy.namespace.clone(), credential.to_owned()))
        .is_some_and(|c| c.certificate_chain.is_some() && c.private_key.is_some())
}

/// The chains of a PASSTHROUGH server: one per SNI host of the `tls` rules of the
/// VirtualServices bound to its Gateway, forwarding the bytes to the rule's destination.
fn passthrough(
    snapshot: &Snapshot,
    server: &Selected<'_>,
    access_log: &[AccessLog],
) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    for vs in bound(snapshot, server) {
        let vs_namespace = vs.metadata.namespace.as_deref().unwrap_or("default");
        for rule in &vs.spec.tls {
            let Some(destination) = rule.route.first() else { continue };
            let names: Vec<String> = rule
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == u32::from(server.port)))
                .flat_map(|m| m.sni_hosts.iter())
                .filter_map(|host| {
                    server.server.hosts.iter().find_map(|h| {
                        effective_host(host, admitted_host(h, server.namespace(), vs_namespace)?)
                    })
                })
                .collect();
            if names.is_empty() {
                continue;
            }
            // `*` (a TLSRoute naming no host, on a listener naming none): every SNI, and
            // connections without one.
            let all = names.iter().any(|n| n == "*");
            let cluster =
                destination_cluster(snapshot, &destination.destination, vs_namespace, server.port);
            chains.push(FilterChain {
                name: format!("passthrough.{}.{}", server.port, names.join(",")),
                filter_chain_match: if all { None } else { sni(names) },
                filters: vec![super::listener::tcp_proxy_filter(
                    &cluster, &cluster, None, access_log,
                )],
                ..FilterChain::default()
            });
        }
    }
    chains
}

/// The VirtualServices bound to a server's Gateway, by namespace and name.
fn bound<'a>(snapshot: &'a Snapshot, server: &Selected<'_>) -> Vec<&'a VirtualService> {
    let mut found: Vec<&VirtualService> = snapshot
        .virtual_services
        .iter()
        .filter(|vs| {
            let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
            server.binding().named_in(&vs.spec.gateways, ns)
        })
        .collect();
    found.sort_by_key(|vs| (vs.metadata.namespace.clone(), vs.metadata.name.clone()));
    found
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

/// The virtual host for `host` in `hosts`, made on first use.
fn vhost<'m>(
    hosts: &'m mut BTreeMap<String, VirtualHost>,
    host: &str,
    port: u16,
) -> &'m mut VirtualHost {
    hosts.entry(host.to_owned()).or_insert_with(|| VirtualHost {
        name: format!("{host}:{port}"),
        domains: if host == "*" {
            vec!["*".to_owned()]
        } else {
            vec![host.to_owned(), format!("{host}:*")]
        },
        ..VirtualHost::default()
    })
}

/// Every request redirected to the same URL over HTTPS (301), for `httpsRedirect`.
fn https_redirect() -> Route {
    Route {
        name: "https_redirect".to_owned(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
            ..RouteMatch::default()
        }),
        action: Some(route::Action::Redirect(RedirectAction {
            scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(
                true,
            )),
            ..RedirectAction::default()
        })),
        ..Route::default()
    }
}

/// The virtual hosts of `servers`: per host of the bound VirtualServices a server admits,
/// their routes (the first VirtualService by namespace and name first); for a server that
/// redirects to HTTPS, a redirect for each of its hosts instead.
fn virtual_hosts(
    snapshot: &Snapshot,
    proxy: &Proxy,
    servers: &[&Selected<'_>],
    port: u16,
) -> Vec<VirtualHost> {
    let mut hosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    for server in servers {
        if server.kind() == (ServerKind::Http { redirect: true }) {
            for host in &server.server.hosts {
                let host = host.split_once('/').map_or(host.as_str(), |(_, h)| h);
                vhost(&mut hosts, host, port).routes = vec![https_redirect()];
            }
            continue;
        }
        for vs in bound(snapshot, server) {
            let vs_namespace = vs.metadata.namespace.as_deref().unwrap_or("default");
            for vs_host in &vs.spec.hosts {
                let Some(host) = server.server.hosts.iter().find_map(|h| {
                    let admitted = admitted_host(h, server.namespace(), vs_namespace)?;
                    effective_host(vs_host, admitted)
                }) else {
                    continue;
                };
                let routes = vs_routes(snapshot, proxy, vs, port, server.binding());
                vhost(&mut hosts, &host, port).routes.extend(routes);
            }
        }
    }
    hosts.into_values().collect()
}

fn route_configuration(name: String, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name,
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        ..RouteConfiguration::default()
    }
}

/// The route configurations of the gateway: `http.<port>` for the plain HTTP servers of each
/// port, and one per terminating server; a request for a host none names gets 404.
pub fn route_configs(snapshot: &Snapshot, proxy: &Proxy) -> Vec<RouteConfiguration> {
    let servers = selected(snapshot, proxy);
    let mut plain: BTreeMap<u16, Vec<&Selected<'_>>> = BTreeMap::new();
    let mut out = Vec::new();
    for server in &servers {
        match server.kind() {
            ServerKind::Http { .. } => plain.entry(server.port).or_default().push(server),
            ServerKind::Terminate { credential, .. } => {
                if has_certificate(snapshot, proxy, &credential) {
                    out.push(route_configuration(
                        server.https_routes(),
                        virtual_hosts(snapshot, proxy, &[server], server.port),
                    ));
                }
            }
            ServerKind::IstioMutual => out.push(route_configuration(
                server.https_routes(),
                virtual_hosts(snapshot, proxy, &[server], server.port),
            )),
            ServerKind::Passthrough | ServerKind::Unsupported => {}
        }
    }
    for (port, servers) in plain {
        out.push(route_configuration(
            route_name(port),
            virtual_hosts(snapshot, proxy, &servers, port),
        ));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The SDS secrets of the gateway: the credentials its terminating servers name, from the
/// Secrets of its own namespace.
pub fn secrets(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Secret> {
    let mut credentials: Vec<String> = selected(snapshot, proxy)
        .iter()
        .filter_map(|s| match s.kind() {
            ServerKind::Terminate { credential, .. } => Some(credential),
            _ => None,
        })
        .collect();
    credentials.sort();
    credentials.dedup();
    let lookup = |name: &str| snapshot.credentials.get(&(proxy.namespace.clone(), name.to_owned()));
    credentials
        .iter()
        .filter_map(|name| Some((name, lookup(name)?)))
        .flat_map(|(name, material)| {
            super::tls::credential_secrets(name, material, lookup(&format!("{name}-cacert")))
        })
        .collect()
}
