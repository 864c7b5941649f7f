//! Distributed tracing on the data path, as Envoy does it for Istio: each HTTP connection
//! manager's `tracing` compiled with its listener ([`config`]), each request joining or
//! starting a trace and, when sampled, becoming a span ([`request`]), and the spans exported
//! over OTLP to the collector the tracer's cluster names ([`exporters`]). Header formats,
//! sampling rules, ids and the exporter itself are `mesh-trace`'s; nothing here blocks or
//! waits on the data path.

pub mod config;
pub mod exporters;
pub mod request;

pub use config::{Collector, ExportSpec, TraceConfig};
pub use exporters::{Exporters, Identity, Spans, follow, stop_channel};
pub use request::RequestTrace;
