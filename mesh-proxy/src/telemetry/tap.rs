//! A live feed of what the proxy carries, for `GET /tap` on the admin port: one record per
//! finished HTTP request and per closed TCP connection, taken where the access log takes its
//! line (whatever its filters say), with the trace a recorded request belongs to. Off unless someone watches: with no tap open a request pays one relaxed atomic load,
//! and nothing is built or buffered. At most [`MAX_TAPS`] watchers at once, all reading one
//! ring of [`BUFFER`] records: a reader that falls behind loses the oldest records and is told
//! how many, and the data path never waits for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast;

use super::{Entry, Protocol, Report, Reporter, ResponseFlags, Workload};

/// How many taps may be open at once.
pub const MAX_TAPS: usize = 4;
/// How many records a tap may fall behind before it loses the oldest.
pub const BUFFER: usize = 1024;
/// Longest path (with its query) a record keeps, in bytes.
pub const MAX_PATH: usize = 256;

/// Which way a request or connection went through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// To this workload's app (the proxy reports as the destination).
    Inbound,
    /// From this workload's app, or through a gateway (the proxy reports as the source).
    Outbound,
}

impl Direction {
    /// `inbound` or `outbound`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }

    /// `inbound` or `outbound`; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "inbound" => Some(Self::Inbound),
            "outbound" => Some(Self::Outbound),
            _ => None,
        }
    }
}

/// One finished request or closed connection. Built on the data path only while a tap is
/// open, from what the access log and the metrics hold; written as JSON by the reader.
#[derive(Clone, Debug)]
pub struct Record {
    /// When it started (RFC 3339, UTC).
    pub time: String,
    /// Which way it went.
    pub direction: Direction,
    /// The HTTP version the app spoke, or TCP (a connection, not a request).
    pub protocol: Protocol,
    /// Method (empty for TCP).
    pub method: String,
    /// Authority (empty for TCP).
    pub authority: String,
    /// Path with query, cut at [`MAX_PATH`] bytes (empty for TCP).
    pub path: String,
    /// Response code; 0 when there was none (TCP, or no response).
    pub status: u16,
    /// How long it took.
    pub duration_ms: u64,
    /// Body bytes from downstream.
    pub request_bytes: u64,
    /// Body bytes to downstream.
    pub response_bytes: u64,
    /// Upstream cluster (empty when none was chosen).
    pub upstream_cluster: String,
    /// Upstream address (empty when none was reached).
    pub upstream_host: String,
    /// Envoy's response flags.
    pub flags: ResponseFlags,
    /// The source workload.
    pub source: Arc<Workload>,
    /// The destination workload.
    pub destination: Arc<Workload>,
    /// The destination service's host.
    pub service: String,
    /// Whether the hop was mesh mutual TLS.
    pub mtls: bool,
    /// The trace the request was recorded in (32 hex characters), empty when it was not
    /// (not sampled, not traced, or a TCP connection).
    pub trace_id: String,
}

impl Record {
    /// The record of what `entry` logs and `report` counts, as `reporter` reported it.
    pub fn new(entry: &Entry, report: &Report, reporter: Reporter) -> Self {
        let time = if entry.start.is_empty() {
            // Not filled in when the access log is off: the start is the end less the time
            // taken.
            let now = SystemTime::now();
            super::rfc3339(now.checked_sub(Duration::from_millis(entry.duration_ms)).unwrap_or(now))
        } else {
            entry.start.clone()
        };
        Self {
            time,
            direction: match reporter {
                Reporter::Source => Direction::Outbound,
                Reporter::Destination => Direction::Inbound,
            },
            protocol: entry.protocol,
            method: entry.method.clone(),
            authority: entry.authority.clone(),
            path: cut(&entry.path, MAX_PATH).to_owned(),
            status: entry.status,
            duration_ms: entry.duration_ms,
            request_bytes: entry.bytes_received,
            response_bytes: entry.bytes_sent,
            upstream_cluster: entry.upstream_cluster.clone(),
            upstream_host: entry.upstream_host.clone(),
            flags: entry.flags,
            source: report.source.clone(),
            destination: report.destination.clone(),
            service: report.service.clone(),
            mtls: report.mutual_tls,
            trace_id: entry.trace_id.clone(),
        }
    }

    /// The record as one line of JSON (without the newline).
    pub fn json(&self) -> String {
        let name = |w: &Workload| super::or_unknown(&w.name).to_owned();
        let namespace = |w: &Workload| super::or_unknown(&w.namespace).to_owned();
        serde_json::json!({
            "time": self.time,
            "direction": self.direction.as_str(),
            "kind": if self.protocol == Protocol::Tcp { "tcp" } else { "http" },
            "protocol": self.protocol.as_str(),
            "method": self.method,
            "authority": self.authority,
            "path": self.path,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "upstream_cluster": self.upstream_cluster,
            "upstream_host": self.upstream_host,
            "response_flags": self.flags.text().as_str(),
            "source_workload": name(&self.source),
            "source_namespace": namespace(&self.source),
            "destination_workload": name(&self.destination),
            "destination_namespace": namespace(&self.destination),
            "destination_service": super::or_unknown(&self.service),
            "mtls": self.mtls,
            "trace_id": self.trace_id,
        })
        .to_string()
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    &text[..end]
}

/// The fan-out of records to the taps open.
#[derive(Debug, Default)]
pub struct Tap {
    watchers: AtomicUsize,
    records: Sender,
    /// Records published (the metric `mesh_proxy_tap_records_total`).
    published: Counter,
    /// Taps open (the metric `mesh_proxy_taps_open`).
    open: Gauge,
}

/// The ring all taps read.
#[derive(Debug)]
struct Sender(broadcast::Sender<Arc<Record>>);

impl Default for Sender {
    fn default() -> Self {
        Self(broadcast::channel(BUFFER).0)
    }
}

/// All [`MAX_TAPS`] taps are open.
#[derive(Debug, thiserror::Error)]
#[error("{MAX_TAPS} taps are open already, the most this proxy serves at once: close one")]
pub struct Busy;

impl Tap {
    /// A feed that counts the records it publishes in `published` and the taps open in
    /// `open`.
    pub fn new(published: Counter, open: Gauge) -> Self {
        Self { published, open, ..Self::default() }
    }

    /// Whether a tap is open: the one relaxed load a request pays when none is.
    #[inline]
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// Shows the record `make` builds to the taps open; builds nothing when none is.
    #[inline]
    pub fn publish(&self, make: impl FnOnce() -> Record) {
        if !self.watched() {
            return;
        }
        self.published.inc();
        // No receiver left (the last tap closed meanwhile): the record goes nowhere.
        let _ = self.records.0.send(Arc::new(make()));
    }

    /// Records published since start (none while no tap is open).
    pub fn published(&self) -> u64 {
        self.published.get()
    }

    /// Taps open now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Opens a tap showing the records of `direction` (both when `None`); refused when
    /// [`MAX_TAPS`] are open. The tap closes when the [`Watcher`] is dropped.
    pub fn open(self: &Arc<Self>, direction: Option<Direction>) -> Result<Watcher, Busy> {
        let mut open = self.watchers.load(Ordering::Relaxed);
        loop {
            if open >= MAX_TAPS {
                return Err(Busy);
            }
            match self.watchers.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => open = now,
            }
        }
        self.open.inc();
        Ok(Watcher { tap: self.clone(), records: self.records.0.subscribe(), direction })
    }
}

/// What a tap shows next.
#[derive(Clone, Debug)]
pub enum Line {
    /// A record of the direction it asked for.
    Record(Arc<Record>),
    /// How many records it lost for reading too slowly (of either direction).
    Dropped(u64),
}

impl Line {
    /// The line as JSON, with its newline: the record, or `{"dropped":N}`.
    pub fn json(&self) -> String {
        match self {
            Self::Record(record) => format!("{}\n", record.json()),
            Self::Dropped(n) => format!("{{\"dropped\":{n}}}\n"),
        }
    }
}

/// One open tap; closes when dropped.
#[derive(Debug)]
pub struct Watcher {
    tap: Arc<Tap>,
    records: broadcast::Receiver<Arc<Record>>,
    direction: Option<Direction>,
}

impl Watcher {
    /// The next line for this tap: waits for a record of its direction, or says how many it
    /// lost since it last read.
    pub async fn next(&mut self) -> Line {
        loop {
            match self.records.recv().await {
                Ok(record) if self.direction.is_none_or(|d| d == record.direction) => {
                    return Line::Record(record);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(lost)) => return Line::Dropped(lost),
                // The sender lives as long as the tap this watcher holds.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.tap.watchers.fetch_sub(1, Ordering::AcqRel);
        self.tap.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(direction: Direction, path: &str) -> Record {
        let entry = Entry {
            start: "2030-01-02T03:04:05.006Z".to_owned(),
            method: "GET".to_owned(),
            path: path.to_owned(),
            authority: "web.demo".to_owned(),
            status: 200,
            upstream_cluster: "outbound|80||web.demo.svc.cluster.local".to_owned(),
            ..Entry::default()
        };
        let reporter = match direction {
            Direction::Inbound => Reporter::Destination,
            Direction::Outbound => Reporter::Source,
        };
        Record::new(&entry, &Report::default(), reporter)
    }

    #[tokio::test]
    async fn nothing_is_built_until_a_tap_opens_and_a_fifth_is_refused() {
        let tap = Arc::new(Tap::default());
        let mut built = 0;
        tap.publish(|| {
            built += 1;
            record(Direction::Inbound, "/")
        });
        assert_eq!((built, tap.published(), tap.watchers()), (0, 0, 0));

        let mut taps: Vec<Watcher> = (0..MAX_TAPS).map(|_| tap.open(None).unwrap()).collect();
        let refused = tap.open(None).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "4 taps are open already, the most this proxy serves at once: close one"
        );
        tap.publish(|| record(Direction::Inbound, "/seen"));
        for watcher in &mut taps {
            let Line::Record(seen) = watcher.next().await else { panic!("a record") };
            assert_eq!(seen.path, "/seen");
        }
        taps.pop();
        assert!(tap.open(None).is_ok(), "a closed tap frees its place");
        drop(taps);
        assert!(!tap.watched());
    }

    #[tokio::test]
    async fn a_slow_reader_is_told_how_many_records_it_lost() {
        let tap = Arc::new(Tap::default());
        let mut slow = tap.open(None).unwrap();
        for n in 0..BUFFER + 6 {
            tap.publish(|| record(Direction::Outbound, &format!("/{n}")));
        }
        assert_eq!(slow.next().await.json(), "{\"dropped\":6}\n");
        let Line::Record(oldest) = slow.next().await else { panic!("a record") };
        assert_eq!(oldest.path, "/6", "then the oldest record still held");
    }

    #[tokio::test]
    async fn a_tap_sees_only_its_direction() {
        let tap = Arc::new(Tap::default());
        let mut inbound = tap.open(Direction::parse("inbound")).unwrap();
        tap.publish(|| record(Direction::Outbound, "/out"));
        tap.publish(|| record(Direction::Inbound, "/in"));
        let Line::Record(seen) = inbound.next().await else { panic!("a record") };
        assert_eq!(seen.path, "/in");
    }

    #[test]
    fn a_record_is_one_json_line_with_its_path_cut() {
        let long = format!("/{}é", "a".repeat(MAX_PATH - 2));
        let line = Line::Record(Arc::new(record(Direction::Inbound, &long))).json();
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1, "{line}");
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["path"].as_str().unwrap().len(), MAX_PATH - 1, "cut before the é");
        assert_eq!(json["time"], "2030-01-02T03:04:05.006Z");
        assert_eq!(json["direction"], "inbound");
        assert_eq!(json["kind"], "http");
        assert_eq!(json["method"], "GET");
        assert_eq!(json["status"], 200);
        assert_eq!(json["upstream_cluster"], "outbound|80||web.demo.svc.cluster.local");
        assert_eq!(json["response_flags"], "-");
        assert_eq!(json["source_workload"], "unknown");
        assert_eq!(json["mtls"], false);
        assert_eq!(json["trace_id"], "", "not traced");
    }

    #[test]
    fn a_traced_request_names_its_trace() {
        let entry =
            Entry { trace_id: "0af7651916cd43dd8448eb211c80319c".to_owned(), ..Entry::default() };
        let line = Record::new(&entry, &Report::default(), Reporter::Source).json();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    }
}
