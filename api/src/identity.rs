//! SPIFFE workload identities: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Certificates carry the identity as their URI SAN; authorization policies name it without the
//! scheme (`cluster.local/ns/default/sa/sleep`).

use std::fmt;
use std::str::FromStr;

/// The trust domain used when the mesh config names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A workload identity, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, built only
/// from parts that passed the checks below.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a SPIFFE id or one of its parts was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The id does not start with `spiffe://`.
    #[error("{0:?} is not a SPIFFE id: it must start with spiffe://")]
    Scheme(String),
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error(
        "{0:?} is not a workload identity: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Path(String),
    /// The trust domain is empty or has characters SPIFFE forbids.
    #[error("trust domain {0:?} is invalid: use lowercase letters, digits, '.', '-' and '_'")]
    TrustDomain(String),
    /// A namespace or service account that is not a Kubernetes name.
    #[error(
        "{what} {value:?} is invalid: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
    )]
    Name {
        /// `namespace` or `service account`.
        what: &'static str,
        /// The value refused.
        value: String,
    },
}

impl SpiffeId {
    /// Builds an identity, checking each part.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let id = Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        validate_trust_domain(&id.trust_domain)?;
        validate_name("namespace", &id.namespace)?;
        validate_name("service account", &id.service_account)?;
        Ok(id)
    }

    /// The trust domain (`cluster.local`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The workload's Kubernetes namespace (the `ns/` segment).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The workload's Kubernetes service account (the `sa/` segment).
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The identity without its scheme, as AuthorizationPolicy principals write it
    /// (`cluster.local/ns/default/sa/sleep`).
    pub fn principal(&self) -> String {
        format!("{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}", self.principal())
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest =
            text.strip_prefix("spiffe://").ok_or_else(|| IdentityError::Scheme(text.to_owned()))?;
        let (trust_domain, path) =
            rest.split_once('/').ok_or_else(|| IdentityError::Path(text.to_owned()))?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", namespace, "sa", service_account] => {
                Self::new(trust_domain, *namespace, *service_account)
            }
            _ => Err(IdentityError::Path(text.to_owned())),
        }
    }
}

/// Checks a trust domain: SPIFFE allows lowercase letters, digits, `.`, `-` and `_`.
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), IdentityError> {
    let ok = !trust_domain.is_empty()
        && trust_domain.len() <= 255
        && trust_domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok { Ok(()) } else { Err(IdentityError::TrustDomain(trust_domain.to_owned())) }
}

/// Checks a namespace or service account name (a Kubernetes DNS subdomain).
fn validate_name(what: &'static str, value: &str) -> Result<(), IdentityError> {
    if is_dns_subdomain(value) {
        Ok(())
    } else {
        Err(IdentityError::Name { what, value: value.to_owned() })
    }
}

/// Whether `value` is a Kubernetes DNS-1123 subdomain (lowercase, `.`-separated labels, at most
/// 253 characters).
pub(crate) fn is_dns_subdomain(value: &str) -> bool {
    !value.is_empty() && value.len() <= 253 && value.split('.').all(is_dns_label)
}

/// Whether `value` is a DNS-1123 label (lowercase alphanumerics and `-`, at most 63).
pub(crate) fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let id = SpiffeId::new("cluster.local", "default", "bookinfo-reviews").unwrap();
        let text = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";
        assert_eq!(id.to_string(), text);
        assert_eq!(text.parse::<SpiffeId>().unwrap(), id);
        assert_eq!(id.principal(), "cluster.local/ns/default/sa/bookinfo-reviews");
    }

    #[test]
    fn refuses_malformed_ids() {
        assert!(matches!("https://x/ns/a/sa/b".parse::<SpiffeId>(), Err(IdentityError::Scheme(_))));
        assert!(matches!("spiffe://td/ns/a".parse::<SpiffeId>(), Err(IdentityError::Path(_))));
        assert!(matches!(
            "spiffe://td/ns/a/sa/b/extra".parse::<SpiffeId>(),
            Err(IdentityError::Path(_))
        ));
        assert!(matches!(
            "spiffe://Bad_TD!/ns/a/sa/b".parse::<SpiffeId>(),
            Err(IdentityError::TrustDomain(_))
        ));
        assert_eq!(
            "spiffe://td/ns/Default/sa/b".parse::<SpiffeId>(),
            Err(IdentityError::Name { what: "namespace", value: "Default".into() })
        );
    }
}
