//! The test pilot: ready when it returns, serving its YAML; a file written is published;
//! dropped, it stops.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

use std::time::Duration;

use mesh_testing::http::{get, status_and_body};
use mesh_testing::pilot::TestPilot;

const HELLO: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: hello, namespace: demo}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{name: http, port: 80}]\n";
const CACHE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: cache, namespace: demo}\nspec:\n  clusterIP: 10.96.0.30\n  ports: [{name: tcp-redis, port: 6379}]\n";

#[tokio::test]
async fn serves_its_yaml_publishes_a_write_and_stops_on_drop() {
    let pilot = TestPilot::from_yaml(HELLO).await;
    let ready = get(pilot.monitoring, "/ready").await.unwrap();
    assert_eq!(status_and_body(&ready), (200, "ready\n"));
    let registry = get(pilot.monitoring, "/debug/registry").await.unwrap();
    assert!(registry.contains("hello.demo.svc.cluster.local"), "{registry}");
    assert!(!registry.contains("cache.demo"), "{registry}");

    let version = pilot.write("cache.yaml", CACHE).await;
    assert!(version > 1, "a new snapshot: {version}");
    let registry = get(pilot.monitoring, "/debug/registry").await.unwrap();
    assert!(registry.contains("cache.demo.svc.cluster.local"), "{registry}");
    assert_eq!(pilot.discovery.metrics.config_rejected.get(), 0);

    let (monitoring, dir) = (pilot.monitoring, pilot.dir().to_owned());
    drop(pilot);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while get(monitoring, "/ready").await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "still serving after the drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!dir.exists(), "its directory is removed");
}
