//! Telemetry in the listeners: the `tracing` and `access_log` of every HTTP connection manager
//! of the telemetry mesh (`tests/data/telemetry`), for a sidecar and a gateway, pinned as
//! Envoy-style JSON in `tests/golden/telemetry/` (`UPDATE_GOLDEN=1` rewrites them); and what a
//! change of a Telemetry or of the mesh config does to which proxies' listeners.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::PathBuf;
use std::sync::Arc;

mod common;

use mesh_pilot::model::{Proxy, Snapshot};
use mesh_pilot::translate;
use serde_json::{Value, json};

/// Each HCM of the proxy's listeners: the listener, the chain, and its tracing and access logs.
fn hcm_telemetry(snapshot: &Snapshot, proxy: &Proxy) -> Value {
    let listeners = translate::generate(mesh_api::xds::LISTENER_TYPE, snapshot, proxy).unwrap();
    let mut out = Vec::new();
    for (name, any) in &listeners {
        let listener = mesh_api::envoy::to_json(&any.type_url, &any.value).unwrap();
        for chain in listener["filterChains"].as_array().into_iter().flatten() {
            for filter in chain["filters"].as_array().into_iter().flatten() {
                let config = &filter["typedConfig"];
                if filter["name"] != translate::listener::HCM {
                    continue;
                }
                out.push(json!({
                    "listener": name,
                    "chain": chain["name"],
                    "tracing": config.get("tracing"),
                    "accessLog": config.get("accessLog"),
                }));
            }
        }
    }
    Value::Array(out)
}

fn check_golden(file: &str, rendered: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/telemetry").join(file);
    let rendered = format!("{rendered:#}\n");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    pretty_assertions::assert_eq!(expected, rendered, "{file} differs");
}

#[test]
fn sidecar_hcms_match_their_golden_file() {
    let rendered = hcm_telemetry(&common::telemetry_mesh(), &common::reviews());
    check_golden("sidecar.json", &rendered);
}

#[test]
fn gateway_hcms_match_their_golden_file() {
    let rendered = hcm_telemetry(&common::telemetry_mesh(), &common::ingress());
    check_golden("gateway.json", &rendered);
}

#[test]
fn what_each_scope_says_reaches_its_hcms() {
    let snapshot = common::telemetry_mesh();
    let rendered = hcm_telemetry(&snapshot, &common::reviews());
    let hcms = rendered.as_array().unwrap();
    let outbound = hcms.iter().find(|h| h["listener"] == "virtualOutbound").unwrap();
    let inbound = hcms.iter().find(|h| h["listener"] == "virtualInbound").unwrap();
    // reviews samples everything (its own Telemetry over the mesh's 10%), to the collector.
    for hcm in [outbound, inbound] {
        assert_eq!(hcm["tracing"]["randomSampling"]["value"], 100.0);
        let provider = &hcm["tracing"]["provider"];
        assert_eq!(provider["name"], "envoy.tracers.opentelemetry");
        let grpc = &provider["typedConfig"]["grpcService"]["envoyGrpc"];
        assert_eq!(
            grpc["clusterName"],
            "outbound|4317||otel-collector.observability.svc.cluster.local"
        );
        assert_eq!(provider["typedConfig"]["serviceName"], "reviews.demo");
    }
    // The namespace's tags are on inbound spans only (match SERVER).
    let tag_names = |hcm: &Value| -> Vec<String> {
        hcm["tracing"]["customTags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tag"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(tag_names(inbound).contains(&"team".to_owned()));
    assert!(!tag_names(outbound).contains(&"team".to_owned()));
    // Outbound calls are not logged (reviews' CLIENT rule); inbound ones by the namespace's
    // JSON provider, with its filter.
    assert_eq!(outbound["accessLog"], Value::Null);
    let log = &inbound["accessLog"][0];
    assert_eq!(log["name"], "envoy.access_loggers.file");
    assert_eq!(log["typedConfig"]["logFormat"]["jsonFormat"]["code"], "%RESPONSE_CODE%");
    assert!(log["filter"]["orFilter"].is_object(), "{log}");
}

/// The translation cache serving the listeners of a few proxies, and which of their listener
/// resources change from one snapshot to the next.
struct Proxies {
    proxies: Vec<Proxy>,
    before: Vec<Vec<(String, Vec<u8>)>>,
}

impl Proxies {
    fn of(snapshot: &Snapshot, proxies: Vec<Proxy>) -> Self {
        let before = proxies.iter().map(|p| listeners(snapshot, p)).collect();
        Self { proxies, before }
    }

    /// Per proxy, the names of its listeners that differ in `snapshot`.
    fn changed(&mut self, snapshot: &Snapshot) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for (proxy, before) in self.proxies.iter().zip(&mut self.before) {
            let after = listeners(snapshot, proxy);
            out.push(
                after
                    .iter()
                    .zip(before.iter())
                    .filter(|(a, b)| a != b)
                    .map(|(a, _)| a.0.clone())
                    .collect(),
            );
            *before = after;
        }
        out
    }
}

fn listeners(snapshot: &Snapshot, proxy: &Proxy) -> Vec<(String, Vec<u8>)> {
    translate::generate(mesh_api::xds::LISTENER_TYPE, snapshot, proxy)
        .unwrap()
        .into_iter()
        .map(|(name, any)| (name, any.value))
        .collect()
}

fn ratings() -> Proxy {
    Proxy {
        id: "sidecar~10.1.0.21~ratings-1.demo~demo.svc.cluster.local".into(),
        namespace: "demo".into(),
        labels: [("app".to_owned(), "ratings".to_owned())].into(),
        ips: vec!["10.1.0.21".parse().unwrap()],
        service_account: "ratings".into(),
        ..Proxy::default()
    }
}

#[test]
fn a_telemetry_changes_the_listeners_of_the_proxies_it_applies_to_only() {
    let mut snapshot = common::telemetry_mesh();
    let mut proxies = Proxies::of(&snapshot, vec![common::reviews(), ratings()]);
    // reviews' own Telemetry: reviews' listeners change, ratings' do not.
    let reviews = snapshot
        .telemetries
        .iter_mut()
        .find(|t| t.metadata.name.as_deref() == Some("reviews"))
        .unwrap();
    reviews.spec.tracing[0].random_sampling_percentage = Some(50.0);
    assert_eq!(proxies.changed(&snapshot), [vec!["virtualOutbound", "virtualInbound"], vec![]]);
    // The namespace's: both.
    let namespace = snapshot
        .telemetries
        .iter_mut()
        .find(|t| t.metadata.name.as_deref() == Some("demo"))
        .unwrap();
    namespace.spec.access_logging[0].filter = None;
    // ratings logs its outbound calls too (it has no rule of its own), reviews does not.
    assert_eq!(
        proxies.changed(&snapshot),
        [vec!["virtualInbound"], vec!["virtualOutbound", "virtualInbound"]]
    );
    // The mesh config's default provider: every proxy's tracing.
    let mut mesh = (*snapshot.mesh_config).clone();
    mesh.default_providers = None;
    snapshot.mesh_config = Arc::new(mesh);
    assert_eq!(
        proxies.changed(&snapshot),
        [vec!["virtualOutbound", "virtualInbound"], vec!["virtualOutbound", "virtualInbound"]]
    );
}
