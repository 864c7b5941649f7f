//! Authorization end to end: mesh-proxy serving listeners built here as the pilot builds
//! them (an HTTP connection manager with Envoy's RBAC filters and Istio's path
//! normalization, a TCP chain with the network RBAC filter ahead of `tcp_proxy`), on
//! loopback, in front of a backend that counts what reaches it. Denied requests get 403
//! `RBAC: access denied` and never reach the app; path tricks do not get past a DENY; a
//! denied TCP connection is closed before the app sees it; a mesh peer's identity decides an
//! ALLOW.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    Address, CidrRange, SocketAddress, TransportSocket, address, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac, permission, principal, rbac,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager::PathWithEscapedSlashesAction,
    http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;
use http_body_util::{BodyExt as _, Full};
use mesh_api::xds::{CLUSTER_TYPE, LISTENER_TYPE};
use mesh_proxy::authz::{Attributes, PeerCertificate, RequestAttributes};
use mesh_proxy::filters::ChainFilters;
use mesh_proxy::xds::store::Store;
use mesh_testing::ca::TestCa;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const DENY_ADMIN: &str = "ns[demo]-policy[deny-admin]-rule[0]";

fn socket(address: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                address.port(),
            ))),
            ..Default::default()
        })),
    }
}

fn path_prefix(prefix: &str) -> Permission {
    Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(StringMatcher {
                match_pattern: Some(MatchPattern::Prefix(prefix.into())),
                ignore_case: false,
            })),
        })),
    }
}

fn any_principal() -> Principal {
    Principal { identifier: Some(principal::Identifier::Any(true)) }
}

fn any_permission() -> Permission {
    Permission { rule: Some(permission::Rule::Any(true)) }
}

fn rules(action: rbac::Action, name: &str, policy: Policy) -> Rbac {
    Rbac {
        action: action as i32,
        policies: HashMap::from([(name.to_owned(), policy)]),
        ..Default::default()
    }
}

/// Istio's DENY on `paths: [/admin*]`.
fn deny_admin() -> HttpFilter {
    let policy = Policy {
        permissions: vec![path_prefix("/admin")],
        principals: vec![any_principal()],
        ..Default::default()
    };
    http_rbac(rules(rbac::Action::Deny, DENY_ADMIN, policy))
}

fn http_rbac(rules: Rbac) -> HttpFilter {
    let config = HttpRbac { rules: Some(rules), ..Default::default() };
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(config))),
        ..Default::default()
    }
}

/// An HTTP connection manager routing everything to cluster `app`, with `filters` ahead of
/// the router, normalizing paths as Istio's `DECODE_AND_MERGE_SLASHES` when `normalize`.
fn hcm(filters: Vec<HttpFilter>, normalize: bool) -> Filter {
    let mut http_filters = filters;
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Router::default()))),
        ..Default::default()
    });
    let hcm =
        HttpConnectionManager {
            stat_prefix: "inbound_0.0.0.0_9080".into(),
            route_specifier: Some(RouteSpecifier::RouteConfig(common::route_config(
                common::route("app", |_| {}, Vec::new()),
            ))),
            http_filters,
            normalize_path: Some(BoolValue { value: normalize }),
            merge_slashes: normalize,
            path_with_escaped_slashes_action: if normalize {
                PathWithEscapedSlashesAction::UnescapeAndForward as i32
            } else {
                PathWithEscapedSlashesAction::KeepUnchanged as i32
            },
            ..Default::default()
        };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
    }
}

/// mesh-proxy on loopback serving one listener of `chain` (as a gateway serves its own
/// ports, so that no redirection is needed) over `clusters`; returns its address.
async fn proxy(chain: FilterChain, clusters: Vec<Cluster>) -> SocketAddr {
    proxy_with_ca(&TestCa::new(), chain, clusters).await
}

/// A backend answering 200 with the path it got in `x-path`, counting requests.
async fn app() -> common::Backend {
    common::backend(Arc::new(|_, parts: &http::request::Parts| {
        let path = parts.uri.path_and_query().map(ToString::to_string).unwrap_or_default();
        (200, Duration::ZERO, vec![("x-path", path)])
    }))
    .await
}

fn http_chain(filters: Vec<HttpFilter>, normalize: bool) -> FilterChain {
    FilterChain { filters: vec![hcm(filters, normalize)], ..Default::default() }
}

#[tokio::test]
async fn a_denied_path_gets_403_and_never_reaches_the_app() {
    let app = app().await;
    let address = proxy(
        http_chain(vec![deny_admin()], true),
        vec![common::static_cluster("app", &[app.address], None)],
    )
    .await;

    let (status, headers, body) = common::call(address, common::get("/admin/users")).await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(app.hits.load(Ordering::SeqCst), 0, "the app never saw it");

    let (status, headers, _) = common::call(address, common::get("/public?next=/admin")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-path"], "/public?next=/admin");
    assert_eq!(app.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn path_tricks_do_not_get_past_a_deny_when_the_hcm_normalizes() {
    let app = app().await;
    let cluster = || vec![common::static_cluster("app", &[app.address], None)];
    let address = proxy(http_chain(vec![deny_admin()], true), cluster()).await;
    for trick in [
        "/admin",
        "//admin",
        "/./admin",
        "/public/../admin",
        "/public/..%2Fadmin",
        "/%2Fadmin",
        "/%2fadmin/users",
        "/public%5C..%5Cadmin",
        "/%61dmin",
        "/%2e%2e/admin",
        "/public/..;x=y/admin",
        "///admin//users",
    ] {
        let (status, _, body) = common::call(address, common::get(trick)).await;
        assert_eq!((status, body.as_str()), (403, "RBAC: access denied"), "{trick}");
    }
    assert_eq!(app.hits.load(Ordering::SeqCst), 0, "no trick reached the app");
    // What is allowed goes on normalized, as the policy saw it.
    let (status, headers, _) = common::call(address, common::get("/public/./a//b/%7Eme")).await;
    assert_eq!(
        (status, &headers["x-path"]),
        (200, &"/public/a/b/~me".parse::<http::HeaderValue>().unwrap())
    );

    // Without normalization the same DENY lets a trick through to the app: what the HCM
    // options are for.
    let plain = proxy(http_chain(vec![deny_admin()], false), cluster()).await;
    let (status, headers, _) = common::call(plain, common::get("/./admin")).await;
    assert_eq!(
        (status, &headers["x-path"]),
        (200, &"/./admin".parse::<http::HeaderValue>().unwrap())
    );
}

/// A chain terminating mesh mTLS with the proxy's workload certificate (Istio's
/// `ISTIO_MUTUAL` at a gateway, a sidecar's inbound mTLS chain).
fn mesh_mtls() -> TransportSocket {
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: "default".into(),
                sds_config: None,
            }],
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
    }
}

/// One HTTP/1.1 GET over mesh mTLS as `namespace`/`service_account`.
async fn get_as(
    ca: &TestCa,
    address: SocketAddr,
    service_account: &str,
    path: &str,
) -> (u16, String) {
    let mut config = mesh_identity::tls::mesh_client_config_for_trust_domain(
        ca.store("demo", service_account),
        ca.roots(),
        mesh_testing::ca::TRUST_DOMAIN,
    )
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(address.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", "reviews.demo")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn an_allow_policy_lets_only_the_principals_it_names_through() {
    let app = app().await;
    let client = "spiffe://cluster.local/ns/demo/sa/client";
    let policy = Policy {
        permissions: vec![any_permission()],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::Authenticated(principal::Authenticated {
                principal_name: Some(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(client.into())),
                    ignore_case: false,
                }),
            })),
        }],
        ..Default::default()
    };
    let allow =
        http_rbac(rules(rbac::Action::Allow, "ns[demo]-policy[only-client]-rule[0]", policy));
    let chain =
        FilterChain { transport_socket: Some(mesh_mtls()), ..http_chain(vec![allow], true) };
    let ca = TestCa::new();
    let address =
        proxy_with_ca(&ca, chain, vec![common::static_cluster("app", &[app.address], None)]).await;

    assert_eq!(get_as(&ca, address, "client", "/").await, (200, "attempt 1".to_owned()));
    assert_eq!(get_as(&ca, address, "robot", "/").await, (403, "RBAC: access denied".to_owned()));
    assert_eq!(app.hits.load(Ordering::SeqCst), 1, "only the named principal got through");
}

/// [`proxy`] with its workload certificate (`demo`/`server`) from `ca`.
async fn proxy_with_ca(ca: &TestCa, chain: FilterChain, clusters: Vec<Cluster>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // Taken through the xDS store, as the pilot's listeners are: it must accept them.
    let store = Store::default();
    let clusters: Vec<_> = clusters.into_iter().map(pack_any).collect();
    store.apply(CLUSTER_TYPE, "1", &clusters).unwrap();
    store.apply(LISTENER_TYPE, "1", &[pack_any(listener_of(address, chain))]).unwrap();
    common::serve_store(&store, ca, listener);
    address
}

fn listener_of(address: SocketAddr, chain: FilterChain) -> Listener {
    Listener {
        name: format!("0.0.0.0_{}", address.port()),
        address: Some(socket(address)),
        filter_chains: vec![chain],
        ..Default::default()
    }
}

#[test]
fn the_xds_store_takes_rbac_filters_and_refuses_what_is_not_one() {
    let address: SocketAddr = "127.0.0.1:9080".parse().unwrap();
    let store = Store::default();
    let good = listener_of(address, http_chain(vec![deny_admin()], true));
    store.apply(LISTENER_TYPE, "1", &[pack_any(good.clone())]).unwrap();
    store
        .apply(LISTENER_TYPE, "2", &[pack_any(listener_of(address, tcp_chain(rbac::Action::Deny)))])
        .unwrap();

    // A network RBAC filter whose configuration is something else: NACKed, nothing changes.
    let mut garbled = tcp_chain(rbac::Action::Deny);
    garbled.filters[0].config_type =
        Some(filter::ConfigType::TypedConfig(pack_any(Router::default())));
    let why =
        store.apply(LISTENER_TYPE, "3", &[pack_any(listener_of(address, garbled))]).unwrap_err();
    assert!(
        why.contains("filters[0]: typed_config is a") && why.contains("network.rbac.v3.RBAC"),
        "{why}"
    );
    // An HTTP one that does not decode.
    let mut broken = deny_admin();
    broken.config_type =
        Some(http_filter::ConfigType::TypedConfig(envoy_types::pb::google::protobuf::Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC".into(),
            value: vec![0xff, 0xff],
        }));
    let why = store
        .apply(
            LISTENER_TYPE,
            "4",
            &[pack_any(listener_of(address, http_chain(vec![broken], true)))],
        )
        .unwrap_err();
    assert!(why.contains("http_filters[0]: typed_config does not decode"), "{why}");
    assert_eq!(store.received().versions[LISTENER_TYPE], "2", "the last good listeners stay");

    // A per-route RBAC would replace the chain's: refused rather than ignored.
    let mut per_route = good;
    if let Some(filter::ConfigType::TypedConfig(any)) =
        &mut per_route.filter_chains[0].filters[0].config_type
    {
        let mut hcm =
            <HttpConnectionManager as prost::Message>::decode(any.value.as_slice()).unwrap();
        if let Some(RouteSpecifier::RouteConfig(routes)) = &mut hcm.route_specifier {
            routes.virtual_hosts[0].routes[0]
                .typed_per_filter_config
                .insert("envoy.filters.http.rbac".into(), pack_any(HttpRbac::default()));
        }
        *any = pack_any(hcm);
    }
    let why = store.apply(LISTENER_TYPE, "5", &[pack_any(per_route)]).unwrap_err();
    assert!(why.contains("typed_per_filter_config[\"envoy.filters.http.rbac\"]"), "{why}");
}

/// A TCP backend echoing what it reads, counting the connections it accepts.
async fn echo() -> (SocketAddr, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU32::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                    if tcp.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, accepted)
}

/// A TCP chain to cluster `db`, behind a network RBAC filter with `action` on connections
/// from loopback.
fn tcp_chain(action: rbac::Action) -> FilterChain {
    let policy = Policy {
        permissions: vec![any_permission()],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::DirectRemoteIp(CidrRange {
                address_prefix: "127.0.0.0".into(),
                prefix_len: Some(UInt32Value { value: 8 }),
            })),
        }],
        ..Default::default()
    };
    let rbac = NetworkRbac {
        rules: Some(rules(action, "ns[demo]-policy[loopback]-rule[0]", policy)),
        stat_prefix: "tcp.".into(),
        ..Default::default()
    };
    let proxy = TcpProxy {
        stat_prefix: "db".into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("db".into())),
        ..Default::default()
    };
    FilterChain {
        filters: vec![
            Filter {
                name: "envoy.filters.network.rbac".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(rbac))),
            },
            Filter {
                name: "envoy.filters.network.tcp_proxy".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(proxy))),
            },
        ],
        ..Default::default()
    }
}

/// What a client that sends `hello` reads back before the connection ends.
async fn hello(address: SocketAddr) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    // The proxy may have closed already: a failed write is part of the answer.
    let _ = tcp.write_all(b"hello").await;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() >= 5 {
                    return got;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_network_deny_closes_the_connection_before_the_app_sees_it() {
    let (db, accepted) = echo().await;
    let cluster = || vec![common::static_cluster("db", &[db], None)];

    let denied = proxy(tcp_chain(rbac::Action::Deny), cluster()).await;
    assert_eq!(hello(denied).await, b"", "closed without an answer");
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "the app never saw the connection");

    let allowed = proxy(tcp_chain(rbac::Action::Allow), cluster()).await;
    assert_eq!(hello(allowed).await, b"hello");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// What the golden frontend's HTTP chain (port 8080, mesh mTLS) decides for a request.
fn decide_golden(
    filters: &ChainFilters,
    method: &str,
    path: &str,
    principal: &str,
    server_name: Option<&str>,
    headers: &[(&'static str, &'static str)],
) -> Result<(), String> {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        map.append(*name, http::HeaderValue::from_static(value));
    }
    let source: SocketAddr = "10.1.0.9:40000".parse().unwrap();
    let certificate =
        PeerCertificate { uri_sans: vec![principal.to_owned()], ..Default::default() };
    let attributes = Attributes {
        source,
        destination: "10.1.0.5:8080".parse().unwrap(),
        server_name,
        certificate: Some(&certificate),
        request: Some(RequestAttributes {
            method,
            path,
            authority: "frontend.example.com",
            scheme: "http",
            headers: &map,
            remote: filters.http.remote_ip(source.ip(), &map),
            jwt_payload: None,
        }),
    };
    filters.http.rbac.check(&attributes).map_err(|denied| denied.details())
}

#[test]
fn the_pilots_policies_for_the_golden_frontend_are_enforced_as_istio_means_them() {
    use prost::Message as _;
    let golden = common::golden(LISTENER_TYPE, "virtualInbound");
    let inbound = Listener::decode(golden.as_slice()).unwrap();
    // Everything the pilot writes is enforceable: no filter fails closed.
    for chain in inbound.filter_chains.iter().chain(&inbound.default_filter_chain) {
        let filters = ChainFilters::of(chain);
        assert!(filters.authorizes(), "{}: no RBAC", chain.name);
        for filter in filters.network.iter().chain(filters.http.rbac.iter()) {
            assert_eq!(filter.failure(), None, "{}: {}", chain.name, filter.name());
        }
    }
    let chain = inbound.filter_chains.iter().find(|c| c.name == "inbound|8080||mtls").unwrap();
    let filters = ChainFilters::of(chain);
    let gateway = "spiffe://cluster.local/ns/demo/sa/gateway";
    let sni = Some("outbound_.8080_._.frontend.demo.svc.cluster.local");
    let tenant = [("x-tenant", "acme")];
    // The ALLOW's first rule: from 10.1.0.0/16, GET under /api/, the host, the tenant.
    assert_eq!(decide_golden(&filters, "GET", "/api/items", gateway, sni, &tenant), Ok(()));
    assert_eq!(
        decide_golden(&filters, "POST", "/api/items", gateway, sni, &tenant),
        Err("rbac_access_denied_matched_policy[none]".to_owned()),
        "no ALLOW rule takes a POST"
    );
    assert!(decide_golden(&filters, "GET", "/api/items", gateway, sni, &[]).is_err(), "no tenant");
    assert_eq!(decide_golden(&filters, "GET", "/users/7/profile", gateway, sni, &tenant), Ok(()));
    assert!(decide_golden(&filters, "GET", "/users/7/x/profile", gateway, sni, &tenant).is_err());
    // The DENY: a peer of another namespace without the demo SNI.
    let stranger = "spiffe://cluster.local/ns/other/sa/robot";
    assert_eq!(decide_golden(&filters, "GET", "/api/items", stranger, sni, &tenant), Ok(()));
    let denied = decide_golden(&filters, "GET", "/api/items", stranger, None, &tenant);
    assert_eq!(
        denied,
        Err("rbac_access_denied_matched_policy[ns[demo]-policy[frontend-deny]-rule[1]]".to_owned())
    );
    // The mesh-wide DENY on remoteIpBlocks: a sidecar's connection manager takes the client
    // from X-Forwarded-For (`use_remote_address: false`), as Envoy does.
    let forwarded = [("x-tenant", "acme"), ("x-forwarded-for", "192.0.2.7")];
    let legacy = decide_golden(&filters, "GET", "/api/items", gateway, sni, &forwarded);
    assert_eq!(
        legacy,
        Err("rbac_access_denied_matched_policy[ns[mesh-system]-policy[deny-legacy]-rule[0]]"
            .to_owned())
    );
}
