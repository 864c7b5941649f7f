//! What the connection manager does to a request before routing, as Envoy's does: its path
//! and host normalized as the chain's HCM says (a path that cannot be made canonical, or
//! with escaped slashes the HCM refuses, answered 400; one to unescape and redirect answered
//! 307), then the chain's HTTP RBAC filters in their order (a denial answered 403 `RBAC:
//! access denied`). A request any of them stops never reaches the app.

use std::borrow::Cow;
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method, Request, Uri, header};
use hyper::body::Incoming;

use super::context::RequestContext;
use super::head;
use super::reply::LocalReply;
use crate::authz::{Attributes, PeerCertificate, RequestAttributes};
use crate::filters::HttpOptions;
use crate::path::{Normalized, normalize as normalize_path, strip_trailing_host_dot};

/// What a connection's requests are checked against before routing: the chain's connection
/// manager options, and what RBAC knows of the connection besides its addresses.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// Path and host normalization, how the client address is found, the HTTP RBAC filters.
    pub options: Arc<HttpOptions>,
    /// The TLS server name the client asked for.
    pub server_name: Option<String>,
    /// The peer's verified certificate (mutual TLS), read when the chain has RBAC filters.
    pub certificate: Option<Arc<PeerCertificate>>,
}

/// Normalizes the request's path and host as the chain's connection manager says; what the
/// access log shows follows.
pub(super) fn normalize(
    cx: &mut RequestContext<'_>,
    request: &mut Request<Incoming>,
) -> Result<(), LocalReply> {
    let connection = cx.connection;
    let options = &connection.admission.options;
    if options.path.is_identity() && !options.strip_trailing_host_dot {
        return Ok(());
    }
    let original = head::path(request.uri());
    // CONNECT has no path, and `*` (OPTIONS) is no path to normalize.
    if request.method() != Method::CONNECT && original.starts_with('/') {
        let normalized = normalize_path(&original, &options.path).map_err(|why| {
            tracing::debug!(path = %original, "request refused: {why}");
            LocalReply::PathRejected
        })?;
        match normalized {
            Normalized::Forward(Cow::Borrowed(_)) => {}
            Normalized::Forward(Cow::Owned(path)) => {
                set_path(request, &path)?;
                cx.finish.entry.path = path;
            }
            // gRPC clients do not follow redirects: Envoy refuses theirs.
            Normalized::Redirect(_) if cx.grpc => return Err(LocalReply::PathRejected),
            Normalized::Redirect(location) => {
                return Err(LocalReply::Redirect { status: 307, location });
            }
        }
    }
    if options.strip_trailing_host_dot {
        strip_host_dot(request)?;
        cx.finish.entry.authority = head::authority(request).to_owned();
    }
    Ok(())
}

fn set_path(request: &mut Request<Incoming>, path: &str) -> Result<(), LocalReply> {
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(path).map_err(|_| LocalReply::PathRejected)?);
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| LocalReply::PathRejected)?;
    Ok(())
}

/// `example.com.` routed and authorized as `example.com`, in the URI's authority (HTTP/2,
/// absolute form) and in `Host`.
fn strip_host_dot(request: &mut Request<Incoming>) -> Result<(), LocalReply> {
    let bad = || LocalReply::BadRequest("bad authority".to_owned());
    if let Some(authority) = request.uri().authority()
        && let Cow::Owned(stripped) = strip_trailing_host_dot(authority.as_str())
    {
        let mut parts = request.uri().clone().into_parts();
        parts.authority = Some(Authority::try_from(stripped.as_str()).map_err(|_| bad())?);
        *request.uri_mut() = Uri::from_parts(parts).map_err(|_| bad())?;
    }
    if let Some(host) = request.headers().get(header::HOST).and_then(|v| v.to_str().ok())
        && let Cow::Owned(stripped) = strip_trailing_host_dot(host)
    {
        let value = HeaderValue::from_str(&stripped).map_err(|_| bad())?;
        request.headers_mut().insert(header::HOST, value);
    }
    Ok(())
}

/// Runs the chain's HTTP RBAC filters on the request; a denial is answered 403.
pub(super) fn authorize(
    cx: &RequestContext<'_>,
    request: &Request<Incoming>,
) -> Result<(), LocalReply> {
    let connection = cx.connection;
    let admission = &connection.admission;
    if admission.options.rbac.is_empty() {
        return Ok(());
    }
    let headers = request.headers();
    let path = head::path(request.uri());
    let attributes = Attributes {
        source: connection.downstream,
        destination: connection.destination,
        server_name: admission.server_name.as_deref(),
        certificate: admission.certificate.as_deref(),
        request: Some(RequestAttributes {
            method: request.method().as_str(),
            path: &path,
            authority: head::authority(request),
            scheme: request.uri().scheme_str().unwrap_or("http"),
            headers,
            remote: admission.options.remote_ip(connection.downstream.ip(), headers),
            jwt_payload: cx.jwt_payload.as_ref(),
        }),
    };
    admission.options.rbac.check(&attributes).map_err(|denied| {
        let details = denied.details();
        tracing::debug!(filter = %denied.filter, path = %path, "request denied: {details}");
        LocalReply::Forbidden(details)
    })
}
