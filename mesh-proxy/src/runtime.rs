//! The configuration compiled for the data path: a route table per route configuration and an
//! upstream (policy and endpoints) per cluster, built once per accepted update and then only
//! read. What the sockets consult for every connection and request.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};

use crate::balance::{Balancer, Policy, hosts};
use crate::listener::ChainAction;
use crate::routing::RouteTable;
use crate::xds::store::Config;

/// Where a cluster's connections go.
pub enum Upstream {
    /// Endpoints known to the proxy, picked by a policy.
    Balanced(Balancer),
    /// The address the client originally asked for (passthrough clusters).
    OriginalDestination,
    /// Host names the proxy resolves itself (DNS clusters), with their ports.
    Dns(Vec<(String, u16)>),
}

/// Everything the data path reads, at one configuration version.
pub struct Runtime {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// Route tables by route configuration name (RDS).
    pub routes: HashMap<String, Arc<RouteTable>>,
    /// Upstreams by cluster name.
    pub upstreams: HashMap<String, Arc<Upstream>>,
}

impl Runtime {
    /// Compiles a configuration (already checked by the store, so failures here are defects
    /// in what the store lets through, and are reported rather than panicking).
    pub fn build(config: Arc<Config>) -> Result<Self, String> {
        let mut routes = HashMap::new();
        for (name, route) in &config.routes {
            routes.insert(name.clone(), Arc::new(RouteTable::compile(route)?));
        }
        let mut upstreams = HashMap::new();
        for (name, cluster) in &config.clusters {
            let kind = match cluster.cluster_discovery_type {
                Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).ok(),
                _ => None,
            };
            let policy = Policy::of(cluster.lb_policy).unwrap_or(Policy::RoundRobin);
            let upstream = match kind {
                Some(DiscoveryType::OriginalDst) => Upstream::OriginalDestination,
                Some(DiscoveryType::Eds) => {
                    let service = cluster
                        .eds_cluster_config
                        .as_ref()
                        .map(|e| e.service_name.clone())
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| name.clone());
                    let endpoints = config.endpoints.get(&service).map(hosts).unwrap_or_default();
                    Upstream::Balanced(Balancer::new(endpoints, policy))
                }
                Some(DiscoveryType::StrictDns | DiscoveryType::LogicalDns) => {
                    Upstream::Dns(dns_targets(cluster))
                }
                _ => Upstream::Balanced(Balancer::new(
                    cluster.load_assignment.as_ref().map(hosts).unwrap_or_default(),
                    policy,
                )),
            };
            upstreams.insert(name.clone(), Arc::new(upstream));
        }
        Ok(Self { config, routes, upstreams })
    }

    /// The route table an HTTP chain uses.
    pub fn route_table(&self, action: &ChainAction) -> Result<Arc<RouteTable>, String> {
        match action {
            ChainAction::HttpRds { routes } => self
                .routes
                .get(routes)
                .cloned()
                .ok_or_else(|| format!("route configuration {routes:?} has not arrived")),
            ChainAction::HttpInline { routes } => RouteTable::compile(routes).map(Arc::new),
            ChainAction::Tcp { cluster } => Err(format!("chain to {cluster:?} is TCP, not HTTP")),
        }
    }
}

fn dns_targets(
    cluster: &envoy_types::pb::envoy::config::cluster::v3::Cluster,
) -> Vec<(String, u16)> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    cluster
        .load_assignment
        .iter()
        .flat_map(|a| &a.endpoints)
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|lb| match &lb.host_identifier {
            Some(HostIdentifier::Endpoint(e)) => match e.address.as_ref()?.address.as_ref()? {
                address::Address::SocketAddress(s) => match s.port_specifier {
                    Some(socket_address::PortSpecifier::PortValue(p)) => {
                        Some((s.address.clone(), u16::try_from(p).ok()?))
                    }
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect()
}
