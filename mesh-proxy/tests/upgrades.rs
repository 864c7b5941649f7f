//! Upgrades through the proxy: only the upgrade types the HTTP connection manager enables
//! (WebSocket, as the pilot configures) are tunnelled. An `h2c` upgrade is never switched (an
//! app that speaks h2c would otherwise take the client's HTTP/2 directly, with whatever
//! `x-forwarded-client-cert` it cares to send after the 101), an upgrade the manager does not
//! enable goes on as a plain request, and a `Connection` header that is not a list of tokens
//! is refused.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use mesh_proxy::listener::Upgrades;
use mesh_proxy::telemetry::Reporter;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// An app that takes any upgrade it is offered, as an h2c-capable server would: it answers
/// `101 Switching Protocols` to an `Upgrade` header (and then echoes bytes with `echo:`),
/// `200 OK` otherwise. Every request head it gets goes to the returned channel, lowercased.
async fn eager_app() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (heads, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(tcp, heads.clone()));
        }
    });
    (address, seen)
}

async fn serve(mut tcp: TcpStream, heads: mpsc::UnboundedSender<String>) {
    loop {
        let Some(head) = read_head(&mut tcp).await else { return };
        let head = head.to_ascii_lowercase();
        let _ = heads.send(head.clone());
        let upgrade = head.lines().find_map(|l| l.strip_prefix("upgrade:")).map(str::trim);
        match upgrade {
            Some(protocol) => {
                let switch = format!(
                    "HTTP/1.1 101 Switching Protocols\r\n\
                     connection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
                );
                tcp.write_all(switch.as_bytes()).await.unwrap();
                let mut buf = [0u8; 1024];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let mut echo = b"echo:".to_vec();
                    echo.extend_from_slice(&buf[..n]);
                    if tcp.write_all(&echo).await.is_err() {
                        return;
                    }
                }
                return;
            }
            None => {
                let ok = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain";
                if tcp.write_all(ok.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads one HTTP/1 head (up to the blank line); `None` when the peer closes first.
async fn read_head(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A proxy in front of `app` whose connection manager enables `upgrades`.
async fn proxy(app: SocketAddr, upgrades: Upgrades) -> SocketAddr {
    let cluster = common::static_cluster("app", &[app], None);
    let route = common::route("app", |_| {}, Vec::new());
    let (address, _) = common::proxy_with(Reporter::Source, upgrades, route, vec![cluster]).await;
    address
}

/// Sends `request` (raw bytes) to the proxy; the response head, and the connection.
async fn send(proxy: SocketAddr, request: &[u8]) -> (String, TcpStream) {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut tcp))
        .await
        .unwrap()
        .unwrap_or_default();
    (head, tcp)
}

const H2C: &str = "GET / HTTP/1.1\r\nHost: svc.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                   Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";

const WEBSOCKET: &str = "GET /ws HTTP/1.1\r\nHost: svc.test\r\nConnection: Upgrade\r\n\
                         Upgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                         Sec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn an_h2c_upgrade_never_switches_protocols_and_the_app_sees_no_upgrade() {
    let (app, mut seen) = eager_app().await;
    let proxy = proxy(app, Upgrades::websocket()).await;
    let (head, _) = send(proxy, H2C.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "the request goes on as plain HTTP:\n{head}");
    let at_app = seen.recv().await.unwrap();
    for stripped in ["upgrade:", "http2-settings:", "connection:"] {
        assert!(!at_app.contains(stripped), "the app got {stripped:?}:\n{at_app}");
    }
}

#[tokio::test]
async fn an_h2c_upgrade_is_stripped_even_when_the_manager_lists_h2c() {
    let (app, mut seen) = eager_app().await;
    let listed = Upgrades::from_types(["websocket", "h2c"]);
    let proxy = proxy(app, listed).await;
    let (head, _) = send(proxy, H2C.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(!seen.recv().await.unwrap().contains("upgrade:"));
}

#[tokio::test]
async fn a_websocket_upgrade_is_tunnelled() {
    let (app, mut seen) = eager_app().await;
    let proxy = proxy(app, Upgrades::websocket()).await;
    let (head, mut tcp) = send(proxy, WEBSOCKET.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols"), "{head}");
    let at_app = seen.recv().await.unwrap();
    assert!(at_app.contains("upgrade: websocket"), "{at_app}");
    tcp.write_all(b"frame-1").await.unwrap();
    let mut echoed = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"echo:frame-1", "bytes flow both ways after the 101");
}

#[tokio::test]
async fn an_upgrade_the_manager_does_not_enable_goes_on_as_a_plain_request() {
    let (app, mut seen) = eager_app().await;
    let proxy = proxy(app, Upgrades::default()).await;
    let (head, _) = send(proxy, WEBSOCKET.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let at_app = seen.recv().await.unwrap();
    assert!(!at_app.contains("upgrade:") && !at_app.contains("connection:"), "{at_app}");
    assert!(at_app.contains("sec-websocket-key:"), "other headers go on: {at_app}");
}

#[tokio::test]
async fn a_connection_header_that_is_not_a_token_list_is_refused() {
    let (app, mut seen) = eager_app().await;
    let proxy = proxy(app, Upgrades::websocket()).await;
    let requests: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: svc.test\r\nConnection: upgrade, \xc3\xa9\r\n\
          Upgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: svc.test\r\nConnection: \xffupgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: svc.test\r\nConnection: keep alive\r\n\r\n",
    ];
    for request in requests {
        let (head, _) = send(proxy, request).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{:?}: {head}", String::from_utf8_lossy(request));
    }
    let (head, _) =
        send(proxy, b"GET / HTTP/1.1\r\nHost: svc.test\r\nConnection: keep-alive, x-a\r\n\r\n")
            .await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "a valid list goes on: {head}");
    assert_eq!(
        seen.recv().await.unwrap().lines().next(),
        Some("get / http/1.1"),
        "only the valid one reached the app"
    );
}
