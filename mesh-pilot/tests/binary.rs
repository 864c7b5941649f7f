//! The `mesh-pilot` binary in local mode: it serves what the directory says, pushes when a file
//! changes, and reports an invalid file without disturbing the rest.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ads_stream, cds_request};
use mesh_testing::http::get;
use mesh_testing::net::free_port;

#[tokio::test]
async fn local_directory_changes_reach_connected_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("pilot.log");
    let data = common::mesh_dir();
    for file in ["services.yaml", "routing.yaml"] {
        std::fs::copy(data.join(file), dir.path().join(file)).unwrap();
    }
    let (xds, monitoring) = (free_port(), free_port());
    let monitoring = SocketAddr::from(([127, 0, 0, 1], monitoring));
    let mut pilot = Command::new(env!("CARGO_BIN_EXE_mesh-pilot"))
        .arg("--config-dir")
        .arg(dir.path())
        .args([
            "--xds-listen",
            &format!("127.0.0.1:{xds}"),
            "--monitoring-listen",
            &monitoring.to_string(),
        ])
        .args(["--poll-interval", "100ms", "--debounce-after", "50ms"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(monitoring, "/ready").await.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "mesh-pilot did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (requests, mut responses) = ads_stream(&format!("http://127.0.0.1:{xds}")).await;
    requests.send(cds_request("", "")).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("a first CDS response")
        .unwrap()
        .unwrap();
    assert_eq!(first.resources.len(), 7);
    requests.send(cds_request(&first.version_info, &first.nonce)).await.unwrap();

    // A new Service file: the connected client gets its cluster.
    std::fs::write(
        dir.path().join("cache.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: cache, namespace: demo}\nspec:\n  clusterIP: 10.96.0.30\n  ports: [{name: tcp-redis, port: 6379}]\n",
    )
    .unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("a push after the edit")
        .unwrap()
        .unwrap();
    assert_eq!(pushed.resources.len(), 8);
    assert_ne!(pushed.version_info, first.version_info);
    requests.send(cds_request(&pushed.version_info, &pushed.nonce)).await.unwrap();

    // An invalid file is reported and changes nothing for the proxies.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad, namespace: demo}\nspec:\n  host: cache\n  subsets:\n  - name: a\n  - name: a\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), responses.message()).await.is_err(),
        "no push for an invalid file"
    );
    let syncz = get(monitoring, "/debug/syncz").await.unwrap();
    assert!(syncz.contains("\"state\": \"SYNCED\""), "{syncz}");
    let metrics = get(monitoring, "/metrics").await.unwrap();
    for line in [
        "pilot_xds_pushes_total{type=\"cds\"} 2",
        "pilot_config_rejected 1",
        "pilot_xds 1",
        "pilot_proxy_convergence_time_count 2",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    let registry = get(monitoring, "/debug/registry").await.unwrap();
    assert!(registry.contains("cache.demo.svc.cluster.local"), "{registry}");

    // What the connected proxy is served, as Envoy's config dump.
    let dump = get(
        monitoring,
        "/debug/config_dump?proxyID=sidecar%7E10.0.0.9%7Ec.demo%7Edemo.svc.cluster.local",
    )
    .await
    .unwrap();
    let (head, body) = dump.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{dump}");
    let dump: serde_json::Value = serde_json::from_str(body).unwrap();
    let types: Vec<&str> =
        dump["configs"].as_array().unwrap().iter().map(|c| c["@type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["ClustersConfigDump", "EndpointsConfigDump", "ListenersConfigDump", "RoutesConfigDump"]
            .map(|t| format!("type.googleapis.com/envoy.admin.v3.{t}"))
    );
    let clusters = &dump["configs"][0]["dynamicActiveClusters"];
    assert!(
        clusters
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["cluster"]["name"] == "outbound|6379||cache.demo.svc.cluster.local"
                && c["cluster"]["@type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster"),
        "{clusters:#}"
    );
    let listeners = &dump["configs"][2]["dynamicListeners"];
    assert_eq!(listeners[0]["activeState"]["listener"]["name"], "virtualOutbound");
    let missing = get(monitoring, "/debug/config_dump").await.unwrap();
    assert!(missing.starts_with("HTTP/1.1 400"), "{missing}");
    let unknown = get(monitoring, "/debug/config_dump?proxyID=nobody").await.unwrap();
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");

    let _ = Command::new("kill").args(["-TERM", &pilot.id().to_string()]).status();
    let exit = tokio::task::spawn_blocking(move || pilot.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "mesh-pilot exited with {exit}");
    let out = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        out.contains("bad.yaml")
            && out.contains("subset name \"a\" is already used by an earlier subset"),
        "the invalid file is reported with its place and reason:\n{out}"
    );
}
