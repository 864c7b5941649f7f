//! What the proxy answers itself instead of an upstream: one typed reply per reason, each
//! with its HTTP status, Envoy response flags and body. A gRPC client gets an error as gRPC
//! reads it, `grpc-status` and `grpc-message` on an HTTP 200, the way linkerd2-proxy's
//! synthetic responses and Envoy's local replies do.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt as _;

use super::body::{self, Metered};
use super::context::Finish;
use crate::policy::Abort;
use crate::proxy::upstream::UpstreamError;
use crate::proxy::{Body, NoEndpoint};
use crate::telemetry::ResponseFlags;

/// An answer the proxy gives itself.
#[derive(Debug)]
pub(super) enum LocalReply {
    /// No route for the request: none matched, or the listener's route configuration has not
    /// arrived (404, `NR`).
    NoRoute(Cow<'static, str>),
    /// The route's cluster is not configured (503, `NC`).
    NoCluster {
        /// The cluster.
        cluster: String,
    },
    /// No endpoint of the cluster could be chosen (503; `NC`, `UH`, or `UF` when the
    /// cluster's TLS cannot be honoured).
    NoEndpoint(NoEndpoint),
    /// The cluster's request breaker is full (503, `UO`).
    TooManyRequests {
        /// The cluster.
        cluster: String,
    },
    /// The cluster's connections are busy and too many requests already wait (503, `UO`).
    TooManyPending(UpstreamError),
    /// The route timeout passed (504, `UT`).
    Timeout,
    /// The last attempt failed before a response (503, 504 after a per-try timeout; the
    /// failure's flag, and `URX` when it was retriable but the retries ran out).
    UpstreamFailed {
        /// How it failed.
        error: UpstreamError,
        /// Whether the failure was retriable but no attempt remained.
        retries_exhausted: bool,
    },
    /// Another attempt is due but the body was streamed and cannot be sent again (503,
    /// `URX`).
    NotReplayable,
    /// The request cannot be forwarded as sent: its body, path or authority (400, `DPE`).
    BadRequest(String),
    /// The fault filter aborted the request (its HTTP status, or its gRPC status on a 200;
    /// `FI`).
    FaultAbort(Abort),
    /// The route answers directly with this status and body (no flag).
    Direct {
        /// Status.
        status: u16,
        /// Body.
        body: String,
    },
    /// The route redirects (no flag, no body).
    Redirect {
        /// Status (301, 302, 303, 307, 308).
        status: u16,
        /// Where to.
        location: String,
    },
    /// A CORS preflight from an allowed origin, answered with these headers (200, no flag).
    Preflight(Vec<(HeaderName, HeaderValue)>),
    /// An RBAC filter denied the request (403 `RBAC: access denied`, no flag); the response
    /// code details, which name the policy.
    Forbidden(String),
    /// The path cannot be made canonical, or has escaped slashes the connection manager
    /// refuses (400, no flag, no body).
    PathRejected,
    /// jwt_authn refused the request's token (401, or 403 for an audience not allowed; the
    /// verifier's status as body and Envoy's `www-authenticate`; no flag).
    Unauthenticated(crate::jwt::Denial),
}

impl LocalReply {
    /// The HTTP status (a gRPC client gets 200 and [`LocalReply::grpc_status`] instead when
    /// there is one).
    pub(super) fn http_status(&self) -> u16 {
        match self {
            Self::NoRoute(_) => 404,
            Self::NoEndpoint(no) => no.status,
            Self::UpstreamFailed { error: UpstreamError::PerTryTimeout { .. }, .. }
            | Self::Timeout => 504,
            Self::NoCluster { .. }
            | Self::TooManyRequests { .. }
            | Self::TooManyPending(_)
            | Self::UpstreamFailed { .. }
            | Self::NotReplayable => 503,
            Self::BadRequest(_) | Self::PathRejected => 400,
            Self::Forbidden(_) => 403,
            Self::Unauthenticated(denial) => denial.http_status().as_u16(),
            Self::FaultAbort(Abort::Http(status)) => *status,
            Self::FaultAbort(Abort::Grpc(_)) | Self::Preflight(_) => 200,
            Self::Direct { status, .. } | Self::Redirect { status, .. } => *status,
        }
    }

    /// The gRPC status a gRPC client gets: the fault's own, else for an error status the one
    /// Envoy maps it to; `None` when the reply is not an error (it goes as HTTP).
    pub(super) fn grpc_status(&self) -> Option<u32> {
        if let Self::FaultAbort(Abort::Grpc(code)) = self {
            return Some(*code);
        }
        let status = self.http_status();
        (status >= 400).then(|| grpc_status_of(status))
    }

    /// Envoy's response flags for the reply.
    pub(super) fn flags(&self) -> ResponseFlags {
        match self {
            Self::NoRoute(_) => ResponseFlags::NO_ROUTE_FOUND,
            Self::NoCluster { .. } => ResponseFlags::NO_CLUSTER_FOUND,
            Self::NoEndpoint(no) => no.flag,
            Self::TooManyRequests { .. } | Self::TooManyPending(_) => {
                ResponseFlags::UPSTREAM_OVERFLOW
            }
            Self::Timeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            Self::UpstreamFailed { error, retries_exhausted: false } => error.flag(),
            Self::UpstreamFailed { error, retries_exhausted: true } => {
                error.flag() | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED
            }
            Self::NotReplayable => ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
            Self::BadRequest(_) => ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            Self::FaultAbort(_) => ResponseFlags::FAULT_INJECTED,
            Self::Direct { .. }
            | Self::Redirect { .. }
            | Self::Preflight(_)
            | Self::Forbidden(_)
            | Self::PathRejected
            | Self::Unauthenticated(_) => ResponseFlags::NONE,
        }
    }

    /// The body text (for gRPC, the `grpc-message`) and the headers the reply adds.
    fn into_parts(self) -> (String, Vec<(HeaderName, HeaderValue)>) {
        let message = match self {
            Self::NoRoute(why) => why.into_owned(),
            Self::NoCluster { cluster } => format!("cluster {cluster:?} is not configured"),
            Self::NoEndpoint(no) => no.reason,
            Self::TooManyRequests { cluster } => {
                format!("cluster {cluster:?}: too many requests in flight")
            }
            Self::TooManyPending(error) => error.to_string(),
            Self::Timeout => "upstream request timeout".to_owned(),
            Self::UpstreamFailed { error, .. } => {
                format!("upstream connect error or disconnect/reset before headers: {error}")
            }
            Self::NotReplayable => "the request body cannot be sent again".to_owned(),
            Self::BadRequest(why) | Self::Direct { body: why, .. } => why,
            Self::FaultAbort(_) => "fault filter abort".to_owned(),
            Self::Forbidden(_) => "RBAC: access denied".to_owned(),
            Self::PathRejected => String::new(),
            Self::Redirect { location, .. } => {
                let location = HeaderValue::from_str(&location).ok();
                return (
                    String::new(),
                    location.map(|v| (header::LOCATION, v)).into_iter().collect(),
                );
            }
            Self::Preflight(headers) => return (String::new(), headers),
            Self::Unauthenticated(denial) => {
                let challenge = denial.www_authenticate.map(|v| (header::WWW_AUTHENTICATE, v));
                return (denial.body, challenge.into_iter().collect());
            }
        };
        (message, Vec::new())
    }

    /// The response, for a gRPC client when `grpc`; the reply's flags (if any) and status go
    /// into `finish`, which the response body reports when it ends.
    pub(super) fn respond(self, mut finish: Finish, grpc: bool) -> Response<Body> {
        let flags = self.flags();
        if !flags.is_empty() {
            finish.report.flags = flags;
        }
        match &self {
            Self::Forbidden(details) => finish.entry.details.clone_from(details),
            Self::PathRejected => finish.entry.details = "path_normalization_failed".to_owned(),
            Self::Unauthenticated(denial) => finish.entry.details = denial.details(),
            _ => {}
        }
        let grpc_status = self.grpc_status().filter(|_| grpc);
        match grpc_status {
            Some(code) => {
                finish.report.status = 200;
                let code = usize::try_from(code).unwrap_or(usize::MAX);
                finish.report.grpc_status = Some(crate::telemetry::grpc_code_label(code));
            }
            None => finish.report.status = self.http_status(),
        }
        match self.render(grpc_status) {
            Ok(response) => response.map(|bytes| {
                let inner = body::full(bytes);
                Metered::new(inner, finish).boxed_unsync()
            }),
            // A header the reply cannot carry (a direct response's body as `grpc-message`):
            // reported as what was meant, answered as a plain 500.
            Err(_) => {
                drop(finish);
                let mut response = Response::new(body::full(Bytes::new()));
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
        }
    }

    /// The response head and body: `grpc_status` set, an error as gRPC reads it (HTTP 200,
    /// `grpc-status`, `grpc-message`, no body), else the HTTP status and a text body.
    fn render(self, grpc_status: Option<u32>) -> Result<Response<Bytes>, http::Error> {
        let status = self.http_status();
        let (message, headers) = self.into_parts();
        let mut builder = match grpc_status {
            Some(code) => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", code)
                .header("grpc-message", message.replace(['\r', '\n'], " ")),
            None => Response::builder().status(status).header(header::CONTENT_TYPE, "text/plain"),
        };
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        builder.body(if grpc_status.is_some() { Bytes::new() } else { Bytes::from(message) })
    }
}

/// The gRPC status of an HTTP error status, as Envoy maps them.
fn grpc_status_of(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream_error(kind: &str) -> UpstreamError {
        let address = ([10, 0, 0, 1], 80).into();
        let reason = "gone".to_owned();
        match kind {
            "connect" => UpstreamError::Connect { address, reason },
            "reset" => UpstreamError::Reset { address, reason },
            "refused" => UpstreamError::Refused { address, reason },
            "per-try" => UpstreamError::PerTryTimeout { address },
            _ => UpstreamError::Overflow { address, reason },
        }
    }

    fn failed(kind: &str, retries_exhausted: bool) -> LocalReply {
        LocalReply::UpstreamFailed { error: upstream_error(kind), retries_exhausted }
    }

    #[test]
    fn replies_map_to_http_and_grpc_statuses_and_flags() {
        let no_endpoint = NoEndpoint {
            status: 503,
            flag: ResponseFlags::NO_HEALTHY_UPSTREAM,
            reason: "none healthy".into(),
        };
        // (reply, HTTP status, gRPC status for a gRPC client, flags)
        let cases = [
            (LocalReply::NoRoute("no route matched".into()), 404, Some(12), "NR"),
            (LocalReply::NoCluster { cluster: "c".into() }, 503, Some(14), "NC"),
            (LocalReply::NoEndpoint(no_endpoint), 503, Some(14), "UH"),
            (LocalReply::TooManyRequests { cluster: "c".into() }, 503, Some(14), "UO"),
            (LocalReply::TooManyPending(upstream_error("overflow")), 503, Some(14), "UO"),
            (LocalReply::Timeout, 504, Some(14), "UT"),
            (failed("connect", false), 503, Some(14), "UF"),
            (failed("connect", true), 503, Some(14), "UF,URX"),
            (failed("reset", true), 503, Some(14), "UC,URX"),
            (failed("refused", false), 503, Some(14), "UR"),
            (failed("per-try", true), 504, Some(14), "UT,URX"),
            (LocalReply::NotReplayable, 503, Some(14), "URX"),
            (LocalReply::BadRequest("bad path".into()), 400, Some(13), "DPE"),
            (LocalReply::FaultAbort(Abort::Http(418)), 418, Some(2), "FI"),
            (LocalReply::FaultAbort(Abort::Http(403)), 403, Some(7), "FI"),
            (LocalReply::FaultAbort(Abort::Grpc(8)), 200, Some(8), "FI"),
            (LocalReply::Direct { status: 401, body: String::new() }, 401, Some(16), "-"),
            (LocalReply::Direct { status: 429, body: String::new() }, 429, Some(14), "-"),
            (LocalReply::Direct { status: 200, body: "hi".into() }, 200, None, "-"),
            (LocalReply::Redirect { status: 301, location: "/x".into() }, 301, None, "-"),
            (LocalReply::Preflight(Vec::new()), 200, None, "-"),
            (
                LocalReply::Forbidden("rbac_access_denied_matched_policy[none]".into()),
                403,
                Some(7),
                "-",
            ),
            (LocalReply::PathRejected, 400, Some(13), "-"),
        ];
        for (reply, http, grpc, flags) in cases {
            let name = format!("{reply:?}");
            assert_eq!(reply.http_status(), http, "{name}");
            assert_eq!(reply.grpc_status(), grpc, "{name}");
            assert_eq!(reply.flags().to_string(), flags, "{name}");
        }
    }

    #[test]
    fn replies_render_as_http_or_as_grpc() {
        let reply = || LocalReply::Timeout;
        let http = reply().render(None).unwrap();
        assert_eq!(http.status(), 504);
        assert_eq!(http.headers()["content-type"], "text/plain");
        assert_eq!(http.body(), "upstream request timeout");

        let grpc = reply().render(reply().grpc_status()).unwrap();
        assert_eq!(grpc.status(), 200, "gRPC errors ride on a 200");
        assert_eq!(grpc.headers()["content-type"], "application/grpc");
        assert_eq!(grpc.headers()["grpc-status"], "14");
        assert_eq!(grpc.headers()["grpc-message"], "upstream request timeout");
        assert!(grpc.body().is_empty());

        let direct = LocalReply::Direct { status: 503, body: "a\r\nb".into() };
        let grpc = direct.render(Some(14)).unwrap();
        assert_eq!(grpc.headers()["grpc-message"], "a  b", "one header line");

        let redirect = LocalReply::Redirect { status: 302, location: "https://x/".into() };
        let http = redirect.render(None).unwrap();
        assert_eq!(http.status(), StatusCode::FOUND);
        assert_eq!(http.headers()["location"], "https://x/");
        assert!(http.body().is_empty());

        let origin = HeaderValue::from_static("https://shop.example");
        let preflight =
            LocalReply::Preflight(vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())]);
        let http = preflight.render(None).unwrap();
        assert_eq!(http.status(), 200);
        assert_eq!(http.headers()["access-control-allow-origin"], origin);

        let denied = LocalReply::Forbidden("rbac_access_denied_matched_policy[none]".into());
        let http = denied.render(None).unwrap();
        assert_eq!(http.status(), StatusCode::FORBIDDEN);
        assert_eq!(http.headers()["content-type"], "text/plain");
        assert_eq!(http.body(), "RBAC: access denied", "Envoy's body, whatever the policy");
        let grpc = LocalReply::Forbidden(String::new()).render(Some(7)).unwrap();
        assert_eq!(grpc.headers()["grpc-message"], "RBAC: access denied");
        let bad_path = LocalReply::PathRejected.render(None).unwrap();
        assert_eq!(
            (bad_path.status(), bad_path.body().is_empty()),
            (StatusCode::BAD_REQUEST, true)
        );

        let unsendable = LocalReply::Direct { status: 1000, body: String::new() };
        assert!(unsendable.render(None).is_err(), "answered as a plain 500 by respond");
    }
}
