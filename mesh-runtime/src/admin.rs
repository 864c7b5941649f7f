//! One small HTTP server for every binary's admin, monitoring and debug endpoints (the proxy's
//! 15000/15021/15090, the pilot's and the CA's 15014). The binary brings a handler; the server
//! brings what each would otherwise get wrong alone: a bound on reading a request head, accept
//! errors logged and slowed instead of spun on, and a graceful stop on drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt as _};

use crate::drain;

/// The body of every admin response: small and in memory. A handler may answer with another
/// body (a stream) where it needs to: see [`ResponseBody`].
pub type Body = Full<Bytes>;

/// What a handler's responses may carry: [`Body`], or a body that streams (a tap that runs
/// until the client goes away or the server drains: it must end on the drain itself, as the
/// graceful stop waits for it).
pub trait ResponseBody:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> ResponseBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// How long a client may take to send a request head before its connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for {purpose}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub address: SocketAddr,
    /// What the listener was for.
    pub purpose: &'static str,
    /// The OS error (address in use, permission denied).
    #[source]
    pub source: std::io::Error,
}

/// Binds `address` now (so a port in use fails the start) for a listener handed over later:
/// to [`Server::from_std`], or to any other server of the binary. `purpose` names it in the
/// error.
pub fn bind_std(
    address: SocketAddr,
    purpose: &'static str,
) -> Result<std::net::TcpListener, BindError> {
    std::net::TcpListener::bind(address).map_err(|source| BindError { address, purpose, source })
}

/// A bound admin listener, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    purpose: &'static str,
    header_timeout: Duration,
}

impl Server {
    /// Binds `address`; `purpose` names the listener in errors and logs.
    pub async fn bind(address: SocketAddr, purpose: &'static str) -> Result<Self, BindError> {
        let listener = TcpListener::bind(address).await.map_err(|source| BindError {
            address,
            purpose,
            source,
        })?;
        Ok(Self { listener, purpose, header_timeout: HEADER_READ_TIMEOUT })
    }

    /// Takes a listener bound elsewhere (to serve it on another runtime than the one that
    /// bound it). Call from inside the runtime that will serve it.
    pub fn from_std(
        listener: std::net::TcpListener,
        purpose: &'static str,
    ) -> Result<Self, BindError> {
        let address = listener.local_addr().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
            .map(|listener| Self { listener, purpose, header_timeout: HEADER_READ_TIMEOUT })
            .map_err(|source| BindError { address, purpose, source })
    }

    /// Closes connections that have not sent a whole request head within `timeout`
    /// (default [`HEADER_READ_TIMEOUT`]).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// The address bound (with the port the system chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `handler` on a task of the current runtime until `drain` signals; then stops
    /// accepting, lets requests in flight finish, and drops the watch.
    pub fn spawn<H, F, B>(self, drain: drain::Watch, handler: H) -> tokio::task::JoinHandle<()>
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: ResponseBody,
    {
        tokio::spawn(self.serve(drain, Arc::new(handler)))
    }

    async fn serve<H, F, B>(self, drain: drain::Watch, handler: Arc<H>)
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: ResponseBody,
    {
        let Server { listener, purpose, header_timeout } = self;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        serve_connections(incoming, purpose, header_timeout, drain, handler).await;
    }
}

/// Serves `handler` over the connections `incoming` yields (TLS streams from the caller's own
/// accept loop, say) as [`Server::spawn`] serves a TCP listener: request heads bounded by
/// [`HEADER_READ_TIMEOUT`], a graceful stop on drain. `purpose` names the listener in logs.
pub fn spawn_incoming<S, IO, H, F, B>(
    incoming: S,
    purpose: &'static str,
    drain: drain::Watch,
    handler: H,
) -> tokio::task::JoinHandle<()>
where
    S: Stream<Item = std::io::Result<IO>> + Send + Unpin + 'static,
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: ResponseBody,
{
    tokio::spawn(serve_connections(
        incoming,
        purpose,
        HEADER_READ_TIMEOUT,
        drain,
        Arc::new(handler),
    ))
}

async fn serve_connections<S, IO, H, F, B>(
    mut incoming: S,
    purpose: &'static str,
    header_timeout: Duration,
    mut drain: drain::Watch,
    handler: Arc<H>,
) where
    S: Stream<Item = std::io::Result<IO>> + Send + Unpin + 'static,
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: ResponseBody,
{
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: probes, scrapers, curl and the API server's webhook calls speak it, and
    // version detection would wait for a first byte with no timeout at all.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    loop {
        let io = tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(io)) => io,
                Some(Err(err)) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(listener = purpose, "accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                None => break,
            },
            () = drain.signaled() => break,
        };
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| {
            let response = handler(request);
            async move { Ok::<_, std::convert::Infallible>(response.await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(listener = purpose, "connection ended: {err}");
            }
        });
    }
    drop(incoming);
    graceful.shutdown().await;
}

/// A response of `status` with `body` and no `Content-Type` header; [`typed`] sets one.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// A response with a content type.
pub fn typed(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = text(status, body);
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// The answer of `/version`: which component this is and its version, as JSON
/// (`{"component":"mesh-pilot","version":"0.1.0"}`), what `meshctl version` reads.
pub fn version(component: &'static str, version: &'static str) -> Response<Body> {
    // Both are the caller's constants (a crate name and `CARGO_PKG_VERSION`): nothing to escape.
    typed(
        StatusCode::OK,
        "application/json",
        format!("{{\"component\":\"{component}\",\"version\":\"{version}\"}}\n"),
    )
}

/// The value of query parameter `name`, percent-decoded (`None` if absent or not UTF-8).
pub fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    let raw =
        uri.query()?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (byte, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(address: SocketAddr, path: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(address).await?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = String::new();
        tcp.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn serves_until_drained_then_refuses() {
        let server = Server::bind(([127, 0, 0, 1], 0).into(), "test").await.unwrap();
        let address = server.local_addr().unwrap();
        let (trigger, watch) = drain::channel();
        let task = server.spawn(watch, |request: Request<Incoming>| {
            let path = request.uri().path().to_owned();
            async move { text(StatusCode::OK, format!("you asked for {path}")) }
        });
        let answer = get(address, "/ready").await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("you asked for /ready"), "{answer}");

        trigger.drain(Duration::from_secs(5)).await.unwrap();
        task.await.unwrap();
        assert!(get(address, "/ready").await.is_err(), "the listener is closed after the drain");
    }

    #[tokio::test]
    async fn a_handler_may_answer_with_a_stream() {
        let server = Server::bind(([127, 0, 0, 1], 0).into(), "test").await.unwrap();
        let address = server.local_addr().unwrap();
        let (_trigger, watch) = drain::channel();
        server.spawn(watch, |_| async {
            let lines = ["one\n", "two\n"].map(|line| {
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(line)))
            });
            Response::new(http_body_util::StreamBody::new(tokio_stream::iter(lines)))
        });
        let answer = get(address, "/tap").await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("transfer-encoding: chunked"), "{answer}");
        assert!(answer.contains("one\n") && answer.contains("two\n"), "{answer}");
    }

    #[tokio::test]
    async fn a_client_that_never_sends_a_head_is_cut_off() {
        use tokio::io::AsyncReadExt as _;
        let server = Server::bind(([127, 0, 0, 1], 0).into(), "test")
            .await
            .unwrap()
            .header_read_timeout(Duration::from_millis(100));
        let address = server.local_addr().unwrap();
        let (_trigger, watch) = drain::channel();
        server.spawn(watch, |_| async { text(StatusCode::OK, "") });
        let mut idle = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut buf = Vec::new();
        // The server closes the connection (with a 408 or not) well before the test gives up.
        let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the connection was closed by the header-read timeout");
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        let uri: http::Uri =
            "/debug/config_dump?x=1&proxyID=sidecar~10.0.0.1~a.b~b.svc%2Ecluster.local"
                .parse()
                .unwrap();
        assert_eq!(
            query_param(&uri, "proxyID").as_deref(),
            Some("sidecar~10.0.0.1~a.b~b.svc.cluster.local")
        );
        assert_eq!(query_param(&uri, "missing"), None);
    }
}
