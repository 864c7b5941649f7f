//! The proxy's settings and xDS client: clear errors for missing settings, everything the
//! pilot serves accepted, anything else refused by resource and field with the last good
//! configuration kept, and a live stream to a real pilot that survives the pilot restarting.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use mesh_api::xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, PUSH_ORDER, ROUTE_TYPE};
use mesh_pilot::model::{Proxy, Snapshot};
use mesh_proxy::runtime::Upstream;
use mesh_proxy::settings::{Flags, Settings, SettingsError};
use mesh_proxy::xds::client::{ClientState, run};
use mesh_proxy::xds::store::Store;

fn golden_mesh() -> Snapshot {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh-pilot/tests/data/golden");
    let (mut snapshot, rejected) = mesh_pilot::source::local::read(&dir);
    assert!(rejected.is_empty(), "{rejected:?}");
    snapshot.version = 1;
    snapshot
}

fn flags(args: &[&str]) -> Flags {
    let mut all = vec!["mesh-proxy", "--labels-file", "/nonexistent/labels"];
    all.extend_from_slice(args);
    Flags::try_parse_from(all).unwrap()
}

#[test]
fn settings_name_what_is_missing_and_make_the_node_istio_reads() {
    let err = Settings::from_flags(&flags(&["--pod-namespace", "demo"])).unwrap_err();
    assert!(
        matches!(err, SettingsError::Missing { flag: "--pod-name", env: "POD_NAME", .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("--pod-name (or POD_NAME) is required"), "{err}");
    let full =
        ["--pod-name", "reviews-v1-x", "--pod-namespace", "demo", "--service-account", "reviews"];
    let err =
        Settings::from_flags(&flags(&[&full[..], &["--pod-ip", "10.1.2"]].concat())).unwrap_err();
    assert!(err.to_string().contains("--pod-ip \"10.1.2\": not an IP address"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels");
    std::fs::write(&labels, "app=\"reviews\"\nversion=\"v1\"\nnote=\"say \\\"hi\\\"\"\n").unwrap();
    let mut args =
        vec!["mesh-proxy", "--labels-file", labels.to_str().unwrap(), "--pod-ip", "10.1.2.3"];
    args.extend_from_slice(&full);
    let settings = Settings::from_flags(&Flags::try_parse_from(args).unwrap()).unwrap();
    assert_eq!(settings.labels["note"], "say \"hi\"");
    assert_eq!(settings.identity.to_string(), "spiffe://cluster.local/ns/demo/sa/reviews");
    let node = settings.node();
    assert_eq!(node.id, "sidecar~10.1.2.3~reviews-v1-x.demo~demo.svc.cluster.local");
    // The pilot reads it back as the workload it is.
    let proxy = Proxy::from_node(&node);
    assert_eq!(proxy.namespace, "demo");
    assert_eq!(proxy.service_account, "reviews");
    assert_eq!(proxy.ips, ["10.1.2.3".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(proxy.labels["version"], "v1");
    assert_eq!(proxy.version, format!("mesh-proxy/{}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn everything_the_pilot_serves_is_accepted() {
    let snapshot = golden_mesh();
    let proxy = Proxy {
        id: "sidecar~10.1.0.5~frontend-1.demo~demo.svc.cluster.local".into(),
        namespace: "demo".into(),
        labels: [("app".to_owned(), "frontend".to_owned())].into_iter().collect(),
        ips: vec!["10.1.0.5".parse().unwrap()],
        service_account: "frontend".into(),
        proxyless: false,
        router: false,
        version: String::new(),
    };
    let store = Store::default();
    for type_url in PUSH_ORDER {
        let resources: Vec<_> = mesh_pilot::translate::generate(type_url, &snapshot, &proxy)
            .unwrap()
            .into_iter()
            .map(|(_, any)| any)
            .collect();
        store.apply(type_url, "1", &resources).unwrap_or_else(|why| panic!("{type_url}: {why}"));
    }
    let config = store.current();
    assert!(config.complete(), "every named route and endpoint assignment is in");
    assert!(config.listeners.contains_key("virtualOutbound"));
    assert!(config.clusters.contains_key("outbound|9080|v2|reviews.demo.svc.cluster.local"));

    // ...and compiles for the data path: every route table, an upstream per cluster.
    let runtime = mesh_proxy::runtime::Runtime::build(config.clone()).unwrap();
    assert_eq!(runtime.routes.len(), config.routes.len());
    let addresses = |name: &str| -> Vec<String> {
        match runtime.upstreams[name].as_ref() {
            Upstream::Balanced(b) => b.hosts().iter().map(|h| h.address.to_string()).collect(),
            _ => panic!("{name} is not balanced"),
        }
    };
    assert_eq!(
        addresses("outbound|9080||reviews.demo.svc.cluster.local"),
        ["10.1.0.11:9080", "10.1.0.12:9080"]
    );
    assert_eq!(addresses("outbound|9080|v2|reviews.demo.svc.cluster.local"), ["10.1.0.12:9080"]);
    // Inbound, the app is called where the client called it: the pod's address.
    assert!(matches!(runtime.upstreams["inbound|8080||"].as_ref(), Upstream::OriginalDestination));
    // The pilot names the service an inbound cluster serves, and the proxy reads it back:
    // requests to it are reported under that service, whatever Host they carry.
    for port in [7000, 8080] {
        let transport = &runtime.transports[&format!("inbound|{port}||")];
        assert_eq!(transport.service.as_deref(), Some("frontend.demo.svc.cluster.local"));
    }
    assert!(matches!(
        runtime.upstreams["PassthroughCluster"].as_ref(),
        Upstream::OriginalDestination
    ));
    assert!(matches!(
        runtime.upstreams["outbound|443||api.payments.example"].as_ref(),
        Upstream::Dns(targets) if targets == &[("api.payments.example".to_owned(), 443)]
    ));
    let rds = mesh_proxy::listener::ChainAction::HttpRds {
        routes: "9080".into(),
        upgrades: Default::default(),
    };
    assert!(runtime.route_table(&rds).is_ok());
    let missing = mesh_proxy::listener::ChainAction::HttpRds {
        routes: "1".into(),
        upgrades: Default::default(),
    };
    assert!(runtime.route_table(&missing).err().unwrap().contains("has not arrived"));
}

#[test]
fn an_unsupported_resource_is_refused_by_name_and_field_and_the_last_good_config_stays() {
    let cluster = |name: &str, lb: LbPolicy| {
        envoy_types::util::pack_any(Cluster {
            name: name.into(),
            lb_policy: lb as i32,
            ..Cluster::default()
        })
    };
    let store = Store::default();
    store.apply(CLUSTER_TYPE, "1", &[cluster("a", LbPolicy::RoundRobin)]).unwrap();
    let why = store
        .apply(
            CLUSTER_TYPE,
            "2",
            &[
                cluster("a", LbPolicy::RoundRobin),
                cluster("b", LbPolicy::LoadBalancingPolicyConfig),
            ],
        )
        .unwrap_err();
    assert_eq!(why, "Cluster \"b\": lb_policy LOAD_BALANCING_POLICY_CONFIG is not supported");
    let config = store.received();
    assert_eq!(config.clusters.keys().collect::<Vec<_>>(), ["a"], "nothing of version 2 applied");
    assert_eq!(config.versions[CLUSTER_TYPE], "1");
    let garbage = envoy_types::pb::google::protobuf::Any {
        type_url: CLUSTER_TYPE.into(),
        value: vec![0xff, 0xff],
    };
    let why = store.apply(CLUSTER_TYPE, "3", &[garbage]).unwrap_err();
    assert!(
        why.starts_with("resource 0 (envoy.config.cluster.v3.Cluster) does not decode"),
        "{why}"
    );
    let why = store.apply(LISTENER_TYPE, "1", &[cluster("c", LbPolicy::RoundRobin)]).unwrap_err();
    assert!(
        why.contains("is a type.googleapis.com/envoy.config.cluster.v3.Cluster, not a envoy.config.listener.v3.Listener"),
        "{why}"
    );
}

/// A new cluster is put in force only with its endpoints (Envoy's cluster warming): a route
/// to a subset applied with its DestinationRule must not meet an empty cluster. A cluster whose
/// endpoints never come is put in force when the warming limit passes.
#[test]
fn new_clusters_wait_for_their_endpoints() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    let cluster = |name: &str| {
        envoy_types::util::pack_any(Cluster {
            name: name.into(),
            eds_cluster_config: Some(EdsClusterConfig::default()),
            ..Cluster::default()
        })
    };
    let endpoints = |name: &str| {
        envoy_types::util::pack_any(ClusterLoadAssignment {
            cluster_name: name.into(),
            ..ClusterLoadAssignment::default()
        })
    };
    let in_force = |store: &Store| store.current().clusters.keys().cloned().collect::<Vec<_>>();
    let store = Store::default();
    store.apply(CLUSTER_TYPE, "1", &[cluster("a")]).unwrap();
    store.apply(ENDPOINT_TYPE, "1", &[endpoints("a")]).unwrap();
    assert!(in_force(&store).is_empty(), "no listener yet: nothing in force");
    let listener = Listener { name: "virtualOutbound".into(), ..Listener::default() };
    store.apply(LISTENER_TYPE, "1", &[envoy_types::util::pack_any(listener)]).unwrap();
    assert_eq!(in_force(&store), ["a"]);

    store.apply(CLUSTER_TYPE, "2", &[cluster("a"), cluster("b")]).unwrap();
    assert_eq!(in_force(&store), ["a"], "b warms until its endpoints come");
    assert_eq!(store.received().clusters.len(), 2, "but it is subscribed to");
    assert!(!store.publish_if_ready(Duration::from_secs(60)));
    store.apply(ENDPOINT_TYPE, "2", &[endpoints("a"), endpoints("b")]).unwrap();
    assert_eq!(in_force(&store), ["a", "b"]);

    store.apply(CLUSTER_TYPE, "3", &[cluster("a"), cluster("b"), cluster("c")]).unwrap();
    assert_eq!(in_force(&store), ["a", "b"]);
    assert!(store.publish_if_ready(Duration::ZERO), "past the limit it goes in force anyway");
    assert_eq!(in_force(&store), ["a", "b", "c"]);
}

async fn serve_pilot(
    discovery: &Arc<mesh_pilot::ads::Discovery>,
    address: std::net::SocketAddr,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let service = discovery.service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
    });
    stop
}

async fn until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_client_syncs_with_a_real_pilot_and_keeps_its_config_across_a_pilot_restart() {
    let (publish, snapshots) = tokio::sync::watch::channel(Arc::new(golden_mesh()));
    let discovery = mesh_pilot::ads::Discovery::new(snapshots);
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let stop = serve_pilot(&discovery, address).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("labels"), "app=\"frontend\"\nversion=\"v1\"\n").unwrap();
    let labels = dir.path().join("labels");
    let settings = Settings::from_flags(
        &Flags::try_parse_from([
            "mesh-proxy",
            "--pod-name",
            "frontend-1",
            "--pod-namespace",
            "demo",
            "--service-account",
            "frontend",
            "--pod-ip",
            "10.1.0.5",
            "--labels-file",
            labels.to_str().unwrap(),
        ])
        .unwrap(),
    )
    .unwrap();
    let store = Arc::new(Store::default());
    let state = Arc::new(ClientState::default());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    tokio::spawn(run(channel, settings.node(), store.clone(), state.clone()));

    let synced = async |discovery: &mesh_pilot::ads::Discovery| {
        let status = discovery.syncz().await;
        status.len() == 1
            && [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]
                .iter()
                .all(|t| status[0].types.get(*t).is_some_and(|s| s.state() == "SYNCED"))
    };
    until("the proxy has accepted every type", Duration::from_secs(10), async || {
        synced(&discovery).await
    })
    .await;
    assert!(store.current().complete());
    let clusters = store.current().clusters.len();

    // The pilot goes away (its streams end, it stops listening): the proxy keeps running on
    // what it has.
    drop(publish);
    let _ = stop.send(());
    until("the proxy sees the stream gone", Duration::from_secs(10), async || {
        !state.connected.load(Ordering::Acquire)
    })
    .await;
    assert!(store.current().complete() && store.current().clusters.len() == clusters);

    // A new pilot on the same address: the proxy reconnects and is in sync again.
    let (_publish, snapshots) = tokio::sync::watch::channel(Arc::new(golden_mesh()));
    let restarted = mesh_pilot::ads::Discovery::new(snapshots);
    let _stop = serve_pilot(&restarted, address).await;
    until("the proxy is back in sync", Duration::from_secs(20), async || synced(&restarted).await)
        .await;
    assert!(state.connects.load(Ordering::Relaxed) >= 2);
    assert_eq!(state.rejected.load(Ordering::Relaxed), 0, "{:?}", state.last_rejection.load());
}

/// A control plane that serves one unsupported cluster and reports what the proxy answers.
struct Refusable {
    answers: tokio::sync::mpsc::UnboundedSender<
        envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest,
    >,
}

type Responses = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse,
                    tonic::Status,
                >,
            > + Send,
    >,
>;

#[tonic::async_trait]
impl envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService
    for Refusable
{
    type StreamAggregatedResourcesStream = Responses;
    type DeltaAggregatedResourcesStream = std::pin::Pin<
        Box<
            dyn futures::Stream<
                    Item = Result<
                        envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse,
                        tonic::Status,
                    >,
                > + Send,
        >,
    >;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<
            tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest>,
        >,
    ) -> Result<tonic::Response<Responses>, tonic::Status> {
        use futures::StreamExt;
        let answers = self.answers.clone();
        let mut requests = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(Ok(request)) = requests.next().await {
                let first_cds = request.type_url == CLUSTER_TYPE && request.response_nonce.is_empty();
                let _ = answers.send(request);
                if first_cds {
                    let cluster = Cluster {
                        name: "outbound|80||weird.demo.svc.cluster.local".into(),
                        lb_policy: LbPolicy::LoadBalancingPolicyConfig as i32,
                        ..Cluster::default()
                    };
                    let response = envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse {
                        version_info: "7".into(),
                        nonce: "n-7".into(),
                        type_url: CLUSTER_TYPE.into(),
                        resources: vec![envoy_types::util::pack_any(cluster)],
                        ..Default::default()
                    };
                    let _ = tx.send(Ok(response)).await;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: tonic::Request<
            tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest>,
        >,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("state of the world only"))
    }
}

#[tokio::test]
async fn what_the_proxy_does_not_implement_is_nacked_with_the_resource_and_field() {
    let (answers, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer::new(
                    Refusable { answers },
                ),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let store = Arc::new(Store::default());
    let state = Arc::new(ClientState::default());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let node = envoy_types::pb::envoy::config::core::v3::Node {
        id: "sidecar~10.0.0.1~a.demo~demo.svc.cluster.local".into(),
        ..Default::default()
    };
    tokio::spawn(run(channel, node, store.clone(), state.clone()));
    let nack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let request = seen.recv().await.unwrap();
            if request.error_detail.is_some() {
                return request;
            }
        }
    })
    .await
    .expect("a NACK within 10s");
    assert_eq!(nack.type_url, CLUSTER_TYPE);
    assert_eq!(nack.response_nonce, "n-7");
    assert_eq!(nack.version_info, "", "the version of the last accepted clusters: none yet");
    assert_eq!(
        nack.error_detail.unwrap().message,
        "Cluster \"outbound|80||weird.demo.svc.cluster.local\": lb_policy LOAD_BALANCING_POLICY_CONFIG is not supported"
    );
    assert!(store.current().clusters.is_empty(), "nothing of it applied");
    assert_eq!(state.rejected.load(Ordering::Relaxed), 1);
}
