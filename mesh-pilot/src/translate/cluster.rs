//! CDS: `outbound|port|subset|host` per service port and DestinationRule subset, with load
//! balancing, circuit breakers and outlier detection; `inbound|port||` per port its workload
//! serves (to the pod's address, never a port of the sidecar's own); PassthroughCluster and
//! BlackHoleCluster. A cluster a DestinationRule applies to names the rule in its metadata.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::cluster::CommonLbConfig;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, circuit_breakers::Thresholds,
};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, BindConfig, ConfigSource, Http2ProtocolOptions, HttpProtocolOptions,
    SocketAddress, config_source::ConfigSourceSpecifier, socket_address,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions as UpstreamHttpOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::UInt32Value;
use mesh_api::networking::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection as DrOutlier,
    SimpleLb, TrafficPolicy,
};
use mesh_api::xds::{
    BLACKHOLE_CLUSTER, ClusterName, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER, mtls,
};

use super::tls::Upstream;
use super::{any, config_duration, duration};
use crate::model::{Protocol, Proxy, Resolution, Service, Snapshot};

/// Connect timeout when nothing sets one (Istio's mesh default).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A config source pointing at the ADS stream.
pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: 2, // V3
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..ConfigSource::default()
    }
}

/// Every cluster a proxy gets, sorted by name: `outbound|port|subset|host` per service port and
/// DestinationRule subset, `inbound|port||` per port its workload serves, and the passthrough and
/// blackhole clusters.
pub fn clusters(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Cluster> {
    let mut out = Vec::new();
    for service in snapshot.services.values() {
        let rule = snapshot.destination_rule(&service.hostname, &proxy.namespace);
        let identities = identities(snapshot, service);
        for port in &service.ports {
            let base = rule.and_then(|r| r.spec.traffic_policy.as_ref());
            let subsets = rule.map(|r| r.spec.subsets.as_slice()).unwrap_or_default();
            let variants = std::iter::once((None, policy_for(base, None, port.port))).chain(
                subsets.iter().map(|subset| {
                    (
                        Some(subset.name.as_str()),
                        policy_for(base, subset.traffic_policy.as_ref(), port.port),
                    )
                }),
            );
            for (subset, policy) in variants {
                let transport = super::tls::upstream(
                    policy.tls.as_ref(),
                    mtls::sni(port.port, subset, &service.hostname),
                    &identities,
                    service.mesh_internal,
                    proxy.proxyless,
                );
                let mut cluster =
                    outbound(&service.hostname, port.port, subset, port.protocol, &policy);
                resolve(&mut cluster, service, port.port);
                if proxy.proxyless {
                    grpc_lb_policy(&mut cluster);
                }
                // The rule configured it (istiod records it on every cluster of the host, its
                // subsets' and the default one, policy or not).
                cluster.metadata = rule.map(super::origin::config_metadata);
                match transport {
                    Upstream::Plain => {}
                    Upstream::Auto(matches) => cluster.transport_socket_matches = matches,
                    Upstream::Always(socket) => cluster.transport_socket = Some(socket),
                }
                out.push(cluster);
            }
        }
    }
    out.extend(inbound(snapshot, proxy));
    out.push(passthrough(PASSTHROUGH_CLUSTER, None));
    out.push(passthrough(INBOUND_PASSTHROUGH_CLUSTER, Some("127.0.0.6")));
    out.push(Cluster {
        name: BLACKHOLE_CLUSTER.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        ..Cluster::default()
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// gRPC's xDS client knows round robin and ring hash of Envoy's `lb_policy` values, and
/// refuses a cluster with another: the closest of the two takes its place.
fn grpc_lb_policy(cluster: &mut Cluster) {
    cluster.lb_policy = match LbPolicy::try_from(cluster.lb_policy) {
        Ok(LbPolicy::RingHash | LbPolicy::Maglev) => LbPolicy::RingHash,
        _ => LbPolicy::RoundRobin,
    } as i32;
}

/// Endpoints the proxy finds itself: by DNS (the host name on the port), or the caller's
/// original destination. The others come over EDS, as `outbound` set up.
fn resolve(cluster: &mut Cluster, service: &Service, port: u16) {
    let kind = match service.resolution {
        Resolution::Endpoints => return,
        Resolution::Dns => DiscoveryType::StrictDns,
        Resolution::Passthrough => DiscoveryType::OriginalDst,
    };
    cluster.eds_cluster_config = None;
    cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
    if kind == DiscoveryType::StrictDns {
        cluster.load_assignment =
            Some(super::endpoint::static_assignment(&cluster.name, &service.hostname, port));
    } else {
        cluster.lb_policy = LbPolicy::ClusterProvided as i32;
    }
}

/// The SPIFFE identities of a service's endpoints, which its servers may present. All of them,
/// not only those with sidecars: a DestinationRule's `ISTIO_MUTUAL` to a gateway (which has a
/// workload certificate and no sidecar label) checks the gateway's identity, as Istio's
/// service-account SANs do.
fn identities(snapshot: &Snapshot, service: &Service) -> Vec<String> {
    let mut ids: Vec<String> = service
        .ports
        .iter()
        .filter_map(|p| snapshot.endpoints.get(&(service.hostname.clone(), p.port)))
        .flatten()
        .map(|e| snapshot.identity(e))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The effective policy of a (subset, port): the subset's settings override the rule's, and
/// port-level settings override both (Istio's precedence).
#[derive(Clone, Debug, Default)]
pub struct Effective {
    load_balancer: Option<LoadBalancerSettings>,
    connection_pool: Option<ConnectionPoolSettings>,
    outlier_detection: Option<DrOutlier>,
    tls: Option<ClientTlsSettings>,
}

fn policy_for(
    base: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u16,
) -> Effective {
    let mut effective = Effective::default();
    for policy in [base, subset].into_iter().flatten() {
        let level = policy
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().is_some_and(|s| s.number == u32::from(port)));
        effective.load_balancer = level
            .and_then(|l| l.load_balancer.clone())
            .or(policy.load_balancer.clone())
            .or(effective.load_balancer);
        effective.connection_pool = level
            .and_then(|l| l.connection_pool.clone())
            .or(policy.connection_pool.clone())
            .or(effective.connection_pool);
        effective.outlier_detection = level
            .and_then(|l| l.outlier_detection.clone())
            .or(policy.outlier_detection.clone())
            .or(effective.outlier_detection);
        effective.tls = level.and_then(|l| l.tls.clone()).or(policy.tls.clone()).or(effective.tls);
    }
    effective
}

fn outbound(
    host: &str,
    port: u16,
    subset: Option<&str>,
    protocol: Protocol,
    policy: &Effective,
) -> Cluster {
    let name = ClusterName::outbound(port, subset, host).to_string();
    let mut cluster = Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig { eds_config: Some(ads()), service_name: name }),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        lb_policy: LbPolicy::LeastRequest as i32,
        ..Cluster::default()
    };
    if let Some(lb) = &policy.load_balancer {
        cluster.lb_policy = match (&lb.simple, &lb.consistent_hash) {
            (_, Some(hash)) if hash.maglev.is_some() => LbPolicy::Maglev as i32,
            (_, Some(_)) => LbPolicy::RingHash as i32,
            (Some(SimpleLb::RoundRobin), _) => LbPolicy::RoundRobin as i32,
            (Some(SimpleLb::Random), _) => LbPolicy::Random as i32,
            (Some(SimpleLb::Passthrough), _) => LbPolicy::ClusterProvided as i32,
            _ => LbPolicy::LeastRequest as i32,
        };
    }
    // Istio's defaults: no limit (Envoy's own defaults, 1024 and 3 retries, would cap a busy
    // service and make retries fail during rollouts); connectionPool lowers them.
    let unlimited = Some(UInt32Value { value: u32::MAX });
    let mut thresholds = Thresholds {
        max_connections: unlimited,
        max_pending_requests: unlimited,
        max_requests: unlimited,
        max_retries: unlimited,
        track_remaining: true,
        ..Thresholds::default()
    };
    let mut http_options = HttpProtocolOptions::default();
    if let Some(pool) = &policy.connection_pool {
        let set = |v: Option<i32>| {
            v.filter(|v| *v > 0)
                .and_then(|v| u32::try_from(v).ok())
                .map(|value| UInt32Value { value })
        };
        if let Some(tcp) = &pool.tcp {
            if let Some(v) = set(tcp.max_connections) {
                thresholds.max_connections = Some(v);
            }
            if let Some(t) = tcp.connect_timeout.as_ref().and_then(config_duration) {
                cluster.connect_timeout = Some(t);
            }
        }
        if let Some(http) = &pool.http {
            if let Some(v) = set(http.http1_max_pending_requests) {
                thresholds.max_pending_requests = Some(v);
            }
            if let Some(v) = set(http.http2_max_requests) {
                thresholds.max_requests = Some(v);
            }
            if let Some(v) = set(http.max_retries) {
                thresholds.max_retries = Some(v);
            }
            if let Some(v) = set(http.max_requests_per_connection) {
                http_options.max_requests_per_connection = Some(v);
            }
            if let Some(t) = http.idle_timeout.as_ref().and_then(config_duration) {
                http_options.idle_timeout = Some(t);
            }
        }
    }
    cluster.circuit_breakers =
        Some(CircuitBreakers { thresholds: vec![thresholds], ..CircuitBreakers::default() });
    let upstream = UpstreamHttpOptions {
        common_http_protocol_options: Some(http_options),
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(if protocol == Protocol::Http2 {
                    ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())
                } else {
                    ProtocolConfig::HttpProtocolOptions(
                        envoy_types::pb::envoy::config::core::v3::Http1ProtocolOptions::default(),
                    )
                }),
            },
        )),
        ..UpstreamHttpOptions::default()
    };
    if protocol.is_http() {
        cluster.typed_extension_protocol_options = BTreeMap::from([(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            any(upstream),
        )])
        .into_iter()
        .collect();
    }
    if let Some(outlier) = &policy.outlier_detection {
        cluster.outlier_detection = Some(outlier_detection(outlier));
        // Below this share of healthy hosts Envoy ignores ejections (its panic threshold).
        if let Some(min) = outlier.min_health_percent {
            cluster.common_lb_config = Some(CommonLbConfig {
                healthy_panic_threshold: Some(Percent { value: f64::from(min) }),
                ..CommonLbConfig::default()
            });
        }
    }
    cluster
}

fn outlier_detection(o: &DrOutlier) -> OutlierDetection {
    let u32v = |v: Option<u32>| v.map(|value| UInt32Value { value });
    let percent =
        |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).map(|value| UInt32Value { value });
    let mut out = OutlierDetection {
        consecutive_5xx: u32v(o.consecutive_5xx_errors),
        consecutive_gateway_failure: u32v(
            o.consecutive_gateway_errors
                .or(o.consecutive_errors.and_then(|v| u32::try_from(v).ok())),
        ),
        interval: o.interval.as_ref().and_then(config_duration),
        base_ejection_time: o.base_ejection_time.as_ref().and_then(config_duration),
        max_ejection_percent: percent(o.max_ejection_percent),
        split_external_local_origin_errors: o.split_external_local_origin_errors.unwrap_or(false),
        consecutive_local_origin_failure: u32v(o.consecutive_local_origin_failures),
        ..OutlierDetection::default()
    };
    // Istio turns 5xx detection off unless asked, and gateway errors on when asked.
    out.enforcing_consecutive_5xx = Some(UInt32Value {
        value: if o.consecutive_5xx_errors.unwrap_or(0) > 0 { 100 } else { 0 },
    });
    out.enforcing_consecutive_gateway_failure = Some(UInt32Value {
        value: if out.consecutive_gateway_failure.as_ref().is_some_and(|v| v.value > 0) {
            100
        } else {
            0
        },
    });
    out
}

/// The TCP idle timeout a DestinationRule sets for `host:port`
/// (`connectionPool.tcp.idleTimeout`), for the TCP proxy in front of it: Envoy keeps it on
/// the filter chain, not the cluster.
pub fn tcp_idle_timeout(
    snapshot: &Snapshot,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Option<envoy_types::pb::google::protobuf::Duration> {
    let rule = snapshot.destination_rule(host, &proxy.namespace)?;
    let policy = policy_for(rule.spec.traffic_policy.as_ref(), None, port);
    policy.connection_pool?.tcp?.idle_timeout.as_ref().and_then(config_duration)
}

/// The ports of the services this proxy's workload serves (endpoint port, protocol). Never
/// one of the sidecar's own (15000–15090), whatever a Service's `targetPort` says: serving
/// 15000 would hand its admin API to the cluster ([`own_port_targets`] names such services).
pub fn inbound_ports(snapshot: &Snapshot, proxy: &Proxy) -> BTreeMap<u16, Protocol> {
    let mut ports = BTreeMap::new();
    for ((host, port), endpoints) in &snapshot.endpoints {
        let own = endpoints.iter().find(|e| proxy.ips.contains(&e.address));
        if let Some(own) = own.filter(|e| !mesh_api::ports::is_proxy_port(e.port)) {
            let protocol = snapshot
                .services
                .get(host)
                .and_then(|s| s.port(*port))
                .map_or(Protocol::Tcp, |p| p.protocol);
            ports.entry(own.port).or_insert(protocol);
        }
    }
    ports
}

/// Services that send their sidecar workloads' traffic to a port of the sidecar's own (a
/// `targetPort` in 15000–15090), which [`inbound_ports`] never serves: one line each, for the
/// pilot's log, naming the service, the port and what to do.
pub fn own_port_targets(snapshot: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for ((host, port), endpoints) in &snapshot.endpoints {
        let mut targets: Vec<u16> = endpoints
            .iter()
            .filter(|e| e.sidecar && mesh_api::ports::is_proxy_port(e.port))
            .map(|e| e.port)
            .collect();
        targets.sort_unstable();
        targets.dedup();
        for target in targets {
            out.push(format!(
                "service {host} port {port} targets port {target} of its workloads, one of the \
                 sidecar's own ports (15000-15090: admin, capture, health, metrics), which are \
                 never an app's; serve the app on another port and set the targetPort to it"
            ));
        }
    }
    out
}

/// `inbound|port||` for each port of the services this proxy serves: to the app on the
/// address the client called (the pod's, the original destination, as Istio does since 1.10:
/// an app listening on 127.0.0.1 only is not exposed), from 127.0.0.6 so capture never takes
/// it again.
fn inbound(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Cluster> {
    inbound_ports(snapshot, proxy)
        .into_keys()
        .map(|port| Cluster {
            name: ClusterName::inbound(port).to_string(),
            metadata: services_metadata(snapshot, proxy, port),
            ..passthrough("", Some("127.0.0.6"))
        })
        .collect()
}

/// Names the services the inbound cluster of `port` serves, as Istio does
/// ([`mesh_api::xds::services_metadata`]): proxies report requests to the cluster under the
/// first, never under the Host a client sent. `None` when no service selects the port.
fn services_metadata(
    snapshot: &Snapshot,
    proxy: &Proxy,
    port: u16,
) -> Option<envoy_types::pb::envoy::config::core::v3::Metadata> {
    use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
    use mesh_api::xds::services_metadata as m;
    let text = |s: &str| Value { kind: Some(Kind::StringValue(s.to_owned())) };
    // The services whose endpoint on this proxy is on `port`, as `inbound_ports` finds them,
    // once each (a service may map two of its ports to this one), sorted by host.
    let hosts: std::collections::BTreeSet<&str> = snapshot
        .endpoints
        .iter()
        .filter(|(_, endpoints)| {
            endpoints
                .iter()
                .find(|e| proxy.ips.contains(&e.address))
                .is_some_and(|e| e.port == port)
        })
        .filter_map(|((host, _), _)| snapshot.services.get(host))
        .map(|service| service.hostname.as_str())
        .collect();
    if hosts.is_empty() {
        return None;
    }
    // Every map here holds one entry: envoy-types' maps are HashMaps, and two entries would
    // encode in a different order each time, making an unchanged cluster look changed.
    let values = hosts
        .into_iter()
        .map(|host| {
            let fields = [(m::HOST.to_owned(), text(host))].into_iter().collect();
            Value { kind: Some(Kind::StructValue(Struct { fields })) }
        })
        .collect();
    let list = Value { kind: Some(Kind::ListValue(ListValue { values })) };
    let istio = Struct { fields: [(m::SERVICES.to_owned(), list)].into_iter().collect() };
    Some(envoy_types::pb::envoy::config::core::v3::Metadata {
        filter_metadata: [(m::FILTER.to_owned(), istio)].into_iter().collect(),
        ..Default::default()
    })
}

fn bind(source: &str) -> BindConfig {
    BindConfig {
        source_address: Some(SocketAddress {
            address: source.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
            ..SocketAddress::default()
        }),
        ..BindConfig::default()
    }
}

fn passthrough(name: &str, source: Option<&str>) -> Cluster {
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::OriginalDst as i32)),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        upstream_bind_config: source.map(bind),
        ..Cluster::default()
    }
}
