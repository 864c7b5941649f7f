//! The proxy's own HTTP endpoints: admin on 127.0.0.1:15000 (`/config_dump`, `/clusters`,
//! `/logging`, `/ready`, `/stats/prometheus`, `/drain`, `/quitquitquit`), readiness on 15021
//! (`/healthz/ready`) and metrics on 15090 (`/stats/prometheus`). Small and separate from the
//! data path: nothing here is on a request's way.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use prost::Message as _;
use tokio::net::TcpListener;

use crate::proxy::Shared;
use crate::proxy::listen::Drain;
use crate::runtime::Upstream;
use crate::xds::client::ClientState;
use crate::xds::store::Store;

/// Changes the log filter at run time (`/logging?level=debug`); the error says what is wrong.
pub type SetLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the admin endpoints read and act on.
pub struct Admin {
    /// The data path's shared state.
    pub shared: Arc<Shared>,
    /// The configuration store.
    pub store: Arc<Store>,
    /// The xDS client's state.
    pub xds: Arc<ClientState>,
    /// Metrics.
    pub registry: Registry,
    /// Set once the proxy has a certificate, a complete configuration and its listeners.
    pub ready: AtomicBool,
    /// Draining.
    pub drain: Drain,
    /// Log level control.
    pub set_level: SetLevel,
    /// Told when `/quitquitquit` asks the proxy to exit.
    pub quit: tokio::sync::Notify,
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// Everything (loopback only).
    Admin,
    /// `/healthz/ready` (the kubelet's probe).
    Health,
    /// `/stats/prometheus` (the scraper).
    Metrics,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

impl Admin {
    /// Whether the proxy should get traffic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.drain.is_draining()
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
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
            Ok(()) => {
                let mut response = text(StatusCode::OK, out);
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            Err(e) => {
                text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}\n"))
            }
        }
    }

    /// The configuration in force, as JSON: every resource as Envoy would print it, and the
    /// version of each type.
    fn config_dump(&self) -> Response<Full<Bytes>> {
        use mesh_api::xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};
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
            "last_rejection": self.xds.last_rejection.load_full().map(|r| r.to_string()),
        });
        let mut response =
            text(StatusCode::OK, serde_json::to_string_pretty(&dump).unwrap_or_default());
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        response
    }

    /// Endpoints per cluster, in Envoy's `/clusters` text format.
    fn clusters(&self) -> Response<Full<Bytes>> {
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

    async fn handle(
        self: Arc<Self>,
        surface: Surface,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = request.uri().path();
        let query = request.uri().query().unwrap_or_default();
        let post = request.method() == Method::POST;
        let response = match (surface, path) {
            (Surface::Health | Surface::Admin, "/healthz/ready") | (Surface::Admin, "/ready") => {
                if self.is_ready() {
                    text(StatusCode::OK, "LIVE\n")
                } else if self.drain.is_draining() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n")
                } else {
                    let config = self.store.current();
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "not ready: configuration complete: {}, xDS connected: {}\n",
                            config.complete(),
                            self.xds.connected.load(Ordering::Relaxed)
                        ),
                    )
                }
            }
            (Surface::Metrics | Surface::Admin, "/stats/prometheus") => self.metrics(),
            (Surface::Admin, "/config_dump") => self.config_dump(),
            (Surface::Admin, "/clusters") => self.clusters(),
            (Surface::Admin, "/logging") => {
                match query.split('&').find_map(|kv| kv.strip_prefix("level=")) {
                    Some(level) if post => match (self.set_level)(level) {
                        Ok(()) => text(StatusCode::OK, format!("log level: {level}\n")),
                        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                    },
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
                self.quit.notify_one();
                text(StatusCode::OK, "OK\n")
            }
            (Surface::Admin, "/drain" | "/drain_listeners" | "/quitquitquit") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        };
        Ok(response)
    }
}

/// Serves `surface` of `admin` on `listener` until the process exits.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, surface: Surface) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| admin.clone().handle(surface, request));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
