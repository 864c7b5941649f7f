//! xDS over mesh mTLS (port 15012): a proxy with a certificate from the mesh CA is served as
//! the workload its certificate names; a node claiming another namespace or service account,
//! or a client without a mesh certificate, is refused; the pilot gets its own certificate from
//! mesh-ca before it is ready.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use mesh_api::identity::SpiffeId;
use mesh_identity::CertStore;
use mesh_pilot::ads::Discovery;
use mesh_testing::ca::{TRUST_DOMAIN, TestCa};
use tokio_stream::StreamExt as _;

/// Starts the mTLS xDS server with the pilot's own certificate; returns its address.
async fn pilot(mesh: &TestCa) -> (Arc<Discovery>, String) {
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(common::mesh()));
    std::mem::forget(tx);
    let discovery = Discovery::new(rx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let store = mesh.store("mesh-system", "mesh-pilot");
    let (served, roots) = (discovery.clone(), mesh.roots());
    tokio::spawn(async move {
        mesh_pilot::ads::serve_mtls(
            served,
            listener,
            store,
            roots,
            TRUST_DOMAIN,
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    (discovery, address)
}

/// A proxy's ADS client presenting `store`, accepting only the pilot's identity.
fn client(
    mesh: &TestCa,
    address: &str,
    store: Arc<CertStore>,
) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let pilot = SpiffeId::new(TRUST_DOMAIN, "mesh-system", "mesh-pilot").unwrap();
    let config = mesh_identity::tls::mesh_client_config(store, mesh.roots(), vec![pilot]).unwrap();
    let name = rustls_pki_types::ServerName::try_from("mesh-pilot.mesh-system.svc").unwrap();
    let channel = mesh_identity::grpc::grpc_channel(address, name, config).unwrap().connect_lazy();
    AggregatedDiscoveryServiceClient::new(channel)
}

fn cds_request(namespace: &str, service_account: &str) -> DiscoveryRequest {
    let text = |s: &str| Value { kind: Some(Kind::StringValue(s.to_owned())) };
    DiscoveryRequest {
        node: Some(Node {
            id: format!("sidecar~10.0.0.9~hello-1.{namespace}~{namespace}.svc.cluster.local"),
            metadata: Some(Struct {
                fields: [
                    ("NAMESPACE".to_owned(), text(namespace)),
                    ("SERVICE_ACCOUNT".to_owned(), text(service_account)),
                ]
                .into_iter()
                .collect(),
            }),
            ..Node::default()
        }),
        type_url: mesh_api::xds::CLUSTER_TYPE.to_owned(),
        ..DiscoveryRequest::default()
    }
}

/// Opens a stream with one request and returns its first answer.
async fn first_answer(
    mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    request: DiscoveryRequest,
) -> Result<usize, tonic::Status> {
    let requests = tokio_stream::iter(vec![request]).chain(tokio_stream::pending());
    let mut responses = client.stream_aggregated_resources(requests).await?.into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("the pilot answers within 10s")?;
    Ok(first.expect("a response before the stream ends").resources.len())
}

#[tokio::test]
async fn a_proxy_is_served_as_the_workload_its_certificate_names() {
    let mesh = TestCa::new();
    let (_discovery, address) = pilot(&mesh).await;
    let proxy = client(&mesh, &address, mesh.store("demo", "hello"));
    let clusters = first_answer(proxy, cds_request("demo", "hello")).await.unwrap();
    assert!(clusters > 0, "the proxy gets its clusters");
}

#[tokio::test]
async fn a_node_claiming_another_workload_is_refused() {
    let mesh = TestCa::new();
    let (discovery, address) = pilot(&mesh).await;
    for (namespace, service_account) in [("other", "hello"), ("demo", "admin")] {
        let proxy = client(&mesh, &address, mesh.store("demo", "hello"));
        let refused =
            first_answer(proxy, cds_request(namespace, service_account)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains("spiffe://cluster.local/ns/demo/sa/hello"),
            "the refusal names the certificate's identity: {}",
            refused.message()
        );
    }
    assert_eq!(discovery.metrics.identity_refused.get(), 2);
    assert!(discovery.syncz().await.is_empty(), "refused streams are not registered");
}

#[tokio::test]
async fn a_client_without_a_mesh_certificate_cannot_connect() {
    let mesh = TestCa::new();
    let (discovery, address) = pilot(&mesh).await;
    // A certificate from another CA with the same trust domain name.
    let stranger = TestCa::new();
    let proxy = client(&mesh, &address, stranger.store("demo", "hello"));
    let refused = first_answer(proxy, cds_request("demo", "hello")).await.unwrap_err();
    // TLS 1.3 rejects a client certificate after the client's side of the handshake: the
    // refusal arrives as an alert on the connection, never as an xDS answer.
    assert!(
        matches!(refused.code(), tonic::Code::Unknown | tonic::Code::Unavailable)
            && refused.message().contains("transport error"),
        "{refused:?}"
    );
    assert!(discovery.syncz().await.is_empty(), "no stream was opened");
}

/// The pilot as the binary runs it with `--ca-address`: its certificate comes from mesh-ca (its
/// app, signing with the test CA's root) before it turns ready, and proxies are then served
/// over mTLS.
#[tokio::test]
async fn the_pilot_gets_its_certificate_from_the_ca_and_serves_mtls() {
    let secured = mesh_testing::pilot::SecuredPilot::start(&common::mesh_dir()).await;
    let (pilot, mesh) = (&secured.pilot, &secured.mesh);
    let address = pilot.bound().xds_mtls.unwrap().to_string();
    let proxy = client(mesh, &address, mesh.store("demo", "hello"));
    let clusters = first_answer(proxy, cds_request("demo", "hello")).await.unwrap();
    assert!(clusters > 0, "the proxy gets its clusters");
}
