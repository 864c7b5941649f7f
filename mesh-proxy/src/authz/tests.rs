//! The RBAC engine on Istio-shaped policies (as the pilot compiles AuthorizationPolicies, and
//! Istio's own pilot does): identities, namespaces, paths and templates, methods, hosts,
//! addresses, ports, JWT claims, the `not*` forms, and a chain's AUDIT, DENY and ALLOW filters
//! together.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TypedExtensionConfig};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacProto, SourcedMetadata, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher, PathMatcher, RegexMatcher, StringMatcher, ValueMatcher,
    metadata_matcher::{PathSegment, path_segment::Segment},
    path_matcher,
    string_matcher::MatchPattern,
    value_matcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use http::HeaderMap;
use serde_json::json;

use super::*;

fn string(pattern: MatchPattern) -> StringMatcher {
    StringMatcher { match_pattern: Some(pattern), ignore_case: false }
}
fn exact(s: &str) -> StringMatcher {
    string(MatchPattern::Exact(s.into()))
}
fn prefix(s: &str) -> StringMatcher {
    string(MatchPattern::Prefix(s.into()))
}
fn suffix(s: &str) -> StringMatcher {
    string(MatchPattern::Suffix(s.into()))
}
fn regex(s: &str) -> StringMatcher {
    string(MatchPattern::SafeRegex(RegexMatcher { regex: s.into(), ..Default::default() }))
}

fn perm(rule: permission::Rule) -> Permission {
    Permission { rule: Some(rule) }
}
fn id(identifier: principal::Identifier) -> Principal {
    Principal { identifier: Some(identifier) }
}
fn any_perm() -> Permission {
    perm(permission::Rule::Any(true))
}
fn any_id() -> Principal {
    id(principal::Identifier::Any(true))
}
fn or_perms(rules: Vec<Permission>) -> Permission {
    perm(permission::Rule::OrRules(permission::Set { rules }))
}
fn and_perms(rules: Vec<Permission>) -> Permission {
    perm(permission::Rule::AndRules(permission::Set { rules }))
}
fn not_perm(rule: Permission) -> Permission {
    perm(permission::Rule::NotRule(Box::new(rule)))
}
fn or_ids(ids: Vec<Principal>) -> Principal {
    id(principal::Identifier::OrIds(principal::Set { ids }))
}
fn and_ids(ids: Vec<Principal>) -> Principal {
    id(principal::Identifier::AndIds(principal::Set { ids }))
}
fn not_id(inner: Principal) -> Principal {
    id(principal::Identifier::NotId(Box::new(inner)))
}
fn path(m: StringMatcher) -> Permission {
    perm(permission::Rule::UrlPath(PathMatcher { rule: Some(path_matcher::Rule::Path(m)) }))
}
fn header(name: &str, m: StringMatcher) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)),
        ..Default::default()
    }
}
fn method(m: &str) -> Permission {
    perm(permission::Rule::Header(header(":method", exact(m))))
}
fn template(t: &str) -> Permission {
    perm(permission::Rule::UriTemplate(TypedExtensionConfig {
        name: "uri-template".into(),
        typed_config: Some(pack_any(UriTemplateMatchConfig { path_template: t.into() })),
    }))
}
fn principal_name(m: StringMatcher) -> Principal {
    id(principal::Identifier::Authenticated(principal::Authenticated { principal_name: Some(m) }))
}
fn cidr(a: &str, len: u32) -> CidrRange {
    CidrRange { address_prefix: a.into(), prefix_len: Some(UInt32Value { value: len }) }
}
/// A claim of the request's token, as the pilot writes `requestPrincipals` and
/// `request.auth.claims`: the request's dynamic metadata, where jwt_authn puts the payload.
fn claim(path: &[&str], m: StringMatcher) -> Principal {
    id(principal::Identifier::SourcedMetadata(SourcedMetadata {
        metadata_matcher: Some(MetadataMatcher {
            filter: JWT_METADATA_FILTER.into(),
            path: path
                .iter()
                .map(|k| PathSegment { segment: Some(Segment::Key((*k).into())) })
                .collect(),
            value: Some(ValueMatcher {
                match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
            }),
            invert: false,
        }),
        ..Default::default()
    }))
}

/// A policy as Istio writes one rule: the `to` ANDed into one permission, the `from` into
/// one principal.
fn rule(permissions: Vec<Permission>, principals: Vec<Principal>) -> Policy {
    Policy {
        permissions: vec![and_perms(if permissions.is_empty() {
            vec![any_perm()]
        } else {
            permissions
        })],
        principals: vec![and_ids(if principals.is_empty() { vec![any_id()] } else { principals })],
        ..Default::default()
    }
}

fn rules(action: rbac::Action, policies: Vec<(&str, Policy)>) -> RbacProto {
    RbacProto {
        action: action as i32,
        policies: policies.into_iter().map(|(n, p)| (n.to_owned(), p)).collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}

fn compiled(action: rbac::Action, policies: Vec<(&str, Policy)>) -> Rbac {
    Rbac::compile(&rules(action, policies)).unwrap()
}

/// A request as a test writes it.
struct Req {
    method: &'static str,
    path: &'static str,
    authority: &'static str,
    headers: HeaderMap,
    source: &'static str,
    destination: &'static str,
    remote: &'static str,
    certificate: Option<PeerCertificate>,
    server_name: Option<&'static str>,
    jwt: Option<serde_json::Value>,
}

fn get(path: &'static str) -> Req {
    Req {
        method: "GET",
        path,
        authority: "reviews.demo.svc.cluster.local:9080",
        headers: HeaderMap::new(),
        source: "10.1.0.5:40000",
        destination: "10.1.0.7:9080",
        remote: "10.1.0.5",
        certificate: None,
        server_name: None,
        jwt: None,
    }
}

fn from(mut req: Req, spiffe: &str) -> Req {
    req.certificate = Some(PeerCertificate { uri_sans: vec![spiffe.into()], ..Default::default() });
    req
}

impl Req {
    fn attributes(&self) -> Attributes<'_> {
        Attributes {
            source: self.source.parse().unwrap(),
            destination: self.destination.parse().unwrap(),
            server_name: self.server_name,
            certificate: self.certificate.as_ref(),
            request: Some(RequestAttributes {
                method: self.method,
                path: self.path,
                authority: self.authority,
                scheme: "http",
                headers: &self.headers,
                remote: self.remote.parse().unwrap(),
                jwt_payload: self.jwt.as_ref(),
            }),
        }
    }

    /// The same connection without a request (network RBAC).
    fn connection(&self) -> Attributes<'_> {
        Attributes { request: None, ..self.attributes() }
    }
}

fn allowed(rbac: &Rbac, req: &Req) -> bool {
    rbac.decide(&req.attributes()).allowed
}

const CLIENT: &str = "spiffe://cluster.local/ns/demo/sa/client";
const OTHER: &str = "spiffe://cluster.local/ns/other/sa/robot";

#[test]
fn an_allow_filter_allows_what_a_policy_matches_and_nothing_else() {
    use rbac::Action::Allow;
    let rbac = compiled(
        Allow,
        vec![(
            "ns[demo]-policy[reviews]-rule[0]",
            rule(vec![or_perms(vec![method("GET")])], vec![]),
        )],
    );
    let decision = rbac.decide(&get("/").attributes());
    assert_eq!(
        decision,
        Decision { allowed: true, policy: Some("ns[demo]-policy[reviews]-rule[0]") }
    );
    let mut post = get("/");
    post.method = "POST";
    assert_eq!(rbac.decide(&post.attributes()), Decision { allowed: false, policy: None });
    // `spec: {}`: an ALLOW filter without policies denies everything; `rules: [{}]` allows all.
    assert!(!allowed(&compiled(Allow, vec![]), &get("/")));
    assert!(allowed(&compiled(Allow, vec![("any", rule(vec![], vec![]))]), &post));
}

#[test]
fn a_deny_filter_denies_what_a_policy_matches_and_names_it() {
    let rbac = compiled(
        rbac::Action::Deny,
        vec![(
            "ns[demo]-policy[no-admin]-rule[0]",
            rule(vec![or_perms(vec![path(prefix("/admin"))])], vec![]),
        )],
    );
    assert_eq!(
        rbac.decide(&get("/admin/users").attributes()),
        Decision { allowed: false, policy: Some("ns[demo]-policy[no-admin]-rule[0]") }
    );
    assert!(allowed(&rbac, &get("/public")));
    assert!(allowed(&rbac, &get("/public?next=/admin")), "the query is not the path");
}

#[test]
fn a_log_filter_never_blocks_but_names_what_it_matched() {
    let rbac =
        compiled(rbac::Action::Log, vec![("audit", rule(vec![path(exact("/secret"))], vec![]))]);
    assert_eq!(
        rbac.decide(&get("/secret").attributes()),
        Decision { allowed: true, policy: Some("audit") }
    );
    assert_eq!(rbac.decide(&get("/").attributes()), Decision { allowed: true, policy: None });
}

#[test]
fn the_effective_policy_is_the_first_by_name() {
    let rbac = compiled(
        rbac::Action::Deny,
        vec![
            ("b-second", rule(vec![], vec![])),
            ("a-first", rule(vec![], vec![])),
            ("c", rule(vec![], vec![])),
        ],
    );
    assert_eq!(rbac.decide(&get("/").attributes()).policy, Some("a-first"));
}

#[test]
fn principals_namespaces_and_their_not_forms_read_the_peer_certificate() {
    use rbac::Action::{Allow, Deny};
    let exact_principal = compiled(
        Allow,
        vec![("p", rule(vec![], vec![or_ids(vec![principal_name(exact(CLIENT))])]))],
    );
    assert!(allowed(&exact_principal, &from(get("/"), CLIENT)));
    assert!(!allowed(&exact_principal, &from(get("/"), OTHER)));
    assert!(!allowed(&exact_principal, &get("/")), "a plaintext peer has no principal");

    // `namespaces: [demo]` and `principals: ["*"]`, as Istio writes them.
    let namespace = compiled(
        Allow,
        vec![("n", rule(vec![], vec![or_ids(vec![principal_name(regex(".*/ns/demo/.*"))])]))],
    );
    assert!(
        allowed(&namespace, &from(get("/"), CLIENT))
            && !allowed(&namespace, &from(get("/"), OTHER))
    );
    let any_peer = compiled(
        Allow,
        vec![("any", rule(vec![], vec![or_ids(vec![principal_name(regex(".+"))])]))],
    );
    assert!(allowed(&any_peer, &from(get("/"), OTHER)) && !allowed(&any_peer, &get("/")));
    // `principals: ["*/sa/client"]` and `["cluster.local/ns/demo/*"]`.
    let suffixed = compiled(
        Allow,
        vec![(
            "s",
            rule(vec![], vec![or_ids(vec![principal_name(regex("spiffe://.*/sa/client"))])]),
        )],
    );
    assert!(
        allowed(&suffixed, &from(get("/"), CLIENT)) && !allowed(&suffixed, &from(get("/"), OTHER))
    );
    let prefixed = compiled(
        Allow,
        vec![(
            "p",
            rule(
                vec![],
                vec![or_ids(vec![principal_name(prefix("spiffe://cluster.local/ns/demo/"))])],
            ),
        )],
    );
    assert!(
        allowed(&prefixed, &from(get("/"), CLIENT)) && !allowed(&prefixed, &from(get("/"), OTHER))
    );

    // DENY `notPrincipals: ["*"]`: everything without an identity (plaintext) is refused.
    let not_any = compiled(
        Deny,
        vec![("d", rule(vec![], vec![not_id(or_ids(vec![principal_name(regex(".+"))]))]))],
    );
    assert!(!allowed(&not_any, &get("/")));
    assert!(allowed(&not_any, &from(get("/"), CLIENT)));
    // DENY `notNamespaces: [demo]`.
    let not_demo = compiled(
        Deny,
        vec![(
            "d",
            rule(vec![], vec![not_id(or_ids(vec![principal_name(regex(".*/ns/demo/.*"))]))]),
        )],
    );
    assert!(
        !allowed(&not_demo, &from(get("/"), OTHER)) && allowed(&not_demo, &from(get("/"), CLIENT))
    );

    // Without URI SANs, DNS SANs and then the subject are the principal.
    let dns = compiled(
        Allow,
        vec![("d", rule(vec![], vec![principal_name(exact("client.example.com"))]))],
    );
    let mut with_dns = get("/");
    with_dns.certificate =
        Some(PeerCertificate { dns_sans: vec!["client.example.com".into()], ..Default::default() });
    assert!(allowed(&dns, &with_dns));
    let any_certificate = compiled(
        Allow,
        vec![(
            "a",
            rule(vec![], vec![id(principal::Identifier::Authenticated(Default::default()))]),
        )],
    );
    assert!(allowed(&any_certificate, &with_dns) && !allowed(&any_certificate, &get("/")));
}

#[test]
fn paths_match_exactly_by_prefix_suffix_presence_and_template() {
    let deny = |permission: Permission| {
        compiled(rbac::Action::Deny, vec![("d", rule(vec![or_perms(vec![permission])], vec![]))])
    };
    let exact_path = deny(path(exact("/admin")));
    assert!(!allowed(&exact_path, &get("/admin")) && !allowed(&exact_path, &get("/admin?x=1")));
    assert!(allowed(&exact_path, &get("/admin/")) && allowed(&exact_path, &get("/Admin")));
    let suffixed = deny(path(suffix(".php")));
    assert!(!allowed(&suffixed, &get("/x/index.php")) && allowed(&suffixed, &get("/x/index.html")));
    let present = deny(path(regex(".+")));
    assert!(!allowed(&present, &get("/")));
    let one_segment = deny(template("/books/*/reviews"));
    assert!(!allowed(&one_segment, &get("/books/dune/reviews")));
    assert!(allowed(&one_segment, &get("/books/dune/x/reviews")));
    let any_segments = deny(template("/admin/{**}"));
    assert!(
        !allowed(&any_segments, &get("/admin/a/b?q"))
            && allowed(&any_segments, &get("/administrator"))
    );
    // `notPaths: [/public/*]` on an ALLOW: everything but the public pages.
    let not_public = compiled(
        rbac::Action::Allow,
        vec![("a", rule(vec![not_perm(or_perms(vec![path(prefix("/public/"))]))], vec![]))],
    );
    assert!(allowed(&not_public, &get("/private")) && !allowed(&not_public, &get("/public/a")));
    // A connection has no path: path rules never match it.
    assert!(exact_path.decide(&get("/admin").connection()).allowed);
}

#[test]
fn methods_hosts_and_headers() {
    use rbac::Action::Allow;
    // `hosts: [reviews.demo.svc.cluster.local]` matches `:authority` ignoring case, port
    // included.
    let host = StringMatcher { ignore_case: true, ..exact("REVIEWS.demo.svc.cluster.local") };
    let by_host = compiled(
        Allow,
        vec![("h", rule(vec![perm(permission::Rule::Header(header(":authority", host)))], vec![]))],
    );
    let mut bare = get("/");
    bare.authority = "reviews.demo.svc.cluster.local";
    assert!(allowed(&by_host, &bare));
    assert!(!allowed(&by_host, &get("/")), "a port is part of the authority");
    // `when: request.headers[x-user]: [alice]`; the header's values are joined with `,`.
    let user = compiled(
        Allow,
        vec![(
            "u",
            rule(vec![], vec![id(principal::Identifier::Header(header("X-User", exact("alice"))))]),
        )],
    );
    let mut alice = get("/");
    alice.headers.insert("x-user", "alice".parse().unwrap());
    assert!(allowed(&user, &alice) && !allowed(&user, &get("/")));
    alice.headers.append("x-user", "bob".parse().unwrap());
    assert!(!allowed(&user, &alice), "alice,bob is not alice");
    // `methods: [GET, HEAD]` with `paths: [/api/*]`: both must match.
    let api_reads = compiled(
        Allow,
        vec![(
            "r",
            rule(
                vec![
                    or_perms(vec![method("GET"), method("HEAD")]),
                    or_perms(vec![path(prefix("/api/"))]),
                ],
                vec![],
            ),
        )],
    );
    assert!(allowed(&api_reads, &get("/api/x")) && !allowed(&api_reads, &get("/web")));
    let mut delete = get("/api/x");
    delete.method = "DELETE";
    assert!(!allowed(&api_reads, &delete));
    // `host` is never a header of its own: it is `:authority`.
    let host_header = compiled(
        Allow,
        vec![(
            "h",
            rule(vec![perm(permission::Rule::Header(header("host", regex(".*"))))], vec![]),
        )],
    );
    let mut with_host = get("/");
    with_host.headers.insert("host", "x".parse().unwrap());
    assert!(!allowed(&host_header, &with_host));
}

#[test]
fn addresses_ports_and_server_names() {
    use rbac::Action::{Allow, Deny};
    // `ipBlocks` is the peer; `remoteIpBlocks` the client the connection manager found.
    let ip_blocks = compiled(
        Deny,
        vec![(
            "i",
            rule(vec![], vec![id(principal::Identifier::DirectRemoteIp(cidr("10.1.0.0", 16)))]),
        )],
    );
    assert!(!allowed(&ip_blocks, &get("/")));
    let mut elsewhere = get("/");
    elsewhere.source = "192.168.0.3:5000";
    assert!(allowed(&ip_blocks, &elsewhere));
    let remote_blocks = compiled(
        Deny,
        vec![(
            "r",
            rule(vec![], vec![id(principal::Identifier::RemoteIp(cidr("203.0.113.0", 24)))]),
        )],
    );
    let mut forwarded = get("/");
    forwarded.remote = "203.0.113.9";
    assert!(!allowed(&remote_blocks, &forwarded) && allowed(&remote_blocks, &get("/")));
    assert!(
        remote_blocks.decide(&elsewhere.connection()).allowed,
        "a connection's remote is its peer"
    );
    // `ports: ["9080"]`, a port range, `destination.ip`, and `connection.sni`.
    let port = compiled(
        Allow,
        vec![("p", rule(vec![perm(permission::Rule::DestinationPort(9080))], vec![]))],
    );
    assert!(allowed(&port, &get("/")));
    let mut other_port = get("/");
    other_port.destination = "10.1.0.7:9090";
    assert!(!allowed(&port, &other_port));
    let range = compiled(
        Allow,
        vec![(
            "r",
            rule(
                vec![perm(permission::Rule::DestinationPortRange(
                    envoy_types::pb::envoy::r#type::v3::Int32Range { start: 9000, end: 9081 },
                ))],
                vec![],
            ),
        )],
    );
    assert!(allowed(&range, &get("/")) && !allowed(&range, &other_port));
    let to_ip = compiled(
        Allow,
        vec![(
            "d",
            rule(vec![perm(permission::Rule::DestinationIp(cidr("10.1.0.7", 32)))], vec![]),
        )],
    );
    assert!(allowed(&to_ip, &get("/")));
    let sni = compiled(
        Allow,
        vec![(
            "s",
            rule(vec![perm(permission::Rule::RequestedServerName(suffix(".example.com")))], vec![]),
        )],
    );
    let mut with_sni = get("/");
    with_sni.server_name = Some("www.example.com");
    assert!(allowed(&sni, &with_sni) && !allowed(&sni, &get("/")));
}

#[test]
fn request_principals_and_claims_read_what_jwt_authn_verified() {
    // `requestPrincipals: [https://issuer/alice]` and `when: request.auth.claims[groups]`.
    let alice = compiled(
        rbac::Action::Allow,
        vec![(
            "j",
            rule(
                vec![],
                vec![and_ids(vec![
                    claim(&["payload", "iss"], exact("https://issuer")),
                    claim(&["payload", "sub"], exact("alice")),
                ])],
            ),
        )],
    );
    let mut with_token = get("/");
    with_token.jwt = Some(json!({"iss": "https://issuer", "sub": "alice", "groups": ["dev"]}));
    assert!(allowed(&alice, &with_token));
    with_token.jwt = Some(json!({"iss": "https://issuer", "sub": "mallory"}));
    assert!(!allowed(&alice, &with_token));
    assert!(!allowed(&alice, &get("/")), "no token, no request principal");
}

#[test]
fn what_cannot_be_enforced_fails_closed_and_a_filter_without_rules_enforces_nothing() {
    let cel = Policy { condition: Some(Default::default()), ..rule(vec![], vec![]) };
    let custom = rule(vec![], vec![id(principal::Identifier::FilterState(Default::default()))]);
    let bad_regex = rule(vec![path(regex("(unclosed"))], vec![]);
    let bad_template = rule(vec![template("/a/**/*")], vec![]);
    let empty_set = rule(vec![or_perms(vec![])], vec![]);
    for (what, policy) in [
        ("CEL", cel),
        ("filter_state", custom),
        ("regex", bad_regex),
        ("template", bad_template),
        ("empty or_rules", empty_set),
    ] {
        // A DENY that cannot be read must not let everything through.
        let config = HttpRbac {
            rules: Some(rules(rbac::Action::Deny, vec![("p", policy)])),
            ..Default::default()
        };
        let filters = Filters::new(vec![Filter::http(HTTP_FILTER, Some(&pack_any(config)))]);
        assert!(filters.iter().next().unwrap().failure().is_some(), "{what}");
        let denied = filters.check(&get("/").attributes()).unwrap_err();
        assert_eq!(denied.details(), "rbac_access_denied_matched_policy[none]", "{what}");
    }
    let unset = Filters::new(vec![Filter::http(HTTP_FILTER, Some(&pack_any(HttpRbac::default())))]);
    assert_eq!(unset.check(&get("/").attributes()), Ok(()), "no rules: Envoy enforces nothing");
    let not_typed = Filters::new(vec![Filter::http(HTTP_FILTER, None)]);
    assert!(not_typed.check(&get("/").attributes()).is_err());
    let wrong_type =
        Filters::new(vec![Filter::network(NETWORK_FILTER, Some(&pack_any(HttpRbac::default())))]);
    assert!(wrong_type.check(&get("/").connection()).is_err());
}

fn http_filter(action: rbac::Action, policies: Vec<(&str, Policy)>) -> Filter {
    let config = HttpRbac { rules: Some(rules(action, policies)), ..Default::default() };
    Filter::http(HTTP_FILTER, Some(&pack_any(config)))
}

#[test]
fn a_chain_runs_audit_deny_and_allow_in_turn_and_the_first_denial_decides() {
    use rbac::Action::{Allow, Deny, Log};
    let filters = Filters::new(vec![
        http_filter(Log, vec![("audit-everything", rule(vec![], vec![]))]),
        http_filter(
            Deny,
            vec![(
                "ns[demo]-policy[deny admin]-rule[0]",
                rule(vec![path(prefix("/admin"))], vec![]),
            )],
        ),
        http_filter(
            Allow,
            vec![(
                "ns[demo]-policy[allow-demo]-rule[0]",
                rule(vec![], vec![principal_name(regex(".*/ns/demo/.*"))]),
            )],
        ),
    ]);
    assert_eq!(filters.check(&from(get("/"), CLIENT).attributes()), Ok(()));
    let denied = filters.check(&from(get("/admin"), CLIENT).attributes()).unwrap_err();
    assert_eq!(
        denied.details(),
        "rbac_access_denied_matched_policy[ns[demo]-policy[deny_admin]-rule[0]]"
    );
    let not_allowed = filters.check(&from(get("/"), OTHER).attributes()).unwrap_err();
    assert_eq!(not_allowed.details(), "rbac_access_denied_matched_policy[none]");
}

#[test]
fn network_rbac_decides_on_the_connection_alone() {
    let config = NetworkRbac {
        rules: Some(rules(
            rbac::Action::Allow,
            vec![(
                "tcp",
                rule(
                    vec![perm(permission::Rule::DestinationPort(5432))],
                    vec![principal_name(exact(CLIENT))],
                ),
            )],
        )),
        ..Default::default()
    };
    let filters = Filters::new(vec![Filter::network(NETWORK_FILTER, Some(&pack_any(config)))]);
    let mut db = from(get("/"), CLIENT);
    db.destination = "10.1.0.7:5432";
    assert_eq!(filters.check(&db.connection()), Ok(()));
    let mut stranger = from(get("/"), OTHER);
    stranger.destination = "10.1.0.7:5432";
    assert!(filters.check(&stranger.connection()).is_err());
}

#[test]
fn a_peer_certificate_gives_its_sans_and_subject() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["client.example.com".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(CLIENT.try_into().unwrap()));
    params.distinguished_name.push(rcgen::DnType::CommonName, "client");
    let cert = params.self_signed(&key).unwrap();
    let parsed = PeerCertificate::parse(cert.der().as_ref()).unwrap();
    assert_eq!(parsed.uri_sans, [CLIENT]);
    assert_eq!(parsed.dns_sans, ["client.example.com"]);
    assert!(parsed.subject.contains("CN=client"), "{}", parsed.subject);
    assert_eq!(PeerCertificate::parse(b"not a certificate"), None);
}
