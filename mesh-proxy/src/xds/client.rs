//! The ADS client: one state-of-the-world stream to the pilot for listeners, clusters, and the
//! routes, endpoints and secrets (SDS) they name. Every response is ACKed or NACKed (with the reason); the
//! stream is kept up with backoff, and while the pilot is away the last good configuration
//! stays in force.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use mesh_api::xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::store::Store;

/// Longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// How often a warming configuration is checked against its limit while the pilot is quiet.
const WARMING_CHECK: Duration = Duration::from_secs(1);

/// What the client reports about itself (for health metrics and the admin endpoint).
#[derive(Default)]
pub struct ClientState {
    /// Whether a stream to the pilot is up now.
    pub connected: AtomicBool,
    /// Stream attempts since start, counted before each one (failed ones too).
    pub connects: AtomicU64,
    /// Responses NACKed since start (a resource failed the store's checks).
    pub rejected: AtomicU64,
    /// The NACK message of the last rejected response; `None` until one is rejected.
    pub last_rejection: ArcSwapOption<String>,
}

/// What one stream has asked for and accepted, per type.
#[derive(Default)]
struct Subscriptions {
    names: BTreeMap<&'static str, BTreeSet<String>>,
    versions: BTreeMap<&'static str, String>,
    nonces: BTreeMap<&'static str, String>,
}

fn type_key(type_url: &str) -> Option<&'static str> {
    [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE]
        .into_iter()
        .find(|t| *t == type_url)
}

/// Keeps an ADS stream to `channel` up forever, applying what arrives to `store`.
pub async fn run(
    channel: tonic::transport::Channel,
    node: Node,
    store: Arc<Store>,
    state: Arc<ClientState>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        state.connects.fetch_add(1, Ordering::Relaxed);
        let result = stream(channel.clone(), &node, &store, &state, &mut backoff).await;
        state.connected.store(false, Ordering::Release);
        match result {
            Ok(()) => info!("the pilot closed the xDS stream; reconnecting"),
            Err(status) => warn!(retry_in = ?backoff, "xDS stream to the pilot failed: {status}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn stream(
    channel: tonic::transport::Channel,
    node: &Node,
    store: &Store,
    state: &ClientState,
    backoff: &mut Duration,
) -> Result<(), tonic::Status> {
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(16);
    let mut subs = Subscriptions::default();
    // After a reconnect the proxy says what it has, so the pilot can tell what is new.
    let current = store.received();
    subs.names.insert(ENDPOINT_TYPE, current.eds_clusters().collect());
    subs.names.insert(ROUTE_TYPE, current.route_names().collect());
    subs.names.insert(SECRET_TYPE, current.secret_names());
    for type_url in [CLUSTER_TYPE, LISTENER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE, SECRET_TYPE] {
        if let Some(version) = current.versions.get(type_url) {
            subs.versions.insert(type_url, version.clone());
        }
    }
    let first =
        |type_url: &'static str, subs: &Subscriptions, node: Option<Node>| DiscoveryRequest {
            node,
            type_url: type_url.to_owned(),
            version_info: subs.versions.get(type_url).cloned().unwrap_or_default(),
            resource_names: subs
                .names
                .get(type_url)
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default(),
            ..DiscoveryRequest::default()
        };
    let _ = tx.send(first(CLUSTER_TYPE, &subs, Some(node.clone()))).await;
    let _ = tx.send(first(LISTENER_TYPE, &subs, None)).await;
    for type_url in [ENDPOINT_TYPE, ROUTE_TYPE, SECRET_TYPE] {
        if subs.names.get(type_url).is_some_and(|n| !n.is_empty()) {
            let _ = tx.send(first(type_url, &subs, None)).await;
        }
    }
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    state.connected.store(true, Ordering::Release);
    info!("xDS stream to the pilot is up");
    loop {
        // A configuration still warming is put in force when its limit passes, even if the
        // pilot sends nothing more.
        let response = match tokio::time::timeout(WARMING_CHECK, responses.message()).await {
            Ok(response) => response?,
            Err(_) => {
                store.publish_if_ready(super::store::WARMING_LIMIT);
                continue;
            }
        };
        let Some(response) = response else { break };
        *backoff = MIN_BACKOFF;
        for request in handle(&response, store, state, &mut subs) {
            if tx.send(request).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// ACK or NACK one response, then (after an ACK of clusters or listeners) subscribe to the
/// endpoints, or the routes and secrets, they now name.
fn handle(
    response: &DiscoveryResponse,
    store: &Store,
    state: &ClientState,
    subs: &mut Subscriptions,
) -> Vec<DiscoveryRequest> {
    let Some(type_url) = type_key(&response.type_url) else {
        debug!(type_url = %response.type_url, "response for a type this proxy did not ask for");
        return Vec::new();
    };
    subs.nonces.insert(type_url, response.nonce.clone());
    let names = |subs: &Subscriptions, t: &str| -> Vec<String> {
        subs.names.get(t).map(|n| n.iter().cloned().collect()).unwrap_or_default()
    };
    let mut out = Vec::new();
    match store.apply(type_url, &response.version_info, &response.resources) {
        Ok(()) => {
            subs.versions.insert(type_url, response.version_info.clone());
            out.push(DiscoveryRequest {
                type_url: type_url.to_owned(),
                version_info: response.version_info.clone(),
                response_nonce: response.nonce.clone(),
                resource_names: names(subs, type_url),
                ..DiscoveryRequest::default()
            });
            let received = store.received();
            let follow: Vec<(&'static str, BTreeSet<String>)> = match type_url {
                CLUSTER_TYPE => vec![(ENDPOINT_TYPE, received.eds_clusters().collect())],
                LISTENER_TYPE => vec![
                    (ROUTE_TYPE, received.route_names().collect()),
                    (SECRET_TYPE, received.secret_names()),
                ],
                _ => Vec::new(),
            };
            for (dependent, wanted) in follow {
                if subs.names.get(dependent) == Some(&wanted) {
                    continue;
                }
                subs.names.insert(dependent, wanted);
                out.push(DiscoveryRequest {
                    type_url: dependent.to_owned(),
                    version_info: subs.versions.get(dependent).cloned().unwrap_or_default(),
                    response_nonce: subs.nonces.get(dependent).cloned().unwrap_or_default(),
                    resource_names: names(subs, dependent),
                    ..DiscoveryRequest::default()
                });
            }
        }
        Err(why) => {
            warn!(%type_url, version = %response.version_info, "configuration rejected: {why}");
            state.rejected.fetch_add(1, Ordering::Relaxed);
            state.last_rejection.store(Some(Arc::new(why.clone())));
            out.push(DiscoveryRequest {
                type_url: type_url.to_owned(),
                version_info: subs.versions.get(type_url).cloned().unwrap_or_default(),
                response_nonce: response.nonce.clone(),
                resource_names: names(subs, type_url),
                error_detail: Some(RpcStatus { code: 3, message: why, details: Vec::new() }),
                ..DiscoveryRequest::default()
            });
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use envoy_types::util::pack_any;

    use super::*;
    use crate::tls::testing::*;

    fn response(
        type_url: &str,
        version: &str,
        resources: Vec<envoy_types::pb::google::protobuf::Any>,
    ) -> DiscoveryResponse {
        DiscoveryResponse {
            type_url: type_url.to_owned(),
            version_info: version.to_owned(),
            nonce: format!("{type_url}-{version}"),
            resources,
            ..DiscoveryResponse::default()
        }
    }

    #[test]
    fn after_listeners_the_client_asks_for_the_secrets_they_name_then_acks_them() {
        let (store, state, mut subs) =
            (Store::default(), ClientState::default(), Subscriptions::default());
        let listener = https_listener(
            8443,
            vec![
                ("a.example.com", gateway_socket("kubernetes://a", false)),
                ("m.example.com", gateway_socket("kubernetes://m", true)),
            ],
        );
        let out = handle(
            &response(LISTENER_TYPE, "1", vec![pack_any(listener)]),
            &store,
            &state,
            &mut subs,
        );
        let sds: Vec<_> = out.iter().filter(|r| r.type_url == SECRET_TYPE).collect();
        assert_eq!(sds.len(), 1, "{out:?}");
        assert_eq!(
            sds[0].resource_names,
            ["kubernetes://a", "kubernetes://m", "kubernetes://m-cacert"]
        );
        assert!(out.iter().any(|r| r.type_url == ROUTE_TYPE && r.resource_names == ["https.8443"]));

        let ca = Ca::new("test");
        let secrets = vec![
            pack_any(certificate("kubernetes://a", &ca.leaf(&["a.example.com"]))),
            pack_any(certificate("kubernetes://m", &ca.leaf(&["m.example.com"]))),
            pack_any(client_ca("kubernetes://m-cacert", &ca.pem)),
        ];
        let out = handle(&response(SECRET_TYPE, "7", secrets), &store, &state, &mut subs);
        assert_eq!(out.len(), 1, "an ACK and nothing more: {out:?}");
        assert_eq!(out[0].version_info, "7");
        assert_eq!(out[0].response_nonce, format!("{SECRET_TYPE}-7"));
        assert!(out[0].error_detail.is_none());
        assert_eq!(out[0].resource_names.len(), 3, "the names stay subscribed");

        // A bad rotation is NACKed naming the secret; the subscription stays.
        let (chain, _) = ca.leaf(&["a.example.com"]);
        let (_, key) = ca.leaf(&["z.example.com"]);
        let bad = vec![pack_any(certificate("kubernetes://a", &(chain, key)))];
        let out = handle(&response(SECRET_TYPE, "8", bad), &store, &state, &mut subs);
        let nack = out[0].error_detail.as_ref().unwrap();
        assert!(nack.message.starts_with("Secret \"kubernetes://a\""), "{}", nack.message);
        assert_eq!(out[0].version_info, "7", "the version last accepted");
        assert_eq!(state.rejected.load(Ordering::Relaxed), 1);
    }
}
