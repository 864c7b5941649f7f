//! One AuthorizationPolicy's rules as Envoy RBAC policies, as Istio builds them: each rule a
//! policy named `ns[<ns>]-policy[<name>]-rule[<i>]`, each `to` a permission and each `from` a
//! principal (the fields inside one ANDed, the values of a field ORed, `notX` negating that
//! OR), `when` conditions ANDed into every permission or principal by the kind of their key.
//! On a TCP chain the HTTP-only parts cannot be checked: an ALLOW rule that needs one is left
//! out (the allow narrows), a DENY or AUDIT rule loses that part (the deny widens), as Istio
//! does. Pure.

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TypedExtensionConfig};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, SourcedMetadata, permission, principal,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, OrMatcher, PathMatcher, RegexMatcher, StringMatcher,
    ValueMatcher, list_matcher, metadata_matcher, path_matcher, string_matcher, value_matcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use mesh_api::security::{AuthorizationPolicy, Condition, Operation, Rule, Source};

/// The dynamic metadata the JWT filter leaves a token's claims in (`payload_in_metadata`).
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
/// The key of the claims under [`JWT_FILTER`].
pub const JWT_PAYLOAD: &str = "payload";

/// Where the rules are enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// An HTTP connection manager: every attribute can be checked.
    Http,
    /// A TCP chain: only connection attributes.
    Tcp,
}

/// Whether a rule that cannot be checked whole is left out (ALLOW) or loses the part (DENY,
/// AUDIT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Narrowing {
    /// ALLOW: the rule is left out.
    DropRule,
    /// DENY and AUDIT: the part is left out.
    DropPart,
}

/// A part of a rule that the chain cannot check.
struct HttpOnly;

/// The policies of `policy`'s rules, by name.
pub fn policies(
    policy: &AuthorizationPolicy,
    chain: Chain,
    narrowing: Narrowing,
) -> Vec<(String, Policy)> {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    policy
        .spec
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let compiled = Compiler { chain, narrowing, namespace }.rule(rule).ok()?;
            Some((format!("ns[{namespace}]-policy[{name}]-rule[{i}]"), compiled))
        })
        .collect()
}

struct Compiler<'a> {
    chain: Chain,
    narrowing: Narrowing,
    namespace: &'a str,
}

impl Compiler<'_> {
    fn rule(&self, rule: &Rule) -> Result<Policy, HttpOnly> {
        let (mut for_permissions, mut for_principals) = (Vec::new(), Vec::new());
        for condition in &rule.when {
            match self.kept(self.condition(condition))? {
                Some(Part::Permission(p)) => for_permissions.push(p),
                Some(Part::Principal(p)) => for_principals.push(p),
                None => {}
            }
        }
        let mut permissions = Vec::new();
        for to in &rule.to {
            let mut parts = self.operation(&to.operation)?;
            parts.extend(for_permissions.iter().cloned());
            permissions.push(and_permissions(parts));
        }
        if rule.to.is_empty() {
            permissions.push(and_permissions(for_permissions));
        }
        let mut principals = Vec::new();
        for from in &rule.from {
            let mut parts = self.source(&from.source)?;
            parts.extend(for_principals.iter().cloned());
            principals.push(and_principals(parts));
        }
        if rule.from.is_empty() {
            principals.push(and_principals(for_principals));
        }
        Ok(Policy { permissions, principals, ..Policy::default() })
    }

    /// A part the chain can check, `None` for one it cannot check in a DENY (left out), an
    /// error for one in an ALLOW (the rule is left out).
    fn kept<T>(&self, part: Result<T, HttpOnly>) -> Result<Option<T>, HttpOnly> {
        match (part, self.narrowing) {
            (Ok(part), _) => Ok(Some(part)),
            (Err(_), Narrowing::DropPart) => Ok(None),
            (Err(e), Narrowing::DropRule) => Err(e),
        }
    }

    fn http_only(&self) -> Result<(), HttpOnly> {
        if self.chain == Chain::Tcp { Err(HttpOnly) } else { Ok(()) }
    }

    /// One field's values, ORed, or the negation of that OR; nothing for an empty list.
    fn field<T>(
        &self,
        values: &[String],
        negated: bool,
        http: bool,
        one: impl Fn(&str) -> Option<T>,
        or: impl Fn(Vec<T>) -> T,
        not: impl Fn(T) -> T,
    ) -> Result<Option<T>, HttpOnly> {
        if values.is_empty() {
            return Ok(None);
        }
        if http && self.kept(self.http_only())?.is_none() {
            return Ok(None);
        }
        // A value that cannot be matched (a malformed CIDR, which validation refuses) matches
        // nothing rather than anything.
        let matched: Vec<T> = values.iter().filter_map(|v| one(v)).collect();
        let any = or(matched);
        Ok(Some(if negated { not(any) } else { any }))
    }

    fn operation(&self, op: &Operation) -> Result<Vec<Permission>, HttpOnly> {
        let or = |rules: Vec<Permission>| {
            if rules.len() == 1 {
                rules.into_iter().next().unwrap_or_else(never_permission)
            } else {
                perm(permission::Rule::OrRules(permission::Set { rules }))
            }
        };
        let not = |p: Permission| perm(permission::Rule::NotRule(Box::new(p)));
        let host = |v: &str| Some(perm(permission::Rule::Header(header(":authority", v, true))));
        let method = |v: &str| Some(perm(permission::Rule::Header(header(":method", v, false))));
        let port =
            |v: &str| v.parse::<u32>().ok().map(|p| perm(permission::Rule::DestinationPort(p)));
        let path = |v: &str| Some(path_permission(v));
        let mut parts = Vec::new();
        for (values, negated, http, one) in [
            (&op.hosts, false, true, &host as &dyn Fn(&str) -> Option<Permission>),
            (&op.not_hosts, true, true, &host),
            (&op.ports, false, false, &port),
            (&op.not_ports, true, false, &port),
            (&op.methods, false, true, &method),
            (&op.not_methods, true, true, &method),
            (&op.paths, false, true, &path),
            (&op.not_paths, true, true, &path),
        ] {
            parts.extend(self.field(values, negated, http, one, or, not)?);
        }
        Ok(parts)
    }

    fn source(&self, source: &Source) -> Result<Vec<Principal>, HttpOnly> {
        let or = |ids: Vec<Principal>| {
            if ids.len() == 1 {
                ids.into_iter().next().unwrap_or_else(never_principal)
            } else {
                prin(principal::Identifier::OrIds(principal::Set { ids }))
            }
        };
        let not = |p: Principal| prin(principal::Identifier::NotId(Box::new(p)));
        let namespace = self.namespace.to_owned();
        let principal = |v: &str| Some(authenticated(spiffe_matcher(v)));
        let namespaces = |v: &str| Some(authenticated(namespace_matcher(v)));
        let service_accounts = move |v: &str| {
            let (ns, sa) = v.split_once('/').unwrap_or((namespace.as_str(), v));
            Some(authenticated(regex(&format!(
                "spiffe://[^/]+/ns/{}/sa/{}",
                regex_escape(ns),
                regex_escape(sa)
            ))))
        };
        let direct = |v: &str| cidr(v).map(|c| prin(principal::Identifier::DirectRemoteIp(c)));
        let remote = |v: &str| cidr(v).map(|c| prin(principal::Identifier::RemoteIp(c)));
        let request = |v: &str| Some(request_principal(v));
        let mut parts = Vec::new();
        for (values, negated, http, one) in [
            (&source.principals, false, false, &principal as &dyn Fn(&str) -> Option<Principal>),
            (&source.not_principals, true, false, &principal),
            (&source.request_principals, false, true, &request),
            (&source.not_request_principals, true, true, &request),
            (&source.namespaces, false, false, &namespaces),
            (&source.not_namespaces, true, false, &namespaces),
            (&source.service_accounts, false, false, &service_accounts),
            (&source.not_service_accounts, true, false, &service_accounts),
            (&source.ip_blocks, false, false, &direct),
            (&source.not_ip_blocks, true, false, &direct),
            (&source.remote_ip_blocks, false, false, &remote),
            (&source.not_remote_ip_blocks, true, false, &remote),
        ] {
            parts.extend(self.field(values, negated, http, one, or, not)?);
        }
        Ok(parts)
    }

    /// A `when` condition, as a permission or a principal by the kind of its key.
    fn condition(&self, c: &Condition) -> Result<Part, HttpOnly> {
        let key = c.key.as_str();
        let ids = |one: &dyn Fn(&str) -> Option<Principal>| -> Principal {
            let or = |values: &[String]| {
                let ids: Vec<Principal> = values.iter().filter_map(|v| one(v)).collect();
                prin(principal::Identifier::OrIds(principal::Set { ids }))
            };
            let mut parts = Vec::new();
            if !c.values.is_empty() {
                parts.push(or(&c.values));
            }
            if !c.not_values.is_empty() {
                parts.push(prin(principal::Identifier::NotId(Box::new(or(&c.not_values)))));
            }
            and_principals(parts)
        };
        let rules = |one: &dyn Fn(&str) -> Option<Permission>| -> Permission {
            let or = |values: &[String]| {
                let rules: Vec<Permission> = values.iter().filter_map(|v| one(v)).collect();
                perm(permission::Rule::OrRules(permission::Set { rules }))
            };
            let mut parts = Vec::new();
            if !c.values.is_empty() {
                parts.push(or(&c.values));
            }
            if !c.not_values.is_empty() {
                parts.push(perm(permission::Rule::NotRule(Box::new(or(&c.not_values)))));
            }
            and_permissions(parts)
        };
        if let Some(name) = key.strip_prefix("request.headers[").and_then(|k| k.strip_suffix(']')) {
            self.http_only()?;
            let name = name.to_ascii_lowercase();
            return Ok(Part::Principal(ids(&|v| {
                Some(prin(principal::Identifier::Header(header(&name, v, false))))
            })));
        }
        if let Some(path) = key.strip_prefix("request.auth.claims") {
            self.http_only()?;
            let names: Vec<String> =
                path.split(']').filter_map(|p| p.strip_prefix('[')).map(str::to_owned).collect();
            return Ok(Part::Principal(ids(&|v| Some(claim(&names, v)))));
        }
        Ok(match key {
            "source.ip" => Part::Principal(ids(&|v| {
                cidr(v).map(|c| prin(principal::Identifier::DirectRemoteIp(c)))
            })),
            "remote.ip" => {
                Part::Principal(ids(&|v| cidr(v).map(|c| prin(principal::Identifier::RemoteIp(c)))))
            }
            "source.namespace" => {
                Part::Principal(ids(&|v| Some(authenticated(namespace_matcher(v)))))
            }
            "source.principal" => Part::Principal(ids(&|v| Some(authenticated(spiffe_matcher(v))))),
            "request.auth.principal" => {
                self.http_only()?;
                Part::Principal(ids(&|v| Some(request_principal(v))))
            }
            "request.auth.audiences" => {
                self.http_only()?;
                Part::Principal(ids(&|v| Some(claim(&["aud".to_owned()], v))))
            }
            "request.auth.presenter" => {
                self.http_only()?;
                Part::Principal(ids(&|v| Some(claim(&["azp".to_owned()], v))))
            }
            "destination.ip" => Part::Permission(rules(&|v| {
                cidr(v).map(|c| perm(permission::Rule::DestinationIp(c)))
            })),
            "destination.port" => Part::Permission(rules(&|v| {
                v.parse::<u32>().ok().map(|p| perm(permission::Rule::DestinationPort(p)))
            })),
            "connection.sni" => Part::Permission(rules(&|v| {
                Some(perm(permission::Rule::RequestedServerName(string(v, false))))
            })),
            // Validation refuses other keys; one that got here matches nothing.
            _ => Part::Permission(never_permission()),
        })
    }
}

enum Part {
    Permission(Permission),
    Principal(Principal),
}

fn perm(rule: permission::Rule) -> Permission {
    Permission { rule: Some(rule) }
}

fn prin(identifier: principal::Identifier) -> Principal {
    Principal { identifier: Some(identifier) }
}

fn never_permission() -> Permission {
    perm(permission::Rule::NotRule(Box::new(perm(permission::Rule::Any(true)))))
}

fn never_principal() -> Principal {
    prin(principal::Identifier::NotId(Box::new(prin(principal::Identifier::Any(true)))))
}

fn and_permissions(rules: Vec<Permission>) -> Permission {
    match rules.len() {
        0 => perm(permission::Rule::Any(true)),
        1 => rules.into_iter().next().unwrap_or_else(never_permission),
        _ => perm(permission::Rule::AndRules(permission::Set { rules })),
    }
}

fn and_principals(ids: Vec<Principal>) -> Principal {
    match ids.len() {
        0 => prin(principal::Identifier::Any(true)),
        1 => ids.into_iter().next().unwrap_or_else(never_principal),
        _ => prin(principal::Identifier::AndIds(principal::Set { ids })),
    }
}

/// Istio's string forms: `*` any non-empty value, `x*` a prefix, `*x` a suffix, else exact.
fn string(value: &str, ignore_case: bool) -> StringMatcher {
    use string_matcher::MatchPattern;
    let pattern = if value == "*" {
        MatchPattern::SafeRegex(regex_matcher(".+"))
    } else if let Some(prefix) = value.strip_suffix('*') {
        MatchPattern::Prefix(prefix.to_owned())
    } else if let Some(suffix) = value.strip_prefix('*') {
        MatchPattern::Suffix(suffix.to_owned())
    } else {
        MatchPattern::Exact(value.to_owned())
    };
    StringMatcher { ignore_case, match_pattern: Some(pattern) }
}

fn regex_matcher(pattern: &str) -> RegexMatcher {
    RegexMatcher { regex: pattern.to_owned(), ..RegexMatcher::default() }
}

fn regex(pattern: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex_matcher(pattern))),
        ..StringMatcher::default()
    }
}

/// `text` matching itself in RE2.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn header(name: &str, value: &str, ignore_case: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(string(
            value,
            ignore_case,
        ))),
        ..HeaderMatcher::default()
    }
}

/// A peer identity value (`<trust domain>/ns/<ns>/sa/<sa>`, with `*` forms) against the
/// certificate's SPIFFE URI.
fn spiffe_matcher(value: &str) -> StringMatcher {
    if value == "*" {
        return string("*", false);
    }
    if let Some(suffix) = value.strip_prefix('*') {
        return string(&format!("*{suffix}"), false);
    }
    string(&format!("spiffe://{value}"), false)
}

fn namespace_matcher(value: &str) -> StringMatcher {
    let ns = regex_escape(value).replace("\\*", ".*");
    regex(&format!(".*/ns/{ns}/.*"))
}

fn authenticated(principal_name: StringMatcher) -> Principal {
    prin(principal::Identifier::Authenticated(principal::Authenticated {
        principal_name: Some(principal_name),
    }))
}

fn cidr(value: &str) -> Option<CidrRange> {
    let (address, len) = match value.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().ok()?),
        None => {
            let ip: std::net::IpAddr = value.parse().ok()?;
            (value, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    address.parse::<std::net::IpAddr>().ok()?;
    Some(CidrRange {
        address_prefix: address.to_owned(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

/// A path value: exact, prefix, suffix or presence, or a `{*}`/`{**}` template.
fn path_permission(value: &str) -> Permission {
    if value.contains('{') {
        // Envoy's template syntax spells Istio's `{**}` and `{*}` as `**` and `*`.
        let template = value.replace("{**}", "**").replace("{*}", "*");
        let config = UriTemplateMatchConfig { path_template: template };
        return perm(permission::Rule::UriTemplate(TypedExtensionConfig {
            name: "uri-template".to_owned(),
            typed_config: Some(super::super::any(config)),
        }));
    }
    perm(permission::Rule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(string(value, false))),
    }))
}

fn metadata(path: &[String], value: ValueMatcher) -> Principal {
    let mut segments = vec![JWT_PAYLOAD.to_owned()];
    segments.extend(path.iter().cloned());
    // The request's dynamic metadata (the default source), where the JWT filter writes.
    prin(principal::Identifier::SourcedMetadata(SourcedMetadata {
        metadata_matcher: Some(MetadataMatcher {
            filter: JWT_FILTER.to_owned(),
            path: segments
                .into_iter()
                .map(|key| metadata_matcher::PathSegment {
                    segment: Some(metadata_matcher::path_segment::Segment::Key(key)),
                })
                .collect(),
            value: Some(value),
            invert: false,
        }),
        ..SourcedMetadata::default()
    }))
}

/// A claim (nested by `path`) equal to `value`, or a list claim holding it.
fn claim(path: &[String], value: &str) -> Principal {
    let text = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(string(value, false))),
    };
    let list = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(ListMatcher {
            match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(text.clone()))),
        }))),
    };
    metadata(
        path,
        ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
                value_matchers: vec![text, list],
            })),
        },
    )
}

/// A request principal `<issuer>/<subject>` (split at the last `/`), from the token's `iss`
/// and `sub`; `*` any token.
fn request_principal(value: &str) -> Principal {
    let present = |key: &str| {
        metadata(
            &[key.to_owned()],
            ValueMatcher { match_pattern: Some(value_matcher::MatchPattern::PresentMatch(true)) },
        )
    };
    if value == "*" {
        return present("iss");
    }
    let Some((issuer, subject)) = value.rsplit_once('/') else {
        return claim(&["iss".to_owned()], value);
    };
    let part = |key: &str, v: &str| {
        if v == "*" { present(key) } else { claim(&[key.to_owned()], v) }
    };
    and_principals(vec![part("iss", issuer), part("sub", subject)])
}
