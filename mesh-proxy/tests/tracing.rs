//! Tracing through a pair of proxies, in process: a client-side proxy (outbound, CLIENT
//! spans) in front of a server-side proxy (inbound, SERVER spans) in front of an app that
//! echoes the trace headers it got, each proxy's connection manager carrying the `tracing`
//! the pilot writes (the OpenTelemetry tracer naming the collector's cluster), and
//! `mesh-trace`'s receiver as the collector. Checked as a user of Jaeger would see it: one
//! trace per request with the server span the child of the client span, the attributes
//! people filter on, each header format joined and passed on, forced sampling, nothing sent
//! at 0 %, and a dead collector that changes no request's outcome.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;
mod otel;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{GrpcService, grpc_service};
use envoy_types::pb::envoy::config::trace::v3::OpenTelemetryConfig;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::r#type::tracing::v3::{CustomTag, custom_tag};
use mesh_proxy::filters::HttpOptions;
use mesh_proxy::listener::Upgrades;
use mesh_proxy::proxy::Shared;
use mesh_proxy::proxy::http::{Admission, Connection, Routes};
use mesh_proxy::routing::RouteTable;
use mesh_proxy::runtime::Runtime;
use mesh_proxy::telemetry::Reporter;
use mesh_proxy::trace::{Exporters, Identity};
use mesh_proxy::xds::store::Config;
use mesh_trace::receiver::{Receiver, TraceView};

const COLLECTOR: &str = "outbound|4317||otel-collector.mesh-system.svc.cluster.local";
const SERVER_CLUSTER: &str = "outbound|9080||reviews.demo.svc.cluster.local";
const APP_CLUSTER: &str = "inbound|9080||";
const WAIT: Duration = Duration::from_secs(20);
/// The trace headers the app echoes back, and the response header it echoes each in.
const ECHOED: [(&str, &str); 8] = [
    ("traceparent", "echo-traceparent"),
    ("tracestate", "echo-tracestate"),
    ("b3", "echo-b3"),
    ("x-b3-traceid", "echo-x-b3-traceid"),
    ("x-b3-spanid", "echo-x-b3-spanid"),
    ("x-b3-parentspanid", "echo-x-b3-parentspanid"),
    ("x-b3-sampled", "echo-x-b3-sampled"),
    ("x-request-id", "echo-x-request-id"),
];

/// The HCM `tracing` the pilot writes: the OpenTelemetry tracer to the collector's cluster.
fn tracing(service: &str, percentage: f64) -> Tracing {
    let otel = OpenTelemetryConfig {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc { cluster_name: COLLECTOR.into(), ..Default::default() },
            )),
            ..Default::default()
        }),
        service_name: service.into(),
        ..Default::default()
    };
    Tracing {
        custom_tags: vec![CustomTag {
            tag: "istio.namespace".into(),
            r#type: Some(custom_tag::Type::Literal(custom_tag::Literal { value: "demo".into() })),
        }],
        ..otel::tracing_to(&otel, percentage)
    }
}

/// A proxy on loopback, as `reporter`, routing everything to `cluster` with `tracing` on its
/// connection manager; its clusters are `clusters`, its exporters follow `env`.
struct Proxy {
    address: SocketAddr,
    shared: Arc<Shared>,
}

async fn proxy(
    reporter: Reporter,
    cluster: &str,
    clusters: Vec<envoy_types::pb::envoy::config::cluster::v3::Cluster>,
    tracing: Tracing,
    env: &[(&str, &str)],
) -> Proxy {
    let hcm = HttpConnectionManager { tracing: Some(tracing), ..Default::default() };
    let options = Arc::new(HttpOptions::of(&hcm));
    let spec = options.trace.as_ref().unwrap().export.clone();
    let route = common::route(cluster, |_| {}, Vec::new());
    let table = Arc::new(RouteTable::compile(&common::route_config(route)).unwrap());
    let mut config = Config::default();
    for c in clusters {
        config.clusters.insert(c.name.clone(), c);
    }
    let runtime = Runtime::build(Arc::new(config)).unwrap();
    let (shared, _) = common::shared_as(runtime, &mesh_testing::ca::TestCa::new(), "demo", "app");
    let env: BTreeMap<String, String> =
        env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let mut exporters = Exporters::new(env, Identity::default());
    exporters.sync_specs(&shared.runtime.load(), vec![spec], &shared.spans).await;
    // The exporters live as long as the test's runtime.
    tokio::spawn(async move {
        let _exporters = exporters;
        std::future::pending::<()>().await;
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (keep, drain) = mesh_runtime::drain::channel();
    let serving = shared.clone();
    tokio::spawn(async move {
        let _keep = keep;
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let connection = Connection {
                reporter,
                downstream: peer,
                destination: ([127, 0, 0, 1], 9080).into(),
                peer: None,
                routes: Routes::Inline(table.clone()),
                upgrades: Upgrades::websocket(),
                admission: Admission { options: options.clone(), ..Admission::default() },
            };
            tokio::spawn(mesh_proxy::proxy::listen::serve_http(
                serving.clone(),
                tcp,
                connection,
                false,
                drain.clone(),
                None,
            ));
        }
    });
    Proxy { address, shared }
}

/// The collector: `mesh-trace`'s receiver on loopback.
async fn collector() -> (Receiver, SocketAddr) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(receiver.clone().serve(listener, std::future::pending()));
    (receiver, address)
}

/// The app, echoing the trace headers it got; then the server-side proxy in front of it and
/// the client-side proxy in front of that, both exporting to `collector`, sampling at
/// `client` and `server` percent.
async fn mesh(collector: SocketAddr, client: f64, server: f64) -> (Proxy, Proxy) {
    let echo: Arc<common::Behaviour> = Arc::new(|_, parts| {
        let headers = ECHOED
            .iter()
            .filter_map(|(name, echo)| {
                let value = parts.headers.get(*name)?.to_str().ok()?.to_owned();
                Some((*echo, value))
            })
            .collect();
        (200, Duration::ZERO, headers)
    });
    let app = common::backend(echo).await;
    let collector_cluster = || common::static_cluster(COLLECTOR, &[collector], None);
    let env = [("OTEL_BSP_SCHEDULE_DELAY", "20")];
    let server_proxy = proxy(
        Reporter::Destination,
        APP_CLUSTER,
        vec![common::static_cluster(APP_CLUSTER, &[app.address], None), collector_cluster()],
        tracing("reviews.demo", server),
        &env,
    )
    .await;
    let client_proxy = proxy(
        Reporter::Source,
        SERVER_CLUSTER,
        vec![
            common::static_cluster(SERVER_CLUSTER, &[server_proxy.address], None),
            collector_cluster(),
        ],
        tracing("productpage.demo", client),
        &env,
    )
    .await;
    (client_proxy, server_proxy)
}

/// A GET through `proxy` with `headers`: the status and what the app echoed.
async fn get(proxy: &Proxy, headers: &[(&str, &str)]) -> (u16, BTreeMap<String, String>) {
    let mut request = common::get("/reviews/0");
    request.headers_mut().insert("host", "reviews:9080".parse().unwrap());
    for (k, v) in headers {
        request.headers_mut().insert(
            http::header::HeaderName::try_from(*k).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let (status, response, _) = common::call(proxy.address, request).await;
    let echoed = response
        .iter()
        .filter_map(|(k, v)| {
            Some((k.as_str().strip_prefix("echo-")?.to_owned(), v.to_str().ok()?.to_owned()))
        })
        .collect();
    (status, echoed)
}

/// The trace id of a `traceparent`.
fn trace_of(traceparent: &str) -> [u8; 16] {
    mesh_trace::context::parse_traceparent(traceparent).unwrap().trace_id
}

fn span_of(traceparent: &str) -> String {
    traceparent.split('-').nth(2).unwrap().to_owned()
}

async fn wait_trace(receiver: &Receiver, traceparent: &str, spans: usize) -> TraceView {
    let id = trace_of(traceparent);
    match receiver.wait_for_trace(&id, spans, WAIT).await {
        Some(trace) => trace,
        None => {
            panic!("no trace of {spans} spans for {traceparent}: {:?}", receiver.latest(5).await)
        }
    }
}

fn kind<'a>(trace: &'a TraceView, kind: &str) -> &'a mesh_trace::receiver::SpanView {
    trace
        .spans
        .iter()
        .find(|s| s.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} span: {trace:?}"))
}

#[tokio::test]
async fn a_request_through_two_proxies_is_one_trace_of_a_client_and_a_server_span() {
    let (receiver, address) = collector().await;
    let (client, _server) = mesh(address, 100.0, 0.0).await;
    let (status, echoed) = get(&client, &[]).await;
    assert_eq!(status, 200);
    let traceparent = &echoed["traceparent"];
    assert!(traceparent.ends_with("-01"), "sampled: {traceparent}");
    let trace = wait_trace(&receiver, traceparent, 2).await;

    let (client_span, server_span) = (kind(&trace, "CLIENT"), kind(&trace, "SERVER"));
    assert_eq!(client_span.parent_span_id, None, "the client proxy started the trace");
    assert_eq!(server_span.parent_span_id.as_ref(), Some(&client_span.span_id));
    assert_eq!(span_of(traceparent), server_span.span_id, "the app's parent is the server span");
    assert_eq!(client_span.service, "productpage.demo");
    assert_eq!(server_span.service, "reviews.demo");
    for span in [client_span, server_span] {
        assert_eq!(span.name, "reviews.demo.svc.cluster.local:9080/*", "{span:?}");
        let attribute = |key: &str| span.attributes.get(key).cloned().unwrap_or_default();
        assert_eq!(attribute("http.method"), "GET");
        assert_eq!(attribute("http.status_code"), 200);
        assert_eq!(attribute("http.url"), "http://reviews:9080/reviews/0");
        assert_eq!(attribute("response_flags"), "-");
        assert_eq!(attribute("istio.namespace"), "demo");
        assert_eq!(attribute("guid:x-request-id"), echoed["x-request-id"].as_str());
        assert_eq!(attribute("request_size"), 0);
        assert_eq!(attribute("peer.address"), "127.0.0.1");
        assert_eq!(span.status, "UNSET");
    }
    assert_eq!(client_span.attributes["upstream_cluster"], SERVER_CLUSTER);
    assert_eq!(server_span.attributes["upstream_cluster"], APP_CLUSTER);
    assert!(!echoed.contains_key("b3") && !echoed.contains_key("x-b3-traceid"), "W3C only");
}

#[tokio::test]
async fn each_header_format_is_joined_and_passed_on_with_w3c() {
    let (receiver, address) = collector().await;
    let (client, _server) = mesh(address, 0.0, 0.0).await;
    // A trace each, so their spans do not mix.
    let ids = [
        "463ac35c9f6413ad48485a3953bb6124",
        "5ab3c35c9f6413ad48485a3953bb6124",
        "6bc3c35c9f6413ad48485a3953bb6124",
    ];
    // The format, the headers a caller sends, the header the app must get back.
    type Case = (&'static str, Vec<(&'static str, String)>, &'static str);
    let cases: [Case; 3] = [
        ("w3c", vec![("traceparent", format!("00-{}-0020000000000001-01", ids[0]))], "traceparent"),
        ("b3 single", vec![("b3", format!("{}-0020000000000001-1", ids[1]))], "b3"),
        (
            "b3 multi",
            vec![
                ("x-b3-traceid", ids[2].to_owned()),
                ("x-b3-spanid", "0020000000000001".to_owned()),
                ("x-b3-sampled", "1".to_owned()),
            ],
            "x-b3-traceid",
        ),
    ];
    for ((format, headers, kept), trace_id) in cases.into_iter().zip(ids) {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, echoed) = get(&client, &headers).await;
        assert_eq!(status, 200, "{format}");
        assert!(echoed.contains_key(kept), "{format}: the app gets its format back: {echoed:?}");
        let traceparent = &echoed["traceparent"];
        assert!(traceparent.contains(trace_id), "{format}: W3C too, same trace: {traceparent}");
        let trace = wait_trace(&receiver, traceparent, 2).await;
        let client_span = kind(&trace, "CLIENT");
        assert_eq!(
            client_span.parent_span_id.as_deref(),
            Some("0020000000000001"),
            "{format}: the caller's span is the parent"
        );
        assert_eq!(kind(&trace, "SERVER").parent_span_id.as_ref(), Some(&client_span.span_id));
        if format == "b3 multi" {
            assert_eq!(echoed["x-b3-traceid"], trace_id);
            assert_eq!(echoed["x-b3-sampled"], "1");
            assert_eq!(echoed["x-b3-spanid"], kind(&trace, "SERVER").span_id);
        }
        if format == "b3 single" {
            let b3 = &echoed["b3"];
            assert!(
                b3.starts_with(&format!("{trace_id}-{}-1-", kind(&trace, "SERVER").span_id)),
                "{b3}"
            );
        }
        // A request id the caller sent is kept.
        let (_, echoed) = get(&client, &[("x-request-id", "mine-1")]).await;
        assert_eq!(echoed["x-request-id"], "mine-1", "{format}");
    }
}

#[tokio::test]
async fn forced_sampling_is_honoured_and_nothing_else_is_sent_at_zero_percent() {
    let (receiver, address) = collector().await;
    let (client, _server) = mesh(address, 0.0, 0.0).await;
    for _ in 0..20 {
        let (status, echoed) = get(&client, &[]).await;
        assert_eq!(status, 200);
        assert!(echoed["traceparent"].ends_with("-00"), "not sampled, and the app is told");
    }
    let (_, forced) = get(&client, &[("x-client-trace-id", "debug-me")]).await;
    wait_trace(&receiver, &forced["traceparent"], 2).await;
    let (_, flagged) = get(&client, &[("x-b3-sampled", "1")]).await;
    assert_eq!(flagged["x-b3-sampled"], "1");
    wait_trace(&receiver, &flagged["traceparent"], 2).await;
    // The unsampled requests went into the queue before the forced ones: had any been
    // exported, it would have arrived first.
    let traces = receiver.latest(100).await;
    assert_eq!(traces.len(), 2, "only the forced requests: {traces:?}");
    assert_eq!(client.shared.spans.dropped(), 0);
}

#[tokio::test]
async fn a_dead_collector_changes_no_request_outcome() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (client, server) = mesh(dead, 100.0, 100.0).await;
    for _ in 0..30 {
        let (status, echoed) = get(&client, &[]).await;
        assert_eq!(status, 200);
        assert!(echoed["traceparent"].ends_with("-01"));
    }
    // Every span is counted as dropped once its export fails.
    let counted = async {
        while client.shared.spans.dropped() < 30 || server.shared.spans.dropped() < 30 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, counted).await.unwrap_or_else(|_| {
        panic!(
            "dropped: client {}, server {}",
            client.shared.spans.dropped(),
            server.shared.spans.dropped()
        )
    });
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(client.shared.spans.metrics()));
    let mut scrape = String::new();
    prometheus_client::encoding::text::encode(&mut scrape, &registry).unwrap();
    let line = scrape.lines().find(|l| l.starts_with("mesh_proxy_spans_dropped_total ")).unwrap();
    let dropped: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(dropped >= 30, "{scrape}");
}

#[tokio::test]
async fn the_tap_names_the_trace_of_a_recorded_request() {
    let (_receiver, address) = collector().await;
    let (client, _server) = mesh(address, 0.0, 0.0).await;
    let mut tap = client.shared.log.tap().open(None).unwrap();
    let (_, echoed) = get(&client, &[]).await;
    let (_, sampled) = get(&client, &[("x-b3-sampled", "1")]).await;
    let mut trace_ids = Vec::new();
    for _ in 0..2 {
        let line = tokio::time::timeout(WAIT, tap.next()).await.unwrap().json();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        trace_ids.push(json["trace_id"].as_str().unwrap().to_owned());
    }
    assert!(echoed["traceparent"].ends_with("-00"));
    let recorded = mesh_trace::context::to_hex(&trace_of(&sampled["traceparent"]));
    assert_eq!(trace_ids, vec![String::new(), recorded], "only a recorded request names one");
}

/// A configuration whose one listener's connection manager traces to [`COLLECTOR`], the
/// collector's cluster having its endpoint at `collector`.
fn traced_config(collector: SocketAddr) -> Arc<Config> {
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
    let hcm = HttpConnectionManager {
        tracing: Some(tracing("gateway.demo", 100.0)),
        route_specifier: Some(
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier::RouteConfig(
                common::route_config(common::route("x", |_| {}, Vec::new())),
            ),
        ),
        ..Default::default()
    };
    let listener = Listener {
        name: "0.0.0.0_8080".into(),
        address: Some(envoy_types::pb::envoy::config::core::v3::Address {
            address: Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                envoy_types::pb::envoy::config::core::v3::SocketAddress {
                    address: "0.0.0.0".into(),
                    port_specifier: Some(
                        envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(8080),
                    ),
                    ..Default::default()
                },
            )),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(envoy_types::util::pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut config = Config::default();
    config.listeners.insert(listener.name.clone(), listener);
    let cluster = common::static_cluster(COLLECTOR, &[collector], None);
    config.clusters.insert(cluster.name.clone(), cluster);
    Arc::new(config)
}

fn span(n: u8) -> mesh_trace::export::SpanRecord {
    let start = std::time::SystemTime::now();
    mesh_trace::export::SpanRecord {
        trace_id: [n; 16],
        span_id: [n; 8],
        parent_span_id: None,
        name: "test".into(),
        kind: mesh_trace::export::Kind::Server,
        start,
        end: start,
        attributes: Vec::new(),
        status: mesh_trace::export::SpanStatus::Unset,
    }
}

#[tokio::test]
async fn the_exporters_follow_the_collector_when_an_update_moves_it() {
    let ((first, first_address), (second, second_address)) = (collector().await, collector().await);
    let runtime = Runtime::build(traced_config(first_address)).unwrap();
    let spec = mesh_proxy::trace::exporters::specs(&runtime).pop().expect("the tracer's collector");
    assert_eq!(spec.collector, mesh_proxy::trace::Collector::Cluster(COLLECTOR.into()));
    let (shared, _) = common::shared_as(runtime, &mesh_testing::ca::TestCa::new(), "demo", "gw");
    let env = BTreeMap::from([("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "20".to_owned())]);
    let (stop, stopped) = mesh_proxy::trace::stop_channel();
    tokio::spawn(mesh_proxy::trace::follow(
        shared.clone(),
        Exporters::new(env, Identity::default()),
        stopped,
    ));

    let sent = |n| shared.spans.send(&spec, vec![span(n)]);
    let arrived = |receiver: &Receiver, n: u8, within: Duration| {
        let receiver = receiver.clone();
        async move { receiver.wait_for_trace(&[n; 16], 1, within).await.is_some() }
    };
    // The first sync happens as the task starts: wait for it.
    let deadline = std::time::Instant::now() + WAIT;
    while !shared.spans.exports(&spec) {
        assert!(std::time::Instant::now() < deadline, "no exporter for {spec:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sent(1);
    assert!(arrived(&first, 1, WAIT).await, "to the first collector");

    // An update moves the collector's endpoint: the spans sent once the exporters have
    // followed it go to the new one.
    let moved = Runtime::update(traced_config(second_address), &shared.runtime.load()).unwrap();
    shared.runtime.store(Arc::new(moved));
    shared.updates.send_modify(|n| *n += 1);
    let deadline = std::time::Instant::now() + WAIT;
    let mut n = 2;
    loop {
        sent(n);
        if arrived(&second, n, Duration::from_millis(200)).await {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never exported to the moved collector");
        n += 1;
    }
    assert!(second.spans_of(&[1; 16]).await.is_none(), "nothing sent twice");

    // Stopping sends what is queued.
    sent(200);
    stop.stop(Duration::from_secs(5)).await;
    assert!(second.spans_of(&[200; 16]).await.is_some(), "flushed at stop");
    assert_eq!(shared.spans.dropped(), 0);
}
