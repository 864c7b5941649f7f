//! A finished span as a data path hands it over: plain data, no SDK types, so making one costs
//! a few allocations and no lock. It becomes OpenTelemetry's `SpanData` on the exporter's task.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, SpanKind, Status, TraceFlags, TraceId as OtelTraceId,
    TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::context::{SpanId, TraceId};

/// The role of a span, as OTLP names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Work inside a process.
    Internal,
    /// Serving a request (a proxy's inbound side).
    Server,
    /// Sending a request (a proxy's outbound side).
    Client,
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    /// Text.
    Str(Cow<'static, str>),
    /// A whole number.
    Int(i64),
    /// A flag.
    Bool(bool),
    /// A real number.
    F64(f64),
}

impl From<&'static str> for AttributeValue {
    fn from(value: &'static str) -> Self {
        Self::Str(Cow::Borrowed(value))
    }
}

impl From<String> for AttributeValue {
    fn from(value: String) -> Self {
        Self::Str(Cow::Owned(value))
    }
}

impl From<i64> for AttributeValue {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<bool> for AttributeValue {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

impl From<f64> for AttributeValue {
    fn from(value: f64) -> Self {
        Self::F64(value)
    }
}

/// How a span ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SpanStatus {
    /// Nothing said (OTLP's default: a success for HTTP servers below 500).
    #[default]
    Unset,
    /// Explicitly fine.
    Ok,
    /// Failed, with a description.
    Error(Cow<'static, str>),
}

/// A finished span, for [`Queue::send`](super::Queue::send).
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// The trace.
    pub trace_id: TraceId,
    /// The span.
    pub span_id: SpanId,
    /// Its parent (the caller's span for a proxy's span), if any.
    pub parent_span_id: Option<SpanId>,
    /// The span's name (Envoy names a request's span by its host and path, or the route's
    /// `decorator`).
    pub name: Cow<'static, str>,
    /// Its role.
    pub kind: Kind,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Its attributes, in order; a key given twice keeps both (OTLP leaves that to receivers).
    pub attributes: Vec<(Cow<'static, str>, AttributeValue)>,
    /// How it ended.
    pub status: SpanStatus,
}

impl SpanRecord {
    /// OpenTelemetry's form, for the OTLP exporter. Every record is sampled (a data path only
    /// records sampled requests); a parent is remote (it is another process's span).
    pub(crate) fn into_span_data(self, scope: &InstrumentationScope) -> SpanData {
        let parent = self.parent_span_id.map(OtelSpanId::from_bytes);
        SpanData {
            span_context: SpanContext::new(
                OtelTraceId::from_bytes(self.trace_id),
                OtelSpanId::from_bytes(self.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: parent.unwrap_or(OtelSpanId::INVALID),
            parent_span_is_remote: parent.is_some(),
            span_kind: match self.kind {
                Kind::Internal => SpanKind::Internal,
                Kind::Server => SpanKind::Server,
                Kind::Client => SpanKind::Client,
            },
            name: self.name,
            start_time: self.start,
            end_time: self.end.max(self.start),
            attributes: self
                .attributes
                .into_iter()
                .map(|(key, value)| match value {
                    AttributeValue::Str(v) => KeyValue::new(key, v),
                    AttributeValue::Int(v) => KeyValue::new(key, v),
                    AttributeValue::Bool(v) => KeyValue::new(key, v),
                    AttributeValue::F64(v) => KeyValue::new(key, v),
                })
                .collect(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match self.status {
                SpanStatus::Unset => Status::Unset,
                SpanStatus::Ok => Status::Ok,
                SpanStatus::Error(description) => Status::Error { description },
            },
            instrumentation_scope: scope.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_record_becomes_span_data_with_its_ids_kind_times_and_attributes() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let record = SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
            name: "reviews:9080/*".into(),
            kind: Kind::Server,
            start,
            end: start + Duration::from_millis(5),
            attributes: vec![
                ("http.method".into(), "GET".into()),
                ("http.status_code".into(), 503_i64.into()),
            ],
            status: SpanStatus::Error("upstream reset".into()),
        };
        let data = record.into_span_data(&InstrumentationScope::builder("t").build());
        assert_eq!(data.span_context.trace_id(), OtelTraceId::from_bytes([1; 16]));
        assert_eq!(data.span_context.span_id(), OtelSpanId::from_bytes([2; 8]));
        assert!(data.span_context.is_sampled());
        assert_eq!(data.parent_span_id, OtelSpanId::from_bytes([3; 8]));
        assert!(data.parent_span_is_remote);
        assert_eq!(data.span_kind, SpanKind::Server);
        assert_eq!(
            data.end_time.duration_since(data.start_time).unwrap(),
            Duration::from_millis(5)
        );
        assert_eq!(
            data.attributes,
            vec![KeyValue::new("http.method", "GET"), KeyValue::new("http.status_code", 503_i64)]
        );
        assert_eq!(data.status, Status::error("upstream reset"));
    }

    #[test]
    fn a_root_has_no_parent_and_an_end_before_the_start_is_clamped() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let record = SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            name: "x".into(),
            kind: Kind::Client,
            start,
            end: start - Duration::from_secs(1),
            attributes: vec![],
            status: SpanStatus::Unset,
        };
        let data = record.into_span_data(&InstrumentationScope::builder("t").build());
        assert_eq!(data.parent_span_id, OtelSpanId::INVALID);
        assert!(!data.parent_span_is_remote);
        assert_eq!(data.end_time, data.start_time);
    }
}
