//! The receiver's OTLP/HTTP side: `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest`, answered with a protobuf `ExportTraceServiceResponse`, on
//! HTTP/1.1. JSON bodies are refused (415), as is a body over [`MAX_BODY`] (413).

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use super::Receiver;

/// The path OTLP/HTTP exporters POST traces to.
pub const TRACES_PATH: &str = "/v1/traces";
/// The largest request body taken.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
const PROTOBUF: &str = "application/x-protobuf";

impl Receiver {
    /// Serves OTLP/HTTP on `listener` until `shutdown` completes (connections still open
    /// finish on their own). A failed accept (the process out of descriptors) is waited out.
    pub async fn serve_http(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return,
            };
            let receiver = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let receiver = receiver.clone();
                    async move { Ok::<_, Infallible>(receiver.answer_http(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    }

    /// Takes one OTLP/HTTP request.
    async fn answer_http(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let refuse = |status: StatusCode, why: &str| {
            let mut answer = Response::new(Full::new(Bytes::from(why.to_owned())));
            *answer.status_mut() = status;
            answer
        };
        if request.uri().path() != TRACES_PATH {
            return refuse(StatusCode::NOT_FOUND, "traces are taken at /v1/traces");
        }
        if request.method() != Method::POST {
            return refuse(StatusCode::METHOD_NOT_ALLOWED, "POST traces");
        }
        let content_type = request.headers().get(header::CONTENT_TYPE);
        if content_type.and_then(|v| v.to_str().ok()) != Some(PROTOBUF) {
            return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "only application/x-protobuf");
        }
        let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "a body over 16 MiB"),
        };
        let Ok(decoded) = ExportTraceServiceRequest::decode(body) else {
            return refuse(StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest");
        };
        let rejected = self.receive(decoded).await;
        let mut answer =
            Response::new(Full::new(Bytes::from(super::answer(rejected).encode_to_vec())));
        answer
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(PROTOBUF));
        answer
    }
}
