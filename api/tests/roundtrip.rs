//! Every kind survives YAML -> typed -> YAML/JSON unchanged: no field the user wrote is lost,
//! renamed or invented, and the canary setup reads as the user meant it.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::{Path, PathBuf};

use mesh_api::Resource;
use mesh_api::load::{self, Loaded};
use mesh_api::networking::{ClientTlsMode, Percent, StringMatch};
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn load_ok(name: &str) -> Vec<Loaded> {
    match load::load_path(&data(name)).into_result() {
        Ok(objects) => objects,
        Err(errors) => panic!("{name} does not load:\n{}", render(&errors)),
    }
}

fn render(errors: &[impl std::fmt::Display]) -> String {
    errors.iter().map(|e| format!("  {e}\n")).collect()
}

/// Numbers compare by value: `10` written by the user equals `10.0` from an f64 field.
fn normalize(value: Value) -> Value {
    match value {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Number(n), Value::Number),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, normalize(v))).collect())
        }
        other => other,
    }
}

/// The documents of a file as plain JSON values, straight from the YAML.
fn raw_documents(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(data(name)).unwrap();
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap())
        .map(normalize)
        .collect()
}

fn assert_round_trip(name: &str) -> Vec<Loaded> {
    let objects = load_ok(name);
    let raw = raw_documents(name);
    assert_eq!(objects.len(), raw.len(), "{name}: one object per document");
    for (loaded, original) in objects.iter().zip(raw) {
        let what = loaded.resource.object_ref();
        // JSON: exactly what the user wrote, field for field (apiVersion aside, see below).
        let mut json = normalize(loaded.resource.to_json().unwrap());
        let mut original = original;
        // The mesh writes the version it serves; v1beta1/v1alpha3 input comes back as v1.
        for doc in [&mut json, &mut original] {
            doc.as_object_mut().unwrap().remove("apiVersion");
        }
        pretty_assertions::assert_eq!(json, original, "{name}: {what} changed in JSON");
        // YAML: what we write loads back to the same typed object.
        let yaml = loaded.resource.to_yaml().unwrap();
        let again = load::load_str("again.yaml", &yaml).into_result().unwrap();
        assert_eq!(again.len(), 1);
        pretty_assertions::assert_eq!(again[0].resource, loaded.resource, "{name}: {what} YAML");
    }
    objects
}

#[test]
fn virtual_service_round_trips() {
    let objects = assert_round_trip("virtualservice.yaml");
    let Resource::VirtualService(vs) = &objects[0].resource else { panic!("not a VirtualService") };
    assert_eq!(vs.spec.http.len(), 6);
    assert_eq!(vs.spec.tls.len(), 1);
    assert_eq!(vs.spec.tcp[0].route[1].weight, Some(40));
    let jason = &vs.spec.http[0];
    assert_eq!(jason.matches[0].headers["end-user"], StringMatch::exact("jason"));
    assert_eq!(jason.matches[0].headers["x-debug"], StringMatch::default());
    assert_eq!(jason.retries.as_ref().unwrap().per_try_timeout.as_ref().unwrap().as_str(), "250ms");
}

#[test]
fn destination_rule_round_trips() {
    let objects = assert_round_trip("destinationrule.yaml");
    let Resource::DestinationRule(dr) = &objects[0].resource else {
        panic!("not a DestinationRule")
    };
    let policy = dr.spec.traffic_policy.as_ref().unwrap();
    assert_eq!(policy.tls.as_ref().unwrap().mode, Some(ClientTlsMode::IstioMutual));
    assert_eq!(policy.outlier_detection.as_ref().unwrap().consecutive_5xx_errors, Some(7));
    // Read from networking.istio.io/v1beta1, served as v1.
    assert_eq!(objects[1].resource.to_json().unwrap()["apiVersion"], "networking.istio.io/v1");
}

#[test]
fn gateway_round_trips() {
    assert_round_trip("gateway.yaml");
}

#[test]
fn service_entry_round_trips() {
    assert_round_trip("serviceentry.yaml");
}

#[test]
fn workload_entry_round_trips() {
    assert_round_trip("workloadentry.yaml");
}

#[test]
fn sidecar_round_trips() {
    assert_round_trip("sidecar.yaml");
}

#[test]
fn security_kinds_round_trip() {
    let objects = assert_round_trip("security.yaml");
    let kinds: Vec<String> = objects.iter().map(|o| o.resource.object_ref().kind).collect();
    assert_eq!(
        kinds,
        [
            "PeerAuthentication",
            "PeerAuthentication",
            "AuthorizationPolicy",
            "AuthorizationPolicy",
            "AuthorizationPolicy"
        ]
    );
}

#[test]
fn kubernetes_kinds_round_trip() {
    assert_round_trip("core.yaml");
}

#[test]
fn every_fixture_is_valid() {
    for name in [
        "canary.yaml",
        "virtualservice.yaml",
        "destinationrule.yaml",
        "gateway.yaml",
        "serviceentry.yaml",
        "workloadentry.yaml",
        "sidecar.yaml",
        "security.yaml",
        "core.yaml",
    ] {
        for loaded in load_ok(name) {
            let errors = mesh_api::validate::resource(&loaded.resource);
            assert!(errors.is_empty(), "{name} should be valid:\n{}", render(&errors));
        }
    }
}

#[test]
fn canary_setup_reads_as_written() {
    let objects = assert_round_trip("canary.yaml");
    let [gw, vs, dr] = objects.as_slice() else { panic!("three objects expected") };
    assert_eq!(gw.origin.document, 1);
    assert_eq!(vs.origin.document, 2);
    assert_eq!(dr.origin.document, 3);

    let Resource::Gateway(gw) = &gw.resource else { panic!("first is not a Gateway") };
    assert_eq!(gw.metadata.name.as_deref(), Some("hello-gateway"));
    assert_eq!(gw.spec.selector.get("istio").map(String::as_str), Some("ingressgateway"));
    let server = &gw.spec.servers[0];
    assert_eq!((server.port.number, server.port.protocol.as_str()), (80, "HTTP"));
    assert_eq!(server.hosts, ["hello.example"]);

    let Resource::VirtualService(vs) = &vs.resource else {
        panic!("second is not a VirtualService")
    };
    assert_eq!(vs.spec.hosts, ["hello", "hello.example"]);
    assert_eq!(vs.spec.gateways, ["hello-gateway"]);
    let [pinned, split] = vs.spec.http.as_slice() else { panic!("two http routes expected") };
    assert_eq!(pinned.matches[0].headers["version"], StringMatch::exact("new"));
    assert_eq!(pinned.route[0].destination.host, "hello");
    assert_eq!(pinned.route[0].destination.subset.as_deref(), Some("new"));
    assert_eq!(
        pinned.timeout.as_ref().unwrap().parse().unwrap(),
        std::time::Duration::from_secs(5)
    );
    let delay = pinned.fault.as_ref().unwrap().delay.as_ref().unwrap();
    assert_eq!(
        delay.fixed_delay.as_ref().unwrap().parse().unwrap(),
        std::time::Duration::from_secs(10)
    );
    assert_eq!(delay.percentage, Some(Percent { value: 10.0 }));
    let shares: Vec<(Option<&str>, Option<i32>)> =
        split.route.iter().map(|d| (d.destination.subset.as_deref(), d.weight)).collect();
    assert_eq!(shares, [(Some("latest"), Some(70)), (Some("new"), Some(30))]);

    let Resource::DestinationRule(dr) = &dr.resource else {
        panic!("third is not a DestinationRule")
    };
    assert_eq!(dr.spec.host, "hello");
    let subsets: Vec<(&str, &str)> =
        dr.spec.subsets.iter().map(|s| (s.name.as_str(), s.labels["version"].as_str())).collect();
    assert_eq!(subsets, [("latest", "latest"), ("new", "new")]);
    let pool = dr.spec.traffic_policy.as_ref().unwrap().connection_pool.as_ref().unwrap();
    assert_eq!(pool.tcp.as_ref().unwrap().max_connections, Some(1));
    let http = pool.http.as_ref().unwrap();
    assert_eq!(http.http1_max_pending_requests, Some(1));
    assert_eq!(http.max_requests_per_connection, Some(1));
}
