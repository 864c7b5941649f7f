//! Upgrades (WebSocket) and CONNECT: the request goes over an HTTP/1.1 connection of its own,
//! and once the upstream switches protocols (or accepts the CONNECT) the two connections are
//! spliced, bytes copied both ways until either side closes.

use http::header;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::Body;
use crate::proxy::Picked;
use crate::proxy::Shared;
use crate::proxy::upstream::{self, UpstreamBody, UpstreamError};

/// Whether a request asks to leave HTTP: a CONNECT, or an HTTP/1 `Upgrade`.
pub(super) fn requested(request: &Request<Incoming>) -> bool {
    request.method() == Method::CONNECT
        || (request.version() < Version::HTTP_2 && request.headers().contains_key(header::UPGRADE))
}

/// Sends an upgrade request over a connection of its own (it will not go back to a pool).
pub(super) async fn exchange(
    shared: &Shared,
    picked: &Picked,
    request: Request<Body>,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let io = upstream::connect(
        &shared.tls,
        &picked.endpoint,
        upstream::ALPN_H1,
        picked.transport.connect_timeout,
    )
    .await?;
    let mut sender = upstream::open_h1(io, picked.endpoint.address, std::future::ready(())).await?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| upstream::failed(picked.endpoint.address, e))?;
    Ok(response.map(UpstreamBody::plain))
}

/// Whether the upstream left HTTP: `101 Switching Protocols`, or a success to a CONNECT.
pub(super) fn switched(response: &Response<UpstreamBody>, connect: bool) -> bool {
    response.status() == StatusCode::SWITCHING_PROTOCOLS
        || (connect && response.status().is_success())
}

/// Splices the client's connection to the upstream's once both have left HTTP (after the
/// response head reaches the client); the endpoint stays counted as busy until then.
pub(super) fn splice(downstream: OnUpgrade, response: &mut Response<UpstreamBody>, picked: Picked) {
    let upstream = hyper::upgrade::on(response);
    tokio::spawn(async move {
        let _picked = picked;
        match (downstream.await, upstream.await) {
            (Ok(down), Ok(up)) => {
                let mut down = hyper_util::rt::TokioIo::new(down);
                let mut up = hyper_util::rt::TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            }
            (Err(e), _) | (_, Err(e)) => tracing::debug!("upgrade failed: {e}"),
        }
    });
}
