//! The filter's configuration (`JwtAuthentication`) compiled once per update: each provider
//! with its JWKS parsed, its places and the headers it writes; the rules with their path
//! matches and requirement trees, every provider they name resolved. What this proxy cannot
//! enforce as Envoy would (a JWKS fetched by the proxy, subject or lifetime limits, filter
//! state rules) is an error, so the store refuses the listener rather than letting tokens
//! through that Envoy would refuse.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::route::v3::RouteMatch;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtProvider, JwtRequirement, jwt_provider::JwksSourceSpecifier,
    jwt_requirement::RequiresType, requirement_rule::RequirementType,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use http::HeaderName;
use prost::Message as _;
use regex::Regex;

use super::extract::{Extractor, Places};
use super::jwks::Jwks;

/// Why a jwt_authn configuration cannot be enforced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The bytes are not a `JwtAuthentication`.
    #[error("the configuration does not decode: {0}")]
    Decode(String),
    /// A provider cannot be used as configured.
    #[error("providers[{provider:?}]: {why}")]
    Provider {
        /// The provider's name.
        provider: String,
        /// What is wrong.
        why: String,
    },
    /// A requirement names a provider that is not configured.
    #[error("required provider {0:?} is not configured")]
    UnknownProvider(String),
    /// A rule names a requirement that `requirement_map` does not hold.
    #[error("requirement {0:?} is not in requirement_map")]
    UnknownRequirement(String),
    /// A rule cannot be matched or required as configured.
    #[error("rules[{index}]: {why}")]
    Rule {
        /// The rule's position.
        index: usize,
        /// What is wrong.
        why: String,
    },
    /// A feature of the filter this proxy does not implement.
    #[error("{0} is not implemented")]
    NotImplemented(&'static str),
}

/// A jwt_authn filter compiled: what [`JwtAuthn::authenticate`] checks requests against.
#[derive(Debug)]
pub struct JwtAuthn {
    /// By name, in name order (Envoy's issuer lookup takes the first that fits).
    pub(super) providers: Vec<Provider>,
    pub(super) rules: Vec<Rule>,
    /// Every provider's places, for `allow_missing` and `allow_missing_or_failed`.
    pub(super) all: Extractor,
    pub(super) bypass_cors_preflight: bool,
    pub(super) strip_failure_response: bool,
}

/// A token issuer as the filter knows it.
#[derive(Debug)]
pub(super) struct Provider {
    /// Empty: any issuer.
    pub(super) issuer: String,
    pub(super) audiences: Audiences,
    /// The usable keys, or why there are none.
    pub(super) jwks: Result<Jwks, String>,
    pub(super) extractor: Extractor,
    /// Whether the token goes on to the app.
    pub(super) forward: bool,
    /// Where the payload goes, base64url, and whether padded.
    pub(super) forward_payload_header: Option<(HeaderName, bool)>,
    /// Header and claim path (`a.b` split), in order.
    pub(super) claim_to_headers: Vec<(HeaderName, Vec<String>)>,
    pub(super) payload_in_metadata: String,
    pub(super) header_in_metadata: String,
    pub(super) space_delimited_claims: Vec<String>,
    pub(super) clock_skew: u64,
}

/// The audiences a token must name one of, as Envoy compares them: without an `http://` or
/// `https://` scheme and a trailing slash. None: any token.
#[derive(Clone, Debug, Default)]
pub(super) struct Audiences(BTreeSet<String>);

impl Audiences {
    fn new(audiences: &[String]) -> Self {
        Self(audiences.iter().map(|a| sanitize_audience(a).to_owned()).collect())
    }

    /// Whether a token naming `audiences` is allowed.
    pub(super) fn allow(&self, audiences: &[String]) -> bool {
        self.0.is_empty() || audiences.iter().any(|a| self.0.contains(sanitize_audience(a)))
    }
}

fn sanitize_audience(aud: &str) -> &str {
    let aud = aud.strip_prefix("http://").or_else(|| aud.strip_prefix("https://")).unwrap_or(aud);
    aud.strip_suffix('/').unwrap_or(aud)
}

/// Which requests a rule takes, and what it requires of them.
#[derive(Debug)]
pub(super) struct Rule {
    path: PathMatch,
    case_sensitive: bool,
    pub(super) requirement: Requirement,
}

#[derive(Debug)]
enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
    /// A prefix that ends at a segment boundary.
    Separated(String),
}

impl Rule {
    /// Whether the rule takes a request for `path` (without its query).
    pub(super) fn matches(&self, path: &str) -> bool {
        let fold = |s: &str| if self.case_sensitive { s.to_owned() } else { s.to_lowercase() };
        match &self.path {
            // Envoy's regex matches ignore `case_sensitive`.
            PathMatch::Regex(r) => r.is_match(path),
            PathMatch::Prefix(p) => fold(path).starts_with(&fold(p)),
            PathMatch::Exact(p) => fold(path) == fold(p),
            PathMatch::Separated(p) => fold(path)
                .strip_prefix(&fold(p))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }
}

/// A requirement tree, providers resolved to their position.
#[derive(Debug)]
pub(super) enum Requirement {
    /// A token of this provider, with these audiences instead of the provider's when set.
    Provider { index: usize, audiences: Option<Audiences> },
    /// One of them; missing (or failed) tokens allowed when said so.
    Any { children: Vec<Requirement>, allow_missing: bool, allow_missing_or_failed: bool },
    /// All of them.
    All(Vec<Requirement>),
    /// A token of any provider, or none.
    AllowMissing,
    /// Any token verified if it can be, never refused.
    AllowMissingOrFailed,
    /// Nothing required.
    AllowAll,
}

impl JwtAuthn {
    /// The jwt_authn filter of an HTTP connection manager, compiled: the first one listed and
    /// not disabled (`None` when there is none). One that cannot be compiled is logged.
    pub fn of_connection_manager(hcm: &HttpConnectionManager) -> Option<Result<Self, ConfigError>> {
        let filter =
            hcm.http_filters.iter().find(|f| f.name == super::FILTER_NAME && !f.disabled)?;
        let compiled = match &filter.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => Self::decode(&any.value),
            _ => Err(ConfigError::Decode("no typed_config".to_owned())),
        };
        if let Err(why) = &compiled {
            tracing::warn!(
                "jwt_authn refuses every request: it cannot be enforced as configured: {why}"
            );
        }
        Some(compiled)
    }

    /// Whether the store may take `hcm`'s jwt_authn filters: each decodes and compiles (as
    /// the data path will compile it), and there is at most one.
    pub fn check_connection_manager(hcm: &HttpConnectionManager) -> Result<(), String> {
        let mut filters = hcm.http_filters.iter().filter(|f| f.name == super::FILTER_NAME);
        if let Some(filter) = filters.next() {
            match &filter.config_type {
                Some(http_filter::ConfigType::TypedConfig(any))
                    if any.type_url == super::TYPE_URL =>
                {
                    Self::decode(&any.value).map_err(|e| e.to_string())?;
                }
                Some(http_filter::ConfigType::TypedConfig(any)) => {
                    return Err(format!(
                        "{} takes a {}, not {:?}",
                        super::FILTER_NAME,
                        super::TYPE_URL,
                        any.type_url
                    ));
                }
                _ => return Err(format!("{} has no typed_config", super::FILTER_NAME)),
            }
        }
        if filters.next().is_some() {
            return Err(format!("more than one {} filter is not implemented", super::FILTER_NAME));
        }
        Ok(())
    }

    /// The filter configured by `bytes` (an encoded `JwtAuthentication`).
    pub fn decode(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config =
            JwtAuthentication::decode(bytes).map_err(|e| ConfigError::Decode(e.to_string()))?;
        Self::compile(&config)
    }

    /// The filter `config` describes, its JWKS parsed (a JWKS without usable keys is kept as
    /// such: tokens of that provider then fail, as in Envoy).
    pub fn compile(config: &JwtAuthentication) -> Result<Self, ConfigError> {
        if config.filter_state_rules.is_some() {
            return Err(ConfigError::NotImplemented("filter_state_rules"));
        }
        let named: BTreeMap<&String, &JwtProvider> = config.providers.iter().collect();
        let mut providers = Vec::with_capacity(named.len());
        let mut all = Extractor::default();
        for (name, provider) in &named {
            let compiled = compile_provider(name, provider)
                .map_err(|why| ConfigError::Provider { provider: (*name).clone(), why })?;
            all.add(places(provider));
            providers.push(compiled);
        }
        let index: BTreeMap<&str, usize> =
            named.keys().enumerate().map(|(i, name)| (name.as_str(), i)).collect();
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.iter().enumerate() {
            let requirement = match &rule.requirement_type {
                Some(RequirementType::Requires(r)) => requirement(r, &index)?,
                Some(RequirementType::RequirementName(name)) => {
                    let r = config
                        .requirement_map
                        .get(name)
                        .ok_or_else(|| ConfigError::UnknownRequirement(name.clone()))?;
                    requirement(r, &index)?
                }
                None => Requirement::AllowAll,
            };
            let m = rule.r#match.as_ref().ok_or_else(|| ConfigError::Rule {
                index: i,
                why: "a rule without a match".to_owned(),
            })?;
            let (path, case_sensitive) =
                path_match(m).map_err(|why| ConfigError::Rule { index: i, why })?;
            rules.push(Rule { path, case_sensitive, requirement });
        }
        // Requirements reachable only through the map are checked as well, as Envoy does.
        for r in config.requirement_map.values() {
            requirement(r, &index)?;
        }
        Ok(Self {
            providers,
            rules,
            all,
            bypass_cors_preflight: config.bypass_cors_preflight,
            strip_failure_response: config.strip_failure_response,
        })
    }
}

fn compile_provider(name: &str, p: &JwtProvider) -> Result<Provider, String> {
    if p.subjects.is_some() {
        return Err("subjects is not implemented".to_owned());
    }
    if p.require_expiration || p.max_lifetime.is_some() {
        return Err("require_expiration and max_lifetime are not implemented".to_owned());
    }
    let jwks = match &p.jwks_source_specifier {
        Some(JwksSourceSpecifier::LocalJwks(source)) => match &source.specifier {
            Some(Specifier::InlineString(json)) => Jwks::parse(json),
            Some(Specifier::InlineBytes(bytes)) => std::str::from_utf8(bytes)
                .map_err(|_| "the JWKS is not UTF-8".to_owned())
                .and_then(Jwks::parse),
            _ => return Err("local_jwks other than inline is not implemented".to_owned()),
        },
        Some(JwksSourceSpecifier::RemoteJwks(_)) => {
            return Err(
                "remote_jwks is not implemented (the control plane inlines each JWKS)".to_owned()
            );
        }
        None => return Err("no JWKS (local_jwks or remote_jwks)".to_owned()),
    };
    if let Err(why) = &jwks {
        tracing::warn!(provider = name, "JWKS without usable keys, its tokens will fail: {why}");
    }
    let header = |name: &str| {
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is no header name"))
    };
    for h in &p.from_headers {
        header(&h.name)?;
    }
    let forward_payload_header = match p.forward_payload_header.as_str() {
        "" => None,
        name => Some((header(name)?, p.pad_forward_payload_header)),
    };
    let claim_to_headers = p
        .claim_to_headers
        .iter()
        .map(|c| {
            let path: Vec<String> = if c.claim_path.is_empty() {
                c.claim_name.split('.').map(str::to_owned).collect()
            } else {
                c.claim_path.iter().map(|s| s.key.clone()).collect()
            };
            if path.iter().any(String::is_empty) {
                return Err(format!("claim {:?} names no claim", c.claim_name));
            }
            Ok((header(&c.header_name)?, path))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let provider = Provider {
        issuer: p.issuer.clone(),
        audiences: Audiences::new(&p.audiences),
        jwks,
        extractor: {
            let mut e = Extractor::default();
            e.add(places(p));
            e
        },
        forward: p.forward,
        forward_payload_header,
        claim_to_headers,
        payload_in_metadata: p.payload_in_metadata.clone(),
        header_in_metadata: p.header_in_metadata.clone(),
        space_delimited_claims: p
            .normalize_payload_in_metadata
            .as_ref()
            .map(|n| n.space_delimited_claims.clone())
            .unwrap_or_default(),
        clock_skew: match p.clock_skew_seconds {
            0 => super::DEFAULT_CLOCK_SKEW_SECONDS,
            skew => u64::from(skew),
        },
    };
    Ok(provider)
}

/// Where `p` takes tokens from and which headers it writes (header names already checked).
fn places(p: &JwtProvider) -> Places<'_> {
    let header = |name: &str| HeaderName::from_bytes(name.as_bytes()).ok();
    Places {
        issuer: &p.issuer,
        headers: p
            .from_headers
            .iter()
            .filter_map(|h| Some((header(&h.name)?, h.value_prefix.as_str())))
            .collect(),
        params: &p.from_params,
        cookies: &p.from_cookies,
        writes: std::iter::once(p.forward_payload_header.as_str())
            .filter(|h| !h.is_empty())
            .chain(p.claim_to_headers.iter().map(|c| c.header_name.as_str()))
            .filter_map(header)
            .collect(),
    }
}

fn requirement(
    r: &JwtRequirement,
    providers: &BTreeMap<&str, usize>,
) -> Result<Requirement, ConfigError> {
    let provider = |name: &str| {
        providers.get(name).copied().ok_or_else(|| ConfigError::UnknownProvider(name.to_owned()))
    };
    Ok(match &r.requires_type {
        None => Requirement::AllowAll,
        Some(RequiresType::ProviderName(name)) => {
            Requirement::Provider { index: provider(name)?, audiences: None }
        }
        Some(RequiresType::ProviderAndAudiences(p)) => Requirement::Provider {
            index: provider(&p.provider_name)?,
            audiences: Some(Audiences::new(&p.audiences)),
        },
        Some(RequiresType::RequiresAny(list)) => {
            if list.requirements.len() < 2 {
                return Err(ConfigError::NotImplemented("requires_any with fewer than 2 entries"));
            }
            let (mut allow_missing, mut allow_missing_or_failed) = (false, false);
            let mut children = Vec::new();
            for r in &list.requirements {
                match &r.requires_type {
                    Some(RequiresType::AllowMissing(_)) => allow_missing = true,
                    Some(RequiresType::AllowMissingOrFailed(_)) => allow_missing_or_failed = true,
                    _ => children.push(requirement(r, providers)?),
                }
            }
            // Only the allowances: they stand for themselves, over every provider.
            if children.is_empty() {
                children.push(if allow_missing_or_failed {
                    Requirement::AllowMissingOrFailed
                } else {
                    Requirement::AllowMissing
                });
            }
            Requirement::Any { children, allow_missing, allow_missing_or_failed }
        }
        Some(RequiresType::RequiresAll(list)) => {
            if list.requirements.len() < 2 {
                return Err(ConfigError::NotImplemented("requires_all with fewer than 2 entries"));
            }
            Requirement::All(
                list.requirements
                    .iter()
                    .map(|r| requirement(r, providers))
                    .collect::<Result<_, _>>()?,
            )
        }
        Some(RequiresType::AllowMissing(_)) => Requirement::AllowMissing,
        Some(RequiresType::AllowMissingOrFailed(_)) => Requirement::AllowMissingOrFailed,
        Some(RequiresType::ExtractOnlyWithoutValidation(_)) => {
            return Err(ConfigError::NotImplemented("extract_only_without_validation"));
        }
    })
}

fn path_match(m: &RouteMatch) -> Result<(PathMatch, bool), String> {
    if !m.headers.is_empty() || !m.query_parameters.is_empty() {
        return Err("header and query parameter matches are not implemented".to_owned());
    }
    if m.grpc.is_some() || m.runtime_fraction.is_some() || !m.dynamic_metadata.is_empty() {
        return Err("only path matches are implemented".to_owned());
    }
    let case_sensitive = m.case_sensitive.as_ref().is_none_or(|c| c.value);
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(PathSpecifier::SafeRegex(r)) => {
            let anchored = format!("^(?:{})$", r.regex);
            PathMatch::Regex(Regex::new(&anchored).map_err(|e| format!("safe_regex: {e}"))?)
        }
        Some(PathSpecifier::PathSeparatedPrefix(p)) => PathMatch::Separated(p.clone()),
        Some(_) => return Err("this path match is not implemented".to_owned()),
        None => return Err("a match without a path".to_owned()),
    };
    Ok((path, case_sensitive))
}
