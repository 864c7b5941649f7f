//! `meshctl proxy-config` and `proxy-status` from recorded answers: the config dumps and
//! `/clusters?format=json` of Envoy sidecars and an Envoy gateway of a local mesh, the pilot's
//! `/debug/config_dump` for the same proxies and its `/debug/syncz` (tests/data/proxy_config).
//! Each table is compared as text with its golden file in tests/data/proxy_config/golden
//! (`BLESS=1` rewrites them); the commands are parsed from their command lines, as a user
//! types them.

use std::path::PathBuf;

use clap::Parser;
use meshctl::proxy_config::{self, Kind};
use meshctl::proxy_status::{self, compare};
use serde_json::Value;

/// Within the recorded certificates' validity (2026-11-30T17:59:23Z to 2026-12-01T18:00:23Z).
const DURING: i64 = 1_796_100_000;
/// After it.
const AFTER: i64 = 1_796_200_000;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    kind: Kind,
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/proxy_config").join(name)
}

fn fixture(name: &str) -> Value {
    let path = data(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `meshctl proxy-config ARGS` on the recorded JSON.
fn proxy_config(json: &str, args: &str, now: i64) -> String {
    let cli = Cli::try_parse_from(std::iter::once("proxy-config").chain(args.split_whitespace()))
        .unwrap_or_else(|e| panic!("{args}: {e}"));
    proxy_config::render(&fixture(json), &cli.kind, now, json)
        .unwrap_or_else(|e| panic!("{args} on {json}: {e}"))
}

/// Compares with a golden file, or writes it when `BLESS` is set.
fn golden(name: &str, actual: &str) {
    let path = data("golden").join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(data("golden"))
            .and_then(|()| std::fs::write(&path, actual))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (BLESS=1 writes it)", path.display()));
    pretty_assertions::assert_eq!(expected, actual, "{name} differs (BLESS=1 rewrites it)");
}

#[test]
fn envoy_sidecar_tables() {
    let dump = "envoy-reviews-v1.config_dump.json";
    golden("envoy-reviews-v1.clusters.txt", &proxy_config(dump, "clusters reviews-v1", DURING));
    golden("envoy-reviews-v1.listeners.txt", &proxy_config(dump, "listeners reviews-v1", DURING));
    golden("envoy-reviews-v1.routes.txt", &proxy_config(dump, "routes reviews-v1", DURING));
    golden("envoy-reviews-v1.secret.txt", &proxy_config(dump, "secret reviews-v1", DURING));
    let clusters = "envoy-reviews-v1.clusters.json";
    golden(
        "envoy-reviews-v1.endpoints.txt",
        &proxy_config(clusters, "endpoints reviews-v1", DURING),
    );
}

#[test]
fn envoy_gateway_tables() {
    let dump = "envoy-ingressgateway.config_dump.json";
    let pod = "ingressgateway.mesh-system";
    golden(
        "envoy-ingressgateway.clusters.txt",
        &proxy_config(dump, &format!("clusters {pod}"), DURING),
    );
    golden(
        "envoy-ingressgateway.listeners.txt",
        &proxy_config(dump, &format!("listeners {pod}"), DURING),
    );
    golden(
        "envoy-ingressgateway.routes.txt",
        &proxy_config(dump, &format!("routes {pod}"), DURING),
    );
    let clusters = "envoy-ingressgateway.clusters.json";
    golden(
        "envoy-ingressgateway.endpoints.txt",
        &proxy_config(clusters, &format!("endpoints {pod}"), DURING),
    );
}

#[test]
fn mesh_proxy_tables() {
    let dump = "mesh-proxy-productpage-v1.config_dump.json";
    let pod = "productpage-v1";
    for kind in ["clusters", "listeners", "routes", "secret"] {
        let table = proxy_config(dump, &format!("{kind} {pod}"), DURING);
        golden(&format!("mesh-proxy-productpage-v1.{kind}.txt"), &table);
    }
    let clusters = "mesh-proxy-productpage-v1.clusters.json";
    golden(
        "mesh-proxy-productpage-v1.endpoints.txt",
        &proxy_config(clusters, &format!("endpoints {pod}"), DURING),
    );
    // mesh-proxy runs what Envoy runs: the same chains, the same routes.
    let envoy = "envoy-reviews-v1.config_dump.json";
    assert_eq!(
        proxy_config(dump, "listeners productpage-v1", DURING),
        proxy_config(envoy, "listeners reviews-v1", DURING)
    );
    let gateway = "mesh-proxy-ingress-mp.config_dump.json";
    let envoy_gateway = "envoy-ingressgateway.config_dump.json";
    for kind in ["listeners", "routes"] {
        assert_eq!(
            proxy_config(gateway, &format!("{kind} ingress-mp.mesh-system"), DURING),
            proxy_config(envoy_gateway, &format!("{kind} ingressgateway.mesh-system"), DURING),
            "{kind}"
        );
    }
}

#[test]
fn the_pilots_dump_renders_as_the_proxys_does() {
    // The pilot writes proto3 JSON (camelCase); what it serves is what Envoy runs, so the
    // tables are the same but for what Envoy adds itself (its static bootstrap clusters, the
    // routes inline in listeners).
    let pilot = "pilot-reviews-v1.config_dump.json";
    let envoy = "envoy-reviews-v1.config_dump.json";
    for args in ["listeners reviews-v1", "clusters reviews-v1 --direction outbound"] {
        assert_eq!(proxy_config(pilot, args, DURING), proxy_config(envoy, args, DURING), "{args}");
    }
    golden("pilot-reviews-v1.routes.txt", &proxy_config(pilot, "routes reviews-v1", DURING));
}

#[test]
fn filters_narrow_the_tables() {
    let dump = "envoy-reviews-v1.config_dump.json";
    golden(
        "filtered.txt",
        &[
            "clusters reviews-v1 --fqdn reviews --subset v1",
            "clusters reviews-v1 --port 9080 --direction inbound",
            "clusters reviews-v1 --name PassthroughCluster",
            "listeners reviews-v1 --port 9080",
            "listeners reviews-v1 --address 0.0.0.0 --port 15006 --type http+tcp",
            "routes reviews-v1 --name 9080",
            "secret reviews-v1 --name ROOTCA",
        ]
        .iter()
        .map(|args| format!("$ meshctl proxy-config {args}\n{}", proxy_config(dump, args, DURING)))
        .chain(std::iter::once(format!(
            "$ meshctl proxy-config endpoints reviews-v1 --cluster outbound|9080||reviews.default.svc.cluster.local\n{}",
            proxy_config(
                "envoy-reviews-v1.clusters.json",
                "endpoints reviews-v1 --cluster outbound|9080||reviews.default.svc.cluster.local",
                DURING
            )
        )))
        .collect::<Vec<_>>()
        .join("\n"),
    );
}

#[test]
fn an_expired_certificate_is_not_valid() {
    let table = proxy_config("envoy-reviews-v1.config_dump.json", "secret reviews-v1", AFTER);
    let default = table.lines().find(|l| l.starts_with("default ")).unwrap();
    assert!(default.contains("Cert Chain   ACTIVE   false"), "{table}");
    // The root is valid for years.
    let root = table.lines().find(|l| l.starts_with("ROOTCA ")).unwrap();
    assert!(root.contains("CA           ACTIVE   true"), "{table}");
}

#[test]
fn json_output_is_the_selected_resources_as_the_proxy_reports_them() {
    let dump = "envoy-reviews-v1.config_dump.json";
    let json: Value = serde_json::from_str(&proxy_config(
        dump,
        "clusters reviews-v1 --fqdn ratings -o json",
        DURING,
    ))
    .unwrap();
    let names: Vec<&str> =
        json.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "outbound|9080||ratings.default.svc.cluster.local",
            "outbound|9080|v1|ratings.default.svc.cluster.local"
        ]
    );
    assert_eq!(json[0]["type"], "EDS");
    let routes: Value =
        serde_json::from_str(&proxy_config(dump, "routes reviews-v1 --name 9080 -o json", DURING))
            .unwrap();
    assert_eq!(routes.as_array().unwrap().len(), 1);
    assert_eq!(routes[0]["name"], "9080");
    let yaml = proxy_config(dump, "secret reviews-v1 --name ROOTCA -o yaml", DURING);
    assert!(yaml.contains("name: ROOTCA"), "{yaml}");
    assert!(!yaml.contains("name: default"), "{yaml}");
}

#[test]
fn a_dump_of_another_shape_names_what_is_missing() {
    let kind = Cli::try_parse_from(["proxy-config", "clusters", "productpage-v1"]).unwrap().kind;
    let old = serde_json::json!({"clusters": [], "listeners": [], "versions": {}});
    let err =
        proxy_config::render(&old, &kind, DURING, "productpage-v1.default :15000/config_dump")
            .unwrap_err()
            .to_string();
    assert!(
        err.starts_with("productpage-v1.default :15000/config_dump: no ClustersConfigDump in it"),
        "{err}"
    );
}

#[test]
fn proxy_status_table() {
    let text = std::fs::read_to_string(data("syncz.json")).unwrap();
    let entries = meshctl::access::parse_syncz(&text).unwrap();
    golden("proxy-status.txt", &proxy_status::status_table(&entries, None, proxy_status::PILOT));
    let pod = meshctl::access::Pod { name: "reviews-v2".into(), namespace: "default".into() };
    let one = proxy_status::status_table(&entries, Some(&pod), proxy_status::PILOT);
    assert_eq!(one.lines().filter(|l| l.starts_with("reviews-v2.default ")).count(), 2, "{one}");
    assert!(!one.contains("reviews-v1"), "{one}");
    let entry = entries.iter().find(|e| e.pod() == Some(pod.clone())).unwrap();
    golden("proxy-status.versions.txt", &proxy_status::versions(entry));
}

#[test]
fn what_the_pilot_serves_matches_what_envoy_runs() {
    let pods = [
        ("reviews-v1", "envoy"),
        ("ingressgateway", "envoy"),
        ("productpage-v1", "mesh-proxy"),
        ("ingress-mp", "mesh-proxy"),
    ];
    for (pod, proxy) in pods {
        let served = fixture(&format!("pilot-{pod}.config_dump.json"));
        let running = fixture(&format!("{proxy}-{pod}.config_dump.json"));
        let comparison = compare::compare(&served, &running).unwrap();
        assert_eq!(
            compare::render(&comparison),
            "Clusters Match\nListeners Match\nRoutes Match\n",
            "{pod}: {comparison:#?}"
        );
    }
}

#[test]
fn a_proxy_that_runs_something_else_does_not_match() {
    let served = fixture("pilot-reviews-v1.config_dump.json");
    let mut running = fixture("envoy-reviews-v1.config_dump.json");
    for config in running["configs"].as_array_mut().unwrap() {
        match config["@type"].as_str().unwrap().rsplit('.').next().unwrap() {
            "ClustersConfigDump" => {
                // The proxy lost one cluster and kept one the pilot no longer serves.
                let clusters = config["dynamic_active_clusters"].as_array_mut().unwrap();
                clusters.retain(|c| {
                    c["cluster"]["name"] != "outbound|9080|v3|reviews.default.svc.cluster.local"
                });
                let mut stale = clusters[0].clone();
                stale["cluster"]["name"] =
                    "outbound|9080|v4|reviews.default.svc.cluster.local".into();
                clusters.push(stale);
            }
            "ListenersConfigDump" => {
                let listener = &mut config["dynamic_listeners"][0]["active_state"]["listener"];
                listener["filter_chains"][0]["filter_chain_match"]["destination_port"] =
                    9090.into();
            }
            _ => {}
        }
    }
    let comparison = compare::compare(&served, &running).unwrap();
    golden("proxy-status.mismatch.txt", &compare::render(&comparison));
}
