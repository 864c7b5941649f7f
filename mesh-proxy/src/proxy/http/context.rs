//! What one request carries through the stages: the request context (who asked, how, and the
//! record that will be reported), the routed target once routing has decided, and the record
//! itself, reported when the response body ends or is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use http::Request;
use hyper::body::Incoming;

use super::{Connection, head};
use crate::filters::HttpOptions;
use crate::policy::RoutePolicy;
use crate::proxy::Shared;
use crate::routing::RequestHead;
use crate::runtime::{Runtime, Transport};
use crate::telemetry::log_filter;
use crate::telemetry::{
    Entry, PEER_HEADER, PROTOCOL_HEADER, Protocol, Report, Reporter, RequestProtocol,
};
use crate::trace::RequestTrace;
use crate::trace::request;

/// One request on its way through the stages, in place of long argument lists. Borrows what
/// the connection holds; owns only the record of the request.
pub(super) struct RequestContext<'a> {
    /// What every connection handler shares.
    pub(super) shared: &'a Arc<Shared>,
    /// The downstream connection.
    pub(super) connection: &'a Connection,
    /// The HTTP version the app spoke (on the far side of the sidecar hop, the client app's).
    pub(super) protocol: Protocol,
    /// Whether the request is gRPC: local replies then answer in gRPC's terms.
    pub(super) grpc: bool,
    /// What will be reported when the request ends.
    pub(super) finish: Finish,
    /// The payload of the token jwt_authn verified (the dynamic metadata `payload` it sets),
    /// for RBAC's `requestPrincipals` and `request.auth.claims`; `None` without one.
    pub(super) jwt_payload: Option<serde_json::Value>,
}

impl<'a> RequestContext<'a> {
    /// The context of `request`, whose head loses the sidecar-to-sidecar headers (kept here
    /// when believed) and gains an `x-request-id` if it had none.
    pub(super) fn new(
        shared: &'a Arc<Shared>,
        connection: &'a Connection,
        request: &mut Request<Incoming>,
    ) -> Self {
        let started = Instant::now();
        let grpc = head::is_grpc(request.headers());
        let headers = request.headers_mut();
        let peer_metadata = headers.remove(PEER_HEADER);
        let app_protocol = headers.remove(PROTOCOL_HEADER);
        let protocol =
            head::app_protocol(request.version(), connection.peer.as_ref(), app_protocol.as_ref());
        let mut entry = Entry {
            start: if shared.log.enabled() {
                crate::telemetry::now_rfc3339()
            } else {
                String::new()
            },
            method: request.method().to_string(),
            path: head::path(request.uri()).into_owned(),
            authority: head::authority(request).to_owned(),
            user_agent: head::header_str(request.headers(), "user-agent").to_owned(),
            downstream: connection.downstream.to_string(),
            protocol,
            ..Entry::default()
        };
        let label = if grpc { RequestProtocol::Grpc } else { RequestProtocol::Http };
        let metadata = peer_metadata.as_ref().and_then(|v| v.to_str().ok());
        let peer = connection.peer.as_ref().map(|peer| peer.workload(metadata));
        let report = Report::new(label, connection.reporter, &shared.me, peer);
        entry.request_id = head::request_id(request.headers_mut());
        let options = connection.admission.options.clone();
        let trace = options.trace.as_ref().map(|config| {
            RequestTrace::start(config, request.headers_mut(), connection.reporter, SystemTime::now)
        });
        if let Some(trace) = trace.as_ref().filter(|t| t.sampled()) {
            entry.trace_id = trace.trace_id();
        }
        let log_headers = if options.access_log.is_configured() {
            let path = head::path(request.uri());
            let head = RequestHead {
                authority: head::authority(request),
                path: &path,
                method: request.method().as_str(),
                headers: request.headers(),
            };
            options.access_log.header_bits(&head)
        } else {
            0
        };
        let finish = Finish {
            shared: shared.clone(),
            reporter: connection.reporter,
            report,
            entry,
            started,
            request_bytes: Arc::default(),
            response_bytes: 0,
            options,
            trace,
            log_headers,
        };
        Self { shared, connection, protocol, grpc, finish, jwt_payload: None }
    }
}

/// Where a routed request goes and under which policy: fixed once routing has decided, and
/// borrowed from what [`super::forward`] holds for the request's lifetime.
pub(super) struct Target<'a> {
    /// The configuration the request was routed by (its clusters and endpoints).
    pub(super) runtime: &'a Arc<Runtime>,
    /// The upstream cluster.
    pub(super) cluster: &'a str,
    /// The authority, after the route's rewrites.
    pub(super) authority: &'a str,
    /// The path with query, after the route's rewrites.
    pub(super) path: &'a str,
    /// The route's timeout, retries, faults, mirrors and CORS.
    pub(super) policy: &'a RoutePolicy,
    /// How the cluster is reached: its connection settings and circuit breakers.
    pub(super) transport: &'a Transport,
    /// The request's hash for consistent-hash balancing, if the route has a hash policy.
    pub(super) hash: Option<u64>,
    /// Whether the request asks for an upgrade (WebSocket) or is a CONNECT.
    pub(super) upgrade: bool,
}

/// What is reported when a request finishes: kept in the response body, reported when the
/// body ends or is dropped (a client that goes away mid-body is still logged and its span
/// still ends).
pub(super) struct Finish {
    shared: Arc<Shared>,
    reporter: Reporter,
    /// The metrics' view of the request.
    pub(super) report: Report,
    /// The access log's view of the request.
    pub(super) entry: Entry,
    started: Instant,
    /// Request body bytes, counted as the body goes upstream.
    pub(super) request_bytes: Arc<AtomicU64>,
    /// Response body bytes, counted as the body goes downstream.
    pub(super) response_bytes: u64,
    /// The connection manager's options: its access loggers' filters.
    options: Arc<HttpOptions>,
    /// The request's trace, when the connection manager traces.
    pub(super) trace: Option<RequestTrace>,
    /// The results of the access log filters' header tests, taken when the request arrived.
    log_headers: u64,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        self.entry.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.entry.bytes_received = self.request_bytes.load(Ordering::Relaxed);
        self.entry.bytes_sent = self.response_bytes;
        self.entry.status = self.report.status;
        self.entry.flags = self.report.flags;
        self.shared.metrics.request(
            self.reporter,
            &self.report,
            elapsed.as_secs_f64() * 1000.0,
            self.entry.bytes_received,
            self.response_bytes,
        );
        let traced = self.trace.as_ref().is_some_and(RequestTrace::sampled);
        if let Some(trace) = self.trace.take().filter(RequestTrace::sampled) {
            let ended = request::Ended {
                entry: &self.entry,
                report: &self.report,
                elapsed,
                me: &self.shared.me,
                node_id: self.shared.spans.node_id(),
            };
            let export = trace.export().clone();
            self.shared.spans.send(&export, trace.finish(&ended));
        }
        let logged = self.options.access_log.logs(&log_filter::Ended {
            status: self.report.status,
            duration_ms: self.entry.duration_ms,
            flags: self.report.flags,
            grpc_status: self.report.grpc_status,
            traced,
            header_bits: self.log_headers,
        });
        self.shared.log.record(logged, &self.entry, &self.report, self.reporter);
    }
}
