//! meshctl's way into a cluster, against a fake API server on loopback that speaks what a real
//! one does: pod lists and gets, 404 for a kind whose CRD is not installed, and the port-forward
//! upgrade (WebSocket, `v4.channel.k8s.io`: a data and an error channel per port, each opened by
//! the port number) carried to a real TCP server standing in for the pod's port.

#![allow(clippy::unwrap_used)] // the fake server's set-up failing is the test failing

use std::convert::Infallible;
use std::io::{BufRead as _, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use meshctl::access::{self, ClusterMesh, Mesh, MeshArgs, Pod, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

const SYNCZ: &str = r#"[{"proxy":"sidecar~10.1.0.7~productpage-v1.default~default.svc.cluster.local","version":"mesh-proxy/0.1.0","types":{}}]"#;

/// What stands in for the pods' ports: answers `GET /debug/syncz` with [`SYNCZ`] and anything
/// else with a chunked echo of the path, as the admin's streaming endpoints answer.
fn pod_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let reply = if path == "/debug/syncz" {
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{SYNCZ}", SYNCZ.len())
                } else {
                    let line = format!("{{\"path\":\"{path}\"}}\n");
                    format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{line}\r\n0\r\n\r\n",
                        line.len()
                    )
                };
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    address
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn pod(name: &str, namespace: &str) -> serde_json::Value {
    pod_in_phase(name, namespace, "Running")
}

fn pod_in_phase(name: &str, namespace: &str, phase: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion":"v1","kind":"Pod",
        "metadata":{"name":name,"namespace":namespace,"labels":{"app":"mesh-pilot"}},
        "status":{"phase":phase}})
}

struct FakeApi {
    pod_port: SocketAddr,
    forwards: AtomicUsize,
}

impl FakeApi {
    async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let not_found = || {
            json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"kind":"Status","apiVersion":"v1","status":"Failure",
                    "reason":"NotFound","code":404,"message":"the server could not find the requested resource"}),
            )
        };
        Ok(match path.as_str() {
            "/api/v1/namespaces/mesh-system/pods" if query.contains("app%3Dmesh-pilot") => json(
                StatusCode::OK,
                serde_json::json!({"apiVersion":"v1","kind":"PodList","metadata":{},
                    "items":[pod("mesh-pilot-8e1a", "mesh-system"),
                        pod_in_phase("mesh-pilot-0000", "mesh-system", "Pending"),
                        pod("mesh-pilot-7d9f", "mesh-system")]}),
            ),
            "/api/v1/namespaces/default/pods/productpage-v1" => {
                json(StatusCode::OK, pod("productpage-v1", "default"))
            }
            "/api/v1/namespaces" => json(
                StatusCode::OK,
                serde_json::json!({"apiVersion":"v1","kind":"NamespaceList","metadata":{},
                    "items":[{"metadata":{"name":"default","labels":{"istio-injection":"enabled"}}}]}),
            ),
            "/apis/networking.istio.io/v1/namespaces/default/virtualservices" => json(
                StatusCode::OK,
                serde_json::json!({"apiVersion":"networking.istio.io/v1","kind":"VirtualServiceList",
                    "metadata":{},"items":[{"metadata":{"name":"reviews","namespace":"default"},
                    "spec":{"hosts":["reviews"],"http":[{"route":[{"destination":{"host":"reviews"}}]}]}}]}),
            ),
            p if p.ends_with("/portforward") => self.port_forward(request).await,
            p if p.contains("/pods/") => not_found(),
            // Every other list: empty when core, as if its CRD were missing when not.
            p if p.starts_with("/api/v1/") || p.starts_with("/apis/apps/") => json(
                StatusCode::OK,
                serde_json::json!({"apiVersion":"v1","kind":"List","metadata":{},"items":[]}),
            ),
            _ => not_found(),
        })
    }

    /// Accepts the WebSocket upgrade and carries the port's data channel to [`pod_port`].
    async fn port_forward(
        self: Arc<Self>,
        mut request: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let key = request.headers().get("sec-websocket-key").cloned();
        let offered = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let port: u16 = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ports=")))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let (Some(key), true) = (key, offered.contains("v4.channel.k8s.io")) else {
            return json(StatusCode::BAD_REQUEST, serde_json::json!({"code":400}));
        };
        self.forwards.fetch_add(1, Ordering::SeqCst);
        let upgrade = hyper::upgrade::on(&mut request);
        let pod_port = self.pod_port;
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let [lo, hi] = port.to_le_bytes();
            // The server opens both channels of the port with its number.
            if socket.send(Message::binary(vec![0u8, lo, hi])).await.is_err()
                || socket.send(Message::binary(vec![1u8, lo, hi])).await.is_err()
            {
                return;
            }
            let Ok(mut upstream) = tokio::net::TcpStream::connect(pod_port).await else { return };
            let mut buf = vec![0u8; 8192];
            loop {
                tokio::select! {
                    message = socket.next() => match message {
                        Some(Ok(Message::Binary(data))) if data.first() == Some(&0) => {
                            if upstream.write_all(&data[1..]).await.is_err() { break }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                    read = upstream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut frame = vec![0u8];
                            frame.extend_from_slice(&buf[..n]);
                            if socket.send(Message::binary(frame)).await.is_err() { break }
                        }
                    },
                }
            }
            let _ = socket.close(None).await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .header("sec-websocket-protocol", "v4.channel.k8s.io")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }
}

/// Starts the fake API server on its own runtime; its address and state.
fn fake_api() -> (SocketAddr, Arc<FakeApi>) {
    let api = Arc::new(FakeApi { pod_port: pod_port(), forwards: AtomicUsize::new(0) });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let served = api.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let api = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| api.clone().answer(r));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
    });
    (address, api)
}

fn cluster(address: SocketAddr) -> ClusterMesh {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let config = kube::Config::new(format!("http://{address}").parse().unwrap());
    let args = MeshArgs { mesh_namespace: "mesh-system".into(), ..MeshArgs::default() };
    ClusterMesh::with_config(runtime, config, &args).unwrap()
}

#[test]
fn the_pilot_and_a_proxy_are_read_through_port_forwards() {
    let (address, api) = fake_api();
    let mesh = cluster(address);

    // Every running pilot is asked (each proxy is connected to one of them), and each entry
    // names the pilot that reported it.
    let (_, statuses) = access::syncz(&mesh).unwrap();
    let pilots: Vec<&str> = statuses.iter().map(|s| s.pilot.as_str()).collect();
    assert_eq!(pilots, ["mesh-pilot-7d9f", "mesh-pilot-8e1a"]);
    assert_eq!(
        statuses[0].pod(),
        Some(Pod { name: "productpage-v1".into(), namespace: "default".into() })
    );
    assert_eq!(statuses[0].version, "mesh-proxy/0.1.0");

    let pod = mesh.find_pod("productpage-v1").unwrap();
    assert_eq!(pod.namespace, "default", "a bare name is in the context's namespace");
    let body = access::get(&mesh, &Target::Pod(pod.clone()), 15000, "/config_dump").unwrap();
    assert_eq!(body, "{\"path\":\"/config_dump\"}\n");
    let mut lines = access::stream(&mesh, &Target::Pod(pod), 15000, "/tap?max=1", None).unwrap();
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "{\"path\":\"/tap?max=1\"}\n");
    assert_eq!(api.forwards.load(Ordering::SeqCst), 4, "one port-forward per request");
}

#[test]
fn a_missing_pod_and_a_missing_control_plane_say_what_to_do() {
    let (address, _) = fake_api();
    let mesh = cluster(address);
    let err = mesh.find_pod("ratings-v1.bookinfo").unwrap_err().to_string();
    assert!(err.contains("no pod ratings-v1.bookinfo"), "{err}");
    let err = access::get(&mesh, &Target::Ca, 15014, "/version").unwrap_err().to_string();
    assert!(
        err.contains("no running mesh-ca pod in namespace mesh-system")
            && err.contains("--mesh-namespace"),
        "{err}"
    );
}

#[test]
fn the_live_config_carries_each_objects_type_and_skips_kinds_not_installed() {
    let (address, _) = fake_api();
    let mesh = cluster(address);
    let documents = mesh.config_documents(Some("default")).unwrap();
    let kinds: Vec<(String, String)> = documents
        .iter()
        .map(|(origin, text)| {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            (origin.clone(), format!("{} {}", value["apiVersion"], value["kind"]))
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("Namespace /default".to_owned(), "\"v1\" \"Namespace\"".to_owned()),
            (
                "VirtualService default/reviews".to_owned(),
                "\"networking.istio.io/v1\" \"VirtualService\"".to_owned()
            ),
        ]
    );
    // What comes back loads as the mesh's own types.
    let report = mesh_api::load::load_str("cluster", &documents[1].1);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}
