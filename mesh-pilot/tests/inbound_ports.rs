//! What a sidecar is served for the ports its workload serves: the app on the pod's address
//! (the original destination, as Istio does since 1.10), and never a port of the sidecar's
//! own, even when a Service's `targetPort` names one (15000 would expose its admin API).

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use mesh_pilot::model::{Proxy, Snapshot};
use mesh_pilot::translate::{cluster, listener};

/// `web` on 10.1.0.5 (with a sidecar) sends 80 to 8080, and 15000 and 15021 to the sidecar's
/// admin and health ports; `plain` (no sidecar) listens on 15010 itself.
const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.30
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: http-admin, port: 8000, targetPort: 15000}
  - {name: http-health, port: 8001, targetPort: 15021}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-1, namespace: demo}
spec:
  address: 10.1.0.5
  labels: {app: web, security.istio.io/tlsMode: istio}
  serviceAccount: web
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: demo}
spec:
  clusterIP: 10.96.0.31
  selector: {app: plain}
  ports: [{name: grpc, port: 15010, targetPort: 15010}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: plain-1, namespace: demo}
spec:
  address: 10.1.0.6
  labels: {app: plain}
"#;

fn mesh() -> Snapshot {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let (snapshot, rejected) = mesh_pilot::source::local::read(dir.path());
    assert!(rejected.is_empty(), "{rejected:?}");
    snapshot
}

fn web() -> Proxy {
    Proxy {
        id: "sidecar~10.1.0.5~web-1.demo~demo.svc.cluster.local".into(),
        ips: vec!["10.1.0.5".parse().unwrap()],
        namespace: "demo".into(),
        ..Proxy::default()
    }
}

#[test]
fn a_target_port_of_the_sidecars_own_gets_no_inbound_chain_or_cluster_and_a_warning() {
    let snapshot = mesh();
    let inbound = &listener::listeners(&snapshot, &web())[1];
    assert_eq!(inbound.name, "virtualInbound");
    let chain_ports: Vec<(&str, Option<u32>)> = inbound
        .filter_chains
        .iter()
        .map(|c| {
            let port = c.filter_chain_match.as_ref().and_then(|m| m.destination_port.as_ref());
            (c.name.as_str(), port.map(|p| p.value))
        })
        .collect();
    assert_eq!(
        chain_ports,
        [
            ("inbound|8080||mtls", Some(8080)),
            ("inbound|8080||", Some(8080)),
            ("InboundPassthroughClustermtls", None),
        ]
    );
    let clusters = cluster::clusters(&snapshot, &web());
    let inbound: Vec<&str> =
        clusters.iter().map(|c| c.name.as_str()).filter(|n| n.starts_with("inbound|")).collect();
    assert_eq!(inbound, ["inbound|8080||"]);

    // The operator is told, once per service port, in the pilot's log.
    let warnings = cluster::own_port_targets(&snapshot);
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("service web.demo.svc.cluster.local port 8000 targets port 15000")
            && warnings[1]
                .starts_with("service web.demo.svc.cluster.local port 8001 targets port 15021"),
        "{warnings:#?}"
    );
    assert!(warnings[0].contains("set the targetPort to it"), "{}", warnings[0]);
    // A workload without a sidecar may listen where it likes (the pilot's own 15010): no word.
    assert!(!warnings.iter().any(|w| w.contains("plain")), "{warnings:#?}");
}

#[test]
fn the_app_is_called_on_the_pod_address_from_127_0_0_6() {
    let clusters = cluster::clusters(&mesh(), &web());
    let app = clusters.iter().find(|c| c.name == "inbound|8080||").unwrap();
    assert_eq!(
        app.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::OriginalDst as i32)),
        "to the address the client called, not 127.0.0.1"
    );
    assert_eq!(app.lb_policy, LbPolicy::ClusterProvided as i32);
    assert!(app.load_assignment.is_none(), "{:?}", app.load_assignment);
    let source = app.upstream_bind_config.as_ref().unwrap().source_address.as_ref().unwrap();
    assert_eq!(source.address, "127.0.0.6", "capture never takes it again");
}
