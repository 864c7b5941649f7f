//! A received span as people and `meshctl trace` read it (and its JSON form), made from OTLP's
//! protobuf with every field bounded.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use serde::{Deserialize, Serialize};

use crate::context::{SpanId, TraceId, to_hex};

/// The most attributes kept of one span.
pub const MAX_ATTRIBUTES: usize = 64;
/// The longest text kept of a name, a key or a value (longer is cut at a character boundary).
pub const MAX_TEXT: usize = 512;
/// The deepest nesting of arrays and maps kept in a value.
const MAX_DEPTH: usize = 4;

/// One span of a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpanView {
    /// The trace (32 hex characters).
    pub trace_id: String,
    /// The span (16 hex characters).
    pub span_id: String,
    /// Its parent, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// Its name.
    pub name: String,
    /// `SERVER`, `CLIENT`, `INTERNAL`, `PRODUCER`, `CONSUMER` or `UNSPECIFIED`.
    pub kind: String,
    /// The `service.name` of the process that sent it.
    pub service: String,
    /// When it started, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// How long it took, in nanoseconds.
    pub duration_nanos: u64,
    /// Its attributes (at most [`MAX_ATTRIBUTES`]).
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// `UNSET`, `OK` or `ERROR`.
    pub status: String,
    /// The status's message, when there is one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_message: String,
}

/// The spans of one trace, the earliest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceView {
    /// The trace (32 hex characters).
    pub trace_id: String,
    /// Its spans, by start time.
    pub spans: Vec<SpanView>,
    /// Spans of this trace not kept (over the receiver's limit for one trace).
    #[serde(default)]
    pub dropped_spans: u64,
}

impl TraceView {
    /// The spans with no parent in this trace (the roots of its tree; a span whose parent was
    /// not received is one too).
    pub fn roots(&self) -> impl Iterator<Item = &SpanView> {
        self.spans.iter().filter(|span| match &span.parent_span_id {
            Some(parent) => !self.spans.iter().any(|s| s.span_id == *parent),
            None => true,
        })
    }

    /// The spans whose parent is `span_id`, by start time.
    pub fn children<'a>(&'a self, span_id: &'a str) -> impl Iterator<Item = &'a SpanView> {
        self.spans.iter().filter(move |s| s.parent_span_id.as_deref() == Some(span_id))
    }
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn json(value: Option<any_value::Value>, depth: usize) -> serde_json::Value {
    use any_value::Value;
    match value {
        None => serde_json::Value::Null,
        Some(Value::StringValue(s)) => serde_json::Value::String(cut(s)),
        Some(Value::BoolValue(b)) => b.into(),
        Some(Value::IntValue(i)) => i.into(),
        Some(Value::DoubleValue(d)) => d.into(),
        Some(Value::BytesValue(b)) => cut(to_hex(&b)).into(),
        Some(_) if depth >= MAX_DEPTH => serde_json::Value::Null,
        Some(Value::ArrayValue(a)) => a
            .values
            .into_iter()
            .take(MAX_ATTRIBUTES)
            .map(|v| json(v.value, depth + 1))
            .collect::<Vec<_>>()
            .into(),
        Some(Value::KvlistValue(kv)) => {
            serde_json::Value::Object(attributes(kv.values, depth + 1).into_iter().collect())
        }
        // A kind OTLP may add later (Istio sends none).
        Some(_) => serde_json::Value::Null,
    }
}

fn attributes(pairs: Vec<KeyValue>, depth: usize) -> BTreeMap<String, serde_json::Value> {
    pairs
        .into_iter()
        .take(MAX_ATTRIBUTES)
        .map(|kv| (cut(kv.key), json(kv.value.and_then(|v: AnyValue| v.value), depth)))
        .collect()
}

/// The `service.name` among resource attributes.
pub(crate) fn service_name(attributes: &[KeyValue]) -> String {
    attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(cut(s.clone())),
            _ => None,
        })
        .unwrap_or_default()
}

/// A received span as kept, with its trace id; `None` when its ids are not valid.
pub(crate) fn from_proto(span: Span, service: &str) -> Option<(TraceId, SpanView)> {
    let trace_id: TraceId = span.trace_id.as_slice().try_into().ok()?;
    let span_id: SpanId = span.span_id.as_slice().try_into().ok()?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    let parent: Option<SpanId> =
        span.parent_span_id.as_slice().try_into().ok().filter(|p| *p != [0; 8]);
    let kind = match SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Unspecified => "UNSPECIFIED",
        SpanKind::Internal => "INTERNAL",
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
        SpanKind::Producer => "PRODUCER",
        SpanKind::Consumer => "CONSUMER",
    };
    let (status, status_message) = match span.status {
        Some(status) => {
            let code = match StatusCode::try_from(status.code).unwrap_or(StatusCode::Unset) {
                StatusCode::Unset => "UNSET",
                StatusCode::Ok => "OK",
                StatusCode::Error => "ERROR",
            };
            (code, cut(status.message))
        }
        None => ("UNSET", String::new()),
    };
    let view = SpanView {
        trace_id: to_hex(&trace_id),
        span_id: to_hex(&span_id),
        parent_span_id: parent.map(|p| to_hex(&p)),
        name: cut(span.name),
        kind: kind.to_owned(),
        service: service.to_owned(),
        start_unix_nanos: span.start_time_unix_nano,
        duration_nanos: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano),
        attributes: attributes(span.attributes, 0),
        status: status.to_owned(),
        status_message,
    };
    Some((trace_id, view))
}
