//! An ADS relay for the namespaced sidecar tests: it stands between a sidecar and a real pilot
//! and rewrites what the pilot sends, to show what the sidecar does with configuration the
//! pilot would never send (a broken route, a chain to the sidecar's own port).

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};

/// What the relay does to each response of the pilot's.
pub type Rewrite = Arc<dyn Fn(DiscoveryResponse) -> DiscoveryResponse + Send + Sync>;

/// Relays state-of-the-world ADS to the pilot at `pilot` (`http://host:port`), rewriting its
/// responses.
pub struct Relay {
    /// The pilot's address.
    pub pilot: String,
    /// The rewrite.
    pub rewrite: Rewrite,
}

type Responses =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Relay {
    type StreamAggregatedResourcesStream = Responses;
    type DeltaAggregatedResourcesStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>,
    >;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Responses>, tonic::Status> {
        use futures::StreamExt as _;
        let mut upstream = AggregatedDiscoveryServiceClient::connect(self.pilot.clone())
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (forward, requests) = tokio::sync::mpsc::channel(16);
        let mut downstream = request.into_inner();
        tokio::spawn(async move {
            while let Some(Ok(request)) = downstream.next().await {
                if forward.send(request).await.is_err() {
                    return;
                }
            }
        });
        let requests = tokio_stream::wrappers::ReceiverStream::new(requests);
        let responses = upstream.stream_aggregated_resources(requests).await?.into_inner();
        let rewrite = self.rewrite.clone();
        Ok(tonic::Response::new(Box::pin(responses.map(move |r| r.map(|r| rewrite(r))))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("state of the world only"))
    }
}
