//! The stages of a request, in order: path normalization, authentication (tokens) and
//! authorization, routing, the route's CORS preflight and faults, the cluster's request
//! breaker, the head and body that go upstream, mirrors, tracing, the attempts under the route
//! timeout, and the response head back (or an upgrade). Each stage either lets the request go
//! on or answers it with a [`LocalReply`].

use std::borrow::Cow;
use std::sync::Arc;

use http::header::HeaderMap;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::body::{self, Outgoing, OutgoingBody};
use super::context::{RequestContext, Target};
use super::head::{self, HeaderChanges};
use super::reply::LocalReply;
use super::{Routes, admit, authn, cors, mirror, random, send, upgrade};
use crate::policy::Fault;
use crate::proxy::upstream::UpstreamBody;
use crate::routing::{Decision, RequestHead, RouteTable, hash_key};
use crate::runtime::{Count, Runtime};
use crate::telemetry::ResponseFlags;

/// Routes a request and sends it upstream; a [`LocalReply`] when the proxy answers itself.
pub(super) async fn forward(
    cx: &mut RequestContext<'_>,
    mut request: Request<Incoming>,
) -> Result<Response<UpstreamBody>, LocalReply> {
    // A Connection header that is not a token list is refused before anything reads it.
    head::check_connection(request.headers())?;
    admit::normalize(cx, &mut request)?;
    authn::authenticate(cx, &mut request)?;
    authorize(cx, &request)?;

    let runtime = cx.shared.runtime.load_full();
    let table = route_table(&runtime, &cx.connection.routes)?;
    let request_path = head::path(request.uri());
    let routed = RequestHead {
        authority: head::authority(&request),
        path: &request_path,
        method: request.method().as_str(),
        headers: request.headers(),
    };
    let (route, policy, decision) = table
        .decide_route(&routed, random())
        .ok_or(LocalReply::NoRoute(Cow::Borrowed("no route matched")))?;
    cx.finish.entry.route = route.name.clone();
    let policy = policy.clone();
    let (cluster, path, authority, set, add, remove) = match decision {
        Decision::Redirect { status, location } => {
            return Err(LocalReply::Redirect { status, location });
        }
        Decision::Respond { status, body } => return Err(LocalReply::Direct { status, body }),
        Decision::Forward {
            cluster,
            path,
            authority,
            set_headers,
            add_headers,
            remove_headers,
        } => (cluster, path, authority, set_headers, add_headers, remove_headers),
    };
    cx.finish.entry.upstream_cluster = cluster.clone();
    if let Some(trace) = &mut cx.finish.trace {
        let authority = head::authority(&request);
        trace.routed(route, &cluster, authority, cx.connection.destination.port());
    }
    let transport = runtime.transports.get(&cluster).cloned();
    cx.finish.report.service = crate::telemetry::destination_service(
        cx.connection.reporter,
        &cluster,
        transport.as_ref().and_then(|t| t.service.as_deref()),
        authority.rsplit_once(':').map_or(authority.as_str(), |(h, _)| h),
    );

    // CORS: a preflight from an allowed origin is answered here.
    let cors = cors::grant(policy.cors.as_ref(), request.headers());
    if let Some(grant) = &cors
        && cors::is_preflight(&request)
    {
        return Err(LocalReply::Preflight(grant.headers(true)));
    }

    inject_fault(cx, policy.fault.as_ref()).await?;

    let Some(transport) = transport else {
        return Err(LocalReply::NoCluster { cluster });
    };
    // Circuit breaking: too much in flight to this cluster already.
    let Some(_in_flight) = transport.breakers.hold(Count::Requests) else {
        cx.shared.metrics.overflow.inc();
        return Err(LocalReply::TooManyRequests { cluster });
    };

    let hash = hash_key(route, &routed, cx.connection.downstream.ip());
    let upgrade = upgrade::requested(&request, &cx.connection.upgrades);
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let replay = !upgrade
        && (policy.retry.is_some() || !policy.mirrors.is_empty())
        && body::bufferable(&request);
    let (mut parts, incoming) = request.into_parts();
    let changes = HeaderChanges { set: &set, add: &add, remove: &remove };
    let timeout_override = head::shape_request(cx, &mut parts.headers, upgrade, &changes);
    trace(cx, &mut parts.headers);
    let body = OutgoingBody::new(incoming, replay, &cx.finish.request_bytes).await?;
    let mut outgoing = Outgoing::new(parts.method, parts.headers, body);

    let target = Target {
        runtime: &runtime,
        cluster: &cluster,
        authority: &authority,
        path: &path,
        policy: &policy,
        transport: &transport,
        hash,
        upgrade,
    };
    mirror::spawn_all(cx, &target, &outgoing);

    let attempts = send::send(cx, &target, &mut outgoing);
    let (mut response, picked) = match timeout_override.or(policy.timeout) {
        Some(limit) => {
            tokio::time::timeout(limit, attempts).await.map_err(|_| LocalReply::Timeout)??
        }
        None => attempts.await?,
    };

    if let Some(downstream) = downstream_upgrade
        && upgrade::switched(&response, outgoing.method == Method::CONNECT)
    {
        upgrade::splice(downstream, &mut response, picked);
        return Ok(response);
    }
    head::shape_response(cx, &picked, &mut response);
    if let Some(grant) = &cors {
        grant.apply(response.headers_mut());
    }
    Ok(response)
}

/// Authorization: the chain's HTTP RBAC filters (the AuthorizationPolicies the pilot compiled
/// into them) decide from the peer's certificate and the normalized request head whether the
/// request goes on; a denial is a 403. It comes first, before routing, faults and retries, as
/// Envoy's RBAC filter runs ahead of its router.
fn authorize(cx: &RequestContext<'_>, request: &Request<Incoming>) -> Result<(), LocalReply> {
    admit::authorize(cx, request)
}

/// This hop's trace headers, written into the head going upstream once it is settled (so
/// mirrors and every attempt carry them): the request joined or started its trace when it
/// arrived, and its span ends where its [`super::context::Finish`] reports.
fn trace(cx: &mut RequestContext<'_>, headers: &mut HeaderMap) {
    if let Some(trace) = &cx.finish.trace {
        trace.inject(headers);
    }
}

/// The route table of the connection: inline, or the named RDS configuration in force.
fn route_table(runtime: &Runtime, routes: &Routes) -> Result<Arc<RouteTable>, LocalReply> {
    match routes {
        Routes::Named(name) => runtime.routes.get(name).cloned().ok_or_else(|| {
            LocalReply::NoRoute(format!("route configuration {name:?} has not arrived").into())
        }),
        Routes::Inline(table) => Ok(table.clone()),
    }
}

/// The route's faults, drawn once per request: a delay (flag `DI`), then maybe an abort.
async fn inject_fault(
    cx: &mut RequestContext<'_>,
    fault: Option<&Fault>,
) -> Result<(), LocalReply> {
    let Some(fault) = fault else { return Ok(()) };
    if let Some((delay, fraction)) = fault.delay
        && fraction.hit(random())
    {
        cx.finish.report.flags = ResponseFlags::DELAY_INJECTED;
        tokio::time::sleep(delay).await;
    }
    match fault.abort {
        Some((abort, fraction)) if fraction.hit(random()) => Err(LocalReply::FaultAbort(abort)),
        _ => Ok(()),
    }
}
