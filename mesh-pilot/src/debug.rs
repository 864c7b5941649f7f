//! The monitoring and debug endpoint (port 15014): `/ready` once the first snapshot is out,
//! `/debug/syncz` (what each proxy was sent and acknowledged, per type: the data behind
//! `meshctl proxy-status`), `/debug/config_dump?proxyID=` (what one proxy is served, as Envoy's
//! config dump JSON), `/debug/registry` (the services known).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::ads::Discovery;
use crate::model::Snapshot;

mod config_dump;
pub use config_dump::config_dump;

/// What the endpoint reads.
pub struct State {
    /// The xDS server.
    pub discovery: Arc<Discovery>,
    /// The published snapshots.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Set once the config sources have produced a first snapshot.
    pub ready: AtomicBool,
    /// Set while the pilot waits for its certificate (mTLS xDS configured, not yet served).
    pub certificate_pending: AtomicBool,
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!("debug accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(req.uri(), &state).await) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!("debug connection ended: {err}");
            }
        });
    }
}

/// The value of a query parameter, percent-decoded.
fn query_param(uri: &hyper::Uri, name: &str) -> Option<String> {
    let raw =
        uri.query()?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn respond(uri: &hyper::Uri, state: &State) -> Response<Full<Bytes>> {
    let (status, body) = match uri.path() {
        "/debug/config_dump" => match query_param(uri, "proxyID") {
            None => (
                StatusCode::BAD_REQUEST,
                "/debug/config_dump needs ?proxyID=<node id> (see /debug/syncz)\n".to_owned(),
            ),
            Some(id) => match config_dump(&state.discovery, &id).await {
                None => (StatusCode::NOT_FOUND, format!("no connected proxy {id:?}\n")),
                Some(Ok(dump)) => (StatusCode::OK, format!("{dump:#}\n")),
                Some(Err(err)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
            },
        },
        "/metrics" => (StatusCode::OK, state.discovery.metrics.encode()),
        "/ready" if !state.ready.load(Ordering::Acquire) => {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: no configuration read yet\n".to_owned())
        }
        "/ready" if state.certificate_pending.load(Ordering::Acquire) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the pilot's certificate from the CA\n".to_owned(),
        ),
        "/ready" => (StatusCode::OK, "ready\n".to_owned()),
        "/debug/syncz" => {
            let proxies: Vec<_> =
                state
                    .discovery
                    .syncz()
                    .await
                    .into_iter()
                    .map(|p| {
                        let types: serde_json::Map<String, serde_json::Value> = p
                        .types
                        .iter()
                        .map(|(t, s)| {
                            (t.clone(), json!({
                                "state": s.state(),
                                "sent_version": s.sent_version, "sent_nonce": s.sent_nonce,
                                "acked_version": s.acked_version, "acked_nonce": s.acked_nonce,
                                "last_nack": s.last_nack,
                            }))
                        })
                        .collect();
                        json!({"proxy": p.id, "types": types})
                    })
                    .collect();
            (StatusCode::OK, format!("{:#}\n", json!(proxies)))
        }
        "/debug/registry" => {
            let snapshot = state.snapshots.borrow().clone();
            let services: Vec<_> = snapshot
                .services
                .values()
                .map(|s| {
                    let ports: Vec<_> = s
                        .ports
                        .iter()
                        .map(|p| {
                            let endpoints = snapshot.endpoints.get(&(s.hostname.clone(), p.port)).map_or(0, Vec::len);
                            json!({"port": p.port, "name": p.name, "protocol": format!("{:?}", p.protocol), "endpoints": endpoints})
                        })
                        .collect();
                    json!({"hostname": s.hostname, "vip": s.vip.map(|v| v.to_string()), "ports": ports})
                })
                .collect();
            (
                StatusCode::OK,
                format!("{:#}\n", json!({"version": snapshot.version, "services": services})),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /ready, /debug/syncz, /debug/config_dump?proxyID= or /debug/registry\n"
                .to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
