//! Semantic validation: every rule a user can get wrong that the types alone cannot catch.
//!
//! Each check returns every error of an object, not only the first, and each error names the
//! object (`VirtualService default/hello`), the field path (`spec.http[1].route[0].weight`) and the
//! reason. The pilot, the injection webhook and `meshctl analyze` all use these functions, so they
//! agree on what is valid.

use std::fmt;
use std::net::IpAddr;

use crate::duration::Duration;
use crate::networking::{Percent, StringMatch};
use crate::string_enum::StringEnum;
use crate::{ObjectRef, Resource};

mod networking;
mod security;

pub(crate) use networking::http_retry;
pub use networking::{
    GRPC_STATUSES, RETRY_ON, destination_rule, gateway, service_entry, sidecar, virtual_service,
    workload_entry,
};
pub use security::{authorization_policy, peer_authentication};

/// One problem in one field of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The object.
    pub object: ObjectRef,
    /// The field, as a path from the object's root (`spec.http[1].route[0].weight`).
    pub path: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.path, self.reason)
    }
}

impl std::error::Error for ValidationError {}

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
        Resource::Service(_) | Resource::Namespace(_) => Vec::new(),
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

/// Collects the errors of one object.
pub(crate) struct Checker {
    object: ObjectRef,
    errors: Vec<ValidationError>,
}

impl Checker {
    pub(crate) fn new(object: ObjectRef) -> Self {
        Self { object, errors: Vec::new() }
    }

    pub(crate) fn error(&mut self, path: &Path, reason: impl Into<String>) {
        self.errors.push(ValidationError {
            object: self.object.clone(),
            path: path.0.clone(),
            reason: reason.into(),
        });
    }

    pub(crate) fn finish(self) -> Vec<ValidationError> {
        self.errors
    }

    /// A port number in 1..=65535.
    pub(crate) fn port(&mut self, path: &Path, port: u32) {
        if !(1..=65535).contains(&port) {
            self.error(path, format!("port {port} is out of range: must be 1 to 65535"));
        }
    }

    /// A port number written as text (`"9080"`).
    pub(crate) fn port_text(&mut self, path: &Path, port: &str) {
        match port.parse::<u32>() {
            Ok(number) => self.port(path, number),
            Err(_) => self.error(path, format!("{port:?} is not a port number")),
        }
    }

    /// A duration that parses and is at least 1ms (`allow_zero`: `0s` is accepted and means
    /// "disabled").
    pub(crate) fn duration(&mut self, path: &Path, duration: &Duration, allow_zero: bool) {
        match duration.parse() {
            Err(err) => self.error(path, err.to_string()),
            Ok(d) if d.is_zero() && allow_zero => {}
            Ok(d) if d < std::time::Duration::from_millis(1) => {
                let hint = if allow_zero { " (or 0s to disable)" } else { "" };
                self.error(
                    path,
                    format!("duration {:?} must be at least 1ms{hint}", duration.as_str()),
                );
            }
            Ok(_) => {}
        }
    }

    pub(crate) fn opt_duration(&mut self, path: &Path, duration: Option<&Duration>) {
        if let Some(duration) = duration {
            self.duration(path, duration, false);
        }
    }

    /// A percentage in 0..=100.
    pub(crate) fn percent(&mut self, path: &Path, percent: &Percent) {
        if !(0.0..=100.0).contains(&percent.value) {
            self.error(
                &path.field("value"),
                format!("percentage {} is out of range: must be 0 to 100", percent.value),
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
            self.error(path, format!("regex {pattern:?} does not compile: {detail}"));
        }
    }

    /// A string match with at most one of exact/prefix/regex, or exactly one when `required`.
    pub(crate) fn string_match(&mut self, path: &Path, m: &StringMatch, required: bool) {
        let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
            .iter()
            .filter(|set| **set)
            .count();
        if set > 1 {
            self.error(path, "set only one of exact, prefix or regex");
        } else if set == 0 && required {
            self.error(path, "set one of exact, prefix or regex");
        }
        if let Some(pattern) = &m.regex {
            self.regex(&path.field("regex"), pattern);
        }
    }

    /// A known enumeration value.
    pub(crate) fn known<E: StringEnum>(&mut self, path: &Path, value: &E) {
        if !value.is_known() {
            self.error(
                path,
                format!(
                    "unknown value {:?}: must be one of {}",
                    value.as_str(),
                    E::KNOWN.join(", ")
                ),
            );
        }
    }

    /// An IP address or a CIDR block.
    pub(crate) fn ip_or_cidr(&mut self, path: &Path, value: &str) {
        if !is_ip_or_cidr(value) {
            self.error(path, format!("{value:?} is not an IP address or CIDR block"));
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
                    format!("{entry:?} is not a namespace, '.' (this namespace) or '*' (all)"),
                );
            }
        }
        if export_to.len() > 1 && export_to.iter().any(|e| e == "*") {
            self.error(path, "'*' already exports to every namespace and cannot be combined");
        }
    }

    /// A host name: an FQDN or short name, optionally with a leading `*` wildcard.
    pub(crate) fn host(&mut self, path: &Path, host: &str) {
        if let Err(reason) = check_wildcard_domain(host) {
            self.error(path, reason);
        }
    }

    /// A header name that the proxy may set or add (`removing`: may remove). The host may be
    /// set (`:authority` or `host`, as Istio allows) but not removed; other pseudo-headers
    /// belong to the protocol.
    pub(crate) fn header_name(&mut self, path: &Path, name: &str, removing: bool) {
        let is_host = name.eq_ignore_ascii_case("host") || name == ":authority";
        if !is_header_name(name) {
            self.error(path, format!("{name:?} is not a valid HTTP header name"));
        } else if removing && is_host {
            self.error(
                path,
                format!("header {name:?} cannot be removed: every request has a host"),
            );
        } else if name.starts_with(':') && !is_host {
            self.error(path, format!("pseudo-header {name:?} cannot be changed"));
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
