//! The configuration compiled for the data path, built once per accepted update and then only
//! read: per bound port the listener ([`listeners`]), a route table per route configuration,
//! and per cluster its upstream and transport ([`cluster`]), DNS clusters resolved in the
//! background ([`dns`]). An update reuses what it does not change: a route configuration or a
//! listener equal to the one in force keeps its compiled form, so an endpoint update rebuilds
//! balancers and nothing else.

mod cluster;
pub mod dns;
pub mod listeners;
mod origination;
mod own_ports;

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address};

pub use cluster::{
    Breakers, ClusterTls, Count, DEFAULT_IDLE_TIMEOUT, Held, InFlightCounts, PoolSettings,
    Transport, Upstream, UpstreamHttp, duration,
};

use crate::balance::{Balancer, Policy, hosts};
use crate::listener::ChainAction;
use crate::routing::RouteTable;
use crate::xds::store::Config;
use dns::DnsCache;
use listeners::CompiledListener;

/// Everything the data path reads, at one configuration version.
pub struct Runtime {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// Route tables by route configuration name (RDS).
    pub routes: HashMap<String, Arc<RouteTable>>,
    /// Where each cluster's connections go (a balancer, the original destination, or DNS targets),
    /// by cluster name.
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// How to reach each cluster, by name.
    pub transports: HashMap<String, Arc<Transport>>,
    /// Listeners by the port they are bound to.
    pub listeners: HashMap<u16, Arc<CompiledListener>>,
    /// The resolutions of DNS clusters, by cluster name.
    pub dns: HashMap<String, Arc<DnsCache>>,
}

impl Runtime {
    /// Compiles a configuration (already checked by the store, so failures here are defects
    /// in what the store lets through, and are reported rather than panicking).
    pub fn build(config: Arc<Config>) -> Result<Self, String> {
        Self::compile(config, None)
    }

    /// Compiles a configuration that replaces `older`: what did not change is taken over
    /// compiled, and so are outlier records, in-flight counts and DNS answers (see
    /// [`Runtime::carry_from`]).
    pub fn update(config: Arc<Config>, older: &Runtime) -> Result<Self, String> {
        let mut runtime = Self::compile(config, Some(older))?;
        runtime.carry_from(older);
        Ok(runtime)
    }

    fn compile(config: Arc<Config>, older: Option<&Runtime>) -> Result<Self, String> {
        let mut routes = HashMap::new();
        for (name, route) in &config.routes {
            let kept = older
                .filter(|o| o.config.routes.get(name) == Some(route))
                .and_then(|o| o.routes.get(name).cloned());
            let table = match kept {
                Some(table) => table,
                None => Arc::new(RouteTable::compile(route)?),
            };
            routes.insert(name.clone(), table);
        }
        let mut listeners = HashMap::new();
        for (name, listener) in &config.listeners {
            let Some(port) = port_of(listener) else { continue };
            // Kept when neither it nor a secret its TLS was built from changed: a rotated
            // certificate recompiles the listeners that present it, and only those.
            let kept = older
                .filter(|o| o.config.listeners.get(name) == Some(listener))
                .and_then(|o| o.listeners.get(&port).map(|l| (o, l)))
                .filter(|(o, l)| {
                    l.secret_names().all(|s| o.config.secrets.get(s) == config.secrets.get(s))
                })
                .map(|(_, l)| l.clone());
            let compiled = kept
                .unwrap_or_else(|| Arc::new(CompiledListener::compile(listener, &config.secrets)));
            listeners.entry(port).or_insert(compiled);
        }
        let mut upstreams = HashMap::new();
        let mut transports = HashMap::new();
        let mut dns = HashMap::new();
        for (name, cluster) in &config.clusters {
            // Left out, with a warning: nothing reaches the sidecar's own ports through it.
            if own_ports::refuses_cluster(name, cluster) {
                continue;
            }
            transports.insert(name.clone(), Arc::new(Transport::of(cluster)));
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
                    Upstream::Balanced(
                        Balancer::new(endpoints, policy)
                            .with_outlier_detection(crate::outlier::OutlierPolicy::of(cluster)),
                    )
                }
                Some(DiscoveryType::StrictDns | DiscoveryType::LogicalDns) => {
                    let targets = dns_targets(cluster);
                    let fresh = DnsCache::new(targets.clone(), cluster);
                    let cache = older
                        .and_then(|o| o.dns.get(name))
                        .filter(|old| old.same_as(&fresh))
                        .cloned()
                        .unwrap_or_else(|| Arc::new(fresh));
                    dns.insert(name.clone(), cache);
                    Upstream::Dns(targets)
                }
                _ => Upstream::Balanced(
                    Balancer::new(
                        cluster.load_assignment.as_ref().map(hosts).unwrap_or_default(),
                        policy,
                    )
                    .with_outlier_detection(crate::outlier::OutlierPolicy::of(cluster)),
                ),
            };
            upstreams.insert(name.clone(), Arc::new(upstream));
        }
        Ok(Self { config, routes, upstreams, transports, listeners, dns })
    }

    /// Takes over the outlier-detection records of endpoints `older` also had, so an update
    /// does not bring an ejected endpoint back early, and the in-flight counts of clusters
    /// it also had, so circuit breakers see what older configurations still have open.
    pub fn carry_from(&mut self, older: &Runtime) {
        for (name, transport) in &mut self.transports {
            if let (Some(new), Some(old)) = (Arc::get_mut(transport), older.transports.get(name)) {
                new.breakers.counts = old.breakers.counts.clone();
            }
        }
        for (name, upstream) in &self.upstreams {
            if let (Upstream::Balanced(new), Some(Upstream::Balanced(old))) =
                (upstream.as_ref(), older.upstreams.get(name).map(|u| u.as_ref()))
            {
                new.carry_from(old);
            }
        }
    }

    /// Starts what this configuration runs in the background (DNS refreshes), on the current
    /// runtime; what an older configuration started and this one kept goes on.
    pub fn start_background(&self) {
        for cache in self.dns.values() {
            cache.start();
        }
    }

    /// The route table an HTTP chain uses.
    pub fn route_table(&self, action: &ChainAction) -> Result<Arc<RouteTable>, String> {
        match action {
            ChainAction::HttpRds { routes, .. } => self
                .routes
                .get(routes)
                .cloned()
                .ok_or_else(|| format!("route configuration {routes:?} has not arrived")),
            ChainAction::HttpInline { routes, .. } => RouteTable::compile(routes).map(Arc::new),
            ChainAction::Tcp { cluster, .. } => {
                Err(format!("chain to {cluster:?} is TCP, not HTTP"))
            }
        }
    }
}

/// The port a listener is bound to, if it has a socket address with a port.
fn port_of(listener: &envoy_types::pb::envoy::config::listener::v3::Listener) -> Option<u16> {
    match listener.address.as_ref()?.address.as_ref()? {
        address::Address::SocketAddress(s) => match s.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(port)) => u16::try_from(port).ok(),
            _ => None,
        },
        _ => None,
    }
}

fn dns_targets(cluster: &Cluster) -> Vec<(String, u16)> {
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

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
    use envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
    };
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};

    use super::*;

    fn socket(ip: &str, port: u32) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.to_owned(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }
    }

    fn config(endpoint: &str, domain: &str) -> Arc<Config> {
        let mut config = Config::default();
        let routes = RouteConfiguration {
            name: "9080".to_owned(),
            virtual_hosts: vec![VirtualHost {
                name: "reviews".to_owned(),
                domains: vec![domain.to_owned()],
                ..Default::default()
            }],
            ..Default::default()
        };
        config.routes.insert("9080".to_owned(), routes);
        let listener = Listener {
            name: "virtualOutbound".to_owned(),
            address: Some(socket("0.0.0.0", 15001)),
            ..Default::default()
        };
        config.listeners.insert(listener.name.clone(), listener);
        let cluster = Cluster {
            name: "outbound|9080||reviews".to_owned(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig::default()),
            ..Default::default()
        };
        config.clusters.insert(cluster.name.clone(), cluster);
        let endpoints = ClusterLoadAssignment {
            cluster_name: "outbound|9080||reviews".to_owned(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                        envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                            address: Some(socket(endpoint, 9080)),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        config.endpoints.insert(endpoints.cluster_name.clone(), endpoints);
        Arc::new(config)
    }

    fn address_of(runtime: &Runtime) -> String {
        match runtime.upstreams["outbound|9080||reviews"].as_ref() {
            Upstream::Balanced(b) => b.hosts()[0].address.to_string(),
            _ => "not balanced".to_owned(),
        }
    }

    #[test]
    fn an_endpoint_update_rebuilds_balancers_and_keeps_routes_and_listeners() {
        let first = Runtime::build(config("10.0.0.1", "reviews")).unwrap();
        assert!(first.listeners.contains_key(&15001));
        let moved = Runtime::update(config("10.0.0.2", "reviews"), &first).unwrap();
        assert_eq!(address_of(&moved), "10.0.0.2:9080");
        assert!(Arc::ptr_eq(&first.routes["9080"], &moved.routes["9080"]), "routes kept");
        assert!(Arc::ptr_eq(&first.listeners[&15001], &moved.listeners[&15001]), "listener kept");

        let rerouted = Runtime::update(config("10.0.0.2", "reviews.default"), &moved).unwrap();
        assert!(!Arc::ptr_eq(&moved.routes["9080"], &rerouted.routes["9080"]), "routes rebuilt");
        assert!(Arc::ptr_eq(&moved.listeners[&15001], &rerouted.listeners[&15001]));
    }

    #[test]
    fn a_rotated_secret_recompiles_the_listeners_that_present_it_and_only_those() {
        use crate::runtime::listeners::ChainTls;
        use crate::tls::testing::*;
        let ca = Ca::new("test");
        let with = |a: &envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret,
                    b: &envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret| {
            let mut config = Config::default();
            for (port, name) in [(8443, "kubernetes://a"), (9443, "kubernetes://b")] {
                let listener =
                    https_listener(port, vec![("*.example.com", gateway_socket(name, false))]);
                config.listeners.insert(listener.name.clone(), listener);
            }
            config.secrets.insert(a.name.clone(), a.clone());
            config.secrets.insert(b.name.clone(), b.clone());
            Arc::new(config)
        };
        let a = certificate("kubernetes://a", &ca.leaf(&["a.example.com"]));
        let b = certificate("kubernetes://b", &ca.leaf(&["b.example.com"]));
        let first = Runtime::build(with(&a, &b)).unwrap();
        let serves = |runtime: &Runtime, port: u16| {
            let connection = crate::listener::Connection {
                destination: ([0, 0, 0, 0], port).into(),
                transport: "tls",
                server_name: Some("www.example.com".to_owned()),
                alpn: Vec::new(),
            };
            matches!(
                runtime.listeners[&port].select(&connection).map(|c| &c.tls),
                Some(ChainTls::Sds(Ok(_)))
            )
        };
        assert!(serves(&first, 8443) && serves(&first, 9443));
        let same = Runtime::update(with(&a, &b), &first).unwrap();
        assert!(Arc::ptr_eq(&first.listeners[&8443], &same.listeners[&8443]), "nothing changed");

        let rotated = certificate("kubernetes://a", &ca.leaf(&["a.example.com"]));
        let after = Runtime::update(with(&rotated, &b), &same).unwrap();
        assert!(!Arc::ptr_eq(&same.listeners[&8443], &after.listeners[&8443]), "recompiled");
        assert!(Arc::ptr_eq(&same.listeners[&9443], &after.listeners[&9443]), "kept");
        assert!(serves(&after, 8443));
    }
}
