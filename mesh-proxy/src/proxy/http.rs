//! HTTP through the proxy: each request is routed by the current route table, sent to an
//! endpoint of the chosen cluster over a pooled connection (HTTP/2 between sidecars), and its
//! response streamed back. Bodies are never buffered. Every request, answered by the upstream
//! or by the proxy itself, ends in one access-log line and Istio's request metrics.
//!
//! Timeouts, retries, faults, mirroring and CORS will sit between routing and sending
//! (`forward`), where the route and the chosen cluster are known.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use mesh_api::identity::SpiffeId;

use super::{Body, BoxError, Shared, pick, upstream};
use crate::routing::{Decision, RequestHead, RouteTable, hash_key};
use crate::runtime::UpstreamHttp;
use crate::telemetry::{Entry, PEER_HEADER, PROTOCOL_HEADER, Report, Reporter, Workload};

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

fn status_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
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
}

impl Drop for Finish {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        self.entry.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.entry.bytes_received = self.request_bytes.load(Ordering::Relaxed);
        self.entry.bytes_sent = self.response_bytes;
        self.entry.status = self.report.status;
        self.entry.flags = self.report.flags.clone();
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
                    finish.report.flags = "UPE".to_owned();
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
        start: crate::telemetry::now_rfc3339(),
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
    let mut protocol = status_text(request.version()).to_owned();
    if let (Some(peer), Some(value)) = (&connection.peer, &app_protocol) {
        let _ = peer;
        if let Ok(value) = value.to_str()
            && matches!(value, "HTTP/1.0" | "HTTP/1.1" | "HTTP/2")
        {
            protocol = value.to_owned();
        }
    }
    entry.protocol = protocol.clone();
    let mut report =
        Report { protocol: if grpc { "grpc" } else { "http" }.to_owned(), ..Report::default() };
    match connection.reporter {
        Reporter::Source => report.source = shared.me.clone(),
        Reporter::Destination => {
            report.destination = shared.me.clone();
            report.mutual_tls = connection.peer.is_some();
            if let Some(peer) = &connection.peer {
                let principal = peer.identity.to_string();
                report.source = match peer_metadata.as_ref().and_then(|v| v.to_str().ok()) {
                    Some(value) => Workload::from_header(value, &principal),
                    None => Workload { principal, ..Workload::default() },
                };
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
    flag: &'static str,
    body: String,
    location: Option<String>,
}

impl Local {
    fn error(status: u16, flag: &'static str, body: impl Into<String>) -> Self {
        Self { status, flag, body: body.into(), location: None }
    }

    fn respond(self, mut finish: Finish, grpc: bool) -> Response<Body> {
        finish.report.flags = self.flag.to_owned();
        let mut builder = Response::builder();
        if grpc && self.status >= 400 {
            // gRPC clients read errors from grpc-status, not the HTTP status.
            finish.report.status = 200;
            finish.report.grpc_status = Some(grpc_status_of(self.status).to_owned());
            builder = builder
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", grpc_status_of(self.status))
                .header("grpc-message", self.body.replace(['\r', '\n'], " "));
        } else {
            finish.report.status = self.status;
            builder = builder.status(self.status).header(header::CONTENT_TYPE, "text/plain");
            if let Some(location) = &self.location {
                builder = builder.header(header::LOCATION, location);
            }
        }
        let body = if grpc && self.status >= 400 { Bytes::new() } else { Bytes::from(self.body) };
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

/// Routes a request and sends it upstream; a [`Local`] answer when the proxy answers itself.
async fn forward(
    shared: &Arc<Shared>,
    connection: &Connection,
    mut request: Request<Incoming>,
    finish: &mut Finish,
    protocol: String,
) -> Result<Response<Incoming>, Local> {
    let runtime = shared.runtime.load_full();
    let table = match &connection.routes {
        Routes::Named(name) => runtime.routes.get(name).cloned().ok_or_else(|| {
            Local::error(404, "NR", format!("route configuration {name:?} has not arrived"))
        })?,
        Routes::Inline(table) => table.clone(),
    };
    let head = RequestHead {
        authority: finish.entry.authority.clone(),
        path: finish.entry.path.clone(),
        method: finish.entry.method.clone(),
        headers: request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
    };
    let (route, decision) = table
        .decide_route(&head, random())
        .ok_or_else(|| Local::error(404, "NR", "no route matched"))?;
    finish.entry.route = route.name.clone();
    let (cluster, path, authority, set, add, remove) = match decision {
        Decision::Redirect { status, location } => {
            return Err(Local { status, flag: "", body: String::new(), location: Some(location) });
        }
        Decision::Respond { status, body } => {
            return Err(Local { status, flag: "", body, location: None });
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
    let hash = hash_key(route, &head, connection.downstream.ip());
    let picked = pick(&runtime, &cluster, connection.destination, hash)
        .await
        .map_err(|no| Local::error(no.status, no.flag, no.reason))?;
    drop(runtime);
    finish.entry.upstream_host = picked.endpoint.address.to_string();
    let mesh = picked.endpoint.mesh.clone();
    if let (Reporter::Source, Some(crate::balance::PeerIdentity::Exactly(id))) =
        (connection.reporter, &mesh)
    {
        finish.report.destination.principal = id.to_string();
    }

    let upgrade = is_upgrade(&request);
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let http2 = !upgrade
        && (mesh.is_some()
            || match picked.http {
                UpstreamHttp::Http2 => true,
                UpstreamHttp::Http1 => false,
                UpstreamHttp::Unspecified => {
                    protocol == "HTTP/2" || finish.report.protocol == "grpc"
                }
            });
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    for name in &remove {
        parts.headers.remove(name.as_str());
    }
    for (name, value) in set.iter().chain(&add) {
        if let (Ok(name), Ok(value)) =
            (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value))
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
            if let Ok(value) = HeaderValue::from_str(&value) {
                parts.headers.insert(XFCC, value);
            }
        }
        _ => {
            parts.headers.remove(XFCC);
        }
    }
    if connection.reporter == Reporter::Source && mesh.is_some() {
        if let Ok(value) = HeaderValue::from_str(&shared.me.header()) {
            parts.headers.insert(PEER_HEADER, value);
        }
        if let Ok(value) = HeaderValue::from_str(&protocol) {
            parts.headers.insert(PROTOCOL_HEADER, value);
        }
    }
    parts.headers.remove(header::HOST);
    if http2 {
        parts.version = Version::HTTP_2;
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path.as_str())
            .build()
            .map_err(|e| Local::error(400, "DPE", format!("bad authority or path: {e}")))?;
    } else {
        parts.version = Version::HTTP_11;
        parts.uri = if parts.method == Method::CONNECT {
            Uri::try_from(authority.as_str())
        } else {
            Uri::try_from(path.as_str())
        }
        .map_err(|e| Local::error(400, "DPE", format!("bad path: {e}")))?;
        let host = HeaderValue::from_str(&authority)
            .map_err(|e| Local::error(400, "DPE", format!("bad authority: {e}")))?;
        parts.headers.insert(header::HOST, host);
    }
    let body = Counted { inner: body, bytes: finish.request_bytes.clone() }
        .map_err(BoxError::from)
        .boxed_unsync();
    let upstream_request = Request::from_parts(parts, body);

    let failed = |e: upstream::UpstreamError| {
        tracing::debug!(cluster = %cluster, "upstream failed: {e}");
        Local::error(
            503,
            e.flag(),
            format!("upstream connect error or disconnect/reset before headers: {e}"),
        )
    };
    let mut response = if upgrade {
        // Upgrades keep HTTP/1.1 end to end, on a connection of their own.
        let io = upstream::connect(
            &shared.tls,
            &picked.endpoint,
            upstream::ALPN_H1,
            picked.connect_timeout,
        )
        .await
        .map_err(failed)?;
        let mut sender = upstream::open_h1(io, picked.endpoint.address).await.map_err(failed)?;
        sender.send_request(upstream_request).await.map_err(|e| {
            failed(upstream::UpstreamError::Reset {
                address: picked.endpoint.address,
                reason: e.to_string(),
            })
        })?
    } else {
        shared
            .pools
            .send(&picked.endpoint, http2, upstream_request, picked.connect_timeout)
            .await
            .map_err(failed)?
    };

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
    let keep_upgrade = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    strip_hop_by_hop(headers, keep_upgrade);
    let peer_metadata = headers.remove(PEER_HEADER);
    match connection.reporter {
        Reporter::Source => {
            if mesh.is_some()
                && let Some(value) = peer_metadata.as_ref().and_then(|v| v.to_str().ok())
            {
                let principal = finish.report.destination.principal.clone();
                finish.report.destination = Workload::from_header(value, &principal);
            }
        }
        Reporter::Destination => {
            if connection.peer.is_some()
                && let Ok(value) = HeaderValue::from_str(&shared.me.header())
            {
                headers.insert(PEER_HEADER, value);
            }
        }
    }
    Ok(response)
}
