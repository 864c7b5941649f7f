//! Request and response heads as they cross the proxy: what routing reads of the request,
//! hop-by-hop headers, the request id, the client-certificate header (XFCC), the peer
//! metadata and app protocol sidecars exchange, the route's header changes, and the request
//! line for the upstream's HTTP version.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::context::RequestContext;
use super::reply::LocalReply;
use super::{Body, Peer};
use crate::proxy::Picked;
use crate::telemetry::{PEER_HEADER, PROTOCOL_HEADER, Protocol, Reporter, Workload};

/// The client-certificate header the inbound side sets (and removes when it cannot vouch
/// for it).
const XFCC: &str = "x-forwarded-client-cert";
/// The caller's override of the route timeout, as Envoy honours it.
const TIMEOUT_OVERRIDE: &str = "x-envoy-upstream-rq-timeout-ms";
const REQUEST_ID: &str = "x-request-id";

/// Whether a request is gRPC, by its content type.
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A header's value as text; empty when absent or not text.
pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// The request's authority: `:authority` (HTTP/2, absolute form), else `Host`.
pub(super) fn authority<B>(request: &Request<B>) -> &str {
    request.uri().authority().map_or_else(|| header_str(request.headers(), "host"), |a| a.as_str())
}

/// The path with query as the access log shows it (an empty path is `/`); borrowed from the
/// request unless the target lacks its leading `/`.
pub(super) fn path(uri: &Uri) -> Cow<'_, str> {
    match uri.path_and_query() {
        None => Cow::Borrowed(""),
        Some(p) if p.as_str().starts_with(['/', '*']) => Cow::Borrowed(p.as_str()),
        Some(p) => Cow::Owned(p.to_string()),
    }
}

/// The HTTP version the app spoke: the request's own, or across the sidecar-to-sidecar hop
/// the one [`PROTOCOL_HEADER`] names, believed only from a verified mesh peer.
pub(super) fn app_protocol(
    version: Version,
    peer: Option<&Peer>,
    header: Option<&HeaderValue>,
) -> Protocol {
    peer.and(header)
        .and_then(|v| v.to_str().ok())
        .and_then(Protocol::from_header)
        .unwrap_or_else(|| Protocol::of(version))
}

/// The request's `x-request-id`, made (and set on the request) if it had none.
pub(super) fn request_id(headers: &mut HeaderMap) -> String {
    if let Some(id) = headers.get(REQUEST_ID) {
        return id.to_str().unwrap_or_default().to_owned();
    }
    let id = new_request_id(super::random(), super::random());
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    id
}

/// A version 4 UUID from two random numbers.
fn new_request_id(a: u64, b: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// The options a `Connection` header lists (empty elements skipped).
pub(super) fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|option| !option.is_empty())
}

/// Refuses a request whose `Connection` header is not a list of tokens (RFC 9110 7.6.1): a
/// byte outside visible ASCII, or an element with a space or a separator in it, names no
/// header, and the app could read it otherwise than this proxy does (and keep a header this
/// proxy meant to remove).
pub(super) fn check_connection(headers: &HeaderMap) -> Result<(), LocalReply> {
    for value in headers.get_all(header::CONNECTION) {
        let text = value.to_str().map_err(|_| {
            LocalReply::BadRequest("connection header: not visible ASCII".to_owned())
        })?;
        let is_token = |s: &str| {
            s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        if let Some(bad) = text.split(',').map(str::trim).find(|t| !t.is_empty() && !is_token(t)) {
            return Err(LocalReply::BadRequest(format!(
                "connection header: {bad:?} is not a token"
            )));
        }
    }
    Ok(())
}

/// Headers that describe one connection, not the request (RFC 9110 7.6.1), and must not be
/// forwarded; `te: trailers` is kept (gRPC needs it on HTTP/2). An upgrade that goes on
/// (`keep_upgrade`) keeps its `Upgrade` header and `Connection: upgrade`, nothing else the
/// `Connection` header named; `HTTP2-Settings` never goes on (it belongs to an h2c upgrade,
/// which is never tunnelled).
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = connection_options(headers)
        .filter_map(|n| HeaderName::try_from(n).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection", "transfer-encoding", "trailer", "http2-settings"]
    {
        headers.remove(name);
    }
    headers.remove(header::CONNECTION);
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    } else if headers.contains_key(header::UPGRADE) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

/// The header changes a route asks for: removals, then values that replace (`set`), then
/// values that are added.
pub(super) struct HeaderChanges<'a> {
    /// Headers to set, replacing what the request had.
    pub(super) set: &'a [(String, String)],
    /// Headers to add.
    pub(super) add: &'a [(String, String)],
    /// Headers to remove.
    pub(super) remove: &'a [String],
}

/// Shapes the head a routed request goes upstream with: without hop-by-hop headers (but the
/// upgrade ones when `upgrade`), with the route's header changes, with XFCC set by this
/// sidecar only, and without `Host` (the request line sets it per attempt). Returns the
/// caller's override of the route timeout, taken off the head.
pub(super) fn shape_request(
    cx: &RequestContext<'_>,
    headers: &mut HeaderMap,
    upgrade: bool,
    changes: &HeaderChanges<'_>,
) -> Option<Duration> {
    strip_hop_by_hop(headers, upgrade);
    for name in changes.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in changes.set.iter().chain(changes.add) {
        if let (Ok(name), Ok(value)) =
            (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value))
        {
            if changes.set.iter().any(|(n, _)| n == name.as_str()) {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }
    }
    match (cx.connection.reporter, &cx.connection.peer) {
        (Reporter::Destination, Some(peer)) => {
            let value =
                format!("By={};Hash={};URI={}", cx.shared.identity, peer.cert_hash, peer.identity);
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(XFCC, value);
            }
        }
        _ => {
            headers.remove(XFCC);
        }
    }
    headers.remove(header::HOST);
    let ms = headers.remove(TIMEOUT_OVERRIDE)?;
    let ms = ms.to_str().ok().and_then(|v| v.parse::<u64>().ok())?;
    Some(Duration::from_millis(ms)).filter(|d| !d.is_zero())
}

/// Peer metadata and the app's protocol go to mesh endpoints only (another attempt may go
/// to a different endpoint).
pub(super) fn mark_peer(cx: &RequestContext<'_>, picked: &Picked, headers: &mut HeaderMap) {
    if cx.connection.reporter == Reporter::Source && picked.endpoint.mesh.is_some() {
        if let Some(value) = cx.shared.me_header.clone() {
            headers.insert(PEER_HEADER, value);
        }
        headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(cx.protocol.as_str()));
    } else {
        headers.remove(PEER_HEADER);
        headers.remove(PROTOCOL_HEADER);
    }
}

/// The request line for the upstream's HTTP version: `:authority` in the URI for HTTP/2, an
/// origin-form target and `Host` for HTTP/1.1 (authority-form for CONNECT).
pub(super) fn request_line(
    request: &mut Request<Body>,
    http2: bool,
    authority: &str,
    path: &str,
) -> Result<(), LocalReply> {
    if http2 {
        *request.version_mut() = Version::HTTP_2;
        *request.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| LocalReply::BadRequest(format!("bad authority or path: {e}")))?;
    } else {
        *request.version_mut() = Version::HTTP_11;
        let target = if request.method() == Method::CONNECT { authority } else { path };
        *request.uri_mut() =
            Uri::try_from(target).map_err(|e| LocalReply::BadRequest(format!("bad path: {e}")))?;
        let host = HeaderValue::from_str(authority)
            .map_err(|e| LocalReply::BadRequest(format!("bad authority: {e}")))?;
        request.headers_mut().insert(header::HOST, host);
    }
    Ok(())
}

/// Shapes an upstream's response head for the client: without hop-by-hop headers (but the
/// upgrade ones of a 101), and with the peer metadata exchange: outbound, a mesh endpoint's
/// metadata names the destination; inbound, a verified peer gets this workload's.
pub(super) fn shape_response<B>(
    cx: &mut RequestContext<'_>,
    picked: &Picked,
    response: &mut Response<B>,
) {
    let keep_upgrade = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    strip_hop_by_hop(headers, keep_upgrade);
    let peer_metadata = headers.remove(PEER_HEADER);
    match cx.connection.reporter {
        Reporter::Source => {
            if picked.endpoint.mesh.is_some()
                && let Some(value) = peer_metadata.as_ref().and_then(|v| v.to_str().ok())
            {
                let report = &mut cx.finish.report;
                let principal = report.destination.principal.clone();
                report.destination = Arc::new(Workload::from_header(value, &principal));
            }
        }
        Reporter::Destination => {
            if cx.connection.peer.is_some()
                && let Some(value) = cx.shared.me_header.clone()
            {
                headers.insert(PEER_HEADER, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut map, false);
        let mut left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["te", "x-kept"], "te: trailers stays for gRPC");

        let mut map = headers(&[
            ("connection", "Upgrade, x-private"),
            ("x-private", "1"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
        ]);
        strip_hop_by_hop(&mut map, true);
        assert_eq!(map["upgrade"], "websocket", "an upgrade keeps its headers");
        assert_eq!(map["connection"], "upgrade", "and only the upgrade option");
        assert!(!map.contains_key("x-private"), "what Connection named still goes");
        assert!(!map.contains_key("te"), "te other than trailers goes");

        let mut h2c = headers(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ]);
        strip_hop_by_hop(&mut h2c, false);
        assert!(h2c.is_empty(), "an upgrade not tunnelled leaves nothing of itself: {h2c:?}");
        let mut unnamed = headers(&[("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA")]);
        strip_hop_by_hop(&mut unnamed, true);
        assert!(unnamed.is_empty(), "HTTP2-Settings goes even when Connection does not name it");
    }

    #[test]
    fn a_connection_header_must_be_a_list_of_tokens() {
        let valid = headers(&[("connection", "keep-alive, Upgrade,, x-a")]);
        assert!(check_connection(&valid).is_ok());
        assert_eq!(
            connection_options(&valid).collect::<Vec<_>>(),
            ["keep-alive", "Upgrade", "x-a"]
        );
        let bad: [&[u8]; 4] = [b"upgrade, \xc3\xa9", b"keep alive", b"a;b", b"\"quoted\""];
        for bad in bad {
            let mut map = HeaderMap::new();
            map.insert(header::CONNECTION, HeaderValue::from_bytes(bad).unwrap());
            assert!(
                matches!(check_connection(&map), Err(LocalReply::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = new_request_id(u64::MAX, 0);
        assert_eq!(id, "ffffffff-ffff-4fff-8000-000000000000");
        let id = new_request_id(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "version 4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "RFC 4122 variant: {id}");

        let mut map = headers(&[("x-request-id", "given")]);
        assert_eq!(request_id(&mut map), "given", "the caller's id is kept");
        let mut map = HeaderMap::new();
        let made = request_id(&mut map);
        assert_eq!(map["x-request-id"], made.as_str(), "a made id goes upstream too");
    }

    #[test]
    fn the_app_protocol_header_is_believed_from_mesh_peers_only() {
        let peer = Peer {
            identity: "spiffe://cluster.local/ns/demo/sa/client".parse().unwrap(),
            cert_hash: String::new(),
        };
        let h1 = HeaderValue::from_static("HTTP/1.1");
        assert_eq!(app_protocol(Version::HTTP_2, Some(&peer), Some(&h1)), Protocol::Http11);
        assert_eq!(app_protocol(Version::HTTP_2, None, Some(&h1)), Protocol::Http2);
        let odd = HeaderValue::from_static("SPDY/3");
        assert_eq!(app_protocol(Version::HTTP_2, Some(&peer), Some(&odd)), Protocol::Http2);
        assert_eq!(app_protocol(Version::HTTP_10, Some(&peer), None), Protocol::Http10);
    }

    #[test]
    fn paths_read_as_the_access_log_shows_them() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert!(matches!(path(&uri("/a?b=1")), Cow::Borrowed("/a?b=1")));
        assert!(matches!(path(&uri("http://host")), Cow::Borrowed("/")));
        assert_eq!(path(&uri("http://host?q=1")), "/?q=1");
        assert_eq!(path(&uri("host:443")), "", "CONNECT has no path");
        assert_eq!(path(&uri("*")), "*");
    }

    #[test]
    fn the_request_line_follows_the_upstream_version() {
        let request = || {
            let mut request = Request::new(super::super::body::full(bytes::Bytes::new()));
            request.headers_mut().insert("host", HeaderValue::from_static("old"));
            request
        };
        let mut h2 = request();
        request_line(&mut h2, true, "svc:80", "/a?b").unwrap();
        assert_eq!(
            (h2.version(), h2.uri().to_string()),
            (Version::HTTP_2, "http://svc:80/a?b".into())
        );

        let mut h1 = request();
        request_line(&mut h1, false, "svc:80", "/a?b").unwrap();
        assert_eq!((h1.version(), h1.uri().to_string()), (Version::HTTP_11, "/a?b".into()));
        assert_eq!(h1.headers()["host"], "svc:80");

        let mut connect = request();
        *connect.method_mut() = Method::CONNECT;
        request_line(&mut connect, false, "svc:443", "").unwrap();
        assert_eq!(connect.uri().to_string(), "svc:443", "CONNECT names the authority");

        let bad = request_line(&mut request(), false, "svc", "/a b");
        assert!(matches!(bad, Err(LocalReply::BadRequest(ref why)) if why.starts_with("bad path")));
    }
}
