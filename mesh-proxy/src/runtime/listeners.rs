//! Listeners compiled for the data path: per bound port, the filter-chain index and each
//! chain's action decoded once (TCP proxy to a cluster, or HTTP with its routes, inline route
//! tables compiled) with how it secures its connections (mesh mTLS, or TLS with the pilot's
//! SDS secrets built into a rustls configuration), so a new connection only looks things up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

use crate::listener::{self, ChainAction, ChainIndex, Upgrades};
use crate::routing::RouteTable;
use crate::tls::DownstreamTls;

/// What a filter chain does with its connections, ready to use.
#[derive(Clone)]
pub enum ChainPlan {
    /// Proxy bytes to `cluster`, closing after `idle_timeout` without bytes (`None`: never).
    Tcp {
        /// The cluster connections go to.
        cluster: String,
        /// How long a connection may stay silent both ways.
        idle_timeout: Option<Duration>,
    },
    /// Serve HTTP with the routes of this RDS name, looked up per request so route updates
    /// reach open connections, tunnelling these upgrades.
    HttpRds(String, Upgrades),
    /// Serve HTTP with routes carried in the listener, compiled with it, tunnelling these
    /// upgrades.
    HttpInline(Arc<RouteTable>, Upgrades),
}

impl std::fmt::Debug for ChainPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainPlan::Tcp { cluster, idle_timeout } => f
                .debug_struct("Tcp")
                .field("cluster", cluster)
                .field("idle_timeout", idle_timeout)
                .finish(),
            ChainPlan::HttpRds(name, upgrades) => {
                f.debug_tuple("HttpRds").field(name).field(upgrades).finish()
            }
            ChainPlan::HttpInline(_, upgrades) => {
                f.debug_tuple("HttpInline").field(&"..").field(upgrades).finish()
            }
        }
    }
}

/// How a chain secures the connections it takes.
#[derive(Clone)]
pub enum ChainTls {
    /// Not at all: bytes as they come (plaintext, or TLS passed through untouched, routed by
    /// its SNI: a gateway's `PASSTHROUGH`).
    None,
    /// Mesh mTLS terminated with the workload certificate (a sidecar's inbound mTLS chains).
    Mesh,
    /// TLS terminated with the chain's own certificates from the pilot's SDS secrets (a
    /// gateway's `SIMPLE` and `MUTUAL` servers); the error says why its handshakes are
    /// refused (a secret not arrived, or one that does not fit).
    Sds(Result<Arc<rustls::ServerConfig>, String>),
}

impl std::fmt::Debug for ChainTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainTls::None => f.write_str("None"),
            ChainTls::Mesh => f.write_str("Mesh"),
            ChainTls::Sds(Ok(_)) => f.write_str("Sds(Ok(..))"),
            ChainTls::Sds(Err(why)) => f.debug_tuple("Sds").field(&Err::<(), _>(why)).finish(),
        }
    }
}

/// A filter chain ready for the data path: what it does, and how it secures its connections.
#[derive(Debug)]
pub struct CompiledChain {
    /// What the chain does; the error says why its connections must be closed (a filter
    /// the proxy does not implement, routes that do not compile).
    pub plan: Result<ChainPlan, String>,
    /// How the chain secures its connections (its transport socket).
    pub tls: ChainTls,
    /// What its filters check first: network RBAC, and its connection manager's path
    /// normalization and HTTP RBAC.
    pub filters: Arc<crate::filters::ChainFilters>,
    /// SDS names of the secrets its TLS was built from (none for mesh mTLS or plaintext).
    secrets: Vec<String>,
}

impl CompiledChain {
    fn of(chain: &FilterChain, secrets: &BTreeMap<String, Secret>) -> Self {
        let plan = listener::action(chain).and_then(|action| match action {
            ChainAction::Tcp { cluster, idle_timeout } => {
                Ok(ChainPlan::Tcp { cluster, idle_timeout })
            }
            ChainAction::HttpRds { routes, upgrades } => Ok(ChainPlan::HttpRds(routes, upgrades)),
            ChainAction::HttpInline { routes, upgrades } => RouteTable::compile(&routes)
                .map(|table| ChainPlan::HttpInline(Arc::new(table), upgrades)),
        });
        let (tls, names) = match chain.transport_socket.as_ref().map(crate::tls::downstream) {
            None | Some(Ok(None)) => (ChainTls::None, Vec::new()),
            Some(Ok(Some(DownstreamTls::Mesh))) => (ChainTls::Mesh, Vec::new()),
            Some(Ok(Some(DownstreamTls::Sds(spec)))) => (
                ChainTls::Sds(crate::tls::server_config(&spec, secrets)),
                spec.secret_names().cloned().collect(),
            ),
            // The store refuses such a listener; one built by hand fails closed.
            Some(Err(why)) => (ChainTls::Sds(Err(why)), Vec::new()),
        };
        let filters = Arc::new(crate::filters::ChainFilters::of(chain));
        Self { plan, tls, filters, secrets: names }
    }
}

/// Whether and for how long a listener's connections are inspected for a TLS ClientHello
/// (Envoy's `tls_inspector`) before a chain is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inspector {
    /// How long the inspection may wait for the client (`listener_filters_timeout`, 15 s by
    /// default; `None`: as long as the client takes).
    pub timeout: Option<Duration>,
    /// Whether a client silent that long is taken as plaintext rather than closed
    /// (`continue_on_listener_filters_timeout`).
    pub continue_on_timeout: bool,
}

/// Envoy's `listener_filters_timeout` when the listener sets none.
pub const LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

impl Inspector {
    /// The TLS inspection of `listener`: when it lists the `tls_inspector`, or when a chain
    /// matches on what only the inspector can tell (server names, the `tls` transport, ALPN),
    /// where Envoy adds the inspector itself.
    pub fn of(listener: &Listener) -> Option<Self> {
        let listed = listener
            .listener_filters
            .iter()
            .any(|f| f.name == "envoy.filters.listener.tls_inspector");
        let needed =
            listener.filter_chains.iter().filter_map(|c| c.filter_chain_match.as_ref()).any(|m| {
                m.transport_protocol == "tls"
                    || (m.transport_protocol.is_empty()
                        && (!m.server_names.is_empty() || !m.application_protocols.is_empty()))
            });
        (listed || needed).then(|| Inspector {
            timeout: match &listener.listener_filters_timeout {
                None => Some(LISTENER_FILTERS_TIMEOUT),
                Some(d) => crate::runtime::duration(d).filter(|d| !d.is_zero()),
            },
            continue_on_timeout: listener.continue_on_listener_filters_timeout,
        })
    }
}

/// A listener compiled: which chain takes a connection, and what each chain does.
#[derive(Debug)]
pub struct CompiledListener {
    /// The listener's name (`0.0.0.0_8443`), which its stats carry.
    pub name: String,
    index: ChainIndex,
    chains: Vec<CompiledChain>,
    default: Option<CompiledChain>,
    /// The TCP cluster (and idle timeout) of the default chain (the passthrough), where
    /// connections on an HTTP chain go when they turn out not to be HTTP.
    pub fallback: Option<(String, Option<Duration>)>,
    /// Whether a gateway inspects its connections for a ClientHello before choosing a chain.
    pub inspector: Option<Inspector>,
    /// The listener's own access loggers: for connections it closes before any chain takes
    /// them (Istio's, filtered to `NR`).
    pub access_log: crate::telemetry::log_filter::LogPolicy,
}

impl CompiledListener {
    /// Compiles `listener`: its chain index and every chain, the default one included, the
    /// TLS of each with the `secrets` it names. Never fails: a chain that does not compile
    /// closes its connections.
    pub fn compile(listener: &Listener, secrets: &BTreeMap<String, Secret>) -> Self {
        // An inbound chain for a port of the sidecar's own is dropped, with a warning.
        let trimmed = super::own_ports::without_own_port_chains(listener);
        let listener = trimmed.as_ref().unwrap_or(listener);
        let default = listener.default_filter_chain.as_ref().map(|c| CompiledChain::of(c, secrets));
        let fallback = default.as_ref().and_then(|c| match &c.plan {
            Ok(ChainPlan::Tcp { cluster, idle_timeout }) => Some((cluster.clone(), *idle_timeout)),
            _ => None,
        });
        Self {
            name: listener.name.clone(),
            index: ChainIndex::compile(listener),
            chains: listener.filter_chains.iter().map(|c| CompiledChain::of(c, secrets)).collect(),
            default,
            fallback,
            inspector: Inspector::of(listener),
            access_log: crate::telemetry::log_filter::LogPolicy::of(&listener.access_log),
        }
    }

    /// What the default chain's filters check (its `tcp_proxy`'s access loggers), for the
    /// connections that go by [`CompiledListener::fallback`].
    pub fn fallback_filters(&self) -> Arc<crate::filters::ChainFilters> {
        self.default.as_ref().map(|c| c.filters.clone()).unwrap_or_default()
    }

    /// Whether the listener's own loggers log a connection it closes with `flags`.
    pub fn logs_refused(&self, flags: crate::telemetry::ResponseFlags) -> bool {
        let ended = crate::telemetry::log_filter::Ended { flags, ..Default::default() };
        self.access_log.logs(&ended)
    }

    /// The chain that takes `connection` (`None`: no chain matches and there is no default).
    pub fn select(&self, connection: &listener::Connection) -> Option<&CompiledChain> {
        match self.index.select(connection) {
            Some(i) => self.chains.get(i),
            None => self.default.as_ref(),
        }
    }

    /// Every chain, the default one last.
    pub fn chains(&self) -> impl Iterator<Item = &CompiledChain> {
        self.chains.iter().chain(self.default.as_ref())
    }

    /// SDS names of the secrets its chains' TLS was built from: when one of them changes,
    /// the listener is compiled again.
    pub fn secret_names(&self) -> impl Iterator<Item = &String> {
        self.chains.iter().chain(self.default.as_ref()).flat_map(|c| &c.secrets)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChainMatch, filter};
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy,
    };
    use envoy_types::pb::google::protobuf::{Any, UInt32Value};
    use prost::Message as _;

    use super::*;

    fn tcp_chain(name: &str, port: Option<u32>, cluster: &str) -> FilterChain {
        let proxy = TcpProxy {
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
            ..Default::default()
        };
        FilterChain {
            name: name.to_owned(),
            filter_chain_match: port.map(|p| FilterChainMatch {
                destination_port: Some(UInt32Value { value: p }),
                ..Default::default()
            }),
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(Any {
                    type_url:
                        "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
                            .to_owned(),
                    value: proxy.encode_to_vec(),
                })),
            }],
            ..Default::default()
        }
    }

    fn connection(destination: &str) -> listener::Connection {
        listener::Connection {
            destination: destination.parse().unwrap(),
            transport: "raw_buffer",
            server_name: None,
            alpn: Vec::new(),
        }
    }

    fn cluster_of(chain: Option<&CompiledChain>) -> String {
        match chain.map(|c| c.plan.clone()) {
            Some(Ok(ChainPlan::Tcp { cluster, .. })) => cluster,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn chains_are_chosen_by_port_then_fall_back_to_the_default() {
        let mut broken = tcp_chain("broken", Some(9999), "x");
        broken.filters[0].name = "envoy.filters.network.redis_proxy".to_owned();
        let listener = Listener {
            filter_chains: vec![
                tcp_chain("db", Some(5432), "outbound|5432||db"),
                tcp_chain("any", None, "outbound|0||any"),
                broken,
            ],
            default_filter_chain: Some(tcp_chain("passthrough", None, "PassthroughCluster")),
            ..Default::default()
        };
        let compiled = CompiledListener::compile(&listener, &BTreeMap::new());
        assert_eq!(cluster_of(compiled.select(&connection("10.0.0.1:5432"))), "outbound|5432||db");
        assert_eq!(cluster_of(compiled.select(&connection("10.0.0.1:80"))), "outbound|0||any");
        assert_eq!(
            compiled.fallback,
            Some(("PassthroughCluster".to_owned(), Some(listener::DEFAULT_TCP_IDLE_TIMEOUT)))
        );
        // A chain the proxy cannot run is compiled to its reason, for each connection it takes.
        let why = compiled.select(&connection("10.0.0.1:9999")).unwrap().plan.clone().unwrap_err();
        assert!(why.contains("redis_proxy"), "{why}");

        // Its own loggers, as Istio writes them, log only the connections no chain takes.
        assert!(!compiled.logs_refused(crate::telemetry::ResponseFlags::NO_ROUTE_FOUND));
        let nr = envoy_types::pb::envoy::config::accesslog::v3::AccessLogFilter {
            filter_specifier: Some(
                envoy_types::pb::envoy::config::accesslog::v3::access_log_filter::FilterSpecifier::ResponseFlagFilter(
                    envoy_types::pb::envoy::config::accesslog::v3::ResponseFlagFilter {
                        flags: vec!["NR".to_owned()],
                    },
                ),
            ),
        };
        let logging = Listener {
            access_log: vec![envoy_types::pb::envoy::config::accesslog::v3::AccessLog {
                name: "envoy.access_loggers.file".to_owned(),
                filter: Some(nr),
                config_type: None,
            }],
            ..listener.clone()
        };
        let logging = CompiledListener::compile(&logging, &BTreeMap::new());
        assert!(logging.logs_refused(crate::telemetry::ResponseFlags::NO_ROUTE_FOUND));
        assert!(
            !logging.logs_refused(crate::telemetry::ResponseFlags::UPSTREAM_CONNECTION_FAILURE)
        );

        let no_default = Listener {
            filter_chains: vec![tcp_chain("db", Some(5432), "db")],
            ..Default::default()
        };
        assert!(
            CompiledListener::compile(&no_default, &BTreeMap::new())
                .select(&connection("10.0.0.1:80"))
                .is_none()
        );
    }
}
