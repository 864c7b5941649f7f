//! The app's probes run by the proxy (`/app-health/...` on 15020), against a real app on
//! loopback: what the kubelet would have concluded from the original probe is what the rewritten
//! probe answers. And `mesh-proxy wait` against a readiness endpoint that turns ready.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use http::{Request, StatusCode};
use mesh_proxy::app_health;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An app that answers `/ok` 200, `/moved` 302, `/slow` after 3 s, anything else 500, and
/// records the requests' heads.
async fn app() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (listener, address) = mesh_testing::net::tokio_listener();
    let (heads, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = tcp.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let _ = heads.send(head);
                let status = match path.as_str() {
                    "/ok" => "200 OK",
                    "/moved" => "302 Found",
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        "200 OK"
                    }
                    _ => "500 Internal Server Error",
                };
                let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    (address.port(), seen)
}

fn probers(port: u16, closed: u16) -> mesh_api::inject::probes::AppProbers {
    app_health::parse(&format!(
        r#"{{
        "/app-health/web/livez": {{"httpGet": {{"path": "/ok", "port": {port}, "httpHeaders": [{{"name": "X-Probe", "value": "live"}}]}}}},
        "/app-health/web/readyz": {{"httpGet": {{"path": "/moved", "port": {port}}}}},
        "/app-health/web/startupz": {{"httpGet": {{"path": "/broken", "port": {port}}}}},
        "/app-health/slow/readyz": {{"httpGet": {{"path": "/slow", "port": {port}}}, "timeoutSeconds": 1}},
        "/app-health/tcp/livez": {{"tcpSocket": {{"port": {port}}}}},
        "/app-health/tcp/readyz": {{"tcpSocket": {{"port": {closed}}}}}
    }}"#
    ))
    .unwrap()
}

async fn probe(path: &str, probers: &mesh_api::inject::probes::AppProbers) -> (StatusCode, String) {
    let request = Request::get(path).body(()).unwrap();
    let response = app_health::respond(&request, probers, LOOPBACK).await;
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn rewritten_probes_answer_what_the_original_probes_would_have_found() {
    let (port, mut heads) = app().await;
    let closed = mesh_testing::net::free_port();
    let probers = probers(port, closed);

    let (status, _) = probe("/app-health/web/livez", &probers).await;
    assert_eq!(status, StatusCode::OK);
    let head = heads.recv().await.unwrap();
    assert!(head.starts_with("GET /ok HTTP/1.1"), "{head}");
    assert!(head.to_ascii_lowercase().contains("x-probe: live"), "the probe's headers: {head}");
    assert!(head.contains("kube-probe"), "a kubelet-like user agent: {head}");

    assert_eq!(probe("/app-health/web/readyz", &probers).await.0, StatusCode::OK, "3xx passes");
    let (status, body) = probe("/app-health/web/startupz", &probers).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("the app answered 500"), "{body}");
    let (status, body) = probe("/app-health/slow/readyz", &probers).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("did not answer within 1s"), "{body}");

    assert_eq!(probe("/app-health/tcp/livez", &probers).await.0, StatusCode::OK);
    let (status, body) = probe("/app-health/tcp/readyz", &probers).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("cannot connect"), "{body}");

    let (status, _) = probe("/app-health/other/livez", &probers).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "only the injected paths");
}

#[tokio::test]
async fn wait_returns_once_the_proxy_is_ready_and_fails_after_its_timeout() {
    let (listener, health) = mesh_testing::net::tokio_listener();
    let ready_after = std::time::Instant::now() + Duration::from_millis(600);
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let status = if std::time::Instant::now() >= ready_after {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            let _ = tcp.write_all(answer.as_bytes()).await;
        }
    });
    let period = Duration::from_millis(50);
    app_health::wait_ready(health, period, Duration::from_secs(20)).await.unwrap();

    let nobody = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, mesh_testing::net::free_port()));
    let err = app_health::wait_ready(nobody, period, Duration::from_millis(300)).await.unwrap_err();
    assert!(err.contains("not ready after 0s") && err.contains("cannot connect"), "{err}");
}
