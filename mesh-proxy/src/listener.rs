//! Which filter chain of a listener takes a connection, by Envoy's rules: the most specific
//! match at each level in turn (destination port, destination address, server name, transport
//! protocol, application protocols), never going back to a less specific level; the default
//! chain when nothing matches. And what a chain does: proxy TCP to a cluster, or serve HTTP
//! with routes (by RDS name or inline).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use prost::Message;

/// What is known of a connection when its chain is chosen.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Where the client meant to go (the original destination).
    pub destination: SocketAddr,
    /// `tls` or `raw_buffer`, as the TLS inspector saw the first bytes.
    pub transport: &'static str,
    /// SNI, for TLS.
    pub server_name: Option<String>,
    /// ALPN offered, for TLS.
    pub alpn: Vec<String>,
}

/// What a filter chain does with its connections.
#[derive(Clone, Debug, PartialEq)]
pub enum ChainAction {
    /// Proxy bytes to a cluster.
    Tcp {
        /// The cluster.
        cluster: String,
        /// Closes the connection after this long with no bytes either way (`None`: never).
        idle_timeout: Option<Duration>,
    },
    /// Serve HTTP with routes fetched over RDS under this name.
    HttpRds {
        /// The route configuration's name.
        routes: String,
    },
    /// Serve HTTP with routes carried inline (inbound).
    HttpInline {
        /// The routes.
        routes: Box<RouteConfiguration>,
    },
}

fn prefix_len(m: &FilterChainMatch, ip: IpAddr) -> Option<u32> {
    if m.prefix_ranges.is_empty() {
        return Some(0);
    }
    m.prefix_ranges
        .iter()
        .filter_map(|range| {
            let network: IpAddr = range.address_prefix.parse().ok()?;
            let len = range.prefix_len.as_ref().map_or(0, |l| l.value);
            let within = match (network, ip) {
                (IpAddr::V4(n), IpAddr::V4(a)) => {
                    let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
                    u32::from(n) & mask == u32::from(a) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(a)) => {
                    let mask = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
                    u128::from(n) & mask == u128::from(a) & mask
                }
                _ => false,
            };
            within.then_some(len + 1)
        })
        .max()
}

/// Keeps the candidates with the best score at one level (`None`: the chain does not match
/// at this level at all). Chains that do not constrain a level score lowest but still match.
fn narrow(
    candidates: Vec<&FilterChain>,
    score: impl Fn(&FilterChainMatch) -> Option<u32>,
) -> Vec<&FilterChain> {
    let scored: Vec<(u32, &FilterChain)> = candidates
        .into_iter()
        .filter_map(|c| {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            score(&m).map(|s| (s, c))
        })
        .collect();
    let best = scored.iter().map(|(s, _)| *s).max();
    scored.into_iter().filter(|(s, _)| Some(*s) == best).map(|(_, c)| c).collect()
}

/// The chain of `listener` that takes `connection`.
pub fn select<'a>(listener: &'a Listener, connection: &Connection) -> Option<&'a FilterChain> {
    let port = u32::from(connection.destination.port());
    let mut candidates: Vec<&FilterChain> = listener.filter_chains.iter().collect();
    candidates = narrow(candidates, |m| match m.destination_port.as_ref().map(|p| p.value) {
        None => Some(0),
        Some(p) if p == port => Some(1),
        Some(_) => None,
    });
    candidates = narrow(candidates, |m| prefix_len(m, connection.destination.ip()));
    candidates = narrow(candidates, |m| {
        if m.server_names.is_empty() {
            return Some(0);
        }
        let name = connection.server_name.as_deref()?;
        m.server_names
            .iter()
            .filter_map(|pattern| match pattern.strip_prefix('*') {
                Some(suffix) if name.ends_with(suffix) => Some(1 + suffix.len() as u32),
                None if pattern == name => Some(u32::MAX),
                _ => None,
            })
            .max()
    });
    candidates = narrow(candidates, |m| match m.transport_protocol.as_str() {
        "" => Some(0),
        t if t == connection.transport => Some(1),
        _ => None,
    });
    candidates = narrow(candidates, |m| {
        if m.application_protocols.is_empty() {
            Some(0)
        } else if m.application_protocols.iter().any(|p| connection.alpn.contains(p)) {
            Some(1)
        } else {
            None
        }
    });
    candidates.into_iter().next().or(listener.default_filter_chain.as_ref())
}

/// Envoy's TCP proxy idle timeout when the filter sets none.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a chain does, from its (last) network filter.
pub fn action(chain: &FilterChain) -> Result<ChainAction, String> {
    let filter =
        chain.filters.last().ok_or_else(|| format!("chain {:?} has no filters", chain.name))?;
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        return Err(format!(
            "chain {:?}: filter {:?} has no typed_config",
            chain.name, filter.name
        ));
    };
    match filter.name.as_str() {
        "envoy.filters.network.tcp_proxy" => {
            let proxy = TcpProxy::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
            match proxy.cluster_specifier {
                Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)) => {
                    // Envoy's default is an hour; zero turns it off.
                    let idle_timeout = match &proxy.idle_timeout {
                        None => Some(DEFAULT_TCP_IDLE_TIMEOUT),
                        Some(d) => crate::runtime::duration(d).filter(|d| !d.is_zero()),
                    };
                    Ok(ChainAction::Tcp { cluster, idle_timeout })
                }
                _ => Err(format!("chain {:?}: tcp_proxy without a single cluster", chain.name)),
            }
        }
        "envoy.filters.network.http_connection_manager" => {
            let hcm =
                HttpConnectionManager::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
            match hcm.route_specifier {
                Some(RouteSpecifier::Rds(rds)) => {
                    Ok(ChainAction::HttpRds { routes: rds.route_config_name })
                }
                Some(RouteSpecifier::RouteConfig(routes)) => {
                    Ok(ChainAction::HttpInline { routes: Box::new(routes) })
                }
                _ => Err(format!("chain {:?}: HTTP without routes", chain.name)),
            }
        }
        other => Err(format!("chain {:?}: filter {other:?} is not implemented", chain.name)),
    }
}
