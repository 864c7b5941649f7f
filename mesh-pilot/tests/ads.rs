//! The ADS protocol with a tonic client: first responses in push order, ACK, NACK (recorded,
//! not answered), stale nonces, pushes on change (only of what changed; endpoints and routes
//! incrementally), reconnects, debounce.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;
use common::mesh;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use mesh_api::xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use mesh_pilot::ads::Discovery;
use mesh_pilot::changes::{Changes, debounce};
use mesh_pilot::model::Snapshot;
use tokio::sync::{mpsc, watch};
use tonic::Streaming;

const NODE: &str = "sidecar~10.0.0.9~client-1.demo~demo.svc.cluster.local";

struct Client {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

async fn start(snapshot: Snapshot) -> (Arc<Discovery>, watch::Sender<Arc<Snapshot>>, String) {
    let (tx, rx) = watch::channel(Arc::new(snapshot));
    let discovery = Discovery::new(rx);
    let address = serve(&discovery).await;
    (discovery, tx, address)
}

/// Serves ADS on a loopback port; returns its URL.
async fn serve(discovery: &Arc<Discovery>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let service = discovery.service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    address
}

async fn connect(address: &str) -> Client {
    let (requests, responses) = common::ads_stream(address).await;
    Client { requests, responses }
}

fn request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node { id: NODE.into(), ..Node::default() }),
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..DiscoveryRequest::default()
    }
}

/// The resources of a response, decoded.
fn decoded<M: prost::Message + Default>(response: &DiscoveryResponse) -> Vec<M> {
    response.resources.iter().map(|any| M::decode(any.value.as_slice()).unwrap()).collect()
}

impl Client {
    async fn send(&self, request: DiscoveryRequest) {
        self.requests.send(request).await.unwrap();
    }

    async fn next(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(5), self.responses.message())
            .await
            .expect("a response in time")
            .unwrap()
            .unwrap()
    }

    async fn nothing_within(&mut self, wait: Duration) {
        if let Ok(Ok(Some(response))) = tokio::time::timeout(wait, self.responses.message()).await {
            panic!("unexpected response for {} (nonce {})", response.type_url, response.nonce);
        }
    }
}

#[tokio::test]
async fn ack_nack_and_stale_nonce() {
    let (discovery, _tx, address) = start(mesh()).await;
    let mut client = connect(&address).await;

    client.send(request(CLUSTER_TYPE, &[], "", "")).await;
    let cds = client.next().await;
    assert_eq!((cds.type_url.as_str(), cds.version_info.as_str()), (CLUSTER_TYPE, "1"));
    assert_eq!(cds.resources.len(), 7);

    // ACK: recorded, not answered.
    client.send(request(CLUSTER_TYPE, &[], "1", &cds.nonce)).await;
    client.nothing_within(Duration::from_millis(300)).await;
    let status = &discovery.syncz().await[0];
    assert_eq!(status.id, NODE);
    assert_eq!(status.types[CLUSTER_TYPE].state(), "SYNCED");

    // EDS for two named clusters only.
    let names =
        ["outbound|80|v1|hello.demo.svc.cluster.local", "outbound|5432||db.demo.svc.cluster.local"];
    client.send(request(ENDPOINT_TYPE, &names, "", "")).await;
    let eds = client.next().await;
    assert_eq!(eds.resources.len(), 2);

    // NACK: the error is kept for proxy-status, nothing is sent back.
    let mut nack = request(ENDPOINT_TYPE, &names, "", &eds.nonce);
    nack.error_detail =
        Some(RpcStatus { code: 3, message: "bad endpoint".into(), ..RpcStatus::default() });
    client.send(nack).await;
    client.nothing_within(Duration::from_millis(300)).await;
    let status = &discovery.syncz().await[0];
    assert_eq!(status.types[ENDPOINT_TYPE].state(), "ERROR");
    assert_eq!(status.types[ENDPOINT_TYPE].last_nack.as_deref(), Some("bad endpoint"));
    assert!(
        discovery.metrics.encode().contains("pilot_xds_rejects_total{type=\"eds\"} 1"),
        "{}",
        discovery.metrics.encode()
    );

    // A stale nonce is ignored, even with new names.
    client.send(request(ENDPOINT_TYPE, &names[..1], "1", "not-the-nonce")).await;
    client.nothing_within(Duration::from_millis(300)).await;

    // Changing the subscription with the current nonce gets an answer with just that.
    client.send(request(ENDPOINT_TYPE, &names[..1], "1", &eds.nonce)).await;
    let eds = client.next().await;
    assert_eq!(eds.resources.len(), 1);
    client.send(request(ENDPOINT_TYPE, &names[..1], "1", &eds.nonce)).await;
    client.nothing_within(Duration::from_millis(200)).await;
    assert_eq!(discovery.syncz().await[0].types[ENDPOINT_TYPE].state(), "SYNCED");
}

#[tokio::test]
async fn changes_push_only_the_types_that_changed_in_order() {
    let (discovery, tx, address) = start(mesh()).await;
    let mut client = connect(&address).await;
    let mut nonces = std::collections::HashMap::new();
    for type_url in [CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE] {
        let names: &[&str] = if type_url == ROUTE_TYPE { &["80"] } else { &[] };
        client.send(request(type_url, names, "", "")).await;
        let response = client.next().await;
        client.send(request(type_url, names, &response.version_info, &response.nonce)).await;
        nonces.insert(type_url, response.nonce);
    }
    client.nothing_within(Duration::from_millis(200)).await;

    // A new weight changes routes only: one RDS push, nothing else.
    let mut next = mesh();
    next.version = 2;
    let vs = &mut next.virtual_services[0];
    vs.spec.http[2].route[0].weight = Some(50);
    vs.spec.http[2].route[1].weight = Some(50);
    tx.send(Arc::new(next)).unwrap();
    let pushed = client.next().await;
    assert_eq!((pushed.type_url.as_str(), pushed.version_info.as_str()), (ROUTE_TYPE, "2"));
    client.nothing_within(Duration::from_millis(300)).await;

    // A new service changes clusters, listeners and routes: pushed in that order.
    tx.send(Arc::new(with_cache_service(3))).unwrap();
    let order: Vec<String> =
        [client.next().await, client.next().await].iter().map(|r| r.type_url.clone()).collect();
    assert_eq!(order, [CLUSTER_TYPE, LISTENER_TYPE]);
    assert_eq!(discovery.syncz().await.len(), 1);
}

/// The test mesh at `version`, with one more service (`cache`, like `db`).
fn with_cache_service(version: u64) -> Snapshot {
    let mut next = mesh();
    next.version = version;
    let mut extra = next.services["db.demo.svc.cluster.local"].clone();
    extra.hostname = "cache.demo.svc.cluster.local".into();
    extra.name = "cache".into();
    extra.vip = Some("10.96.0.30".parse().unwrap());
    next.services.insert(extra.hostname.clone(), extra);
    next
}

/// Envoy warms a cluster that CDS changed until an EDS response names it again, and asks for
/// it with what reads as an ACK: every CDS push is followed by the watched endpoints, changed or
/// not, or Envoy would wait out its initial fetch timeout before using the new cluster.
#[tokio::test]
async fn every_cluster_push_is_followed_by_the_endpoints() {
    let (_discovery, tx, address) = start(mesh()).await;
    let mut client = connect(&address).await;
    let names = ["outbound|80|v1|hello.demo.svc.cluster.local"];
    for (type_url, names) in [(CLUSTER_TYPE, &[][..]), (ENDPOINT_TYPE, &names[..])] {
        client.send(request(type_url, names, "", "")).await;
        let response = client.next().await;
        client.send(request(type_url, names, &response.version_info, &response.nonce)).await;
    }
    client.nothing_within(Duration::from_millis(200)).await;

    // A new service: clusters change, the watched endpoints do not.
    tx.send(Arc::new(with_cache_service(2))).unwrap();
    let cds = client.next().await;
    let eds = client.next().await;
    assert_eq!((cds.type_url.as_str(), eds.type_url.as_str()), (CLUSTER_TYPE, ENDPOINT_TYPE));
    assert_eq!(eds.resources.len(), 1, "the watched assignment, unchanged, sent again");
    client.send(request(CLUSTER_TYPE, &[], "2", &cds.nonce)).await;
    client.send(request(ENDPOINT_TYPE, &names, "2", &eds.nonce)).await;
    client.nothing_within(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn debounce_coalesces_a_burst_into_one_snapshot() {
    let changes = Changes::default();
    let (publish, mut published) = watch::channel(Arc::new(Snapshot::default()));
    tokio::spawn(debounce(
        changes.clone(),
        publish,
        Duration::from_millis(100),
        Duration::from_secs(1),
    ));
    for i in 0..20 {
        changes.put(Snapshot { domain: format!("burst-{i}"), ..Snapshot::default() });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    published.changed().await.unwrap();
    let got = published.borrow_and_update().clone();
    assert_eq!((got.version, got.domain.as_str()), (1, "burst-19"), "one push with the last state");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), published.changed()).await.is_err(),
        "no second push"
    );
}

#[tokio::test]
async fn malformed_requests_are_refused_without_harm() {
    let (discovery, _tx, address) = start(mesh()).await;
    // No node on the first request: the stream is refused.
    let mut client = connect(&address).await;
    let mut anonymous = request(CLUSTER_TYPE, &[], "", "");
    anonymous.node = None;
    client.send(anonymous).await;
    let err = tokio::time::timeout(Duration::from_secs(5), client.responses.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Unknown types are ignored; the stream stays usable.
    let mut client = connect(&address).await;
    client.send(request("type.googleapis.com/some.Unknown", &[], "", "")).await;
    client.nothing_within(Duration::from_millis(200)).await;
    client.send(request(CLUSTER_TYPE, &[], "", "")).await;
    assert_eq!(client.next().await.type_url, CLUSTER_TYPE);
    let _ = discovery;
}

#[tokio::test]
async fn delta_sends_only_what_changed_and_names_removals() {
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    let (discovery, tx, address) = start(mesh()).await;
    let (requests, mut responses) = connect_delta(&address).await;
    let node = Some(Node { id: NODE.into(), ..Node::default() });

    // Wildcard CDS: everything, each with a version.
    requests
        .send(DeltaDiscoveryRequest {
            node: node.clone(),
            type_url: CLUSTER_TYPE.into(),
            ..DeltaDiscoveryRequest::default()
        })
        .await
        .unwrap();
    let first: envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse =
        next_delta(&mut responses).await;
    assert_eq!(first.resources.len(), 7);
    assert!(first.resources.iter().all(|r| !r.version.is_empty()));
    requests
        .send(DeltaDiscoveryRequest {
            type_url: CLUSTER_TYPE.into(),
            response_nonce: first.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        })
        .await
        .unwrap();

    // Named EDS, then a name that does not exist: answered as removed.
    requests
        .send(DeltaDiscoveryRequest {
            type_url: ENDPOINT_TYPE.into(),
            resource_names_subscribe: vec![
                "outbound|80|v1|hello.demo.svc.cluster.local".into(),
                "outbound|1|x|nope".into(),
            ],
            ..DeltaDiscoveryRequest::default()
        })
        .await
        .unwrap();
    let eds = next_delta(&mut responses).await;
    assert_eq!(
        eds.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["outbound|80|v1|hello.demo.svc.cluster.local"]
    );
    assert_eq!(eds.removed_resources, ["outbound|1|x|nope"]);
    requests
        .send(DeltaDiscoveryRequest {
            type_url: ENDPOINT_TYPE.into(),
            response_nonce: eds.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        })
        .await
        .unwrap();

    // The db service goes away: CDS names its cluster as removed and resends nothing else.
    let mut smaller = mesh();
    smaller.version = 2;
    smaller.services.remove("db.demo.svc.cluster.local");
    tx.send(Arc::new(smaller)).unwrap();
    let update = next_delta(&mut responses).await;
    assert_eq!(update.type_url, CLUSTER_TYPE);
    assert!(update.resources.is_empty(), "unchanged clusters are not resent");
    assert_eq!(update.removed_resources, ["outbound|5432||db.demo.svc.cluster.local"]);
    requests
        .send(DeltaDiscoveryRequest {
            type_url: CLUSTER_TYPE.into(),
            response_nonce: update.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = &discovery.syncz().await[0];
    assert_eq!(status.types[CLUSTER_TYPE].state(), "SYNCED");
    assert_eq!(status.types[ENDPOINT_TYPE].state(), "SYNCED");
}

/// Opens a delta ADS stream: where to send requests, and the responses.
async fn connect_delta(
    address: &str,
) -> (
    mpsc::Sender<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest>,
    Streaming<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse>,
) {
    let mut grpc = AggregatedDiscoveryServiceClient::connect(address.to_owned()).await.unwrap();
    let (requests, rx) = mpsc::channel(16);
    let responses = grpc
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (requests, responses)
}

async fn next_delta(
    responses: &mut Streaming<
        envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse,
    >,
) -> envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse {
    tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("a delta response in time")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn an_endpoint_change_sends_only_the_changed_assignments_and_a_reconnect_gets_all() {
    const ALL: [&str; 4] = [
        "outbound|5432||db.demo.svc.cluster.local",
        "outbound|80|v1|hello.demo.svc.cluster.local",
        "outbound|80|v2|hello.demo.svc.cluster.local",
        "outbound|80||hello.demo.svc.cluster.local",
    ];
    let (discovery, tx, address) = start(mesh()).await;
    let mut client = connect(&address).await;
    client.send(request(CLUSTER_TYPE, &[], "", "")).await;
    let cds = client.next().await;
    client.send(request(CLUSTER_TYPE, &[], &cds.version_info, &cds.nonce)).await;
    client.send(request(ENDPOINT_TYPE, &ALL, "", "")).await;
    let eds = client.next().await;
    assert_eq!(eds.resources.len(), 4, "the first response holds every requested assignment");
    client.send(request(ENDPOINT_TYPE, &ALL, &eds.version_info, &eds.nonce)).await;
    client.nothing_within(Duration::from_millis(200)).await;

    // hello-v2 moves: only the assignments it is in are sent, and no clusters.
    let mut next = mesh();
    next.version = 2;
    let key = ("hello.demo.svc.cluster.local".to_owned(), 80);
    let moved = next.endpoints.get_mut(&key).unwrap();
    let v2 = moved.iter_mut().find(|e| e.labels.get("version").is_some_and(|v| v == "v2"));
    v2.unwrap().address = "127.0.0.3".parse().unwrap();
    tx.send(Arc::new(next)).unwrap();
    let pushed = client.next().await;
    assert_eq!(pushed.type_url, ENDPOINT_TYPE);
    let decoded: Vec<String> =
        decoded::<envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment>(&pushed)
            .into_iter()
            .map(|assignment| assignment.cluster_name)
            .collect();
    assert_eq!(decoded, [ALL[2], ALL[3]]);
    client.send(request(ENDPOINT_TYPE, &ALL, &pushed.version_info, &pushed.nonce)).await;
    client.nothing_within(Duration::from_millis(300)).await;

    // The proxy reconnects (a new stream, as after a pilot restart): it gets everything again,
    // and the old stream's sync state is gone.
    drop(client);
    let mut again = connect(&address).await;
    again.send(request(ENDPOINT_TYPE, &ALL, "2", "")).await;
    let all = again.next().await;
    assert_eq!(all.resources.len(), 4);
    again.send(request(ENDPOINT_TYPE, &ALL, &all.version_info, &all.nonce)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = discovery.syncz().await;
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(status[0].types[ENDPOINT_TYPE].state(), "SYNCED");
}

#[tokio::test]
async fn nothing_is_served_before_the_first_snapshot() {
    // A pilot that has read nothing yet must not tell a reconnecting proxy "no clusters":
    // the proxy would drop the config its traffic runs on.
    let (_discovery, tx, address) = start(Snapshot::default()).await;
    let mut client = connect(&address).await;
    client.send(request(CLUSTER_TYPE, &[], "", "")).await;
    client.nothing_within(Duration::from_millis(300)).await;
    tx.send(Arc::new(mesh())).unwrap();
    let cds = client.next().await;
    assert_eq!((cds.type_url.as_str(), cds.version_info.as_str()), (CLUSTER_TYPE, "1"));
    assert_eq!(cds.resources.len(), 7);
}

#[tokio::test]
async fn a_burst_of_changes_ends_with_the_final_state_served() {
    let changes = Changes::default();
    let (publish, snapshots) = watch::channel(Arc::new(Snapshot::default()));
    let (after, max) = (Duration::from_millis(50), Duration::from_millis(500));
    tokio::spawn(debounce(changes.clone(), publish, after, max));
    let discovery = Discovery::new(snapshots);
    let address = serve(&discovery).await;
    changes.put(mesh());
    let mut client = connect(&address).await;
    client.send(request(CLUSTER_TYPE, &[], "", "")).await;
    let first = client.next().await;
    assert_eq!(first.resources.len(), 7);
    client.send(request(CLUSTER_TYPE, &[], &first.version_info, &first.nonce)).await;

    // A thousand reads in a row, faster than anything drains them (a source reading in a
    // loop), the last one different from all the others: that last one is what is served.
    for _ in 0..1000 {
        let mut without_db = mesh();
        without_db.services.remove("db.demo.svc.cluster.local");
        changes.put(without_db);
    }
    let mut last = mesh();
    let mut cache = last.services["db.demo.svc.cluster.local"].clone();
    cache.hostname = "cache.demo.svc.cluster.local".into();
    cache.name = "cache".into();
    cache.vip = Some("10.96.0.30".parse().unwrap());
    last.services.insert(cache.hostname.clone(), cache);
    changes.put(last);

    let pushed = client.next().await;
    let names: Vec<String> =
        decoded::<envoy_types::pb::envoy::config::cluster::v3::Cluster>(&pushed)
            .into_iter()
            .map(|cluster| cluster.name)
            .collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(names.iter().any(|n| n == "outbound|5432||cache.demo.svc.cluster.local"), "{names:?}");
    client.send(request(CLUSTER_TYPE, &[], &pushed.version_info, &pushed.nonce)).await;
    client.nothing_within(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_request_for_many_on_demand_listeners_gets_at_most_the_limit_and_the_stream_goes_on() {
    // 150 HTTP services a gRPC client could name as `host:port`.
    let mut snapshot = mesh();
    let hello = snapshot.services["hello.demo.svc.cluster.local"].clone();
    for i in 0..150 {
        let mut service = hello.clone();
        service.name = format!("svc-{i}");
        service.hostname = format!("svc-{i}.demo.svc.cluster.local");
        service.vip = None;
        snapshot.services.insert(service.hostname.clone(), service);
    }
    let (discovery, _tx, address) = start(snapshot).await;
    let mut client = connect(&address).await;
    let names: Vec<String> = (0..150)
        .map(|i| format!("svc-{i}.demo.svc.cluster.local:80"))
        .chain((0..9_850).map(|i| format!("nothing-{i}.example:80")))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    client.send(request(LISTENER_TYPE, &names, "", "")).await;
    let lds = client.next().await;
    assert_eq!(lds.type_url, LISTENER_TYPE);
    assert_eq!(lds.resources.len(), 100, "at most 100 on-demand listeners per stream");
    assert_eq!(discovery.metrics.on_demand_ignored.get(), 9_900);

    // The stream goes on: the ACK is taken, and other types are served.
    client.send(request(LISTENER_TYPE, &names, &lds.version_info, &lds.nonce)).await;
    client.nothing_within(Duration::from_millis(200)).await;
    client.send(request(CLUSTER_TYPE, &[], "", "")).await;
    let cds = client.next().await;
    assert_eq!(cds.type_url, CLUSTER_TYPE);
    assert!(cds.resources.len() > 150);
    let status = &discovery.syncz().await[0];
    assert_eq!(status.types[LISTENER_TYPE].state(), "SYNCED");
}

#[tokio::test]
async fn a_delta_stream_subscribing_past_the_name_limit_is_refused() {
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    let (_discovery, _tx, address) = start(mesh()).await;
    let (requests, mut responses) = connect_delta(&address).await;
    // Each request within the limit; together past it (subscriptions add up).
    let subscribe = |from: usize, node: Option<Node>| DeltaDiscoveryRequest {
        node,
        type_url: ENDPOINT_TYPE.into(),
        resource_names_subscribe: (from..from + 50_001).map(|i| format!("c{i}")).collect(),
        ..DeltaDiscoveryRequest::default()
    };
    requests.send(subscribe(0, Some(Node { id: NODE.into(), ..Node::default() }))).await.unwrap();
    let first = next_delta(&mut responses).await;
    assert_eq!(first.removed_resources.len(), 50_001, "names of nothing are answered as removed");
    requests.send(subscribe(50_001, None)).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("an answer in time")
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
}
