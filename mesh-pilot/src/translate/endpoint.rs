//! EDS: the endpoints of each outbound cluster, filtered by subset labels, with locality,
//! weight, and metadata saying whether the endpoint takes mTLS and which identity it has.

use envoy_types::pb::envoy::config::core::v3::{
    Address, Locality, Metadata, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::{StringValue, Struct, UInt32Value, Value, value::Kind};
use mesh_api::xds::{ClusterName, mtls};

use crate::model::{Endpoint, Proxy, Snapshot};

/// One assignment per outbound cluster (the same names CDS gives).
pub fn load_assignments(snapshot: &Snapshot, proxy: &Proxy) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    for service in
        snapshot.services.values().filter(|s| s.resolution == crate::model::Resolution::Endpoints)
    {
        let rule = snapshot.destination_rule(&service.hostname, &proxy.namespace);
        for port in &service.ports {
            let endpoints = snapshot
                .endpoints
                .get(&(service.hostname.clone(), port.port))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let name = ClusterName::outbound(port.port, None, &service.hostname).to_string();
            out.push(assignment(&name, endpoints.iter(), snapshot));
            for subset in rule.map(|r| r.spec.subsets.as_slice()).unwrap_or_default() {
                let name = ClusterName::outbound(port.port, Some(&subset.name), &service.hostname)
                    .to_string();
                let selected = endpoints
                    .iter()
                    .filter(|e| subset.labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)));
                out.push(assignment(&name, selected, snapshot));
            }
        }
    }
    out.sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    out
}

fn assignment<'a>(
    name: &str,
    endpoints: impl Iterator<Item = &'a Endpoint>,
    snapshot: &Snapshot,
) -> ClusterLoadAssignment {
    let mut by_locality: std::collections::BTreeMap<&str, Vec<LbEndpoint>> =
        std::collections::BTreeMap::new();
    for e in endpoints {
        by_locality.entry(e.locality.as_str()).or_default().push(lb_endpoint(e, snapshot));
    }
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: by_locality
            .into_iter()
            .map(|(locality, lb_endpoints)| {
                let mut parts = locality.splitn(3, '/');
                // gRPC ignores localities without a weight; Envoy only reads it with
                // locality-weighted balancing. The sum of the endpoints' weights serves both.
                let weight: u32 = lb_endpoints
                    .iter()
                    .map(|e| e.load_balancing_weight.as_ref().map_or(1, |w| w.value))
                    .fold(0u32, u32::saturating_add);
                LocalityLbEndpoints {
                    load_balancing_weight: Some(UInt32Value { value: weight.max(1) }),
                    locality: Some(Locality {
                        region: parts.next().unwrap_or_default().to_owned(),
                        zone: parts.next().unwrap_or_default().to_owned(),
                        sub_zone: parts.next().unwrap_or_default().to_owned(),
                    }),
                    lb_endpoints,
                    ..LocalityLbEndpoints::default()
                }
            })
            .collect(),
        ..ClusterLoadAssignment::default()
    }
}

fn string(s: impl Into<String>) -> Value {
    Value { kind: Some(Kind::StringValue(s.into())) }
}

fn lb_endpoint(e: &Endpoint, snapshot: &Snapshot) -> LbEndpoint {
    // mTLS to a sidecar, unless its PeerAuthentication refuses mTLS on that port (DISABLE):
    // then the client sends plaintext, which the server takes.
    let mtls =
        e.sidecar && super::peer_auth::mode(snapshot, &e.namespace, &e.labels, Some(e.port)).mtls();
    let tls_mode = if mtls { mtls::TLS_MODE_ISTIO } else { "disabled" };
    // Every map here holds one entry: protobuf maps are HashMaps, and two entries would encode
    // in a different order each time, making an unchanged endpoint look changed.
    // Envoy picks the cluster's transport socket by this namespace (automatic mTLS).
    let filter_metadata = [(
        mtls::TRANSPORT_SOCKET_MATCH.to_owned(),
        Struct { fields: [(mtls::TLS_MODE.to_owned(), string(tls_mode))].into_iter().collect() },
    )];
    // The identity the endpoint's sidecar must present, for proxies that check per endpoint.
    let typed_filter_metadata = mtls.then(|| {
        (
            mtls::IDENTITY_METADATA.to_owned(),
            super::any(StringValue { value: snapshot.identity(e) }),
        )
    });
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
            address: Some(socket(&e.address.to_string(), e.port)),
            ..EnvoyEndpoint::default()
        })),
        load_balancing_weight: Some(UInt32Value { value: e.weight }),
        metadata: Some(Metadata {
            filter_metadata: filter_metadata.into_iter().collect(),
            typed_filter_metadata: typed_filter_metadata.into_iter().collect(),
        }),
        ..LbEndpoint::default()
    }
}

/// A TCP socket address.
pub fn socket(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..SocketAddress::default()
        })),
    }
}

/// A one-endpoint assignment (inbound clusters).
pub fn static_assignment(name: &str, ip: &str, port: u16) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
                    address: Some(socket(ip, port)),
                    ..EnvoyEndpoint::default()
                })),
                ..LbEndpoint::default()
            }],
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    }
}
