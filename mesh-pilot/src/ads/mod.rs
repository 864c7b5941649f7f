//! The ADS server: Envoy v3 aggregated discovery, state of the world (`sotw`) and delta
//! (`delta`), on the plaintext port and over mesh mTLS, where a node is admitted only as the
//! workload its certificate names (`caller`).
//!
//! Dependencies point one way: this module ties the gRPC service together; the two protocols
//! sit on `stream` (what every stream does) and `discovery` (what streams share: snapshots,
//! the translation `cache`, the sync `status` registry); `framing` writes and reads
//! state-of-the-world messages and knows none of them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

mod cache;
mod caller;
mod delta;
mod discovery;
mod framing;
mod sotw;
mod status;
mod stream;

pub use caller::Caller;
pub use discovery::Discovery;
pub use status::{ProxyStatus, TypeStatus};

impl Discovery {
    /// The gRPC service for the plaintext port: nodes are believed.
    pub fn service(self: &Arc<Self>) -> AdsService {
        AdsService::new(self.clone(), false)
    }

    /// The gRPC service for the mTLS port: a node must be the workload its client certificate
    /// names (namespace and service account), or its stream is refused.
    pub fn mtls_service(self: &Arc<Self>) -> AdsService {
        AdsService::new(self.clone(), true)
    }
}

/// Serves ADS over mesh mTLS on `listener` (port 15012) until `shutdown`: the client must
/// present a certificate of `roots` for `trust_domain`, and a node is admitted only as the
/// workload that certificate names. The pilot presents the certificate in `store`.
pub async fn serve_mtls(
    discovery: Arc<Discovery>,
    listener: tokio::net::TcpListener,
    store: Arc<mesh_identity::CertStore>,
    roots: Arc<rustls::RootCertStore>,
    trust_domain: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut config = mesh_identity::tls::mesh_server_config(store, roots, trust_domain)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    tonic::transport::Server::builder()
        .add_service(discovery.mtls_service())
        .serve_with_incoming_shutdown(
            mesh_identity::accept::incoming(listener, Arc::new(config)),
            shutdown,
        )
        .await?;
    Ok(())
}

/// Why the mTLS xDS server could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS configuration could not be built from the certificates.
    #[error("TLS configuration for xDS: {0}")]
    Tls(#[from] mesh_identity::TlsError),
    /// The gRPC server failed.
    #[error("xDS server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The ADS gRPC service: state of the world framed by the pilot (`framing`), delta through
/// tonic's generated server ([`Ads`]). The caller is told apart here, once, for both.
#[derive(Clone)]
pub struct AdsService {
    discovery: Arc<Discovery>,
    mtls: bool,
    generated: AggregatedDiscoveryServiceServer<Ads>,
}

impl AdsService {
    fn new(discovery: Arc<Discovery>, mtls: bool) -> Self {
        let generated = AggregatedDiscoveryServiceServer::new(Ads { discovery: discovery.clone() })
            .max_decoding_message_size(framing::MAX_REQUEST);
        Self { discovery, mtls, generated }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for AdsService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let caller = Caller::of(self.mtls, request.extensions());
        if request.uri().path() != framing::SOTW_PATH {
            request.extensions_mut().insert(caller);
            let mut generated = self.generated.clone();
            return Box::pin(async move { generated.call(request).await });
        }
        let requests = framing::Requests::new(request.into_body());
        let responses = stream::run(&self.discovery, requests, caller, sotw::SotwStream::new);
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::new(framing::Body::new(responses)))
            .unwrap_or_else(|_| http::Response::new(tonic::body::Body::empty()));
        Box::pin(async move { Ok(response) })
    }
}

/// The tonic-generated side of ADS over a [`Discovery`]: delta streams (state-of-the-world
/// streams are framed by the pilot, see [`AdsService`]).
pub struct Ads {
    discovery: Arc<Discovery>,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        // `AdsService` routes these before they reach the generated server.
        Err(Status::internal("state-of-the-world ADS is served by the pilot's own framing"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        // Put there by `AdsService`; a request that did not come through it is not served.
        let Some(caller) = request.extensions().get::<Caller>().cloned() else {
            return Err(Status::internal("the caller of a delta stream is unknown"));
        };
        let responses =
            stream::run(&self.discovery, request.into_inner(), caller, delta::DeltaStream::new);
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(responses))))
    }
}
