//! What a filter chain's filters ask before a connection or request is carried, compiled with
//! the listener: the network RBAC filters (ahead of `tcp_proxy` or the HTTP connection
//! manager), and for an HTTP chain its connection manager's request options: the path and
//! host normalization ([`crate::path`]), how the client's address is found (for RBAC's
//! `remote_ip`), its jwt_authn filter ([`crate::jwt`], ahead of RBAC), its HTTP RBAC
//! filters in the order `http_filters` lists them (Istio's AUDIT, DENY, ALLOW), its `tracing`
//! ([`crate::trace`]) and its access loggers' filters; for a TCP chain, its `tcp_proxy`'s
//! access loggers. Other HTTP filters are the business of routing and policy.

use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::FilterChain;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use prost::Message as _;

use crate::authz::{self, Filter, Filters};
use crate::path::PathOptions;

/// Envoy's name of the HTTP connection manager.
const HCM: &str = "envoy.filters.network.http_connection_manager";
/// Envoy's name of the TCP proxy.
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

/// What a chain's filters check before its connections and requests go on.
#[derive(Debug, Default)]
pub struct ChainFilters {
    /// The network RBAC filters, in order.
    pub network: Filters,
    /// The connection manager's request options (defaults for a TCP chain).
    pub http: Arc<HttpOptions>,
    /// Which connections the `tcp_proxy`'s access loggers log (none, on an HTTP chain).
    pub tcp_log: crate::telemetry::log_filter::LogPolicy,
}

impl ChainFilters {
    /// The filters of `chain`. Never fails: an RBAC filter the proxy cannot enforce denies
    /// everything, and says so in the log once (per configuration that holds it).
    pub fn of(chain: &FilterChain) -> Self {
        let mut network = Vec::new();
        let mut http = HttpOptions::default();
        let mut tcp_log = crate::telemetry::log_filter::LogPolicy::default();
        for filter in &chain.filters {
            let typed = match &filter.config_type {
                Some(ConfigType::TypedConfig(any)) => Some(any),
                _ => None,
            };
            match filter.name.as_str() {
                authz::NETWORK_FILTER => network.push(Filter::network(&filter.name, typed)),
                HCM => {
                    if let Some(hcm) = typed
                        .and_then(|any| HttpConnectionManager::decode(any.value.as_slice()).ok())
                    {
                        http = HttpOptions::of(&hcm);
                    }
                }
                TCP_PROXY => {
                    if let Some(proxy) =
                        typed.and_then(|any| TcpProxy::decode(any.value.as_slice()).ok())
                    {
                        tcp_log = crate::telemetry::log_filter::LogPolicy::of(&proxy.access_log);
                    }
                }
                _ => {}
            }
        }
        let network = Filters::new(network);
        for filter in network.iter().chain(http.rbac.iter()) {
            if let Some(why) = filter.failure() {
                tracing::warn!(
                    chain = %chain.name,
                    filter = %filter.name(),
                    "RBAC filter denies everything: it cannot be enforced as configured: {why}"
                );
            }
        }
        Self { network, http: Arc::new(http), tcp_log }
    }

    /// Whether any RBAC filter runs on the chain (then the peer certificate is read).
    pub fn authorizes(&self) -> bool {
        !self.network.is_empty() || !self.http.rbac.is_empty()
    }
}

/// What an HTTP connection manager does to each request before routing.
#[derive(Debug, Default)]
pub struct HttpOptions {
    /// Path normalization.
    pub path: PathOptions,
    /// `strip_trailing_host_dot`.
    pub strip_trailing_host_dot: bool,
    /// `use_remote_address`: the client is the connection's peer (unless trusted hops say
    /// otherwise), not what X-Forwarded-For says.
    pub use_remote_address: bool,
    /// `xff_num_trusted_hops`.
    pub xff_num_trusted_hops: u32,
    /// The HTTP RBAC filters, in order.
    pub rbac: Filters,
    /// The jwt_authn filter, which runs ahead of RBAC (`Err`: one the proxy cannot enforce,
    /// which refuses every request).
    pub jwt: Option<Result<crate::jwt::JwtAuthn, crate::jwt::ConfigError>>,
    /// Its `tracing`, when it traces.
    pub trace: Option<Arc<crate::trace::TraceConfig>>,
    /// Which requests its access loggers log.
    pub access_log: crate::telemetry::log_filter::LogPolicy,
}

impl HttpOptions {
    /// The options of `hcm`: its HTTP RBAC filters (a disabled one skipped, as Envoy skips
    /// it), and its path, host and address settings.
    pub fn of(hcm: &HttpConnectionManager) -> Self {
        let rbac = hcm
            .http_filters
            .iter()
            .filter(|f| f.name == authz::HTTP_FILTER && !f.disabled)
            .map(|f| {
                let typed = match &f.config_type {
                    Some(http_filter::ConfigType::TypedConfig(any)) => Some(any),
                    _ => None,
                };
                Filter::http(&f.name, typed)
            })
            .collect();
        Self {
            path: PathOptions::of(hcm),
            strip_trailing_host_dot: hcm.strip_trailing_host_dot,
            use_remote_address: hcm.use_remote_address.as_ref().is_some_and(|b| b.value),
            xff_num_trusted_hops: hcm.xff_num_trusted_hops,
            rbac: Filters::new(rbac),
            jwt: crate::jwt::JwtAuthn::of_connection_manager(hcm),
            // Environment tags are read once, here, as Envoy reads them at configuration.
            trace: hcm.tracing.as_ref().map(|tracing| {
                Arc::new(crate::trace::TraceConfig::compile(tracing, |name| {
                    std::env::var(name).ok()
                }))
            }),
            access_log: crate::telemetry::log_filter::LogPolicy::of(&hcm.access_log),
        }
    }

    /// Whether requests go on untouched and unchecked.
    pub fn is_identity(&self) -> bool {
        self.path.is_identity()
            && !self.strip_trailing_host_dot
            && self.rbac.is_empty()
            && self.jwt.is_none()
    }

    /// The client's address as Envoy's connection manager finds it (RBAC's `remote_ip`):
    /// with `use_remote_address`, the peer, or with trusted hops the address that many hops
    /// from the right of X-Forwarded-For; without, the address `xff_num_trusted_hops` from
    /// the right of X-Forwarded-For (the last one with none). The peer when the header has no
    /// such address.
    pub fn remote_ip(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        let skip = match (self.use_remote_address, self.xff_num_trusted_hops) {
            (true, 0) => return peer,
            (true, hops) => hops - 1,
            (false, hops) => hops,
        };
        let values: Vec<&[u8]> =
            headers.get_all("x-forwarded-for").iter().map(|v| v.as_bytes()).collect();
        let joined = values.join(&b","[..]);
        let Ok(xff) = std::str::from_utf8(&joined) else { return peer };
        let mut rest = xff;
        for _ in 0..skip {
            match rest.rfind(',') {
                Some(comma) => rest = &rest[..comma],
                None => return peer,
            }
        }
        let last = rest.rsplit(',').next().unwrap_or_default().trim();
        last.parse().unwrap_or(peer)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::BoolValue;
    use http::HeaderValue;

    use super::*;

    fn headers(xff: &[&'static str]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for v in xff {
            map.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn the_client_address_comes_from_the_peer_or_x_forwarded_for_as_the_hcm_says() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let options = |use_remote: bool, hops: u32| {
            HttpOptions::of(&HttpConnectionManager {
                use_remote_address: Some(BoolValue { value: use_remote }),
                xff_num_trusted_hops: hops,
                ..HttpConnectionManager::default()
            })
        };
        let xff = headers(&["1.1.1.1, 2.2.2.2", "3.3.3.3"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(options(true, 0).remote_ip(peer, &xff), peer, "the edge trusts its peer");
        assert_eq!(options(true, 1).remote_ip(peer, &xff), ip("3.3.3.3"));
        assert_eq!(options(true, 2).remote_ip(peer, &xff), ip("2.2.2.2"));
        assert_eq!(options(false, 0).remote_ip(peer, &xff), ip("3.3.3.3"), "Envoy's default");
        assert_eq!(options(false, 2).remote_ip(peer, &xff), ip("1.1.1.1"));
        assert_eq!(options(false, 3).remote_ip(peer, &xff), peer, "not that many hops");
        assert_eq!(options(false, 0).remote_ip(peer, &headers(&[])), peer);
        assert_eq!(options(false, 0).remote_ip(peer, &headers(&["junk"])), peer);
    }
}
