//! Two mesh-proxy sidecars, as the mesh runs them: each in its pod's network namespace behind
//! mesh-init's capture, running as uid 1337, with its certificate from a real mesh-ca and its
//! configuration from a real mesh-pilot. The client pod's calls go through its sidecar, over
//! mesh mTLS to the server pod's sidecar, and on to the apps. Checked as a user would see it:
//! what the apps receive (source 127.0.0.6, the caller's identity in XFCC), every protocol
//! (HTTP/1.1 keep-alive, large streamed bodies, WebSocket, gRPC unary and streaming, a
//! server-first TCP protocol), PERMISSIVE inbound, an endpoint with the wrong identity
//! refused, routes changed under load without a failed request, Istio's metrics and the
//! access log on both sides.
//!
//! Needs root, iproute2, iptables, setpriv and python3 with grpcio; outside CI a missing
//! piece is reported loudly and the test passes, under `CI=true` it fails.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod relay;
mod sidecar_process;
use relay::Relay;
use sidecar_process::{Options, Sidecar, serve_pilot_here, serve_relay};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::netns::{self, PodAndPeer};
use e2e::sidecar;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: hello}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9090, targetPort: 9090}
  - {name: mysql, port: 3306, targetPort: 3306}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hello-1, namespace: demo}
spec:
  address: 10.99.0.1
  labels: {app: hello, version: v1, security.istio.io/tlsMode: istio}
  serviceAccount: hello
---
apiVersion: v1
kind: Service
metadata: {name: impostor, namespace: demo}
spec:
  clusterIP: 10.96.0.20
  selector: {app: impostor}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: impostor-1, namespace: demo}
spec:
  address: 10.99.0.1
  labels: {app: impostor, security.istio.io/tlsMode: istio}
  serviceAccount: impostor
"#;

/// A VirtualService that sets the `x-route` header to `tag` on requests to hello (the app
/// echoes it back), for the paths the rest of the test uses: any other path has no route
/// (404).
fn route(tag: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: hello, namespace: demo}}
spec:
  hosts: [hello.demo.svc.cluster.local]
  http:
  - match: [{{uri: {{prefix: /load}}}}, {{uri: {{prefix: /slow}}}}]
    headers: {{request: {{set: {{x-route: {tag}}}}}}}
    route: [{{destination: {{host: hello.demo.svc.cluster.local}}}}]
"#
    )
}

fn here(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sidecars").join(file)
}

/// `python3 client.py args...` in namespace `ns` as root (captured: the sidecar runs as 1337).
fn client(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3"])
        .arg(here("client.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A plain HTTP GET from inside `ns` (to the sidecar's own ports on loopback).
fn local_get(ns: &str, port: u16, path: &str) -> (u16, String) {
    sidecar_process::request(ns, &format!("127.0.0.1:{port}"), path, &[])
}

/// A relay to `pilot` that, while `taint` is set, adds a route configuration the proxy must
/// refuse to every route response.
fn tainting_relay(pilot: String, taint: Arc<std::sync::atomic::AtomicBool>) -> Relay {
    let rewrite = move |mut response: DiscoveryResponse| {
        if taint.load(std::sync::atomic::Ordering::Relaxed)
            && response.type_url == mesh_api::xds::ROUTE_TYPE
        {
            use envoy_types::pb::envoy::config::route::v3 as r;
            let bad = r::RouteConfiguration {
                name: "tainted".into(),
                virtual_hosts: vec![r::VirtualHost {
                    name: "tainted".into(),
                    domains: vec!["*".into()],
                    routes: vec![r::Route {
                        r#match: Some(r::RouteMatch {
                            path_specifier: Some(r::route_match::PathSpecifier::SafeRegex(
                                envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                                    regex: "(unclosed".into(),
                                    ..Default::default()
                                },
                            )),
                            ..Default::default()
                        }),
                        action: Some(r::route::Action::DirectResponse(r::DirectResponseAction {
                            status: 200,
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            response.resources.push(envoy_types::util::pack_any(bad));
        }
        response
    };
    Relay { pilot, rewrite: Arc::new(rewrite) }
}

fn snapshot(dir: &Path, extra: &str, version: u64) -> Arc<mesh_pilot::model::Snapshot> {
    std::fs::write(dir.join("mesh.yaml"), format!("{CONFIG}---{extra}")).unwrap();
    let (mut snapshot, rejected) = mesh_pilot::source::local::read(dir);
    assert!(rejected.is_empty(), "{rejected:?}");
    // Every request in the access log (the proxies log only what their config lists).
    let logging = mesh_api::mesh::MeshConfig::from_yaml("mesh", "accessLogFile: /dev/stdout");
    snapshot.mesh_config = Arc::new(logging.unwrap());
    snapshot.version = version;
    Arc::new(snapshot)
}

fn metric_lines(text: &str, name: &str, labels: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_carry_every_protocol_over_mesh_mtls() {
    if !netns::can_run(&["python3"]) {
        return;
    }
    if !mesh_testing::require::grpcio("two sidecars") {
        return;
    }
    let net = PodAndPeer::new("mp");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir).unwrap();

    // The server pod's apps.
    let mut apps = Command::new("ip")
        .args(["netns", "exec", &net.peer, "python3"])
        .arg(here("server.py"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _apps = scopeguard(&mut apps);

    let (publish, snapshots) = tokio::sync::watch::channel(snapshot(&config_dir, "", 1));
    let discovery = mesh_pilot::ads::Discovery::new(snapshots);
    let ca = mesh_testing::ca::TestCa::new();
    let ca_state = dir.path().join("ca");
    ca.write_state_dir(&ca_state);
    let root_file = dir.path().join("root-cert.pem");
    std::fs::write(&root_file, &ca.root_pem).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "t-client demo/client\nt-hello demo/hello\n").unwrap();

    let pods = [
        (&net.pod, "client-1", "10.99.0.2", "client"),
        (&net.peer, "hello-1", "10.99.0.1", "hello"),
    ];
    let mut sidecars = Vec::new();
    // The client's sidecar reaches the pilot through a relay that can spoil updates.
    let taint = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pilot_here = serve_pilot_here(&discovery).await;
    serve_relay(&net.pod, tainting_relay(pilot_here, taint.clone()));
    for (ns, pod, ip, sa) in pods {
        if *ns != net.pod {
            sidecar::serve_xds(ns, &discovery);
        }
        sidecar::serve_ca(ns, &ca_state, &tokens);
        sidecar::capture(ns, &["-u", "1337", "-g", "1337", "--ipv6", "off"]);
        let env = [("RUST_LOG", "info,mesh_proxy=debug")];
        let options = Options { root: &root_file, drain: "2s", env: &env };
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
    let (client_ns, server_ns) = (net.pod.clone(), net.peer.clone());
    let logs_of =
        |sidecars: &[Sidecar]| sidecars.iter().map(Sidecar::logs).collect::<Vec<_>>().join("\n");
    let logs = || logs_of(&sidecars);

    let c = client_ns.clone();
    let results = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| client(&c, args);
        vec![
            run(&["get", "http://10.96.0.10/"]),
            run(&[
                "get",
                "http://10.99.0.1:8080/",
                "x-forwarded-client-cert:URI=spiffe://cluster.local/ns/demo/sa/admin",
            ]),
            run(&["keepalive", "10.96.0.10", "80"]),
            run(&["post", "http://10.96.0.10/upload", "20000000"]),
            run(&["websocket", "10.96.0.10", "80"]),
            run(&["grpc", "10.96.0.10:9090"]),
            run(&["server-first", "10.96.0.10", "3306"]),
            run(&["get", "http://10.96.0.20/"]),
        ]
    })
    .await
    .unwrap();
    let [mesh, plain, keepalive, post, websocket, grpc, server_first, impostor] =
        <[String; 8]>::try_from(results).unwrap();

    assert!(
        mesh.starts_with("from=127.0.0.6 xfcc=By=spiffe://cluster.local/ns/demo/sa/hello;Hash="),
        "the app is called from 127.0.0.6 with XFCC set by its sidecar: {mesh}\n{}",
        logs()
    );
    assert!(mesh.contains(";URI=spiffe://cluster.local/ns/demo/sa/client "), "{mesh}");
    // No service listens on the pod address's port 8080, so the client's sidecar passes the
    // connection through as opaque TCP: the server's sidecar gets plaintext on its mTLS port
    // and takes it (PERMISSIVE), dropping the XFCC the client made up.
    assert_eq!(plain, "from=127.0.0.6 xfcc=none route=none path=/", "PERMISSIVE plaintext");
    assert_eq!(
        keepalive, "200:/k0 200:/k1 200:/k2 200:/k3 200:/k4 connections: 1",
        "HTTP/1.1 keep-alive through two sidecars"
    );
    let (got, expected) = post.split_once(" expected ").unwrap();
    assert_eq!(got, expected, "a 20 MB streamed body arrives whole");
    assert_eq!(websocket, "HTTP/1.1 101 Switching Protocols | echo:frame-1", "WebSocket");
    assert_eq!(
        grpc, "unary:hi | part0:s,part1:s,part2:s,part3:s,part4:s",
        "gRPC unary and server streaming"
    );
    assert_eq!(
        server_first, "greeting from the server | echo:ping",
        "a server-first protocol is not held up waiting for the client"
    );
    assert!(
        impostor.starts_with("status=503"),
        "an endpoint that cannot prove the identity it should have is refused: {impostor}"
    );

    // Routes change under load: no request fails, and the new route takes over.
    let c = client_ns.clone();
    let load = tokio::task::spawn_blocking(move || client(&c, &["load", "10.96.0.10", "80", "4"]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    publish.send_replace(snapshot(&config_dir, &route("v2"), 2));
    let load = load.await.unwrap();
    assert!(load.starts_with("[('200', "), "every request succeeds during the change: {load}");
    assert!(!load.contains("), ('"), "only 200s: {load}");
    assert!(load.ends_with("['none', 'v2']"), "the new route takes over: {load}");

    // Bad input: answered by the client's sidecar, logged and counted, never passed on.
    let c = client_ns.clone();
    let bad = tokio::task::spawn_blocking(move || {
        let raw = |data: &str, pad: &str| client(&c, &["raw", "10.96.0.10", "80", data, pad]);
        [
            raw("GET / HTTP/1.1\\r\\nHost: a\\r\\nno colon here\\r\\n\\r\\n", "0"),
            raw("GET / HTTP/1.1\\r\\nHost: a\\r\\nx-big: PAD\\r\\n\\r\\n", "100000"),
            raw("GET /missing HTTP/1.1\\r\\nHost: 10.96.0.10\\r\\n\\r\\n", "0"),
        ]
    })
    .await
    .unwrap();
    assert_eq!(
        bad,
        [
            "HTTP/1.1 400 Bad Request",
            "HTTP/1.1 431 Request Header Fields Too Large",
            "HTTP/1.1 404 Not Found"
        ],
        "{}",
        logs()
    );

    // Metrics on both sides, with Istio's labels.
    let (_, client_stats) = local_get(&client_ns, 15090, "/stats/prometheus");
    let (_, server_stats) = local_get(&server_ns, 15090, "/stats/prometheus");
    let source = metric_lines(
        &client_stats,
        "istio_requests_total",
        &[
            "reporter=\"source\"",
            "source_workload=\"client\"",
            "destination_workload=\"hello\"",
            "destination_principal=\"spiffe://cluster.local/ns/demo/sa/hello\"",
            "destination_service=\"hello.demo.svc.cluster.local\"",
            "destination_service_name=\"hello\"",
            "destination_version=\"v1\"",
            "request_protocol=\"http\"",
            "response_code=\"200\"",
        ],
    );
    assert!(!source.is_empty(), "client-side request metric:\n{client_stats}");
    let destination = metric_lines(
        &server_stats,
        "istio_requests_total",
        &[
            "reporter=\"destination\"",
            "source_workload=\"client\"",
            "source_principal=\"spiffe://cluster.local/ns/demo/sa/client\"",
            "destination_workload=\"hello\"",
            // The inbound cluster's service, as the pilot names it (the client's Host was
            // the service's address).
            "destination_service=\"hello.demo.svc.cluster.local\"",
            "connection_security_policy=\"mutual_tls\"",
            "response_code=\"200\"",
        ],
    );
    assert!(!destination.is_empty(), "server-side request metric:\n{server_stats}");
    let grpc_metric = metric_lines(
        &server_stats,
        "istio_requests_total",
        &["request_protocol=\"grpc\"", "grpc_response_status=\"0\""],
    );
    assert!(!grpc_metric.is_empty(), "gRPC status is reported:\n{server_stats}");
    let tcp = metric_lines(
        &client_stats,
        "istio_tcp_connections_opened_total",
        &["destination_service=\"hello.demo.svc.cluster.local\"", "request_protocol=\"tcp\""],
    );
    assert!(!tcp.is_empty(), "TCP metrics:\n{client_stats}");
    assert!(client_stats.contains("istio_request_duration_milliseconds_bucket"));
    assert!(client_stats.contains("istio_tcp_sent_bytes_total"));
    assert!(client_stats.contains("mesh_proxy_xds_connected 1"), "{client_stats}");

    // Access log lines on both sides.
    let line = sidecars[1]
        .access_log()
        .into_iter()
        .find(|l| l["path"] == "/k3")
        .unwrap_or_else(|| panic!("no access log line for /k3:\n{}", logs()));
    assert_eq!(line["response_code"], 200);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["upstream_cluster"], "inbound|8080||");
    assert_eq!(line["upstream_host"], "10.99.0.1:8080", "the app is called on the pod's address");
    assert_eq!(line["authority"], "10.96.0.10");
    assert!(line["x_request_id"].as_str().is_some_and(|id| id.len() == 36), "{line}");
    let client_line = sidecars[0].access_log().into_iter().find(|l| l["path"] == "/k3").unwrap();
    assert_eq!(client_line["upstream_cluster"], "outbound|80||hello.demo.svc.cluster.local");
    assert_eq!(client_line["x_request_id"], line["x_request_id"], "one request id end to end");
    assert_eq!(client_line["protocol"], "HTTP/1.1");
    let refused =
        sidecars[0].access_log().into_iter().find(|l| l["authority"] == "10.96.0.20").unwrap();
    assert_eq!(refused["response_code"], 503);
    // Istio's default retry policy (two retries on connect-failure, another host) ran out.
    assert_eq!(refused["response_flags"], "UF,URX");
    // A TCP connection is logged by its chain's tcp_proxy loggers.
    assert!(
        sidecars[0].access_log().iter().any(|l| l["protocol"] == "TCP"
            && l["upstream_cluster"]
                .as_str()
                .is_some_and(|c| c.ends_with("||hello.demo.svc.cluster.local"))),
        "no TCP line:\n{}",
        logs()
    );

    for (status, flag) in [(400, "DPE"), (431, "DPE"), (404, "NR")] {
        assert!(
            sidecars[0]
                .access_log()
                .iter()
                .any(|l| l["response_code"] == status && l["response_flags"] == flag),
            "an access-log line for {status} {flag}:\n{}",
            logs()
        );
        let counted = metric_lines(
            &client_stats,
            "istio_requests_total",
            &[&format!("response_code=\"{status}\""), &format!("response_flags=\"{flag}\"")],
        );
        assert!(!counted.is_empty(), "a metric for {status} {flag}:\n{client_stats}");
    }

    // Admin.
    let (status, dump) = local_get(&client_ns, 15000, "/config_dump");
    assert_eq!(status, 200);
    assert!(dump.contains("virtualOutbound"), "{dump}");
    let (_, clusters) = local_get(&client_ns, 15000, "/clusters");
    assert!(
        clusters.contains(
            "outbound|80||hello.demo.svc.cluster.local::10.99.0.1:8080::health_flags::healthy"
        ),
        "{clusters}"
    );

    // A NACKed update: the client's sidecar refuses it and keeps routing by the last good
    // configuration (v2), while the pilot has moved on to v3.
    taint.store(true, std::sync::atomic::Ordering::Relaxed);
    publish.send_replace(snapshot(&config_dir, &route("v3"), 3));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, stats) = local_get(&client_ns, 15090, "/stats/prometheus");
        if stats.contains("mesh_proxy_config_rejected 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the update is NACKed:\n{stats}\n{}", logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = client_ns.clone();
    let after = tokio::task::spawn_blocking(move || client(&c, &["load", "10.96.0.10", "80", "1"]));
    let after = after.await.unwrap();
    assert!(after.ends_with("['v2']"), "traffic stays on the last good routes: {after}");
    assert!(!after.contains("), ('"), "only 200s: {after}");
    // The refusal is shown in /config_dump as Envoy shows one: the error state of the route
    // configuration refused (new, so an entry of its own).
    let (_, dump) = local_get(&client_ns, 15000, "/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let routes = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.RoutesConfigDump")
        .unwrap();
    let refused = routes["dynamic_route_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["error_state"]["failed_configuration"]["name"] == "tainted");
    assert!(
        refused
            .is_some_and(|r| r["error_state"]["details"].as_str().unwrap().contains("(unclosed")),
        "the refusal is shown in /config_dump: {routes:#}"
    );

    // SIGTERM: the server's sidecar drains; a request in flight finishes, then it exits.
    let c = client_ns.clone();
    let slow = tokio::task::spawn_blocking(move || client(&c, &["get", "http://10.96.0.10/slow"]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = sidecars[1].child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let slow = slow.await.unwrap();
    assert!(slow.contains("path=/slow"), "the request in flight finishes: {slow}\n{}", logs());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = sidecars[1].child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar exits after draining:\n{}",
            logs_of(&sidecars)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "a clean exit: {status}\n{}", logs_of(&sidecars));
    drop(publish);
}

/// Kills a child process when the test ends, pass or fail.
fn scopeguard(child: &mut Child) -> impl Drop + '_ {
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    Kill(child)
}
