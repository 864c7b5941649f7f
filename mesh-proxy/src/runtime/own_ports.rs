//! The sidecar's own ports (15000–15090: admin, capture, status, health, Prometheus) are never
//! an app's inbound port, whatever the configuration says. A Service whose `targetPort` names
//! 15000 would otherwise hand the admin API (`/quitquitquit`) to the whole cluster. The pilot
//! never sends such configuration; this is the proxy's own defence against a control plane
//! that does: when the configuration is compiled, an inbound chain matching one of those
//! ports, and an inbound cluster sending to one, are left out with a warning (and the
//! inbound listener refuses connections redirected for one, see `proxy::listen`).

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use mesh_api::ports;
use mesh_api::xds::{BLACKHOLE_CLUSTER, ClusterName, Direction, VIRTUAL_INBOUND_LISTENER};

use crate::listener::ChainAction;

/// Whether `listener` takes the connections coming into the pod.
fn is_inbound(listener: &Listener) -> bool {
    listener.traffic_direction == TrafficDirection::Inbound as i32
        || listener.name == VIRTUAL_INBOUND_LISTENER
}

/// The port of the sidecar's own that `chain` matches, unless it only closes such
/// connections (a chain to the black hole guards a port, it does not open it).
fn own_port(chain: &FilterChain) -> Option<u16> {
    let port = chain.filter_chain_match.as_ref()?.destination_port.as_ref()?.value;
    let port = u16::try_from(port).ok().filter(|p| ports::is_proxy_port(*p))?;
    match crate::listener::action(chain) {
        Ok(ChainAction::Tcp { cluster, .. }) if cluster == BLACKHOLE_CLUSTER => None,
        _ => Some(port),
    }
}

/// `listener` without its chains for the sidecar's own ports when it is the inbound listener
/// and has any (each dropped with a warning); `None` when nothing is dropped.
pub fn without_own_port_chains(listener: &Listener) -> Option<Listener> {
    if !is_inbound(listener) || !listener.filter_chains.iter().any(|c| own_port(c).is_some()) {
        return None;
    }
    let mut kept = listener.clone();
    kept.filter_chains.retain(|chain| {
        let Some(port) = own_port(chain) else { return true };
        tracing::warn!(
            listener = %listener.name,
            chain = %chain.name,
            "inbound filter chain for port {port} dropped: {}",
            WHY
        );
        false
    });
    Some(kept)
}

/// Whether `cluster` (called `name`) is an inbound cluster that would send to a port of the
/// sidecar's own: named for one, or with an endpoint on one. Such a cluster is left out of
/// the configuration in force, with a warning, so nothing reaches those ports through it.
pub fn refuses_cluster(name: &str, cluster: &Cluster) -> bool {
    let Ok(parsed) = name.parse::<ClusterName>() else { return false };
    if parsed.direction != Direction::Inbound {
        return false;
    }
    let endpoint_port = cluster
        .load_assignment
        .as_ref()
        .map(crate::balance::hosts)
        .unwrap_or_default()
        .iter()
        .map(|h| h.address.port())
        .find(|p| ports::is_proxy_port(*p));
    let Some(port) = Some(parsed.port).filter(|p| ports::is_proxy_port(*p)).or(endpoint_port)
    else {
        return false;
    };
    tracing::warn!(cluster = %name, "inbound cluster to port {port} dropped: {}", WHY);
    true
}

/// What the warnings say.
const WHY: &str = "ports 15000-15090 are the sidecar's own (admin, capture, health, metrics), \
never an app's; serve the app on another port and point the Service's targetPort at it";

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
    };
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChainMatch, filter};
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy,
    };
    use envoy_types::pb::google::protobuf::UInt32Value;

    use super::*;

    fn chain(port: u32, cluster: &str) -> FilterChain {
        let proxy = TcpProxy {
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
            ..Default::default()
        };
        FilterChain {
            name: format!("{cluster}@{port}"),
            filter_chain_match: Some(FilterChainMatch {
                destination_port: Some(UInt32Value { value: port }),
                ..Default::default()
            }),
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(envoy_types::util::pack_any(
                    proxy,
                ))),
            }],
            ..Default::default()
        }
    }

    fn inbound(chains: Vec<FilterChain>) -> Listener {
        Listener {
            name: VIRTUAL_INBOUND_LISTENER.to_owned(),
            traffic_direction: TrafficDirection::Inbound as i32,
            filter_chains: chains,
            ..Default::default()
        }
    }

    fn names(listener: &Listener) -> Vec<&str> {
        listener.filter_chains.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn inbound_chains_for_the_sidecars_ports_are_dropped() {
        let listener = inbound(vec![
            chain(8080, "inbound|8080||"),
            chain(15000, "inbound|15000||"),
            chain(15021, "inbound|15021||"),
            chain(15090, "inbound|15090||"),
            chain(15006, BLACKHOLE_CLUSTER),
            chain(15091, "inbound|15091||"),
        ]);
        let kept = without_own_port_chains(&listener).expect("chains to drop");
        assert_eq!(
            names(&kept),
            ["inbound|8080||@8080", "BlackHoleCluster@15006", "inbound|15091||@15091"]
        );
        // Nothing to drop: the listener is kept as it is.
        assert!(without_own_port_chains(&kept).is_none());
        // Outbound, the same ports are other pods' and stay reachable.
        let mut outbound = listener.clone();
        outbound.name = "virtualOutbound".to_owned();
        outbound.traffic_direction = TrafficDirection::Outbound as i32;
        assert!(without_own_port_chains(&outbound).is_none());
    }

    fn static_cluster(address: &str, port: u32) -> Cluster {
        let endpoint = Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: address.to_owned(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        Cluster {
            load_assignment: Some(ClusterLoadAssignment {
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn inbound_clusters_to_the_sidecars_ports_are_refused() {
        let original_dst = Cluster::default();
        assert!(refuses_cluster("inbound|15000||", &original_dst));
        assert!(refuses_cluster("inbound|15021||", &static_cluster("127.0.0.1", 15021)));
        // Named for the app's port, sending to the admin port.
        assert!(refuses_cluster("inbound|8080||", &static_cluster("127.0.0.1", 15000)));
        assert!(!refuses_cluster("inbound|8080||", &static_cluster("127.0.0.1", 8080)));
        assert!(!refuses_cluster("inbound|8080||", &original_dst));
        // Other pods' ports, and clusters that are not inbound, are not the sidecar's.
        assert!(!refuses_cluster(
            "outbound|15090||prometheus.demo.svc.cluster.local",
            &static_cluster("10.0.0.5", 15090)
        ));
        assert!(!refuses_cluster("InboundPassthroughCluster", &original_dst));
    }
}
