//! HTTP through the proxy: each request is routed by the current route table, sent to an
//! endpoint of the chosen cluster over a pooled connection (HTTP/2 between sidecars), and its
//! response streamed back. Bodies are never buffered. Every request, answered by the upstream
//! or by the proxy itself, ends in one access-log line and Istio's request metrics.
//!
//! The route's policy ([`crate::policy`]) applies between routing and sending (`forward`,
//! `send_with_retries`), where the route and the chosen cluster are known: CORS preflights,
//! faults, the cluster's request breaker, mirrors, the route timeout and retries.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use mesh_api::identity::SpiffeId;

use super::{Body, BoxError, Shared, pick, upstream};
use crate::policy::{Abort, Cors, Mirror, Outcome, RETRY_BUFFER_LIMIT, Retry, RoutePolicy};
use crate::routing::{Decision, RequestHead, RouteTable, hash_key};
use crate::runtime::{Count, UpstreamHttp};
use crate::telemetry::{
    Entry, PEER_HEADER, PROTOCOL_HEADER, Protocol, Report, Reporter, RequestProtocol,
    ResponseFlags, Workload,
};

/// The client-certificate header the inbound side sets (and removes when it cannot vouch
/// for it).
const XFCC: &str = "x-forwarded-client-cert";

/// A verified mesh peer.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its SPIFFE id.
    pub identity: SpiffeId,
    /// SHA-256 of its leaf certificate, hex.
    pub cert_hash: String,
}

/// Where a connection's routes come from.
#[derive(Clone)]
pub enum Routes {
    /// An RDS route configuration, looked up per request (so updates apply at once).
    Named(String),
    /// Routes carried inline in the listener (inbound), compiled when the connection opened.
    Inline(Arc<RouteTable>),
}

/// What is known of the downstream connection of a request.
pub struct Connection {
    /// Outbound (source) or inbound (destination).
    pub reporter: Reporter,
    /// The client's address.
    pub downstream: SocketAddr,
    /// Where the client was going.
    pub destination: SocketAddr,
    /// The mTLS peer (inbound), if any.
    pub peer: Option<Peer>,
    /// Routes.
    pub routes: Routes,
}

/// Headers that describe one connection, not the request (RFC 9110 7.6.1), and must not be
/// forwarded; `te: trailers` is kept (gRPC needs it on HTTP/2).
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection", "transfer-encoding", "trailer"] {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

fn is_upgrade(request: &Request<Incoming>) -> bool {
    request.method() == Method::CONNECT
        || (request.version() < Version::HTTP_2 && request.headers().contains_key(header::UPGRADE))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// A random number (not for secrets): request ids and weighted picks.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

fn request_id() -> String {
    let (a, b) = (random(), random());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// What is reported when a request finishes: kept in the response body, reported when the
/// body ends or is dropped (a client that goes away mid-body is still logged).
struct Finish {
    shared: Arc<Shared>,
    reporter: Reporter,
    report: Report,
    entry: Entry,
    started: Instant,
    request_bytes: Arc<AtomicU64>,
    response_bytes: u64,
    /// The caller's `x-envoy-upstream-rq-timeout-ms`.
    timeout_override: Option<Duration>,
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
        self.shared.log.log(&self.entry);
    }
}

/// A response body that counts its bytes, notes a gRPC status in trailers, and reports the
/// request when it ends.
struct Metered<B> {
    inner: B,
    finish: Option<Finish>,
}

impl<B> http_body::Body for Metered<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(finish) = &mut this.finish {
                    if let Some(data) = frame.data_ref() {
                        finish.response_bytes += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref()
                        && let Some(status) = trailers.get("grpc-status")
                    {
                        finish.report.grpc_status = status.to_str().ok().map(str::to_owned);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(finish) = &mut this.finish {
                    finish.report.flags = ResponseFlags::UPSTREAM_PROTOCOL_ERROR;
                }
                this.finish = None;
            }
            Poll::Ready(None) => this.finish = None,
            Poll::Pending => {}
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that counts its bytes.
struct Counted {
    inner: Incoming,
    bytes: Arc<AtomicU64>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// gRPC status for an HTTP status the proxy answers with (as Envoy maps them).
fn grpc_status_of(status: u16) -> &'static str {
    match status {
        400 => "13",
        401 => "16",
        403 => "7",
        404 => "12",
        429 | 502..=504 => "14",
        _ => "2",
    }
}

/// Serves one request of a downstream connection.
pub async fn serve(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let grpc = is_grpc(request.headers());
    let headers = request.headers_mut();
    let peer_metadata = headers.remove(PEER_HEADER);
    let app_protocol = headers.remove(PROTOCOL_HEADER);
    let mut entry = Entry {
        start: if shared.log.enabled() { crate::telemetry::now_rfc3339() } else { String::new() },
        method: request.method().to_string(),
        path: request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        authority: request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| header_str(request.headers(), "host").to_owned()),
        user_agent: header_str(request.headers(), "user-agent").to_owned(),
        downstream: connection.downstream.to_string(),
        ..Entry::default()
    };
    // The protocol the app spoke: across the sidecar-to-sidecar hop it travels in a header.
    let mut protocol = Protocol::of(request.version());
    // Believed only from a verified mesh peer.
    if connection.peer.is_some()
        && let Some(value) = app_protocol.as_ref().and_then(|v| v.to_str().ok())
        && let Some(app) = Protocol::from_header(value)
    {
        protocol = app;
    }
    entry.protocol = protocol;
    let label = if grpc { RequestProtocol::Grpc } else { RequestProtocol::Http };
    let mut report = Report { protocol: label, ..Report::default() };
    match connection.reporter {
        Reporter::Source => report.source = shared.me.clone(),
        Reporter::Destination => {
            report.destination = shared.me.clone();
            report.mutual_tls = connection.peer.is_some();
            if let Some(peer) = &connection.peer {
                let principal = peer.identity.to_string();
                report.source =
                    Arc::new(match peer_metadata.as_ref().and_then(|v| v.to_str().ok()) {
                        Some(value) => Workload::from_header(value, &principal),
                        None => Workload { principal, ..Workload::default() },
                    });
            }
        }
    }
    let request_id = match request.headers().get("x-request-id") {
        Some(id) => id.to_str().unwrap_or_default().to_owned(),
        None => {
            let id = request_id();
            if let Ok(value) = HeaderValue::from_str(&id) {
                request.headers_mut().insert("x-request-id", value);
            }
            id
        }
    };
    entry.request_id = request_id;
    let mut finish = Finish {
        shared: shared.clone(),
        reporter: connection.reporter,
        report,
        entry,
        started,
        request_bytes: Arc::default(),
        response_bytes: 0,
        timeout_override: None,
    };
    match forward(&shared, &connection, request, &mut finish, protocol).await {
        Ok(response) => {
            finish.report.status = response.status().as_u16();
            if let Some(status) = response.headers().get("grpc-status") {
                finish.report.grpc_status = status.to_str().ok().map(str::to_owned);
            }
            let (parts, body) = response.into_parts();
            let body = Metered { inner: body, finish: Some(finish) };
            Ok(Response::from_parts(parts, body.boxed_unsync()))
        }
        Err(local) => Ok(local.respond(finish, grpc)),
    }
}

/// An answer the proxy gives itself.
struct Local {
    status: u16,
    flag: ResponseFlags,
    body: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The gRPC status to answer gRPC requests with (else derived from `status`).
    grpc: Option<u32>,
}

impl Local {
    fn error(status: u16, flag: ResponseFlags, body: impl Into<String>) -> Self {
        Self { status, flag, body: body.into(), headers: Vec::new(), grpc: None }
    }

    fn respond(self, mut finish: Finish, grpc: bool) -> Response<Body> {
        if !self.flag.is_empty() {
            finish.report.flags = self.flag;
        }
        let mut builder = Response::builder();
        let grpc_error = grpc && (self.status >= 400 || self.grpc.is_some());
        if grpc_error {
            // gRPC clients read errors from grpc-status, not the HTTP status.
            let code =
                self.grpc.map_or_else(|| grpc_status_of(self.status).to_owned(), |c| c.to_string());
            finish.report.status = 200;
            finish.report.grpc_status = Some(code.clone());
            builder = builder
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", code)
                .header("grpc-message", self.body.replace(['\r', '\n'], " "));
        } else {
            finish.report.status = self.status;
            builder = builder.status(self.status).header(header::CONTENT_TYPE, "text/plain");
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        let body = if grpc_error { Bytes::new() } else { Bytes::from(self.body) };
        let body = Metered {
            inner: http_body_util::Full::new(body).map_err(|never| match never {}),
            finish: Some(finish),
        };
        builder.body(body.boxed_unsync()).unwrap_or_else(|_| {
            let mut response = Response::new(
                http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync(),
            );
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        })
    }
}

fn header_value(value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(value).ok()
}

/// The CORS headers of an allowed origin's response (preflight adds the `allow-*` ones).
fn cors_headers(
    cors: &Cors,
    origin: &HeaderValue,
    preflight: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())];
    if cors.allow_credentials {
        out.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
    }
    let mut add = |name: HeaderName, value: &str| {
        if let Some(value) = header_value(value).filter(|_| !value.is_empty()) {
            out.push((name, value));
        }
    };
    if preflight {
        add(header::ACCESS_CONTROL_ALLOW_METHODS, &cors.allow_methods);
        add(header::ACCESS_CONTROL_ALLOW_HEADERS, &cors.allow_headers);
        add(header::ACCESS_CONTROL_MAX_AGE, &cors.max_age);
    }
    // On preflights too, as Envoy does.
    add(header::ACCESS_CONTROL_EXPOSE_HEADERS, &cors.expose_headers);
    out
}

/// A request ready to be sent, as many times as retries need: the head, and the body either
/// buffered (replayable) or still streaming (one attempt only).
struct Outgoing {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Option<OutgoingBody>,
}

enum OutgoingBody {
    Buffered(Bytes),
    Streaming(Body),
}

impl Outgoing {
    /// The request for one attempt; `None` once a streaming body has been sent.
    fn attempt(&mut self) -> Option<Request<Body>> {
        let body = match self.body.as_ref()? {
            OutgoingBody::Buffered(bytes) => http_body_util::Full::new(bytes.clone())
                .map_err(|never| match never {})
                .boxed_unsync(),
            OutgoingBody::Streaming(_) => match self.body.take() {
                Some(OutgoingBody::Streaming(body)) => body,
                _ => return None,
            },
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        Some(request)
    }

    fn replayable(&self) -> bool {
        matches!(self.body, Some(OutgoingBody::Buffered(_)))
    }
}

/// Whether a request's body is small enough to keep for retries and mirrors.
fn bufferable(request: &Request<Incoming>) -> bool {
    use http_body::Body as _;
    if request.body().is_end_stream() {
        return true;
    }
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= RETRY_BUFFER_LIMIT)
}

/// Routes a request and sends it upstream; a [`Local`] answer when the proxy answers itself.
async fn forward(
    shared: &Arc<Shared>,
    connection: &Connection,
    mut request: Request<Incoming>,
    finish: &mut Finish,
    protocol: Protocol,
) -> Result<Response<upstream::UpstreamBody>, Local> {
    let runtime = shared.runtime.load_full();
    let table = match &connection.routes {
        Routes::Named(name) => runtime.routes.get(name).cloned().ok_or_else(|| {
            Local::error(
                404,
                ResponseFlags::NO_ROUTE_FOUND,
                format!("route configuration {name:?} has not arrived"),
            )
        })?,
        Routes::Inline(table) => table.clone(),
    };
    let head = RequestHead {
        authority: &finish.entry.authority,
        path: &finish.entry.path,
        method: &finish.entry.method,
        headers: request.headers(),
    };
    let (route, policy, decision) = table
        .decide_route(&head, random())
        .ok_or_else(|| Local::error(404, ResponseFlags::NO_ROUTE_FOUND, "no route matched"))?;
    finish.entry.route = route.name.clone();
    let policy = policy.clone();
    let (cluster, path, authority, set, add, remove) = match decision {
        Decision::Redirect { status, location } => {
            let mut local = Local::error(status, ResponseFlags::NONE, "");
            local.headers.extend(header_value(&location).map(|v| (header::LOCATION, v)));
            return Err(local);
        }
        Decision::Respond { status, body } => {
            return Err(Local::error(status, ResponseFlags::NONE, body));
        }
        Decision::Forward {
            cluster,
            path,
            authority,
            set_headers,
            add_headers,
            remove_headers,
        } => (cluster, path, authority, set_headers, add_headers, remove_headers),
    };
    finish.entry.upstream_cluster = cluster.clone();
    // The destination service: the cluster's, else the authority without its port.
    finish.report.service = super::service_host(&cluster).unwrap_or_else(|| {
        authority.rsplit_once(':').map_or(authority.as_str(), |(h, _)| h).to_owned()
    });

    // CORS: a preflight from an allowed origin is answered here.
    let origin = request.headers().get(header::ORIGIN).cloned();
    let cors = policy
        .cors
        .as_ref()
        .zip(origin.as_ref())
        .filter(|(c, o)| o.to_str().is_ok_and(|o| c.allows(o)));
    if let Some((cors, origin)) = cors
        && request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut local = Local::error(200, ResponseFlags::NONE, "");
        local.headers = cors_headers(cors, origin, true);
        return Err(local);
    }

    // Faults, decided once per request.
    if let Some(fault) = &policy.fault {
        if let Some((delay, fraction)) = fault.delay
            && fraction.hit(random())
        {
            finish.report.flags = ResponseFlags::DELAY_INJECTED;
            tokio::time::sleep(delay).await;
        }
        if let Some((abort, fraction)) = fault.abort
            && fraction.hit(random())
        {
            return Err(match abort {
                Abort::Http(status) => {
                    Local::error(status, ResponseFlags::FAULT_INJECTED, "fault filter abort")
                }
                Abort::Grpc(code) => Local {
                    grpc: Some(code),
                    ..Local::error(200, ResponseFlags::FAULT_INJECTED, "fault filter abort")
                },
            });
        }
    }

    let Some(transport) = runtime.transports.get(&cluster).cloned() else {
        return Err(Local::error(
            503,
            ResponseFlags::NO_CLUSTER_FOUND,
            format!("cluster {cluster:?} is not configured"),
        ));
    };
    // Circuit breaking: too much in flight to this cluster already.
    let in_flight = transport.breakers.hold(Count::Requests);
    if in_flight.is_none() {
        shared.metrics.overflow.inc();
        return Err(Local::error(
            503,
            ResponseFlags::UPSTREAM_OVERFLOW,
            format!("cluster {cluster:?}: too many requests in flight"),
        ));
    }

    let hash = hash_key(route, &head, connection.downstream.ip());
    let upgrade = is_upgrade(&request);
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let replay =
        !upgrade && (policy.retry.is_some() || !policy.mirrors.is_empty()) && bufferable(&request);
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    for name in &remove {
        parts.headers.remove(name.as_str());
    }
    for (name, value) in set.iter().chain(&add) {
        if let (Ok(name), Some(value)) = (HeaderName::try_from(name.as_str()), header_value(value))
        {
            if set.iter().any(|(n, _)| n == name.as_str()) {
                parts.headers.insert(name, value);
            } else {
                parts.headers.append(name, value);
            }
        }
    }
    match (connection.reporter, &connection.peer) {
        (Reporter::Destination, Some(peer)) => {
            let value =
                format!("By={};Hash={};URI={}", shared.identity, peer.cert_hash, peer.identity);
            if let Some(value) = header_value(&value) {
                parts.headers.insert(XFCC, value);
            }
        }
        _ => {
            parts.headers.remove(XFCC);
        }
    }
    parts.headers.remove(header::HOST);
    if let Some(ms) = parts.headers.remove("x-envoy-upstream-rq-timeout-ms") {
        // An override of the route timeout by the caller, as Envoy honours it.
        if let Some(ms) = ms.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
            finish.timeout_override = Some(Duration::from_millis(ms)).filter(|d| !d.is_zero());
        }
    }
    let body = if replay {
        let limited = http_body_util::Limited::new(
            body,
            usize::try_from(RETRY_BUFFER_LIMIT).unwrap_or(usize::MAX),
        );
        match limited.collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                finish.request_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                OutgoingBody::Buffered(bytes)
            }
            Err(e) => {
                return Err(Local::error(
                    400,
                    ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                    format!("request body: {e}"),
                ));
            }
        }
    } else {
        OutgoingBody::Streaming(
            Counted { inner: body, bytes: finish.request_bytes.clone() }
                .map_err(BoxError::from)
                .boxed_unsync(),
        )
    };
    let mut outgoing = Outgoing {
        method: parts.method,
        uri: Uri::default(),
        version: Version::HTTP_11,
        headers: parts.headers,
        body: Some(body),
    };

    // Mirrors: copies of a replayable request, fire and forget, to `<host>-shadow`.
    if outgoing.replayable() {
        for mirror in policy.mirrors.iter().filter(|m| m.fraction.hit(random())) {
            spawn_mirror(shared, &runtime, connection, mirror, &outgoing, &authority, &path);
        }
    }

    let timeout = finish.timeout_override.or(policy.timeout);
    let attempts = send_with_retries(
        shared,
        &runtime,
        connection,
        &cluster,
        &transport,
        &policy,
        hash,
        &mut outgoing,
        &authority,
        &path,
        protocol,
        upgrade,
        finish,
    );
    let (mut response, picked) = match timeout {
        Some(limit) => tokio::time::timeout(limit, attempts).await.map_err(|_| {
            Local::error(504, ResponseFlags::UPSTREAM_REQUEST_TIMEOUT, "upstream request timeout")
        })??,
        None => attempts.await?,
    };
    drop(runtime);

    if let Some(downstream) = downstream_upgrade {
        let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS
            || (finish.entry.method == "CONNECT" && response.status().is_success());
        if switched {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                let _picked = picked;
                match (downstream.await, upstream_upgrade.await) {
                    (Ok(down), Ok(up)) => {
                        let mut down = hyper_util::rt::TokioIo::new(down);
                        let mut up = hyper_util::rt::TokioIo::new(up);
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                    (Err(e), _) | (_, Err(e)) => tracing::debug!("upgrade failed: {e}"),
                }
            });
            return Ok(response);
        }
    }
    let mesh = picked.endpoint.mesh.is_some();
    let keep_upgrade = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    strip_hop_by_hop(headers, keep_upgrade);
    let peer_metadata = headers.remove(PEER_HEADER);
    match connection.reporter {
        Reporter::Source => {
            if mesh && let Some(value) = peer_metadata.as_ref().and_then(|v| v.to_str().ok()) {
                let principal = finish.report.destination.principal.clone();
                finish.report.destination = Arc::new(Workload::from_header(value, &principal));
            }
        }
        Reporter::Destination => {
            if connection.peer.is_some()
                && let Some(value) = shared.me_header.clone()
            {
                headers.insert(PEER_HEADER, value);
            }
        }
    }
    if let Some((cors, origin)) = cors {
        for (name, value) in cors_headers(cors, origin, false) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}

/// Sends `outgoing` to endpoints of `cluster`, retrying as `policy` says while the body is
/// replayable, the retry budget allows and attempts remain. Returns the response to give
/// the client and the endpoint that gave it.
#[allow(clippy::too_many_arguments)]
async fn send_with_retries(
    shared: &Arc<Shared>,
    runtime: &crate::runtime::Runtime,
    connection: &Connection,
    cluster: &str,
    transport: &crate::runtime::Transport,
    policy: &RoutePolicy,
    hash: Option<u64>,
    outgoing: &mut Outgoing,
    authority: &str,
    path: &str,
    protocol: Protocol,
    upgrade: bool,
    finish: &mut Finish,
) -> Result<(Response<upstream::UpstreamBody>, super::Picked), Local> {
    let retry = policy.retry.as_ref();
    let mut tried: Vec<std::net::SocketAddr> = Vec::new();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        // Another host than those tried, when the policy asks (a few draws, then any).
        let mut picked = pick(runtime, cluster, connection.destination, hash)
            .await
            .map_err(|no| Local::error(no.status, no.flag, no.reason))?;
        if retry.is_some_and(|r| r.other_host) {
            for _ in 0..5 {
                if !tried.contains(&picked.endpoint.address) {
                    break;
                }
                picked = pick(runtime, cluster, connection.destination, hash)
                    .await
                    .map_err(|no| Local::error(no.status, no.flag, no.reason))?;
            }
        }
        tried.push(picked.endpoint.address);
        finish.entry.upstream_host = picked.endpoint.address.to_string();
        if let (Reporter::Source, Some(crate::balance::PeerIdentity::Exactly(id))) =
            (connection.reporter, &picked.endpoint.mesh)
        {
            Arc::make_mut(&mut finish.report.destination).principal = id.to_string();
        }
        let Some(mut request) = outgoing.attempt() else {
            return Err(Local::error(
                503,
                ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
                "the request body cannot be sent again",
            ));
        };
        mark_peer(shared, connection, &picked, &mut request, protocol);
        let http2 = !upgrade
            && (picked.endpoint.mesh.is_some()
                || match picked.transport.http {
                    UpstreamHttp::Http2 => true,
                    UpstreamHttp::Http1 => false,
                    UpstreamHttp::Unspecified => {
                        protocol == Protocol::Http2
                            || finish.report.protocol == RequestProtocol::Grpc
                    }
                });
        shape(&mut request, http2, authority, path)?;
        let send = send_once(shared, &picked, request, http2, upgrade);
        let result = match retry.and_then(|r| r.per_try_timeout) {
            Some(limit) => tokio::time::timeout(limit, send).await.unwrap_or_else(|_| {
                Err(upstream::UpstreamError::PerTryTimeout { address: picked.endpoint.address })
            }),
            None => send.await,
        };
        let outcome = match &result {
            Ok(response) => Outcome::Response {
                status: response.status().as_u16(),
                grpc: response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            },
            Err(upstream::UpstreamError::Connect { .. }) => Outcome::ConnectFailure,
            // Envoy retries a per-try timeout as it does a reset.
            Err(
                upstream::UpstreamError::Reset { .. }
                | upstream::UpstreamError::PerTryTimeout { .. },
            ) => Outcome::Reset,
            Err(upstream::UpstreamError::Refused { .. }) => Outcome::Refused,
            Err(e @ upstream::UpstreamError::Overflow { .. }) => {
                // Never retried, and not the endpoint's fault.
                shared.metrics.overflow.inc();
                return Err(Local::error(503, ResponseFlags::UPSTREAM_OVERFLOW, e.to_string()));
            }
        };
        picked.report(outcome);
        let retriable = retry.is_some_and(|r| r.retriable(outcome));
        let attempts_left = retry.is_some_and(|r| attempt <= r.retries);
        let can_retry = retriable && attempts_left && outgoing.replayable();
        let budget = &transport.breakers;
        // A retry holds a slot of the cluster's retry budget until it is sent.
        let retry_slot = if can_retry { budget.hold(Count::Retries) } else { None };
        if can_retry && retry_slot.is_none() {
            shared.metrics.overflow.inc();
        }
        if retry_slot.is_none() {
            // Retries used up on a retriable outcome: Envoy's URX, next to what failed.
            let exhausted = retriable && !attempts_left;
            return match result {
                Ok(response) => {
                    if exhausted {
                        finish.report.flags = ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
                    }
                    Ok((response, picked))
                }
                Err(e) => {
                    tracing::debug!(%cluster, attempt, "upstream failed: {e}");
                    let timed_out = matches!(e, upstream::UpstreamError::PerTryTimeout { .. });
                    let mut flag = e.flag();
                    if exhausted {
                        flag |= ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
                    }
                    let status = if timed_out { 504 } else { 503 };
                    Err(Local::error(
                        status,
                        flag,
                        format!("upstream connect error or disconnect/reset before headers: {e}"),
                    ))
                }
            };
        }
        drop(result);
        drop(picked);
        tokio::time::sleep(Retry::backoff(attempt, random())).await;
        drop(retry_slot);
    }
}

/// Peer metadata and the app's protocol go to mesh endpoints only (another attempt may go
/// to a different endpoint).
fn mark_peer(
    shared: &Shared,
    connection: &Connection,
    picked: &super::Picked,
    request: &mut Request<Body>,
    protocol: Protocol,
) {
    let headers = request.headers_mut();
    if connection.reporter == Reporter::Source && picked.endpoint.mesh.is_some() {
        if let Some(value) = shared.me_header.clone() {
            headers.insert(PEER_HEADER, value);
        }
        headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(protocol.as_str()));
    } else {
        headers.remove(PEER_HEADER);
        headers.remove(PROTOCOL_HEADER);
    }
}

/// The request line for the upstream's HTTP version: `:authority` in the URI for HTTP/2, an
/// origin-form target and `Host` for HTTP/1.1.
fn shape(
    request: &mut Request<Body>,
    http2: bool,
    authority: &str,
    path: &str,
) -> Result<(), Local> {
    if http2 {
        *request.version_mut() = Version::HTTP_2;
        *request.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| {
                Local::error(
                    400,
                    ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                    format!("bad authority or path: {e}"),
                )
            })?;
    } else {
        *request.version_mut() = Version::HTTP_11;
        let target = if request.method() == Method::CONNECT { authority } else { path };
        *request.uri_mut() = Uri::try_from(target).map_err(|e| {
            Local::error(400, ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR, format!("bad path: {e}"))
        })?;
        let host = HeaderValue::from_str(authority).map_err(|e| {
            Local::error(
                400,
                ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                format!("bad authority: {e}"),
            )
        })?;
        request.headers_mut().insert(header::HOST, host);
    }
    Ok(())
}

/// One attempt: a pooled connection, or (for upgrades) a connection of its own.
async fn send_once(
    shared: &Shared,
    picked: &super::Picked,
    request: Request<Body>,
    http2: bool,
    upgrade: bool,
) -> Result<Response<upstream::UpstreamBody>, upstream::UpstreamError> {
    if upgrade {
        let io = upstream::connect(
            &shared.tls,
            &picked.endpoint,
            upstream::ALPN_H1,
            picked.transport.connect_timeout,
        )
        .await?;
        let mut sender =
            upstream::open_h1(io, picked.endpoint.address, std::future::ready(())).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| upstream::failed(picked.endpoint.address, e))?;
        return Ok(response.map(upstream::UpstreamBody::plain));
    }
    shared.pools().send(&picked.endpoint, http2, request, &picked.transport).await
}

/// Sends a copy of a request to a mirror cluster and forgets it (the response is read and
/// dropped). The copy's authority gets `-shadow`, as Envoy marks mirrored traffic.
fn spawn_mirror(
    shared: &Arc<Shared>,
    runtime: &Arc<crate::runtime::Runtime>,
    connection: &Connection,
    mirror: &Mirror,
    outgoing: &Outgoing,
    authority: &str,
    path: &str,
) {
    let Some(OutgoingBody::Buffered(bytes)) = &outgoing.body else { return };
    let mut copy = Request::new(
        http_body_util::Full::new(bytes.clone()).map_err(|never| match never {}).boxed_unsync(),
    );
    *copy.method_mut() = outgoing.method.clone();
    *copy.headers_mut() = outgoing.headers.clone();
    let shadow = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => format!("{host}-shadow:{port}"),
        _ => format!("{authority}-shadow"),
    };
    let (shared, runtime, cluster) = (shared.clone(), runtime.clone(), mirror.cluster.clone());
    let (destination, path) = (connection.destination, path.to_owned());
    tokio::spawn(async move {
        let Ok(picked) = pick(&runtime, &cluster, destination, None).await else { return };
        let http2 = picked.endpoint.mesh.is_some() || picked.transport.http == UpstreamHttp::Http2;
        if shape(&mut copy, http2, &shadow, &path).is_err() {
            return;
        }
        if let Ok(response) =
            shared.pools().send(&picked.endpoint, http2, copy, &picked.transport).await
        {
            let _ = response.into_body().collect().await;
        }
    });
}
