//! The proxy's Prometheus metrics: Istio's request and TCP metrics with Istio's labels, the
//! proxy's own health metrics, and the bound on every family fed by traffic
//! ([`super::cardinality`]).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::cardinality::{Bounded, MAX_SERIES};
use super::{Labels, Report, Reporter};

/// The request metrics of one label set (handles share the families' values).
struct RequestHandles {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// Per thread: request-metric handles by (metrics instance, label values); the key is a
/// fast hash, each entry checked against the values.
type HandleCache = std::collections::HashMap<u64, Vec<(u64, Labels, RequestHandles)>>;

thread_local! {
    static REQUEST_HANDLES: std::cell::RefCell<HandleCache> = Default::default();
}

/// How many label sets this thread's handle cache holds, and under how many keys.
#[cfg(test)]
pub(super) fn cached_handles() -> (usize, usize) {
    REQUEST_HANDLES.with_borrow(|cache| (cache.values().map(Vec::len).sum(), cache.len()))
}

/// The proxy's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Tells this instance's cached handles from another's (tests run several proxies).
    id: u64,
    pub(super) requests: Bounded<Labels, Counter>,
    duration: Bounded<Labels, Histogram>,
    request_bytes: Bounded<Labels, Histogram>,
    response_bytes: Bounded<Labels, Histogram>,
    tcp_sent: Bounded<Labels, Counter>,
    tcp_received: Bounded<Labels, Counter>,
    tcp_opened: Bounded<Labels, Counter>,
    tcp_closed: Bounded<Labels, Counter>,
    /// Downstream connections open now.
    pub active_connections: Gauge,
    /// Whether the xDS stream is up (1) or not (0).
    pub xds_connected: Gauge,
    /// Updates applied from the pilot.
    pub config_updates: Gauge,
    /// Updates refused (NACKed).
    pub config_rejected: Gauge,
    /// Access-log lines dropped because the writer fell behind.
    pub log_dropped: Counter,
    /// Records shown to the admin port's taps (none while no tap is open).
    pub tap_records: Counter,
    /// Taps open on the admin port.
    pub taps_open: Gauge,
    /// Requests and retries refused by a circuit breaker.
    pub overflow: Counter,
    /// Downstream TLS handshakes a listener terminated, by listener and Envoy's `ssl.*` stat.
    listener_ssl: Family<Vec<(String, String)>, Counter>,
}

/// The bucket bounds of Istio's histograms: Envoy's default buckets
/// (`HistogramSettingsImpl::defaultBuckets`), which Istio's bootstrap leaves in place for
/// `istio_request_duration_milliseconds`, `istio_request_bytes` and `istio_response_bytes`
/// alike (unless `sidecar.istio.io/statsHistogramBuckets` says otherwise). Dashboards'
/// p50/p90/p99 queries assume them.
pub const ISTIO_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn istio_histogram() -> Histogram {
    Histogram::new(ISTIO_BUCKETS)
}

impl Metrics {
    /// Metrics registered in `registry`, each family of Istio's metrics holding at most
    /// [`MAX_SERIES`] series.
    pub fn register(registry: &mut Registry) -> Self {
        Self::register_bounded(registry, MAX_SERIES)
    }

    /// Metrics registered in `registry`, each family of Istio's metrics holding at most
    /// `max_series` series.
    pub(super) fn register_bounded(registry: &mut Registry, max_series: usize) -> Self {
        static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let series_overflow = Family::<[(&'static str, &'static str); 1], Counter>::default();
        // The family label is the name a scrape shows (counters end in `_total`).
        let bounded = |family, name| {
            Bounded::new(
                family,
                max_series,
                series_overflow.get_or_create_owned(&[("family", name)]),
            )
        };
        let histogram = |make: fn() -> Histogram| Family::new_with_constructor(make);
        let metrics = Self {
            id: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requests: bounded(Family::default(), "istio_requests_total"),
            duration: Bounded::new(
                histogram(istio_histogram),
                max_series,
                series_overflow
                    .get_or_create_owned(&[("family", "istio_request_duration_milliseconds")]),
            ),
            request_bytes: Bounded::new(
                histogram(istio_histogram),
                max_series,
                series_overflow.get_or_create_owned(&[("family", "istio_request_bytes")]),
            ),
            response_bytes: Bounded::new(
                histogram(istio_histogram),
                max_series,
                series_overflow.get_or_create_owned(&[("family", "istio_response_bytes")]),
            ),
            tcp_sent: bounded(Family::default(), "istio_tcp_sent_bytes_total"),
            tcp_received: bounded(Family::default(), "istio_tcp_received_bytes_total"),
            tcp_opened: bounded(Family::default(), "istio_tcp_connections_opened_total"),
            tcp_closed: bounded(Family::default(), "istio_tcp_connections_closed_total"),
            active_connections: Gauge::default(),
            xds_connected: Gauge::default(),
            config_updates: Gauge::default(),
            config_rejected: Gauge::default(),
            log_dropped: Counter::default(),
            tap_records: Counter::default(),
            taps_open: Gauge::default(),
            overflow: Counter::default(),
            listener_ssl: Family::default(),
        };
        let m = &metrics;
        registry.register("istio_requests", "Requests", m.requests.family().clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            m.duration.family().clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            m.request_bytes.family().clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            m.response_bytes.family().clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream",
            m.tcp_sent.family().clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream",
            m.tcp_received.family().clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            m.tcp_opened.family().clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            m.tcp_closed.family().clone(),
        );
        registry.register(
            "mesh_proxy_downstream_connections_active",
            "Connections from downstream open now",
            m.active_connections.clone(),
        );
        registry.register(
            "mesh_proxy_xds_connected",
            "Whether the xDS stream to the pilot is up",
            m.xds_connected.clone(),
        );
        registry.register(
            "mesh_proxy_config_updates",
            "Configuration updates applied since start",
            m.config_updates.clone(),
        );
        registry.register(
            "mesh_proxy_config_rejected",
            "Configuration updates refused (NACKed) since start",
            m.config_rejected.clone(),
        );
        registry.register(
            "mesh_proxy_access_log_dropped",
            "Access-log lines dropped because the writer fell behind",
            m.log_dropped.clone(),
        );
        registry.register(
            "mesh_proxy_tap_records",
            "Requests and connections shown to the admin port's taps (/tap)",
            m.tap_records.clone(),
        );
        registry.register(
            "mesh_proxy_taps_open",
            "Taps open on the admin port (/tap)",
            m.taps_open.clone(),
        );
        registry.register(
            "mesh_proxy_circuit_breaker_overflow",
            "Requests and retries refused because a cluster's circuit breaker was full",
            m.overflow.clone(),
        );
        registry.register(
            "mesh_proxy_listener_ssl",
            "TLS handshakes of the listeners' own certificates, by listener and Envoy's \
             listener.<address>.ssl.* stat (handshake, connection_error, fail_verify_no_cert, \
             fail_verify_error, fail_verify_san, fail_verify_cert_hash)",
            m.listener_ssl.clone(),
        );
        registry.register(
            "mesh_proxy_metric_series_overflow",
            "Observations not recorded because their metric family held its most series already \
             (label sets made from request data), by family",
            series_overflow,
        );
        metrics
    }

    /// Counts one of Envoy's `listener.<listener>.ssl.<stat>` events (a handshake, a failed
    /// one and why). Not on the request path: once per TLS connection.
    pub fn listener_ssl(&self, listener: &str, stat: &str) {
        let labels = vec![
            ("listener".to_owned(), listener.to_owned()),
            ("stat".to_owned(), stat.to_owned()),
        ];
        self.listener_ssl.get_or_create(&labels).inc();
    }

    /// Records a finished HTTP request.
    pub fn request(
        &self,
        reporter: Reporter,
        report: &Report,
        millis: f64,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        // The families' own lookup hashes all 25 labels (SipHash) under a lock, once per
        // metric; a per-thread cache of the four metrics' handles, keyed by a fast hash of
        // the label values, does that once per label set and thread instead.
        let flags = report.flags.text();
        let values = report.label_values(reporter, flags.as_str());
        let key = {
            use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
            let mut hasher = foldhash::fast::FixedState::default().build_hasher();
            self.id.hash(&mut hasher);
            values.hash(&mut hasher);
            hasher.finish()
        };
        let observe = |handles: &RequestHandles| {
            handles.requests.inc();
            handles.duration.observe(millis);
            handles.request_bytes.observe(request_bytes as f64);
            handles.response_bytes.observe(response_bytes as f64);
        };
        REQUEST_HANDLES.with_borrow_mut(|cache| {
            let cached = cache.get(&key).and_then(|bucket| {
                bucket.iter().find(|(id, labels, _)| *id == self.id && labels.matches(&values))
            });
            if let Some((_, _, handles)) = cached {
                return observe(handles);
            }
            let labels = Labels::of(values);
            let made = (
                self.requests.get_or_create(&labels),
                self.duration.get_or_create(&labels),
                self.request_bytes.get_or_create(&labels),
                self.response_bytes.get_or_create(&labels),
            );
            let (Some(requests), Some(duration), Some(request_bytes), Some(response_bytes)) = made
            else {
                // A family is full: the observation counted as its overflow, nothing is
                // cached, so the cache holds only series the families hold and is bounded as
                // they are.
                return;
            };
            let handles = RequestHandles { requests, duration, request_bytes, response_bytes };
            observe(&handles);
            cache.entry(key).or_default().push((self.id, labels, handles));
        });
    }

    /// Records a TCP connection being opened.
    pub fn tcp_opened(&self, reporter: Reporter, report: &Report) {
        if let Some(opened) = self.tcp_opened.get_or_create(&report.labels(reporter)) {
            opened.inc();
        }
    }

    /// Records a TCP connection's bytes and its close.
    pub fn tcp_closed(&self, reporter: Reporter, report: &Report, sent: u64, received: u64) {
        let labels = report.labels(reporter);
        if let Some(counter) = self.tcp_sent.get_or_create(&labels) {
            counter.inc_by(sent);
        }
        if let Some(counter) = self.tcp_received.get_or_create(&labels) {
            counter.inc_by(received);
        }
        if let Some(counter) = self.tcp_closed.get_or_create(&labels) {
            counter.inc();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The scrape's `<family>_bucket` lines, as (bound, count).
    fn buckets(scrape: &str, family: &str) -> Vec<(f64, u64)> {
        let prefix = format!("{family}_bucket{{");
        scrape
            .lines()
            .filter(|line| line.starts_with(&prefix))
            .map(|line| {
                let le = line.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                let count = line.rsplit(' ').next().unwrap();
                (le.parse().unwrap(), count.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn request_histograms_have_istios_buckets() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.request(Reporter::Destination, &Report::default(), 3.0, 700, 20_000);
        let mut scrape = String::new();
        prometheus_client::encoding::text::encode(&mut scrape, &registry).unwrap();
        for (family, observed) in [
            ("istio_request_duration_milliseconds", 3.0),
            ("istio_request_bytes", 700.0),
            ("istio_response_bytes", 20_000.0),
        ] {
            let buckets = buckets(&scrape, family);
            let bounds: Vec<f64> =
                buckets.iter().map(|(le, _)| *le).filter(|le| le.is_finite()).collect();
            assert_eq!(bounds, ISTIO_BUCKETS, "{family}:\n{scrape}");
            for (le, count) in buckets {
                assert_eq!(count, u64::from(le >= observed), "{family} le={le}:\n{scrape}");
            }
        }
    }
}
