//! Request mirroring: a copy of a request whose body was kept goes to each mirror cluster its
//! route draws, fire and forget (the response is read and dropped). The copy's authority
//! gets `-shadow`, as Envoy marks mirrored traffic.

use http_body_util::BodyExt as _;

use super::body::Outgoing;
use super::context::{RequestContext, Target};
use super::{head, random};
use crate::policy::Mirror;
use crate::proxy::pick;
use crate::runtime::UpstreamHttp;

/// Sends a copy of `outgoing` to each of the route's mirrors its fraction draws; nothing when
/// the body was streamed (there is nothing left to copy).
pub(super) fn spawn_all(cx: &RequestContext<'_>, target: &Target<'_>, outgoing: &Outgoing) {
    if !outgoing.replayable() {
        return;
    }
    for mirror in target.policy.mirrors.iter().filter(|m| m.fraction.hit(random())) {
        spawn(cx, target, mirror, outgoing);
    }
}

fn spawn(cx: &RequestContext<'_>, target: &Target<'_>, mirror: &Mirror, outgoing: &Outgoing) {
    let Some(mut copy) = outgoing.copy() else { return };
    let shadow = shadow_authority(target.authority);
    let (shared, runtime) = (cx.shared.clone(), target.runtime.clone());
    let (cluster, destination, path) =
        (mirror.cluster.clone(), cx.connection.destination, target.path.to_owned());
    tokio::spawn(async move {
        let Ok(picked) = pick(&runtime, &cluster, destination, None).await else { return };
        let http2 = picked.endpoint.mesh.is_some() || picked.transport.http == UpstreamHttp::Http2;
        if head::request_line(&mut copy, http2, &shadow, &path).is_err() {
            return;
        }
        if let Ok(response) =
            shared.pools().send(&picked.endpoint, http2, copy, &picked.transport).await
        {
            let _ = response.into_body().collect().await;
        }
    });
}

/// `host-shadow`, keeping a port (`host-shadow:port`).
fn shadow_authority(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => format!("{host}-shadow:{port}"),
        _ => format!("{authority}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::shadow_authority;

    #[test]
    fn mirrored_authorities_are_marked_shadow() {
        assert_eq!(shadow_authority("svc.test"), "svc.test-shadow");
        assert_eq!(shadow_authority("svc.test:8080"), "svc.test-shadow:8080");
        assert_eq!(shadow_authority("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(shadow_authority("odd:port"), "odd:port-shadow");
    }
}
