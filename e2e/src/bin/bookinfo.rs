//! The Bookinfo demo apps (`bookinfo productpage|details|reviews|ratings`), our own code with
//! the behaviour of Istio's sample, and `bookinfo httpbin`, the small HTTP test app of the
//! resilience scenarios (echoed headers, chosen statuses, delays, a backend that fails every
//! other request). Each serves HTTP/1.1 and HTTP/2 on `--port` (9080).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use e2e::bookinfo;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

/// The Bookinfo apps and the test app.
#[derive(Debug, Parser)]
#[command(
    name = "bookinfo",
    about = "The Bookinfo demo apps, and httpbin for the resilience tests"
)]
struct Cli {
    /// Which app to run.
    #[command(subcommand)]
    app: App,
    /// The port to serve.
    #[arg(long, global = true, default_value_t = bookinfo::PORT)]
    port: u16,
    /// The app's version (reviews: v1 no stars, v2 black stars, v3 red stars).
    #[arg(long, global = true, default_value = "v1")]
    version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Subcommand)]
enum App {
    /// The product page: calls details and reviews.
    Productpage,
    /// The book's details.
    Details,
    /// The reviews (v2 and v3 call ratings).
    Reviews,
    /// The ratings.
    Ratings,
    /// A test app: `/headers`, `/status/N`, `/delay/MS`, `/flaky`, `/get`.
    Httpbin,
}

type Body = Full<Bytes>;

/// Largest answer an app reads from another.
const MAX_ANSWER: usize = 1 << 20;
/// Longest delay `/delay` grants.
const MAX_DELAY_MS: u64 = 30_000;

struct Ctx {
    app: App,
    version: String,
    pod: String,
    client: Client<HttpConnector, Body>,
    calls: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pod = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("{}-{}", format!("{:?}", cli.app).to_lowercase(), cli.version));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let address = SocketAddr::from(([0, 0, 0, 0], cli.port));
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        println!("{:?} {} ({pod}) listening on {address}", cli.app, cli.version);
        let ctx = Arc::new(Ctx {
            app: cli.app,
            version: cli.version,
            pod,
            client: Client::builder(TokioExecutor::new()).build_http(),
            calls: AtomicU64::new(0),
        });
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let ctx = ctx.clone();
                    async move { Ok::<_, Infallible>(handle(&ctx, request).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(http::header::CONTENT_TYPE, value);
    }
    response
}

fn json_reply(status: StatusCode, value: &Value) -> Response<Body> {
    reply(status, "application/json", value.to_string())
}

fn not_found() -> Response<Body> {
    reply(StatusCode::NOT_FOUND, "text/plain", "not found\n")
}

async fn handle(ctx: &Ctx, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    if path == "/health" {
        return json_reply(StatusCode::OK, &json!({"status": "ok"}));
    }
    match ctx.app {
        App::Productpage => productpage(ctx, &request, &path).await,
        App::Details if path.starts_with("/details/") => {
            json_reply(StatusCode::OK, &bookinfo::details())
        }
        App::Ratings if path.starts_with("/ratings/") => {
            json_reply(StatusCode::OK, &bookinfo::ratings())
        }
        App::Reviews if path.starts_with("/reviews/") => {
            let ratings = match bookinfo::reviews_flavour(&ctx.version) {
                Some((_, timeout)) => Some(
                    call(ctx, "http://ratings:9080/ratings/0", forwarded(&request, None), timeout)
                        .await,
                ),
                None => None,
            };
            let answer =
                bookinfo::reviews(&ctx.version, &ctx.pod, ratings.as_ref().map(Option::as_ref));
            json_reply(StatusCode::OK, &answer)
        }
        App::Httpbin => httpbin(ctx, &request, &path).await,
        _ => not_found(),
    }
}

/// The headers to pass on: tracing, and the user (given, or the request's own `end-user`).
fn forwarded(request: &Request<Incoming>, user: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = bookinfo::FORWARDED
        .iter()
        .filter(|name| user.is_none() || **name != "end-user")
        .filter_map(|name| {
            let value = request.headers().get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    if let Some(user) = user {
        out.push(("end-user".to_owned(), user.to_owned()));
    }
    out
}

/// GET `url` with `headers` within `timeout`: the JSON answer of a 2xx, `None` otherwise.
async fn call(
    ctx: &Ctx,
    url: &str,
    headers: Vec<(String, String)>,
    timeout: Duration,
) -> Option<Value> {
    let mut builder = Request::get(url);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let request = builder.body(Full::new(Bytes::new())).ok()?;
    let attempt = async {
        let response = ctx.client.request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER).collect().await.ok()?;
        serde_json::from_slice(&body.to_bytes()).ok()
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

async fn productpage(ctx: &Ctx, request: &Request<Incoming>, path: &str) -> Response<Body> {
    let html = match path {
        "/productpage" => true,
        "/api/v1/products/0" => false,
        "/api/v1/products" => return json_reply(StatusCode::OK, &json!([bookinfo::product()])),
        "/" => {
            return reply(
                StatusCode::OK,
                "text/html",
                "<html><body><a href=\"/productpage\">Bookinfo: the product page</a></body></html>\n",
            );
        }
        _ => return not_found(),
    };
    let cookie = request.headers().get(http::header::COOKIE).and_then(|v| v.to_str().ok());
    let user = bookinfo::user(request.uri().query(), cookie);
    let headers = forwarded(request, user.as_deref());
    let details =
        call(ctx, "http://details:9080/details/0", headers.clone(), bookinfo::DETAILS_TIMEOUT)
            .await;
    let mut reviews = None;
    for _ in 0..bookinfo::REVIEWS_ATTEMPTS {
        reviews =
            call(ctx, "http://reviews:9080/reviews/0", headers.clone(), bookinfo::REVIEWS_TIMEOUT)
                .await;
        if reviews.is_some() {
            break;
        }
    }
    let view = bookinfo::product_view(details.as_ref(), reviews.as_ref(), user.as_deref());
    if html {
        reply(StatusCode::OK, "text/html; charset=utf-8", bookinfo::page(&view))
    } else {
        json_reply(StatusCode::OK, &view)
    }
}

async fn httpbin(ctx: &Ctx, request: &Request<Incoming>, path: &str) -> Response<Body> {
    let n = ctx.calls.fetch_add(1, Ordering::Relaxed);
    if path == "/headers" {
        let headers: serde_json::Map<String, Value> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), json!(String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        return json_reply(StatusCode::OK, &json!({"headers": headers, "pod": ctx.pod}));
    }
    if path == "/get" {
        return json_reply(StatusCode::OK, &json!({"pod": ctx.pod, "version": ctx.version}));
    }
    if path == "/flaky" {
        // Every other request fails: a retry always recovers it.
        let status =
            if n.is_multiple_of(2) { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
        return json_reply(status, &json!({"pod": ctx.pod, "call": n}));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return match code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(status) => json_reply(status, &json!({"pod": ctx.pod})),
            None => reply(StatusCode::BAD_REQUEST, "text/plain", "not a status code\n"),
        };
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        let Ok(ms) = ms.parse::<u64>() else {
            return reply(StatusCode::BAD_REQUEST, "text/plain", "not a number of milliseconds\n");
        };
        tokio::time::sleep(Duration::from_millis(ms.min(MAX_DELAY_MS))).await;
        return json_reply(
            StatusCode::OK,
            &json!({"pod": ctx.pod, "delayed_ms": ms.min(MAX_DELAY_MS)}),
        );
    }
    not_found()
}
