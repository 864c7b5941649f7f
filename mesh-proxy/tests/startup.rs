//! The proxy binary before it can carry traffic, as the kubelet sees it: readiness answers
//! from the first moment and names what start-up waits for, and a stop while it waits (here,
//! for a CA that is down) exits at once instead of waiting out the drain period.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_testing::net::free_port;

#[tokio::test]
async fn readiness_names_what_start_up_waits_for_and_a_stop_is_not_held_up() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mesh_testing::ca::TestCa::new();
    std::fs::write(dir.path().join("root.pem"), &ca.root_pem).unwrap();
    std::fs::write(dir.path().join("token"), "t").unwrap();
    let (health, admin, metrics, unreachable) =
        (free_port(), free_port(), free_port(), free_port());
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
        .args(["--pilot-address", "http://127.0.0.1:1", "--ca-address"])
        .arg(format!("127.0.0.1:{unreachable}"))
        .arg("--root-cert")
        .arg(dir.path().join("root.pem"))
        .arg("--token-path")
        .arg(dir.path().join("token"))
        .args(["--pod-name", "hello-1", "--pod-namespace", "demo", "--service-account", "hello"])
        .args(["--pod-ip", "127.0.0.1", "--labels-file", "/nonexistent"])
        .args(["--health-port", &health.to_string(), "--admin-port", &admin.to_string()])
        .args(["--metrics-port", &metrics.to_string(), "--drain-duration", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Some(answer) =
            mesh_testing::http::get(([127, 0, 0, 1], health).into(), "/healthz/ready").await
        {
            break answer;
        }
        assert!(Instant::now() < deadline, "readiness never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, body) = mesh_testing::http::status_and_body(&answer);
    assert_eq!(status, 503, "{answer}");
    assert!(body.contains("workload certificate"), "names what it waits for: {body}");

    let pid = proxy.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // The drain period is a minute: exiting well before it shows start-up held nothing open.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = proxy.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = proxy.kill();
            panic!("the proxy did not exit after SIGTERM during start-up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a clean exit: {status}");
}
