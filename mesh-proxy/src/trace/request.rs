//! One request's part in a trace, at one proxy: it joins the caller's trace (W3C or B3
//! headers) or starts one, decides whether it is recorded (the caller's decision, forced
//! flags, `x-client-trace-id`, the connection manager's percentages), writes this hop's
//! context upstream in the formats it received plus W3C, and, when recorded, becomes one span
//! (SERVER inbound, CLIENT outbound; a gateway's SERVER span with a CLIENT child for the
//! upstream call when `spawn_upstream_span` is set) with the attributes Envoy and Istio tag
//! (`http.method`, `http.status_code`, `upstream_cluster`, `response_flags`, `peer.address`,
//! `guid:x-request-id`, the custom tags...). A request not recorded builds no span: it pays
//! the header parse, the decision and the headers written upstream.
//!
//! Span names as Envoy and Istio give them: the connection manager's `operation`, else
//! (inbound) the caller's `x-envoy-decorator-operation`, else the route's decorator, else
//! Istio's route operation `<host>:<port><path match>` (`reviews.default.svc.cluster.local:9080/*`).
//! The outbound side passes its name on in `x-envoy-decorator-operation`, so both spans of a
//! hop read the same. Pure but for the clock and the random ids the caller gives.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::route::v3::{Route, route_match};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use mesh_trace::context::{
    self, Decision, Formats, Incoming, NewIds, Reason, SpanId, TraceContext,
};
use mesh_trace::export::{AttributeValue, Kind, SpanRecord, SpanStatus};

use super::config::{MAX_TAG_VALUE, TagValue, TraceConfig};
use crate::telemetry::{Entry, Report, Reporter, Workload};

/// Envoy's header carrying the caller's span name to the server side.
pub const DECORATOR_OPERATION: HeaderName = HeaderName::from_static("x-envoy-decorator-operation");
/// The longest span name, in bytes.
const MAX_NAME: usize = 256;

/// A tag's name and value.
type Attribute = (Cow<'static, str>, AttributeValue);

/// A recorded request's span while the request runs.
#[derive(Debug)]
struct Draft {
    start: SystemTime,
    kind: Kind,
    /// The id of the upstream CLIENT span, when one is spawned.
    upstream_span: Option<SpanId>,
    /// The span's name, once known.
    operation: Option<String>,
    /// Whether the name goes upstream (a route decorator may say not).
    propagate: bool,
    /// The custom tags, taken when the request arrived.
    tags: Vec<Attribute>,
}

/// One request's trace at this proxy.
#[derive(Debug)]
pub struct RequestTrace {
    config: Arc<TraceConfig>,
    context: TraceContext,
    formats: Formats,
    reporter: Reporter,
    /// `Some` when the request is recorded.
    draft: Option<Box<Draft>>,
}

/// Whether `percentage` holds for `random`, by the one sampling rule of `mesh-trace`.
fn roll(percentage: f64, random: u64) -> bool {
    context::decide(&Incoming::default(), &HeaderMap::new(), percentage, random).sampled
}

/// Decides whether a request is recorded, as Envoy does with these percentages: the
/// caller's decision (or B3 debug) stands; `x-client-trace-id` forces it for
/// `client_sampling` of such requests; else `random_sampling`; and of what the proxy itself
/// decided to record, `overall_sampling` is kept. `rolls` are three random numbers.
pub fn sample(
    config: &TraceConfig,
    incoming: &Incoming,
    headers: &HeaderMap,
    rolls: [u64; 3],
) -> Decision {
    let forced_by_client =
        headers.contains_key(context::X_CLIENT_TRACE_ID) && roll(config.client_sampling, rolls[0]);
    let empty = HeaderMap::new();
    let decision = context::decide(
        incoming,
        if forced_by_client { headers } else { &empty },
        config.random_sampling,
        rolls[1],
    );
    let own = matches!(decision.reason, Reason::Random | Reason::ClientTraceId);
    if own && decision.sampled && !roll(config.overall_sampling, rolls[2]) {
        return Decision { sampled: false, reason: decision.reason };
    }
    decision
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    &text[..end]
}

impl RequestTrace {
    /// The trace of a request that arrived with `headers`, on the side `reporter` says:
    /// joined or started, decided, and when recorded its span started at `now()`. Inbound,
    /// the caller's `x-envoy-decorator-operation` is taken off the request.
    pub fn start(
        config: &Arc<TraceConfig>,
        headers: &mut HeaderMap,
        reporter: Reporter,
        now: impl FnOnce() -> SystemTime,
    ) -> Self {
        let incoming = context::extract(headers);
        let rolls = [context::random_u64(), context::random_u64(), context::random_u64()];
        let decision = sample(config, &incoming, headers, rolls);
        let context = incoming.child(decision.sampled, NewIds::random());
        let caller_operation = match reporter {
            Reporter::Destination => headers.remove(DECORATOR_OPERATION),
            Reporter::Source => None,
        };
        let draft = decision.sampled.then(|| {
            let tags = config
                .custom_tags
                .iter()
                .filter_map(|tag| {
                    let value = match &tag.value {
                        TagValue::Literal(value) => value.clone(),
                        TagValue::Header { name, default } => headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(|v| cut(v, MAX_TAG_VALUE).to_owned())
                            .or_else(|| default.clone())?,
                    };
                    Some((Cow::Owned(tag.name.clone()), AttributeValue::from(value)))
                })
                .collect();
            let operation = config.operation.clone().or_else(|| {
                caller_operation
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(|v| cut(v, MAX_NAME).to_owned())
            });
            let kind = match (reporter, config.spawn_upstream_span) {
                (Reporter::Source, false) => Kind::Client,
                _ => Kind::Server,
            };
            Box::new(Draft {
                start: now(),
                kind,
                upstream_span: config.spawn_upstream_span.then(context::new_span_id),
                operation,
                propagate: true,
                tags,
            })
        });
        Self { config: config.clone(), context, formats: incoming.formats, reporter, draft }
    }

    /// Whether the request is recorded.
    pub fn sampled(&self) -> bool {
        self.draft.is_some()
    }

    /// The trace id, as 32 hex characters.
    pub fn trace_id(&self) -> String {
        context::to_hex(&self.context.trace_id)
    }

    /// Where its spans are exported.
    pub fn export(&self) -> &Arc<super::config::ExportSpec> {
        &self.config.export
    }

    /// This hop's own context (its span, child of the caller's).
    pub fn context(&self) -> &TraceContext {
        &self.context
    }

    /// Names the span after the route the request took, if nothing named it yet: the route's
    /// decorator, else Istio's `<host>:<port><path match>` of its cluster (`outbound|9080||h`),
    /// else of the request's host and `port`.
    pub fn routed(&mut self, route: &Route, cluster: &str, authority: &str, port: u16) {
        let Some(draft) = self.draft.as_mut() else { return };
        if let Some(decorator) = &route.decorator {
            draft.propagate = decorator.propagate.as_ref().is_none_or(|p| p.value);
            if draft.operation.is_none() && !decorator.operation.is_empty() {
                draft.operation = Some(cut(&decorator.operation, MAX_NAME).to_owned());
            }
        }
        if draft.operation.is_some() {
            return;
        }
        let path = match route.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
            Some(route_match::PathSpecifier::Prefix(prefix)) => format!("{prefix}*"),
            Some(route_match::PathSpecifier::Path(path)) => path.clone(),
            Some(route_match::PathSpecifier::SafeRegex(regex)) => regex.regex.clone(),
            _ => "/*".to_owned(),
        };
        let name = match cluster.parse::<mesh_api::xds::ClusterName>() {
            Ok(name) if !name.host.is_empty() => format!("{}:{}{path}", name.host, name.port),
            _ => {
                let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
                format!("{host}:{port}{path}")
            }
        };
        draft.operation = Some(cut(&name, MAX_NAME).to_owned());
    }

    /// Writes this hop's context into the head going upstream: W3C always, and the B3
    /// formats the request came with; outbound, a recorded span's name too.
    pub fn inject(&self, headers: &mut HeaderMap) {
        match self.draft.as_ref().and_then(|d| d.upstream_span) {
            Some(span_id) => {
                let upstream = TraceContext {
                    span_id,
                    parent_span_id: Some(self.context.span_id),
                    ..self.context.clone()
                };
                context::inject(headers, &upstream, self.formats);
            }
            None => context::inject(headers, &self.context, self.formats),
        }
        if self.reporter == Reporter::Source
            && let Some(draft) = &self.draft
            && draft.propagate
            && let Some(value) =
                draft.operation.as_deref().and_then(|o| HeaderValue::from_str(o).ok())
        {
            headers.insert(DECORATOR_OPERATION, value);
        }
    }

    /// The spans of a recorded request (none when it was not recorded), from what its
    /// access-log entry and metrics report hold when it ends, `elapsed` after it started.
    pub fn finish(mut self, ended: &Ended<'_>) -> Vec<SpanRecord> {
        let Some(draft) = self.draft.take() else { return Vec::new() };
        let Draft { start, kind, upstream_span, operation, tags, .. } = *draft;
        let (entry, report) = (ended.entry, ended.report);
        let end = start + ended.elapsed;
        let status = span_status(report.status, report.flags.text().as_str());
        let mut attributes = self.attributes(ended);
        attributes.extend(tags);
        fill_istio_tags(&mut attributes, ended.me);
        let name = operation.unwrap_or_else(|| match self.reporter {
            Reporter::Destination => "ingress".to_owned(),
            Reporter::Source => format!("egress {}", cut(&entry.authority, MAX_NAME)),
        });
        let mut spans = Vec::with_capacity(2);
        if let Some(span_id) = upstream_span {
            let upstream_name = self.config.upstream_operation.clone().unwrap_or_else(|| {
                format!("router {} egress", cut(&entry.upstream_cluster, MAX_NAME))
            });
            let mut upstream = vec![
                ("upstream_cluster".into(), entry.upstream_cluster.clone().into()),
                ("upstream_address".into(), entry.upstream_host.clone().into()),
                ("http.status_code".into(), i64::from(report.status).into()),
            ];
            upstream.retain(|(_, v)| *v != AttributeValue::from(String::new()));
            spans.push(SpanRecord {
                trace_id: self.context.trace_id,
                span_id,
                parent_span_id: Some(self.context.span_id),
                name: upstream_name.into(),
                kind: Kind::Client,
                start,
                end,
                attributes: upstream,
                status: status.clone(),
            });
        }
        spans.insert(
            0,
            SpanRecord {
                trace_id: self.context.trace_id,
                span_id: self.context.span_id,
                parent_span_id: self.context.parent_span_id,
                name: name.into(),
                kind,
                start,
                end,
                attributes,
                status,
            },
        );
        spans
    }

    /// Envoy's tags of a request's span, and the few more people filter on (the route, the
    /// peer's identity, the workload).
    fn attributes(&self, ended: &Ended<'_>) -> Vec<Attribute> {
        let (entry, report) = (ended.entry, ended.report);
        let mut attributes: Vec<Attribute> = Vec::with_capacity(24);
        let mut text = |key: &'static str, value: &str| {
            if !value.is_empty() {
                attributes.push((key.into(), value.to_owned().into()));
            }
        };
        text("node_id", ended.node_id);
        text("guid:x-request-id", &entry.request_id);
        let url = format!("http://{}{}", entry.authority, entry.path);
        text("http.url", cut(&url, self.config.max_path_tag_length));
        text("http.method", &entry.method);
        text("http.protocol", entry.protocol.as_str());
        text("user_agent", cut(&entry.user_agent, MAX_TAG_VALUE));
        text("downstream_cluster", "-");
        let peer =
            entry.downstream.rsplit_once(':').map_or(entry.downstream.as_str(), |(ip, _)| ip);
        text("peer.address", peer.trim_start_matches('[').trim_end_matches(']'));
        text("upstream_cluster", &entry.upstream_cluster);
        text("upstream_cluster.name", &entry.upstream_cluster);
        text("upstream_address", &entry.upstream_host);
        text("route_name", &entry.route);
        text("response_flags", report.flags.text().as_str());
        let principal = match self.reporter {
            Reporter::Destination => &report.source.principal,
            Reporter::Source => &report.destination.principal,
        };
        text("peer.principal", principal);
        text("istio.workload", &ended.me.name);
        if let Some(grpc) = report.grpc_status {
            text("grpc.status_code", grpc);
        }
        let count = |n: u64| AttributeValue::Int(i64::try_from(n).unwrap_or(i64::MAX));
        attributes.push(("request_size".into(), count(entry.bytes_received)));
        attributes.push(("response_size".into(), count(entry.bytes_sent)));
        attributes.push(("http.status_code".into(), i64::from(report.status).into()));
        if report.status == 0 || report.status >= 500 {
            attributes.push(("error".into(), "true".into()));
        }
        attributes
    }
}

/// Istio's tags naming the workload, from this proxy's labels where the connection manager
/// did not set them (a configuration without Istio's custom tags).
fn fill_istio_tags(attributes: &mut Vec<Attribute>, me: &Workload) {
    for (key, value) in [
        ("istio.canonical_service", &me.canonical_service),
        ("istio.canonical_revision", &me.canonical_revision),
        ("istio.namespace", &me.namespace),
    ] {
        if !value.is_empty() && !attributes.iter().any(|(k, _)| k == key) {
            attributes.push((key.into(), value.clone().into()));
        }
    }
}

/// OTLP's status of an HTTP span, as Envoy marks errors: no response or a 5xx.
fn span_status(status: u16, flags: &str) -> SpanStatus {
    match status {
        0 => SpanStatus::Error(Cow::Owned(format!("no response ({flags})"))),
        500.. => SpanStatus::Error(Cow::Owned(format!("{status} ({flags})"))),
        _ => SpanStatus::Unset,
    }
}

/// What is known of a request when it ends.
pub struct Ended<'a> {
    /// Its access-log entry.
    pub entry: &'a Entry,
    /// Its metrics report.
    pub report: &'a Report,
    /// How long it took.
    pub elapsed: Duration,
    /// This proxy's workload.
    pub me: &'a Workload,
    /// This proxy's node id (empty when not known).
    pub node_id: &'a str,
}

#[cfg(test)]
mod tests;
