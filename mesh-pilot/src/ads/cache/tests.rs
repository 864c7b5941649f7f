//! The cache's tests: what a change re-translates and what it keeps, against whole-snapshot
//! translation.

use std::time::Duration;

use super::*;
use crate::model::Endpoint;
use mesh_api::xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, PUSH_ORDER, ROUTE_TYPE};

#[tokio::test]
async fn one_key_translates_once_however_many_ask_at_the_same_time() {
    let cells: Arc<Cells<&str, u32>> = Arc::new(Cells::new(10));
    let runs = Arc::new(AtomicU64::new(0));
    let ask = |key| {
        let (cells, runs) = (cells.clone(), runs.clone());
        tokio::spawn(async move {
            cells
                .get_or_init(key, 1, || async {
                    runs.fetch_add(1, Ordering::Relaxed);
                    // Long enough for the other caller to arrive while this one works.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    7
                })
                .await
        })
    };
    let (a, b) = (ask("k"), ask("k"));
    assert_eq!((a.await.unwrap(), b.await.unwrap()), (7, 7));
    assert_eq!(runs.load(Ordering::Relaxed), 1, "single flight");
}

#[tokio::test]
async fn different_keys_translate_at_the_same_time() {
    let cells: Arc<Cells<&str, u32>> = Arc::new(Cells::new(10));
    // Each translation waits for the other: they finish only if neither holds a lock.
    let both = Arc::new(tokio::sync::Barrier::new(2));
    let ask = |key| {
        let (cells, both) = (cells.clone(), both.clone());
        tokio::spawn(async move {
            cells
                .get_or_init(key, 1, || async {
                    both.wait().await;
                    1
                })
                .await
        })
    };
    let (a, b) = (ask("a"), ask("b"));
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        (a.await.unwrap(), b.await.unwrap())
    });
    assert_eq!(done.await.expect("the two keys translated concurrently"), (1, 1));
}

#[tokio::test]
async fn cells_unused_for_a_snapshot_are_swept_and_the_map_stays_bounded() {
    let cells: Cells<u32, u32> = Cells::new(3);
    for key in 0..3 {
        cells.get_or_init(key, 1, || async { key }).await;
    }
    // Full: a fourth key in the same epoch is computed, not kept.
    assert_eq!(cells.get_or_init(9, 1, || async { 9 }).await, 9);
    assert_eq!(cells.len().await, 3);
    // Epoch 2 uses key 0 only; epoch 3 sweeps keys 1 and 2 (unused in epoch 2).
    cells.get_or_init(0, 2, || async { 100 }).await;
    assert_eq!(cells.get_or_init(0, 3, || async { 100 }).await, 0, "kept across epochs");
    assert_eq!(cells.len().await, 1);
}

fn mesh() -> Snapshot {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mesh");
    let (mut snapshot, rejected) = crate::source::local::read(&dir);
    assert!(rejected.is_empty(), "{rejected:?}");
    snapshot.version = 1;
    snapshot
}

/// The sidecar of a workload.
fn workload(namespace: &str, account: &str, ip: &str, labels: &[(&str, &str)]) -> Proxy {
    Proxy {
        id: format!("sidecar~{ip}~{account}-1.{namespace}~{namespace}.svc.cluster.local"),
        namespace: namespace.into(),
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ips: vec![ip.parse().unwrap()],
        service_account: account.into(),
        proxyless: false,
        router: false,
        version: String::new(),
    }
}

/// The sidecar of `hello` v1 in the test mesh (at its endpoint's address).
fn hello_v1() -> Proxy {
    workload("demo", "hello", "127.0.0.1", &[("app", "hello"), ("version", "v1")])
}

fn endpoint_of<'a>(snapshot: &'a mut Snapshot, version: &str) -> &'a mut Endpoint {
    let key = ("hello.demo.svc.cluster.local".to_owned(), 80);
    let list = snapshot.endpoints.get_mut(&key).expect("hello has endpoints");
    let found = list.iter_mut().find(|e| e.labels.get("version").is_some_and(|v| v == version));
    found.expect("an endpoint of that version")
}

#[tokio::test]
async fn translations_survive_a_change_they_cannot_see_and_not_one_they_can() {
    let cache = TranslationCache::default();
    let first = mesh();
    let proxy = hello_v1();
    let mut before = HashMap::new();
    for type_url in PUSH_ORDER {
        before.insert(type_url, cache.get(type_url, &first, &proxy).await.unwrap());
    }
    assert_eq!(cache.translations(), PUSH_ORDER.len() as u64);

    // Another workload's endpoint moves: endpoints and clusters (which name endpoint
    // identities) translate again; this proxy's secrets, listeners and routes are kept as
    // they were.
    let mut moved = first.clone();
    moved.version = 2;
    endpoint_of(&mut moved, "v2").address = "10.9.9.9".parse().unwrap();
    for type_url in PUSH_ORDER {
        let after = cache.get(type_url, &moved, &proxy).await.unwrap();
        let kept = Arc::ptr_eq(&before[type_url], &after);
        let expected_kept = ![CLUSTER_TYPE, ENDPOINT_TYPE].contains(&type_url);
        assert_eq!(kept, expected_kept, "{type_url}");
    }
    assert_eq!(cache.translations(), PUSH_ORDER.len() as u64 + 2);

    // A route weight changes: routes translate again, with the new weight.
    let mut reweighted = moved.clone();
    reweighted.version = 3;
    let http = &mut reweighted.virtual_services[0].spec.http[2];
    http.route[0].weight = Some(50);
    http.route[1].weight = Some(50);
    let routes = cache.get(ROUTE_TYPE, &reweighted, &proxy).await.unwrap();
    assert!(!Arc::ptr_eq(&before[ROUTE_TYPE], &routes));
    assert_ne!(before[ROUTE_TYPE].hashes, routes.hashes);
    let listeners = cache.get(LISTENER_TYPE, &reweighted, &proxy).await.unwrap();
    assert!(Arc::ptr_eq(&before[LISTENER_TYPE], &listeners), "listeners read no routes");

    // The proxy's own endpoint changes port: its inbound listener changes.
    let mut own = reweighted.clone();
    own.version = 4;
    endpoint_of(&mut own, "v1").port = 9999;
    let listeners = cache.get(LISTENER_TYPE, &own, &proxy).await.unwrap();
    assert!(!Arc::ptr_eq(&before[LISTENER_TYPE], &listeners));
    assert_ne!(before[LISTENER_TYPE].hashes, listeners.hashes);
}

/// The names of the resources whose hash differs between two translations.
fn changed(before: &Translated, after: &Translated) -> Vec<String> {
    let names = |t: &Translated| t.resources.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(before), names(after), "the same resources");
    (0..after.resources.len())
        .filter(|&i| before.hashes[i] != after.hashes[i])
        .map(|i| after.resources[i].0.clone())
        .collect()
}

#[tokio::test]
async fn a_rename_changes_only_the_resources_that_name_the_object() {
    // Clusters name their DestinationRule and routes their VirtualService: a rename must
    // reach the proxies that show it, and change nothing else they would be pushed.
    let cache = TranslationCache::default();
    let first = mesh();
    let proxy = hello_v1();
    let clusters = cache.get(CLUSTER_TYPE, &first, &proxy).await.unwrap();
    let routes = cache.get(ROUTE_TYPE, &first, &proxy).await.unwrap();

    let mut rule_renamed = first.clone();
    rule_renamed.version = 2;
    rule_renamed.destination_rules[0].metadata.name = Some("hello-renamed".to_owned());
    let renamed_clusters = cache.get(CLUSTER_TYPE, &rule_renamed, &proxy).await.unwrap();
    assert_eq!(
        changed(&clusters, &renamed_clusters),
        [
            "outbound|80|v1|hello.demo.svc.cluster.local",
            "outbound|80|v2|hello.demo.svc.cluster.local",
            "outbound|80||hello.demo.svc.cluster.local",
        ]
    );
    let same_routes = cache.get(ROUTE_TYPE, &rule_renamed, &proxy).await.unwrap();
    assert!(changed(&routes, &same_routes).is_empty(), "routes name no rule");

    let mut route_renamed = rule_renamed.clone();
    route_renamed.version = 3;
    route_renamed.virtual_services[0].metadata.name = Some("hello-renamed".to_owned());
    let renamed_routes = cache.get(ROUTE_TYPE, &route_renamed, &proxy).await.unwrap();
    assert_eq!(changed(&same_routes, &renamed_routes), ["80"]);
    let kept = cache.get(CLUSTER_TYPE, &route_renamed, &proxy).await.unwrap();
    assert!(Arc::ptr_eq(&renamed_clusters, &kept), "clusters read no VirtualService");
}

#[tokio::test]
async fn a_telemetry_retranslates_only_the_listeners_of_the_proxies_it_applies_to() {
    let cache = TranslationCache::default();
    let first = mesh();
    let hello = hello_v1();
    let other = workload("demo", "other", "10.9.0.1", &[("app", "other")]);
    let mut before = HashMap::new();
    for (proxy, type_url) in
        [(&hello, LISTENER_TYPE), (&other, LISTENER_TYPE), (&hello, CLUSTER_TYPE)]
    {
        before.insert(
            (proxy.id.clone(), type_url),
            cache.get(type_url, &first, proxy).await.unwrap(),
        );
    }
    let kept = |proxy: &Proxy, type_url: &'static str, now: &Arc<Translated>| {
        Arc::ptr_eq(&before[&(proxy.id.clone(), type_url)], now)
    };
    // A Telemetry selecting hello: its listeners translate again (and log now); the other
    // workload's and hello's clusters are kept.
    let mut with = first.clone();
    with.version = 2;
    let loaded = mesh_api::load::load_str(
        "t.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: hello, namespace: demo}\nspec:\n  selector: {matchLabels: {app: hello}}\n  accessLogging: [{providers: [{name: envoy}]}]\n",
    );
    let Some(mesh_api::Resource::Telemetry(t)) =
        loaded.objects.into_iter().next().map(|o| o.resource)
    else {
        panic!("a Telemetry")
    };
    with.telemetries.push(t);
    let listeners = cache.get(LISTENER_TYPE, &with, &hello).await.unwrap();
    assert!(!kept(&hello, LISTENER_TYPE, &listeners));
    assert_eq!(
        changed(&before[&(hello.id.clone(), LISTENER_TYPE)], &listeners),
        ["virtualOutbound", "virtualInbound"]
    );
    assert!(kept(&other, LISTENER_TYPE, &cache.get(LISTENER_TYPE, &with, &other).await.unwrap()));
    assert!(kept(&hello, CLUSTER_TYPE, &cache.get(CLUSTER_TYPE, &with, &hello).await.unwrap()));
    // The mesh config is read by every proxy's listeners, and by nothing else.
    let mut mesh_changed = with.clone();
    mesh_changed.version = 3;
    mesh_changed.mesh_config = Arc::new(mesh_api::mesh::MeshConfig {
        access_log_file: "/dev/stdout".into(),
        ..mesh_api::mesh::MeshConfig::default()
    });
    let now = cache.get(LISTENER_TYPE, &mesh_changed, &other).await.unwrap();
    assert!(!kept(&other, LISTENER_TYPE, &now), "the other proxy logs to the mesh's file now");
    assert!(kept(
        &hello,
        CLUSTER_TYPE,
        &cache.get(CLUSTER_TYPE, &mesh_changed, &hello).await.unwrap()
    ));
}

#[tokio::test]
async fn the_cache_answers_what_translation_of_the_whole_snapshot_does() {
    // Each type is translated from only the parts it reads: that must change nothing.
    let cache = TranslationCache::default();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    let (mut golden, rejected) = crate::source::local::read(&dir);
    assert!(rejected.is_empty(), "{rejected:?}");
    golden.version = 1;
    let mesh = mesh();
    let frontend =
        workload("demo", "frontend", "10.1.0.5", &[("app", "frontend"), ("version", "v1")]);
    let grpc = Proxy { proxyless: true, ..frontend.clone() };
    // A gateway: TLS passed through by the SNI of a bound VirtualService's `tls` rule, and
    // terminated with a Secret's certificate.
    let edge = mesh_api::load::load_str(
        "edge.yaml",
        r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec: {clusterIP: 10.96.0.9, ports: [{name: tls, port: 8443}], selector: {app: db}}
---
apiVersion: v1
kind: Secret
metadata: {name: cred, namespace: demo}
stringData: {tls.crt: CERT, tls.key: KEY}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: demo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8444, name: tls, protocol: TLS}
hosts: [db.example.com]
tls: {mode: PASSTHROUGH}
  - port: {number: 8443, name: https, protocol: HTTPS}
hosts: [web.example.com]
tls: {mode: SIMPLE, credentialName: cred}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: demo}
spec:
  hosts: [db.example.com]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [db.example.com]}]
route: [{destination: {host: db}}]
"#,
    );
    let objects: Vec<Arc<mesh_api::load::Loaded>> =
        edge.objects.into_iter().map(Arc::new).collect();
    let (mut edge, rejected) = crate::source::local::build(&objects);
    assert!(rejected.is_empty(), "{rejected:?}");
    edge.version = 1;
    let gateway = Proxy {
        router: true,
        labels: [("istio".to_owned(), "ingressgateway".to_owned())].into(),
        ..workload("demo", "edge", "10.1.0.7", &[])
    };
    // Telemetry at every scope, with the mesh config's providers.
    let telemetry_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/telemetry");
    let (mut telemetry, rejected) = crate::source::local::read(&telemetry_dir.join("config"));
    assert!(rejected.is_empty(), "{rejected:?}");
    telemetry.mesh_config = Arc::new(
        mesh_api::mesh::MeshConfig::from_file(&telemetry_dir.join("meshconfig.yaml")).unwrap(),
    );
    telemetry.version = 1;
    let reviews = workload("demo", "reviews", "10.1.0.11", &[("app", "reviews")]);
    let cases = [
        (&mesh, hello_v1()),
        (&golden, frontend),
        (&golden, grpc),
        (&edge, gateway),
        (&telemetry, reviews),
    ];
    for (snapshot, proxy) in cases {
        for type_url in PUSH_ORDER {
            let whole = translate::generate(type_url, snapshot, &proxy).unwrap();
            let cached = cache.get(type_url, snapshot, &proxy).await.unwrap();
            assert!(cached.resources == whole, "{type_url} for {proxy:?}");
        }
    }
}
