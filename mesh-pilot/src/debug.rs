//! What the monitoring and debug endpoint (port 15014, served by `mesh_runtime::admin`)
//! answers: `/metrics`, `/ready` (naming what the pilot still waits for), `/version`, `/debug/syncz`
//! (what each proxy was sent and acknowledged, per type: the data behind `meshctl
//! proxy-status`), `/debug/config_dump?proxyID=` (what one proxy is served, as Envoy's config
//! dump JSON), `/debug/registry` (the services known). Everything but `/metrics` and `/ready`
//! is answered only as [`access`] allows (a loopback listener, or the debug token).

use std::sync::Arc;

use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, Response, StatusCode};
use mesh_runtime::admin::{self, query_param};
use mesh_runtime::readiness::Ready;
use serde_json::json;
use tokio::sync::watch;

use crate::ads::Discovery;
use crate::model::Snapshot;

pub mod access;
mod config_dump;
pub use access::DebugAccess;
pub use config_dump::config_dump;

/// What the endpoint reads.
pub struct State {
    /// The xDS server.
    pub discovery: Arc<Discovery>,
    /// The published snapshots.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The pilot's readiness: what `/ready` answers.
    pub ready: Ready,
    /// Who may read the rest (`/debug/*`).
    pub access: DebugAccess,
}

/// The answer to `request` (the handler of the monitoring server). `/metrics`, `/ready` and
/// `/version` are open; anything else needs what [`State::access`] asks, or is answered 401 with what
/// to do (never the data, whatever the path).
pub async fn respond(request: &http::request::Parts, state: &State) -> Response<admin::Body> {
    let uri = &request.uri;
    if !matches!(uri.path(), "/metrics" | "/ready" | "/version")
        && let Err(refused) = state.access.check(&request.headers)
    {
        let mut response = admin::text(StatusCode::UNAUTHORIZED, format!("{refused}\n"));
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"mesh-pilot debug\""),
        );
        return response;
    }
    let (status, body) = match uri.path() {
        "/version" => return admin::version("mesh-pilot", env!("CARGO_PKG_VERSION")),
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
        "/ready" => state.ready.response(),
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
                        json!({"proxy": p.id, "version": p.node.version, "types": types})
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
            "not found: try /metrics, /ready, /version, /debug/syncz, /debug/config_dump?proxyID= or /debug/registry\n"
                .to_owned(),
        ),
    };
    admin::text(status, body)
}
