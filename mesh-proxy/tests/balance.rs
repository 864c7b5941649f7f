//! Endpoint selection, per policy: weighted round robin in exact proportion and spread out,
//! least request preferring the idle endpoint, weighted random, ring hash keeping keys in
//! place when an endpoint goes; unusable endpoints are never picked.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use envoy_types::pb::envoy::config::core::v3::{Address, HealthStatus, SocketAddress};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use mesh_proxy::balance::{Balancer, Host, Policy, hosts};

fn host(last: u8, weight: u32) -> Host {
    Host::new(SocketAddr::from(([10, 0, 0, last], 8080)), weight)
}

fn counts(
    balancer: &Balancer,
    picks: usize,
    key: impl Fn(usize) -> Option<u64>,
) -> HashMap<u8, usize> {
    let mut out = HashMap::new();
    for i in 0..picks {
        let SocketAddr::V4(a) = balancer.pick(key(i)).unwrap().address else { panic!() };
        *out.entry(a.ip().octets()[3]).or_default() += 1;
    }
    out
}

#[test]
fn round_robin_follows_weights_exactly_and_spreads_turns() {
    let balancer = Balancer::new(vec![host(1, 1), host(2, 2), host(3, 1)], Policy::RoundRobin);
    let got = counts(&balancer, 400, |_| None);
    assert_eq!((got[&1], got[&2], got[&3]), (100, 200, 100));
    // Spread, not bunched: any four turns in a row hold each endpoint as often as its weight.
    let order: Vec<SocketAddr> = (0..12).map(|_| balancer.pick(None).unwrap().address).collect();
    for window in order.windows(4) {
        let twos = window.iter().filter(|a| a.ip().to_string() == "10.0.0.2").count();
        assert_eq!(twos, 2, "{order:?}");
    }
    // Large weights are scaled, not expanded without bound.
    let heavy = Balancer::new(vec![host(1, 1_000_000), host(2, 3_000_000)], Policy::RoundRobin);
    let got = counts(&heavy, 4000, |_| None);
    assert_eq!((got[&1], got[&2]), (1000, 3000));
}

#[test]
fn least_request_prefers_the_idle_endpoint() {
    let balancer = Balancer::new(vec![host(1, 1), host(2, 1)], Policy::LeastRequest);
    balancer.hosts()[0].active.store(50, Ordering::Relaxed);
    let got = counts(&balancer, 1000, |_| None);
    // Two random candidates: the busy one wins only when both draws are it (1 in 4).
    assert!((650..=850).contains(&got[&2]), "{got:?}");
    balancer.hosts()[0].active.store(0, Ordering::Relaxed);
    balancer.hosts()[1].active.store(50, Ordering::Relaxed);
    let got = counts(&balancer, 1000, |_| None);
    assert!((650..=850).contains(&got[&1]), "{got:?}");
}

#[test]
fn random_follows_weights() {
    let balancer = Balancer::new(vec![host(1, 1), host(2, 3)], Policy::Random);
    let got = counts(&balancer, 4000, |_| None);
    assert!((2700..=3300).contains(&got[&2]), "{got:?}");
}

#[test]
fn ring_hash_keeps_keys_in_place() {
    let four: Vec<Host> = (1..=4).map(|i| host(i, 1)).collect();
    let balancer = Balancer::new(four, Policy::RingHash);
    let key = |i: usize| Some((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let before: Vec<SocketAddr> =
        (0..1000).map(|i| balancer.pick(key(i)).unwrap().address).collect();
    let again: Vec<SocketAddr> =
        (0..1000).map(|i| balancer.pick(key(i)).unwrap().address).collect();
    assert_eq!(before, again, "the same key, the same endpoint");
    let got = counts(&balancer, 1000, key);
    assert!(got.values().all(|n| *n >= 100), "keys spread over every endpoint: {got:?}");
    // Endpoint 4 goes: keys on the others stay where they were.
    let three = Balancer::new((1..=3).map(|i| host(i, 1)).collect(), Policy::RingHash);
    let gone = SocketAddr::from(([10, 0, 0, 4], 8080));
    let (mut stayed, mut kept) = (0, 0);
    for (i, was) in before.iter().enumerate() {
        if *was != gone {
            kept += 1;
            stayed += usize::from(three.pick(key(i)).unwrap().address == *was);
        }
    }
    assert_eq!(stayed, kept, "only the removed endpoint's keys move");
}

#[test]
fn only_usable_endpoints_are_picked_and_none_means_none() {
    let endpoint = |ip: &str, health: HealthStatus, weight: Option<u32>| LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(9080)),
                    ..SocketAddress::default()
                })),
            }),
            ..Endpoint::default()
        })),
        health_status: health as i32,
        load_balancing_weight: weight.map(|value| UInt32Value { value }),
        ..LbEndpoint::default()
    };
    let assignment = ClusterLoadAssignment {
        cluster_name: "c".into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![
                endpoint("10.0.0.1", HealthStatus::Healthy, Some(5)),
                endpoint("10.0.0.2", HealthStatus::Unhealthy, None),
                endpoint("10.0.0.3", HealthStatus::Draining, None),
                endpoint("not-an-ip", HealthStatus::Unknown, None),
                endpoint("10.0.0.4", HealthStatus::Unknown, None),
            ],
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    };
    let usable = hosts(&assignment);
    let seen: Vec<(String, u32)> =
        usable.iter().map(|h| (h.address.ip().to_string(), h.weight)).collect();
    assert_eq!(seen, [("10.0.0.1".to_owned(), 5), ("10.0.0.4".to_owned(), 1)]);
    for policy in [Policy::RoundRobin, Policy::LeastRequest, Policy::Random, Policy::RingHash] {
        assert!(Balancer::new(Vec::new(), policy).pick(Some(1)).is_none());
    }
    assert_eq!(Policy::of(1), Some(Policy::LeastRequest));
    assert_eq!(Policy::of(6), None, "CLUSTER_PROVIDED: the original destination decides");
}
