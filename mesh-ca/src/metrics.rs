//! Prometheus metrics and the monitoring endpoint (`/metrics`, `/ready`, `/healthz`, port
//! 15014 by default).

use http::{Response, StatusCode};
use mesh_runtime::admin;
use mesh_runtime::readiness::Ready;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::warn;

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
    /// Why the request was refused (the `reason` label).
    pub reason: Reason,
}

/// The CA's Prometheus metrics (names prefixed `mesh_ca_`), served on `/metrics`.
pub struct Metrics {
    registry: Registry,
    /// Workload certificates signed (`certificates_signed`).
    pub signed: Counter,
    /// Certificate requests refused, by reason (`errors`).
    pub errors: Family<ErrorLabels, Counter>,
    /// Expiry of the root certificate, seconds since the epoch.
    pub root_expiry: Gauge,
    /// The CA's spans that never reached the collector (`spans_dropped_total`).
    pub spans_dropped: mesh_trace::export::DroppedSpans,
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
        let spans_dropped = mesh_trace::export::DroppedSpans::new("spans_dropped");
        registry.register_collector(Box::new(spans_dropped.clone()));
        Self { registry, signed, errors, root_expiry, spans_dropped }
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

/// The monitoring endpoint's answer to `path`: `/metrics`, `/ready` (200 once `ready`),
/// `/healthz`, `/version`.
pub fn respond(path: &str, metrics: &Metrics, ready: &Ready) -> Response<admin::Body> {
    let (status, body) = match path {
        "/version" => return admin::version("mesh-ca", env!("CARGO_PKG_VERSION")),
        "/metrics" => (StatusCode::OK, metrics.encode()),
        "/ready" => ready.response(),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /ready, /healthz or /version\n".to_owned(),
        ),
    };
    admin::text(status, body)
}
