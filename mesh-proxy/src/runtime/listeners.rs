//! Listeners compiled for the data path: per bound port, the filter-chain index and each
//! chain's action decoded once (TCP proxy to a cluster, or HTTP with its routes, inline route
//! tables compiled), so a new connection only looks things up.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};

use crate::listener::{self, ChainAction, ChainIndex};
use crate::routing::RouteTable;

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
    /// reach open connections.
    HttpRds(String),
    /// Serve HTTP with routes carried in the listener, compiled with it.
    HttpInline(Arc<RouteTable>),
}

impl std::fmt::Debug for ChainPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainPlan::Tcp { cluster, idle_timeout } => f
                .debug_struct("Tcp")
                .field("cluster", cluster)
                .field("idle_timeout", idle_timeout)
                .finish(),
            ChainPlan::HttpRds(name) => f.debug_tuple("HttpRds").field(name).finish(),
            ChainPlan::HttpInline(_) => f.write_str("HttpInline(..)"),
        }
    }
}

/// A filter chain ready for the data path: what it does, and whether it terminates mesh mTLS.
#[derive(Debug)]
pub struct CompiledChain {
    /// What the chain does; the error says why its connections must be closed (a filter
    /// the proxy does not implement, routes that do not compile).
    pub plan: Result<ChainPlan, String>,
    /// Whether the chain terminates mesh mTLS.
    pub terminate: bool,
}

impl CompiledChain {
    fn of(chain: &FilterChain) -> Self {
        let plan = listener::action(chain).and_then(|action| match action {
            ChainAction::Tcp { cluster, idle_timeout } => {
                Ok(ChainPlan::Tcp { cluster, idle_timeout })
            }
            ChainAction::HttpRds { routes } => Ok(ChainPlan::HttpRds(routes)),
            ChainAction::HttpInline { routes } => {
                RouteTable::compile(&routes).map(|table| ChainPlan::HttpInline(Arc::new(table)))
            }
        });
        Self { plan, terminate: chain.transport_socket.is_some() }
    }
}

/// A listener compiled: which chain takes a connection, and what each chain does.
#[derive(Debug)]
pub struct CompiledListener {
    index: ChainIndex,
    chains: Vec<CompiledChain>,
    default: Option<CompiledChain>,
    /// The TCP cluster (and idle timeout) of the default chain (the passthrough), where
    /// connections on an HTTP chain go when they turn out not to be HTTP.
    pub fallback: Option<(String, Option<Duration>)>,
}

impl CompiledListener {
    /// Compiles `listener`: its chain index and every chain, the default one included. Never fails:
    /// a chain that does not compile closes its connections.
    pub fn compile(listener: &Listener) -> Self {
        let default = listener.default_filter_chain.as_ref().map(CompiledChain::of);
        let fallback = default.as_ref().and_then(|c| match &c.plan {
            Ok(ChainPlan::Tcp { cluster, idle_timeout }) => Some((cluster.clone(), *idle_timeout)),
            _ => None,
        });
        Self {
            index: ChainIndex::compile(listener),
            chains: listener.filter_chains.iter().map(CompiledChain::of).collect(),
            default,
            fallback,
        }
    }

    /// The chain that takes `connection` (`None`: no chain matches and there is no default).
    pub fn select(&self, connection: &listener::Connection) -> Option<&CompiledChain> {
        match self.index.select(connection) {
            Some(i) => self.chains.get(i),
            None => self.default.as_ref(),
        }
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
        let compiled = CompiledListener::compile(&listener);
        assert_eq!(cluster_of(compiled.select(&connection("10.0.0.1:5432"))), "outbound|5432||db");
        assert_eq!(cluster_of(compiled.select(&connection("10.0.0.1:80"))), "outbound|0||any");
        assert_eq!(
            compiled.fallback,
            Some(("PassthroughCluster".to_owned(), Some(listener::DEFAULT_TCP_IDLE_TIMEOUT)))
        );
        // A chain the proxy cannot run is compiled to its reason, for each connection it takes.
        let why = compiled.select(&connection("10.0.0.1:9999")).unwrap().plan.clone().unwrap_err();
        assert!(why.contains("redis_proxy"), "{why}");

        let no_default = Listener {
            filter_chains: vec![tcp_chain("db", Some(5432), "db")],
            ..Default::default()
        };
        assert!(
            CompiledListener::compile(&no_default).select(&connection("10.0.0.1:80")).is_none()
        );
    }
}
