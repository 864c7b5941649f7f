//! The pilot's Prometheus metrics, with Istio's names so existing dashboards read them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The xDS type of a metric, as Istio labels it (`cds`, `eds`, `lds`, `rds`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// The short type name.
    pub r#type: &'static str,
}

impl TypeLabel {
    /// The label of a type URL.
    pub fn of(type_url: &str) -> Self {
        let short = match type_url {
            mesh_api::xds::CLUSTER_TYPE => "cds",
            mesh_api::xds::ENDPOINT_TYPE => "eds",
            mesh_api::xds::LISTENER_TYPE => "lds",
            mesh_api::xds::ROUTE_TYPE => "rds",
            _ => "other",
        };
        Self { r#type: short }
    }
}

/// The pilot's metrics.
pub struct Metrics {
    registry: Registry,
    /// Responses sent, by type.
    pub pushes: Family<TypeLabel, Counter>,
    /// Responses rejected by proxies (NACKs), by type.
    pub rejects: Family<TypeLabel, Counter>,
    /// Connected xDS streams.
    pub connected: Gauge,
    /// Seconds from a configuration change to a proxy being sent it.
    pub convergence: Histogram,
    /// Objects left out of the model because they are invalid.
    pub config_rejected: Gauge,
    /// xDS streams refused because the node is not the workload its certificate names.
    pub identity_refused: Counter,
    /// On-demand resource names (`host:port` API listeners) a stream asked for past its limit,
    /// answered as not found.
    pub on_demand_ignored: Counter,
    /// The pilot's own certificate (mTLS xDS), `workload_cert_*`.
    pub certificate: mesh_identity::client::ClientMetrics,
    /// The pilot's spans that never reached the collector (`pilot_spans_dropped_total`).
    pub spans_dropped: mesh_trace::export::DroppedSpans,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let pushes = Family::<TypeLabel, Counter>::default();
        let rejects = Family::<TypeLabel, Counter>::default();
        let connected = Gauge::default();
        let convergence =
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0]);
        let config_rejected = Gauge::default();
        let identity_refused = Counter::default();
        let on_demand_ignored = Counter::default();
        let certificate = mesh_identity::client::ClientMetrics::register(&mut registry);
        let spans_dropped = mesh_trace::export::DroppedSpans::new("pilot_spans_dropped");
        registry.register_collector(Box::new(spans_dropped.clone()));
        registry.register(
            "pilot_xds_identity_refused",
            "xDS streams refused because the node is not the workload its certificate names",
            identity_refused.clone(),
        );
        registry.register(
            "pilot_xds_on_demand_ignored",
            "On-demand resource names (host:port listeners) past a stream's limit, answered as not found",
            on_demand_ignored.clone(),
        );
        registry.register("pilot_xds_pushes", "xDS responses sent, by type", pushes.clone());
        registry.register(
            "pilot_xds_rejects",
            "xDS responses rejected by proxies, by type",
            rejects.clone(),
        );
        registry.register("pilot_xds", "Connected xDS streams", connected.clone());
        registry.register(
            "pilot_proxy_convergence_time",
            "Seconds from a configuration change to a proxy being sent it",
            convergence.clone(),
        );
        registry.register(
            "pilot_config_rejected",
            "Objects left out of the model because they are invalid",
            config_rejected.clone(),
        );
        Self {
            registry,
            pushes,
            rejects,
            connected,
            convergence,
            config_rejected,
            identity_refused,
            on_demand_ignored,
            certificate,
            spans_dropped,
        }
    }
}

impl Metrics {
    /// Counts a response sent and how long after its change it went out.
    pub fn observe_push(&self, type_url: &str, published: Option<std::time::Instant>) {
        self.pushes.get_or_create(&TypeLabel::of(type_url)).inc();
        if let Some(published) = published {
            self.convergence.observe(published.elapsed().as_secs_f64());
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("cannot encode metrics: {err}");
        }
        out
    }
}
