//! Opaque TCP through the proxy: an endpoint of the chain's cluster, mesh mTLS to it when it
//! is in the mesh, bytes copied both ways until either side closes; one access-log line and
//! Istio's TCP metrics per connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::outlier::now_ms;

use super::http::Peer;
use super::{Shared, pick, upstream};
use crate::telemetry::{Entry, Report, Reporter};

/// One downstream connection to be proxied as TCP.
pub struct Flow {
    /// Outbound (source) or inbound (destination).
    pub reporter: Reporter,
    /// The cluster to send it to.
    pub cluster: String,
    /// Where the client was going.
    pub destination: SocketAddr,
    /// The client.
    pub downstream: SocketAddr,
    /// The mTLS peer (inbound), if any.
    pub peer: Option<Peer>,
    /// Closes the connection after this long with no bytes either way (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Its chain's filters, whose `tcp_proxy` access loggers say whether it is logged.
    pub filters: Arc<crate::filters::ChainFilters>,
}

/// Proxies `io` as TCP per `flow` until either side closes.
pub async fn proxy<I>(shared: Arc<Shared>, io: I, flow: Flow)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut entry = Entry {
        start: crate::telemetry::now_rfc3339(),
        protocol: crate::telemetry::Protocol::Tcp,
        upstream_cluster: flow.cluster.clone(),
        downstream: flow.downstream.to_string(),
        ..Entry::default()
    };
    let peer = flow.peer.as_ref().map(|peer| peer.workload(None));
    let runtime = shared.runtime.load_full();
    let named = runtime.transports.get(&flow.cluster).and_then(|t| t.service.as_deref());
    let mut report = Report {
        service: crate::telemetry::destination_service(
            flow.reporter,
            &flow.cluster,
            named,
            &flow.destination.to_string(),
        ),
        ..Report::new(crate::telemetry::RequestProtocol::Tcp, flow.reporter, &shared.me, peer)
    };
    let finish = |entry: &mut Entry, report: &Report, sent: u64, received: u64| {
        entry.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        entry.bytes_sent = sent;
        entry.bytes_received = received;
        entry.flags = report.flags;
        let ended = crate::telemetry::log_filter::Ended {
            duration_ms: entry.duration_ms,
            flags: report.flags,
            ..Default::default()
        };
        shared.log.record(flow.filters.tcp_log.logs(&ended), entry, report, flow.reporter);
    };
    let picked = match pick(&runtime, &flow.cluster, flow.destination, None).await {
        Ok(picked) => picked,
        Err(no) => {
            tracing::debug!(cluster = %flow.cluster, "TCP connection closed: {}", no.reason);
            report.flags = no.flag;
            finish(&mut entry, &report, 0, 0);
            return;
        }
    };
    drop(runtime);
    entry.upstream_host = picked.endpoint.address.to_string();
    if flow.reporter == Reporter::Source {
        report.mutual_tls = picked.endpoint.mesh.is_some();
    }
    // The cluster's connection limit holds for proxied TCP as for pooled HTTP.
    let Some(_open) = picked.transport.breakers.hold(crate::runtime::Count::Connections) else {
        tracing::debug!(cluster = %flow.cluster, "TCP connection refused: too many connections");
        shared.metrics.overflow.inc();
        report.flags = crate::telemetry::ResponseFlags::UPSTREAM_OVERFLOW;
        finish(&mut entry, &report, 0, 0);
        return;
    };
    if let (Reporter::Source, Some(crate::balance::PeerIdentity::Exactly(id))) =
        (flow.reporter, &picked.endpoint.mesh)
    {
        std::sync::Arc::make_mut(&mut report.destination).principal = id.to_string();
    }
    let upstream = match upstream::connect(
        &shared.tls,
        &picked.endpoint,
        upstream::ALPN_TCP,
        picked.transport.connect_timeout,
    )
    .await
    {
        Ok(io) => {
            picked.report(crate::policy::Outcome::Response { status: 200, grpc: None });
            io
        }
        Err(err) => {
            picked.report(crate::policy::Outcome::ConnectFailure);
            tracing::debug!(cluster = %flow.cluster, "TCP upstream failed: {err}");
            report.flags = err.flag();
            finish(&mut entry, &report, 0, 0);
            return;
        }
    };
    shared.metrics.tcp_opened(flow.reporter, &report);
    let last = Arc::new(AtomicU64::new(now_ms()));
    let mut down = Watched::new(io, &last);
    let mut up = Watched::new(upstream, &last);
    let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
    let ended = match flow.idle_timeout {
        None => copy.await.map(drop),
        Some(idle) => tokio::select! {
            ended = copy => ended.map(drop),
            () = quiet_for(&last, idle) => {
                tracing::debug!(cluster = %flow.cluster, ?idle, "TCP connection idle: closed");
                Ok(())
            }
        },
    };
    if let Err(err) = ended {
        tracing::debug!(cluster = %flow.cluster, "TCP connection ended: {err}");
    }
    // Bytes read from each side, whatever ended the connection.
    let (received, sent) = (down.read, up.read);
    shared.metrics.tcp_closed(flow.reporter, &report, sent, received);
    finish(&mut entry, &report, sent, received);
}

/// Returns once nothing has moved (see [`Watched`]) for `idle`.
async fn quiet_for(last: &AtomicU64, idle: Duration) {
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    loop {
        let quiet = now_ms().saturating_sub(last.load(Ordering::Relaxed));
        if quiet >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - quiet)).await;
    }
}

/// One side of a proxied connection: counts the bytes read from it, and notes when bytes
/// last moved either way (shared by both sides, for the idle timeout).
struct Watched<I> {
    inner: I,
    last: Arc<AtomicU64>,
    read: u64,
}

impl<I> Watched<I> {
    fn new(inner: I, last: &Arc<AtomicU64>) -> Self {
        Self { inner, last: last.clone(), read: 0 }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.read += n as u64;
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
