//! The proxy's own HTTP endpoints: admin on 127.0.0.1:15000 (`/config_dump`, `/clusters`,
//! `/logging`, `/ready`, `/stats/prometheus`, `/drain`, `/quitquitquit`), readiness on 15021
//! (`/healthz/ready`, [`readiness`], served from the start) and metrics on 15090
//! (`/stats/prometheus`). Small and separate from the data path: nothing here is on a
//! request's way.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_runtime::admin::{Body, text, typed};
use mesh_runtime::drain;
use mesh_runtime::log::LogHandle;
use mesh_runtime::readiness::Ready;
use mesh_runtime::shutdown::Shutdown;
use prometheus_client::registry::Registry;
use prost::Message as _;

use crate::proxy::Shared;
use crate::runtime::Upstream;
use crate::xds::client::ClientState;
use crate::xds::store::Store;

/// What the admin endpoints read and act on.
pub struct Admin {
    /// The data path's shared state.
    pub shared: Arc<Shared>,
    /// The configuration store.
    pub store: Arc<Store>,
    /// The xDS client's state.
    pub xds: Arc<ClientState>,
    /// Every metric the proxy exports, encoded on each scrape.
    pub registry: Registry,
    /// Ready once the proxy has a certificate, a complete configuration and its listeners.
    pub ready: Ready,
    /// The data path's drain: `/drain` starts it, readiness reports it.
    pub drain: drain::Trigger,
    /// Changes the log filter for `/logging` (absent when logging was set up elsewhere).
    pub log: Option<LogHandle>,
    /// Asked to stop the proxy by `/quitquitquit`.
    pub shutdown: Shutdown,
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// Everything (loopback only).
    Admin,
    /// `/stats/prometheus` (the scraper).
    Metrics,
}

/// The answer of `/healthz/ready`: 200 `LIVE` once the proxy should get traffic, 503
/// `DRAINING` while it drains, else 503 naming what start-up still waits for. It needs no
/// certificate or configuration, so the kubelet gets an answer from the first moment.
pub fn readiness(ready: &Ready, drain: &drain::Trigger, xds: &ClientState) -> Response<Body> {
    if drain.is_draining() {
        text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n")
    } else if ready.is_ready() {
        text(StatusCode::OK, "LIVE\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: waiting for {}; xDS connected: {}\n",
                ready.pending().join(", "),
                xds.connected.load(Ordering::Relaxed)
            ),
        )
    }
}

impl Admin {
    fn metrics(&self) -> Response<Body> {
        self.shared
            .metrics
            .xds_connected
            .set(i64::from(self.xds.connected.load(Ordering::Relaxed)));
        self.shared
            .metrics
            .config_rejected
            .set(i64::try_from(self.xds.rejected.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            Ok(()) => typed(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                out,
            ),
            Err(e) => {
                text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}\n"))
            }
        }
    }

    /// The configuration in force, as JSON: every resource as Envoy would print it (secrets
    /// with their private keys `[redacted]`, as Envoy's dump has them), and the version of
    /// each type.
    fn config_dump(&self) -> Response<Body> {
        use mesh_api::xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE};
        let config = self.store.current();
        let json = |type_url: &str, bytes: Vec<u8>| {
            mesh_api::envoy::to_json(type_url, &bytes)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
        };
        let dump = serde_json::json!({
            "versions": config.versions,
            "listeners": config.listeners.values().map(|l| json(LISTENER_TYPE, l.encode_to_vec())).collect::<Vec<_>>(),
            "routes": config.routes.values().map(|r| json(ROUTE_TYPE, r.encode_to_vec())).collect::<Vec<_>>(),
            "clusters": config.clusters.values().map(|c| json(CLUSTER_TYPE, c.encode_to_vec())).collect::<Vec<_>>(),
            "endpoints": config.endpoints.values().map(|e| json(ENDPOINT_TYPE, e.encode_to_vec())).collect::<Vec<_>>(),
            "secrets": config.secrets.values().map(|s| json(SECRET_TYPE, crate::tls::redact(s).encode_to_vec())).collect::<Vec<_>>(),
            "last_rejection": self.xds.last_rejection.load_full().map(|r| r.to_string()),
        });
        typed(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&dump).unwrap_or_default(),
        )
    }

    /// Endpoints per cluster, in Envoy's `/clusters` text format.
    fn clusters(&self) -> Response<Body> {
        use std::fmt::Write as _;
        let runtime = self.shared.runtime.load_full();
        let mut names: Vec<&String> = runtime.upstreams.keys().collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            match runtime.upstreams[name].as_ref() {
                Upstream::Balanced(balancer) => {
                    for host in balancer.hosts() {
                        let prefix = format!("{name}::{}", host.address);
                        let ejected = host.health.is_ejected(crate::outlier::now_ms());
                        let _ = writeln!(
                            out,
                            "{prefix}::health_flags::{}",
                            if ejected { "/failed_outlier_check" } else { "healthy" }
                        );
                        let _ = writeln!(
                            out,
                            "{prefix}::outlier::{} ejections={}",
                            if ejected { "ejected" } else { "not_ejected" },
                            host.health.ejections()
                        );
                        let _ = writeln!(out, "{prefix}::weight::{}", host.weight);
                        let _ = writeln!(
                            out,
                            "{prefix}::rq_active::{}",
                            host.active.load(Ordering::Relaxed)
                        );
                        if let Some(identity) = &host.mesh {
                            let _ = writeln!(out, "{prefix}::mtls::{identity:?}");
                        }
                    }
                }
                Upstream::OriginalDestination => {
                    let _ = writeln!(out, "{name}::original_destination");
                }
                Upstream::Dns(targets) => {
                    for (host, port) in targets {
                        let _ = writeln!(out, "{name}::{host}:{port}::dns");
                    }
                }
            }
        }
        text(StatusCode::OK, out)
    }

    /// The answer of `surface` to `request`.
    pub fn handle(&self, surface: Surface, request: &Request<Incoming>) -> Response<Body> {
        let path = request.uri().path();
        let query = request.uri().query().unwrap_or_default();
        let post = request.method() == Method::POST;
        match (surface, path) {
            (Surface::Admin, "/healthz/ready" | "/ready") => {
                readiness(&self.ready, &self.drain, &self.xds)
            }
            (Surface::Metrics | Surface::Admin, "/stats/prometheus") => self.metrics(),
            (Surface::Admin, "/config_dump") => self.config_dump(),
            (Surface::Admin, "/clusters") => self.clusters(),
            (Surface::Admin, "/logging") => {
                match query.split('&').find_map(|kv| kv.strip_prefix("level=")) {
                    Some(level) if post => {
                        match self.log.as_ref().map(|log| log.set_level(level)) {
                            Some(Ok(())) => text(StatusCode::OK, format!("log level: {level}\n")),
                            Some(Err(e)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                            None => text(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "the log filter cannot be changed in this process\n",
                            ),
                        }
                    }
                    Some(_) => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
                    None => text(StatusCode::BAD_REQUEST, "usage: POST /logging?level=<filter>\n"),
                }
            }
            (Surface::Admin, "/drain" | "/drain_listeners") if post => {
                self.drain.start();
                text(StatusCode::OK, "draining\n")
            }
            (Surface::Admin, "/quitquitquit") if post => {
                self.drain.start();
                self.shutdown.request();
                text(StatusCode::OK, "OK\n")
            }
            (Surface::Admin, "/drain" | "/drain_listeners" | "/quitquitquit") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}
