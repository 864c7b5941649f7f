//! The `mesh-pilot` binary traces its pushes: with `--otlp-endpoint` naming a collector, each
//! response to a proxy is a span naming the proxy, the type, the resources and the bytes sent,
//! and the log lines inside it carry its trace id. Without the flag, the mesh config's default
//! tracing provider names the collector.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ads_stream, cds_request};
use mesh_testing::http::get;
use mesh_testing::net::free_port;
use mesh_trace::receiver::{Limits, Receiver};

/// Long enough for anything on a loaded 2-core machine; only a failure waits it out.
const WAIT: Duration = Duration::from_secs(20);

/// The node id of `cds_request`.
const NODE: &str = "sidecar~10.0.0.9~c.demo~demo.svc.cluster.local";

/// Kills the pilot when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn pushes_to_a_proxy_are_spans_at_the_collector() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let receiver = Receiver::new(Limits::default());
    tokio::spawn(receiver.clone().serve(listener, std::future::pending()));

    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("pilot.log");
    let (xds, monitoring) = (free_port(), free_port());
    let monitoring = SocketAddr::from(([127, 0, 0, 1], monitoring));
    let _pilot = Running(
        Command::new(env!("CARGO_BIN_EXE_mesh-pilot"))
            .arg("--config-dir")
            .arg(common::mesh_dir())
            .args(["--xds-listen", &format!("127.0.0.1:{xds}")])
            .args(["--monitoring-listen", &monitoring.to_string()])
            .args(["--otlp-endpoint", &collector.to_string()])
            .args(["--log-format", "json", "--log-level", "info,mesh_pilot::ads=debug"])
            .env("OTEL_BSP_SCHEDULE_DELAY", "50")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + WAIT;
    while !get(monitoring, "/ready").await.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "mesh-pilot did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (requests, mut responses) = ads_stream(&format!("http://127.0.0.1:{xds}")).await;
    requests.send(cds_request("", "")).await.unwrap();
    let first = tokio::time::timeout(WAIT, responses.message())
        .await
        .expect("a first CDS response")
        .unwrap()
        .unwrap();
    // What the span counts: each resource entry of the response as it went on the wire.
    let bytes: usize =
        first.resources.iter().map(|any| prost::encoding::message::encoded_len(2, any)).sum();

    let push = receiver
        .wait_for_span(WAIT, |span| span.name == "push cds" && span.attributes["proxy"] == NODE)
        .await
        .expect("a push span naming the proxy");
    assert_eq!(push.service, "mesh-pilot");
    assert_eq!(push.attributes["type_url"], mesh_api::xds::CLUSTER_TYPE);
    assert_eq!(push.attributes["resources"], 7);
    assert_eq!(push.attributes["bytes"], bytes);
    assert_eq!(push.attributes["version"], first.version_info.as_str());
    assert_eq!(push.attributes["nonce"], first.nonce.as_str());

    // The pilot's log line about that push carries the span's ids.
    let logged = |path: &std::path::Path| -> Option<serde_json::Value> {
        std::fs::read_to_string(path).ok()?.lines().find_map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).ok()?;
            (line["span"]["name"] == "push" && line["span"]["proxy"] == NODE).then_some(line)
        })
    };
    let deadline = Instant::now() + WAIT;
    let line = loop {
        if let Some(line) = logged(&log_path) {
            break line;
        }
        assert!(Instant::now() < deadline, "no log line inside a push span");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(line["span"]["trace_id"], push.trace_id.as_str());
    assert_eq!(line["span"]["span_id"], push.span_id.as_str());

    let metrics = get(monitoring, "/metrics").await.unwrap();
    assert!(metrics.contains("\npilot_spans_dropped_total 0\n"), "{metrics}");
}

#[tokio::test]
async fn without_the_flag_the_mesh_configs_provider_names_the_collector() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let receiver = Receiver::new(Limits::default());
    tokio::spawn(receiver.clone().serve(listener, std::future::pending()));
    let files = tempfile::tempdir().unwrap();
    let mesh = files.path().join("mesh.yaml");
    std::fs::write(&mesh, format!("tracing: {{otlpEndpoint: \"{collector}\"}}\n")).unwrap();

    let xds = free_port();
    let _pilot = Running(
        Command::new(env!("CARGO_BIN_EXE_mesh-pilot"))
            .arg("--config-dir")
            .arg(common::mesh_dir())
            .arg("--mesh-config")
            .arg(&mesh)
            .args(["--xds-listen", &format!("127.0.0.1:{xds}")])
            .args(["--monitoring-listen", &format!("127.0.0.1:{}", free_port())])
            .env("OTEL_BSP_SCHEDULE_DELAY", "50")
            .env_remove("MESH_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + WAIT;
    let (requests, mut responses) = loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", xds)).await.is_ok() {
            break ads_stream(&format!("http://127.0.0.1:{xds}")).await;
        }
        assert!(Instant::now() < deadline, "mesh-pilot did not serve xDS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    requests.send(cds_request("", "")).await.unwrap();
    tokio::time::timeout(WAIT, responses.message()).await.expect("a CDS response").unwrap();
    let push = receiver
        .wait_for_span(WAIT, |span| span.name == "push cds")
        .await
        .expect("a push span at the mesh config's collector");
    assert_eq!(push.attributes["proxy"], NODE);
}
