//! Network RBAC where connections are accepted: a chain's network RBAC filters decide on a
//! connection once its TLS is settled (the peer's certificate known) and before anything is
//! connected upstream, so a denied connection is closed before a byte reaches the app, as
//! Envoy's `envoy.filters.network.rbac` ahead of `tcp_proxy` does. What a connection tells its
//! requests' HTTP RBAC of itself is gathered here too.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Shared;
use super::http::Admission;
use crate::authz::{Attributes, PeerCertificate};
use crate::filters::ChainFilters;
use crate::telemetry::{Entry, Report, Reporter};

/// Who a connection is between, as RBAC reads it.
pub(super) struct Peers<'a> {
    /// Outbound (source) or inbound and gateway (destination, source).
    pub(super) reporter: Reporter,
    /// The client.
    pub(super) downstream: SocketAddr,
    /// Where it was going.
    pub(super) destination: SocketAddr,
    /// The TLS server name it asked for.
    pub(super) server_name: Option<&'a str>,
}

/// The verified peer certificate of a TLS session, when the chain's RBAC filters may read it.
pub(super) fn certificate(
    filters: &ChainFilters,
    session: &rustls::ServerConnection,
) -> Option<Arc<PeerCertificate>> {
    if !filters.authorizes() {
        return None;
    }
    let leaf = session.peer_certificates()?.first()?;
    PeerCertificate::parse(leaf.as_ref()).map(Arc::new)
}

/// Runs the chain's network RBAC filters on the connection. Allowed: what its requests are
/// checked against. Denied: `None`, logged with Envoy's termination details (the connection
/// is to be closed).
pub(super) fn admit(
    shared: &Shared,
    filters: &ChainFilters,
    peers: &Peers<'_>,
    certificate: Option<Arc<PeerCertificate>>,
) -> Option<Admission> {
    if !filters.network.is_empty() {
        let attributes = Attributes {
            source: peers.downstream,
            destination: peers.destination,
            server_name: peers.server_name,
            certificate: certificate.as_deref(),
            request: None,
        };
        if let Err(denied) = filters.network.check(&attributes) {
            let details = denied.details();
            let (downstream, filter) = (peers.downstream, &denied.filter);
            tracing::debug!(%downstream, %filter, "connection closed: {details}");
            let entry = Entry {
                start: crate::telemetry::now_rfc3339(),
                protocol: crate::telemetry::Protocol::Tcp,
                downstream: peers.downstream.to_string(),
                details,
                ..Entry::default()
            };
            let report =
                Report { protocol: crate::telemetry::RequestProtocol::Tcp, ..Report::default() };
            // As Envoy's tcp_proxy logs the connection RBAC closed; an HTTP chain's
            // connection manager logs requests, and there were none.
            let logged = filters.tcp_log.logs(&crate::telemetry::log_filter::Ended::default());
            shared.log.record(logged, &entry, &report, peers.reporter);
            shared.metrics.tcp_closed(peers.reporter, &report, 0, 0);
            return None;
        }
    }
    Some(Admission {
        options: filters.http.clone(),
        // Read per request by HTTP RBAC only: not copied for chains without.
        server_name: peers.server_name.filter(|_| !filters.http.rbac.is_empty()).map(str::to_owned),
        certificate,
    })
}
