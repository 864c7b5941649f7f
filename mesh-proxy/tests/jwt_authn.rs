//! RequestAuthentication end to end: mesh-proxy given, through its xDS store (which checks
//! it as it checks what the pilot sends), an inbound listener whose HTTP connection manager
//! carries Envoy's jwt_authn filter in the shape Istio compiles (provider `origins-0` with an
//! inline JWKS, one rule on `/` requiring its token or none), on loopback, in front of an app
//! that reports what reached it. As in Envoy: no token passes; an expired token gets 401 and a
//! token for another audience 403, neither reaching the app; a valid token reaches the app as
//! its claim header, without the token; with RBAC behind it, `requestPrincipals` let only the
//! verified subject through.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::config::core::v3::{
    Address, DataSource, SocketAddress, address, data_source, socket_address,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac, SourcedMetadata, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtProvider, JwtRequirement, JwtRequirementOrList,
    RemoteJwks, RequirementRule, jwt_provider::JwksSourceSpecifier, jwt_requirement::RequiresType,
    requirement_rule::RequirementType,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher, StringMatcher, ValueMatcher, metadata_matcher, string_matcher, value_matcher,
};
use envoy_types::pb::google::protobuf::{Any, Empty};
use envoy_types::util::pack_any;
use mesh_api::xds::{CLUSTER_TYPE, LISTENER_TYPE};
use mesh_proxy::xds::store::Store;
use mesh_testing::ca::TestCa;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.example";

/// An issuer's signing key, made here, and its JWKS.
struct Issuer {
    key: EcdsaKeyPair,
}

impl Issuer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self { key }
    }

    fn jwks(&self) -> String {
        let point = self.key.public_key().as_ref();
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        }]})
        .to_string()
    }

    /// A token for `sub` and `aud`, expiring `expires_in` seconds from now (negative: ago).
    fn token(&self, sub: &str, aud: &str, expires_in: i64) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let now = i64::try_from(now).unwrap();
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
        let claims = json!({
            "iss": ISSUER, "sub": sub, "aud": aud, "iat": now - 60, "exp": now + expires_in,
            "org": {"team": "payments"},
        });
        let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let signed = format!("{}.{}", encode(&header), encode(&claims));
        let signature = self.key.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

/// The jwt_authn filter as the pilot compiles a RequestAuthentication with one jwtRule
/// (issuer, audience `bookinfo`, inline JWKS, `outputClaimToHeaders` org.team →
/// x-jwt-team).
fn jwt_filter(provider: JwtProvider) -> HttpFilter {
    let requires = JwtRequirement {
        requires_type: Some(RequiresType::RequiresAny(JwtRequirementOrList {
            requirements: vec![
                JwtRequirement {
                    requires_type: Some(RequiresType::ProviderName("origins-0".into())),
                },
                JwtRequirement { requires_type: Some(RequiresType::AllowMissing(Empty {})) },
            ],
        })),
    };
    let config = JwtAuthentication {
        providers: HashMap::from([("origins-0".to_owned(), provider)]),
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(RequirementType::Requires(requires)),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    };
    HttpFilter {
        name: "envoy.filters.http.jwt_authn".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(config))),
        ..Default::default()
    }
}

fn provider(issuer: &Issuer) -> JwtProvider {
    JwtProvider {
        issuer: ISSUER.into(),
        audiences: vec!["bookinfo".into()],
        payload_in_metadata: "payload".into(),
        claim_to_headers: vec![JwtClaimToHeader {
            header_name: "x-jwt-team".into(),
            claim_name: "org.team".into(),
            ..Default::default()
        }],
        jwks_source_specifier: Some(JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(issuer.jwks())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Istio's ALLOW with `requestPrincipals: ["<issuer>/alice"]`: the verified payload's `iss`
/// and `sub` (RBAC reads them from jwt_authn's dynamic metadata).
fn allow_alice() -> HttpFilter {
    let claim = |name: &str, value: &str| Principal {
        identifier: Some(principal::Identifier::SourcedMetadata(SourcedMetadata {
            metadata_matcher: Some(MetadataMatcher {
                filter: "envoy.filters.http.jwt_authn".into(),
                path: ["payload", name]
                    .iter()
                    .map(|k| metadata_matcher::PathSegment {
                        segment: Some(metadata_matcher::path_segment::Segment::Key((*k).into())),
                    })
                    .collect(),
                value: Some(ValueMatcher {
                    match_pattern: Some(value_matcher::MatchPattern::StringMatch(StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Exact(value.into())),
                        ignore_case: false,
                    })),
                }),
                invert: false,
            }),
            ..SourcedMetadata::default()
        })),
    };
    let policy = Policy {
        permissions: vec![Permission { rule: Some(permission::Rule::Any(true)) }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set {
                ids: vec![claim("iss", ISSUER), claim("sub", "alice")],
            })),
        }],
        ..Default::default()
    };
    let rules = Rbac {
        action: rbac::Action::Allow as i32,
        policies: HashMap::from([("ns[demo]-policy[alice]-rule[0]".to_owned(), policy)]),
        ..Default::default()
    };
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(HttpRbac {
            rules: Some(rules),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// An inbound listener on `address`: one HTTP chain with `filters` ahead of the router,
/// routing everything to cluster `app`.
fn listener(address: SocketAddr, filters: Vec<HttpFilter>) -> Listener {
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
            ..Default::default()
        };
    Listener {
        name: format!("0.0.0.0_{}", address.port()),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: address.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    address.port(),
                ))),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// mesh-proxy on loopback with the listener `filters` make, taken through the xDS store as
/// the pilot's would be (serving its port itself, as a gateway does, so that no redirection
/// is needed), in front of `app`; returns its address.
async fn proxy(filters: Vec<HttpFilter>, app: SocketAddr) -> SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    let store = Store::default();
    let cluster = common::static_cluster("app", &[app], None);
    store.apply(CLUSTER_TYPE, "1", &[pack_any(cluster)]).unwrap();
    store.apply(LISTENER_TYPE, "1", &[pack_any(listener(address, filters))]).unwrap();
    // Whole as applied: in force at once.
    assert_eq!(store.current().listeners.len(), 1);
    common::serve_store(&store, &TestCa::new(), socket);
    address
}

/// An app answering 200 with what it was sent of `authorization` and `x-jwt-team`.
async fn app() -> common::Backend {
    common::backend(Arc::new(|_, parts: &http::request::Parts| {
        let seen = |name: &str| {
            let values: Vec<&str> =
                parts.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
            values.join(",")
        };
        let headers = vec![
            ("x-seen-authorization", seen("authorization")),
            ("x-seen-team", seen("x-jwt-team")),
        ];
        (200, Duration::ZERO, headers)
    }))
    .await
}

/// GET / with `token` as a bearer token, and a forged claim header.
fn get(token: Option<&str>) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut request = common::get("/");
    request.headers_mut().insert("x-jwt-team", "admins".parse().unwrap());
    if let Some(token) = token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn tokens_are_checked_before_the_app_as_envoy_checks_them() {
    let issuer = Issuer::new();
    let app = app().await;
    let address = proxy(vec![jwt_filter(provider(&issuer))], app.address).await;

    // No token: passes, and the forged claim header does not.
    let (status, headers, _) = common::call(address, get(None)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-seen-team"], "", "a client cannot pose as a claim");

    // A valid token: the app gets the claim, not the token.
    let (status, headers, _) =
        common::call(address, get(Some(&issuer.token("alice", "bookinfo", 3600)))).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-seen-team"], "payments");
    assert_eq!(headers["x-seen-authorization"], "", "the token stays with the proxy");
    assert_eq!(app.hits.load(Ordering::SeqCst), 2);

    // Expired (an hour ago, well past the minute of clock skew): 401 with Envoy's answer.
    let (status, headers, body) =
        common::call(address, get(Some(&issuer.token("alice", "bookinfo", -3600)))).await;
    assert_eq!((status, body.as_str()), (401, "Jwt is expired"));
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"http://svc.test/\", error=\"invalid_token\""
    );

    // For another audience: 403.
    let (status, _, body) =
        common::call(address, get(Some(&issuer.token("alice", "other", 3600)))).await;
    assert_eq!((status, body.as_str()), (403, "Audiences in Jwt are not allowed"));

    // Signed by someone else's key.
    let (status, _, body) =
        common::call(address, get(Some(&Issuer::new().token("alice", "bookinfo", 3600)))).await;
    assert_eq!((status, body.as_str()), (401, "Jwt verification fails"));
    assert_eq!(app.hits.load(Ordering::SeqCst), 2, "no refused request reached the app");
}

#[tokio::test]
async fn request_principals_let_only_the_verified_subject_through() {
    let issuer = Issuer::new();
    let app = app().await;
    let address = proxy(vec![jwt_filter(provider(&issuer)), allow_alice()], app.address).await;

    let alice = issuer.token("alice", "bookinfo", 3600);
    assert_eq!(common::call(address, get(Some(&alice))).await.0, 200);
    let bob = issuer.token("bob", "bookinfo", 3600);
    let (status, _, body) = common::call(address, get(Some(&bob))).await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    // Without a token jwt_authn lets the request on, and RBAC finds no principal.
    let (status, _, body) = common::call(address, get(None)).await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(app.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn the_store_refuses_a_jwt_filter_it_would_enforce_differently() {
    let issuer = Issuer::new();
    let mut remote = provider(&issuer);
    remote.jwks_source_specifier = Some(JwksSourceSpecifier::RemoteJwks(RemoteJwks::default()));
    let address: SocketAddr = "127.0.0.1:9080".parse().unwrap();
    let resource: Any = pack_any(listener(address, vec![jwt_filter(remote)]));
    let why = Store::default().apply(LISTENER_TYPE, "1", &[resource]).unwrap_err();
    assert!(why.contains("remote_jwks"), "{why}");
}
