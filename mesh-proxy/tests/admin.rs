//! The admin port of a running proxy as `meshctl` and istioctl read it: a gateway started as
//! the binary starts it (its certificate from mesh-ca, its configuration from the pilot),
//! carrying requests to a backend. Its config dump, clusters, server info and certificates
//! answer in Envoy's JSON; a tap streams what it carries, bounded, off while nobody watches.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use clap::Parser as _;
use http_body_util::{BodyExt as _, Empty};
use mesh_testing::net::free_port;
use serde_json::Value;

/// A gateway proxy serving `0.0.0.0:<port>` for any host, routed to a backend.
struct Gateway {
    admin: SocketAddr,
    metrics: SocketAddr,
    port: u16,
    backend: SocketAddr,
    shutdown: mesh_runtime::shutdown::Shutdown,
    root_pem: String,
    _pilot: mesh_testing::pilot::TestPilot,
    _ca: mesh_testing::ca::RunningCa,
    _dir: tempfile::TempDir,
}

fn mesh(port: u16, backend: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: demo}}
spec:
  hosts: [backend.example.com]
  ports: [{{number: {backend}, name: http, protocol: HTTP}}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: demo}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: demo}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{{route: [{{destination: {{host: backend.example.com, port: {{number: {backend}}}}}}}]}}]
"#
    )
}

async fn gateway() -> Gateway {
    let backend = common::backend(common::failing_then_ok(0, 200)).await.address;
    let port = free_port();
    let pilot = mesh_testing::pilot::TestPilot::from_yaml(&mesh(port, backend.port())).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = mesh_testing::ca::TestCa::new().serve(dir.path(), "t-gw demo/gw\n").await;
    std::fs::write(dir.path().join("token"), "t-gw").unwrap();
    std::fs::write(dir.path().join("labels"), "istio=\"ingressgateway\"\n").unwrap();
    let (admin, metrics) = (free_port(), free_port());
    let config = mesh_proxy::app::Config::try_parse_from([
        "mesh-proxy".to_owned(),
        "--proxy-type=router".to_owned(),
        "--concurrency=1".to_owned(),
        format!("--pilot-address=http://{}", pilot.xds),
        "--pod-name=gw-1".to_owned(),
        "--pod-namespace=demo".to_owned(),
        "--service-account=gw".to_owned(),
        "--pod-ip=127.0.0.1".to_owned(),
        format!("--labels-file={}", dir.path().join("labels").display()),
        format!("--admin-port={admin}"),
        format!("--metrics-port={metrics}"),
        format!("--health-port={}", free_port()),
        format!("--status-port={}", free_port()),
        "--access-log=off".to_owned(),
        format!("--ca-address={}", ca.bound.grpc),
        format!("--root-cert={}", ca.root_cert.display()),
        format!("--token-path={}", dir.path().join("token").display()),
    ])
    .unwrap();
    let bound = mesh_proxy::app::build(config, None).await.unwrap();
    let (ready, shutdown) = (bound.ready.clone(), bound.shutdown.clone());
    tokio::spawn(bound.run());
    if tokio::time::timeout(Duration::from_secs(30), ready.wait()).await.is_err() {
        panic!("the gateway is not ready: waiting for {:?}", ready.pending());
    }
    let root_pem = std::fs::read_to_string(&ca.root_cert).unwrap();
    let localhost = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let gateway = Gateway {
        admin: localhost(admin),
        metrics: localhost(metrics),
        port,
        backend,
        shutdown,
        root_pem,
        _pilot: pilot,
        _ca: ca,
        _dir: dir,
    };
    // Ready means configured; the listener is bound by then, but give the route its first
    // request until it answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    while gateway.call("/warm-up").await != 200 {
        assert!(Instant::now() < deadline, "the gateway never routed to the backend");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway
}

impl Gateway {
    /// `GET path` through the gateway; the status.
    async fn call(&self, path: &str) -> u16 {
        let Some(answer) =
            mesh_testing::http::get(SocketAddr::from(([127, 0, 0, 1], self.port)), path).await
        else {
            return 0;
        };
        mesh_testing::http::status_and_body(&answer).0
    }

    /// `GET path` on the admin port: status and body.
    async fn admin(&self, path: &str) -> (u16, String) {
        let answer = mesh_testing::http::get(self.admin, path).await.unwrap();
        let (status, body) = mesh_testing::http::status_and_body(&answer);
        (status, body.to_owned())
    }

    /// `GET path` on the admin port as JSON.
    async fn json(&self, path: &str) -> Value {
        let (status, body) = self.admin(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// The value of a metric without labels on the metrics port.
    async fn metric(&self, name: &str) -> f64 {
        let scrape = mesh_testing::http::get(self.metrics, "/stats/prometheus").await.unwrap();
        let prefix = format!("{name} ");
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{scrape}"))
    }

    /// Waits until metric `name` is `value`.
    async fn until_metric(&self, name: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric(name).await != value {
            assert!(Instant::now() < deadline, "{name} never became {value}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn cluster(&self) -> String {
        format!("outbound|{}||backend.example.com", self.backend.port())
    }
}

/// The dump of `@type` `envoy.admin.v3.<kind>` in a config dump.
fn section<'a>(dump: &'a Value, kind: &str) -> Option<&'a Value> {
    let wanted = format!("type.googleapis.com/envoy.admin.v3.{kind}");
    dump["configs"].as_array().unwrap().iter().find(|c| c["@type"] == wanted.as_str())
}

fn base64_text(value: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap()).unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn the_admin_port_answers_in_envoys_formats() {
    let gw = gateway().await;
    let cluster = gw.cluster();

    let dump = gw.json("/config_dump").await;
    let node = &section(&dump, "BootstrapConfigDump").unwrap()["bootstrap"]["node"];
    assert!(node["id"].as_str().unwrap().starts_with("router~127.0.0.1~gw-1.demo~"), "{node}");
    let clusters = section(&dump, "ClustersConfigDump").unwrap();
    assert!(!clusters["version_info"].as_str().unwrap().is_empty());
    let active = clusters["dynamic_active_clusters"].as_array().unwrap();
    let ours = active.iter().find(|c| c["cluster"]["name"] == cluster.as_str()).unwrap();
    assert_eq!(ours["cluster"]["@type"], "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    assert!(ours["last_updated"].as_str().unwrap().ends_with('Z'), "{ours}");
    let listeners = &section(&dump, "ListenersConfigDump").unwrap()["dynamic_listeners"];
    let name = format!("0.0.0.0_{}", gw.port);
    assert!(
        listeners.as_array().unwrap().iter().any(|l| l["name"] == name.as_str()
            && l["active_state"]["listener"]["name"] == name.as_str()),
        "{listeners:#}"
    );
    assert!(section(&dump, "RoutesConfigDump").is_some());
    assert!(section(&dump, "EndpointsConfigDump").is_none(), "only with ?include_eds");
    // The workload certificate, as Envoy shows what istio-agent serves it.
    let secrets = section(&dump, "SecretsConfigDump").unwrap()["dynamic_active_secrets"].clone();
    assert_eq!(secrets[0]["name"], "default");
    let certificate = &secrets[0]["secret"]["tls_certificate"];
    assert!(
        base64_text(&certificate["certificate_chain"]["inline_bytes"])
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(base64_text(&certificate["private_key"]["inline_bytes"]), "[redacted]");
    assert_eq!(secrets[1]["name"], "ROOTCA");
    let roots = &secrets[1]["secret"]["validation_context"]["trusted_ca"]["inline_bytes"];
    assert_eq!(base64_text(roots), gw.root_pem);
    assert!(dump.get("rejected_updates").is_none());

    let with_endpoints = gw.json("/config_dump?include_eds").await;
    let endpoints =
        &section(&with_endpoints, "EndpointsConfigDump").unwrap()["dynamic_endpoint_configs"];
    assert!(
        endpoints
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["endpoint_config"]["cluster_name"] == cluster.as_str()),
        "{endpoints:#}"
    );

    let statuses = gw.json("/clusters?format=json").await;
    let status = statuses["cluster_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cluster.as_str())
        .unwrap_or_else(|| panic!("{statuses:#}"))
        .clone();
    let host = &status["host_statuses"][0];
    assert_eq!(
        host["address"]["socket_address"],
        serde_json::json!({ "address": "127.0.0.1", "port_value": gw.backend.port() })
    );
    assert_eq!(host["health_status"]["eds_health_status"], "HEALTHY");
    assert!(host["health_status"].get("failed_outlier_check").is_none());
    assert_eq!(host["stats"][0]["name"], "rq_active");
    assert_eq!(host["stats"][0]["type"], "GAUGE");
    // The text form is as it was.
    let (_, text) = gw.admin("/clusters").await;
    let line = format!("{cluster}::127.0.0.1:{}::health_flags::healthy", gw.backend.port());
    assert!(text.contains(&line), "{text}");

    let info = gw.json("/server_info").await;
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["version"], concat!("mesh-proxy/", env!("CARGO_PKG_VERSION")));
    assert_eq!(info["node"]["id"], node["id"]);
    assert!(info["uptime_current_epoch"].as_str().unwrap().ends_with('s'), "{info}");
    assert_eq!(info["command_line_options"]["concurrency"], 1);

    let certs = gw.json("/certs").await;
    let workload = &certs["certificates"][0];
    assert_eq!(
        workload["cert_chain"][0]["subject_alt_names"],
        serde_json::json!([{ "uri": "spiffe://cluster.local/ns/demo/sa/gw" }])
    );
    assert!(workload["cert_chain"][0]["expiration_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(workload["ca_cert"].as_array().unwrap().len(), 1, "{certs:#}");

    // None of it on the metrics port, which the scraper (and anyone on the pod's network)
    // reaches.
    for path in ["/config_dump", "/tap", "/certs", "/server_info"] {
        let answer = mesh_testing::http::get(gw.metrics, path).await.unwrap();
        assert_eq!(mesh_testing::http::status_and_body(&answer).0, 404, "{path}");
    }
    gw.shutdown.request();
}

/// A tap being read: its response's status and head, and the lines of its body.
struct Tap {
    status: u16,
    head: http::HeaderMap,
    body: hyper::body::Incoming,
    pending: String,
}

impl Tap {
    async fn open(admin: SocketAddr, query: &str) -> Tap {
        let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection);
        let request = http::Request::get(format!("/tap{query}"))
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Tap { status: parts.status.as_u16(), head: parts.headers, body, pending: String::new() }
    }

    /// The next line, or `None` once the stream ended.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some((line, rest)) = self.pending.split_once('\n') {
                let line = line.to_owned();
                self.pending = rest.to_owned();
                return Some(line);
            }
            let frame = tokio::time::timeout(Duration::from_secs(20), self.body.frame())
                .await
                .expect("the tap said something within 20 s")?
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.pending.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// The whole body, once the stream ended.
    async fn rest(mut self) -> String {
        let mut out = std::mem::take(&mut self.pending);
        while let Some(line) = self.line().await {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

#[tokio::test]
async fn a_tap_streams_the_requests_the_proxy_carries() {
    let gw = gateway().await;

    // Nobody watches: the requests carried so far built nothing for a tap.
    assert_eq!(gw.call("/unwatched").await, 200);
    assert_eq!(gw.metric("mesh_proxy_taps_open").await, 0.0);
    assert_eq!(gw.metric("mesh_proxy_tap_records_total").await, 0.0);

    let mut tap = Tap::open(gw.admin, "?max=1").await;
    assert_eq!(tap.status, 200);
    assert_eq!(tap.head["content-type"], "application/x-ndjson");
    assert_eq!(gw.call("/hello?name=tap").await, 200);
    let line = tap.line().await.unwrap();
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["method"], "GET", "{line}");
    assert_eq!(record["path"], "/hello?name=tap", "{line}");
    assert_eq!(record["status"], 200, "{line}");
    assert_eq!(record["upstream_cluster"], gw.cluster().as_str(), "{line}");
    assert_eq!(record["upstream_host"], gw.backend.to_string().as_str(), "{line}");
    assert_eq!(record["direction"], "outbound", "a gateway reports as the source: {line}");
    assert_eq!(record["kind"], "http");
    assert_eq!(record["protocol"], "HTTP/1.1");
    assert_eq!(record["response_flags"], "-");
    assert_eq!(record["mtls"], false);
    assert!(record["time"].as_str().unwrap().ends_with('Z'), "{line}");
    assert_eq!(tap.rest().await, "", "max=1: the stream ends after one record");
    gw.until_metric("mesh_proxy_taps_open", 0.0).await;
    assert_eq!(gw.metric("mesh_proxy_tap_records_total").await, 1.0);

    // Four at once, not five.
    let mut taps = Vec::new();
    for _ in 0..4 {
        let tap = Tap::open(gw.admin, "?direction=outbound").await;
        assert_eq!(tap.status, 200);
        taps.push(tap);
    }
    let refused = Tap::open(gw.admin, "").await;
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.rest().await,
        "4 taps are open already, the most this proxy serves at once: close one\n"
    );
    assert_eq!(gw.metric("mesh_proxy_taps_open").await, 4.0);
    let (status, why) = gw.admin("/tap?direction=up").await;
    assert_eq!(
        (status, why.as_str()),
        (400, "direction=up: use inbound or outbound (or leave it out for both)\n")
    );

    // Clients that go away free their places.
    drop(taps);
    gw.until_metric("mesh_proxy_taps_open", 0.0).await;

    // A quiet tap says so with an empty line now and then: a reader can time out a dead
    // connection, and the proxy finds a reader that left without waiting for traffic.
    let mut quiet = Tap::open(gw.admin, "").await;
    assert_eq!(quiet.line().await.as_deref(), Some(""), "a keep-alive line");
    drop(quiet);
    gw.until_metric("mesh_proxy_taps_open", 0.0).await;

    // A drain ends the taps.
    let tap = Tap::open(gw.admin, "").await;
    assert_eq!(tap.status, 200);
    gw.shutdown.request();
    assert_eq!(tap.rest().await, "", "the stream ends when the proxy drains");
}
