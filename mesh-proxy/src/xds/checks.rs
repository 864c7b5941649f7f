//! What the proxy checks in each resource before it takes any of a response: only what it
//! implements (filters, transport sockets, cluster types, balancing policies), and what the
//! data path will build from it must build. Each check names the field it refuses.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use prost::Message;

/// Network filters the proxy implements.
const NETWORK_FILTERS: [&str; 3] = [
    "envoy.filters.network.http_connection_manager",
    "envoy.filters.network.tcp_proxy",
    crate::authz::NETWORK_FILTER,
];
/// Listener filters the proxy implements.
const LISTENER_FILTERS: [&str; 3] = [
    "envoy.filters.listener.tls_inspector",
    "envoy.filters.listener.http_inspector",
    "envoy.filters.listener.original_dst",
];
/// HTTP filters the proxy implements.
const HTTP_FILTERS: [&str; 5] = [
    "envoy.filters.http.fault",
    "envoy.filters.http.cors",
    "envoy.filters.http.router",
    crate::authz::HTTP_FILTER,
    crate::jwt::FILTER_NAME,
];
/// Transport sockets the proxy implements.
const TRANSPORT_SOCKETS: [&str; 2] = [crate::tls::TLS_SOCKET, crate::tls::RAW_BUFFER_SOCKET];

fn check_transport_socket(socket: &TransportSocket, field: &str) -> Result<(), String> {
    if TRANSPORT_SOCKETS.contains(&socket.name.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "{field}.name {:?} is not a transport socket this proxy implements (it has {TRANSPORT_SOCKETS:?})",
            socket.name
        ))
    }
}

pub(super) fn check_cluster(c: &Cluster) -> Result<(), String> {
    match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t))
            if [
                DiscoveryType::Static,
                DiscoveryType::Eds,
                DiscoveryType::StrictDns,
                DiscoveryType::OriginalDst,
            ]
            .iter()
            .any(|s| *s as i32 == t) => {}
        Some(ClusterDiscoveryType::Type(t)) => {
            return Err(format!(
                "type {} is not supported (STATIC, EDS, STRICT_DNS and ORIGINAL_DST are)",
                DiscoveryType::try_from(t)
                    .map_or_else(|_| t.to_string(), |d| d.as_str_name().to_owned())
            ));
        }
        Some(ClusterDiscoveryType::ClusterType(ref custom)) => {
            return Err(format!(
                "cluster_type {:?} (a custom cluster) is not supported",
                custom.name
            ));
        }
        None => {}
    }
    let supported = [
        LbPolicy::RoundRobin,
        LbPolicy::LeastRequest,
        LbPolicy::Random,
        LbPolicy::RingHash,
        LbPolicy::Maglev,
        LbPolicy::ClusterProvided,
    ];
    if !supported.iter().any(|p| *p as i32 == c.lb_policy) {
        let name = LbPolicy::try_from(c.lb_policy)
            .map_or_else(|_| c.lb_policy.to_string(), |p| p.as_str_name().to_owned());
        return Err(format!("lb_policy {name} is not supported"));
    }
    if let Some(socket) = &c.transport_socket {
        check_transport_socket(socket, "transport_socket")?;
    }
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        if let Some(socket) = &m.transport_socket {
            check_transport_socket(
                socket,
                &format!("transport_socket_matches[{i}].transport_socket"),
            )?;
        }
    }
    Ok(())
}

pub(super) fn check_listener(l: &Listener) -> Result<(), String> {
    if l.api_listener.is_some() {
        return Err("api_listener is for proxyless gRPC clients, not a sidecar".to_owned());
    }
    for (i, f) in l.listener_filters.iter().enumerate() {
        if !LISTENER_FILTERS.contains(&f.name.as_str()) {
            return Err(format!("listener_filters[{i}].name {:?} is not implemented", f.name));
        }
    }
    let chains =
        l.filter_chains.iter().map(Some).chain(std::iter::once(l.default_filter_chain.as_ref()));
    for (i, chain) in chains.enumerate().filter_map(|(i, c)| Some((i, c?))) {
        let at = if i < l.filter_chains.len() {
            format!("filter_chains[{i}]")
        } else {
            "default_filter_chain".to_owned()
        };
        if let Some(socket) = &chain.transport_socket {
            check_transport_socket(socket, &format!("{at}.transport_socket"))?;
            crate::tls::downstream(socket)
                .map_err(|why| format!("{at}.transport_socket: {why}"))?;
        }
        for (j, f) in chain.filters.iter().enumerate() {
            if !NETWORK_FILTERS.contains(&f.name.as_str()) {
                return Err(format!(
                    "{at}.filters[{j}].name {:?} is not implemented (it has {NETWORK_FILTERS:?})",
                    f.name
                ));
            }
            // An RBAC configuration that is not one is refused; one the proxy cannot
            // enforce is taken, and denies everything (`crate::filters`).
            if f.name == crate::authz::NETWORK_FILTER
                && let Some(ConfigType::TypedConfig(any)) = &f.config_type
            {
                crate::authz::decode_network(any)
                    .map_err(|why| format!("{at}.filters[{j}]: {why}"))?;
            }
            if f.name == NETWORK_FILTERS[0] {
                let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                    return Err(format!(
                        "{at}.filters[{j}]: the HTTP connection manager has no typed_config"
                    ));
                };
                let hcm = HttpConnectionManager::decode(any.value.as_slice())
                    .map_err(|e| format!("{at}.filters[{j}].typed_config does not decode: {e}"))?;
                for (k, h) in hcm.http_filters.iter().enumerate() {
                    if !HTTP_FILTERS.contains(&h.name.as_str()) && !h.is_optional {
                        return Err(format!(
                            "{at}.filters[{j}].http_filters[{k}].name {:?} is not implemented (it has {HTTP_FILTERS:?})",
                            h.name
                        ));
                    }
                    if h.name == crate::authz::HTTP_FILTER
                        && let Some(http_filter::ConfigType::TypedConfig(any)) = &h.config_type
                    {
                        crate::authz::decode_http(any)
                            .map_err(|why| format!("{at}.filters[{j}].http_filters[{k}]: {why}"))?;
                    }
                }
                // A token filter the proxy would enforce differently than Envoy is refused.
                crate::jwt::JwtAuthn::check_connection_manager(&hcm)
                    .map_err(|why| format!("{at}.filters[{j}]: {why}"))?;
                if let Some(RouteSpecifier::RouteConfig(routes)) = &hcm.route_specifier {
                    check_routes(routes)
                        .map_err(|why| format!("{at}.filters[{j}].route_config: {why}"))?;
                }
            }
        }
    }
    Ok(())
}

pub(super) fn check_secret(secret: &Secret) -> Result<(), String> {
    if secret.name.is_empty() {
        return Err("it has no name".to_owned());
    }
    crate::tls::check_secret(secret)
}

pub(super) fn check_routes(r: &RouteConfiguration) -> Result<(), String> {
    // What the data path will build from it must build: regexes compile, weights add up.
    crate::routing::RouteTable::compile(r)?;
    for (i, vhost) in r.virtual_hosts.iter().enumerate() {
        // A per-route RBAC would replace the chain's: unread, it could let through what it
        // denies, so it is refused.
        if vhost.typed_per_filter_config.contains_key(crate::authz::HTTP_FILTER) {
            return Err(format!(
                "virtual_hosts[{i}].typed_per_filter_config: per-route RBAC is not implemented"
            ));
        }
        // So would a per-route jwt_authn (a route exempted from token checks).
        if vhost.typed_per_filter_config.contains_key(crate::jwt::FILTER_NAME) {
            return Err(format!(
                "virtual_hosts[{i}].typed_per_filter_config: per-route jwt_authn is not implemented"
            ));
        }
        for (j, route) in vhost.routes.iter().enumerate() {
            let at = format!("virtual_hosts[{i}].routes[{j}]");
            match &route.action {
                Some(Action::Route(_) | Action::Redirect(_) | Action::DirectResponse(_)) => {}
                Some(_) => {
                    return Err(format!(
                        "{at}: only route, redirect and direct_response actions are implemented"
                    ));
                }
                None => return Err(format!("{at} has no action")),
            }
            for name in route.typed_per_filter_config.keys() {
                if !HTTP_FILTERS.contains(&name.as_str())
                    || name == crate::authz::HTTP_FILTER
                    || name == crate::jwt::FILTER_NAME
                {
                    return Err(format!(
                        "{at}.typed_per_filter_config[{name:?}] is for a filter this proxy does not implement"
                    ));
                }
            }
        }
    }
    Ok(())
}

pub(super) fn check_endpoints(e: &ClusterLoadAssignment) -> Result<(), String> {
    for (i, locality) in e.endpoints.iter().enumerate() {
        for (j, lb) in locality.lb_endpoints.iter().enumerate() {
            let address = match &lb.host_identifier {
                Some(HostIdentifier::Endpoint(ep)) => ep.address.as_ref(),
                _ => None,
            };
            if address.and_then(|a| a.address.as_ref()).is_none() {
                return Err(format!("endpoints[{i}].lb_endpoints[{j}] has no endpoint address"));
            }
        }
    }
    Ok(())
}
