//! The `mesh-ca` binary in local mode, as a user runs it: it makes and keeps its root, writes
//! `root-cert.pem`, reports ready, signs for a token from the tokens file, and stops cleanly on
//! SIGTERM.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_api::identity::SpiffeId;
use mesh_identity::client::{CaClient, ClientSettings, TokenSource};
use mesh_testing::net::free_port;

/// `GET path` on the monitoring port.
async fn get(port: u16, path: &str) -> Option<String> {
    mesh_testing::http::get(([127, 0, 0, 1], port).into(), path).await
}

#[tokio::test]
async fn local_mode_signs_for_tokens_and_keeps_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "s3cret bookinfo/bookinfo-reviews\n").unwrap();
    let (grpc, monitoring) = (free_port(), free_port());
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_mesh-ca"))
            .args(["--mode", "local", "--trust-domain", "cluster.local"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--plugin-dir")
            .arg(dir.path().join("no-plugin"))
            .arg("--tokens-file")
            .arg(&tokens)
            .args([
                "--listen",
                &format!("127.0.0.1:{grpc}"),
                "--monitoring-listen",
                &format!("127.0.0.1:{monitoring}"),
            ])
            .args(["--server-name", "localhost"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut ca = start();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if get(monitoring, "/ready").await.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(Instant::now() < deadline, "mesh-ca did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let root_pem = std::fs::read_to_string(dir.path().join("state/root-cert.pem")).unwrap();
    let client = CaClient::new(ClientSettings {
        ca_address: format!("127.0.0.1:{grpc}"),
        ca_server_name: "localhost".to_owned(),
        root_pems: vec![root_pem.clone()],
        token: TokenSource::Value("s3cret".to_owned()),
        identity: SpiffeId::new("cluster.local", "bookinfo", "bookinfo-reviews").unwrap(),
        ttl: Duration::from_secs(600),
        dns_names: Vec::new(),
    })
    .unwrap();
    let issued = client.fetch().await.unwrap();
    assert_eq!(issued.chain.len(), 2);
    let metrics = get(monitoring, "/metrics").await.unwrap();
    assert!(metrics.contains("mesh_ca_certificates_signed_total 1"), "{metrics}");
    assert!(metrics.contains("mesh_ca_root_cert_expiry_timestamp_seconds"), "{metrics}");

    // SIGTERM: a clean stop.
    let status = Command::new("kill").args(["-TERM", &ca.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = ca.wait().unwrap();
    assert!(exit.success(), "mesh-ca exited with {exit}");

    // A restart keeps the same root.
    let mut again = start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(monitoring, "/ready").await.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "mesh-ca did not become ready after a restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("state/root-cert.pem")).unwrap(), root_pem);
    client.fetch().await.unwrap();
    let _ = again.kill();
    let _ = again.wait();
}

#[test]
fn local_mode_without_tokens_file_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-ca"))
        .args(["--mode", "local", "--listen", "127.0.0.1:0", "--monitoring-listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--plugin-dir")
        .arg(dir.path().join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("local mode needs --tokens-file"), "{stderr}");
}
