//! What the proxy reports about traffic: Istio's standard metrics with Istio's labels
//! (`istio_requests_total` and friends, served on 15090), the proxy's own health metrics, and
//! one access-log line per request or connection, shown live to the admin port's taps
//! ([`tap`]). Who the peers are comes from their
//! certificates and from the peer-metadata header sidecars exchange over mTLS
//! ([`PEER_HEADER`]). Response flags and protocols are typed ([`ResponseFlags`], [`Protocol`],
//! [`RequestProtocol`]) and printed as Envoy and Istio print them. No label takes unbounded
//! values from traffic ([`cardinality`]).

pub mod cardinality;
mod flags;
pub mod log_filter;
mod metrics;
mod protocol;
pub mod tap;

pub use cardinality::{destination_service, grpc_code_label, grpc_status_label, label_value};
pub use flags::{FlagsText, ResponseFlags};
pub use metrics::Metrics;
pub use protocol::{Protocol, RequestProtocol};

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;

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
        // The injector's labels, or its rule where a pod has none (a workload not injected).
        let [(_, canonical_service), (_, canonical_revision)] =
            mesh_api::inject::canonical_labels(labels, Some(name));
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            principal: principal.to_owned(),
            canonical_service,
            canonical_revision,
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

    /// Reads [`PEER_HEADER`]; the principal comes from the peer's certificate. The peer
    /// writes the values: each is checked as a label ([`label_value`]).
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
            *slot = label_value(v);
        }
        out
    }
}

/// Istio's label names on request and TCP metrics, in the order they are printed.
const LABEL_NAMES: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// Istio's labels on request and TCP metrics: values in [`LABEL_NAMES`] order.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Labels([String; 25]);

impl Labels {
    fn of(values: [&str; 25]) -> Self {
        Self(values.map(str::to_owned))
    }

    fn matches(&self, values: &[&str; 25]) -> bool {
        self.0.iter().zip(values).all(|(a, b)| a == b)
    }
}

impl EncodeLabelSet for Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for (name, value) in LABEL_NAMES.iter().zip(&self.0) {
            (*name, value.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
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
    pub protocol: RequestProtocol,
    /// HTTP status (0 for TCP).
    pub status: u16,
    /// gRPC status, if any: `0`–`16`, or `unknown` ([`grpc_status_label`]).
    pub grpc_status: Option<&'static str>,
    /// Envoy's response flags.
    pub flags: ResponseFlags,
    /// Whether the connection was mesh mutual TLS: inbound the downstream's, outbound the
    /// one to the upstream (only inbound's is a metric label).
    pub mutual_tls: bool,
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "unknown" } else { s }
}

/// An HTTP status as text, without formatting it per request.
fn status_text(status: u16) -> &'static str {
    static TEXT: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (0..1000).map(|n: u16| n.to_string()).collect());
    TEXT.get(usize::from(status)).map_or("other", String::as_str)
}

impl Report {
    /// A report of `protocol` traffic as this workload (`me`) sees it as `reporter`: outbound
    /// `me` is the source; inbound the destination, and the verified `peer` (if any) the
    /// source, over mutual TLS.
    pub fn new(
        protocol: RequestProtocol,
        reporter: Reporter,
        me: &std::sync::Arc<Workload>,
        peer: Option<Workload>,
    ) -> Self {
        let mut report = Report { protocol, ..Report::default() };
        match reporter {
            Reporter::Source => report.source = me.clone(),
            Reporter::Destination => {
                report.destination = me.clone();
                report.mutual_tls = peer.is_some();
                if let Some(peer) = peer {
                    report.source = std::sync::Arc::new(peer);
                }
            }
        }
        report
    }

    /// The label values of this report, in [`LABEL_NAMES`] order; `flags` is
    /// [`Report::flags`] as text.
    fn label_values<'a>(&'a self, reporter: Reporter, flags: &'a str) -> [&'a str; 25] {
        let (name, namespace) = service_name(&self.service);
        let tcp = self.protocol == RequestProtocol::Tcp;
        let (source, destination) = (&self.source, &self.destination);
        [
            match reporter {
                Reporter::Source => "source",
                Reporter::Destination => "destination",
            },
            or_unknown(&source.name),
            or_unknown(&source.namespace),
            or_unknown(&source.principal),
            or_unknown(&source.app),
            or_unknown(&source.version),
            or_unknown(&source.canonical_service),
            or_unknown(&source.canonical_revision),
            or_unknown(&source.cluster),
            or_unknown(&destination.name),
            or_unknown(&destination.namespace),
            or_unknown(&destination.principal),
            or_unknown(&destination.app),
            or_unknown(&destination.version),
            or_unknown(&self.service),
            or_unknown(name),
            or_unknown(namespace),
            or_unknown(&destination.canonical_service),
            or_unknown(&destination.canonical_revision),
            or_unknown(&destination.cluster),
            self.protocol.as_str(),
            if tcp { "" } else { status_text(self.status) },
            self.grpc_status.unwrap_or_default(),
            flags,
            match (reporter, self.mutual_tls) {
                (Reporter::Source, _) => "unknown",
                (Reporter::Destination, true) => "mutual_tls",
                (Reporter::Destination, false) => "none",
            },
        ]
    }

    fn labels(&self, reporter: Reporter) -> Labels {
        Labels::of(self.label_values(reporter, self.flags.text().as_str()))
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
    pub protocol: Protocol,
    /// Status (0 for TCP).
    pub status: u16,
    /// Response flags.
    pub flags: ResponseFlags,
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
    /// Why the proxy answered or closed itself, when it says (Envoy's response code and
    /// connection termination details: `rbac_access_denied_matched_policy[<policy>]`).
    pub details: String,
    /// The trace the request was recorded in (32 hex characters), empty when it was not.
    pub trace_id: String,
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
                "protocol": self.protocol.as_str(),
                "response_code": self.status,
                "response_flags": self.flags.text().as_str(),
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
                "response_code_details": dash(&self.details),
            })
            .to_string(),
            _ => {
                let mut line = String::with_capacity(256);
                let _ = write!(
                    line,
                    "[{}] \"{} {} {}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" {} {} route={}",
                    self.start,
                    dash(&self.method),
                    dash(&self.path),
                    self.protocol,
                    self.status,
                    self.flags,
                    dash(&self.details),
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
    tap: std::sync::Arc<tap::Tap>,
}

impl AccessLog {
    /// Whether lines are written at all (when not, entries need not be filled in).
    pub fn enabled(&self) -> bool {
        self.lines.is_some()
    }

    /// A log in `format` (started on the current runtime), counting in `metrics` the lines it
    /// drops and what its taps take.
    pub fn start(format: LogFormat, metrics: &Metrics) -> Self {
        let dropped = metrics.log_dropped.clone();
        let tap = std::sync::Arc::new(tap::Tap::new(
            metrics.tap_records.clone(),
            metrics.taps_open.clone(),
        ));
        if format == LogFormat::Off {
            return Self { format, lines: None, dropped, tap };
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
            return Self { format, lines: None, dropped, tap };
        }
        Self { format, lines: Some(tx), dropped, tap }
    }

    /// Where the admin port's taps read what [`AccessLog::record`] shows them.
    pub fn tap(&self) -> &std::sync::Arc<tap::Tap> {
        &self.tap
    }

    /// Logs one entry when `logged` (its connection manager's, TCP proxy's or listener's
    /// access loggers say so), and shows it to the taps open, which see every request, with
    /// what `report` says of the peers as `reporter` reported it. With no tap open this costs
    /// one relaxed atomic load more than [`AccessLog::log`].
    pub fn record(&self, logged: bool, entry: &Entry, report: &Report, reporter: Reporter) {
        if logged {
            self.log(entry);
        }
        self.tap.publish(|| tap::Record::new(entry, report, reporter));
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
    rfc3339(std::time::SystemTime::now())
}

/// `at` as RFC 3339 in UTC with milliseconds (`2030-01-02T03:04:05.006Z`).
pub fn rfc3339(at: std::time::SystemTime) -> String {
    let millis = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_millis();
    format!("{}.{millis:03}Z", civil(at))
}

/// `at` as RFC 3339 in UTC to the second (`2030-01-02T03:04:05Z`).
pub fn rfc3339_seconds(at: std::time::SystemTime) -> String {
    format!("{}Z", civil(at))
}

/// `at` in UTC as `2030-01-02T03:04:05`.
fn civil(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
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
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_is_named_by_its_canonical_labels_or_the_injectors_rule() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let named = |l: &BTreeMap<String, String>| {
            let w = Workload::from_labels("reviews-v2-abc", "demo", "spiffe://x", "c", l);
            (w.canonical_service, w.canonical_revision)
        };
        let injected = labels(&[
            ("app", "reviews"),
            ("service.istio.io/canonical-name", "reviews-svc"),
            ("service.istio.io/canonical-revision", "2"),
        ]);
        assert_eq!(named(&injected), ("reviews-svc".into(), "2".into()));
        let plain = labels(&[("app", "reviews"), ("version", "v2")]);
        assert_eq!(named(&plain), ("reviews".into(), "v2".into()));
        assert_eq!(named(&BTreeMap::new()), ("reviews-v2-abc".into(), "latest".into()));
    }
}
