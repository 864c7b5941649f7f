//! The proxy's own HTTP endpoints: admin on 127.0.0.1:15000, readiness on 15021
//! (`/healthz/ready`, [`readiness`], served from the start) and metrics on 15090
//! (`/stats/prometheus`). Small and separate from the data path: nothing here is on a
//! request's way, and what `meshctl` and istioctl read answers in Envoy's formats, so they
//! read a mesh-proxy as they read an Envoy.
//!
//! Admin: `/config_dump` ([`config_dump`], `?include_eds`), `/clusters` ([`clusters`], text or
//! `?format=json`), `/server_info` ([`server_info`]), `/certs` ([`certs`]), `/tap`
//! ([`tap`]: finished requests streamed as JSON lines), `/logging`, `/ready`,
//! `/stats/prometheus`, and POST `/drain` and `/quitquitquit`.

pub mod certs;
pub mod clusters;
pub mod config_dump;
pub mod envoy_json;
pub mod server_info;
pub mod tap;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_identity::CertStore;
use mesh_runtime::admin::{Body, text, typed};
use mesh_runtime::drain;
use mesh_runtime::log::LogHandle;
use mesh_runtime::readiness::Ready;
use mesh_runtime::shutdown::Shutdown;
use prometheus_client::registry::Registry;

use crate::proxy::Shared;
use crate::xds::client::ClientState;
use crate::xds::store::Store;

/// The body of an admin answer: in memory, or a stream (`/tap`).
pub type AdminBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

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
    /// What the proxy is: for `/server_info`, `/certs` and the dump's bootstrap and secrets.
    pub about: About,
}

/// What the proxy is and holds, beyond its configuration.
pub struct About {
    /// The node it sends to the pilot.
    pub node: Node,
    /// When it started.
    pub started: (Instant, SystemTime),
    /// How it was started.
    pub options: server_info::Options,
    /// Its workload certificate from mesh-ca (rotated in place).
    pub certificate: Arc<CertStore>,
    /// The mesh's roots it trusts (PEM).
    pub root_pem: String,
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

/// A JSON answer, pretty-printed as Envoy's admin prints it.
fn json(value: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
    body.push('\n');
    typed(StatusCode::OK, "application/json", body)
}

/// Whether the query has parameter `name` (with a value or not, as `?include_eds`).
fn has_param(query: &str, name: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair == name || pair.split_once('=').is_some_and(|(k, _)| k == name))
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

    /// The configuration in force as Envoy's config dump ([`config_dump`]).
    fn config_dump(&self, query: &str) -> Response<Body> {
        let chain = self.about.certificate.current().cert.clone();
        let dump = config_dump::Dump {
            current: &self.store.current(),
            received: &self.store.received(),
            rejections: &self.store.rejections(),
            node: &self.about.node,
            started: self.about.started.1,
            workload: certs::workload_secrets(&chain, &self.about.root_pem),
            include_eds: has_param(query, "include_eds"),
        };
        json(&dump.to_json())
    }

    fn server_info(&self) -> Response<Body> {
        let state = server_info::State::of(self.drain.is_draining(), &self.ready.pending());
        let uptime = self.about.started.0.elapsed();
        json(&server_info::server_info(&self.about.node, state, uptime, &self.about.options))
    }

    fn certs(&self) -> Response<Body> {
        let chain = self.about.certificate.current().cert.clone();
        let secrets = &self.store.current().secrets;
        json(&certs::certificates(&chain, &self.about.root_pem, secrets, SystemTime::now()))
    }

    fn clusters(&self, query: &str) -> Response<Body> {
        let runtime = self.shared.runtime.load_full();
        let now = crate::outlier::now_ms();
        if query.split('&').any(|pair| pair == "format=json") {
            json(&clusters::json(&runtime, now))
        } else {
            text(StatusCode::OK, clusters::text(&runtime, now))
        }
    }

    fn logging(&self, query: &str, post: bool) -> Response<Body> {
        match query.split('&').find_map(|kv| kv.strip_prefix("level=")) {
            Some(level) if post => match self.log.as_ref().map(|log| log.set_level(level)) {
                Some(Ok(())) => text(StatusCode::OK, format!("log level: {level}\n")),
                Some(Err(e)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the log filter cannot be changed in this process\n",
                ),
            },
            Some(_) => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
            None => text(StatusCode::BAD_REQUEST, "usage: POST /logging?level=<filter>\n"),
        }
    }

    /// The answer of `surface` to `request`.
    pub fn handle(&self, surface: Surface, request: &Request<Incoming>) -> Response<AdminBody> {
        let path = request.uri().path();
        let query = request.uri().query().unwrap_or_default();
        let post = request.method() == Method::POST;
        let answer = match (surface, path) {
            (Surface::Admin, "/tap") => {
                return tap::respond(request.uri(), self.shared.log.tap(), &self.drain);
            }
            (Surface::Admin, "/healthz/ready" | "/ready") => {
                readiness(&self.ready, &self.drain, &self.xds)
            }
            (Surface::Metrics | Surface::Admin, "/stats/prometheus") => self.metrics(),
            (Surface::Admin, "/config_dump") => self.config_dump(query),
            (Surface::Admin, "/clusters") => self.clusters(query),
            (Surface::Admin, "/server_info") => self.server_info(),
            (Surface::Admin, "/certs") => self.certs(),
            (Surface::Admin, "/logging") => self.logging(query, post),
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
        };
        answer.map(BodyExt::boxed_unsync)
    }
}
