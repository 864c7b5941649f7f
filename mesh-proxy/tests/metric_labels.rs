//! Metric labels never take what a client makes up: inbound, the destination service is the
//! one the pilot names on the inbound cluster whatever Host the request carries (`unknown`
//! without one), and a gRPC status outside gRPC's codes is `unknown`.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use http_body_util::Full;
use mesh_proxy::listener::Upgrades;
use mesh_proxy::telemetry::Reporter;
use prometheus_client::registry::Registry;

/// `cluster` naming `host` as the service it serves, as the pilot writes inbound clusters.
fn serving(mut cluster: Cluster, host: &str) -> Cluster {
    use mesh_api::xds::services_metadata as m;
    let text = |s: &str| Value { kind: Some(Kind::StringValue(s.to_owned())) };
    let service = Struct { fields: [(m::HOST.to_owned(), text(host))].into_iter().collect() };
    let services = Value {
        kind: Some(Kind::ListValue(ListValue {
            values: vec![Value { kind: Some(Kind::StructValue(service)) }],
        })),
    };
    let istio = Struct { fields: [(m::SERVICES.to_owned(), services)].into_iter().collect() };
    cluster.metadata = Some(Metadata {
        filter_metadata: [(m::FILTER.to_owned(), istio)].into_iter().collect(),
        ..Metadata::default()
    });
    cluster
}

fn request(host: &str) -> http::Request<Full<Bytes>> {
    http::Request::get("/").header("host", host).body(Full::new(Bytes::new())).unwrap()
}

/// The `istio_requests_total` lines of the registry once they count `requests` in all (a
/// request is reported when its response body ends, which may be just after the client has
/// it all).
async fn requests(registry: &Registry, requests: u64) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..100 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        lines = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .map(str::to_owned)
            .collect();
        let counted: u64 =
            lines.iter().filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum();
        if counted >= requests {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lines
}

#[tokio::test]
async fn inbound_the_destination_service_is_the_clusters_whatever_the_host_says() {
    let backend = common::backend(common::failing_then_ok(0, 200)).await;
    let cluster = common::static_cluster("inbound|8080||", &[backend.address], None);
    let cluster = serving(cluster, "hello.demo.svc.cluster.local");
    let route = common::route("inbound|8080||", |_| {}, Vec::new());
    let (proxy, registry) =
        common::proxy_with(Reporter::Destination, Upgrades::websocket(), route, vec![cluster])
            .await;
    for host in ["hello.demo.svc.cluster.local", "evil.example", "x-1.attacker.test:80"] {
        let (status, _, _) = common::call(proxy, request(host)).await;
        assert_eq!(status, 200, "{host}");
    }
    let lines = requests(&registry, 3).await;
    assert_eq!(lines.len(), 1, "one series for the three hosts: {lines:#?}");
    let line = &lines[0];
    for label in [
        "reporter=\"destination\"",
        "destination_service=\"hello.demo.svc.cluster.local\"",
        "destination_service_name=\"hello\"",
        "destination_service_namespace=\"demo\"",
    ] {
        assert!(line.contains(label), "{label} in {line}");
    }
    assert!(line.ends_with(" 3"), "{line}");
    assert!(!line.contains("evil") && !line.contains("attacker"), "{line}");
}

#[tokio::test]
async fn inbound_without_a_named_service_the_destination_service_is_unknown() {
    let backend = common::backend(common::failing_then_ok(0, 200)).await;
    let cluster = common::static_cluster("inbound|8080||", &[backend.address], None);
    let route = common::route("inbound|8080||", |_| {}, Vec::new());
    let (proxy, registry) =
        common::proxy_with(Reporter::Destination, Upgrades::websocket(), route, vec![cluster])
            .await;
    common::call(proxy, request("evil.example")).await;
    let lines = requests(&registry, 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("destination_service=\"unknown\""), "{}", lines[0]);
    assert!(lines[0].contains("destination_service_name=\"unknown\""), "{}", lines[0]);
}

#[tokio::test]
async fn a_grpc_status_outside_grpcs_codes_is_unknown() {
    let statuses = ["7", "99", "-1", "ok"];
    let behaviour: Arc<common::Behaviour> = Arc::new(move |n, _| {
        let status = statuses[(n as usize - 1) % statuses.len()];
        (
            200,
            Duration::ZERO,
            vec![
                ("grpc-status", status.to_owned()),
                ("content-type", "application/grpc".to_owned()),
            ],
        )
    });
    let backend = common::backend(behaviour).await;
    let cluster = common::static_cluster("app", &[backend.address], None);
    let (proxy, registry) =
        common::proxy(common::route("app", |_| {}, Vec::new()), vec![cluster]).await;
    for _ in statuses {
        let request = http::Request::post("/pkg.Svc/Call")
            .header("host", "svc.test")
            .header("content-type", "application/grpc")
            .body(Full::new(Bytes::new()))
            .unwrap();
        common::call(proxy, request).await;
    }
    let mut seen: Vec<String> = requests(&registry, statuses.len() as u64)
        .await
        .iter()
        .filter_map(|l| l.split("grpc_response_status=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    seen.sort();
    assert_eq!(seen, ["7", "unknown"], "three made-up statuses share one series");
}
