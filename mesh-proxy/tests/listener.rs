//! Filter chain selection on the listeners the pilot serves (the golden mesh, as the sidecar
//! of `frontend` at 10.1.0.5 gets them): outbound by service address and port, HTTP ports to
//! their routes, unknown destinations passed through; inbound mesh mTLS told from plaintext
//! and from the app's own TLS by transport and ALPN.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use mesh_proxy::listener::{ChainAction, Connection, Upgrades, action, select};
use prost::Message;

fn listeners() -> (Listener, Listener) {
    let get = |name: &str| {
        Listener::decode(common::golden(mesh_api::xds::LISTENER_TYPE, name).as_slice()).unwrap()
    };
    (get("virtualOutbound"), get("virtualInbound"))
}

fn connect(destination: &str, transport: &'static str, alpn: &[&str]) -> Connection {
    Connection {
        destination: destination.parse().unwrap(),
        transport,
        server_name: None,
        alpn: alpn.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn chain(listener: &Listener, connection: &Connection) -> (String, ChainAction) {
    let chain = select(listener, connection).unwrap();
    (chain.name.clone(), action(chain).unwrap())
}

#[test]
fn outbound_goes_by_service_address_and_port() {
    let (outbound, _) = listeners();
    let tcp = |cluster: &str, idle_secs: u64| ChainAction::Tcp {
        cluster: cluster.to_owned(),
        idle_timeout: Some(std::time::Duration::from_secs(idle_secs)),
    };
    // db's DestinationRule sets `connectionPool.tcp.idleTimeout: 10m`.
    assert_eq!(
        chain(&outbound, &connect("10.96.2.10:5432", "raw_buffer", &[])),
        ("10.96.2.10_5432".to_owned(), tcp("outbound|5432||db.data.svc.cluster.local", 600))
    );
    // HTTP ports go to their routes whatever the address (the Host header decides).
    assert_eq!(
        chain(&outbound, &connect("10.96.1.10:9080", "raw_buffer", &[])),
        (
            "0.0.0.0_9080".to_owned(),
            ChainAction::HttpRds { routes: "9080".to_owned(), upgrades: Upgrades::websocket() }
        ),
        "WebSocket is tunnelled, as the pilot enables it on every connection manager"
    );
    // The TCP port of a service at another address, and an unknown destination: passed
    // through to where the app sent them (ALLOW_ANY).
    for other in ["10.96.9.9:5432", "93.184.216.34:443"] {
        assert_eq!(
            chain(&outbound, &connect(other, "tls", &[])),
            ("PassthroughCluster".to_owned(), tcp("PassthroughCluster", 3600)),
            "{other}"
        );
    }
}

#[test]
fn inbound_tells_mesh_mtls_from_plaintext_and_from_the_apps_own_tls() {
    let (_, inbound) = listeners();
    let mesh = ["istio-peer-exchange", "istio"];
    let name = |c: &Connection| select(&inbound, c).unwrap().name.clone();
    assert_eq!(name(&connect("10.1.0.5:8080", "tls", &mesh)), "inbound|8080||mtls");
    assert_eq!(name(&connect("10.1.0.5:8080", "raw_buffer", &[])), "inbound|8080||");
    // TLS that is not the mesh's (no mesh ALPN): the TLS chain is the most specific for the
    // transport and then does not match the ALPN, and Envoy never goes back a level, so the
    // default chain passes it to the app untouched, as it came.
    assert_eq!(name(&connect("10.1.0.5:8080", "tls", &["h2"])), "InboundPassthroughCluster");
    assert_eq!(name(&connect("10.1.0.5:7777", "tls", &mesh)), "InboundPassthroughClustermtls");
    assert_eq!(name(&connect("10.1.0.5:7777", "raw_buffer", &[])), "InboundPassthroughCluster");
    let (_, http) = chain(&inbound, &connect("10.1.0.5:8080", "raw_buffer", &[]));
    assert!(matches!(http, ChainAction::HttpInline { .. }), "{http:?}");
    let (_, tcp) = chain(&inbound, &connect("10.1.0.5:7000", "raw_buffer", &[]));
    assert_eq!(
        tcp,
        ChainAction::Tcp {
            cluster: "inbound|7000||".to_owned(),
            idle_timeout: Some(std::time::Duration::from_secs(3600)),
        }
    );
}

/// STRICT mTLS is a listener whose only chain for a port is the mesh-mTLS one, with no
/// plaintext chain and no passthrough: plaintext then finds no chain at all, and the proxy
/// closes the connection. (The pilot emits this once PeerAuthentication is translated; here
/// the golden listener is cut down to it.)
#[test]
fn a_strict_port_has_no_chain_for_plaintext() {
    let (_, mut inbound) = listeners();
    inbound.filter_chains.retain(|c| c.name == "inbound|8080||mtls");
    inbound.default_filter_chain = None;
    assert!(select(&inbound, &connect("10.1.0.5:8080", "raw_buffer", &[])).is_none());
    assert!(select(&inbound, &connect("10.1.0.5:8080", "tls", &["h2"])).is_none());
    let (name, _) = chain(&inbound, &connect("10.1.0.5:8080", "tls", &["h2", "istio"]));
    assert_eq!(name, "inbound|8080||mtls");
}
