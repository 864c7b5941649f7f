//! Which filter chain of a listener takes a connection, by Envoy's rules: the most specific
//! match at each level in turn (destination port, destination address, server name, transport
//! protocol, application protocols), never going back to a less specific level; the default
//! chain when nothing matches. And what a chain does: proxy TCP to a cluster, or serve HTTP
//! with routes (by RDS name or inline).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
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
    /// Server name of the TLS ClientHello (SNI); `None` for plaintext or when none was sent.
    pub server_name: Option<String>,
    /// Protocols the TLS ClientHello offers in ALPN (`istio-peer-exchange`, `h2`); empty for
    /// plaintext.
    pub alpn: Vec<String>,
}

/// What a filter chain does with its connections.
#[derive(Clone, Debug, PartialEq)]
pub enum ChainAction {
    /// Proxy bytes both ways to an endpoint of a cluster (`tcp_proxy`).
    Tcp {
        /// Name of the cluster to connect to (`outbound|9080||reviews.default.svc.cluster.local`,
        /// `PassthroughCluster`).
        cluster: String,
        /// Closes the connection after this long with no bytes either way (`None`: never).
        idle_timeout: Option<Duration>,
    },
    /// Serve HTTP with routes fetched over RDS under this name.
    HttpRds {
        /// Name of the route configuration to use (the pilot names them by port: `"9080"`).
        routes: String,
        /// The upgrades the connection manager tunnels.
        upgrades: Upgrades,
    },
    /// Serve HTTP with routes carried inline (inbound).
    HttpInline {
        /// The route configuration from the HTTP connection manager's `route_config`.
        routes: Box<RouteConfiguration>,
        /// The upgrades the connection manager tunnels.
        upgrades: Upgrades,
    },
}

/// The upgrades an HTTP connection manager tunnels: the types its `upgrade_configs` enable,
/// with Envoy's semantics (none when it lists none; `enabled: false` switches one off),
/// compared without regard to case. `h2c` is never one, whatever the list says: Envoy's codec
/// strips it too, and once switched the app would read the client's own HTTP/2, past every
/// header this proxy sets or removes (a forged `x-forwarded-client-cert`). CONNECT does not
/// depend on the list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upgrades(Arc<[String]>);

impl Upgrades {
    /// The upgrades `hcm` enables.
    pub fn of(hcm: &HttpConnectionManager) -> Self {
        Self::from_types(
            hcm.upgrade_configs
                .iter()
                .filter(|c| c.enabled.as_ref().is_none_or(|enabled| enabled.value))
                .map(|c| c.upgrade_type.as_str()),
        )
    }

    /// These upgrade types (`websocket`, ...), but `h2c`.
    pub fn from_types<'a>(types: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            types
                .into_iter()
                .map(str::to_ascii_lowercase)
                .filter(|t| !t.is_empty() && t != "h2c")
                .collect(),
        )
    }

    /// WebSocket alone, what the pilot enables on every connection manager (as Istio does).
    pub fn websocket() -> Self {
        Self::from_types(["websocket"])
    }

    /// Whether an upgrade to `protocol` (an `Upgrade` header's value) is tunnelled.
    pub fn allows(&self, protocol: &str) -> bool {
        let protocol = protocol.trim();
        self.0.iter().any(|t| t.eq_ignore_ascii_case(protocol))
    }
}

/// A filter chain's match, parsed once: what [`ChainIndex::select`] compares a connection with.
#[derive(Clone, Debug, Default)]
struct ChainMatch {
    /// `destination_port`, if set.
    port: Option<u32>,
    /// `prefix_ranges` as (network, prefix length); ranges that do not parse match nothing.
    prefixes: Vec<(IpAddr, u32)>,
    /// Whether the chain constrains the destination address at all.
    constrains_address: bool,
    server_names: Vec<String>,
    transport: String,
    application_protocols: Vec<String>,
}

impl ChainMatch {
    fn of(m: Option<&FilterChainMatch>) -> Self {
        let Some(m) = m else { return Self::default() };
        Self {
            port: m.destination_port.as_ref().map(|p| p.value),
            prefixes: m
                .prefix_ranges
                .iter()
                .filter_map(|range| {
                    let network: IpAddr = range.address_prefix.parse().ok()?;
                    Some((network, range.prefix_len.as_ref().map_or(0, |l| l.value)))
                })
                .collect(),
            constrains_address: !m.prefix_ranges.is_empty(),
            server_names: m.server_names.clone(),
            transport: m.transport_protocol.clone(),
            application_protocols: m.application_protocols.clone(),
        }
    }

    fn prefix_len(&self, ip: IpAddr) -> Option<u32> {
        if !self.constrains_address {
            return Some(0);
        }
        self.prefixes
            .iter()
            .filter_map(|&(network, len)| {
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

    fn server_name(&self, name: Option<&str>) -> Option<u32> {
        if self.server_names.is_empty() {
            return Some(0);
        }
        let name = name?;
        self.server_names
            .iter()
            .filter_map(|pattern| match pattern.strip_prefix('*') {
                Some(suffix) if name.ends_with(suffix) => {
                    Some(1 + u32::try_from(suffix.len()).unwrap_or(u32::MAX - 2))
                }
                None if pattern == name => Some(u32::MAX),
                _ => None,
            })
            .max()
    }

    fn transport(&self, transport: &str) -> Option<u32> {
        match self.transport.as_str() {
            "" => Some(0),
            t if t == transport => Some(1),
            _ => None,
        }
    }

    fn application_protocol(&self, alpn: &[String]) -> Option<u32> {
        if self.application_protocols.is_empty() {
            Some(0)
        } else if self.application_protocols.iter().any(|p| alpn.contains(p)) {
            Some(1)
        } else {
            None
        }
    }
}

/// A listener's filter chains indexed for choosing, built once per configuration: the first
/// level (destination port) is a map lookup, the others compare criteria parsed in advance.
#[derive(Clone, Debug, Default)]
pub struct ChainIndex {
    chains: Vec<ChainMatch>,
    /// Chains naming each destination port, in listener order.
    by_port: HashMap<u32, Vec<usize>>,
    /// Chains naming no destination port, in listener order.
    any_port: Vec<usize>,
}

impl ChainIndex {
    /// The index of `listener`'s filter chains.
    pub fn compile(listener: &Listener) -> Self {
        let chains: Vec<ChainMatch> = listener
            .filter_chains
            .iter()
            .map(|c| ChainMatch::of(c.filter_chain_match.as_ref()))
            .collect();
        let (mut by_port, mut any_port) = (HashMap::<u32, Vec<usize>>::new(), Vec::new());
        for (i, chain) in chains.iter().enumerate() {
            match chain.port {
                Some(port) => by_port.entry(port).or_default().push(i),
                None => any_port.push(i),
            }
        }
        Self { chains, by_port, any_port }
    }

    /// The position among the listener's filter chains of the one that takes `connection`,
    /// by Envoy's rules: the most specific match at each level in turn (destination port,
    /// destination address, server name, transport protocol, application protocols), never
    /// going back to a less specific level. `None` when no chain matches: the listener's
    /// default chain takes the connection, if it has one.
    pub fn select(&self, connection: &Connection) -> Option<usize> {
        let port = u32::from(connection.destination.port());
        let ip = connection.destination.ip();
        // Narrowing level by level is the same as taking the greatest score tuple, where a
        // level a chain does not match (`None`) ranks below any match: the best tuple holds
        // a `None` exactly when narrowing would have left no candidate. Ties go to the chain
        // listed first. One pass, no allocation per connection.
        let mut best: Option<(usize, [Option<u32>; 4])> = None;
        for &i in self.by_port.get(&port).unwrap_or(&self.any_port) {
            let m = &self.chains[i];
            let score = [
                m.prefix_len(ip),
                m.server_name(connection.server_name.as_deref()),
                m.transport(connection.transport),
                m.application_protocol(&connection.alpn),
            ];
            if best.is_none_or(|(_, top)| score > top) {
                best = Some((i, score));
            }
        }
        best.filter(|(_, score)| score.iter().all(Option::is_some)).map(|(i, _)| i)
    }
}

/// The chain of `listener` that takes `connection` (see [`ChainIndex::select`]).
pub fn select<'a>(listener: &'a Listener, connection: &Connection) -> Option<&'a FilterChain> {
    match ChainIndex::compile(listener).select(connection) {
        Some(i) => listener.filter_chains.get(i),
        None => listener.default_filter_chain.as_ref(),
    }
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
            let upgrades = Upgrades::of(&hcm);
            match hcm.route_specifier {
                Some(RouteSpecifier::Rds(rds)) => {
                    Ok(ChainAction::HttpRds { routes: rds.route_config_name, upgrades })
                }
                Some(RouteSpecifier::RouteConfig(routes)) => {
                    Ok(ChainAction::HttpInline { routes: Box::new(routes), upgrades })
                }
                _ => Err(format!("chain {:?}: HTTP without routes", chain.name)),
            }
        }
        other => Err(format!("chain {:?}: filter {other:?} is not implemented", chain.name)),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::CidrRange;
    use envoy_types::pb::google::protobuf::UInt32Value;

    use super::*;

    fn chain(name: &str, prefix: (&str, u32), transport: &str) -> FilterChain {
        FilterChain {
            name: name.to_owned(),
            filter_chain_match: Some(FilterChainMatch {
                prefix_ranges: vec![CidrRange {
                    address_prefix: prefix.0.to_owned(),
                    prefix_len: Some(UInt32Value { value: prefix.1 }),
                }],
                transport_protocol: transport.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn connection(destination: &str, transport: &'static str) -> Connection {
        Connection {
            destination: destination.parse().unwrap(),
            transport,
            server_name: None,
            alpn: Vec::new(),
        }
    }

    #[test]
    fn a_more_specific_level_wins_and_is_never_given_up_for_a_less_specific_one() {
        let listener = Listener {
            filter_chains: vec![
                chain("wide", ("10.0.0.0", 8), ""),
                chain("narrow-tls", ("10.1.0.0", 16), "tls"),
                chain("narrow-tls-again", ("10.1.0.0", 16), "tls"),
            ],
            ..Default::default()
        };
        let index = ChainIndex::compile(&listener);
        assert_eq!(index.select(&connection("10.1.2.3:80", "tls")), Some(1), "first of a tie");
        assert_eq!(index.select(&connection("10.9.2.3:80", "raw_buffer")), Some(0));
        // The /16 chains match the address best but not the transport: Envoy does not fall
        // back to the /8 chain, the connection goes to the default chain.
        assert_eq!(index.select(&connection("10.1.2.3:80", "raw_buffer")), None);
        assert_eq!(index.select(&connection("192.168.0.1:80", "tls")), None);
    }

    #[test]
    fn only_the_upgrades_the_manager_enables_are_tunnelled_and_never_h2c() {
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::UpgradeConfig;
        use envoy_types::pb::google::protobuf::BoolValue;
        let config = |kind: &str, enabled: Option<bool>| UpgradeConfig {
            upgrade_type: kind.to_owned(),
            enabled: enabled.map(|value| BoolValue { value }),
            ..Default::default()
        };
        let none = Upgrades::of(&HttpConnectionManager::default());
        assert!(!none.allows("websocket"), "no upgrade_configs: no upgrade, as in Envoy");
        let hcm = HttpConnectionManager {
            upgrade_configs: vec![
                config("WebSocket", None),
                config("h2c", Some(true)),
                config("spdy/3.1", Some(false)),
            ],
            ..Default::default()
        };
        let upgrades = Upgrades::of(&hcm);
        assert!(upgrades.allows("websocket") && upgrades.allows("WEBSOCKET"), "any case");
        assert!(!upgrades.allows("h2c"), "h2c never switches protocols");
        assert!(!upgrades.allows("spdy/3.1"), "switched off");
        assert!(!upgrades.allows("websocket, h2c"), "one protocol, as listed");
        assert_eq!(upgrades, Upgrades::websocket());
    }
}
