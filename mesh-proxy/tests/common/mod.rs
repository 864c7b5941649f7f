//! What the traffic-policy tests share: in-process backends with controlled failures and
//! delays, Envoy resources for routes and clusters, mesh-proxy serving HTTP on loopback with
//! them, a one-request client, and what the pilot serves the golden mesh's `frontend`.

#![allow(dead_code)] // Each test crate uses a part.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, circuit_breakers::Thresholds, cluster};
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::route::v3::{self as r, RouteConfiguration};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use http_body_util::{BodyExt as _, Full};
use mesh_proxy::listener::Upgrades;
use mesh_proxy::proxy::http::{Connection, Routes};
use mesh_proxy::proxy::{MeshTls, Shared, Tuning};
use mesh_proxy::routing::RouteTable;
use mesh_proxy::runtime::Runtime;
use mesh_proxy::telemetry::{AccessLog, LogFormat, Metrics, Reporter, Workload};
use mesh_proxy::xds::store::Config;

/// What a backend does with the n-th request it gets (from 1): its status, a delay, headers.
pub type Behaviour = dyn Fn(u32, &http::request::Parts) -> (u16, Duration, Vec<(&'static str, String)>)
    + Send
    + Sync;

/// A backend on loopback; counts the requests it gets and the connections it accepted and
/// has open, and keeps the first request's authority.
pub struct Backend {
    pub address: SocketAddr,
    pub hits: Arc<AtomicU32>,
    pub last_authority: Arc<std::sync::OnceLock<String>>,
    pub connections: Arc<AtomicU32>,
    pub open: Arc<AtomicU32>,
}

pub async fn backend(behaviour: Arc<Behaviour>) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let last_authority = Arc::new(std::sync::OnceLock::new());
    let connections = Arc::new(AtomicU32::new(0));
    let open = Arc::new(AtomicU32::new(0));
    let (h, a, c, o) = (hits.clone(), last_authority.clone(), connections.clone(), open.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let (hits, behaviour, authority, open) =
                (h.clone(), behaviour.clone(), a.clone(), o.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                        let (parts, body) = request.into_parts();
                        let host = parts
                            .headers
                            .get("host")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
                            .unwrap_or_default();
                        let _ = authority.set(host);
                        let (status, delay, headers) = behaviour(n, &parts);
                        async move {
                            let _ = body.collect().await;
                            tokio::time::sleep(delay).await;
                            let mut response = http::Response::builder().status(status);
                            for (k, v) in headers {
                                response = response.header(k, v);
                            }
                            Ok::<_, std::convert::Infallible>(
                                response
                                    .body(Full::new(Bytes::from(format!("attempt {n}"))))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Backend { address, hits, last_authority, connections, open }
}

/// `cluster`'s connection pool: Istio's `connectionPool` as the pilot writes it (connection
/// and pending-request limits, requests per connection, idle timeout), HTTP/1.1 upstream.
pub fn with_pool(
    mut cluster: Cluster,
    max_connections: Option<u32>,
    max_pending: Option<u32>,
    max_requests_per_connection: Option<u32>,
    idle_timeout_ms: Option<i32>,
) -> Cluster {
    use envoy_types::pb::envoy::config::core::v3::{Http1ProtocolOptions, HttpProtocolOptions};
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions as Options;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    };
    let value = |v: Option<u32>| v.map(|value| UInt32Value { value });
    if max_connections.is_some() || max_pending.is_some() {
        let breakers = cluster.circuit_breakers.get_or_insert_with(Default::default);
        if breakers.thresholds.is_empty() {
            breakers.thresholds.push(Thresholds::default());
        }
        breakers.thresholds[0].max_connections = value(max_connections);
        breakers.thresholds[0].max_pending_requests = value(max_pending);
    }
    let options = Options {
        common_http_protocol_options: Some(HttpProtocolOptions {
            max_requests_per_connection: value(max_requests_per_connection),
            idle_timeout: idle_timeout_ms.map(millis),
            ..Default::default()
        }),
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    };
    cluster.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        envoy_types::util::pack_any(options),
    );
    cluster
}

pub fn static_cluster(
    name: &str,
    endpoints: &[SocketAddr],
    breakers: Option<(u32, u32)>,
) -> Cluster {
    let lb_endpoints = endpoints
        .iter()
        .map(|a| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: a.ip().to_string(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                            a.port(),
                        ))),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    let cluster = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    };
    match breakers {
        Some((requests, retries)) => with_breakers(cluster, requests, retries),
        None => cluster,
    }
}

/// `cluster` with at most `requests` requests and `retries` retries in flight.
pub fn with_breakers(mut cluster: Cluster, requests: u32, retries: u32) -> Cluster {
    let breakers = cluster.circuit_breakers.get_or_insert_with(Default::default);
    if breakers.thresholds.is_empty() {
        breakers.thresholds.push(Thresholds::default());
    }
    breakers.thresholds[0].max_requests = Some(UInt32Value { value: requests });
    breakers.thresholds[0].max_retries = Some(UInt32Value { value: retries });
    cluster
}

pub fn millis(ms: i32) -> PbDuration {
    PbDuration { seconds: i64::from(ms / 1000), nanos: (ms % 1000) * 1_000_000 }
}

pub fn retry(on: &str, retries: u32, per_try_ms: Option<i32>) -> r::RetryPolicy {
    r::RetryPolicy {
        retry_on: on.into(),
        num_retries: Some(UInt32Value { value: retries }),
        per_try_timeout: per_try_ms.map(millis),
        retriable_status_codes: vec![503],
        ..Default::default()
    }
}

/// A route to `cluster` with `action` changes and per-filter configs.
pub fn route(
    cluster: &str,
    change: impl FnOnce(&mut r::RouteAction),
    filters: Vec<(&str, prost_types_any::Any)>,
) -> r::Route {
    let mut action = r::RouteAction {
        cluster_specifier: Some(r::route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    change(&mut action);
    r::Route {
        name: "test".into(),
        r#match: Some(r::RouteMatch {
            path_specifier: Some(r::route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(r::route::Action::Route(action)),
        typed_per_filter_config: filters.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        ..Default::default()
    }
}

pub mod prost_types_any {
    pub use envoy_types::pb::google::protobuf::Any;
}

/// Routes for any host: just `route`.
pub fn route_config(route: r::Route) -> RouteConfiguration {
    RouteConfiguration {
        name: "test".into(),
        virtual_hosts: vec![r::VirtualHost {
            name: "any".into(),
            domains: vec!["*".into()],
            routes: vec![route],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A proxy on loopback serving `route` (any host) over `clusters`, tunnelling WebSocket as
/// the pilot configures it; returns its address and metrics registry.
pub async fn proxy(
    route: r::Route,
    clusters: Vec<Cluster>,
) -> (SocketAddr, Arc<prometheus_client::registry::Registry>) {
    proxy_with(Reporter::Source, Upgrades::websocket(), route, clusters).await
}

/// A proxy on loopback serving `route` (any host) over `clusters`, reporting as `reporter`
/// (outbound or inbound), its connection manager tunnelling `upgrades`; returns its address
/// and metrics registry.
pub async fn proxy_with(
    reporter: Reporter,
    upgrades: Upgrades,
    route: r::Route,
    clusters: Vec<Cluster>,
) -> (SocketAddr, Arc<prometheus_client::registry::Registry>) {
    let table = Arc::new(RouteTable::compile(&route_config(route)).unwrap());
    let (shared, registry) = shared(clusters);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (_keep, drain) = mesh_runtime::drain::channel();
    tokio::spawn(async move {
        let _keep = _keep;
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let connection = Connection {
                reporter,
                downstream: peer,
                destination: address,
                peer: None,
                routes: Routes::Inline(table.clone()),
                upgrades: upgrades.clone(),
                admission: Default::default(),
            };
            tokio::spawn(mesh_proxy::proxy::listen::serve_http(
                shared.clone(),
                tcp,
                connection,
                false,
                drain.clone(),
                None,
            ));
        }
    });
    (address, registry)
}

/// A proxy on loopback passing TCP to `cluster` (of `clusters`), closing connections idle
/// for `idle_timeout`; returns its address.
pub async fn tcp_proxy(
    clusters: Vec<Cluster>,
    cluster: &str,
    idle_timeout: Option<Duration>,
) -> SocketAddr {
    let (shared, _) = shared(clusters);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let cluster = cluster.to_owned();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let flow = mesh_proxy::proxy::tcp::Flow {
                reporter: Reporter::Source,
                cluster: cluster.clone(),
                destination: address,
                downstream: peer,
                peer: None,
                idle_timeout,
                filters: Arc::default(),
            };
            tokio::spawn(mesh_proxy::proxy::tcp::proxy(shared.clone(), tcp, flow));
        }
    });
    address
}

/// The proxy's shared state over `clusters`, with a mesh identity, and its metrics registry.
fn shared(clusters: Vec<Cluster>) -> (Arc<Shared>, Arc<prometheus_client::registry::Registry>) {
    let mut config = Config::default();
    for c in clusters {
        config.clusters.insert(c.name.clone(), c);
    }
    let runtime = Runtime::build(Arc::new(config)).unwrap();
    shared_as(runtime, &mesh_testing::ca::TestCa::new(), "test", "client")
}

/// Shared state over `runtime`, as the workload `namespace`/`name` with a certificate from
/// `ca`, and its metrics registry.
pub fn shared_as(
    runtime: Runtime,
    ca: &mesh_testing::ca::TestCa,
    namespace: &str,
    name: &str,
) -> (Arc<Shared>, Arc<prometheus_client::registry::Registry>) {
    let tls = Arc::new(
        MeshTls::new(ca.store(namespace, name), ca.roots(), mesh_testing::ca::TRUST_DOMAIN)
            .unwrap(),
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let log = AccessLog::start(LogFormat::Off, &metrics);
    let shared = Arc::new(Shared::new(
        runtime,
        tls,
        metrics,
        log,
        Workload::default(),
        mesh_testing::ca::TestCa::id(namespace, name),
        Tuning::default(),
    ));
    (shared, Arc::new(registry))
}

/// mesh-proxy, as the workload `demo`/`server` of `ca`, serving the listener of `store` on
/// `socket` itself as a gateway does (no redirection needed): the configuration taken through
/// the xDS store, as the pilot's is.
pub fn serve_store(
    store: &mesh_proxy::xds::store::Store,
    ca: &mesh_testing::ca::TestCa,
    socket: tokio::net::TcpListener,
) {
    use mesh_proxy::proxy::listen::{Side, serve};
    let runtime = Runtime::build(store.current()).unwrap();
    let (shared, _) = shared_as(runtime, ca, "demo", "server");
    let (keep, drain) = mesh_runtime::drain::channel();
    tokio::spawn(async move {
        let _keep = keep;
        serve(socket, shared, Side::Gateway, drain).await;
    });
}

/// One request through the proxy: status, headers, body.
pub async fn call(
    proxy: SocketAddr,
    request: http::Request<Full<Bytes>>,
) -> (u16, http::HeaderMap, String) {
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&body).into_owned())
}

pub fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path).header("host", "svc.test").body(Full::new(Bytes::new())).unwrap()
}

pub fn failing_then_ok(failures: u32, status: u16) -> Arc<Behaviour> {
    Arc::new(move |n, _| (if n <= failures { status } else { 200 }, Duration::ZERO, Vec::new()))
}

pub fn fault(abort: Option<(u32, u32)>, delay_ms: Option<i32>) -> prost_types_any::Any {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
        FaultDelay, fault_delay::FaultDelaySecifier,
    };
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
        FaultAbort, HttpFault, fault_abort::ErrorType,
    };
    use envoy_types::pb::envoy::r#type::v3::{
        FractionalPercent, fractional_percent::DenominatorType,
    };
    let percent = |p: u32| {
        Some(FractionalPercent { numerator: p, denominator: DenominatorType::Hundred as i32 })
    };
    envoy_types::util::pack_any(HttpFault {
        abort: abort.map(|(status, p)| FaultAbort {
            error_type: Some(ErrorType::HttpStatus(status)),
            percentage: percent(p),
            ..Default::default()
        }),
        delay: delay_ms.map(|ms| FaultDelay {
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(millis(ms))),
            percentage: percent(100),
        }),
        ..Default::default()
    })
}

/// The encoded resource `name` of `type_url` that the pilot serves the golden mesh's
/// `frontend` sidecar (namespace demo, 10.1.0.5).
pub fn golden(type_url: &str, name: &str) -> Vec<u8> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh-pilot/tests/data/golden");
    let (snapshot, rejected) = mesh_pilot::source::local::read(&dir);
    assert!(rejected.is_empty(), "{rejected:?}");
    let proxy = mesh_pilot::model::Proxy {
        namespace: "demo".into(),
        labels: [("app".to_owned(), "frontend".to_owned())].into_iter().collect(),
        ips: vec!["10.1.0.5".parse().unwrap()],
        ..mesh_pilot::model::Proxy::default()
    };
    let all = mesh_pilot::translate::generate(type_url, &snapshot, &proxy).unwrap();
    let (_, any) = all.iter().find(|(n, _)| n == name).unwrap();
    any.value.clone()
}

/// A backend answering gRPC UNAVAILABLE (in a trailers-only response) once, then OK.
pub fn grpc_unavailable_once() -> Arc<Behaviour> {
    Arc::new(|n, _| {
        let status = if n == 1 { "14" } else { "0" };
        (
            200,
            Duration::ZERO,
            vec![
                ("grpc-status", status.to_owned()),
                ("content-type", "application/grpc".to_owned()),
            ],
        )
    })
}

/// A backend whose first answer takes `delay`, the others none.
pub fn slow_first(delay: Duration) -> Arc<Behaviour> {
    Arc::new(move |n, _| (200, if n == 1 { delay } else { Duration::ZERO }, Vec::new()))
}

/// `cluster` with outlier detection: ejected after two 5xx in a row, for 30 s, at most half
/// of the cluster at once.
pub fn with_outlier_detection(mut cluster: Cluster) -> Cluster {
    use envoy_types::pb::envoy::config::cluster::v3::OutlierDetection;
    cluster.outlier_detection = Some(OutlierDetection {
        consecutive_5xx: Some(UInt32Value { value: 2 }),
        base_ejection_time: Some(millis(30_000)),
        max_ejection_percent: Some(UInt32Value { value: 50 }),
        ..Default::default()
    });
    cluster
}

/// A CORS policy allowing `https://shop.example` (GET and POST, header `x-user`, exposing
/// `x-request-id`, preflights cached 600 s).
pub fn cors_policy() -> prost_types_any::Any {
    use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        StringMatcher, string_matcher::MatchPattern,
    };
    envoy_types::util::pack_any(CorsPolicy {
        allow_origin_string_match: vec![StringMatcher {
            match_pattern: Some(MatchPattern::Exact("https://shop.example".into())),
            ..Default::default()
        }],
        allow_methods: "GET,POST".into(),
        allow_headers: "x-user".into(),
        expose_headers: "x-request-id".into(),
        max_age: "600".into(),
        ..Default::default()
    })
}

/// A CORS preflight for a POST from `origin`.
pub fn preflight(origin: &str) -> http::Request<Full<Bytes>> {
    http::Request::options("/")
        .header("host", "svc.test")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A GET from a page of `origin`.
pub fn from_origin(origin: &str) -> http::Request<Full<Bytes>> {
    http::Request::get("/")
        .header("host", "svc.test")
        .header("origin", origin)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Mirrors every request of a route to `cluster`.
pub fn mirror_to(action: &mut r::RouteAction, cluster: &str) {
    action.request_mirror_policies = vec![r::route_action::RequestMirrorPolicy {
        cluster: cluster.into(),
        ..Default::default()
    }];
}

/// `cluster` speaking HTTP/2 to its endpoints (prior knowledge), keeping its other pool
/// settings.
pub fn as_http2(mut cluster: Cluster) -> Cluster {
    use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions as Options;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    };
    use prost::Message as _;
    const KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let mut options = cluster
        .typed_extension_protocol_options
        .get(KEY)
        .map(|any| Options::decode(any.value.as_slice()).unwrap())
        .unwrap_or_default();
    options.upstream_protocol_options =
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions::default(),
            )),
        }));
    cluster
        .typed_extension_protocol_options
        .insert(KEY.into(), envoy_types::util::pack_any(options));
    cluster
}
