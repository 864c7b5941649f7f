//! The one OTLP exporter of the mesh: finished spans go into a bounded queue that never blocks
//! (a full queue drops the span and counts it), and one task batches them and sends them with
//! opentelemetry-otlp's gRPC exporter, on the workspace's tonic, or over OTLP/HTTP ([`http`],
//! for the providers that name an HTTP collector).
//!
//! A data path hands over plain [`SpanRecord`]s through a [`Queue`] (cheap to clone, usable
//! from any thread, no lock); the control plane's `tracing` spans come through the layer of
//! [`layer()`], into the same queue. [`Exporter::shutdown`] flushes within a deadline.

mod flags;
mod http;
mod layer;
mod metric;
mod record;
mod settings;

pub use flags::{TraceFlags, TraceSetupError};
pub use layer::{Guard, layer, record_ids};
pub use metric::DroppedSpans;
pub use record::{AttributeValue, Kind, SpanRecord, SpanStatus};
pub use settings::{
    ExportSettings, OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME, SettingsError, Transport, normalize_endpoint,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// What the exporter has done, for the binaries' metrics. Counters only grow.
#[derive(Debug, Default)]
pub struct Stats {
    dropped: AtomicU64,
    exported: AtomicU64,
    failed_exports: AtomicU64,
    in_flight: AtomicU64,
}

impl Stats {
    /// Spans that never reached the collector: the queue was full or closed, their export
    /// failed or timed out, or shutdown's deadline passed before they were sent.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Exports that failed or timed out.
    pub fn failed_exports(&self) -> u64 {
        self.failed_exports.load(Ordering::Relaxed)
    }

    fn drop_spans(&self, n: usize) {
        self.dropped.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// A span waiting for export: a data path's plain record, or a finished SDK span.
#[derive(Debug)]
enum Item {
    Record(SpanRecord),
    Sdk(Box<SpanData>),
}

/// Where finished spans are handed over: cheap to clone, usable from any thread (also outside
/// a tokio runtime), never blocks.
#[derive(Clone, Debug)]
pub struct Queue {
    tx: mpsc::Sender<Item>,
    stats: Arc<Stats>,
}

impl Queue {
    /// Queues `span` for export. A full queue (the collector is slow or gone) or a stopped
    /// exporter drops it and counts it; returns whether it was queued.
    pub fn send(&self, span: SpanRecord) -> bool {
        self.push(Item::Record(span))
    }

    fn push(&self, item: Item) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                self.stats.drop_spans(1);
                false
            }
        }
    }

    /// The exporter's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Spans waiting in the queue now.
    fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Why an exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// There is no tokio runtime to run the export task on.
    #[error("the OTLP exporter needs a tokio runtime: {0}")]
    NoRuntime(String),
    /// opentelemetry-otlp refused the settings.
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Build {
        /// The collector.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
}

/// What shutting down achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every queued span was sent (or its export failed) before the deadline.
    pub flushed: bool,
    /// Spans dropped over the exporter's life (see [`Stats::dropped`]).
    pub dropped: u64,
    /// Spans exported over the exporter's life.
    pub exported: u64,
}

/// A running exporter: its queue and its task. Dropping it stops the task after it has sent
/// what was queued; [`Exporter::shutdown`] does the same within a deadline.
#[derive(Debug)]
pub struct Exporter {
    queue: Queue,
    stop: watch::Sender<bool>,
    worker: tokio::task::JoinHandle<()>,
}

/// The instrumentation scope of spans made from records.
const SCOPE: &str = "mesh-trace";

impl Exporter {
    /// Starts exporting to `settings.endpoint` (on the current tokio runtime). Nothing is
    /// dialled until the first batch; a collector that is down only makes exports fail.
    pub fn start(settings: &ExportSettings) -> Result<Self, ExportError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| ExportError::NoRuntime(e.to_string()))?;
        let settings = settings.clone().bounded();
        let build =
            |reason: String| ExportError::Build { endpoint: settings.endpoint.clone(), reason };
        // gRPC metadata or HTTP headers alike.
        let mut headers = ::http::HeaderMap::new();
        for (key, value) in &settings.headers {
            let name = ::http::HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| build(format!("bad header name {key:?}")))?;
            let value = ::http::HeaderValue::from_str(value)
                .map_err(|_| build(format!("bad value of header {key}")))?;
            headers.append(name, value);
        }
        let exporter = match &settings.transport {
            Transport::Grpc => {
                if let Some(key) = headers.keys().find(|k| k.as_str().ends_with("-bin")) {
                    return Err(build(format!("binary gRPC metadata ({key}) is not supported")));
                }
                let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(settings.endpoint.clone())
                    .with_timeout(settings.timeout)
                    .with_metadata(tonic::metadata::MetadataMap::from_headers(headers))
                    .build()
                    .map_err(|e| build(e.to_string()))?;
                exporter.set_resource(&resource(&settings));
                Sender::Grpc(exporter)
            }
            Transport::Http { path } => {
                let uri = format!("{}{path}", settings.endpoint)
                    .parse()
                    .map_err(|_| build(format!("bad path {path:?}")))?;
                let sender = http::HttpSender::new(uri, headers, &resource(&settings));
                Sender::Http(sender.map_err(build)?)
            }
        };

        let (tx, rx) = mpsc::channel(settings.max_queue);
        let stats = Arc::new(Stats::default());
        let (stop, stopped) = watch::channel(false);
        let worker = Worker {
            exporter,
            stats: stats.clone(),
            timeout: settings.timeout,
            max_batch: settings.max_batch,
            scope: InstrumentationScope::builder(SCOPE).build(),
            failing: AtomicBool::new(false),
            endpoint: settings.endpoint.clone(),
        };
        let worker = runtime.spawn(worker.run(rx, stopped, settings.schedule_delay));
        Ok(Self { queue: Queue { tx, stats }, stop, worker })
    }

    /// The queue to hand spans to (clone it for each thread).
    pub fn queue(&self) -> Queue {
        self.queue.clone()
    }

    /// The exporter's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.queue.stats.clone()
    }

    /// Stops taking spans (later ones are dropped and counted) and sends what is queued, giving
    /// up at `deadline`: what is still queued or in flight then counts as dropped.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        let Self { queue, stop, mut worker } = self;
        let _ = stop.send(true);
        let flushed = match tokio::time::timeout(deadline, &mut worker).await {
            Ok(_) => true,
            Err(_) => {
                worker.abort();
                let lost = queue.queued()
                    + usize::try_from(queue.stats.in_flight.swap(0, Ordering::Relaxed))
                        .unwrap_or(usize::MAX);
                queue.stats.drop_spans(lost);
                false
            }
        };
        ShutdownReport { flushed, dropped: queue.stats.dropped(), exported: queue.stats.exported() }
    }
}

/// The resource every span of the process shares.
fn resource(settings: &ExportSettings) -> Resource {
    Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attributes(settings.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .build()
}

/// Where a batch goes.
#[allow(clippy::large_enum_variant)] // One per exporter, made once: its size does not matter.
enum Sender {
    Grpc(opentelemetry_otlp::SpanExporter),
    Http(http::HttpSender),
}

impl Sender {
    async fn export(&self, spans: Vec<SpanData>) -> Result<(), String> {
        match self {
            Self::Grpc(exporter) => exporter.export(spans).await.map_err(|e| e.to_string()),
            Self::Http(sender) => sender.export(spans).await,
        }
    }

    fn shutdown(&self) {
        if let Self::Grpc(exporter) = self {
            let _ = exporter.shutdown();
        }
    }
}

/// The export task's state.
struct Worker {
    exporter: Sender,
    stats: Arc<Stats>,
    timeout: Duration,
    max_batch: usize,
    scope: InstrumentationScope,
    failing: AtomicBool,
    endpoint: String,
}

impl Worker {
    fn convert(&self, item: Item) -> SpanData {
        match item {
            Item::Record(record) => record.into_span_data(&self.scope),
            Item::Sdk(data) => *data,
        }
    }

    /// Batches what arrives and sends a batch when it is full or `delay` has passed; on stop,
    /// closes the queue and sends what is left.
    async fn run(
        self,
        mut rx: mpsc::Receiver<Item>,
        mut stopped: watch::Receiver<bool>,
        delay: Duration,
    ) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut tick = tokio::time::interval(delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => {
                        batch.push(self.convert(item));
                        if batch.len() >= self.max_batch {
                            self.export(&mut batch).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => self.export(&mut batch).await,
                // A dropped exporter stops as a shut down one does.
                () = async { drop(stopped.wait_for(|stop| *stop).await) } => break,
            }
        }
        rx.close();
        while let Some(item) = rx.recv().await {
            batch.push(self.convert(item));
            if batch.len() >= self.max_batch {
                self.export(&mut batch).await;
            }
        }
        self.export(&mut batch).await;
        self.exporter.shutdown();
    }

    /// Sends `batch` (emptying it); a failure or a timeout counts its spans as dropped.
    async fn export(&self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(self.max_batch));
        let n = spans.len();
        self.stats.in_flight.store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
        let result = tokio::time::timeout(self.timeout, self.exporter.export(spans)).await;
        self.stats.in_flight.store(0, Ordering::Relaxed);
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err),
            Err(_) => Some(format!("no answer within {:?}", self.timeout)),
        };
        match error {
            None => {
                self.stats
                    .exported
                    .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
                if self.failing.swap(false, Ordering::Relaxed) {
                    info!(endpoint = %self.endpoint, "exporting spans again");
                }
            }
            Some(error) => {
                self.stats.drop_spans(n);
                self.stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                // Once per outage, not once per batch.
                if !self.failing.swap(true, Ordering::Relaxed) {
                    warn!(endpoint = %self.endpoint, spans = n, "span export failed, dropping spans until it works: {error}");
                }
            }
        }
    }
}
