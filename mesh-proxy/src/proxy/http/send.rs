//! Sending a routed request upstream: for each attempt an endpoint (another one when the
//! retry policy asks), the peer headers and request line for it, one exchange within the
//! per-try timeout, and what [`super::retry`] says to do next. The loop holds the cluster's
//! retry budget while it waits to retry.

use std::sync::Arc;

use http::{Request, Response};

use super::body::Outgoing;
use super::context::{RequestContext, Target};
use super::head;
use super::reply::LocalReply;
use super::retry::{Next, Retries};
use super::{Body, upgrade};
use crate::balance::PeerIdentity;
use crate::policy::Outcome;
use crate::proxy::upstream::{UpstreamBody, UpstreamError};
use crate::proxy::{Picked, Shared, pick};
use crate::runtime::{Count, UpstreamHttp};
use crate::telemetry::{Protocol, Reporter, ResponseFlags};

/// Sends `outgoing` to endpoints of the target's cluster, retrying as its policy says while
/// the body is replayable, the retry budget allows and attempts remain. Returns the
/// response to give the client and the endpoint that gave it.
pub(super) async fn send(
    cx: &mut RequestContext<'_>,
    target: &Target<'_>,
    outgoing: &mut Outgoing,
) -> Result<(Response<UpstreamBody>, Picked), LocalReply> {
    let mut retries = Retries::new(target.policy.retry.as_ref(), super::random);
    loop {
        let picked = choose(cx, target, &retries).await?;
        retries.start(picked.endpoint.address);
        cx.finish.entry.upstream_host = picked.endpoint.address.to_string();
        if cx.connection.reporter == Reporter::Source {
            cx.finish.report.mutual_tls = picked.endpoint.mesh.is_some();
        }
        if let (Reporter::Source, Some(PeerIdentity::Exactly(id))) =
            (cx.connection.reporter, &picked.endpoint.mesh)
        {
            Arc::make_mut(&mut cx.finish.report.destination).principal = id.to_string();
        }
        let Some(mut request) = outgoing.attempt() else {
            return Err(LocalReply::NotReplayable);
        };
        head::mark_peer(cx, &picked, request.headers_mut());
        let http2 = upstream_http2(cx, target, &picked);
        head::request_line(&mut request, http2, target.authority, target.path)?;
        let exchange = exchange(cx.shared, &picked, request, http2, target.upgrade);
        let result = match retries.per_try_timeout() {
            Some(limit) => tokio::time::timeout(limit, exchange).await.unwrap_or_else(|_| {
                Err(UpstreamError::PerTryTimeout { address: picked.endpoint.address })
            }),
            None => exchange.await,
        };
        let outcome = match result {
            Ok(ref response) => Outcome::Response {
                status: response.status().as_u16(),
                grpc: response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            },
            Err(UpstreamError::Connect { .. }) => Outcome::ConnectFailure,
            // Envoy retries a per-try timeout as it does a reset.
            Err(UpstreamError::Reset { .. } | UpstreamError::PerTryTimeout { .. }) => {
                Outcome::Reset
            }
            Err(UpstreamError::Refused { .. }) => Outcome::Refused,
            Err(error @ UpstreamError::Overflow { .. }) => {
                // Never retried, and not the endpoint's fault.
                cx.shared.metrics.overflow.inc();
                return Err(LocalReply::TooManyPending(error));
            }
        };
        picked.report(outcome);
        let retries_exhausted = match retries.on_outcome(outcome, outgoing.replayable()) {
            // A retry holds a slot of the cluster's retry budget until it is sent.
            Next::Retry { after } => match target.transport.breakers.hold(Count::Retries) {
                Some(slot) => {
                    drop(result);
                    drop(picked);
                    tokio::time::sleep(after).await;
                    drop(slot);
                    continue;
                }
                None => {
                    cx.shared.metrics.overflow.inc();
                    false
                }
            },
            Next::Done { retries_exhausted } => retries_exhausted,
        };
        return match result {
            Ok(response) => {
                if retries_exhausted {
                    cx.finish.report.flags = ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
                }
                Ok((response, picked))
            }
            Err(error) => {
                let (cluster, attempt) = (target.cluster, retries.attempts());
                tracing::debug!(%cluster, attempt, "upstream failed: {error}");
                Err(LocalReply::UpstreamFailed { error, retries_exhausted })
            }
        };
    }
}

/// An endpoint for the next attempt: another than those tried when the policy asks (a few
/// draws, then any).
async fn choose(
    cx: &RequestContext<'_>,
    target: &Target<'_>,
    retries: &Retries<'_>,
) -> Result<Picked, LocalReply> {
    let destination = cx.connection.destination;
    let draw = || pick(target.runtime, target.cluster, destination, target.hash);
    let mut picked = draw().await.map_err(LocalReply::NoEndpoint)?;
    for _ in 0..5 {
        if !retries.avoids(picked.endpoint.address) {
            break;
        }
        picked = draw().await.map_err(LocalReply::NoEndpoint)?;
    }
    Ok(picked)
}

/// Whether the attempt goes over HTTP/2: always to a mesh endpoint (one multiplexed
/// connection between sidecars), never for an upgrade, else as the cluster says or, when
/// it does not, as the app spoke.
fn upstream_http2(cx: &RequestContext<'_>, target: &Target<'_>, picked: &Picked) -> bool {
    !target.upgrade
        && (picked.endpoint.mesh.is_some()
            || match picked.transport.http {
                UpstreamHttp::Http2 => true,
                UpstreamHttp::Http1 => false,
                UpstreamHttp::Unspecified => cx.protocol == Protocol::Http2 || cx.grpc,
            })
}

/// One request and its response head: over a pooled connection, or (for upgrades) over a
/// connection of its own.
async fn exchange(
    shared: &Shared,
    picked: &Picked,
    request: Request<Body>,
    http2: bool,
    upgrade: bool,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    if upgrade {
        return upgrade::exchange(shared, picked, request).await;
    }
    shared.pools().send(&picked.endpoint, http2, request, &picked.transport).await
}
