//! Upgrades (WebSocket) and CONNECT: the request goes over an HTTP/1.1 connection of its own,
//! and once the upstream switches protocols (or accepts the CONNECT) the two connections are
//! spliced, bytes copied both ways until either side closes. Only the upgrades the connection
//! manager enables are tunnelled; any other goes on as a plain request, without its upgrade
//! headers, so the app never switches to a protocol the proxy cannot see into.

use http::header;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;

use super::{Body, head};
use crate::listener::Upgrades;
use crate::proxy::Picked;
use crate::proxy::Shared;
use crate::proxy::upstream::{self, UpstreamBody, UpstreamError};

/// Whether a request leaves HTTP through the proxy: a CONNECT, or an HTTP/1 upgrade
/// (`Connection: upgrade` and one `Upgrade` header) to a protocol `upgrades` enables.
pub(super) fn requested<B>(request: &Request<B>, upgrades: &Upgrades) -> bool {
    if request.method() == Method::CONNECT {
        return true;
    }
    if request.version() >= Version::HTTP_2 {
        return false;
    }
    let headers = request.headers();
    let mut protocols = headers.get_all(header::UPGRADE).iter();
    let (Some(protocol), None) = (protocols.next(), protocols.next()) else { return false };
    head::connection_options(headers).any(|o| o.eq_ignore_ascii_case("upgrade"))
        && protocol.to_str().is_ok_and(|p| upgrades.allows(p))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::builder().method(method).version(version);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    }

    #[test]
    fn only_enabled_upgrades_and_connect_leave_http() {
        let ws = Upgrades::websocket();
        let get = |headers: &[(&str, &str)]| request(Method::GET, Version::HTTP_11, headers);
        let websocket = [("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")];
        assert!(requested(&get(&websocket), &ws));
        assert!(!requested(&get(&websocket), &Upgrades::default()), "not enabled");
        let h2c = [("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")];
        assert!(!requested(&get(&h2c), &Upgrades::from_types(["websocket", "h2c"])));
        assert!(!requested(&get(&[("upgrade", "websocket")]), &ws), "Connection must name it");
        let two = get(&[("connection", "upgrade"), ("upgrade", "websocket"), ("upgrade", "h2c")]);
        assert!(!requested(&two, &ws), "one protocol only");
        let h2 = request(Method::GET, Version::HTTP_2, &websocket);
        assert!(!requested(&h2, &ws), "HTTP/2 has no Upgrade");
        let connect = request(Method::CONNECT, Version::HTTP_11, &[]);
        assert!(requested(&connect, &Upgrades::default()), "CONNECT as before");
    }
}
