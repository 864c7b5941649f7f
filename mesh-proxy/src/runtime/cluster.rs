//! What the data path needs of a cluster, compiled from its xDS message: where its
//! connections go ([`Upstream`]), how they are made ([`Transport`]: TLS, HTTP version, pool,
//! timeouts) and its circuit breakers with their in-flight counts ([`Breakers`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::transport_socket;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
};
use prost::Message;

use crate::balance::Balancer;

/// Where a cluster's connections go.
pub enum Upstream {
    /// Endpoints known to the proxy, picked by a policy.
    Balanced(Balancer),
    /// The address the client originally asked for (passthrough clusters).
    OriginalDestination,
    /// Host names the proxy resolves itself (DNS clusters), with their ports.
    Dns(Vec<(String, u16)>),
}

/// How a cluster's connections are secured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterTls {
    /// Per endpoint: mesh mTLS to endpoints marked `tlsMode: istio`, plaintext to the others
    /// (Istio's automatic mTLS).
    ByEndpoint,
    /// Mesh mTLS to every endpoint (a DestinationRule's `ISTIO_MUTUAL`).
    Mesh {
        /// The SNI to send (the rule's `sni`: a gateway chooses its chain by it); none when
        /// the context names none.
        sni: Option<std::sync::Arc<str>>,
        /// The identities the server may have (the context's SAN matchers: the rule's
        /// `subjectAltNames`, or the service's workloads); none: the endpoint's own.
        identities: std::sync::Arc<[mesh_api::identity::SpiffeId]>,
    },
    /// TLS originated to a server outside the mesh (`SIMPLE`/`MUTUAL`): its chain and name
    /// checked as the context says ([`super::origination`]).
    Originate {
        /// The SNI to send.
        sni: Option<std::sync::Arc<str>>,
        /// The client configuration (roots, names, client certificate).
        config: crate::proxy::upstream::Origination,
    },
    /// TLS this proxy cannot originate (a certificate it cannot read, an SDS secret on a
    /// sidecar): connections fail closed rather than go out in plaintext.
    Unsupported(String),
}

/// Which HTTP version a cluster speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamHttp {
    /// HTTP/1.1 (explicit HTTP options other than HTTP/2).
    Http1,
    /// HTTP/2 (prior knowledge in plaintext).
    Http2,
    /// Not said: the proxy decides from the request.
    Unspecified,
}

/// A cluster's circuit breakers: limits on what may be in flight to it at once, and the
/// counts against them. Unset limits are unlimited, as Istio configures Envoy.
#[derive(Debug, Default)]
pub struct Breakers {
    /// Most requests in flight (`max_requests`).
    pub max_requests: Option<u64>,
    /// Most retries in flight (`max_retries`): the retry budget.
    pub max_retries: Option<u64>,
    /// Most upstream connections open (`max_connections`).
    pub max_connections: Option<u64>,
    /// Most requests waiting for a connection (`max_pending_requests`).
    pub max_pending: Option<u64>,
    /// What is in flight now; shared with the same cluster in later configurations, so an
    /// update does not reset the counts.
    pub counts: Arc<InFlightCounts>,
}

/// What is in flight to a cluster.
#[derive(Debug, Default)]
pub struct InFlightCounts {
    /// Requests in flight, against `max_requests`.
    pub requests: AtomicU64,
    /// Retries (between a retriable outcome and the next attempt).
    pub retries: AtomicU64,
    /// Upstream connections open, against `max_connections`.
    pub connections: AtomicU64,
    /// Requests waiting for a connection, against `max_pending`.
    pub pending: AtomicU64,
}

impl Breakers {
    fn of(cluster: &Cluster) -> Self {
        let thresholds = cluster.circuit_breakers.as_ref().and_then(|c| c.thresholds.first());
        let limit = |v: Option<&envoy_types::pb::google::protobuf::UInt32Value>| {
            v.map(|v| u64::from(v.value))
        };
        Breakers {
            max_requests: thresholds.and_then(|t| limit(t.max_requests.as_ref())),
            max_retries: thresholds.and_then(|t| limit(t.max_retries.as_ref())),
            max_connections: thresholds.and_then(|t| limit(t.max_connections.as_ref())),
            max_pending: thresholds.and_then(|t| limit(t.max_pending_requests.as_ref())),
            counts: Arc::default(),
        }
    }

    /// Takes one of `count` if its limit allows (unset: unlimited); `None` when full. The
    /// slot is given back when the returned guard is dropped.
    pub fn hold(&self, count: Count) -> Option<Held> {
        let max = match count {
            Count::Requests => self.max_requests,
            Count::Retries => self.max_retries,
            Count::Connections => self.max_connections,
            Count::Pending => self.max_pending,
        };
        let before = self.counts.of(count).fetch_add(1, Ordering::Relaxed);
        let held = Held { counts: self.counts.clone(), count };
        (max.is_none_or(|max| before < max)).then_some(held)
    }

    /// Takes one of `count` whatever its limit (a host with no connection may always open
    /// one, as in Envoy).
    pub fn hold_anyway(&self, count: Count) -> Held {
        self.counts.of(count).fetch_add(1, Ordering::Relaxed);
        Held { counts: self.counts.clone(), count }
    }
}

/// Which in-flight count of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Requests (`max_requests`).
    Requests,
    /// Retries (`max_retries`).
    Retries,
    /// Upstream connections (`max_connections`).
    Connections,
    /// Requests waiting for a connection (`max_pending_requests`).
    Pending,
}

impl InFlightCounts {
    fn of(&self, count: Count) -> &AtomicU64 {
        match count {
            Count::Requests => &self.requests,
            Count::Retries => &self.retries,
            Count::Connections => &self.connections,
            Count::Pending => &self.pending,
        }
    }
}

/// One unit of a cluster's in-flight count, given back when dropped.
#[derive(Debug)]
pub struct Held {
    counts: Arc<InFlightCounts>,
    count: Count,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counts.of(self.count).fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a cluster's HTTP connections are pooled (`common_http_protocol_options`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Requests one connection carries before it is closed (`max_requests_per_connection`).
    pub max_requests_per_connection: Option<u32>,
    /// How long a connection with nothing in flight stays open (`idle_timeout`; Envoy's
    /// default is an hour).
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self { max_requests_per_connection: None, idle_timeout: DEFAULT_IDLE_TIMEOUT }
    }
}

/// Envoy's upstream connection idle timeout when the cluster sets none.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How to reach a cluster's endpoints.
#[derive(Debug)]
pub struct Transport {
    /// Source address to connect from (`upstream_bind_config`: 127.0.0.6 inbound).
    pub bind: Option<IpAddr>,
    /// Whether connections use mesh mTLS, per endpoint or always (from `transport_socket`).
    pub tls: ClusterTls,
    /// HTTP version towards the endpoints (from the cluster's `HttpProtocolOptions`).
    pub http: UpstreamHttp,
    /// TCP connect timeout (`connect_timeout`; 10s when unset or zero).
    pub connect_timeout: Duration,
    /// Limits on what may be in flight to the cluster, and the counts against them
    /// (`circuit_breakers`).
    pub breakers: Breakers,
    /// How long HTTP connections are reused: requests per connection, idle timeout.
    pub pool: PoolSettings,
    /// The service telemetry reports requests to the cluster under, when its metadata names
    /// one (the pilot names them on inbound clusters: [`mesh_api::xds::services_metadata`]).
    pub service: Option<String>,
}

impl Transport {
    /// What `cluster` says about reaching its endpoints.
    pub fn of(cluster: &Cluster) -> Self {
        let bind = cluster
            .upstream_bind_config
            .as_ref()
            .and_then(|b| b.source_address.as_ref())
            .and_then(|a| a.address.parse().ok());
        let tls = match &cluster.transport_socket {
            None => ClusterTls::ByEndpoint,
            Some(socket) => match &socket.config_type {
                Some(transport_socket::ConfigType::TypedConfig(any)) => {
                    match UpstreamTlsContext::decode(any.value.as_slice()) {
                        Ok(context) if is_mesh(&context) => ClusterTls::Mesh {
                            sni: (!context.sni.is_empty()).then(|| context.sni.as_str().into()),
                            identities: super::origination::mesh_identities(&context).into(),
                        },
                        Ok(context) => match super::origination::config(&context) {
                            Ok(config) => ClusterTls::Originate {
                                sni: (!context.sni.is_empty()).then(|| context.sni.as_str().into()),
                                config: crate::proxy::upstream::Origination(std::sync::Arc::new(
                                    config,
                                )),
                            },
                            Err(why) => ClusterTls::Unsupported(format!(
                                "cluster {:?}: TLS origination: {why}",
                                cluster.name
                            )),
                        },
                        Err(e) => ClusterTls::Unsupported(format!(
                            "cluster {:?}: transport socket: {e}",
                            cluster.name
                        )),
                    }
                }
                _ => ClusterTls::Unsupported(format!(
                    "cluster {:?}: transport socket without a typed config",
                    cluster.name
                )),
            },
        };
        let options = cluster
            .typed_extension_protocol_options
            .get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
            .and_then(|any| HttpProtocolOptions::decode(any.value.as_slice()).ok());
        let common = options.as_ref().and_then(|o| o.common_http_protocol_options.as_ref());
        let pool = PoolSettings {
            max_requests_per_connection: common
                .and_then(|c| c.max_requests_per_connection.as_ref())
                .map(|v| v.value)
                .filter(|v| *v > 0),
            idle_timeout: common
                .and_then(|c| c.idle_timeout.as_ref())
                .and_then(duration)
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_IDLE_TIMEOUT),
        };
        let http = options
            .and_then(|o| match o.upstream_protocol_options? {
                UpstreamProtocolOptions::ExplicitHttpConfig(c) => match c.protocol_config? {
                    ProtocolConfig::Http2ProtocolOptions(_) => Some(UpstreamHttp::Http2),
                    _ => Some(UpstreamHttp::Http1),
                },
                _ => None,
            })
            .unwrap_or(UpstreamHttp::Unspecified);
        let connect_timeout = cluster
            .connect_timeout
            .as_ref()
            .and_then(duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(10));
        let service = named_service(cluster);
        Self { bind, tls, http, connect_timeout, breakers: Breakers::of(cluster), pool, service }
    }
}

/// The first service `cluster`'s metadata names ([`mesh_api::xds::services_metadata`]), as a
/// label value.
fn named_service(cluster: &Cluster) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    use mesh_api::xds::services_metadata as m;
    let istio = cluster.metadata.as_ref()?.filter_metadata.get(m::FILTER)?;
    let Some(Kind::ListValue(services)) = &istio.fields.get(m::SERVICES)?.kind else {
        return None;
    };
    let Some(Kind::StructValue(first)) = &services.values.first()?.kind else { return None };
    match &first.fields.get(m::HOST)?.kind {
        Some(Kind::StringValue(host)) if !host.is_empty() => {
            Some(crate::telemetry::label_value(host))
        }
        _ => None,
    }
}

/// A protobuf duration as a `Duration` (`None` when negative).
pub fn duration(d: &envoy_types::pb::google::protobuf::Duration) -> Option<Duration> {
    Some(
        Duration::from_secs(u64::try_from(d.seconds).ok()?)
            + Duration::from_nanos(u64::try_from(d.nanos).ok()?),
    )
}

/// Whether an upstream TLS context presents the workload certificate (SDS `default`), which
/// is what `ISTIO_MUTUAL` means.
fn is_mesh(context: &UpstreamTlsContext) -> bool {
    context.common_tls_context.as_ref().is_some_and(|c| {
        c.tls_certificate_sds_secret_configs
            .iter()
            .any(|s| s.name == mesh_api::xds::mtls::WORKLOAD_SECRET)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use mesh_api::identity::SpiffeId;

    /// The cluster the pilot makes for a DestinationRule `ISTIO_MUTUAL` with an `sni`.
    fn istio_mutual(sni: &str) -> Cluster {
        use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
            CommonTlsContext, SdsSecretConfig,
        };
        let context = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                    name: mesh_api::xds::mtls::WORKLOAD_SECRET.to_owned(),
                    sds_config: None,
                }],
                ..CommonTlsContext::default()
            }),
            sni: sni.to_owned(),
            ..UpstreamTlsContext::default()
        };
        Cluster {
            name: "outbound|443||egressgateway.mesh-system.svc.cluster.local".to_owned(),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".to_owned(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(
                    envoy_types::util::pack_any(context),
                )),
            }),
            ..Cluster::default()
        }
    }

    #[test]
    fn mesh_mtls_to_every_endpoint_sends_the_rules_sni() {
        let tls = Transport::of(&istio_mutual("outside.example.com")).tls;
        let none: std::sync::Arc<[SpiffeId]> = Vec::new().into();
        assert_eq!(
            tls,
            ClusterTls::Mesh { sni: Some("outside.example.com".into()), identities: none.clone() }
        );
        assert_eq!(
            Transport::of(&istio_mutual("")).tls,
            ClusterTls::Mesh { sni: None, identities: none }
        );
    }
}
