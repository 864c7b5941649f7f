//! Bodies through the proxy: the response body that meters itself and reports the request
//! when it ends, the request body that counts its bytes, and the replay buffer: a small
//! request body kept whole so retries and mirrors can send it again (anything larger
//! streams, once).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, Uri, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::context::Finish;
use super::reply::LocalReply;
use crate::policy::RETRY_BUFFER_LIMIT;
use crate::proxy::upstream::UpstreamBody;
use crate::proxy::{Body, BoxError};
use crate::telemetry::{ResponseFlags, grpc_status_label};

/// A body of `bytes`, all at once.
pub(super) fn full(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// The upstream's response for the client: its status (and a trailers-only gRPC status) go
/// into `finish`, and its body reports the request when it ends.
pub(super) fn metered(response: Response<UpstreamBody>, mut finish: Finish) -> Response<Body> {
    finish.report.status = response.status().as_u16();
    if let Some(status) = response.headers().get("grpc-status") {
        finish.report.grpc_status = Some(grpc_status_label(status.as_bytes()));
    }
    response.map(|body| Metered::new(body, finish).boxed_unsync())
}

/// A response body that counts its bytes, notes a gRPC status in trailers, and reports the
/// request when it ends.
pub(super) struct Metered<B> {
    inner: B,
    finish: Option<Finish>,
}

impl<B> Metered<B> {
    /// `inner`, reporting through `finish` when it ends or is dropped.
    pub(super) fn new(inner: B, finish: Finish) -> Self {
        Self { inner, finish: Some(finish) }
    }
}

impl<B> http_body::Body for Metered<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(finish) = &mut this.finish {
                    if let Some(data) = frame.data_ref() {
                        finish.response_bytes += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref()
                        && let Some(status) = trailers.get("grpc-status")
                    {
                        finish.report.grpc_status = Some(grpc_status_label(status.as_bytes()));
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(finish) = &mut this.finish {
                    finish.report.flags = ResponseFlags::UPSTREAM_PROTOCOL_ERROR;
                }
                this.finish = None;
            }
            Poll::Ready(None) => this.finish = None,
            Poll::Pending => {}
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that counts its bytes.
struct Counted {
    inner: Incoming,
    bytes: Arc<AtomicU64>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a request's body is small enough to keep for retries and mirrors.
pub(super) fn bufferable(request: &Request<Incoming>) -> bool {
    use http_body::Body as _;
    if request.body().is_end_stream() {
        return true;
    }
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= RETRY_BUFFER_LIMIT)
}

/// A request body on its way upstream: kept whole (replayable), or still streaming (one
/// attempt only).
pub(super) enum OutgoingBody {
    /// Read whole, and sent again as often as asked.
    Buffered(Bytes),
    /// Streamed through once, its bytes counted.
    Streaming(Body),
}

impl OutgoingBody {
    /// The request body as it goes upstream: read whole when `replay` (an error if it turns
    /// out bigger than the buffer limit), else streamed. Its bytes count into `counted`.
    pub(super) async fn new(
        body: Incoming,
        replay: bool,
        counted: &Arc<AtomicU64>,
    ) -> Result<Self, LocalReply> {
        if !replay {
            let counted = Counted { inner: body, bytes: counted.clone() };
            return Ok(Self::Streaming(counted.map_err(BoxError::from).boxed_unsync()));
        }
        let limit = usize::try_from(RETRY_BUFFER_LIMIT).unwrap_or(usize::MAX);
        match http_body_util::Limited::new(body, limit).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                counted.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(Self::Buffered(bytes))
            }
            Err(e) => Err(LocalReply::BadRequest(format!("request body: {e}"))),
        }
    }
}

/// A request ready to be sent, as many times as retries need: the head, and the body.
pub(super) struct Outgoing {
    /// Method.
    pub(super) method: Method,
    /// Headers, shaped for upstream.
    pub(super) headers: HeaderMap,
    body: Option<OutgoingBody>,
}

impl Outgoing {
    /// A request of `method` with `headers` and `body`.
    pub(super) fn new(method: Method, headers: HeaderMap, body: OutgoingBody) -> Self {
        Self { method, headers, body: Some(body) }
    }

    /// The request for one attempt; `None` once a streaming body has been sent. Its request
    /// line is set per attempt, for the endpoint's HTTP version.
    pub(super) fn attempt(&mut self) -> Option<Request<Body>> {
        let body = match self.body.as_ref()? {
            OutgoingBody::Buffered(bytes) => full(bytes.clone()),
            OutgoingBody::Streaming(_) => match self.body.take() {
                Some(OutgoingBody::Streaming(body)) => body,
                _ => return None,
            },
        };
        Some(self.request(body))
    }

    /// A copy for a mirror, when the body is kept.
    pub(super) fn copy(&self) -> Option<Request<Body>> {
        match &self.body {
            Some(OutgoingBody::Buffered(bytes)) => Some(self.request(full(bytes.clone()))),
            _ => None,
        }
    }

    /// Whether the request can be sent again.
    pub(super) fn replayable(&self) -> bool {
        matches!(self.body, Some(OutgoingBody::Buffered(_)))
    }

    fn request(&self, body: Body) -> Request<Body> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = Uri::default();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(body: OutgoingBody) -> Outgoing {
        let mut headers = HeaderMap::new();
        headers.insert("x-kept", http::HeaderValue::from_static("1"));
        Outgoing::new(Method::POST, headers, body)
    }

    async fn text(request: Request<Body>) -> String {
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_kept_body_is_sent_as_often_as_asked_a_streamed_one_once() {
        let mut kept = outgoing(OutgoingBody::Buffered(Bytes::from_static(b"hello")));
        assert!(kept.replayable());
        for _ in 0..3 {
            let request = kept.attempt().unwrap();
            assert_eq!(request.method(), Method::POST);
            assert_eq!(request.headers()["x-kept"], "1");
            assert_eq!(text(request).await, "hello");
        }
        assert_eq!(text(kept.copy().unwrap()).await, "hello", "mirrors get a copy");

        let mut streamed = outgoing(OutgoingBody::Streaming(full(Bytes::from_static(b"once"))));
        assert!(!streamed.replayable());
        assert!(streamed.copy().is_none(), "no copy of a streamed body");
        assert_eq!(text(streamed.attempt().unwrap()).await, "once");
        assert!(streamed.attempt().is_none(), "a streamed body goes once");
    }
}
