//! PeerAuthentication in the sidecar's configuration: STRICT leaves no plaintext way in (no
//! plaintext chain, no plaintext default), DISABLE no mTLS chain, port-level settings per
//! port (also for ports no service declares), and clients send plaintext to a port whose
//! server refuses mTLS.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::sync::Arc;

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use mesh_pilot::model::{Proxy, Snapshot};
use mesh_pilot::source::local;
use mesh_pilot::translate;
use prost::Message;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp-db, port: 5432}], selector: {app: web}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web, namespace: shop}
spec: {address: 10.1.0.5, labels: {app: web, security.istio.io/tlsMode: istio}, serviceAccount: web}
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: shop}
spec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 80, targetPort: 8080}], selector: {app: legacy}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: legacy, namespace: shop}
spec: {address: 10.1.0.6, labels: {app: legacy, security.istio.io/tlsMode: istio}, serviceAccount: legacy}
"#;

fn build(policies: &str) -> Snapshot {
    let mut report = mesh_api::load::load_str("mesh.yaml", &format!("{MESH}\n---\n{policies}"));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    local::in_default_namespace(&mut report.objects);
    let objects: Vec<_> = report.objects.into_iter().map(Arc::new).collect();
    let (snapshot, rejected) = local::build(&objects);
    assert!(rejected.is_empty(), "{rejected:?}");
    snapshot
}

fn proxy(app: &str, ip: &str) -> Proxy {
    Proxy {
        id: format!("sidecar~{ip}~{app}-1.shop~shop.svc.cluster.local"),
        namespace: "shop".into(),
        labels: [("app".to_owned(), app.to_owned())].into(),
        ips: vec![ip.parse().unwrap()],
        service_account: app.into(),
        ..Proxy::default()
    }
}

fn inbound(snapshot: &Snapshot, proxy: &Proxy) -> Listener {
    let listeners = translate::generate(mesh_api::xds::LISTENER_TYPE, snapshot, proxy).unwrap();
    listeners
        .iter()
        .map(|(_, any)| Listener::decode(any.value.as_slice()).unwrap())
        .find(|l| l.name == "virtualInbound")
        .unwrap()
}

/// Each chain as `name tls|plain`, and whether plaintext to an undeclared port gets in.
fn ways_in(listener: &Listener) -> (Vec<String>, bool) {
    let chains = listener
        .filter_chains
        .iter()
        .map(|c| {
            let tls = c.filter_chain_match.as_ref().is_some_and(|m| m.transport_protocol == "tls");
            format!("{} {}", c.name, if tls { "tls" } else { "plain" })
        })
        .collect();
    (chains, listener.default_filter_chain.is_some())
}

#[test]
fn without_a_policy_every_port_takes_both() {
    let (chains, default) = ways_in(&inbound(&build(""), &proxy("web", "10.1.0.5")));
    assert_eq!(
        chains,
        [
            "inbound|5432||mtls tls",
            "inbound|5432|| plain",
            "inbound|8080||mtls tls",
            "inbound|8080|| plain",
            "InboundPassthroughClustermtls tls"
        ]
    );
    assert!(default, "plaintext to other ports is passed through (PERMISSIVE)");
}

const STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: legacy, namespace: shop}
spec:
  selector: {matchLabels: {app: legacy}}
  mtls: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  portLevelMtls: {"5432": {mode: PERMISSIVE}, "9000": {mode: PERMISSIVE}}
"#;

#[test]
fn strict_leaves_no_plaintext_way_in_but_where_a_port_says_otherwise() {
    let snapshot = build(STRICT);
    let (chains, default) = ways_in(&inbound(&snapshot, &proxy("web", "10.1.0.5")));
    assert_eq!(
        chains,
        [
            "inbound|5432||mtls tls",
            "inbound|5432|| plain",
            "inbound|8080||mtls tls",
            "InboundPassthroughCluster_9000mtls tls",
            "InboundPassthroughCluster_9000 plain",
            "InboundPassthroughClustermtls tls"
        ]
    );
    assert!(!default, "STRICT: plaintext to any other port is closed");

    let (chains, default) = ways_in(&inbound(&snapshot, &proxy("legacy", "10.1.0.6")));
    assert_eq!(chains, ["inbound|8080|| plain"], "DISABLE: plaintext only");
    assert!(default);
}

#[test]
fn clients_send_plaintext_to_a_workload_that_refuses_mtls() {
    let snapshot = build(STRICT);
    let client = proxy("client", "10.1.0.9");
    let resources = translate::generate(mesh_api::xds::ENDPOINT_TYPE, &snapshot, &client).unwrap();
    let modes: Vec<(String, String)> = resources
        .iter()
        .map(|(_, any)| ClusterLoadAssignment::decode(any.value.as_slice()).unwrap())
        .filter(|c| c.cluster_name.starts_with("outbound|80|"))
        .map(|c| {
            let e = &c.endpoints[0].lb_endpoints[0];
            let meta =
                &e.metadata.as_ref().unwrap().filter_metadata["envoy.transport_socket_match"];
            let Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(mode)) =
                &meta.fields["tlsMode"].kind
            else {
                panic!()
            };
            (c.cluster_name.clone(), mode.clone())
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("outbound|80||legacy.shop.svc.cluster.local".to_owned(), "disabled".to_owned()),
            ("outbound|80||web.shop.svc.cluster.local".to_owned(), "istio".to_owned())
        ]
    );
}
