//! Connections to upstreams: TCP (from a chosen source address), mesh mTLS with the
//! endpoint's expected identity, and pools of HTTP connections: one multiplexed HTTP/2
//! connection per peer (what sidecars use between each other), idle HTTP/1.1 connections
//! kept for reuse otherwise.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{Body, MeshTls};
use crate::balance::PeerIdentity;

/// ALPN a sidecar offers another for HTTP/2 (`istio` makes the peer's inbound mTLS chain
/// match, as Istio's sidecars do).
pub const ALPN_H2: &[&[u8]] = &[b"h2", b"istio"];
/// ALPN for HTTP/1.1 (upgrades such as WebSocket stay on HTTP/1.1 end to end).
pub const ALPN_H1: &[&[u8]] = &[b"http/1.1", b"istio"];
/// ALPN for opaque TCP.
pub const ALPN_TCP: &[&[u8]] = &[b"istio-peer-exchange", b"istio"];

/// How long an idle HTTP/1.1 connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle HTTP/1.1 connections kept per upstream.
const MAX_IDLE: usize = 128;

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
}

impl UpstreamError {
    /// Envoy's response flag for it.
    pub fn flag(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "UF",
            UpstreamError::Reset { .. } => "UC",
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
    let Some(identity) = &endpoint.mesh else { return Ok(Io::Plain(tcp)) };
    let store = tls.store.clone();
    let mut config = match identity {
        PeerIdentity::Exactly(id) => {
            mesh_ca::tls::mesh_client_config(store, tls.roots.clone(), vec![id.clone()])
        }
        PeerIdentity::TrustDomain => mesh_ca::tls::mesh_client_config_for_trust_domain(
            store,
            tls.roots.clone(),
            &tls.trust_domain,
        ),
    }
    .map_err(|e| failed(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(endpoint.address.ip().into());
    let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| failed("TLS handshake timed out".into()))?
        .map_err(|e| failed(format!("TLS: {e}")))?;
    Ok(Io::Tls(Box::new(stream)))
}

type H2Slot = Arc<Mutex<Option<http2::SendRequest<Body>>>>;
type Idle = Arc<Mutex<HashMap<Endpoint, Vec<(http1::SendRequest<Body>, Instant)>>>>;

/// Pools of upstream HTTP connections, shared by every downstream connection.
pub struct Pools {
    tls: Arc<MeshTls>,
    h2: Mutex<HashMap<Endpoint, H2Slot>>,
    h1: Idle,
}

impl Pools {
    /// Empty pools; mesh connections use `tls`.
    pub fn new(tls: Arc<MeshTls>) -> Self {
        Self { tls, h2: Mutex::default(), h1: Arc::default() }
    }

    /// Sends `request` to `endpoint` over a pooled connection, HTTP/2 when `http2` (and the
    /// peer agrees by ALPN) else HTTP/1.1. Returns the response head with its streaming body.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        http2: bool,
        request: http::Request<Body>,
        connect_timeout: Duration,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let reset = |e: hyper::Error| UpstreamError::Reset {
            address: endpoint.address,
            reason: e.to_string(),
        };
        if http2 && let Some(mut sender) = self.h2_sender(endpoint, connect_timeout).await? {
            return sender.send_request(request).await.map_err(reset);
        }
        let mut sender = self.h1_sender(endpoint, connect_timeout).await?;
        let response = sender.send_request(request).await.map_err(reset)?;
        // The connection goes back to the pool once the response body has been read.
        let pool = self.h1.clone();
        let key = endpoint.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = pool.lock().await;
                let list = idle.entry(key).or_default();
                if list.len() < MAX_IDLE {
                    list.push((sender, Instant::now()));
                }
            }
        });
        Ok(response)
    }

    /// The shared HTTP/2 connection to `endpoint`, made if needed (one connect at a time per
    /// endpoint, so a burst of requests opens one connection). `None` when the peer declined
    /// HTTP/2 by ALPN.
    async fn h2_sender(
        &self,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<Option<http2::SendRequest<Body>>, UpstreamError> {
        let slot = self.h2.lock().await.entry(endpoint.clone()).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(Some(sender.clone()));
        }
        let io = connect(&self.tls, endpoint, ALPN_H2, timeout).await?;
        if matches!(io, Io::Tls(_)) && io.alpn() != Some(b"h2") {
            return Ok(None);
        }
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .adaptive_window(true)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError::Connect {
                address: endpoint.address,
                reason: format!("HTTP/2 handshake: {e}"),
            })?;
        let address = endpoint.address;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%address, "upstream HTTP/2 connection ended: {err}");
            }
        });
        *slot = Some(sender.clone());
        Ok(Some(sender))
    }

    /// An idle HTTP/1.1 connection to `endpoint`, or a new one.
    async fn h1_sender(
        &self,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<http1::SendRequest<Body>, UpstreamError> {
        {
            let mut idle = self.h1.lock().await;
            if let Some(list) = idle.get_mut(endpoint) {
                while let Some((sender, since)) = list.pop() {
                    if since.elapsed() < IDLE_TIMEOUT && sender.is_ready() {
                        return Ok(sender);
                    }
                }
            }
        }
        let io = connect(&self.tls, endpoint, ALPN_H1, timeout).await?;
        open_h1(io, endpoint.address).await
    }
}

/// An HTTP/1.1 client connection over `io` (with upgrades, for WebSocket and CONNECT).
pub async fn open_h1(
    io: Io,
    address: SocketAddr,
) -> Result<http1::SendRequest<Body>, UpstreamError> {
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| UpstreamError::Connect { address, reason: format!("HTTP/1.1: {e}") })?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(%address, "upstream HTTP/1.1 connection ended: {err}");
        }
    });
    Ok(sender)
}
