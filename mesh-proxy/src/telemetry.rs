//! What the proxy reports about traffic: Istio's standard metrics with Istio's labels
//! (`istio_requests_total` and friends, served on 15090), the proxy's own health metrics, and
//! one access-log line per request or connection. Who the peers are comes from their
//! certificates and from the peer-metadata header sidecars exchange over mTLS
//! ([`PEER_HEADER`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Header a sidecar adds to requests it sends to, and responses it returns to, another
/// sidecar over mesh mTLS: its workload's name, namespace, app, version and canonical
/// service. Taken off (and believed) only on mTLS connections; removed from all others.
pub const PEER_HEADER: &str = "x-mesh-peer";
/// Header carrying the app's own HTTP version across the HTTP/2 hop between sidecars, so the
/// far side speaks to its app as the client spoke.
pub const PROTOCOL_HEADER: &str = "x-mesh-protocol";

/// A workload as telemetry names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// Workload name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// SPIFFE id (`spiffe://...`).
    pub principal: String,
    /// `app` label.
    pub app: String,
    /// `version` label.
    pub version: String,
    /// Canonical service.
    pub canonical_service: String,
    /// Canonical revision.
    pub canonical_revision: String,
    /// Cluster id.
    pub cluster: String,
}

impl Workload {
    /// This proxy's workload, from its pod labels (the keys Istio reads, in Istio's order).
    pub fn from_labels(
        name: &str,
        namespace: &str,
        principal: &str,
        cluster: &str,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k)).cloned();
        let app = first(&["app", "app.kubernetes.io/name"]).unwrap_or_default();
        let version = first(&["version", "app.kubernetes.io/version"]).unwrap_or_default();
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            principal: principal.to_owned(),
            canonical_service: first(&["service.istio.io/canonical-name"])
                .or_else(|| (!app.is_empty()).then(|| app.clone()))
                .unwrap_or_else(|| name.to_owned()),
            canonical_revision: first(&["service.istio.io/canonical-revision"])
                .or_else(|| (!version.is_empty()).then(|| version.clone()))
                .unwrap_or_else(|| "latest".to_owned()),
            app,
            version,
            cluster: cluster.to_owned(),
        }
    }

    /// The value of [`PEER_HEADER`] (the principal is not sent: the certificate says it).
    pub fn header(&self) -> String {
        format!(
            "name={};namespace={};app={};version={};service={};revision={};cluster={}",
            self.name,
            self.namespace,
            self.app,
            self.version,
            self.canonical_service,
            self.canonical_revision,
            self.cluster
        )
    }

    /// Reads [`PEER_HEADER`]; the principal comes from the peer's certificate.
    pub fn from_header(value: &str, principal: &str) -> Self {
        let mut out = Workload { principal: principal.to_owned(), ..Workload::default() };
        for pair in value.split(';') {
            let Some((k, v)) = pair.split_once('=') else { continue };
            let slot = match k {
                "name" => &mut out.name,
                "namespace" => &mut out.namespace,
                "app" => &mut out.app,
                "version" => &mut out.version,
                "service" => &mut out.canonical_service,
                "revision" => &mut out.canonical_revision,
                "cluster" => &mut out.cluster,
                _ => continue,
            };
            *slot = v.to_owned();
        }
        out
    }
}

/// Istio's labels on request and TCP metrics.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    reporter: &'static str,
    source_workload: String,
    source_workload_namespace: String,
    source_principal: String,
    source_app: String,
    source_version: String,
    source_canonical_service: String,
    source_canonical_revision: String,
    source_cluster: String,
    destination_workload: String,
    destination_workload_namespace: String,
    destination_principal: String,
    destination_app: String,
    destination_version: String,
    destination_service: String,
    destination_service_name: String,
    destination_service_namespace: String,
    destination_canonical_service: String,
    destination_canonical_revision: String,
    destination_cluster: String,
    request_protocol: String,
    response_code: String,
    grpc_response_status: String,
    response_flags: String,
    connection_security_policy: &'static str,
}

/// Which side reports a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reporter {
    /// The client's sidecar (outbound).
    Source,
    /// The server's sidecar (inbound).
    Destination,
}

/// Everything known about one request or connection when it is reported.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The source workload (`unknown` fields when not known); shared, as it is most often
    /// this proxy's own.
    pub source: std::sync::Arc<Workload>,
    /// The destination workload.
    pub destination: std::sync::Arc<Workload>,
    /// The destination service's host (`reviews.default.svc.cluster.local`).
    pub service: String,
    /// `http`, `grpc` or `tcp`.
    pub protocol: String,
    /// HTTP status (0 for TCP).
    pub status: u16,
    /// gRPC status, if any.
    pub grpc_status: Option<String>,
    /// Envoy-style response flags (`-` for none).
    pub flags: String,
    /// Whether the connection was mutual TLS.
    pub mutual_tls: bool,
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() { "unknown".to_owned() } else { s.to_owned() }
}

impl Report {
    fn labels(&self, reporter: Reporter) -> Labels {
        let (name, namespace) = service_name(&self.service);
        let tcp = self.protocol == "tcp";
        Labels {
            reporter: match reporter {
                Reporter::Source => "source",
                Reporter::Destination => "destination",
            },
            source_workload: or_unknown(&self.source.name),
            source_workload_namespace: or_unknown(&self.source.namespace),
            source_principal: or_unknown(&self.source.principal),
            source_app: or_unknown(&self.source.app),
            source_version: or_unknown(&self.source.version),
            source_canonical_service: or_unknown(&self.source.canonical_service),
            source_canonical_revision: or_unknown(&self.source.canonical_revision),
            source_cluster: or_unknown(&self.source.cluster),
            destination_workload: or_unknown(&self.destination.name),
            destination_workload_namespace: or_unknown(&self.destination.namespace),
            destination_principal: or_unknown(&self.destination.principal),
            destination_app: or_unknown(&self.destination.app),
            destination_version: or_unknown(&self.destination.version),
            destination_service: or_unknown(&self.service),
            destination_service_name: or_unknown(name),
            destination_service_namespace: or_unknown(namespace),
            destination_canonical_service: or_unknown(&self.destination.canonical_service),
            destination_canonical_revision: or_unknown(&self.destination.canonical_revision),
            destination_cluster: or_unknown(&self.destination.cluster),
            request_protocol: self.protocol.clone(),
            response_code: if tcp { String::new() } else { self.status.to_string() },
            grpc_response_status: self.grpc_status.clone().unwrap_or_default(),
            response_flags: if self.flags.is_empty() { "-".to_owned() } else { self.flags.clone() },
            connection_security_policy: match (reporter, self.mutual_tls) {
                (Reporter::Source, _) => "unknown",
                (Reporter::Destination, true) => "mutual_tls",
                (Reporter::Destination, false) => "none",
            },
        }
    }
}

/// `reviews.default.svc.cluster.local` → (`reviews`, `default`); other hosts name only
/// themselves.
fn service_name(host: &str) -> (&str, &str) {
    match host.split_once(".svc.") {
        Some((front, _)) => front.split_once('.').unwrap_or((front, "")),
        None => (host, ""),
    }
}

/// The proxy's metrics.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    request_bytes: Family<Labels, Histogram>,
    response_bytes: Family<Labels, Histogram>,
    tcp_sent: Family<Labels, Counter>,
    tcp_received: Family<Labels, Counter>,
    tcp_opened: Family<Labels, Counter>,
    tcp_closed: Family<Labels, Counter>,
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
    /// Requests and retries refused by a circuit breaker.
    pub overflow: Counter,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ])
}

fn bytes_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1.0, 10.0, 9))
}

impl Metrics {
    /// Metrics registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            request_bytes: Family::new_with_constructor(bytes_histogram as fn() -> Histogram),
            response_bytes: Family::new_with_constructor(bytes_histogram as fn() -> Histogram),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            active_connections: Gauge::default(),
            xds_connected: Gauge::default(),
            config_updates: Gauge::default(),
            config_rejected: Gauge::default(),
            log_dropped: Counter::default(),
            overflow: Counter::default(),
        };
        let m = &metrics;
        registry.register("istio_requests", "Requests", m.requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            m.duration.clone(),
        );
        registry.register("istio_request_bytes", "Request body sizes", m.request_bytes.clone());
        registry.register("istio_response_bytes", "Response body sizes", m.response_bytes.clone());
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream",
            m.tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream",
            m.tcp_received.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            m.tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            m.tcp_closed.clone(),
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
            "mesh_proxy_circuit_breaker_overflow",
            "Requests and retries refused because a cluster's circuit breaker was full",
            m.overflow.clone(),
        );
        metrics
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
        let labels = report.labels(reporter);
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(millis);
        self.request_bytes.get_or_create(&labels).observe(request_bytes as f64);
        self.response_bytes.get_or_create(&labels).observe(response_bytes as f64);
    }

    /// Records a TCP connection being opened.
    pub fn tcp_opened(&self, reporter: Reporter, report: &Report) {
        self.tcp_opened.get_or_create(&report.labels(reporter)).inc();
    }

    /// Records a TCP connection's bytes and its close.
    pub fn tcp_closed(&self, reporter: Reporter, report: &Report, sent: u64, received: u64) {
        let labels = report.labels(reporter);
        self.tcp_sent.get_or_create(&labels).inc_by(sent);
        self.tcp_received.get_or_create(&labels).inc_by(received);
        self.tcp_closed.get_or_create(&labels).inc();
    }
}

/// Access-log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Envoy's default text format, as Istio prints it.
    Text,
    /// One JSON object per line.
    Json,
    /// No access log.
    Off,
}

/// One access-log entry.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    /// Start time (RFC 3339, UTC).
    pub start: String,
    /// Method (HTTP) or empty (TCP).
    pub method: String,
    /// Path with query.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2` or `TCP`.
    pub protocol: String,
    /// Status (0 for TCP).
    pub status: u16,
    /// Response flags (`-` for none).
    pub flags: String,
    /// Body bytes received from downstream.
    pub bytes_received: u64,
    /// Body bytes sent to downstream.
    pub bytes_sent: u64,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Upstream address.
    pub upstream_host: String,
    /// Upstream cluster.
    pub upstream_cluster: String,
    /// `x-request-id`.
    pub request_id: String,
    /// Authority.
    pub authority: String,
    /// `user-agent`.
    pub user_agent: String,
    /// Downstream peer address.
    pub downstream: String,
    /// Route name.
    pub route: String,
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

impl Entry {
    /// The line in `format`.
    pub fn line(&self, format: LogFormat) -> String {
        match format {
            LogFormat::Json => serde_json::json!({
                "start_time": self.start,
                "method": dash(&self.method),
                "path": dash(&self.path),
                "protocol": self.protocol,
                "response_code": self.status,
                "response_flags": dash(&self.flags),
                "bytes_received": self.bytes_received,
                "bytes_sent": self.bytes_sent,
                "duration": self.duration_ms,
                "upstream_host": dash(&self.upstream_host),
                "upstream_cluster": dash(&self.upstream_cluster),
                "x_request_id": dash(&self.request_id),
                "authority": dash(&self.authority),
                "user_agent": dash(&self.user_agent),
                "downstream_remote_address": self.downstream,
                "route_name": dash(&self.route),
            })
            .to_string(),
            _ => {
                let mut line = String::with_capacity(256);
                let _ = write!(
                    line,
                    "[{}] \"{} {} {}\" {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" {} {} route={}",
                    self.start,
                    dash(&self.method),
                    dash(&self.path),
                    self.protocol,
                    self.status,
                    dash(&self.flags),
                    self.bytes_received,
                    self.bytes_sent,
                    self.duration_ms,
                    dash(&self.user_agent),
                    dash(&self.request_id),
                    dash(&self.authority),
                    dash(&self.upstream_host),
                    dash(&self.upstream_cluster),
                    self.downstream,
                    dash(&self.route),
                );
                line
            }
        }
    }
}

/// Writes access-log lines to stdout from its own task, so the data path never blocks on
/// the terminal; lines are dropped (and counted) when the writer falls behind.
#[derive(Clone)]
pub struct AccessLog {
    format: LogFormat,
    lines: Option<tokio::sync::mpsc::Sender<String>>,
    dropped: Counter,
}

impl AccessLog {
    /// Whether lines are written at all (when not, entries need not be filled in).
    pub fn enabled(&self) -> bool {
        self.lines.is_some()
    }

    /// A log in `format` (started on the current runtime).
    pub fn start(format: LogFormat, dropped: Counter) -> Self {
        if format == LogFormat::Off {
            return Self { format, lines: None, dropped };
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4096);
        // A thread of its own: writes to a terminal or pipe block.
        let spawned = std::thread::Builder::new().name("access-log".into()).spawn(move || {
            use std::io::Write as _;
            let mut out = std::io::stdout();
            let mut batch = String::new();
            while let Some(line) = rx.blocking_recv() {
                batch.clear();
                batch.push_str(&line);
                batch.push('\n');
                while let Ok(more) = rx.try_recv() {
                    batch.push_str(&more);
                    batch.push('\n');
                }
                if out.write_all(batch.as_bytes()).is_err() {
                    return;
                }
                let _ = out.flush();
            }
        });
        if let Err(err) = spawned {
            tracing::warn!("no access log: cannot start its thread: {err}");
            return Self { format, lines: None, dropped };
        }
        Self { format, lines: Some(tx), dropped }
    }

    /// Logs one entry.
    pub fn log(&self, entry: &Entry) {
        let Some(lines) = &self.lines else { return };
        if lines.try_send(entry.line(self.format)).is_err() {
            self.dropped.inc();
        }
    }
}

/// Now, as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        now.subsec_millis()
    )
}
