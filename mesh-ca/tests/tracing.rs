//! The `mesh-ca` binary traces its signings: with `--otlp-endpoint` naming a collector, each
//! certificate request is a span with the identity and the lifetime asked for (an error status
//! when refused), and the spans still queued when it stops are sent before it exits.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_api::identity::SpiffeId;
use mesh_identity::client::{CaClient, ClientSettings, TokenSource};
use mesh_testing::net::free_port;
use mesh_trace::receiver::{Limits, Receiver};

/// Long enough for anything on a loaded 2-core machine; only a failure waits it out.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn signings_are_spans_sent_at_the_latest_when_the_ca_stops() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let receiver = Receiver::new(Limits::default());
    tokio::spawn(receiver.clone().serve(listener, std::future::pending()));

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "s3cret bookinfo/bookinfo-reviews\n").unwrap();
    let (grpc, monitoring) = (free_port(), free_port());
    let mut ca = Command::new(env!("CARGO_BIN_EXE_mesh-ca"))
        .args(["--mode", "local", "--trust-domain", "cluster.local"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--plugin-dir")
        .arg(dir.path().join("no-plugin"))
        .arg("--tokens-file")
        .arg(&tokens)
        .args(["--listen", &format!("127.0.0.1:{grpc}")])
        .args(["--monitoring-listen", &format!("127.0.0.1:{monitoring}")])
        .args(["--server-name", "localhost"])
        .args(["--otlp-endpoint", &collector.to_string()])
        // No batch is sent on a timer: only shutdown's flush sends these spans.
        .env("OTEL_BSP_SCHEDULE_DELAY", "3600000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics = || mesh_testing::http::get(([127, 0, 0, 1], monitoring).into(), "/metrics");
    let deadline = Instant::now() + WAIT;
    while !metrics().await.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "mesh-ca did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let root_pem = std::fs::read_to_string(dir.path().join("state/root-cert.pem")).unwrap();
    let client = |token: &str| {
        CaClient::new(ClientSettings {
            ca_address: format!("127.0.0.1:{grpc}"),
            ca_server_name: "localhost".to_owned(),
            root_pems: vec![root_pem.clone()],
            token: TokenSource::Value(token.to_owned()),
            identity: SpiffeId::new("cluster.local", "bookinfo", "bookinfo-reviews").unwrap(),
            ttl: Duration::from_secs(600),
            dns_names: Vec::new(),
        })
        .unwrap()
    };
    client("s3cret").fetch().await.unwrap();
    assert!(client("wrong").fetch().await.is_err());
    let scraped = metrics().await.unwrap();
    assert!(scraped.contains("\nmesh_ca_spans_dropped_total 0\n"), "{scraped}");
    assert!(receiver.latest(1).await.is_empty(), "nothing is sent before a batch is due");

    let status = Command::new("kill").args(["-TERM", &ca.id().to_string()]).status().unwrap();
    assert!(status.success());
    // Waited for off this thread: the receiver runs on it, and the CA's last export needs it.
    let exit = tokio::task::spawn_blocking(move || ca.wait().unwrap()).await.unwrap();
    assert!(exit.success(), "mesh-ca exited with {exit}");

    let signed = receiver
        .wait_for_span(WAIT, |s| s.name == "sign" && s.status == "UNSET")
        .await
        .expect("the signing's span, flushed at exit");
    assert_eq!(signed.service, "mesh-ca");
    assert_eq!(
        signed.attributes["identity"],
        "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
    );
    assert_eq!(signed.attributes["ttl"], 600);
    let refused = receiver
        .wait_for_span(WAIT, |s| s.name == "sign" && s.status == "ERROR")
        .await
        .expect("the refused request's span");
    assert!(!refused.attributes.contains_key("identity"), "{refused:?}");
    assert!(!refused.status_message.is_empty());
}
