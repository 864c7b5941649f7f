//! OTLP over HTTP (`http/protobuf`): a batch is one `ExportTraceServiceRequest`, encoded with
//! prost and POSTed to the collector's traces path (`/v1/traces` by default), as Envoy's
//! OpenTelemetry tracer does when its provider names an `http_service`. Plaintext only, as
//! the gRPC exporter: collectors are reached inside the cluster.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use prost::Message as _;

/// The most of a collector's answer read (a status message at most).
const MAX_ANSWER: usize = 64 * 1024;

/// Sends batches to one collector over OTLP/HTTP.
#[derive(Debug)]
pub(super) struct HttpSender {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: http::Uri,
    headers: http::HeaderMap,
    resource: ResourceAttributesWithSchema,
}

impl HttpSender {
    /// A sender POSTing to `uri` with `headers`, every span under `resource`.
    pub(super) fn new(
        uri: http::Uri,
        headers: http::HeaderMap,
        resource: &Resource,
    ) -> Result<Self, String> {
        match uri.scheme_str() {
            Some("http") => {}
            _ => return Err(format!("{uri}: only http:// collectors are supported")),
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Self { client, uri, headers, resource: resource.into() })
    }

    /// POSTs one batch; the error says what the collector (or the connection) did.
    pub(super) async fn export(&self, spans: Vec<SpanData>) -> Result<(), String> {
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &self.resource),
        };
        let mut post = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(request.encode_to_vec())))
            .map_err(|e| e.to_string())?;
        for (name, value) in &self.headers {
            post.headers_mut().insert(name, value.clone());
        }
        let answer = self.client.request(post).await.map_err(|e| format!("{}: {e}", self.uri))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let body = Limited::new(answer.into_body(), MAX_ANSWER).collect().await;
        let text = body.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned());
        Err(format!("{} answered {status}: {}", self.uri, text.unwrap_or_default().trim()))
    }
}
