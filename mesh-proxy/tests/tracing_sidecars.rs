//! Tracing as the mesh runs it: two mesh-proxy sidecars (processes, uid 1337, in their pods'
//! network namespaces behind mesh-init's capture, certificates from a real mesh-ca,
//! configuration from a real mesh-pilot) and `mesh-trace`'s receiver as the OTLP collector.
//! The tracing configuration comes two ways: as the pilot translates the mesh config's
//! OpenTelemetry provider and a Telemetry (clients sampled at 100 %, servers at 0 %, the
//! clients' access log filtered to `response.code >= 400`), and written by hand into what the
//! pilot sends (a relay writes the same into every HTTP connection manager, the server's with
//! an OTLP/HTTP collector, as Istio's `opentelemetry.http` provider). The collector listens on
//! each pod's loopback, OTLP/gRPC on 4317 and OTLP/HTTP on 4318. Checked as a user would see it: one trace per request,
//! the server span the child of the client span across mesh mTLS with each side's peer
//! identity, the caller's B3 headers passed on, only failed requests in the client's access
//! log, the spans counted in the metrics, and the spans still queued sent when a sidecar
//! stops.
//!
//! Needs root, iproute2, iptables and setpriv; outside CI a missing piece is reported loudly
//! and the test passes, under `CI=true` it fails.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod otel;
mod relay;
mod sidecar_process;
use relay::Relay;
use sidecar_process::{Options, Sidecar, request, serve_pilot_here, serve_relay};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::netns::{self, PodAndPeer};
use e2e::sidecar;
use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, ComparisonFilter, StatusCodeFilter, access_log_filter,
    comparison_filter,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, GrpcService, RuntimeUInt32, SocketAddress, address, grpc_service, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::trace::v3::OpenTelemetryConfig;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use mesh_trace::receiver::{Receiver, TraceView};
use prost::Message as _;

const COLLECTOR_CLUSTER: &str = "outbound|4317||otel-collector.mesh-system.svc.cluster.local";
/// Where the collector listens: on each pod's loopback, as a node-local agent would (the
/// sidecars' own traffic is never captured; at a pod's own address it would be, as Istio's
/// rules send a sidecar's calls to its own pod address to its inbound side).
const COLLECTOR: &str = "127.0.0.1:4317";
/// The collector's OTLP/HTTP side, which the server's sidecar exports to in the relay variant.
const COLLECTOR_HTTP_CLUSTER: &str = "outbound|4318||otel-collector.mesh-system.svc.cluster.local";
const COLLECTOR_HTTP: &str = "127.0.0.1:4318";
const WAIT: Duration = Duration::from_secs(20);

const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hello-1, namespace: demo}
spec:
  address: 10.99.0.1
  labels: {app: hello, version: v1, security.istio.io/tlsMode: istio}
  serviceAccount: hello
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hello, namespace: demo}
spec:
  hosts: [hello.demo.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /productpage}}]
    route: [{destination: {host: hello.demo.svc.cluster.local}}]
"#;

/// The collector's Service and endpoint (each pod's loopback), and the Telemetry of the
/// `demo` namespace.
const TELEMETRY: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: otel-collector, namespace: mesh-system}
spec:
  clusterIP: 10.96.0.40
  selector: {app: otel-collector}
  ports: [{name: grpc-otlp, port: 4317}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: otel-collector-1, namespace: mesh-system}
spec:
  address: 127.0.0.1
  labels: {app: otel-collector}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: demo, namespace: demo}
spec:
  tracing:
  - match: {mode: CLIENT}
    randomSamplingPercentage: 100
  - match: {mode: SERVER}
    randomSamplingPercentage: 0
  accessLogging:
  - match: {mode: CLIENT}
    providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
"#;

/// The mesh config: Istio's OpenTelemetry provider, the default for tracing.
const MESH_CONFIG: &str = r#"
accessLogFile: /dev/stdout
extensionProviders:
- name: otel
  opentelemetry: {service: otel-collector.mesh-system.svc.cluster.local, port: 4317}
defaultProviders: {tracing: [otel]}
"#;

/// Where the sidecars' tracing configuration comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The pilot's translation of the mesh config and a Telemetry.
    Pilot,
    /// Written by a relay into what the pilot sends.
    Relay,
}

/// The HCM `tracing` the pilot writes for a workload named `service`, sampling `percentage`,
/// for an `opentelemetry` provider with `http` (OTLP over HTTP).
fn tracing_over_http(service: &str, percentage: f64) -> Tracing {
    use envoy_types::pb::envoy::config::core::v3::{HttpService, HttpUri, http_uri};
    let otel = OpenTelemetryConfig {
        http_service: Some(HttpService {
            http_uri: Some(HttpUri {
                uri: "otel-collector.mesh-system.svc.cluster.local/v1/traces".into(),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                    COLLECTOR_HTTP_CLUSTER.into(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        }),
        service_name: service.into(),
        ..Default::default()
    };
    otel::tracing_to(&otel, percentage)
}

/// The HCM `tracing` the pilot writes for a workload named `service`, sampling `percentage`.
fn tracing(service: &str, percentage: f64) -> Tracing {
    let otel = OpenTelemetryConfig {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: COLLECTOR_CLUSTER.into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        service_name: service.into(),
        ..Default::default()
    };
    otel::tracing_to(&otel, percentage)
}

/// The file logger logging every request, as the pilot writes it for `accessLogFile`.
fn everything() -> AccessLog {
    AccessLog { name: "envoy.access_loggers.file".into(), filter: None, config_type: None }
}

/// The file logger with the filter the pilot compiles `response.code >= 400` into.
fn errors_only() -> AccessLog {
    AccessLog {
        name: "envoy.access_loggers.file".into(),
        filter: Some(AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::StatusCodeFilter(
                StatusCodeFilter {
                    comparison: Some(ComparisonFilter {
                        op: comparison_filter::Op::Ge as i32,
                        value: Some(RuntimeUInt32 {
                            default_value: 400,
                            runtime_key: "unset".into(),
                        }),
                    }),
                },
            )),
        }),
        config_type: None,
    }
}

/// A collector's cluster `name`: a static endpoint, `address`, on the pod's loopback.
fn collector_cluster(name: &str, address: &str) -> Cluster {
    let address: SocketAddr = address.parse().unwrap();
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: address.ip().to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                        address.port(),
                    ))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Writes `tracing` (and `access_log`) into every HTTP connection manager of `chain`.
fn trace_chain(chain: &mut FilterChain, tracing: &Tracing, access_log: &[AccessLog]) {
    for f in &mut chain.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else { continue };
        if f.name != "envoy.filters.network.http_connection_manager" {
            continue;
        }
        let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        hcm.tracing = Some(tracing.clone());
        hcm.access_log = access_log.to_vec();
        any.value = hcm.encode_to_vec();
    }
}

/// A relay to `pilot` adding the collector's cluster and writing `tracing` and `access_log`
/// into every connection manager, as the pilot does from a Telemetry.
fn tracing_relay(pilot: String, tracing: Tracing, access_log: Vec<AccessLog>) -> Relay {
    let rewrite = move |mut response: DiscoveryResponse| {
        if response.type_url == mesh_api::xds::LISTENER_TYPE {
            for any in &mut response.resources {
                let mut listener = Listener::decode(any.value.as_slice()).unwrap();
                for chain in listener
                    .filter_chains
                    .iter_mut()
                    .chain(listener.default_filter_chain.iter_mut())
                {
                    trace_chain(chain, &tracing, &access_log);
                }
                any.value = listener.encode_to_vec();
            }
        }
        if response.type_url == mesh_api::xds::CLUSTER_TYPE {
            for (name, address) in
                [(COLLECTOR_CLUSTER, COLLECTOR), (COLLECTOR_HTTP_CLUSTER, COLLECTOR_HTTP)]
            {
                response
                    .resources
                    .push(envoy_types::util::pack_any(collector_cluster(name, address)));
            }
        }
        response
    };
    Relay { pilot, rewrite: Arc::new(rewrite) }
}

fn snapshot(dir: &Path, source: Source) -> Arc<mesh_pilot::model::Snapshot> {
    let config = match source {
        Source::Pilot => format!("{CONFIG}---{TELEMETRY}"),
        Source::Relay => CONFIG.to_owned(),
    };
    std::fs::write(dir.join("mesh.yaml"), config).unwrap();
    let (mut snapshot, rejected) = mesh_pilot::source::local::read(dir);
    assert!(rejected.is_empty(), "{rejected:?}");
    if source == Source::Pilot {
        let mesh_config =
            mesh_api::mesh::MeshConfig::from_yaml("mesh config", MESH_CONFIG).unwrap();
        snapshot.root_namespace.clone_from(&mesh_config.root_namespace);
        snapshot.mesh_config = Arc::new(mesh_config);
    }
    snapshot.version = 1;
    Arc::new(snapshot)
}

/// Serves `receiver` inside `ns` on `address`.
fn serve_collector(ns: &str, address: &str, receiver: &Receiver) {
    let listener = netns::listen(ns, address.parse().unwrap());
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(receiver.clone().serve(listener, std::future::pending()));
}

/// Serves `receiver`'s OTLP/HTTP side inside `ns` on `address`.
fn serve_collector_over_http(ns: &str, address: &str, receiver: &Receiver) {
    let listener = netns::listen(ns, address.parse().unwrap());
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(receiver.clone().serve_http(listener, std::future::pending()));
}

/// The app: echoes the trace headers it got, one `name=value` a line.
fn serve_app(ns: &str) {
    let listener = netns::listen(ns, "0.0.0.0:8080".parse().unwrap());
    netns::http_app(listener, |head, _| {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .filter(|(k, _)| k == "traceparent" || k.starts_with("x-b3-") || k == "x-request-id")
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect()
    });
}

fn echoed<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the app got no {name}: {body}"))
}

async fn wait_trace(receiver: &Receiver, traceparent: &str, spans: usize, logs: &str) -> TraceView {
    let id = mesh_trace::context::parse_traceparent(traceparent).unwrap().trace_id;
    match receiver.wait_for_trace(&id, spans, WAIT).await {
        Some(trace) => trace,
        None => panic!(
            "no trace of {spans} spans for {traceparent}: {:?}\n{logs}",
            receiver.spans_of(&id).await
        ),
    }
}

fn kind<'a>(trace: &'a TraceView, kind: &str) -> &'a mesh_trace::receiver::SpanView {
    trace
        .spans
        .iter()
        .find(|s| s.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} span: {trace:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_trace_as_the_pilot_translates_a_telemetry() {
    two_sidecars(Source::Pilot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_trace_as_their_connection_managers_say() {
    two_sidecars(Source::Relay).await;
}

async fn two_sidecars(source: Source) {
    if !netns::can_run(&[]) {
        return;
    }
    let net = PodAndPeer::new(if source == Source::Pilot { "mtp" } else { "mtr" });
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();
    serve_app(&net.peer);

    let (_publish, snapshots) = tokio::sync::watch::channel(snapshot(&config_dir, source));
    let discovery = mesh_pilot::ads::Discovery::new(snapshots);
    let ca = mesh_testing::ca::TestCa::new();
    let ca_state = dir.path().join("ca");
    ca.write_state_dir(&ca_state);
    let root = dir.path().join("root-cert.pem");
    std::fs::write(&root, &ca.root_pem).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "t-client demo/client\nt-hello demo/hello\n").unwrap();
    let receiver = Receiver::default();
    let pilot = serve_pilot_here(&discovery).await;

    // The client's spans go out within 100 ms; the server's wait (a minute) until it stops.
    let pods = [
        (
            &net.pod,
            "client-1",
            "10.99.0.2",
            "client",
            tracing("client.demo", 100.0),
            vec![errors_only()],
            "100",
        ),
        (
            &net.peer,
            "hello-1",
            "10.99.0.1",
            "hello",
            tracing_over_http("hello.demo", 0.0),
            vec![everything()],
            "60000",
        ),
    ];
    let mut sidecars = Vec::new();
    for (ns, pod, ip, sa, tracing, access_log, delay) in pods {
        match source {
            Source::Pilot => sidecar::serve_xds(ns, &discovery),
            Source::Relay => serve_relay(ns, tracing_relay(pilot.clone(), tracing, access_log)),
        }
        serve_collector(ns, COLLECTOR, &receiver);
        serve_collector_over_http(ns, COLLECTOR_HTTP, &receiver);
        sidecar::serve_ca(ns, &ca_state, &tokens);
        sidecar::capture(ns, &["-u", "1337", "-g", "1337", "--ipv6", "off"]);
        let env = [("OTEL_BSP_SCHEDULE_DELAY", delay)];
        let options = Options { root: &root, drain: "1s", env: &env };
        sidecars.push(Sidecar::start(ns, dir.path(), pod, ip, sa, &options));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sidecars.iter_mut().all(Sidecar::ready) {
        if Instant::now() > deadline {
            let logs: Vec<String> = sidecars.iter().map(Sidecar::logs).collect();
            panic!("the sidecars did not become ready:\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs =
        |sidecars: &[Sidecar]| sidecars.iter().map(Sidecar::logs).collect::<Vec<_>>().join("\n");
    let client_ns = net.pod.clone();
    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let ns = client_ns.clone();
        tokio::task::spawn_blocking(move || request(&ns, "10.96.0.10:80", path, headers))
    };

    // A request without trace headers: the client's sidecar starts a trace (100 %), the
    // server's joins it (its own 0 % does not split a trace its caller decided on).
    let (status, body) = get("/productpage", &[]).await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", logs(&sidecars));
    let traceparent = echoed(&body, "traceparent").to_owned();
    assert!(traceparent.ends_with("-01"), "{traceparent}");

    // A caller's B3 trace, passed on in B3 and W3C.
    let (status, b3_body) = get(
        "/productpage/b3",
        &[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(echoed(&b3_body, "x-b3-traceid"), "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(echoed(&b3_body, "x-b3-sampled"), "1");
    assert!(echoed(&b3_body, "traceparent").contains("80f198ee56343ba864fe8b2a57d3eff7"));

    // A request with no route: answered by the client's sidecar, a 404 in its access log.
    let (status, _) = get("/missing", &[]).await.unwrap();
    assert_eq!(status, 404);

    // The client's spans arrive at once: a root CLIENT span for the first request.
    let client_only = wait_trace(&receiver, &traceparent, 1, &logs(&sidecars)).await;
    let client_span = kind(&client_only, "CLIENT");
    assert_eq!(client_span.parent_span_id, None);
    assert_eq!(client_span.service, "client.demo");
    assert_eq!(client_span.name, "hello.demo.svc.cluster.local:80/productpage*");
    assert_eq!(client_span.attributes["http.status_code"], 200);
    assert_eq!(
        client_span.attributes["upstream_cluster"],
        "outbound|80||hello.demo.svc.cluster.local"
    );
    assert_eq!(client_span.attributes["peer.principal"], "spiffe://cluster.local/ns/demo/sa/hello");
    assert_eq!(
        client_span.attributes["node_id"],
        "sidecar~10.99.0.2~client-1.demo~demo.svc.cluster.local"
    );
    assert_eq!(client_span.attributes["guid:x-request-id"], echoed(&body, "x-request-id"));

    // The access log filter: the client's sidecar logs the 404 and not the 200s (its lines
    // are written in order: once the 404 is there, the 200s would be too); the server's
    // logger has no filter: it logs every request (the mesh config's `accessLogFile`).
    let deadline = Instant::now() + WAIT;
    while !sidecars[0].access_log().iter().any(|l| l["response_code"] == 404) {
        assert!(Instant::now() < deadline, "no 404 in the access log:\n{}", logs(&sidecars));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client_log = sidecars[0].access_log();
    assert!(client_log.iter().all(|l| l["response_code"] != 200), "{client_log:?}");
    assert!(
        sidecars[1].access_log().iter().any(|l| l["path"] == "/productpage"),
        "{}",
        logs(&sidecars)
    );

    // The spans are counted: none dropped.
    assert_eq!(sidecars[0].metric("mesh_proxy_spans_dropped_total"), Some(0));
    // The exporter counts a batch once the collector has answered, after it kept the spans.
    let deadline = Instant::now() + WAIT;
    while sidecars[0].metric("mesh_proxy_spans_exported_total") < Some(1) {
        assert!(Instant::now() < deadline, "no span counted as exported:\n{}", logs(&sidecars));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The server's sidecar stops: it drains and sends the spans it still holds.
    let pid = sidecars[1].child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let trace = wait_trace(&receiver, &traceparent, 2, &logs(&sidecars)).await;
    let (client_span, server_span) = (kind(&trace, "CLIENT"), kind(&trace, "SERVER"));
    assert_eq!(server_span.parent_span_id.as_ref(), Some(&client_span.span_id));
    assert_eq!(server_span.service, "hello.demo");
    assert_eq!(server_span.name, client_span.name, "the caller named it");
    assert_eq!(
        server_span.attributes["peer.principal"],
        "spiffe://cluster.local/ns/demo/sa/client"
    );
    assert_eq!(server_span.attributes["upstream_cluster"], "inbound|8080||");
    assert_eq!(
        traceparent.split('-').nth(2),
        Some(server_span.span_id.as_str()),
        "the app's parent is the server's span"
    );
    let b3_trace =
        wait_trace(&receiver, echoed(&b3_body, "traceparent"), 2, &logs(&sidecars)).await;
    assert_eq!(kind(&b3_trace, "CLIENT").parent_span_id.as_deref(), Some("e457b5a2e4d86bd1"));
    let exit = sidecars[1].child.wait().unwrap();
    assert!(exit.success(), "{exit}\n{}", logs(&sidecars));
}
