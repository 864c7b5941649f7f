//! Request authentication: the chain's jwt_authn filter (RequestAuthentication, compiled by
//! the pilot) checks the request's tokens after the path is normalized and before RBAC, as
//! in Envoy's filter order. A bad token is answered 401 (403 for an audience not allowed) and
//! never reaches the app; a good one's payload is kept for RBAC.

use std::time::{SystemTime, UNIX_EPOCH};

use http::Request;
use hyper::body::Incoming;

use super::context::RequestContext;
use super::reply::LocalReply;
use crate::jwt::{Denial, Status};

/// Runs the chain's jwt_authn filter, if it has one.
pub(super) fn authenticate(
    cx: &mut RequestContext<'_>,
    request: &mut Request<Incoming>,
) -> Result<(), LocalReply> {
    let connection = cx.connection;
    let Some(filter) = &connection.admission.options.jwt else { return Ok(()) };
    let filter = match filter {
        Ok(filter) => filter,
        // A filter that cannot be enforced refuses every request, never lets one through.
        Err(_) => {
            return Err(LocalReply::Unauthenticated(Denial {
                status: Status::VerificationFail,
                body: Status::VerificationFail.to_string(),
                www_authenticate: None,
            }));
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match filter.authenticate(request, now, connection.peer.is_some()) {
        Ok(mut metadata) => {
            // What RBAC reads: the `payload` key, where Istio's providers put it.
            cx.jwt_payload = metadata.remove("payload");
            Ok(())
        }
        Err(denial) => {
            tracing::debug!(path = %cx.finish.entry.path, "request refused: {}", denial.status);
            Err(LocalReply::Unauthenticated(denial))
        }
    }
}
