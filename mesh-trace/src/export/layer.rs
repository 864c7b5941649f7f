//! The control plane's spans: a `tracing` layer (tracing-opentelemetry over the SDK) whose
//! finished spans go into the exporter's queue, and the trace ids its log lines carry.

use opentelemetry::Context;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
use std::sync::Arc;
use std::time::Duration;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use super::{ExportError, ExportSettings, Exporter, Item, Queue, ShutdownReport, Stats};

/// Hands the SDK's finished spans to the queue: never blocks (a full queue drops and counts).
#[derive(Debug)]
struct QueueProcessor(Queue);

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.push(Item::Sdk(Box::new(span)));
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // The exporter's own shutdown (the guard's) flushes the queue.
        Ok(())
    }
}

/// Keeps the layer's exporter running; [`Guard::shutdown`] flushes it.
#[derive(Debug)]
pub struct Guard {
    exporter: Exporter,
    provider: SdkTracerProvider,
}

impl Guard {
    /// The exporter's counters (dropped spans for a metric).
    pub fn stats(&self) -> Arc<Stats> {
        self.exporter.stats()
    }

    /// Sends the spans that are queued, within `deadline`.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        let _ = self.provider.shutdown();
        self.exporter.shutdown(deadline).await
    }
}

/// Whether a span is the mesh's own: the layer sees nothing else, so the exporter's gRPC
/// client (h2, hyper, tonic spans) can never feed spans about exporting back into the export.
fn ours(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target().starts_with("mesh")
}

/// A `tracing` layer that exports the mesh's spans (targets starting with `mesh`) as
/// `settings` say, every span sampled, and the guard that flushes them at shutdown. Install it
/// next to the log layer (`mesh_runtime::log::init_with`).
pub fn layer<S>(
    settings: &ExportSettings,
) -> Result<(Box<dyn Layer<S> + Send + Sync>, Guard), ExportError>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let exporter = Exporter::start(settings)?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(QueueProcessor(exporter.queue()))
        .with_resource(super::resource(settings))
        .build();
    let tracer = provider.tracer("mesh");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(ours))
        .boxed();
    Ok((layer, Guard { exporter, provider }))
}

/// Records the OpenTelemetry trace and span ids of `span` in its `trace_id` and `span_id`
/// fields (declare them `tracing::field::Empty`), so every log line inside it carries them.
/// Does nothing when no exporting layer is installed.
pub fn record_ids(span: &tracing::Span) {
    let cx = span.context();
    let otel = cx.span();
    let ids = otel.span_context();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
}
