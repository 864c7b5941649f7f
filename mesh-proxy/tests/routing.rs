//! HTTP routing on what the pilot serves: the golden mesh's routes for port 9080 (every
//! VirtualService feature) decide real request heads as Envoy would: matches on path, method,
//! headers and query, weights, rewrites, redirects, direct responses, header changes, and the
//! catch-all for unknown hosts. Virtual hosts are chosen as Envoy chooses them.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use mesh_proxy::routing::{Decision, RequestHead, RouteTable};
use prost::Message;

const V1: &str = "outbound|9080|v1|reviews.demo.svc.cluster.local";
const V2: &str = "outbound|9080|v2|reviews.demo.svc.cluster.local";
const ALL: &str = "outbound|9080||reviews.demo.svc.cluster.local";

fn table() -> RouteTable {
    let bytes = common::golden(mesh_api::xds::ROUTE_TYPE, "9080");
    RouteTable::compile(&RouteConfiguration::decode(bytes.as_slice()).unwrap()).unwrap()
}

/// A request as the tests shape it; routing sees it as a [`RequestHead`].
#[derive(Clone, Debug)]
struct Req {
    authority: String,
    path: String,
    method: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn head<T>(&self, see: impl FnOnce(&RequestHead) -> T) -> T {
        let headers: http::HeaderMap = self
            .headers
            .iter()
            .map(|(k, v)| (k.parse::<http::HeaderName>().unwrap(), v.parse().unwrap()))
            .collect();
        see(&RequestHead {
            authority: &self.authority,
            path: &self.path,
            method: &self.method,
            headers: &headers,
        })
    }
}

fn get(authority: &str, path: &str) -> Req {
    Req {
        authority: authority.into(),
        path: path.into(),
        method: "GET".into(),
        headers: Vec::new(),
    }
}

fn decide(table: &RouteTable, request: &Req, pick: u64) -> Option<Decision> {
    request.head(|head| table.decide(head, pick))
}

fn cluster(decision: Option<Decision>) -> String {
    match decision {
        Some(Decision::Forward { cluster, .. }) => cluster,
        other => panic!("not forwarded: {other:?}"),
    }
}

#[test]
fn matches_on_path_method_headers_and_query_with_header_changes() {
    let table = table();
    let mut request = get("reviews:9080", "/api/v1/reviews?debug=1");
    request.method = "POST".into();
    request.headers.push(("x-user".into(), "admin-7".into()));
    let Some(Decision::Forward { cluster, set_headers, add_headers, remove_headers, .. }) =
        decide(&table, &request, 0)
    else {
        panic!("not forwarded")
    };
    assert_eq!(cluster, V2);
    assert_eq!(set_headers, [("x-route".to_owned(), "exact".to_owned())]);
    assert_eq!(add_headers, [("x-trace".to_owned(), "1".to_owned())]);
    assert_eq!(remove_headers, ["x-internal"]);

    // Each condition counts: another method, a missing query, a header it must not have.
    let mut get_instead = request.clone();
    get_instead.method = "GET".into();
    let mut no_query = request.clone();
    no_query.path = "/api/v1/reviews".into();
    let mut canary_off = request.clone();
    canary_off.headers.push(("x-canary".into(), "off".into()));
    for other in [get_instead, no_query, canary_off] {
        let name = other.head(|head| table.route(head).unwrap().name.clone());
        assert_ne!(name, "exact-and-headers", "{other:?}");
    }
}

#[test]
fn rewrites_redirects_and_direct_responses() {
    let table = table();
    // ignoreUriCase regex match, whole path rewritten, authority rewritten.
    let Some(Decision::Forward { cluster, path, authority, .. }) =
        decide(&table, &get("reviews.demo.svc.cluster.local", "/LEGACY/abc?x=1"), 0)
    else {
        panic!()
    };
    assert_eq!(
        (cluster.as_str(), path.as_str(), authority.as_str()),
        (V1, "/v2/?x=1", "reviews.internal")
    );
    // Regex substitution keeps the query.
    let Some(Decision::Forward { path, .. }) = decide(&table, &get("reviews", "/old/a/b?q=2"), 0)
    else {
        panic!()
    };
    assert_eq!(path, "/new/a/b?q=2");
    assert_eq!(
        decide(&table, &get("10.96.1.10:9080", "/moved/x"), 0),
        Some(Decision::Redirect { status: 308, location: "http://reviews.example/here".into() })
    );
    assert_eq!(
        decide(&table, &get("reviews", "/gone"), 0),
        Some(Decision::Respond { status: 410, body: "gone for good".into() })
    );
}

#[test]
fn weights_split_by_the_pick_and_unknown_hosts_pass_through() {
    let table = table();
    let picks: Vec<String> = [0, 89, 90, 99, 100, 189]
        .into_iter()
        .map(|pick| cluster(decide(&table, &get("reviews", "/"), pick)))
        .collect();
    assert_eq!(picks, [V1, V1, V2, V2, V1, V1]);
    let Some(Decision::Forward { set_headers, .. }) = decide(&table, &get("reviews", "/"), 3)
    else {
        panic!()
    };
    assert_eq!(
        set_headers,
        [("x-subset".to_owned(), "v1".to_owned())],
        "the destination's own headers"
    );
    assert_eq!(cluster(decide(&table, &get("reviews", "/public/x"), 0)), ALL);
    assert_eq!(
        cluster(decide(&table, &get("ratings:9080", "/"), 0)),
        "outbound|9080||ratings.demo.svc.cluster.local"
    );
    // A host no service has, on a known port: where the caller sent it (ALLOW_ANY).
    assert_eq!(cluster(decide(&table, &get("unknown.example:9080", "/"), 0)), "PassthroughCluster");
}

#[test]
fn virtual_hosts_are_chosen_as_envoy_chooses_them() {
    let vhost = |name: &str, domains: &[&str]| {
        VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        routes: vec![envoy_types::pb::envoy::config::route::v3::Route {
            r#match: Some(Default::default()),
            action: Some(envoy_types::pb::envoy::config::route::v3::route::Action::DirectResponse(
                envoy_types::pb::envoy::config::route::v3::DirectResponseAction {
                    status: 200,
                    body: Some(envoy_types::pb::envoy::config::core::v3::DataSource {
                        specifier: Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(name.into())),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        ..VirtualHost::default()
    }
    };
    let config = RouteConfiguration {
        virtual_hosts: vec![
            vhost("any", &["*"]),
            vhost("suffix", &["*.example.com"]),
            vhost("longer-suffix", &["*.api.example.com"]),
            vhost("prefix", &["api.*"]),
            vhost("exact", &["Exact.Example.com"]),
        ],
        ..RouteConfiguration::default()
    };
    let table = RouteTable::compile(&config).unwrap();
    let body = |authority: &str| match decide(&table, &get(authority, "/"), 0) {
        Some(Decision::Respond { body, .. }) => body,
        other => panic!("{other:?}"),
    };
    assert_eq!(body("exact.example.COM"), "exact");
    assert_eq!(body("v1.api.example.com"), "longer-suffix");
    assert_eq!(body("www.example.com"), "suffix");
    assert_eq!(body("api.internal"), "prefix");
    assert_eq!(body("elsewhere"), "any");

    let bad = RouteConfiguration {
        virtual_hosts: vec![VirtualHost {
            name: "broken".into(),
            domains: vec!["*".into()],
            routes: vec![envoy_types::pb::envoy::config::route::v3::Route {
                r#match: Some(envoy_types::pb::envoy::config::route::v3::RouteMatch {
                    path_specifier: Some(envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::SafeRegex(
                        envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher { regex: "(".into(), ..Default::default() },
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    let err = RouteTable::compile(&bad).err().unwrap();
    assert!(err.starts_with("virtual_hosts[0] (broken).routes[0]: regex \"(\""), "{err}");
}

/// Consistent hashing keys come from the route's hash policy (a DestinationRule's
/// `consistentHash`): the same header, cookie or source address gives the same key, another
/// gives another, and a request without it has none (any endpoint).
#[test]
fn hash_keys_follow_the_route_hash_policy() {
    use mesh_proxy::routing::hash_key;
    let table = table();
    let source: std::net::IpAddr = "10.1.0.7".parse().unwrap();
    let key = |request: &Req, source: std::net::IpAddr| {
        request.head(|head| hash_key(table.route(head).unwrap(), head, source))
    };
    // reviews `/old`: by the x-user header.
    let mut alice = get("reviews.demo.svc.cluster.local:9080", "/old");
    alice.headers.push(("x-user".into(), "alice".into()));
    let mut bob = alice.clone();
    bob.headers[0].1 = "bob".into();
    let nobody = get("reviews.demo.svc.cluster.local:9080", "/old");
    assert!(key(&alice, source).is_some());
    assert_eq!(key(&alice, source), key(&alice.clone(), "10.9.9.9".parse().unwrap()));
    assert_ne!(key(&alice, source), key(&bob, source));
    assert_eq!(key(&nobody, source), None);
    // reviews `/`: by the session cookie, among other cookies.
    let mut cookie = get("reviews.demo.svc.cluster.local:9080", "/");
    cookie.headers.push(("cookie".into(), "theme=dark; session=s1".into()));
    let mut same = get("reviews.demo.svc.cluster.local:9080", "/");
    same.headers.push(("cookie".into(), "session=s1".into()));
    assert!(key(&cookie, source).is_some());
    assert_eq!(key(&cookie, source), key(&same, source));
    // ratings: by the client's address.
    let ratings = get("ratings.demo.svc.cluster.local:9080", "/");
    let other: std::net::IpAddr = "10.1.0.8".parse().unwrap();
    assert!(key(&ratings, source).is_some());
    assert_ne!(key(&ratings, source), key(&ratings, other));
}
