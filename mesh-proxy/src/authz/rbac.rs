//! One RBAC configuration (`envoy.config.rbac.v3.RBAC`) compiled into rule trees, and its
//! decision by Envoy's engine: the policies are tried in the order of their names (Envoy
//! keeps them in a sorted map) and the first that matches is the effective policy; a policy
//! matches when any of its permissions and any of its principals match. ALLOW allows when a
//! policy matches, DENY denies when one does, LOG never blocks.

use std::borrow::Cow;

use envoy_types::pb::envoy::config::rbac::v3::{
    MetadataSource, Permission, Policy as PolicyProto, Principal, Rbac as RbacProto, permission,
    principal, rbac,
};
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use prost::Message as _;
use regex::Regex;

use super::Attributes;
use super::matchers::{Cidr, HeaderRule, MetadataRule, PortRange, StringRule};

/// Where jwt_authn puts what it verified: `payload` under this filter's namespace of the
/// dynamic metadata (Istio's `payload_in_metadata`).
pub const JWT_METADATA_FILTER: &str = "envoy.filters.http.jwt_authn";
const JWT_METADATA_KEY: &str = "payload";

/// What a filter does with the policy that matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Allow what a policy matches, deny the rest.
    Allow,
    /// Deny what a policy matches, allow the rest.
    Deny,
    /// Allow everything; log what a policy matches (Istio's AUDIT).
    Log,
}

/// A compiled RBAC configuration.
#[derive(Debug)]
pub struct Rbac {
    action: Action,
    /// By name, in order.
    policies: Vec<(String, Policy)>,
}

/// The engine's answer for a connection or request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Whether it may go on.
    pub allowed: bool,
    /// The effective policy: the first (by name) that matched, if any.
    pub policy: Option<&'a str>,
}

#[derive(Debug)]
struct Policy {
    /// Any of them.
    permissions: Vec<Rule>,
    /// Any of them.
    principals: Vec<Rule>,
}

/// A permission or principal: both are trees over the same kinds of leaves.
#[derive(Debug)]
enum Rule {
    Any,
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Header(HeaderRule),
    /// The path without query and fragment.
    UrlPath(StringRule),
    /// The path without query and fragment, against a URI template's regex.
    UriTemplate(Regex),
    DestinationIp(Cidr),
    DestinationPort(u32),
    DestinationPorts(PortRange),
    ServerName(StringRule),
    Metadata(MetadataRule),
    /// The peer certificate's URI SANs, DNS SANs or subject (`None`: any certificate).
    Authenticated(Option<StringRule>),
    /// The connection's peer (`source_ip`, `direct_remote_ip`).
    PeerIp(Cidr),
    /// The client as the connection manager found it (`remote_ip`: X-Forwarded-For).
    RemoteIp(Cidr),
}

impl Rbac {
    /// Compiles `rules`; the error names the policy and the rule the proxy cannot enforce.
    pub fn compile(rules: &RbacProto) -> Result<Self, String> {
        let action = match rbac::Action::try_from(rules.action) {
            Ok(rbac::Action::Allow) => Action::Allow,
            Ok(rbac::Action::Deny) => Action::Deny,
            Ok(rbac::Action::Log) => Action::Log,
            Err(_) => return Err(format!("action {} is not one Envoy knows", rules.action)),
        };
        let mut policies = rules
            .policies
            .iter()
            .map(|(name, policy)| {
                Policy::compile(policy)
                    .map(|p| (name.clone(), p))
                    .map_err(|why| format!("policy {name:?}: {why}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        policies.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { action, policies })
    }

    /// Its action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The decision for `attributes`.
    pub fn decide(&self, attributes: &Attributes<'_>) -> Decision<'_> {
        let policy = self
            .policies
            .iter()
            .find(|(_, p)| {
                p.permissions.iter().any(|r| r.matches(attributes))
                    && p.principals.iter().any(|r| r.matches(attributes))
            })
            .map(|(name, _)| name.as_str());
        let allowed = match self.action {
            Action::Allow => policy.is_some(),
            Action::Deny => policy.is_none(),
            Action::Log => true,
        };
        Decision { allowed, policy }
    }
}

impl Policy {
    fn compile(policy: &PolicyProto) -> Result<Self, String> {
        if policy.condition.is_some() || policy.checked_condition.is_some() {
            return Err("CEL conditions are not implemented".to_owned());
        }
        if policy.permissions.is_empty() || policy.principals.is_empty() {
            return Err("a policy needs at least one permission and one principal".to_owned());
        }
        let permissions = policy
            .permissions
            .iter()
            .enumerate()
            .map(|(i, p)| permission(p).map_err(|why| format!("permissions[{i}]: {why}")))
            .collect::<Result<_, _>>()?;
        let principals = policy
            .principals
            .iter()
            .enumerate()
            .map(|(i, p)| principal(p).map_err(|why| format!("principals[{i}]: {why}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { permissions, principals })
    }
}

fn all<T>(
    items: &[T],
    field: &str,
    each: impl Fn(&T) -> Result<Rule, String>,
) -> Result<Vec<Rule>, String> {
    if items.is_empty() {
        return Err(format!("{field} is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| each(item).map_err(|why| format!("{field}[{i}]: {why}")))
        .collect()
}

// The deprecated `metadata` and `source_ip` are what Istio's pilots still write.
#[allow(deprecated)]
fn permission(p: &Permission) -> Result<Rule, String> {
    use permission::Rule as P;
    Ok(match p.rule.as_ref().ok_or("a permission without a rule")? {
        P::Any(true) => Rule::Any,
        P::Any(false) => return Err("any must be true".to_owned()),
        P::AndRules(set) => Rule::And(all(&set.rules, "and_rules.rules", permission)?),
        P::OrRules(set) => Rule::Or(all(&set.rules, "or_rules.rules", permission)?),
        P::NotRule(inner) => {
            Rule::Not(Box::new(permission(inner).map_err(|w| format!("not_rule: {w}"))?))
        }
        P::Header(h) => Rule::Header(HeaderRule::compile(h)?),
        P::UrlPath(m) => Rule::UrlPath(url_path(m)?),
        P::DestinationIp(c) => Rule::DestinationIp(Cidr::compile(c)?),
        P::DestinationPort(port) if *port <= 65535 => Rule::DestinationPort(*port),
        P::DestinationPort(port) => return Err(format!("destination_port {port} is out of range")),
        P::DestinationPortRange(r) => Rule::DestinationPorts(PortRange::compile(r)?),
        P::Metadata(m) => Rule::Metadata(MetadataRule::compile(m)?),
        P::RequestedServerName(m) => Rule::ServerName(StringRule::compile(m)?),
        P::UriTemplate(extension) => {
            let any = extension.typed_config.as_ref().ok_or("uri_template has no typed_config")?;
            let expected = <UriTemplateMatchConfig as prost::Name>::type_url();
            if any.type_url != expected {
                return Err(format!("uri_template is a {}, not a {expected}", any.type_url));
            }
            let config = UriTemplateMatchConfig::decode(any.value.as_slice())
                .map_err(|e| format!("uri_template does not decode: {e}"))?;
            Rule::UriTemplate(super::template::compile(&config.path_template)?)
        }
        P::SourcedMetadata(s) => match MetadataSource::try_from(s.metadata_source) {
            Ok(MetadataSource::Dynamic) => Rule::Metadata(MetadataRule::compile(
                s.metadata_matcher.as_ref().ok_or("sourced_metadata without a matcher")?,
            )?),
            _ => return Err("sourced_metadata from the route is not implemented".to_owned()),
        },
        P::Matcher(extension) => {
            return Err(format!("matcher extension {:?} is not implemented", extension.name));
        }
    })
}

#[allow(deprecated)]
fn principal(p: &Principal) -> Result<Rule, String> {
    use principal::Identifier as I;
    Ok(match p.identifier.as_ref().ok_or("a principal without an identifier")? {
        I::Any(true) => Rule::Any,
        I::Any(false) => return Err("any must be true".to_owned()),
        I::AndIds(set) => Rule::And(all(&set.ids, "and_ids.ids", principal)?),
        I::OrIds(set) => Rule::Or(all(&set.ids, "or_ids.ids", principal)?),
        I::NotId(inner) => {
            Rule::Not(Box::new(principal(inner).map_err(|w| format!("not_id: {w}"))?))
        }
        I::Authenticated(a) => {
            Rule::Authenticated(a.principal_name.as_ref().map(StringRule::compile).transpose()?)
        }
        I::SourceIp(c) | I::DirectRemoteIp(c) => Rule::PeerIp(Cidr::compile(c)?),
        I::RemoteIp(c) => Rule::RemoteIp(Cidr::compile(c)?),
        I::Header(h) => Rule::Header(HeaderRule::compile(h)?),
        I::UrlPath(m) => Rule::UrlPath(url_path(m)?),
        I::Metadata(m) => Rule::Metadata(MetadataRule::compile(m)?),
        I::SourcedMetadata(s) => match MetadataSource::try_from(s.metadata_source) {
            Ok(MetadataSource::Dynamic) => Rule::Metadata(MetadataRule::compile(
                s.metadata_matcher.as_ref().ok_or("sourced_metadata without a matcher")?,
            )?),
            _ => return Err("sourced_metadata from the route is not implemented".to_owned()),
        },
        I::FilterState(f) => {
            return Err(format!("filter_state {:?} is not implemented", f.key));
        }
        I::Custom(extension) => {
            return Err(format!("custom principal {:?} is not implemented", extension.name));
        }
    })
}

fn url_path(
    m: &envoy_types::pb::envoy::r#type::matcher::v3::PathMatcher,
) -> Result<StringRule, String> {
    use envoy_types::pb::envoy::r#type::matcher::v3::path_matcher::Rule as R;
    match &m.rule {
        Some(R::Path(s)) => StringRule::compile(s),
        None => Err("url_path without a path".to_owned()),
    }
}

impl Rule {
    fn matches(&self, a: &Attributes<'_>) -> bool {
        match self {
            Rule::Any => true,
            Rule::And(rules) => rules.iter().all(|r| r.matches(a)),
            Rule::Or(rules) => rules.iter().any(|r| r.matches(a)),
            Rule::Not(rule) => !rule.matches(a),
            Rule::Header(h) => h.matches(header(a, &h.name).as_deref()),
            Rule::UrlPath(m) => path_only(a).is_some_and(|p| m.matches(p)),
            Rule::UriTemplate(r) => path_only(a).is_some_and(|p| r.is_match(p)),
            Rule::DestinationIp(c) => c.contains(a.destination.ip()),
            Rule::DestinationPort(port) => u32::from(a.destination.port()) == *port,
            Rule::DestinationPorts(range) => range.contains(a.destination.port()),
            Rule::ServerName(m) => m.matches(a.server_name.unwrap_or_default()),
            Rule::Metadata(m) => m.matches(metadata(a, &m.filter, &m.path)),
            Rule::Authenticated(name) => match (a.certificate, name) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(cert), Some(m)) => {
                    cert.uri_sans.iter().chain(&cert.dns_sans).any(|san| m.matches(san))
                        || m.matches(&cert.subject)
                }
            },
            Rule::PeerIp(c) => c.contains(a.source.ip()),
            Rule::RemoteIp(c) => c.contains(a.request.as_ref().map_or(a.source.ip(), |r| r.remote)),
        }
    }
}

/// A request header as Envoy's header map holds it: the pseudo-headers from the request
/// line (`Host` is `:authority` there, never `host`), others with every value joined by `,`.
/// A connection (network RBAC) has no headers.
fn header<'a>(a: &'a Attributes<'_>, name: &str) -> Option<Cow<'a, str>> {
    let request = a.request.as_ref()?;
    let pseudo = match name {
        ":authority" => Some(request.authority),
        ":path" => Some(request.path),
        ":method" => Some(request.method),
        ":scheme" => Some(request.scheme),
        "host" => return None,
        _ => None,
    };
    if let Some(value) = pseudo {
        return (!value.is_empty()).then_some(Cow::Borrowed(value));
    }
    let mut values = request.headers.get_all(name).iter();
    let first = values.next()?;
    let mut joined = String::from_utf8_lossy(first.as_bytes());
    for more in values {
        let joined = joined.to_mut();
        joined.push(',');
        joined.push_str(&String::from_utf8_lossy(more.as_bytes()));
    }
    Some(joined)
}

/// The request's path without query and fragment; `None` without one (a connection, or a
/// CONNECT).
fn path_only<'a>(a: &'a Attributes<'_>) -> Option<&'a str> {
    let path = a.request.as_ref()?.path;
    let end = path.find(['?', '#']).unwrap_or(path.len());
    (!path.is_empty()).then(|| &path[..end])
}

/// The dynamic metadata value at `path` under `filter`: what jwt_authn verified is the only
/// metadata so far (`payload` under [`JWT_METADATA_FILTER`]); a step into anything but an
/// object finds nothing, as a step into anything but a struct does in Envoy.
fn metadata<'a>(
    a: &'a Attributes<'_>,
    filter: &str,
    path: &[String],
) -> Option<&'a serde_json::Value> {
    let (first, rest) = path.split_first()?;
    if filter != JWT_METADATA_FILTER || first != JWT_METADATA_KEY {
        return None;
    }
    let mut value = a.request.as_ref()?.jwt_payload?;
    for key in rest {
        value = value.as_object()?.get(key)?;
    }
    Some(value)
}
