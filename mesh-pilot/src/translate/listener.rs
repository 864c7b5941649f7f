//! LDS: `virtualOutbound` on 15001 (original destination; a filter chain per HTTP port and per
//! TCP service VIP:port, passthrough otherwise) and `virtualInbound` on 15006 (a chain per port
//! the workload serves, to the app from 127.0.0.6).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{
    ApiListener, Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter,
    listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::config::route::v3::{route, route_action, route_match};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use mesh_api::ports;
use mesh_api::xds::{
    BLACKHOLE_CLUSTER, ClusterName, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER,
    VIRTUAL_INBOUND_LISTENER, VIRTUAL_OUTBOUND_LISTENER, mtls,
};

use super::telemetry::{Class, HcmTelemetry};
use super::{any, duration};
use crate::model::{Protocol, Proxy, Snapshot};

/// Name of the HTTP connection manager network filter.
pub const HCM: &str = "envoy.filters.network.http_connection_manager";
/// Name of the fault HTTP filter (per-route config keys use it).
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// Name of the listener filter that reads TLS ClientHellos (SNI, ALPN).
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
/// Name of the CORS HTTP filter.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// The sidecar's two capture listeners: `virtualOutbound` (15001) and `virtualInbound` (15006).
pub fn listeners(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Listener> {
    vec![virtual_outbound(snapshot, proxy), virtual_inbound(snapshot, proxy)]
}

fn capture_listener(
    name: &str,
    port: u16,
    chains: Vec<FilterChain>,
    default: Option<FilterChain>,
    direction: TrafficDirection,
    telemetry: &HcmTelemetry,
) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(super::endpoint::socket("0.0.0.0", port)),
        use_original_dst: Some(BoolValue { value: true }),
        filter_chains: chains,
        default_filter_chain: default,
        traffic_direction: direction as i32,
        access_log: telemetry.listener_access_log(),
        ..Listener::default()
    }
}

fn virtual_outbound(snapshot: &Snapshot, proxy: &Proxy) -> Listener {
    let telemetry = HcmTelemetry::of(snapshot, proxy, Class::SidecarOutbound);
    let mut http_ports = BTreeMap::new();
    let mut chains = Vec::new();
    for service in snapshot.services.values() {
        for port in &service.ports {
            if port.protocol.is_http() {
                http_ports.insert(port.port, ());
            } else if let Some(vip) = service.vip {
                let cluster = ClusterName::outbound(port.port, None, &service.hostname).to_string();
                chains.push(FilterChain {
                    name: format!("{vip}_{}", port.port),
                    filter_chain_match: Some(FilterChainMatch {
                        destination_port: Some(UInt32Value { value: u32::from(port.port) }),
                        prefix_ranges: vec![CidrRange {
                            address_prefix: vip.to_string(),
                            prefix_len: Some(UInt32Value {
                                value: if vip.is_ipv4() { 32 } else { 128 },
                            }),
                        }],
                        ..FilterChainMatch::default()
                    }),
                    filters: vec![tcp_proxy_filter(
                        &format!("outbound|{}||{}", port.port, service.hostname),
                        &cluster,
                        super::cluster::tcp_idle_timeout(
                            snapshot,
                            proxy,
                            &service.hostname,
                            port.port,
                        ),
                        &telemetry.access_log,
                    )],
                    ..FilterChain::default()
                });
            }
        }
    }
    for port in http_ports.into_keys() {
        chains.push(FilterChain {
            name: format!("0.0.0.0_{port}"),
            filter_chain_match: Some(FilterChainMatch {
                destination_port: Some(UInt32Value { value: u32::from(port) }),
                ..FilterChainMatch::default()
            }),
            filters: vec![hcm_filter(
                &format!("outbound_0.0.0.0_{port}"),
                http_connection_manager::RouteSpecifier::Rds(Rds {
                    config_source: Some(super::cluster::ads()),
                    route_config_name: mesh_api::xds::route_config_name(port),
                }),
                &telemetry,
            )],
            ..FilterChain::default()
        });
    }
    chains.sort_by(|a, b| a.name.cmp(&b.name));
    // Unknown destinations: passed through (ALLOW_ANY), or dropped (REGISTRY_ONLY).
    let unknown = if super::scope::registry_only(snapshot, proxy) {
        BLACKHOLE_CLUSTER
    } else {
        PASSTHROUGH_CLUSTER
    };
    let default = FilterChain {
        name: unknown.to_owned(),
        filters: vec![tcp_proxy_filter(unknown, unknown, None, &telemetry.access_log)],
        ..FilterChain::default()
    };
    capture_listener(
        VIRTUAL_OUTBOUND_LISTENER,
        ports::PROXY_OUTBOUND,
        chains,
        Some(default),
        TrafficDirection::Outbound,
        &telemetry,
    )
}

/// The API listener for `host:port`, the target of a proxyless gRPC client
/// (`xds:///reviews.demo.svc.cluster.local:9090`): the routes of that port over RDS, as the
/// sidecar's HTTP listeners get them. `None` unless some service has that name and HTTP port.
pub fn api_listener(snapshot: &Snapshot, name: &str) -> Option<Listener> {
    let (host, port) = name.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let known = snapshot.services.values().any(|s| {
        s.port(port).is_some_and(|p| p.protocol.is_http())
            && s.short_names(&snapshot.domain).iter().any(|n| n == host)
    });
    if !known {
        return None;
    }
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(super::cluster::ads()),
            route_config_name: mesh_api::xds::route_config_name(port),
        })),
        // What gRPC implements of Envoy's filters: faults and the router.
        http_filters: vec![
            http_filter(FAULT_FILTER, HttpFault::default()),
            http_filter("envoy.filters.http.router", Router::default()),
        ],
        ..HttpConnectionManager::default()
    };
    Some(Listener {
        name: name.to_owned(),
        api_listener: Some(ApiListener { api_listener: Some(any(hcm)) }),
        ..Listener::default()
    })
}

/// Inbound chains per served port, as the port's PeerAuthentication mode says: mesh mTLS
/// (told apart by the client proxy's ALPN) terminated unless DISABLE, plaintext passed to the
/// app unless STRICT. The workload's own mode decides the ports no service declares: STRICT
/// leaves no plaintext way in at all.
fn virtual_inbound(snapshot: &Snapshot, proxy: &Proxy) -> Listener {
    let peer = super::peer_auth::policies(snapshot, &proxy.namespace, &proxy.labels);
    let telemetry = HcmTelemetry::of(snapshot, proxy, Class::SidecarInbound);
    // AuthorizationPolicies: RBAC filters in front of the app, on every way in.
    let http_rbac = super::authz::http_filters(snapshot, proxy);
    let tcp_rbac = super::authz::network_filters(snapshot, proxy);
    let guarded = |filter: Filter| {
        let mut filters = tcp_rbac.clone();
        filters.push(filter);
        filters
    };
    let mesh_match = |port: Option<u16>| FilterChainMatch {
        destination_port: port.map(|p| UInt32Value { value: u32::from(p) }),
        transport_protocol: "tls".to_owned(),
        application_protocols: mtls::ALPN.iter().map(|p| (*p).to_owned()).collect(),
        ..FilterChainMatch::default()
    };
    let mut chains = Vec::new();
    let served = super::cluster::inbound_ports(snapshot, proxy);
    for (port, protocol) in &served {
        let (port, protocol) = (*port, *protocol);
        let mode = peer.mode(Some(port));
        let cluster = ClusterName::inbound(port).to_string();
        let filter = |mtls: bool| {
            if protocol == Protocol::Tcp {
                guarded(tcp_proxy_filter(&cluster, &cluster, None, &telemetry.access_log))
            } else {
                let stat = format!("inbound_0.0.0.0_{port}");
                vec![inbound_hcm(&stat, &cluster, mtls, &http_rbac, &telemetry)]
            }
        };
        let alpn: &[&str] = if protocol.is_http() { &["h2", "http/1.1"] } else { &[] };
        if mode.mtls() {
            chains.push(FilterChain {
                name: format!("{cluster}mtls"),
                filter_chain_match: Some(mesh_match(Some(port))),
                filters: filter(true),
                transport_socket: Some(super::tls::downstream_mesh(alpn)),
                ..FilterChain::default()
            });
        }
        if mode.plaintext() {
            chains.push(FilterChain {
                name: cluster.clone(),
                filter_chain_match: Some(port_match(port)),
                filters: filter(false),
                ..FilterChain::default()
            });
        }
    }
    let passthrough = || {
        let cluster = INBOUND_PASSTHROUGH_CLUSTER;
        guarded(tcp_proxy_filter(cluster, cluster, None, &telemetry.access_log))
    };
    // A port-level setting for a port no service declares: its own way in, as its mode says
    // (a STRICT workload may still take plaintext on one port, or refuse it on one).
    for (port, mode) in peer.port_levels() {
        // The sidecar's own ports are never a way in, not even by a port-level setting.
        if served.contains_key(&port) || ports::is_proxy_port(port) {
            continue;
        }
        let name = format!("{INBOUND_PASSTHROUGH_CLUSTER}_{port}");
        if mode.mtls() {
            chains.push(FilterChain {
                name: format!("{name}mtls"),
                filter_chain_match: Some(mesh_match(Some(port))),
                filters: passthrough(),
                transport_socket: Some(super::tls::downstream_mesh(&[])),
                ..FilterChain::default()
            });
        }
        chains.push(FilterChain {
            name,
            filter_chain_match: Some(port_match(port)),
            // Refused plaintext: to the black hole, which closes the connection.
            filters: if mode.plaintext() {
                passthrough()
            } else {
                let cluster = BLACKHOLE_CLUSTER;
                vec![tcp_proxy_filter(cluster, cluster, None, &telemetry.access_log)]
            },
            ..FilterChain::default()
        });
    }
    let workload = peer.mode(None);
    // Mesh mTLS to a port no service declares: terminated, then passed to the app.
    if workload.mtls() {
        chains.push(FilterChain {
            name: format!("{INBOUND_PASSTHROUGH_CLUSTER}mtls"),
            filter_chain_match: Some(mesh_match(None)),
            filters: passthrough(),
            transport_socket: Some(super::tls::downstream_mesh(&[])),
            ..FilterChain::default()
        });
    }
    // Anything else: plaintext passed through, unless the workload is STRICT (then the
    // connection is closed: no default chain).
    let default = workload.plaintext().then(|| FilterChain {
        name: INBOUND_PASSTHROUGH_CLUSTER.to_owned(),
        filters: passthrough(),
        ..FilterChain::default()
    });
    let mut listener = capture_listener(
        VIRTUAL_INBOUND_LISTENER,
        ports::PROXY_INBOUND,
        chains,
        default,
        TrafficDirection::Inbound,
        &telemetry,
    );
    listener.listener_filters = vec![tls_inspector()];
    listener
}

/// A chain match on one destination port.
fn port_match(port: u16) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: Some(UInt32Value { value: u32::from(port) }),
        ..FilterChainMatch::default()
    }
}

/// The HTTP connection manager in front of the app: the peer's identity is passed on in
/// `x-forwarded-client-cert` (and a client's own header of that name never is).
fn inbound_hcm(
    stat_prefix: &str,
    cluster: &str,
    mtls: bool,
    rbac: &[HttpFilter],
    telemetry: &HcmTelemetry,
) -> Filter {
    let mut hcm = hcm(
        stat_prefix,
        http_connection_manager::RouteSpecifier::RouteConfig(inbound_routes(cluster)),
    );
    telemetry.apply(&mut hcm);
    hcm.http_filters.splice(0..0, rbac.iter().cloned());
    hcm.forward_client_cert_details = if mtls {
        http_connection_manager::ForwardClientCertDetails::SanitizeSet
    } else {
        http_connection_manager::ForwardClientCertDetails::Sanitize
    } as i32;
    hcm.set_current_client_cert_details =
        Some(http_connection_manager::SetCurrentClientCertDetails {
            uri: true,
            ..http_connection_manager::SetCurrentClientCertDetails::default()
        });
    Filter { name: HCM.to_owned(), config_type: Some(filter::ConfigType::TypedConfig(any(hcm))) }
}

fn inbound_routes(cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: cluster.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: cluster.to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![Route {
                name: "default".to_owned(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                    ..RouteMatch::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.to_owned(),
                    )),
                    timeout: Some(duration(std::time::Duration::ZERO)),
                    ..RouteAction::default()
                })),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..RouteConfiguration::default()
    }
}

/// A TCP proxy to `cluster` logging with `access_log`; `idle_timeout` unset is Envoy's
/// default (an hour).
pub fn tcp_proxy_filter(
    stat_prefix: &str,
    cluster: &str,
    idle_timeout: Option<envoy_types::pb::google::protobuf::Duration>,
    access_log: &[AccessLog],
) -> Filter {
    let proxy = TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
        idle_timeout,
        access_log: access_log.to_vec(),
        ..TcpProxy::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any(proxy))),
    }
}

fn http_filter<T: prost::Name + prost::Message>(name: &str, config: T) -> HttpFilter {
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(config))),
        ..HttpFilter::default()
    }
}

/// The TLS inspector: reads the ClientHello's SNI and ALPN for chain matching.
pub fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: TLS_INSPECTOR.to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(TlsInspector::default()))),
        ..ListenerFilter::default()
    }
}

/// A gateway's HTTP connection manager: the edge of the mesh, so the client's address is the
/// connection's (`use_remote_address`), as Istio sets it for gateways; tracing and access logs
/// as the gateway's Telemetry says ([`Class::Gateway`]).
pub fn gateway_hcm(
    stat_prefix: &str,
    routes: http_connection_manager::RouteSpecifier,
    rbac: &[HttpFilter],
    telemetry: &HcmTelemetry,
) -> Filter {
    let mut hcm = hcm(stat_prefix, routes);
    telemetry.apply(&mut hcm);
    hcm.use_remote_address = Some(BoolValue { value: true });
    hcm.http_filters.splice(0..0, rbac.iter().cloned());
    Filter { name: HCM.to_owned(), config_type: Some(filter::ConfigType::TypedConfig(any(hcm))) }
}

fn hcm_filter(
    stat_prefix: &str,
    routes: http_connection_manager::RouteSpecifier,
    telemetry: &HcmTelemetry,
) -> Filter {
    let mut hcm = hcm(stat_prefix, routes);
    telemetry.apply(&mut hcm);
    Filter { name: HCM.to_owned(), config_type: Some(filter::ConfigType::TypedConfig(any(hcm))) }
}

fn hcm(
    stat_prefix: &str,
    routes: http_connection_manager::RouteSpecifier,
) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(routes),
        // Fault and CORS do nothing unless a route configures them.
        http_filters: vec![
            http_filter(FAULT_FILTER, HttpFault::default()),
            http_filter(CORS_FILTER, Cors::default()),
            http_filter("envoy.filters.http.router", Router::default()),
        ],
        use_remote_address: Some(BoolValue { value: false }),
        // WebSocket is tunnelled, no other upgrade (h2c never switches protocols).
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_owned(),
            ..http_connection_manager::UpgradeConfig::default()
        }],
        // Paths are made canonical before routing and authorization, so a policy on
        // `/admin` is not passed by `//admin`, `/./admin` or `/%2Fadmin`: RFC 3986
        // normalization, merged slashes, and escaped slashes decoded (Istio's strongest
        // setting, DECODE_AND_MERGE_SLASHES, made the default).
        normalize_path: Some(BoolValue { value: true }),
        merge_slashes: true,
        // `example.com.` is `example.com`: a trailing dot is no way around a host rule.
        strip_trailing_host_dot: true,
        path_with_escaped_slashes_action:
            http_connection_manager::PathWithEscapedSlashesAction::UnescapeAndForward as i32,
        ..HttpConnectionManager::default()
    }
}
