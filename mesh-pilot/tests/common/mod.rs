//! What the pilot's tests share: the small mesh of `tests/data/mesh` and the golden mesh, as
//! snapshots (the test CA and the test pilot are `mesh_testing`'s).

#![allow(dead_code)] // Each test binary uses its own part.

use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh_pilot::model::Snapshot;
use mesh_pilot::source::local;
use tokio::sync::mpsc;

/// The directory of the test mesh.
pub fn mesh_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mesh")
}

/// The test mesh (two versions of `hello`, a TCP `db`, a VirtualService, a DestinationRule),
/// numbered as the first published snapshot.
pub fn mesh() -> Snapshot {
    let (mut snapshot, rejected) = local::read(&mesh_dir());
    assert!(rejected.is_empty(), "the test mesh is valid: {rejected:?}");
    snapshot.version = 1;
    snapshot
}

/// Every routing and traffic-policy feature in one mesh (`tests/data/golden`).
pub fn golden_mesh() -> Snapshot {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    let (mut snapshot, rejected) = local::read(&dir);
    assert!(rejected.is_empty(), "the golden mesh is valid: {rejected:#?}");
    snapshot.version = 1;
    snapshot
}

/// The directory of the telemetry mesh: `config/` (the objects) and `meshconfig.yaml`.
pub fn telemetry_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/telemetry")
}

/// Telemetry at every scope with the providers of its mesh config (`tests/data/telemetry`),
/// stamped as the pilot publishes it.
pub fn telemetry_mesh() -> Snapshot {
    let dir = telemetry_dir();
    let (mut snapshot, rejected) = local::read(&dir.join("config"));
    assert!(rejected.is_empty(), "the telemetry mesh is valid: {rejected:#?}");
    let mesh = mesh_api::mesh::MeshConfig::from_file(&dir.join("meshconfig.yaml")).unwrap();
    snapshot.root_namespace.clone_from(&mesh.root_namespace);
    snapshot.mesh_config = std::sync::Arc::new(mesh);
    snapshot.version = 1;
    snapshot
}

/// The sidecar of `reviews` v1 in the telemetry mesh.
pub fn reviews() -> mesh_pilot::model::Proxy {
    mesh_pilot::model::Proxy {
        id: "sidecar~10.1.0.11~reviews-v1.demo~demo.svc.cluster.local".into(),
        namespace: "demo".into(),
        labels: [
            ("app", "reviews"),
            ("version", "v1"),
            ("service.istio.io/canonical-name", "reviews"),
            ("service.istio.io/canonical-revision", "v1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ips: vec!["10.1.0.11".parse().unwrap()],
        service_account: "reviews".into(),
        ..mesh_pilot::model::Proxy::default()
    }
}

/// The ingress gateway of the telemetry mesh.
pub fn ingress() -> mesh_pilot::model::Proxy {
    mesh_pilot::model::Proxy {
        id: "router~10.1.0.99~ingress-1.demo~demo.svc.cluster.local".into(),
        namespace: "demo".into(),
        labels: [("istio".to_owned(), "ingressgateway".to_owned())].into(),
        ips: vec!["10.1.0.99".parse().unwrap()],
        service_account: "ingress".into(),
        router: true,
        ..mesh_pilot::model::Proxy::default()
    }
}

/// The sidecar of `frontend` in the golden mesh.
pub fn frontend() -> mesh_pilot::model::Proxy {
    mesh_pilot::model::Proxy {
        id: "sidecar~10.1.0.5~frontend-1.demo~demo.svc.cluster.local".into(),
        namespace: "demo".into(),
        labels: [("app", "frontend"), ("version", "v1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ips: vec!["10.1.0.5".parse().unwrap()],
        service_account: "frontend".into(),
        proxyless: false,
        router: false,
        version: String::new(),
    }
}

/// A CDS request of the sidecar `c.demo` (version and nonce empty for the first).
pub fn cds_request(version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: "sidecar~10.0.0.9~c.demo~demo.svc.cluster.local".into(),
            ..Node::default()
        }),
        type_url: mesh_api::xds::CLUSTER_TYPE.into(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..DiscoveryRequest::default()
    }
}

/// An ADS stream to the pilot at `url` (`http://host:port`): where its requests go, and its
/// responses.
pub async fn ads_stream(
    url: &str,
) -> (mpsc::Sender<DiscoveryRequest>, tonic::Streaming<DiscoveryResponse>) {
    let mut client = AggregatedDiscoveryServiceClient::connect(url.to_owned()).await.unwrap();
    let (requests, rx) = mpsc::channel(16);
    let responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (requests, responses)
}
