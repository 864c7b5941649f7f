//! State-of-the-world ADS on the wire without copies. A resource is encoded once per
//! translation (as the `resources` entry of a `DiscoveryResponse`) and every stream's response
//! is those shared bytes framed, not a re-encoded copy; and no stream keeps a buffer the size
//! of its largest response after sending it (tonic's encoder would, for as long as the stream
//! lives). Delta ADS and everything else go through tonic's generated server.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::google::protobuf::Any;
use http_body::Frame;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codec::Codec as _;
use tonic::server::NamedService;

use crate::xds::{Ads, Caller, Discovery};

/// gRPC path of state-of-the-world ADS.
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// Largest request accepted (a proxy's subscription list).
pub(crate) const MAX_REQUEST: usize = 16 * 1024 * 1024;

/// One resource as the bytes of a `DiscoveryResponse.resources` entry (field 2).
pub(crate) fn encode_resource(any: &Any) -> Bytes {
    let mut buf = BytesMut::new();
    prost::encoding::message::encode(2, any, &mut buf);
    buf.freeze()
}

fn string_field(tag: u32, value: &str, buf: &mut BytesMut) {
    if !value.is_empty() {
        prost::encoding::string::encode(tag, &value.to_owned(), buf);
    }
}

/// A `DiscoveryResponse` as gRPC message pieces: the 5-byte gRPC prefix and `version_info`,
/// the shared resource entries, then `type_url` and `nonce`.
pub(crate) struct Response {
    pieces: Vec<Bytes>,
}

impl Response {
    /// Frames a response from pre-encoded resource entries ([`encode_resource`]).
    pub(crate) fn new<'a>(
        version: &str,
        resources: impl Iterator<Item = &'a Bytes>,
        type_url: &str,
        nonce: &str,
    ) -> Self {
        let mut head = BytesMut::new();
        string_field(1, version, &mut head);
        let mut tail = BytesMut::new();
        string_field(4, type_url, &mut tail);
        string_field(5, nonce, &mut tail);
        let resources: Vec<Bytes> = resources.cloned().collect();
        let length = head.len() + tail.len() + resources.iter().map(Bytes::len).sum::<usize>();
        let mut prefix = BytesMut::with_capacity(5 + head.len());
        prefix.put_u8(0); // not compressed
        prefix.put_u32(u32::try_from(length).unwrap_or(u32::MAX));
        prefix.extend_from_slice(&head);
        let mut pieces = Vec::with_capacity(resources.len() + 2);
        pieces.push(prefix.freeze());
        pieces.extend(resources);
        pieces.push(tail.freeze());
        Self { pieces }
    }
}

/// The response body of one stream: the pieces of each response as they come, then the gRPC
/// status as trailers.
struct Body {
    responses: mpsc::Receiver<Result<Response, Status>>,
    pending: VecDeque<Bytes>,
    finished: bool,
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            if let Some(piece) = self.pending.pop_front() {
                if piece.is_empty() {
                    continue;
                }
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if self.finished {
                return Poll::Ready(None);
            }
            let status = match self.responses.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(response))) => {
                    self.pending.extend(response.pieces);
                    continue;
                }
                Poll::Ready(Some(Err(status))) => status,
                Poll::Ready(None) => Status::ok(""),
            };
            self.finished = true;
            let mut trailers = http::HeaderMap::new();
            if status.add_header(&mut trailers).is_err() {
                trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
            }
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
    }
}

/// The ADS gRPC service: state of the world through [`Body`], delta through tonic.
#[derive(Clone)]
pub struct AdsService {
    discovery: Arc<Discovery>,
    mtls: bool,
    generated: AggregatedDiscoveryServiceServer<Ads>,
}

impl AdsService {
    pub(crate) fn new(discovery: Arc<Discovery>, mtls: bool) -> Self {
        let generated = AggregatedDiscoveryServiceServer::new(Ads::new(discovery.clone(), mtls))
            .max_decoding_message_size(MAX_REQUEST);
        Self { discovery, mtls, generated }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for AdsService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != SOTW_PATH {
            let mut generated = self.generated.clone();
            return Box::pin(async move { generated.call(request).await });
        }
        let caller = if self.mtls {
            Caller::from_certificates(
                request
                    .extensions()
                    .get::<tonic::transport::server::TlsConnectInfo<
                        tonic::transport::server::TcpConnectInfo,
                    >>()
                    .and_then(|info| info.peer_certs()),
            )
        } else {
            Caller::Plaintext
        };
        let decoder =
            tonic_prost::ProstCodec::<DiscoveryRequest, DiscoveryRequest>::default().decoder();
        let requests = tonic::codec::Streaming::new_request(
            decoder,
            request.into_body(),
            None,
            Some(MAX_REQUEST),
        );
        let responses = crate::xds::serve_sotw(&self.discovery, requests, caller);
        let body = Body { responses, pending: VecDeque::new(), finished: false };
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::new(body))
            .unwrap_or_else(|_| http::Response::new(tonic::body::Body::empty()));
        Box::pin(async move { Ok(response) })
    }
}
