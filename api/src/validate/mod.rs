//! Semantic validation: every rule a user can get wrong that the types alone cannot catch.
//!
//! Each check returns every error of an object, not only the first, and each error names the
//! object (`VirtualService default/hello`), the field path (`spec.http[1].route[0].weight`), the
//! kind of problem as a stable [`Code`] (`weights-not-100`) and the reason. The pilot, the
//! injection webhook and `meshctl analyze` all use these functions, so they agree on what is
//! valid.

use std::fmt;
use std::net::IpAddr;

use crate::duration::Duration;
use crate::networking::{Percent, StringMatch};
use crate::string_enum::StringEnum;
use crate::{ObjectRef, Resource};

mod gateway_api;
mod networking;
mod security;
mod telemetry;

pub(crate) use networking::http_retry;
pub use networking::{
    GRPC_STATUSES, RETRY_ON, destination_rule, gateway, service_entry, sidecar, virtual_service,
    workload_entry,
};
pub use security::{authorization_policy, peer_authentication, request_authentication};
pub(crate) use telemetry::custom_tags;
pub use telemetry::telemetry;

/// One problem in one field of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The object the field belongs to (`VirtualService default/hello`).
    pub object: ObjectRef,
    /// The field, as a path from the object's root (`spec.http[1].route[0].weight`).
    pub path: String,
    /// What kind of problem it is, for tools that filter, count or suppress findings by kind.
    pub code: Code,
    /// What is wrong, in words.
    pub reason: String,
}

// The code is left out: the pilot's logs, Kubernetes Events and tests read this exact line, and
// callers that show codes (`meshctl analyze`) print `code` beside it.
impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.path, self.reason)
    }
}

impl std::error::Error for ValidationError {}

/// Declares [`Code`] from `Variant = "text"` pairs, so that a variant, its text and
/// [`Code::ALL`] cannot drift apart.
macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal, )+) => {
        /// The kind of a [`ValidationError`], as a stable descriptive string in kebab-case
        /// (`weights-not-100`).
        ///
        /// `meshctl analyze` prints it beside each finding so that users and scripts can filter,
        /// count or suppress findings by kind without matching on the reason text. So once
        /// released a code never changes its text or its meaning: a new kind of problem gets a
        /// new code, and a code that is no longer produced is not reused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Code {
            $( $(#[$doc])* $variant, )+
        }

        impl Code {
            /// Every code, in declaration order: what `meshctl analyze` can list and suppress.
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            /// The code as printed (`port-out-of-range`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Code::$variant => $text, )+
                }
            }
        }
    };
}

codes! {
    /// A field, or one of a set of fields, that must be set is missing or empty.
    Required = "required",
    /// Fields that exclude each other are set together, or a field is set where it has no
    /// effect.
    ConflictingFields = "conflicting-fields",
    /// A name, port or listener that must be unique in its list is declared again.
    Duplicate = "duplicate",
    /// A value outside the accepted set (enumerations, protocols, schemes, retry conditions,
    /// gRPC statuses, condition keys).
    UnknownValue = "unknown-value",
    /// An Istio field that the mesh does not implement.
    Unsupported = "unsupported",
    /// A port number outside 1 to 65535.
    PortOutOfRange = "port-out-of-range",
    /// A port written as text that is not a number.
    NotAPortNumber = "not-a-port-number",
    /// A duration that does not parse (no unit, unknown unit, negative).
    InvalidDuration = "invalid-duration",
    /// A duration below 1ms (`0s` included, where it does not mean "off").
    DurationTooShort = "duration-too-short",
    /// A percentage outside 0 to 100.
    PercentOutOfRange = "percent-out-of-range",
    /// A count or limit below zero.
    NegativeNumber = "negative-number",
    /// A number below its minimum of 1 (a weight, an aggression, a concurrency).
    NumberTooSmall = "number-too-small",
    /// A regular expression that RE2 (the proxy's and Envoy's syntax) does not compile.
    InvalidRegex = "invalid-regex",
    /// A host that is not a DNS name or an allowed wildcard, or a wildcard where none is
    /// allowed.
    InvalidHost = "invalid-host",
    /// A namespace, service account, subset, gateway, VirtualService or trust domain name
    /// that is not well formed.
    InvalidName = "invalid-name",
    /// A label key or value that Kubernetes would refuse.
    InvalidLabel = "invalid-label",
    /// An IP address, CIDR block, socket address, unix socket or `host:port` that is not well
    /// formed, or not of the kind the field needs.
    InvalidAddress = "invalid-address",
    /// An `exportTo` entry that is not a namespace, `.`, `~` or `*`, or `*` with others.
    InvalidExportTo = "invalid-export-to",
    /// An HTTP header name that is not an RFC 7230 token.
    InvalidHeaderName = "invalid-header-name",
    /// A header the proxy must not change: a pseudo-header, or the host removed.
    ProtectedHeader = "protected-header",
    /// A CORS method that is not an HTTP method token.
    InvalidHttpMethod = "invalid-http-method",
    /// An HTTP status outside its range (200 to 599, or 300 to 399 for a redirect).
    InvalidHttpStatus = "invalid-http-status",
    /// A route weight outside 0 to 100.
    WeightOutOfRange = "weight-out-of-range",
    /// Weights that share traffic but do not sum to 100.
    WeightsNot100 = "weights-not-100",
    /// A TLS route's SNI host that none of the VirtualService's hosts covers.
    SniNotCovered = "sni-not-covered",
    /// A wildcard ServiceEntry host to be resolved with DNS, which has nothing to look up.
    WildcardNotResolvable = "wildcard-not-resolvable",
    /// An endpoint port name that the ServiceEntry does not declare.
    UndeclaredPort = "undeclared-port",
    /// A locality failover rule from a region to itself.
    FailoverToSelf = "failover-to-self",
    /// A TLS mode that needs certificates, keys or a CA that are not given.
    MissingTlsCredentials = "missing-tls-credentials",
    /// A TLS mode that does not fit the server's protocol.
    TlsModeMismatch = "tls-mode-mismatch",
    /// A minimum TLS version above the maximum.
    TlsVersionsInverted = "tls-versions-inverted",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Validates any object the mesh reads and returns all its errors (none when it is valid).
pub fn resource(resource: &Resource) -> Vec<ValidationError> {
    match resource {
        Resource::VirtualService(o) => virtual_service(o),
        Resource::DestinationRule(o) => destination_rule(o),
        Resource::Gateway(o) => gateway(o),
        Resource::ServiceEntry(o) => service_entry(o),
        Resource::WorkloadEntry(o) => workload_entry(o),
        Resource::Sidecar(o) => sidecar(o),
        Resource::PeerAuthentication(o) => peer_authentication(o),
        Resource::AuthorizationPolicy(o) => authorization_policy(o),
        Resource::RequestAuthentication(o) => request_authentication(o),
        Resource::Telemetry(o) => telemetry(o),
        Resource::KubeGateway(o) => gateway_api::gateway(o),
        Resource::HttpRoute(o) => gateway_api::http_route(o),
        Resource::GrpcRoute(o) => gateway_api::grpc_route(o),
        Resource::TlsRoute(o) => gateway_api::tls_route(o),
        Resource::Service(_)
        | Resource::Namespace(_)
        | Resource::Secret(_)
        | Resource::GatewayClass(_)
        | Resource::ReferenceGrant(_) => Vec::new(),
    }
}

/// A field path under construction (`spec.http[0].match[1].headers[version]`).
#[derive(Clone, Debug)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn root(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// A named field below this one.
    pub(crate) fn field(&self, name: &str) -> Self {
        Self(format!("{}.{name}", self.0))
    }

    /// An element of a list.
    pub(crate) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// An entry of a map.
    pub(crate) fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }
}

/// Collects the errors of one object. A message that more than one check writes is written
/// here once, so that it reads (and is coded) the same wherever it is found.
pub(crate) struct Checker {
    object: ObjectRef,
    errors: Vec<ValidationError>,
}

impl Checker {
    pub(crate) fn new(object: ObjectRef) -> Self {
        Self { object, errors: Vec::new() }
    }

    /// Records a finding. A message that more than one check writes has a helper below instead.
    pub(crate) fn error(&mut self, path: &Path, code: Code, reason: impl Into<String>) {
        self.errors.push(ValidationError {
            object: self.object.clone(),
            path: path.0.clone(),
            code,
            reason: reason.into(),
        });
    }

    pub(crate) fn finish(self) -> Vec<ValidationError> {
        self.errors
    }

    /// Something that must be there is not: `what` names it (`host`, `at least one server`).
    pub(crate) fn required(&mut self, path: &Path, what: &str) {
        self.error(path, Code::Required, format!("{what} is required"));
    }

    /// Two fields that exclude each other are both set; `path` is the one to drop.
    pub(crate) fn not_both(&mut self, path: &Path, one: &str, other: &str) {
        self.error(path, Code::ConflictingFields, format!("set {one} or {other}, not both"));
    }

    /// A port number in 1..=65535.
    pub(crate) fn port(&mut self, path: &Path, port: u32) {
        if !(1..=65535).contains(&port) {
            self.error(
                path,
                Code::PortOutOfRange,
                format!("port {port} is out of range: must be 1 to 65535"),
            );
        }
    }

    /// A port number written as text (`"9080"`).
    pub(crate) fn port_text(&mut self, path: &Path, port: &str) {
        match port.parse::<u32>() {
            Ok(number) => self.port(path, number),
            Err(_) => {
                self.error(path, Code::NotAPortNumber, format!("{port:?} is not a port number"))
            }
        }
    }

    /// A duration that parses and is at least 1ms (`allow_zero`: `0s` is accepted and means
    /// "disabled").
    pub(crate) fn duration(&mut self, path: &Path, duration: &Duration, allow_zero: bool) {
        match duration.parse() {
            Err(err) => self.error(path, Code::InvalidDuration, err.to_string()),
            Ok(d) if d.is_zero() && allow_zero => {}
            Ok(d) if d < std::time::Duration::from_millis(1) => {
                let hint = if allow_zero { " (or 0s to disable)" } else { "" };
                self.error(
                    path,
                    Code::DurationTooShort,
                    format!("duration {:?} must be at least 1ms{hint}", duration.as_str()),
                );
            }
            Ok(_) => {}
        }
    }

    /// A duration that may be left out, and is at least 1ms when set.
    pub(crate) fn opt_duration(&mut self, path: &Path, duration: Option<&Duration>) {
        if let Some(duration) = duration {
            self.duration(path, duration, false);
        }
    }

    /// A timeout, where `0s` turns it off.
    pub(crate) fn opt_timeout(&mut self, path: &Path, timeout: Option<&Duration>) {
        if let Some(timeout) = timeout {
            self.duration(path, timeout, true);
        }
    }

    /// A percentage in 0..=100.
    pub(crate) fn percent(&mut self, path: &Path, percent: &Percent) {
        self.percentage(&path.field("value"), percent.value);
    }

    /// A percentage written as a bare number (integers included: they convert exactly and
    /// print the same).
    pub(crate) fn percentage(&mut self, path: &Path, value: f64) {
        if !(0.0..=100.0).contains(&value) {
            self.error(
                path,
                Code::PercentOutOfRange,
                format!("percentage {value} is out of range: must be 0 to 100"),
            );
        }
    }

    /// A count or limit that may be left out but not be negative.
    pub(crate) fn non_negative(&mut self, path: &Path, value: Option<i32>) {
        if let Some(v) = value
            && v < 0
        {
            self.error(path, Code::NegativeNumber, format!("{v} must not be negative"));
        }
    }

    /// The total of weights that share traffic, which must be 100.
    pub(crate) fn weights_total(&mut self, path: &Path, total: i128) {
        if total != 100 {
            self.error(
                path,
                Code::WeightsNot100,
                format!("weights add up to {total}: they must sum to 100"),
            );
        }
    }

    /// An HTTP status a route answers with, 200..=599.
    pub(crate) fn http_status(&mut self, path: &Path, status: i64) {
        if !(200..=599).contains(&status) {
            self.error(
                path,
                Code::InvalidHttpStatus,
                format!("status {status} is not a valid HTTP status: must be 200 to 599"),
            );
        }
    }

    /// A regular expression in RE2 syntax (what the proxy and Envoy accept).
    pub(crate) fn regex(&mut self, path: &Path, pattern: &str) {
        if let Err(err) = regex::Regex::new(pattern) {
            let detail = match err {
                regex::Error::Syntax(text) => text.lines().last().unwrap_or_default().to_owned(),
                other => other.to_string(),
            };
            self.error(
                path,
                Code::InvalidRegex,
                format!("regex {pattern:?} does not compile: {detail}"),
            );
        }
    }

    /// A string match with at most one of exact/prefix/regex, or exactly one when `required`.
    pub(crate) fn string_match(&mut self, path: &Path, m: &StringMatch, required: bool) {
        let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
            .iter()
            .filter(|set| **set)
            .count();
        if set > 1 {
            self.error(path, Code::ConflictingFields, "set only one of exact, prefix or regex");
        } else if set == 0 && required {
            self.error(path, Code::Required, "set one of exact, prefix or regex");
        }
        if let Some(pattern) = &m.regex {
            self.regex(&path.field("regex"), pattern);
        }
    }

    /// A known enumeration value.
    pub(crate) fn known<E: StringEnum>(&mut self, path: &Path, value: &E) {
        if !value.is_known() {
            self.one_of(path, value.as_str(), E::KNOWN);
        }
    }

    /// A value that must be one of `known`.
    pub(crate) fn one_of(&mut self, path: &Path, value: &str, known: &[&str]) {
        if !known.contains(&value) {
            self.error(
                path,
                Code::UnknownValue,
                format!("unknown value {value:?}: must be one of {}", known.join(", ")),
            );
        }
    }

    /// An IP address or a CIDR block.
    pub(crate) fn ip_or_cidr(&mut self, path: &Path, value: &str) {
        if !is_ip_or_cidr(value) {
            self.error(
                path,
                Code::InvalidAddress,
                format!("{value:?} is not an IP address or CIDR block"),
            );
        }
    }

    /// A namespace name (a DNS label).
    pub(crate) fn namespace(&mut self, path: &Path, namespace: &str) {
        if !crate::identity::is_dns_label(namespace) {
            self.error(path, Code::InvalidName, format!("{namespace:?} is not a namespace name"));
        }
    }

    /// `exportTo` entries: `.`, `*`, `~` or a namespace name.
    pub(crate) fn export_to(&mut self, path: &Path, export_to: &[String]) {
        for (i, entry) in export_to.iter().enumerate() {
            let ok =
                matches!(entry.as_str(), "." | "*" | "~") || crate::identity::is_dns_label(entry);
            if !ok {
                self.error(
                    &path.index(i),
                    Code::InvalidExportTo,
                    format!("{entry:?} is not a namespace, '.' (this namespace) or '*' (all)"),
                );
            }
        }
        if export_to.len() > 1 && export_to.iter().any(|e| e == "*") {
            self.error(
                path,
                Code::InvalidExportTo,
                "'*' already exports to every namespace and cannot be combined",
            );
        }
    }

    /// A host name: an FQDN or short name, optionally with a leading `*` wildcard. Returns
    /// whether it is one, for checks that only make sense on a well-formed host.
    pub(crate) fn host(&mut self, path: &Path, host: &str) -> bool {
        let checked = check_wildcard_domain(host);
        if let Err(reason) = &checked {
            self.error(path, Code::InvalidHost, reason.as_str());
        }
        checked.is_ok()
    }

    /// An HTTP header name (an RFC 7230 token, or a pseudo-header). Returns whether it is one.
    pub(crate) fn header_syntax(&mut self, path: &Path, name: &str) -> bool {
        let ok = is_header_name(name);
        if !ok {
            self.error(
                path,
                Code::InvalidHeaderName,
                format!("{name:?} is not a valid HTTP header name"),
            );
        }
        ok
    }

    /// A header name that the proxy may set or add (`removing`: may remove). The host may be
    /// set (`:authority` or `host`, as Istio allows) but not removed; other pseudo-headers
    /// belong to the protocol.
    pub(crate) fn header_name(&mut self, path: &Path, name: &str, removing: bool) {
        if !self.header_syntax(path, name) {
            return;
        }
        let is_host = name.eq_ignore_ascii_case("host") || name == ":authority";
        if removing && is_host {
            self.error(
                path,
                Code::ProtectedHeader,
                format!("header {name:?} cannot be removed: every request has a host"),
            );
        } else if name.starts_with(':') && !is_host {
            self.error(
                path,
                Code::ProtectedHeader,
                format!("pseudo-header {name:?} cannot be changed"),
            );
        }
    }
}

/// Whether `value` is an IP address or an IP/prefix CIDR block.
pub(crate) fn is_ip_or_cidr(value: &str) -> bool {
    match value.split_once('/') {
        None => value.parse::<IpAddr>().is_ok(),
        Some((ip, prefix)) => match (ip.parse::<IpAddr>(), prefix.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(len)) => len <= 32 && !prefix.starts_with('+'),
            (Ok(IpAddr::V6(_)), Ok(len)) => len <= 128 && !prefix.starts_with('+'),
            _ => false,
        },
    }
}

/// Whether `name` is an RFC 7230 token (or an HTTP/2 pseudo-header).
pub(crate) fn is_header_name(name: &str) -> bool {
    let body = name.strip_prefix(':').unwrap_or(name);
    !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A DNS label as Istio accepts it in hosts and subset names: letters of either case, digits
/// and `-`, 1 to 63 of them, not starting or ending with `-`.
pub(crate) fn is_host_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Checks a host that may carry a leading wildcard (`*`, `*.example.com`, `reviews`).
pub(crate) fn check_wildcard_domain(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host is empty".to_owned());
    }
    if host.len() > 255 {
        return Err(format!("host {host:?} is longer than 255 characters"));
    }
    if host == "*" {
        return Ok(());
    }
    // A trailing dot marks a fully qualified name, as in DNS.
    let name = host.strip_suffix('.').unwrap_or(host);
    let name = name.strip_prefix("*.").or_else(|| name.strip_prefix('*')).unwrap_or(name);
    if name.is_empty() || name.contains('*') {
        return Err(format!(
            "host {host:?} is not a valid wildcard: only a leading '*' or '*.' is allowed"
        ));
    }
    for label in name.split('.') {
        if !is_host_label(label) {
            return Err(format!(
                "host {host:?} is not a valid DNS name: label {label:?} must be 1 to 63 letters, digits or '-', not starting or ending with '-'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_kebab_case() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} names two codes");
            let kebab = text.split('-').all(|word| {
                !word.is_empty()
                    && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
            assert!(kebab, "{text} is not kebab-case");
            assert_eq!(code.to_string(), text);
        }
    }

    #[test]
    fn ip_and_cidr() {
        assert!(is_ip_or_cidr("10.0.0.1"));
        assert!(is_ip_or_cidr("10.0.0.0/8"));
        assert!(is_ip_or_cidr("2001:db8::/32"));
        assert!(!is_ip_or_cidr("10.0.0.0/33"));
        assert!(!is_ip_or_cidr("10.0.0/8"));
        assert!(!is_ip_or_cidr("example.com"));
    }

    #[test]
    fn wildcard_domains() {
        assert!(check_wildcard_domain("*").is_ok());
        assert!(check_wildcard_domain("*.example.com").is_ok());
        assert!(check_wildcard_domain("reviews.default.svc.cluster.local").is_ok());
        assert!(check_wildcard_domain("foo.*.com").is_err());
        assert!(check_wildcard_domain("Reviews").is_ok());
        assert!(check_wildcard_domain("istio.io.").is_ok());
        assert!(check_wildcard_domain("under_score").is_err());
        assert!(check_wildcard_domain("a..b").is_err());
        assert!(check_wildcard_domain("-a.com").is_err());
    }
}
