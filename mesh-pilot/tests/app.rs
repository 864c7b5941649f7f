//! The pilot as its binary runs it (`app::build_with`): `/ready` names what it still waits
//! for, and a stop ends every xDS stream, closes the ports and returns within the deadline.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use std::time::Duration;

use common::{ads_stream, cds_request};
use mesh_pilot::app;
use mesh_testing::http::{get, status_and_body};
use mesh_testing::pilot::TestPilot;

#[tokio::test]
async fn not_ready_until_it_has_its_certificate() {
    let files = tempfile::tempdir().unwrap();
    let root = files.path().join("root-cert.pem");
    std::fs::write(&root, &mesh_testing::ca::TestCa::new().root_pem).unwrap();
    let mut config = TestPilot::config(&common::mesh_dir());
    // A CA that refuses every connection: the pilot keeps trying.
    config.ca_address = Some(format!("127.0.0.1:{}", mesh_testing::net::free_port()));
    config.root_cert = root;
    config.token_path = files.path().join("token");
    let mut listeners = TestPilot::listeners();
    listeners.xds_mtls = Some(mesh_testing::net::listener().0);
    let pilot = app::build_with(config, listeners).await.unwrap();
    assert!(pilot.xds_mtls.is_some());

    let mut snapshots = pilot.snapshots.clone();
    tokio::time::timeout(Duration::from_secs(10), snapshots.wait_for(|s| s.version > 0))
        .await
        .expect("the first configuration is read")
        .unwrap();
    let response = get(pilot.monitoring, "/ready").await.unwrap();
    assert_eq!(status_and_body(&response), (503, "not ready: pilot certificate\n"));
    assert_eq!(pilot.ready.pending(), ["pilot certificate"]);

    // Stopping while it waits for the CA.
    pilot.shutdown.request();
    tokio::time::timeout(Duration::from_secs(5), pilot.run())
        .await
        .expect("the pilot stops within the drain deadline")
        .unwrap();
}

#[tokio::test]
async fn a_stop_ends_every_stream_and_closes_the_ports() {
    let config = TestPilot::config(&common::mesh_dir());
    let pilot = app::build_with(config, TestPilot::listeners()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), pilot.ready.wait()).await.unwrap();
    let (xds, monitoring, shutdown) =
        (pilot.xds.unwrap(), pilot.monitoring, pilot.shutdown.clone());
    let ready_response = get(monitoring, "/ready").await.unwrap();
    assert_eq!(status_and_body(&ready_response), (200, "ready\n"));

    let (requests, mut responses) = ads_stream(&format!("http://{xds}")).await;
    requests.send(cds_request("", "")).await.unwrap();
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(first.resources.len(), 7);

    let running = tokio::spawn(pilot.run());
    shutdown.request();
    let ended = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("the stream ends at once, not at the deadline")
        .unwrap_err();
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert_eq!(ended.message(), "the pilot is shutting down");
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the pilot stops within the drain deadline")
        .unwrap()
        .unwrap();
    assert!(get(monitoring, "/ready").await.is_none(), "monitoring is closed");
    assert!(tokio::net::TcpStream::connect(xds).await.is_err(), "xDS is closed");
}
