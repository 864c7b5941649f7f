//! HTTP through the proxy: each request is routed by the current route table, sent to an
//! endpoint of the chosen cluster over a pooled connection (HTTP/2 between sidecars), and its
//! response streamed back. Bodies are never buffered, but for the small ones kept for
//! retries and mirrors. Every request, answered by the upstream or by the proxy itself, ends
//! in one access-log line and Istio's request metrics.
//!
//! A request goes through the stages of `forward` in order: path normalization,
//! authentication (`authn`: the chain's jwt_authn filter) and authorization (`admit`: the
//! chain's HCM options and RBAC filters), routing, CORS preflights, faults, the cluster's
//! request breaker, the outgoing head (`head`) and body (`body`), mirrors, tracing, then the
//! attempts of `send` (driven by the pure decisions of `retry`) under the route timeout, and
//! the response head back, or an `upgrade`. What a request carries through them is its
//! `context`; what the proxy answers itself is a `reply::LocalReply`.

mod admit;
mod authn;
mod body;
mod context;
mod cors;
mod forward;
mod head;
mod mirror;
mod reply;
mod retry;
mod send;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_api::identity::SpiffeId;

use super::{Body, Shared};
use crate::routing::RouteTable;
use crate::telemetry::{Reporter, Workload};
pub use admit::Admission;
use context::RequestContext;

/// A verified mesh peer.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its SPIFFE id.
    pub identity: SpiffeId,
    /// SHA-256 of its leaf certificate, hex.
    pub cert_hash: String,
}

impl Peer {
    /// The peer as telemetry names it: the identity its certificate proves, and what it says
    /// of itself in [`crate::telemetry::PEER_HEADER`] (`metadata`), if anything.
    pub fn workload(&self, metadata: Option<&str>) -> Workload {
        let principal = self.identity.to_string();
        match metadata {
            Some(value) => Workload::from_header(value, &principal),
            None => Workload { principal, ..Workload::default() },
        }
    }
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
    /// The upgrades its connection manager tunnels (WebSocket as the pilot configures it);
    /// other upgrades go on as plain requests.
    pub upgrades: crate::listener::Upgrades,
    /// What its requests are checked against before routing (path normalization, RBAC).
    pub admission: Admission,
}

/// Serves one request of a downstream connection.
pub async fn serve(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut cx = RequestContext::new(&shared, &connection, &mut request);
    let response = match forward::forward(&mut cx, request).await {
        Ok(response) => body::metered(response, cx.finish),
        Err(reply) => reply.respond(cx.finish, cx.grpc),
    };
    Ok(response)
}

/// A random number (not for secrets): request ids, weighted picks, faults, mirrors, backoff.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}
