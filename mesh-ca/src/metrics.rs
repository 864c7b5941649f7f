//! Prometheus metrics and the monitoring endpoint (`/metrics`, `/ready`, `/healthz`, port
//! 15014 by default).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// Why a request was refused, as a metric label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are snake_case on the wire
pub enum Reason {
    /// No or invalid token.
    unauthenticated,
    /// Token checked but refused for this request.
    permission_denied,
    /// Malformed or unsupported CSR, bad TTL.
    invalid_argument,
    /// The token could not be checked.
    unavailable,
    /// Signing failed.
    internal,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Why.
    pub reason: Reason,
}

/// The CA's metrics.
pub struct Metrics {
    registry: Registry,
    /// Certificates signed.
    pub signed: Counter,
    /// Requests refused, by reason.
    pub errors: Family<ErrorLabels, Counter>,
    /// Expiry of the root certificate, seconds since the epoch.
    pub root_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mesh_ca");
        let signed = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let root_expiry = Gauge::default();
        registry.register("certificates_signed", "Workload certificates signed", signed.clone());
        registry.register("errors", "Certificate requests refused, by reason", errors.clone());
        registry.register(
            "root_cert_expiry_timestamp_seconds",
            "When the root certificate expires, in seconds since the Unix epoch",
            root_expiry.clone(),
        );
        Self { registry, signed, errors, root_expiry }
    }
}

impl Metrics {
    /// Counts a refused request.
    pub fn refused(&self, reason: Reason) {
        self.errors.get_or_create(&ErrorLabels { reason }).inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            warn!("cannot encode metrics: {err}");
        }
        out
    }
}

/// Serves `/metrics`, `/ready` (200 once `ready` is set) and `/healthz` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!("monitoring accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let response = respond(req.uri().path(), &metrics, &ready);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!("monitoring connection ended: {err}");
            }
        });
    }
}

fn respond(path: &str, metrics: &Metrics, ready: &AtomicBool) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/metrics" => (StatusCode::OK, metrics.encode()),
        "/ready" if ready.load(Ordering::Acquire) => (StatusCode::OK, "ready\n".to_owned()),
        "/ready" => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no signing key yet\n".to_owned()),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "not found: try /metrics, /ready or /healthz\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
