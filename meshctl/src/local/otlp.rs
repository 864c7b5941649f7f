//! `meshctl local otlp` (started by `meshctl local up --tracing`, not by people): the local
//! mesh's trace collector. It receives OTLP/gRPC from the sidecars and the control plane
//! (`mesh_trace::receiver`, keeping the last traces in memory) and answers a small JSON API for
//! `meshctl trace` and the dashboard: `GET /api/traces?last=N` (`{"traces": [...]}`, the latest
//! first), `GET /api/traces/<id>` (one trace, or 404), `GET /healthz`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use mesh_trace::context::TraceId;
use mesh_trace::receiver::{Limits, Receiver};
use tokio::sync::Semaphore;

use super::LocalError;
use crate::trace::{API_TRACES, MAX_LAST, TraceList};

/// API connections served at once; more are closed at once (the API's callers are a person's
/// `meshctl trace` and dashboard).
const MAX_API_CONNECTIONS: usize = 16;
/// How many traces `?last` gives when it does not say.
const DEFAULT_LAST: usize = 20;

/// Flags of `meshctl local otlp`.
#[derive(Debug, clap::Args)]
pub struct OtlpArgs {
    /// Where OTLP/gRPC is received (the `otel-collector.mesh-system` Service's endpoint).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where OTLP/HTTP is received (`POST /v1/traces`), if anywhere.
    #[arg(long)]
    pub listen_http: Option<SocketAddr>,
    /// Where the JSON API answers.
    #[arg(long)]
    pub api: SocketAddr,
    /// The most traces kept (the least recently updated go first).
    #[arg(long, default_value_t = 200)]
    pub max_traces: usize,
}

/// What an API request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// Whether the collector runs.
    Health,
    /// The traces that received a span last, at most this many.
    Latest(usize),
    /// One trace.
    Trace(TraceId),
}

/// Reads an API request: what it asks for, or the status and message to answer.
pub fn route(method: &Method, path: &str, query: Option<&str>) -> Result<Query, (u16, String)> {
    if method != Method::GET {
        return Err((405, "only GET is answered\n".to_owned()));
    }
    if path == "/healthz" {
        return Ok(Query::Health);
    }
    if path == API_TRACES {
        let last = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("last="));
        return match last.map(str::parse::<usize>) {
            None => Ok(Query::Latest(DEFAULT_LAST)),
            Some(Ok(n)) if (1..=MAX_LAST).contains(&n) => Ok(Query::Latest(n)),
            Some(_) => Err((400, format!("last must be a number from 1 to {MAX_LAST}\n"))),
        };
    }
    match path.strip_prefix(API_TRACES).and_then(|rest| rest.strip_prefix('/')) {
        Some(id) => mesh_trace::context::trace_id_from_hex(&id.to_ascii_lowercase())
            .map(Query::Trace)
            .ok_or_else(|| (400, format!("{id:?} is not a trace id (32 hex characters)\n"))),
        None => Err((
            404,
            format!("not found: the API is {API_TRACES}?last=N and {API_TRACES}/<trace id>\n"),
        )),
    }
}

/// The answer to `query`: status, content type and body.
async fn answer(receiver: &Receiver, query: Query) -> (u16, &'static str, String) {
    const JSON: &str = "application/json";
    match query {
        Query::Health => (200, "text/plain", "ok\n".to_owned()),
        Query::Latest(n) => {
            let list = TraceList { traces: receiver.latest(n).await };
            (200, JSON, serde_json::to_string(&list).unwrap_or_default())
        }
        Query::Trace(id) => match receiver.spans_of(&id).await {
            Some(trace) => (200, JSON, serde_json::to_string(&trace).unwrap_or_default()),
            None => (
                404,
                "text/plain",
                format!(
                    "trace {} was not received: only sampled requests send spans, a few \
                     seconds after they end, and only the last traces are kept\n",
                    mesh_trace::context::to_hex(&id)
                ),
            ),
        },
    }
}

async fn serve_request(
    receiver: Receiver,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let uri = request.uri();
    let (status, content_type, body) = match route(request.method(), uri.path(), uri.query()) {
        Ok(query) => answer(&receiver, query).await,
        Err((status, message)) => (status, "text/plain", message),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, value);
    }
    Ok(response)
}

/// Serves the JSON API on `listener` for ever, at most [`MAX_API_CONNECTIONS`] at once.
async fn serve_api(listener: tokio::net::TcpListener, receiver: Receiver) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_API_CONNECTIONS));
    loop {
        let (stream, _) = listener.accept().await?;
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let receiver = receiver.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| serve_request(receiver.clone(), request));
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(std::time::Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(io, service)
                .await;
            drop(slot);
        });
    }
}

/// The collector: OTLP/gRPC received on `otlp` (and OTLP/HTTP on `otlp_http`), the JSON API on
/// `api`, until `shutdown` completes.
pub async fn collect(
    otlp: tokio::net::TcpListener,
    otlp_http: Option<tokio::net::TcpListener>,
    api: tokio::net::TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LocalError> {
    let receiver = Receiver::new(limits);
    if let Some(listener) = otlp_http {
        tokio::spawn(receiver.clone().serve_http(listener, std::future::pending()));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let grpc = receiver.clone().serve(otlp, async {
        let _ = stopped.await;
    });
    let result = tokio::select! {
        served = grpc => served.map_err(|e| LocalError::Refused(format!("the OTLP receiver stopped: {e}"))),
        served = serve_api(api, receiver) => {
            served.map_err(|e| LocalError::Io("the trace API stopped".to_owned(), e))
        }
        () = shutdown => Ok(()),
    };
    drop(stop);
    result
}

/// `meshctl local otlp`: runs until SIGTERM or SIGINT.
pub fn otlp(args: &OtlpArgs) -> Result<i32, LocalError> {
    let failed = |what: String, e: std::io::Error| LocalError::Io(what, e);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed("cannot start the collector's runtime".into(), e))?;
    runtime.block_on(async {
        let otlp = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| failed(format!("cannot listen on {}", args.listen), e))?;
        let api = tokio::net::TcpListener::bind(args.api)
            .await
            .map_err(|e| failed(format!("cannot listen on {}", args.api), e))?;
        let otlp_http = match args.listen_http {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|e| failed(format!("cannot listen on {address}"), e))?,
            ),
            None => None,
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| failed("cannot watch for SIGTERM".into(), e))?;
        let limits = Limits { max_traces: args.max_traces.max(1), ..Limits::default() };
        let http = args.listen_http.map(|a| format!(", OTLP/HTTP on {a}")).unwrap_or_default();
        println!(
            "otel-collector: OTLP/gRPC on {}{http}, the trace API on http://{}{API_TRACES}, keeping the last {} traces",
            args.listen, args.api, limits.max_traces
        );
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        collect(otlp, otlp_http, api, limits, shutdown).await.map(|()| 0)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_api_reads_its_paths() {
        let get = |path: &str, query: Option<&str>| route(&Method::GET, path, query);
        assert_eq!(get("/healthz", None), Ok(Query::Health));
        assert_eq!(get("/api/traces", Some("last=5")), Ok(Query::Latest(5)));
        assert_eq!(get("/api/traces", None), Ok(Query::Latest(DEFAULT_LAST)));
        assert_eq!(get("/api/traces", Some("x=1&last=100")), Ok(Query::Latest(100)));
        for bad in ["last=0", "last=101", "last=x"] {
            assert_eq!(get("/api/traces", Some(bad)).unwrap_err().0, 400, "{bad}");
        }
        assert_eq!(
            get("/api/traces/0AF7651916CD43DD8448EB211C80319C", None),
            Ok(Query::Trace(
                mesh_trace::context::trace_id_from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
            ))
        );
        assert_eq!(get("/api/traces/nope", None).unwrap_err().0, 400);
        assert_eq!(get("/other", None).unwrap_err().0, 404);
        assert_eq!(route(&Method::POST, "/api/traces", None).unwrap_err().0, 405);
    }
}
