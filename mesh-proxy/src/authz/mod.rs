//! Authorization as Envoy's RBAC filters do it, so that the AuthorizationPolicies the pilot
//! compiles into them have the same outcome here as in a stock Envoy sidecar: the network
//! filter (`envoy.filters.network.rbac`) per connection, the HTTP filter
//! (`envoy.filters.http.rbac`) per request. Each filter's configuration is compiled once per
//! update ([`rbac`], its leaves in [`matchers`] and URI templates in [`template`]) and
//! decides from the [`Attributes`] of a connection or request. A chain's filters run in their
//! order and the first that denies decides. A filter holding anything this proxy cannot
//! enforce denies everything (fails closed), never allows silently.
//!
//! Pure: no I/O; the callers log and answer.

mod matchers;
mod rbac;
mod template;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::google::protobuf::Any;

pub use rbac::{Action, Decision, JWT_METADATA_FILTER, Rbac};

/// Envoy's name of the HTTP RBAC filter.
pub const HTTP_FILTER: &str = "envoy.filters.http.rbac";
/// Envoy's name of the network RBAC filter.
pub const NETWORK_FILTER: &str = "envoy.filters.network.rbac";

/// What a peer certificate says of its holder, as RBAC's `authenticated` principal reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// URI SANs (a mesh peer's SPIFFE id), in order.
    pub uri_sans: Vec<String>,
    /// DNS SANs, in order.
    pub dns_sans: Vec<String>,
    /// The subject (`CN=client, O=example`).
    pub subject: String,
}

impl PeerCertificate {
    /// What the leaf certificate (DER) says; `None` when it does not parse.
    pub fn parse(der: &[u8]) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut out = Self { subject: cert.subject().to_string(), ..Self::default() };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => out.uri_sans.push((*uri).to_owned()),
                    GeneralName::DNSName(dns) => out.dns_sans.push((*dns).to_owned()),
                    _ => {}
                }
            }
        }
        Some(out)
    }
}

/// What RBAC reads of a connection, and of its request when there is one.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// The connection's peer (`source_ip`, `direct_remote_ip`).
    pub source: SocketAddr,
    /// Where the client was going, the original destination (`destination_ip`, `_port`).
    pub destination: SocketAddr,
    /// The TLS server name the client asked for (`requested_server_name`).
    pub server_name: Option<&'a str>,
    /// The peer's verified certificate, when the connection is mutual TLS.
    pub certificate: Option<&'a PeerCertificate>,
    /// The request; `None` for network RBAC.
    pub request: Option<RequestAttributes<'a>>,
}

/// What RBAC reads of a request, after the connection manager has normalized its path.
#[derive(Clone, Copy, Debug)]
pub struct RequestAttributes<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, with the query (empty for a CONNECT).
    pub path: &'a str,
    /// `:authority` (the `Host` header for HTTP/1.1).
    pub authority: &'a str,
    /// `:scheme`.
    pub scheme: &'a str,
    /// The other headers.
    pub headers: &'a http::HeaderMap,
    /// The client as the connection manager found it (`remote_ip`: from X-Forwarded-For as
    /// the HCM says, else the peer).
    pub remote: IpAddr,
    /// What jwt_authn verified of the request's token (the dynamic metadata `payload` under
    /// [`JWT_METADATA_FILTER`]); nothing fills it yet.
    pub jwt_payload: Option<&'a serde_json::Value>,
}

/// A request or connection an RBAC filter denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The filter that denied it.
    pub filter: String,
    /// The effective policy: the DENY policy that matched (`None` for an ALLOW filter no
    /// policy matched, or a filter that fails closed).
    pub policy: Option<String>,
}

impl Denied {
    /// Envoy's response code details (and connection termination details) for the denial:
    /// `rbac_access_denied_matched_policy[<policy>]`, `[none]` without one, with whitespace
    /// in the name made `_` so that the access log keeps its fields.
    pub fn details(&self) -> String {
        let policy = self.policy.as_deref().unwrap_or("none");
        let policy: String =
            policy.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
        format!("rbac_access_denied_matched_policy[{policy}]")
    }
}

/// One RBAC filter of a chain, compiled.
#[derive(Debug)]
pub struct Filter {
    name: String,
    /// `Ok(None)`: no `rules`, so nothing enforced (Envoy's rule); `Err`: why it fails closed.
    rules: Result<Option<Rbac>, String>,
}

impl Filter {
    /// The HTTP filter `name` from its `typed_config` (`None`: configured otherwise, such as
    /// over ECDS, which this proxy does not fetch).
    pub fn http(name: &str, config: Option<&Any>) -> Self {
        let rules =
            config.ok_or_else(|| "only a typed_config is implemented".to_owned()).and_then(|any| {
                let filter = decode_http(any)?;
                if filter.matcher.is_some() {
                    return Err("matcher trees are not implemented".to_owned());
                }
                filter.rules.as_ref().map(Rbac::compile).transpose()
            });
        Self { name: name.to_owned(), rules }
    }

    /// The network filter `name` from its `typed_config`.
    pub fn network(name: &str, config: Option<&Any>) -> Self {
        let rules =
            config.ok_or_else(|| "only a typed_config is implemented".to_owned()).and_then(|any| {
                let filter = decode_network(any)?;
                if filter.matcher.is_some() {
                    return Err("matcher trees are not implemented".to_owned());
                }
                filter.rules.as_ref().map(Rbac::compile).transpose()
            });
        Self { name: name.to_owned(), rules }
    }

    /// The filter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why the filter denies everything, if it does.
    pub fn failure(&self) -> Option<&str> {
        self.rules.as_ref().err().map(String::as_str)
    }
}

/// Checks that `any` is an HTTP RBAC filter's configuration (what the xDS client NACKs).
pub fn decode_http(any: &Any) -> Result<HttpRbac, String> {
    decode(any)
}

/// Checks that `any` is a network RBAC filter's configuration (what the xDS client NACKs).
pub fn decode_network(any: &Any) -> Result<NetworkRbac, String> {
    decode(any)
}

fn decode<T: prost::Message + prost::Name + Default>(any: &Any) -> Result<T, String> {
    let expected = T::type_url();
    if any.type_url != expected {
        return Err(format!("typed_config is a {}, not a {expected}", any.type_url));
    }
    T::decode(any.value.as_slice()).map_err(|e| format!("typed_config does not decode: {e}"))
}

/// A chain's RBAC filters, in their order.
#[derive(Debug, Default)]
pub struct Filters(Vec<Filter>);

impl Filters {
    /// The filters, in order.
    pub fn new(filters: Vec<Filter>) -> Self {
        Self(filters)
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The filters, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Filter> {
        self.0.iter()
    }

    /// Runs the filters in order on `attributes`: the first that denies decides; a LOG
    /// filter's match is logged and lets it go on.
    pub fn check(&self, attributes: &Attributes<'_>) -> Result<(), Denied> {
        for filter in &self.0 {
            let rbac = match &filter.rules {
                Ok(Some(rbac)) => rbac,
                Ok(None) => continue,
                Err(_) => return Err(Denied { filter: filter.name.clone(), policy: None }),
            };
            let decision = rbac.decide(attributes);
            if rbac.action() == Action::Log
                && let Some(policy) = decision.policy
            {
                tracing::info!(filter = %filter.name, %policy, "RBAC audit: policy matched");
            }
            if !decision.allowed {
                return Err(Denied {
                    filter: filter.name.clone(),
                    policy: decision.policy.map(str::to_owned),
                });
            }
        }
        Ok(())
    }
}
