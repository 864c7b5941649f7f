//! Connections to upstreams: TCP (from a chosen source address), mesh mTLS with the
//! endpoint's expected identity, and pools of HTTP connections: one multiplexed HTTP/2
//! connection per peer (what sidecars use between each other), idle HTTP/1.1 connections
//! kept for reuse otherwise. The pools hold each cluster's connection-pool settings: its
//! connection limit (requests then wait among a bounded number of pending ones, or overflow
//! with flag `UO`), requests per connection, and idle timeout. Pools are per worker thread
//! (`Shared::pools`), so a connection's driver runs on the thread of the requests using it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Notify};

use super::{Body, MeshTls};
use crate::balance::PeerIdentity;
use crate::outlier::now_ms;
use crate::runtime::{Count, Held, Transport};

/// ALPN a sidecar offers another for HTTP/2 (`istio` makes the peer's inbound mTLS chain
/// match, as Istio's sidecars do).
pub const ALPN_H2: &[&[u8]] = &[b"h2", b"istio"];
/// ALPN for HTTP/1.1 (upgrades such as WebSocket stay on HTTP/1.1 end to end).
pub const ALPN_H1: &[&[u8]] = &[b"http/1.1", b"istio"];
/// ALPN for opaque TCP.
pub const ALPN_TCP: &[&[u8]] = &[b"istio-peer-exchange", b"istio"];

/// Most idle HTTP/1.1 connections kept per upstream.
const MAX_IDLE: usize = 128;
/// How often idle HTTP/1.1 connections are checked against their idle timeout.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A connection to an upstream, plaintext or mesh mTLS.
pub enum Io {
    /// Plaintext.
    Plain(TcpStream),
    /// Mesh mTLS.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Io {
    /// The protocol the peer chose by ALPN, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Io::Plain(_) => None,
            Io::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// One upstream endpoint and how to reach it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub address: SocketAddr,
    /// Source address to connect from.
    pub bind: Option<IpAddr>,
    /// Mesh mTLS and the identity it must prove, or plaintext.
    pub mesh: Option<PeerIdentity>,
    /// The SNI of its TLS, when the cluster names one (none: the address).
    pub server_name: Option<Arc<str>>,
    /// TLS originated to a server outside the mesh (a DestinationRule's SIMPLE or MUTUAL).
    pub origination: Option<Origination>,
}

/// The client configuration of TLS originated to a server outside the mesh. Compared (and
/// hashed, as part of a pool key) by identity: one configuration update makes one.
#[derive(Clone, Debug)]
pub struct Origination(pub Arc<rustls::ClientConfig>);

impl PartialEq for Origination {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Origination {}

impl std::hash::Hash for Origination {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

/// Why an upstream could not be used, with the response flag it maps to.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection (flag `UF`).
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The endpoint.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection failed during the request (flag `UC`).
    #[error("upstream {address} failed: {reason}")]
    Reset {
        /// The endpoint.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The peer refused the stream before processing it (HTTP/2 `REFUSED_STREAM`, flag
    /// `UR`).
    #[error("upstream {address} refused the stream: {reason}")]
    Refused {
        /// The endpoint.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
    /// No response within the route's per-try timeout (flag `UT`).
    #[error("upstream {address} did not answer within the per-try timeout")]
    PerTryTimeout {
        /// The endpoint.
        address: SocketAddr,
    },
    /// A circuit breaker of the cluster was full (flag `UO`).
    #[error("upstream {address} not tried: {reason}")]
    Overflow {
        /// The endpoint.
        address: SocketAddr,
        /// Which limit.
        reason: String,
    },
}

impl UpstreamError {
    /// Envoy's response flag for it.
    pub fn flag(&self) -> crate::telemetry::ResponseFlags {
        use crate::telemetry::ResponseFlags as F;
        match self {
            UpstreamError::Connect { .. } => F::UPSTREAM_CONNECTION_FAILURE,
            UpstreamError::Reset { .. } => F::UPSTREAM_CONNECTION_TERMINATION,
            UpstreamError::Refused { .. } => F::UPSTREAM_REMOTE_RESET,
            UpstreamError::PerTryTimeout { .. } => F::UPSTREAM_REQUEST_TIMEOUT,
            UpstreamError::Overflow { .. } => F::UPSTREAM_OVERFLOW,
        }
    }
}

/// Opens a connection to `endpoint`: TCP, then mesh mTLS offering `alpn` when the endpoint
/// is in the mesh.
pub async fn connect(
    tls: &MeshTls,
    endpoint: &Endpoint,
    alpn: &[&[u8]],
    timeout: Duration,
) -> Result<Io, UpstreamError> {
    let failed = |reason: String| UpstreamError::Connect { address: endpoint.address, reason };
    let tcp = crate::net::connect(endpoint.address, endpoint.bind, timeout)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut config = match (&endpoint.mesh, &endpoint.origination) {
        (Some(identity), _) => {
            let expected = match identity {
                PeerIdentity::Exactly(id) => vec![id.clone()],
                PeerIdentity::OneOf(ids) => ids.to_vec(),
                PeerIdentity::Unknown => {
                    return Err(failed(
                        "a mesh endpoint whose identity is not known: refused rather than taken \
                         for any workload of the trust domain"
                            .into(),
                    ));
                }
            };
            mesh_identity::tls::mesh_client_config(tls.store.clone(), tls.roots.clone(), expected)
                .map_err(|e| failed(e.to_string()))?
        }
        (None, Some(origination)) => origination.0.as_ref().clone(),
        (None, None) => return Ok(Io::Plain(tcp)),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = match endpoint.server_name.as_deref().map(|n| ServerName::try_from(n.to_owned())) {
        Some(Ok(name)) => name,
        _ => ServerName::IpAddress(endpoint.address.ip().into()),
    };
    let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| failed("TLS handshake timed out".into()))?
        .map_err(|e| failed(format!("TLS: {e}")))?;
    Ok(Io::Tls(Box::new(stream)))
}

/// Pools of upstream HTTP connections, shared by every downstream connection, within each
/// cluster's circuit breakers (`max_connections`, `max_pending_requests`) and pool settings
/// (`max_requests_per_connection`, `idle_timeout`).
pub struct Pools {
    tls: Arc<MeshTls>,
    /// HTTP/2 connections by endpoint, read without a lock on the request path.
    h2: ArcSwap<HashMap<Endpoint, Arc<H2Host>>>,
    h2_insert: Mutex<()>,
    h1: H1Pool,
    sweeping: AtomicBool,
}

type H1Pool = Arc<Mutex<HashMap<Endpoint, H1Host>>>;

/// One endpoint's HTTP/1.1 connections.
#[derive(Default)]
struct H1Host {
    idle: Vec<H1Idle>,
    /// Connections open (idle or busy).
    open: u64,
    /// Signalled when a connection turns idle or closes, for requests waiting for one.
    freed: Arc<Notify>,
}

struct H1Idle {
    sender: http1::SendRequest<Body>,
    /// Requests it has carried.
    used: u32,
    /// When it is closed if still idle.
    until: Instant,
}

/// One endpoint's HTTP/2 connection.
#[derive(Default)]
struct H2Host {
    current: ArcSwapOption<H2Conn>,
    /// Held while a connection is being made, so a burst of requests opens one.
    connecting: Mutex<()>,
    /// The peer declined HTTP/2 by ALPN: use HTTP/1.1 without asking again.
    declined: AtomicBool,
}

struct H2Conn {
    sender: http2::SendRequest<Body>,
    /// Streams it has carried.
    used: AtomicU32,
    /// Streams whose response is still being read.
    active: AtomicU64,
    /// When a stream last ended ([`now_ms`]).
    last: AtomicU64,
}

/// A response body from a pooled connection; for HTTP/2 it keeps the connection counted as
/// busy (not idle) until the body is read or dropped.
pub struct UpstreamBody {
    inner: Incoming,
    _stream: Option<StreamLease>,
}

impl UpstreamBody {
    /// A body not tied to a pooled connection.
    pub fn plain(inner: Incoming) -> Self {
        Self { inner, _stream: None }
    }
}

struct StreamLease(Arc<H2Conn>);

impl Drop for StreamLease {
    fn drop(&mut self) {
        self.0.last.store(now_ms(), Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Takes a pending-request slot of the cluster, or says it is full.
fn wait_in_line(transport: &Transport, endpoint: &Endpoint) -> Result<Held, UpstreamError> {
    transport.breakers.hold(Count::Pending).ok_or_else(|| UpstreamError::Overflow {
        address: endpoint.address,
        reason: "too many requests waiting for a connection".to_owned(),
    })
}

/// How a request failed, from hyper's error: a stream the peer refused (HTTP/2
/// `REFUSED_STREAM`, never processed, so safe to retry) or a reset.
pub fn failed(address: SocketAddr, error: hyper::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return UpstreamError::Refused { address, reason: error.to_string() };
        }
        source = e.source();
    }
    UpstreamError::Reset { address, reason: error.to_string() }
}

impl Pools {
    /// Empty pools; mesh connections use `tls`.
    pub fn new(tls: Arc<MeshTls>) -> Self {
        Self {
            tls,
            h2: ArcSwap::default(),
            h2_insert: Mutex::default(),
            h1: Arc::default(),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Sends `request` to `endpoint` of a cluster reached as `transport` says, over a pooled
    /// connection: HTTP/2 when `http2` (and the peer agrees by ALPN) else HTTP/1.1. Returns
    /// the response head with its streaming body.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        http2: bool,
        request: http::Request<Body>,
        transport: &Transport,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        if http2 && let Some(conn) = self.h2_conn(endpoint, transport).await? {
            conn.active.fetch_add(1, Ordering::Relaxed);
            let lease = StreamLease(conn.clone());
            let response = conn
                .sender
                .clone()
                .send_request(request)
                .await
                .map_err(|e| failed(endpoint.address, e))?;
            return Ok(response.map(|inner| UpstreamBody { inner, _stream: Some(lease) }));
        }
        let (mut sender, used) = self.h1_sender(endpoint, transport).await?;
        let response =
            sender.send_request(request).await.map_err(|e| failed(endpoint.address, e))?;
        // The connection goes back to the pool once the response body has been read, unless
        // it has carried all the requests it may.
        let used = used.saturating_add(1);
        if transport.pool.max_requests_per_connection.is_none_or(|max| used < max) {
            let pool = self.h1.clone();
            let key = endpoint.clone();
            let idle_timeout = transport.pool.idle_timeout;
            self.sweep_idle();
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    let mut hosts = pool.lock().await;
                    let host = hosts.entry(key).or_default();
                    if host.idle.len() < MAX_IDLE {
                        let until = Instant::now() + idle_timeout;
                        host.idle.push(H1Idle { sender, used, until });
                        host.freed.notify_one();
                    }
                }
            });
        }
        Ok(response.map(UpstreamBody::plain))
    }

    /// Closes idle HTTP/1.1 connections past their idle timeout, about once a second, from a
    /// task started with the first pooled connection (it ends with the pools).
    fn sweep_idle(&self) {
        if self.sweeping.load(Ordering::Relaxed) || self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(&self.h1);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let now = Instant::now();
                let mut hosts = pool.lock().await;
                for host in hosts.values_mut() {
                    host.idle.retain(|idle| idle.until > now && !idle.sender.is_closed());
                }
                // A host stays while requests wait on it (they hold its `freed`).
                hosts.retain(|_, host| {
                    host.open > 0 || !host.idle.is_empty() || Arc::strong_count(&host.freed) > 1
                });
            }
        });
    }

    /// The HTTP/2 connection to `endpoint`, made if needed (one connect at a time per
    /// endpoint, so a burst of requests opens one connection). A connection that has carried
    /// `max_requests_per_connection` streams is replaced (it closes once its streams end).
    /// `None` when the peer declined HTTP/2 by ALPN.
    async fn h2_conn(
        &self,
        endpoint: &Endpoint,
        transport: &Transport,
    ) -> Result<Option<Arc<H2Conn>>, UpstreamError> {
        let max_streams = transport.pool.max_requests_per_connection;
        let usable = |host: &H2Host| {
            host.current.load_full().filter(|conn| {
                !conn.sender.is_closed()
                    && max_streams.is_none_or(|max| conn.used.fetch_add(1, Ordering::Relaxed) < max)
            })
        };
        let host = self.h2_host(endpoint).await;
        if host.declined.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some(conn) = usable(&host) {
            return Ok(Some(conn));
        }
        let _pending = wait_in_line(transport, endpoint)?;
        let _connecting = host.connecting.lock().await;
        if let Some(conn) = usable(&host) {
            return Ok(Some(conn));
        }
        let breakers = &transport.breakers;
        let slot = match breakers.hold(Count::Connections) {
            Some(slot) => slot,
            // At the cluster's connection limit: a live connection carries on past its
            // request budget rather than fail the request; with none, one is opened (as
            // Envoy lets a host with no connection open one).
            None => match host.current.load_full().filter(|c| !c.sender.is_closed()) {
                Some(conn) => return Ok(Some(conn)),
                None => breakers.hold_anyway(Count::Connections),
            },
        };
        let io = connect(&self.tls, endpoint, ALPN_H2, transport.connect_timeout).await?;
        if matches!(io, Io::Tls(_)) && io.alpn() != Some(b"h2") {
            host.declined.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        let handshake = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .adaptive_window(true)
            .handshake(TokioIo::new(io))
            .await;
        let (sender, connection) = handshake.map_err(|e| UpstreamError::Connect {
            address: endpoint.address,
            reason: format!("HTTP/2 handshake: {e}"),
        })?;
        let address = endpoint.address;
        tokio::spawn(async move {
            // The connection counts against the cluster's limit until it ends.
            let _slot = slot;
            if let Err(err) = connection.await {
                tracing::debug!(%address, "upstream HTTP/2 connection ended: {err}");
            }
        });
        let conn = Arc::new(H2Conn {
            sender,
            used: AtomicU32::new(1),
            active: AtomicU64::new(0),
            last: AtomicU64::new(now_ms()),
        });
        host.current.store(Some(conn.clone()));
        close_when_idle(host.clone(), &conn, transport.pool.idle_timeout);
        Ok(Some(conn))
    }

    async fn h2_host(&self, endpoint: &Endpoint) -> Arc<H2Host> {
        if let Some(host) = self.h2.load().get(endpoint) {
            return host.clone();
        }
        let _insert = self.h2_insert.lock().await;
        if let Some(host) = self.h2.load().get(endpoint) {
            return host.clone();
        }
        let host = Arc::new(H2Host::default());
        let mut hosts = HashMap::clone(&self.h2.load());
        hosts.insert(endpoint.clone(), host.clone());
        self.h2.store(Arc::new(hosts));
        host
    }

    /// An idle HTTP/1.1 connection to `endpoint` (with the requests it has carried), or a
    /// new one. At the cluster's connection limit the request waits for one to free up, if
    /// there is room among the pending requests, and fails with overflow if not.
    async fn h1_sender(
        &self,
        endpoint: &Endpoint,
        transport: &Transport,
    ) -> Result<(http1::SendRequest<Body>, u32), UpstreamError> {
        let breakers = &transport.breakers;
        let mut pending = None;
        let slot = loop {
            let freed = {
                let mut hosts = self.h1.lock().await;
                let host = match hosts.get_mut(endpoint) {
                    Some(host) => host,
                    None => hosts.entry(endpoint.clone()).or_default(),
                };
                let now = Instant::now();
                while let Some(idle) = host.idle.pop() {
                    if idle.until > now && idle.sender.is_ready() {
                        return Ok((idle.sender, idle.used));
                    }
                }
                // A host with no connection may always open one (as in Envoy, so a cluster
                // limit below its host count cannot starve a host).
                let slot = match host.open {
                    0 => Some(breakers.hold_anyway(Count::Connections)),
                    _ => breakers.hold(Count::Connections),
                };
                if let Some(slot) = slot {
                    host.open += 1;
                    break slot;
                }
                if pending.is_none() {
                    pending = Some(wait_in_line(transport, endpoint)?);
                }
                host.freed.clone()
            };
            freed.notified().await;
        };
        drop(pending);
        // Runs when the connection ends: its slot goes back, and a waiting request may open
        // another.
        let closed = {
            let (pool, key) = (self.h1.clone(), endpoint.clone());
            async move {
                drop(slot);
                let mut hosts = pool.lock().await;
                if let Some(host) = hosts.get_mut(&key) {
                    host.open = host.open.saturating_sub(1);
                    host.freed.notify_one();
                }
            }
        };
        let io = match connect(&self.tls, endpoint, ALPN_H1, transport.connect_timeout).await {
            Ok(io) => io,
            Err(e) => {
                closed.await;
                return Err(e);
            }
        };
        Ok((open_h1(io, endpoint.address, closed).await?, 0))
    }
}

/// Drops `conn` from its host once nothing has been in flight on it for `idle_timeout`;
/// the connection then closes (hyper closes a connection whose handles are all gone).
fn close_when_idle(host: Arc<H2Host>, conn: &Arc<H2Conn>, idle_timeout: Duration) {
    let conn = Arc::downgrade(conn);
    let idle_ms = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
    tokio::spawn(async move {
        let mut wait = idle_timeout;
        loop {
            tokio::time::sleep(wait).await;
            let Some(conn) = conn.upgrade() else { return };
            if conn.sender.is_closed() {
                return;
            }
            let quiet = now_ms().saturating_sub(conn.last.load(Ordering::Relaxed));
            if conn.active.load(Ordering::Relaxed) == 0 && quiet >= idle_ms {
                host.current.rcu(|current| match current {
                    Some(c) if Arc::ptr_eq(c, &conn) => None,
                    other => other.clone(),
                });
                tracing::debug!("closing an idle upstream HTTP/2 connection");
                return;
            }
            wait = Duration::from_millis(idle_ms.saturating_sub(quiet).max(10));
        }
    });
}

/// An HTTP/1.1 client connection over `io` (with upgrades, for WebSocket and CONNECT);
/// `closed` runs when the connection has ended (or could not start).
pub async fn open_h1(
    io: Io,
    address: SocketAddr,
    closed: impl Future<Output = ()> + Send + 'static,
) -> Result<http1::SendRequest<Body>, UpstreamError> {
    let (sender, connection) = match http1::Builder::new().handshake(TokioIo::new(io)).await {
        Ok(pair) => pair,
        Err(e) => {
            closed.await;
            return Err(UpstreamError::Connect { address, reason: format!("HTTP/1.1: {e}") });
        }
    };
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(%address, "upstream HTTP/1.1 connection ended: {err}");
        }
        closed.await;
    });
    Ok(sender)
}
