//! The configuration the proxy runs: what the pilot sent and the proxy accepted. Each response
//! is checked whole before any of it is applied; a rejection names the resource and the field,
//! and leaves the last good configuration in force.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use mesh_api::xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE};
use prost::Message;

use super::checks::{check_cluster, check_endpoints, check_listener, check_routes, check_secret};
use super::history::{Refusal, Rejection, Rejections, Replace, Stamp, Stamps, forget_gone, take};

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
    /// By type URL, the update that last changed each resource (what a config dump shows as
    /// its `version_info` and `last_updated`).
    pub stamps: BTreeMap<&'static str, Stamps>,
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
    rejections: ArcSwap<Rejections>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            current: ArcSwap::default(),
            received: ArcSwap::default(),
            warming_since: arc_swap::ArcSwapOption::empty(),
            changes: tokio::sync::watch::Sender::new(0),
            rejections: ArcSwap::default(),
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
    /// changes and the problem is returned (the NACK's message, kept for the config dump:
    /// [`Store::rejections`]). Listeners and clusters are state of the world (what is not in
    /// the response is gone); routes, endpoints and secrets are incremental (what is not in
    /// the response stays).
    pub fn apply(&self, type_url: &str, version: &str, resources: &[Any]) -> Result<(), String> {
        let at = SystemTime::now();
        match self.take(type_url, version, resources, at) {
            Ok(()) => {
                if self.rejections.load().contains_key(type_url) {
                    let mut rejections = (**self.rejections.load()).clone();
                    rejections.remove(type_url);
                    self.rejections.store(Arc::new(rejections));
                }
                Ok(())
            }
            Err(Refusal { details, resource }) => {
                let resource = resource.map(|(name, any)| (name, redacted(any)));
                let rejection = Rejection {
                    version: version.to_owned(),
                    resource,
                    details: details.clone(),
                    at,
                };
                let mut rejections = (**self.rejections.load()).clone();
                rejections.insert(type_url.to_owned(), rejection);
                self.rejections.store(Arc::new(rejections));
                Err(details)
            }
        }
    }

    /// The last refused update of each type, since the last accepted one of that type.
    pub fn rejections(&self) -> Arc<Rejections> {
        self.rejections.load_full()
    }

    fn take(
        &self,
        type_url: &str,
        version: &str,
        resources: &[Any],
        at: SystemTime,
    ) -> Result<(), Refusal> {
        let mut next = (*self.received()).clone();
        let stamp = Stamp { version: version.into(), at };
        // Disjoint fields of `next`: each map and its stamps.
        let stamps = &mut next.stamps;
        match type_url {
            CLUSTER_TYPE => take(
                &mut next.clusters,
                stamps.entry(CLUSTER_TYPE).or_default(),
                decode_all(resources, check_cluster, |c| &c.name)?,
                Replace::Whole,
                &stamp,
            ),
            LISTENER_TYPE => take(
                &mut next.listeners,
                stamps.entry(LISTENER_TYPE).or_default(),
                decode_all(resources, check_listener, |l| &l.name)?,
                Replace::Whole,
                &stamp,
            ),
            ROUTE_TYPE => take(
                &mut next.routes,
                stamps.entry(ROUTE_TYPE).or_default(),
                decode_all(resources, check_routes, |r| &r.name)?,
                Replace::Named,
                &stamp,
            ),
            ENDPOINT_TYPE => take(
                &mut next.endpoints,
                stamps.entry(ENDPOINT_TYPE).or_default(),
                decode_all(resources, check_endpoints, |e| &e.cluster_name)?,
                Replace::Named,
                &stamp,
            ),
            SECRET_TYPE => take(
                &mut next.secrets,
                stamps.entry(SECRET_TYPE).or_default(),
                decode_all(resources, check_secret, |s| &s.name)?,
                Replace::Named,
                &stamp,
            ),
            other => {
                return Err(Refusal::whole(format!("type {other} is not one this proxy uses")));
            }
        }
        if type_url == CLUSTER_TYPE {
            // Endpoints of clusters that are gone go with them.
            let live: std::collections::BTreeSet<String> = next.eds_clusters().collect();
            next.endpoints.retain(|name, _| live.contains(name));
            if let Some(stamps) = next.stamps.get_mut(ENDPOINT_TYPE) {
                forget_gone(stamps, &next.endpoints);
            }
        }
        if type_url == LISTENER_TYPE || type_url == SECRET_TYPE {
            // Keys no listener names are not kept (nor is what a pilot sends unasked): the
            // secrets held are bounded by what the listeners name.
            let named = next.secret_names();
            next.secrets.retain(|name, _| named.contains(name));
            if let Some(stamps) = next.stamps.get_mut(SECRET_TYPE) {
                forget_gone(stamps, &next.secrets);
            }
        }
        next.versions.insert(type_url.to_owned(), version.to_owned());
        self.received.store(Arc::new(next));
        self.publish_if_ready(WARMING_LIMIT);
        Ok(())
    }
}

/// A refused resource as the config dump may show it: a secret with its keys redacted.
fn redacted(any: Any) -> Any {
    if any.type_url != SECRET_TYPE {
        return any;
    }
    match Secret::decode(any.value.as_slice()) {
        Ok(secret) => envoy_types::util::pack_any(crate::tls::redact(&secret)),
        // Refused resources decoded; should one not, nothing of it is kept.
        Err(_) => Any { type_url: any.type_url, value: Vec::new() },
    }
}

fn decode_all<T: Message + Default + prost::Name>(
    resources: &[Any],
    check: impl Fn(&T) -> Result<(), String>,
    name: impl Fn(&T) -> &String,
) -> Result<BTreeMap<String, T>, Refusal> {
    let mut out = BTreeMap::new();
    for (i, any) in resources.iter().enumerate() {
        if any.type_url != T::type_url() {
            return Err(Refusal::whole(format!(
                "resource {i} is a {}, not a {}",
                any.type_url,
                T::full_name()
            )));
        }
        let resource = T::decode(any.value.as_slice()).map_err(|e| {
            Refusal::whole(format!("resource {i} ({}) does not decode: {e}", T::full_name()))
        })?;
        let key = name(&resource).clone();
        if let Err(why) = check(&resource) {
            return Err(Refusal {
                details: format!("{} {key:?}: {why}", T::NAME),
                resource: Some((key, any.clone())),
            });
        }
        out.insert(key, resource);
    }
    Ok(out)
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
        let why = store.apply(SECRET_TYPE, "2", &[pack_any(rotated_badly.clone())]).unwrap_err();
        assert!(
            why.starts_with(
                "Secret \"kubernetes://a\": tls_certificate: the key and certificate cannot serve"
            ),
            "{why}"
        );
        let received = store.received();
        assert_eq!(received.secrets["kubernetes://a"], good, "the last good secret stays");
        assert_eq!(received.versions[SECRET_TYPE], "1");
        assert_eq!(received.stamps[SECRET_TYPE]["kubernetes://a"].version.as_ref(), "1");
        // The config dump's error state: the refused secret by name, its key redacted.
        let rejection = store.rejections()[SECRET_TYPE].clone();
        assert_eq!((rejection.version.as_str(), rejection.details), ("2", why));
        let (name, sent) = rejection.resource.unwrap();
        assert_eq!(name, "kubernetes://a");
        assert_eq!(
            Secret::decode(sent.value.as_slice()).unwrap(),
            crate::tls::redact(&rotated_badly)
        );

        let garbage = Any { type_url: SECRET_TYPE.to_owned(), value: vec![0xff, 0xff] };
        let why = store.apply(SECRET_TYPE, "3", &[garbage]).unwrap_err();
        assert!(why.contains("(envoy.extensions.transport_sockets.tls.v3.Secret) does not decode"));
        assert!(store.rejections()[SECRET_TYPE].resource.is_none(), "no resource to blame");
        store.apply(SECRET_TYPE, "4", &[pack_any(good)]).unwrap();
        assert!(store.rejections().is_empty(), "an accepted update clears its type's refusal");
        let stamp = &store.received().stamps[SECRET_TYPE]["kubernetes://a"];
        assert_eq!(stamp.version.as_ref(), "1", "the same secret again is no change");
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
