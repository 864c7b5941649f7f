//! Opaque TCP through the proxy: an endpoint of the chain's cluster, mesh mTLS to it when it
//! is in the mesh, bytes copied both ways until either side closes; one access-log line and
//! Istio's TCP metrics per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use super::http::Peer;
use super::{Shared, pick, upstream};
use crate::telemetry::{Entry, Report, Reporter, Workload};

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
}

/// Proxies `io` as TCP per `flow` until either side closes.
pub async fn proxy<I>(shared: Arc<Shared>, mut io: I, flow: Flow)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut entry = Entry {
        start: crate::telemetry::now_rfc3339(),
        protocol: "TCP".to_owned(),
        upstream_cluster: flow.cluster.clone(),
        downstream: flow.downstream.to_string(),
        ..Entry::default()
    };
    let mut report = Report {
        protocol: "tcp".to_owned(),
        service: super::service_host(&flow.cluster).unwrap_or_else(|| flow.destination.to_string()),
        ..Report::default()
    };
    match flow.reporter {
        Reporter::Source => report.source = shared.me.clone(),
        Reporter::Destination => {
            report.destination = shared.me.clone();
            report.mutual_tls = flow.peer.is_some();
            if let Some(peer) = &flow.peer {
                report.source = std::sync::Arc::new(Workload {
                    principal: peer.identity.to_string(),
                    ..Workload::default()
                });
            }
        }
    }
    let finish = |entry: &mut Entry, report: &Report, sent: u64, received: u64| {
        entry.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        entry.bytes_sent = sent;
        entry.bytes_received = received;
        entry.flags = if report.flags.is_empty() { "-".to_owned() } else { report.flags.clone() };
        shared.log.log(entry);
    };
    let runtime = shared.runtime.load_full();
    let picked = match pick(&runtime, &flow.cluster, flow.destination, None).await {
        Ok(picked) => picked,
        Err(no) => {
            tracing::debug!(cluster = %flow.cluster, "TCP connection closed: {}", no.reason);
            report.flags = no.flag.to_owned();
            finish(&mut entry, &report, 0, 0);
            return;
        }
    };
    drop(runtime);
    entry.upstream_host = picked.endpoint.address.to_string();
    // The cluster's connection limit holds for proxied TCP as for pooled HTTP.
    let breakers = &picked.transport.breakers;
    if !crate::runtime::Breakers::take(&breakers.counts.connections, breakers.max_connections) {
        tracing::debug!(cluster = %flow.cluster, "TCP connection refused: too many connections");
        shared.metrics.overflow.inc();
        report.flags = "UO".to_owned();
        finish(&mut entry, &report, 0, 0);
        return;
    }
    let _open = Open(breakers.counts.clone());
    if let (Reporter::Source, Some(crate::balance::PeerIdentity::Exactly(id))) =
        (flow.reporter, &picked.endpoint.mesh)
    {
        std::sync::Arc::make_mut(&mut report.destination).principal = id.to_string();
    }
    let mut upstream = match upstream::connect(
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
            report.flags = err.flag().to_owned();
            finish(&mut entry, &report, 0, 0);
            return;
        }
    };
    shared.metrics.tcp_opened(flow.reporter, &report);
    let (received, sent) = match tokio::io::copy_bidirectional(&mut io, &mut upstream).await {
        Ok(counts) => counts,
        Err(err) => {
            tracing::debug!(cluster = %flow.cluster, "TCP connection ended: {err}");
            (0, 0)
        }
    };
    shared.metrics.tcp_closed(flow.reporter, &report, sent, received);
    finish(&mut entry, &report, sent, received);
}

/// Gives back a cluster connection slot when the proxied connection ends.
struct Open(std::sync::Arc<crate::runtime::InFlightCounts>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
