//! The configuration the proxy runs: what the pilot sent and the proxy accepted. Each response
//! is checked whole before any of it is applied; a rejection names the resource and the field,
//! and leaves the last good configuration in force.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use mesh_api::xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE};
use prost::Message;

/// Network filters the proxy implements.
const NETWORK_FILTERS: [&str; 3] = [
    "envoy.filters.network.http_connection_manager",
    "envoy.filters.network.tcp_proxy",
    crate::authz::NETWORK_FILTER,
];
/// Listener filters the proxy implements.
const LISTENER_FILTERS: [&str; 3] = [
    "envoy.filters.listener.tls_inspector",
    "envoy.filters.listener.http_inspector",
    "envoy.filters.listener.original_dst",
];
/// HTTP filters the proxy implements.
const HTTP_FILTERS: [&str; 5] = [
    "envoy.filters.http.fault",
    "envoy.filters.http.cors",
    "envoy.filters.http.router",
    crate::authz::HTTP_FILTER,
    crate::jwt::FILTER_NAME,
];
/// Transport sockets the proxy implements.
const TRANSPORT_SOCKETS: [&str; 2] = [crate::tls::TLS_SOCKET, crate::tls::RAW_BUFFER_SOCKET];

/// Everything the proxy runs on, at one moment.
#[derive(Clone, Default)]
pub struct Config {
    /// Listeners by name; each LDS response replaces them all.
    pub listeners: BTreeMap<String, Listener>,
    /// Route configurations by name; RDS responses add or replace, never remove.
    pub routes: BTreeMap<String, RouteConfiguration>,
    /// Clusters by name; each CDS response replaces them all.
    pub clusters: BTreeMap<String, Cluster>,
    /// Endpoint assignments by cluster (EDS service) name; EDS responses add or replace, never
    /// remove.
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    /// TLS secrets (a gateway's certificates and client CAs) by SDS name: SDS responses add or
    /// replace; only those the listeners name are kept (see [`Config::secret_names`]).
    pub secrets: BTreeMap<String, Secret>,
    /// The version last accepted, by type URL.
    pub versions: BTreeMap<String, String>,
}

/// Secrets are named, never shown: a debug print of the configuration must not leak keys.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listeners", &self.listeners)
            .field("routes", &self.routes)
            .field("clusters", &self.clusters)
            .field("endpoints", &self.endpoints)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("versions", &self.versions)
            .finish()
    }
}

impl Config {
    /// Whether a first full configuration is in: clusters and listeners (a gateway no
    /// Gateway selects rightly has none), and the endpoints, routes and secrets they refer to
    /// (readiness). A secret whose `sds_config` sets a zero `initial_fetch_timeout` is not
    /// waited for.
    pub fn complete(&self) -> bool {
        self.versions.contains_key(CLUSTER_TYPE)
            && self.versions.contains_key(LISTENER_TYPE)
            && self.eds_clusters().all(|c| self.endpoints.contains_key(&c))
            && self.route_names().all(|r| self.routes.contains_key(&r))
            && self.missing_secrets().next().is_none()
    }

    /// What the listeners' chains terminate with secrets from the pilot.
    fn sds_tls(&self) -> impl Iterator<Item = crate::tls::SdsTls> + '_ {
        self.listeners
            .values()
            .flat_map(|l| l.filter_chains.iter().chain(l.default_filter_chain.as_ref()))
            .filter_map(|c| c.transport_socket.as_ref())
            .filter_map(|socket| match crate::tls::downstream(socket) {
                Ok(Some(crate::tls::DownstreamTls::Sds(tls))) => Some(*tls),
                _ => None,
            })
    }

    /// Secrets the listeners' TLS contexts ask for over ADS (the SDS names to subscribe to:
    /// `kubernetes://<credentialName>`, `kubernetes://<credentialName>-cacert`), each once.
    pub fn secret_names(&self) -> std::collections::BTreeSet<String> {
        self.sds_tls().flat_map(|tls| tls.secret_names().cloned().collect::<Vec<_>>()).collect()
    }

    /// Secrets the listeners wait for (see [`Config::complete`]) that have not arrived.
    pub fn missing_secrets(&self) -> impl Iterator<Item = String> + '_ {
        self.sds_tls().flat_map(|tls| tls.awaited).filter(|name| !self.secrets.contains_key(name))
    }

    /// Clusters whose endpoints come over EDS (the names to subscribe to).
    pub fn eds_clusters(&self) -> impl Iterator<Item = String> + '_ {
        self.clusters.values().filter(|c| c.eds_cluster_config.is_some()).map(|c| {
            c.eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| c.name.clone())
        })
    }

    /// Route configurations the listeners' HTTP connection managers ask for over RDS.
    pub fn route_names(&self) -> impl Iterator<Item = String> + '_ {
        self.listeners
            .values()
            .flat_map(|l| &l.filter_chains)
            .chain(self.listeners.values().filter_map(|l| l.default_filter_chain.as_ref()))
            .flat_map(|c| &c.filters)
            .filter_map(|f| match &f.config_type {
                Some(ConfigType::TypedConfig(any)) => {
                    HttpConnectionManager::decode(any.value.as_slice()).ok()
                }
                _ => None,
            })
            .filter_map(|hcm| match hcm.route_specifier {
                Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
                _ => None,
            })
    }
}

/// How long a received configuration may wait for the endpoints and routes it refers to before
/// it is put in force anyway (Envoy's `initial_fetch_timeout`).
pub const WARMING_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The proxy's configuration, read lock-free by the data path.
///
/// What the pilot sends is *received* at once, but put *in force* only when it is whole: a new
/// cluster waits for its endpoints and a new listener for its routes (Envoy's cluster and
/// listener warming). Otherwise a route to a subset applied together with its DestinationRule
/// would meet a cluster with no endpoints yet, and fail requests for the moment between the
/// two responses.
pub struct Store {
    current: ArcSwap<Config>,
    received: ArcSwap<Config>,
    /// Since when the received configuration waits to be whole.
    warming_since: arc_swap::ArcSwapOption<std::time::Instant>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            current: ArcSwap::default(),
            received: ArcSwap::default(),
            warming_since: arc_swap::ArcSwapOption::empty(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Store {
    /// Wakes whenever an update is applied (the value counts updates).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Everything received, in force or still warming: the names to subscribe to come from it.
    pub fn received(&self) -> Arc<Config> {
        self.received.load_full()
    }

    /// Puts the received configuration in force if it is whole, or has waited longer than
    /// `limit` (then what it still lacks is logged). Returns whether it did.
    pub fn publish_if_ready(&self, limit: std::time::Duration) -> bool {
        let received = self.received();
        if Arc::ptr_eq(&received, &self.current()) {
            self.warming_since.store(None);
            return false;
        }
        if !received.complete() {
            let started = match self.warming_since.load_full() {
                Some(started) => *started,
                None => {
                    let now = std::time::Instant::now();
                    self.warming_since.store(Some(Arc::new(now)));
                    now
                }
            };
            if started.elapsed() < limit {
                return false;
            }
            let missing: Vec<String> = received
                .eds_clusters()
                .filter(|c| !received.endpoints.contains_key(c))
                .chain(received.route_names().filter(|r| !received.routes.contains_key(r)))
                .chain(received.missing_secrets())
                .take(5)
                .collect();
            tracing::warn!(
                waited = ?limit,
                ?missing,
                "configuration put in force without all the endpoints, routes and secrets it names"
            );
        }
        self.warming_since.store(None);
        self.current.store(received);
        self.changes.send_modify(|n| *n += 1);
        true
    }

    /// Applies one response: every resource checked first; on the first problem nothing
    /// changes and the problem is returned (the NACK's message). Listeners and clusters are
    /// state of the world (what is not in the response is gone); routes, endpoints and
    /// secrets are incremental (what is not in the response stays).
    pub fn apply(&self, type_url: &str, version: &str, resources: &[Any]) -> Result<(), String> {
        let mut next = (*self.received()).clone();
        match type_url {
            CLUSTER_TYPE => next.clusters = decode_all(resources, check_cluster, |c| &c.name)?,
            LISTENER_TYPE => next.listeners = decode_all(resources, check_listener, |l| &l.name)?,
            ROUTE_TYPE => next.routes.extend(decode_all(resources, check_routes, |r| &r.name)?),
            ENDPOINT_TYPE => {
                next.endpoints.extend(decode_all(resources, check_endpoints, |e| &e.cluster_name)?)
            }
            SECRET_TYPE => next.secrets.extend(decode_all(resources, check_secret, |s| &s.name)?),
            other => return Err(format!("type {other} is not one this proxy uses")),
        }
        if type_url == CLUSTER_TYPE {
            // Endpoints of clusters that are gone go with them.
            let live: std::collections::BTreeSet<String> = next.eds_clusters().collect();
            next.endpoints.retain(|name, _| live.contains(name));
        }
        if type_url == LISTENER_TYPE || type_url == SECRET_TYPE {
            // Keys no listener names are not kept (nor is what a pilot sends unasked): the
            // secrets held are bounded by what the listeners name.
            let named = next.secret_names();
            next.secrets.retain(|name, _| named.contains(name));
        }
        next.versions.insert(type_url.to_owned(), version.to_owned());
        self.received.store(Arc::new(next));
        self.publish_if_ready(WARMING_LIMIT);
        Ok(())
    }
}

fn decode_all<T: Message + Default + prost::Name>(
    resources: &[Any],
    check: impl Fn(&T) -> Result<(), String>,
    name: impl Fn(&T) -> &String,
) -> Result<BTreeMap<String, T>, String> {
    let mut out = BTreeMap::new();
    for (i, any) in resources.iter().enumerate() {
        if any.type_url != T::type_url() {
            return Err(format!("resource {i} is a {}, not a {}", any.type_url, T::full_name()));
        }
        let resource = T::decode(any.value.as_slice())
            .map_err(|e| format!("resource {i} ({}) does not decode: {e}", T::full_name()))?;
        let key = name(&resource).clone();
        check(&resource).map_err(|why| format!("{} {key:?}: {why}", T::NAME))?;
        out.insert(key, resource);
    }
    Ok(out)
}

fn check_transport_socket(socket: &TransportSocket, field: &str) -> Result<(), String> {
    if TRANSPORT_SOCKETS.contains(&socket.name.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "{field}.name {:?} is not a transport socket this proxy implements (it has {TRANSPORT_SOCKETS:?})",
            socket.name
        ))
    }
}

fn check_cluster(c: &Cluster) -> Result<(), String> {
    match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t))
            if [
                DiscoveryType::Static,
                DiscoveryType::Eds,
                DiscoveryType::StrictDns,
                DiscoveryType::OriginalDst,
            ]
            .iter()
            .any(|s| *s as i32 == t) => {}
        Some(ClusterDiscoveryType::Type(t)) => {
            return Err(format!(
                "type {} is not supported (STATIC, EDS, STRICT_DNS and ORIGINAL_DST are)",
                DiscoveryType::try_from(t)
                    .map_or_else(|_| t.to_string(), |d| d.as_str_name().to_owned())
            ));
        }
        Some(ClusterDiscoveryType::ClusterType(ref custom)) => {
            return Err(format!(
                "cluster_type {:?} (a custom cluster) is not supported",
                custom.name
            ));
        }
        None => {}
    }
    let supported = [
        LbPolicy::RoundRobin,
        LbPolicy::LeastRequest,
        LbPolicy::Random,
        LbPolicy::RingHash,
        LbPolicy::Maglev,
        LbPolicy::ClusterProvided,
    ];
    if !supported.iter().any(|p| *p as i32 == c.lb_policy) {
        let name = LbPolicy::try_from(c.lb_policy)
            .map_or_else(|_| c.lb_policy.to_string(), |p| p.as_str_name().to_owned());
        return Err(format!("lb_policy {name} is not supported"));
    }
    if let Some(socket) = &c.transport_socket {
        check_transport_socket(socket, "transport_socket")?;
    }
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        if let Some(socket) = &m.transport_socket {
            check_transport_socket(
                socket,
                &format!("transport_socket_matches[{i}].transport_socket"),
            )?;
        }
    }
    Ok(())
}

fn check_listener(l: &Listener) -> Result<(), String> {
    if l.api_listener.is_some() {
        return Err("api_listener is for proxyless gRPC clients, not a sidecar".to_owned());
    }
    for (i, f) in l.listener_filters.iter().enumerate() {
        if !LISTENER_FILTERS.contains(&f.name.as_str()) {
            return Err(format!("listener_filters[{i}].name {:?} is not implemented", f.name));
        }
    }
    let chains =
        l.filter_chains.iter().map(Some).chain(std::iter::once(l.default_filter_chain.as_ref()));
    for (i, chain) in chains.enumerate().filter_map(|(i, c)| Some((i, c?))) {
        let at = if i < l.filter_chains.len() {
            format!("filter_chains[{i}]")
        } else {
            "default_filter_chain".to_owned()
        };
        if let Some(socket) = &chain.transport_socket {
            check_transport_socket(socket, &format!("{at}.transport_socket"))?;
            crate::tls::downstream(socket)
                .map_err(|why| format!("{at}.transport_socket: {why}"))?;
        }
        for (j, f) in chain.filters.iter().enumerate() {
            if !NETWORK_FILTERS.contains(&f.name.as_str()) {
                return Err(format!(
                    "{at}.filters[{j}].name {:?} is not implemented (it has {NETWORK_FILTERS:?})",
                    f.name
                ));
            }
            // An RBAC configuration that is not one is refused; one the proxy cannot
            // enforce is taken, and denies everything (`crate::filters`).
            if f.name == crate::authz::NETWORK_FILTER
                && let Some(ConfigType::TypedConfig(any)) = &f.config_type
            {
                crate::authz::decode_network(any)
                    .map_err(|why| format!("{at}.filters[{j}]: {why}"))?;
            }
            if f.name == NETWORK_FILTERS[0] {
                let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                    return Err(format!(
                        "{at}.filters[{j}]: the HTTP connection manager has no typed_config"
                    ));
                };
                let hcm = HttpConnectionManager::decode(any.value.as_slice())
                    .map_err(|e| format!("{at}.filters[{j}].typed_config does not decode: {e}"))?;
                for (k, h) in hcm.http_filters.iter().enumerate() {
                    if !HTTP_FILTERS.contains(&h.name.as_str()) && !h.is_optional {
                        return Err(format!(
                            "{at}.filters[{j}].http_filters[{k}].name {:?} is not implemented (it has {HTTP_FILTERS:?})",
                            h.name
                        ));
                    }
                    if h.name == crate::authz::HTTP_FILTER
                        && let Some(http_filter::ConfigType::TypedConfig(any)) = &h.config_type
                    {
                        crate::authz::decode_http(any)
                            .map_err(|why| format!("{at}.filters[{j}].http_filters[{k}]: {why}"))?;
                    }
                }
                // A token filter the proxy would enforce differently than Envoy is refused.
                crate::jwt::JwtAuthn::check_connection_manager(&hcm)
                    .map_err(|why| format!("{at}.filters[{j}]: {why}"))?;
                if let Some(RouteSpecifier::RouteConfig(routes)) = &hcm.route_specifier {
                    check_routes(routes)
                        .map_err(|why| format!("{at}.filters[{j}].route_config: {why}"))?;
                }
            }
        }
    }
    Ok(())
}

fn check_secret(secret: &Secret) -> Result<(), String> {
    if secret.name.is_empty() {
        return Err("it has no name".to_owned());
    }
    crate::tls::check_secret(secret)
}

fn check_routes(r: &RouteConfiguration) -> Result<(), String> {
    // What the data path will build from it must build: regexes compile, weights add up.
    crate::routing::RouteTable::compile(r)?;
    for (i, vhost) in r.virtual_hosts.iter().enumerate() {
        // A per-route RBAC would replace the chain's: unread, it could let through what it
        // denies, so it is refused.
        if vhost.typed_per_filter_config.contains_key(crate::authz::HTTP_FILTER) {
            return Err(format!(
                "virtual_hosts[{i}].typed_per_filter_config: per-route RBAC is not implemented"
            ));
        }
        // So would a per-route jwt_authn (a route exempted from token checks).
        if vhost.typed_per_filter_config.contains_key(crate::jwt::FILTER_NAME) {
            return Err(format!(
                "virtual_hosts[{i}].typed_per_filter_config: per-route jwt_authn is not implemented"
            ));
        }
        for (j, route) in vhost.routes.iter().enumerate() {
            let at = format!("virtual_hosts[{i}].routes[{j}]");
            match &route.action {
                Some(Action::Route(_) | Action::Redirect(_) | Action::DirectResponse(_)) => {}
                Some(_) => {
                    return Err(format!(
                        "{at}: only route, redirect and direct_response actions are implemented"
                    ));
                }
                None => return Err(format!("{at} has no action")),
            }
            for name in route.typed_per_filter_config.keys() {
                if !HTTP_FILTERS.contains(&name.as_str())
                    || name == crate::authz::HTTP_FILTER
                    || name == crate::jwt::FILTER_NAME
                {
                    return Err(format!(
                        "{at}.typed_per_filter_config[{name:?}] is for a filter this proxy does not implement"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_endpoints(e: &ClusterLoadAssignment) -> Result<(), String> {
    for (i, locality) in e.endpoints.iter().enumerate() {
        for (j, lb) in locality.lb_endpoints.iter().enumerate() {
            let address = match &lb.host_identifier {
                Some(HostIdentifier::Endpoint(ep)) => ep.address.as_ref(),
                _ => None,
            };
            if address.and_then(|a| a.address.as_ref()).is_none() {
                return Err(format!("endpoints[{i}].lb_endpoints[{j}] has no endpoint address"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use envoy_types::pb::envoy::config::core::v3::{ConfigSource, config_source};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CommonTlsContext, DownstreamTlsContext,
    };
    use envoy_types::util::pack_any;

    use super::*;
    use crate::tls::testing::*;

    /// A gateway listener on 8443: `a.example.com` with SIMPLE (`kubernetes://a`),
    /// `m.example.com` with MUTUAL (`kubernetes://m`, `kubernetes://m-cacert`).
    fn gateway() -> Listener {
        https_listener(
            8443,
            vec![
                ("a.example.com", gateway_socket("kubernetes://a", false)),
                ("m.example.com", gateway_socket("kubernetes://m", true)),
            ],
        )
    }

    fn routes(name: &str) -> Any {
        pack_any(RouteConfiguration { name: name.to_owned(), ..RouteConfiguration::default() })
    }

    fn names(set: &[&str]) -> BTreeSet<String> {
        set.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A store with clusters (none), the gateway listener and its routes: what is left to
    /// come is the secrets.
    fn store_waiting_for_secrets() -> Store {
        let store = Store::default();
        store.apply(CLUSTER_TYPE, "1", &[]).unwrap();
        store.apply(LISTENER_TYPE, "1", &[pack_any(gateway())]).unwrap();
        store.apply(ROUTE_TYPE, "1", &[routes("https.8443")]).unwrap();
        store
    }

    #[test]
    fn a_gateway_subscribes_to_the_secrets_its_listeners_name_and_waits_for_them() {
        let store = store_waiting_for_secrets();
        let received = store.received();
        assert_eq!(
            received.secret_names(),
            names(&["kubernetes://a", "kubernetes://m", "kubernetes://m-cacert"])
        );
        assert!(!received.complete(), "the secrets are not in yet");
        assert!(store.current().listeners.is_empty(), "the listener warms until they come");

        let ca = Ca::new("test");
        let a = certificate("kubernetes://a", &ca.leaf(&["a.example.com"]));
        let m = certificate("kubernetes://m", &ca.leaf(&["m.example.com"]));
        store.apply(SECRET_TYPE, "1", &[pack_any(a), pack_any(m)]).unwrap();
        assert!(store.current().listeners.is_empty(), "the client CA is still missing");
        assert_eq!(
            store.received().missing_secrets().collect::<Vec<_>>(),
            ["kubernetes://m-cacert"]
        );
        let cacert = client_ca("kubernetes://m-cacert", &ca.pem);
        store.apply(SECRET_TYPE, "2", &[pack_any(cacert)]).unwrap();
        let current = store.current();
        assert!(current.complete());
        assert_eq!(current.listeners.len(), 1, "in force with its secrets");
        assert_eq!(current.secrets.len(), 3, "SDS responses add up: incremental");
        assert_eq!(current.versions[SECRET_TYPE], "2");
        // A secret nothing needs is not kept, even when the pilot sends it.
        let stray = certificate("kubernetes://stray", &ca.leaf(&["stray.example.com"]));
        store.apply(SECRET_TYPE, "3", &[pack_any(stray)]).unwrap();
        assert!(!store.received().secrets.contains_key("kubernetes://stray"));
        // A listener that no longer names a secret lets it go.
        let only_a =
            https_listener(8443, vec![("a.example.com", gateway_socket("kubernetes://a", false))]);
        store.apply(LISTENER_TYPE, "2", &[pack_any(only_a)]).unwrap();
        assert_eq!(
            store.received().secrets.keys().cloned().collect::<BTreeSet<_>>(),
            names(&["kubernetes://a"])
        );
    }

    #[test]
    fn a_secret_with_a_zero_initial_fetch_timeout_is_not_waited_for() {
        let mut listener = gateway();
        listener.filter_chains.truncate(1);
        let mut socket = gateway_socket("kubernetes://a", false);
        if let Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any,
            ),
        ) = &mut socket.config_type
        {
            let mut context = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
            let common = context.common_tls_context.get_or_insert_with(CommonTlsContext::default);
            common.tls_certificate_sds_secret_configs[0].sds_config = Some(ConfigSource {
                initial_fetch_timeout: Some(Default::default()),
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    Default::default(),
                )),
                ..ConfigSource::default()
            });
            *any = pack_any(context);
        }
        listener.filter_chains[0].transport_socket = Some(socket);
        let store = Store::default();
        store.apply(CLUSTER_TYPE, "1", &[]).unwrap();
        store.apply(LISTENER_TYPE, "1", &[pack_any(listener)]).unwrap();
        store.apply(ROUTE_TYPE, "1", &[routes("https.8443")]).unwrap();
        assert_eq!(store.received().secret_names(), names(&["kubernetes://a"]), "subscribed");
        assert!(store.current().complete(), "but not waited for");
    }

    #[test]
    fn a_bad_secret_is_refused_by_name_and_the_good_one_stays() {
        let store = store_waiting_for_secrets();
        let ca = Ca::new("test");
        let good = certificate("kubernetes://a", &ca.leaf(&["a.example.com"]));
        store.apply(SECRET_TYPE, "1", &[pack_any(good.clone())]).unwrap();
        let (chain, _) = ca.leaf(&["a.example.com"]);
        let (_, other_key) = ca.leaf(&["b.example.com"]);
        let rotated_badly = certificate("kubernetes://a", &(chain, other_key));
        let why = store.apply(SECRET_TYPE, "2", &[pack_any(rotated_badly)]).unwrap_err();
        assert!(
            why.starts_with(
                "Secret \"kubernetes://a\": tls_certificate: the key and certificate cannot serve"
            ),
            "{why}"
        );
        let received = store.received();
        assert_eq!(received.secrets["kubernetes://a"], good, "the last good secret stays");
        assert_eq!(received.versions[SECRET_TYPE], "1");
        let garbage = Any { type_url: SECRET_TYPE.to_owned(), value: vec![0xff, 0xff] };
        let why = store.apply(SECRET_TYPE, "3", &[garbage]).unwrap_err();
        assert!(why.contains("(envoy.extensions.transport_sockets.tls.v3.Secret) does not decode"));
    }

    #[test]
    fn a_listener_whose_tls_the_proxy_cannot_fetch_is_refused_by_chain() {
        let mut listener = gateway();
        listener.filter_chains[1].transport_socket = Some(socket(DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![
                    envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig {
                        name: "file-cert:/etc/certs/cert.pem".to_owned(),
                        sds_config: None,
                    },
                ],
                ..CommonTlsContext::default()
            }),
            ..DownstreamTlsContext::default()
        }));
        let why = Store::default().apply(LISTENER_TYPE, "1", &[pack_any(listener)]).unwrap_err();
        assert!(
            why.starts_with(
                "Listener \"0.0.0.0_8443\": filter_chains[1].transport_socket: common_tls_context.tls_certificate_sds_secret_configs[0]: secret \"file-cert:/etc/certs/cert.pem\" is not served over ADS"
            ),
            "{why}"
        );
    }

    #[test]
    fn a_debug_print_of_the_configuration_names_secrets_without_their_keys() {
        let ca = Ca::new("test");
        let material = ca.leaf(&["a.example.com"]);
        let mut config = Config::default();
        config
            .secrets
            .insert("kubernetes://a".to_owned(), certificate("kubernetes://a", &material));
        let printed = format!("{config:?}");
        assert!(printed.contains("kubernetes://a"));
        assert!(!printed.contains("PRIVATE KEY") && !printed.contains("CERTIFICATE"), "{printed}");
    }
}
