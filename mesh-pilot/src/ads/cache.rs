//! The translation cache: each type translated once for every proxy that would get the same
//! answer, and the answer shared by all their streams.
//!
//! A key is what the translation depends on: the type, the proxy's namespace, labels and
//! addresses, and a hash of the snapshot parts that type reads (see [`Reads`]). A short lock
//! finds or makes the key's cell; the translation runs outside it, once per key however many
//! streams ask at the same time (single flight), while other keys translate alongside. A new
//! snapshot drops nothing: an entry whose parts did not change is found again under the same
//! key, and an entry no stream asked for while the previous snapshot was current is swept.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, OnceCell};

use crate::model::{Proxy, Snapshot};
use crate::translate;

/// One translation, shared by every stream it applies to: the resources, a hash of each
/// (streams compare hashes, never bytes, and keep no copies), and where each name is.
pub(crate) struct Translated {
    pub(crate) resources: translate::Resources,
    pub(crate) hashes: Vec<u64>,
    /// Each resource as a `DiscoveryResponse` entry, shared by every response that carries it.
    pub(crate) encoded: Vec<bytes::Bytes>,
    /// [`name_hash`] of each resource's name.
    pub(crate) name_hashes: Vec<u64>,
    index: HashMap<String, usize>,
}

/// A stable 64-bit hash of a resource name: what a state-of-the-world subscription keeps.
pub(crate) fn name_hash(name: &str) -> u64 {
    hash_of(|hasher| name.hash(hasher))
}

/// The 64-bit hash of what `write` feeds a hasher.
fn hash_of(write: impl FnOnce(&mut std::collections::hash_map::DefaultHasher)) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    write(&mut hasher);
    hasher.finish()
}

impl Translated {
    /// The resources, hashed, indexed and each encoded once.
    pub(crate) fn new(resources: translate::Resources) -> Self {
        let empty = Self {
            resources: Vec::with_capacity(resources.len()),
            hashes: Vec::with_capacity(resources.len()),
            encoded: Vec::with_capacity(resources.len()),
            name_hashes: Vec::with_capacity(resources.len()),
            index: HashMap::with_capacity(resources.len()),
        };
        empty.with(resources)
    }

    /// These resources and `more`, the ones here not encoded again.
    pub(crate) fn extended(&self, more: translate::Resources) -> Self {
        let copy = Self {
            resources: self.resources.clone(),
            hashes: self.hashes.clone(),
            encoded: self.encoded.clone(),
            name_hashes: self.name_hashes.clone(),
            index: self.index.clone(),
        };
        copy.with(more)
    }

    fn with(mut self, resources: translate::Resources) -> Self {
        for (name, any) in resources {
            self.hashes.push(hash_of(|hasher| {
                any.type_url.hash(hasher);
                any.value.hash(hasher);
            }));
            self.encoded.push(super::framing::encode_resource(&any));
            self.name_hashes.push(name_hash(&name));
            self.index.insert(name.clone(), self.resources.len());
            self.resources.push((name, any));
        }
        self
    }

    /// The hash of the resource of this name, if there is one.
    pub(crate) fn hash_of(&self, name: &str) -> Option<u64> {
        self.index.get(name).map(|i| self.hashes[*i])
    }

    /// The hash this translation has for the resource at `i` of `other`: found at the same
    /// position when the names line up (the usual case between two snapshots), else by name.
    pub(crate) fn hash_like(&self, other: &Translated, i: usize) -> Option<u64> {
        // Equal 64-bit name hashes at the same position are taken as the same name.
        if self.name_hashes.get(i) == other.name_hashes.get(i) {
            return self.hashes.get(i).copied();
        }
        self.hash_of(&other.resources[i].0)
    }
}

/// Most translations kept. More distinct keys than this (proxies that differ in namespace,
/// labels or addresses, times four types) are translated uncached until the next sweep.
const CAPACITY: usize = 10_000;

/// The translations of every type for every proxy class, found by what they depend on.
pub(crate) struct TranslationCache {
    cells: Cells<Key, Option<Arc<Translated>>>,
    digest: Mutex<Option<Arc<DigestCell>>>,
    translations: AtomicU64,
}

impl Default for TranslationCache {
    fn default() -> Self {
        Self {
            cells: Cells::new(CAPACITY),
            digest: Mutex::new(None),
            translations: AtomicU64::new(0),
        }
    }
}

impl TranslationCache {
    /// The resources of one type for a proxy in this snapshot: from the cache when a proxy of
    /// the same class asked since the parts of the snapshot that type reads last changed.
    pub(crate) async fn get(
        &self,
        type_url: &str,
        snapshot: &Snapshot,
        proxy: &Proxy,
    ) -> Option<Arc<Translated>> {
        let digest = self.digest(snapshot).await;
        let reads = Reads::of(type_url, proxy.router);
        let key = Key {
            type_url: type_url.to_owned(),
            namespace: proxy.namespace.clone(),
            labels: proxy.labels.clone(),
            ips: if reads.inbound { proxy.ips.clone() } else { Vec::new() },
            proxyless: proxy.proxyless,
            router: proxy.router,
            inputs: reads.inputs(&digest, snapshot, proxy),
        };
        self.cells
            .get_or_init(key, snapshot.version, || async {
                self.translations.fetch_add(1, Ordering::Relaxed);
                let view = reads.view(snapshot, proxy);
                translate::generate(type_url, &view, proxy).map(|r| Arc::new(Translated::new(r)))
            })
            .await
    }

    /// How many translations ran (cache misses), for tests.
    #[cfg(test)]
    fn translations(&self) -> u64 {
        self.translations.load(Ordering::Relaxed)
    }

    /// The hashes of this snapshot's parts, computed once per snapshot.
    async fn digest(&self, snapshot: &Snapshot) -> Arc<Digest> {
        let identity = (snapshot.version, std::ptr::from_ref(snapshot) as usize);
        let cell = {
            let mut current = self.digest.lock().await;
            match current.as_ref().filter(|c| c.identity == identity) {
                Some(cell) => cell.clone(),
                None => {
                    let cell = Arc::new(DigestCell { identity, digest: OnceCell::new() });
                    *current = Some(cell.clone());
                    cell
                }
            }
        };
        cell.digest.get_or_init(|| async { Arc::new(Digest::of(snapshot)) }).await.clone()
    }
}

/// The digest of one snapshot, computed by the first stream that needs it.
struct DigestCell {
    /// The snapshot's version and address: a new snapshot is a new digest. (Published
    /// snapshots are immutable behind an `Arc`, and their versions only grow.)
    identity: (u64, usize),
    digest: OnceCell<Arc<Digest>>,
}

/// What a translation depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    type_url: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    ips: Vec<std::net::IpAddr>,
    proxyless: bool,
    router: bool,
    /// [`Reads::inputs`]: the hash of the snapshot parts the type reads.
    inputs: u64,
}

/// A hash of each part of a snapshot, so that a key costs a few integers, not a walk over the
/// model. Equal hashes are taken as equal parts (64 bits: a collision is not a practical worry).
struct Digest {
    /// The cluster domain, trust domain and root namespace.
    scalars: u64,
    services: u64,
    endpoints: u64,
    virtual_services: u64,
    destination_rules: u64,
    sidecars: u64,
    gateways: u64,
    credentials: u64,
    security: u64,
    /// The mesh config (its providers and tracing and access log defaults).
    mesh_config: u64,
}

impl Digest {
    fn of(snapshot: &Snapshot) -> Self {
        // Every field named: a new part of the snapshot must be given its place here.
        let Snapshot {
            version: _,
            domain,
            trust_domain,
            services,
            endpoints,
            virtual_services,
            destination_rules,
            sidecars,
            gateways,
            credentials,
            peer_authentications,
            authorization_policies,
            request_authentications,
            jwks,
            // Listeners read the Telemetries that apply to the proxy: hashed per key.
            telemetries: _,
            mesh_config,
            root_namespace,
            published: _,
        } = snapshot;
        Self {
            scalars: hash_of(|h| (domain, trust_domain, root_namespace).hash(h)),
            services: hash_of(|h| services.hash(h)),
            endpoints: hash_of(|h| endpoints.hash(h)),
            virtual_services: hash_of(|h| {
                virtual_services.iter().for_each(|v| config(serde_json::to_vec(v), v, h));
            }),
            destination_rules: hash_of(|h| {
                destination_rules.iter().for_each(|d| config(serde_json::to_vec(d), d, h));
            }),
            sidecars: hash_of(|h| {
                sidecars.iter().for_each(|s| config(serde_json::to_vec(s), s, h))
            }),
            gateways: hash_of(|h| {
                gateways.iter().for_each(|g| config(serde_json::to_vec(g), g, h))
            }),
            credentials: hash_of(|h| credentials.hash(h)),
            security: hash_of(|h| {
                peer_authentications.iter().for_each(|p| config(serde_json::to_vec(p), p, h));
                authorization_policies.iter().for_each(|a| config(serde_json::to_vec(a), a, h));
                request_authentications.iter().for_each(|r| config(serde_json::to_vec(r), r, h));
                jwks.hash(h);
            }),
            mesh_config: hash_of(|h| {
                config(serde_json::to_vec(mesh_config.as_ref()), mesh_config, h)
            }),
        }
    }
}

/// Feeds an Istio config object to a hasher as its JSON (the config types have no `Hash`).
fn config(
    json: Result<Vec<u8>, serde_json::Error>,
    object: &dyn std::fmt::Debug,
    hasher: &mut impl Hasher,
) {
    match json {
        Ok(json) => json.hash(hasher),
        // Cannot happen for these types; the debug form still tells objects apart.
        Err(_) => format!("{object:?}").hash(hasher),
    }
}

/// Which endpoints a type's translation reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoints {
    /// None.
    None,
    /// Only the proxy's own (those at one of its addresses: the ports it serves).
    Own,
    /// All it can see.
    All,
}

/// What one type's translation reads of a snapshot. Every type reads the scalars, services,
/// DestinationRules, Sidecars, Gateways and the security policies (scoping reads most of them;
/// the policies shape listeners and endpoints); this says what else. The
/// translation is given only these parts ([`Reads::view`]), so the cache key cannot leave out
/// something the translation depends on: a part it needs and is not given shows as a wrong
/// answer in the tests, never as a stale one in production.
#[derive(Clone, Copy, Debug)]
struct Reads {
    virtual_services: bool,
    endpoints: Endpoints,
    /// Whether it has the proxy's inbound side (so depends on its addresses).
    inbound: bool,
    /// Whether it reads Telemetry and the mesh config (the HCMs' tracing and access logs):
    /// only the Telemetries that apply to the proxy count, so one workload's Telemetry
    /// changes the listeners of the proxies it selects and no others.
    telemetry: bool,
}

impl Reads {
    fn of(type_url: &str, router: bool) -> Self {
        let (virtual_services, endpoints, inbound) = match type_url {
            // A gateway's listeners have a chain per SNI of the bound VirtualServices' `tls`
            // rules (PASSTHROUGH), and its target ports from its own endpoints.
            mesh_api::xds::LISTENER_TYPE if router => (true, Endpoints::Own, true),
            // Clusters name the identities of the endpoints, and have the inbound ones.
            mesh_api::xds::CLUSTER_TYPE => (false, Endpoints::All, true),
            mesh_api::xds::ENDPOINT_TYPE => (false, Endpoints::All, false),
            // Listeners: outbound by services, inbound by the proxy's own endpoints.
            mesh_api::xds::LISTENER_TYPE => (false, Endpoints::Own, true),
            // Routes: VirtualServices, and services for their hosts and ports.
            _ => (true, Endpoints::None, false),
        };
        let telemetry = type_url == mesh_api::xds::LISTENER_TYPE;
        Self { virtual_services, endpoints, inbound, telemetry }
    }

    /// The proxy's own endpoints, by service port.
    fn own<'a>(
        snapshot: &'a Snapshot,
        proxy: &'a Proxy,
    ) -> impl Iterator<Item = (&'a (String, u16), Vec<&'a crate::model::Endpoint>)> {
        snapshot.endpoints.iter().filter_map(|(port, endpoints)| {
            let own: Vec<_> = endpoints.iter().filter(|e| proxy.ips.contains(&e.address)).collect();
            (!own.is_empty()).then_some((port, own))
        })
    }

    /// The hash of the parts this type reads.
    fn inputs(self, digest: &Digest, snapshot: &Snapshot, proxy: &Proxy) -> u64 {
        hash_of(|h| {
            let read = (digest.scalars, digest.services, digest.destination_rules, digest.sidecars);
            (read, digest.gateways, digest.credentials, digest.security).hash(h);
            if self.virtual_services {
                digest.virtual_services.hash(h);
            }
            match self.endpoints {
                Endpoints::None => {}
                Endpoints::All => digest.endpoints.hash(h),
                Endpoints::Own => Self::own(snapshot, proxy).for_each(|own| own.hash(h)),
            }
            if self.telemetry {
                digest.mesh_config.hash(h);
                for t in translate::telemetry::applicable(snapshot, proxy).levels() {
                    config(serde_json::to_vec(t), t, h);
                }
            }
        })
    }

    /// The snapshot with only the parts this type reads.
    fn view(self, snapshot: &Snapshot, proxy: &Proxy) -> Snapshot {
        let endpoints = match self.endpoints {
            Endpoints::None => BTreeMap::new(),
            Endpoints::Own => Self::own(snapshot, proxy)
                .map(|(port, own)| (port.clone(), own.into_iter().cloned().collect()))
                .collect(),
            Endpoints::All => snapshot.endpoints.clone(),
        };
        Snapshot {
            version: snapshot.version,
            domain: snapshot.domain.clone(),
            trust_domain: snapshot.trust_domain.clone(),
            services: snapshot.services.clone(),
            endpoints,
            virtual_services: if self.virtual_services {
                snapshot.virtual_services.clone()
            } else {
                Vec::new()
            },
            destination_rules: snapshot.destination_rules.clone(),
            sidecars: snapshot.sidecars.clone(),
            gateways: snapshot.gateways.clone(),
            credentials: snapshot.credentials.clone(),
            peer_authentications: snapshot.peer_authentications.clone(),
            authorization_policies: snapshot.authorization_policies.clone(),
            request_authentications: snapshot.request_authentications.clone(),
            jwks: snapshot.jwks.clone(),
            telemetries: if self.telemetry { snapshot.telemetries.clone() } else { Vec::new() },
            mesh_config: if self.telemetry { snapshot.mesh_config.clone() } else { Arc::default() },
            root_namespace: snapshot.root_namespace.clone(),
            published: snapshot.published,
        }
    }
}

/// A bounded map of single-flight cells: a short lock finds or makes a key's cell, and the
/// value is computed outside it, once, by the first caller (the others wait for that one).
/// Entries not asked for during the previous epoch (snapshot) are swept when a newer one starts.
pub(crate) struct Cells<K, V> {
    inner: Mutex<Epochs<K, V>>,
    capacity: usize,
}

struct Epochs<K, V> {
    /// The newest epoch asked for.
    current: u64,
    entries: HashMap<K, Entry<V>>,
}

struct Entry<V> {
    cell: Arc<OnceCell<V>>,
    /// The newest epoch it was asked for in.
    used: u64,
}

impl<K: Eq + Hash, V: Clone> Cells<K, V> {
    /// An empty map of at most `capacity` cells.
    pub(crate) fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Epochs { current: 0, entries: HashMap::new() }), capacity }
    }

    /// The value of `key`, computed by `init` if no one has yet. `epoch` is the snapshot the
    /// caller works on (a newer one sweeps what the one before last used and this did not).
    pub(crate) async fn get_or_init<F, Fut>(&self, key: K, epoch: u64, init: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = {
            let mut map = self.inner.lock().await;
            if epoch > map.current {
                // What the epoch before this one used may be asked for again; the rest is stale.
                let keep_since = map.current;
                map.entries.retain(|_, e| e.used >= keep_since);
                map.current = epoch;
            }
            if map.entries.len() >= self.capacity && !map.entries.contains_key(&key) {
                // Full: make room from what the current epoch has not used, else go uncached.
                let keep_since = map.current;
                map.entries.retain(|_, e| e.used >= keep_since);
            }
            let room = map.entries.len() < self.capacity;
            match map.entries.get_mut(&key) {
                Some(entry) => {
                    entry.used = entry.used.max(epoch);
                    Some(entry.cell.clone())
                }
                None if room => {
                    let cell = Arc::new(OnceCell::new());
                    map.entries.insert(key, Entry { cell: cell.clone(), used: epoch });
                    Some(cell)
                }
                None => None,
            }
        };
        match cell {
            Some(cell) => cell.get_or_init(init).await.clone(),
            None => init().await,
        }
    }

    /// How many cells there are.
    #[cfg(test)]
    async fn len(&self) -> usize {
        self.inner.lock().await.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::Endpoint;
    use mesh_api::xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, PUSH_ORDER, ROUTE_TYPE};

    #[tokio::test]
    async fn one_key_translates_once_however_many_ask_at_the_same_time() {
        let cells: Arc<Cells<&str, u32>> = Arc::new(Cells::new(10));
        let runs = Arc::new(AtomicU64::new(0));
        let ask = |key| {
            let (cells, runs) = (cells.clone(), runs.clone());
            tokio::spawn(async move {
                cells
                    .get_or_init(key, 1, || async {
                        runs.fetch_add(1, Ordering::Relaxed);
                        // Long enough for the other caller to arrive while this one works.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        7
                    })
                    .await
            })
        };
        let (a, b) = (ask("k"), ask("k"));
        assert_eq!((a.await.unwrap(), b.await.unwrap()), (7, 7));
        assert_eq!(runs.load(Ordering::Relaxed), 1, "single flight");
    }

    #[tokio::test]
    async fn different_keys_translate_at_the_same_time() {
        let cells: Arc<Cells<&str, u32>> = Arc::new(Cells::new(10));
        // Each translation waits for the other: they finish only if neither holds a lock.
        let both = Arc::new(tokio::sync::Barrier::new(2));
        let ask = |key| {
            let (cells, both) = (cells.clone(), both.clone());
            tokio::spawn(async move {
                cells
                    .get_or_init(key, 1, || async {
                        both.wait().await;
                        1
                    })
                    .await
            })
        };
        let (a, b) = (ask("a"), ask("b"));
        let done = tokio::time::timeout(Duration::from_secs(5), async {
            (a.await.unwrap(), b.await.unwrap())
        });
        assert_eq!(done.await.expect("the two keys translated concurrently"), (1, 1));
    }

    #[tokio::test]
    async fn cells_unused_for_a_snapshot_are_swept_and_the_map_stays_bounded() {
        let cells: Cells<u32, u32> = Cells::new(3);
        for key in 0..3 {
            cells.get_or_init(key, 1, || async { key }).await;
        }
        // Full: a fourth key in the same epoch is computed, not kept.
        assert_eq!(cells.get_or_init(9, 1, || async { 9 }).await, 9);
        assert_eq!(cells.len().await, 3);
        // Epoch 2 uses key 0 only; epoch 3 sweeps keys 1 and 2 (unused in epoch 2).
        cells.get_or_init(0, 2, || async { 100 }).await;
        assert_eq!(cells.get_or_init(0, 3, || async { 100 }).await, 0, "kept across epochs");
        assert_eq!(cells.len().await, 1);
    }

    fn mesh() -> Snapshot {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mesh");
        let (mut snapshot, rejected) = crate::source::local::read(&dir);
        assert!(rejected.is_empty(), "{rejected:?}");
        snapshot.version = 1;
        snapshot
    }

    /// The sidecar of a workload.
    fn workload(namespace: &str, account: &str, ip: &str, labels: &[(&str, &str)]) -> Proxy {
        Proxy {
            id: format!("sidecar~{ip}~{account}-1.{namespace}~{namespace}.svc.cluster.local"),
            namespace: namespace.into(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ips: vec![ip.parse().unwrap()],
            service_account: account.into(),
            proxyless: false,
            router: false,
            version: String::new(),
        }
    }

    /// The sidecar of `hello` v1 in the test mesh (at its endpoint's address).
    fn hello_v1() -> Proxy {
        workload("demo", "hello", "127.0.0.1", &[("app", "hello"), ("version", "v1")])
    }

    fn endpoint_of<'a>(snapshot: &'a mut Snapshot, version: &str) -> &'a mut Endpoint {
        let key = ("hello.demo.svc.cluster.local".to_owned(), 80);
        let list = snapshot.endpoints.get_mut(&key).expect("hello has endpoints");
        let found = list.iter_mut().find(|e| e.labels.get("version").is_some_and(|v| v == version));
        found.expect("an endpoint of that version")
    }

    #[tokio::test]
    async fn translations_survive_a_change_they_cannot_see_and_not_one_they_can() {
        let cache = TranslationCache::default();
        let first = mesh();
        let proxy = hello_v1();
        let mut before = HashMap::new();
        for type_url in PUSH_ORDER {
            before.insert(type_url, cache.get(type_url, &first, &proxy).await.unwrap());
        }
        assert_eq!(cache.translations(), PUSH_ORDER.len() as u64);

        // Another workload's endpoint moves: endpoints and clusters (which name endpoint
        // identities) translate again; this proxy's secrets, listeners and routes are kept as
        // they were.
        let mut moved = first.clone();
        moved.version = 2;
        endpoint_of(&mut moved, "v2").address = "10.9.9.9".parse().unwrap();
        for type_url in PUSH_ORDER {
            let after = cache.get(type_url, &moved, &proxy).await.unwrap();
            let kept = Arc::ptr_eq(&before[type_url], &after);
            let expected_kept = ![CLUSTER_TYPE, ENDPOINT_TYPE].contains(&type_url);
            assert_eq!(kept, expected_kept, "{type_url}");
        }
        assert_eq!(cache.translations(), PUSH_ORDER.len() as u64 + 2);

        // A route weight changes: routes translate again, with the new weight.
        let mut reweighted = moved.clone();
        reweighted.version = 3;
        let http = &mut reweighted.virtual_services[0].spec.http[2];
        http.route[0].weight = Some(50);
        http.route[1].weight = Some(50);
        let routes = cache.get(ROUTE_TYPE, &reweighted, &proxy).await.unwrap();
        assert!(!Arc::ptr_eq(&before[ROUTE_TYPE], &routes));
        assert_ne!(before[ROUTE_TYPE].hashes, routes.hashes);
        let listeners = cache.get(LISTENER_TYPE, &reweighted, &proxy).await.unwrap();
        assert!(Arc::ptr_eq(&before[LISTENER_TYPE], &listeners), "listeners read no routes");

        // The proxy's own endpoint changes port: its inbound listener changes.
        let mut own = reweighted.clone();
        own.version = 4;
        endpoint_of(&mut own, "v1").port = 9999;
        let listeners = cache.get(LISTENER_TYPE, &own, &proxy).await.unwrap();
        assert!(!Arc::ptr_eq(&before[LISTENER_TYPE], &listeners));
        assert_ne!(before[LISTENER_TYPE].hashes, listeners.hashes);
    }

    /// The names of the resources whose hash differs between two translations.
    fn changed(before: &Translated, after: &Translated) -> Vec<String> {
        let names = |t: &Translated| t.resources.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(before), names(after), "the same resources");
        (0..after.resources.len())
            .filter(|&i| before.hashes[i] != after.hashes[i])
            .map(|i| after.resources[i].0.clone())
            .collect()
    }

    #[tokio::test]
    async fn a_rename_changes_only_the_resources_that_name_the_object() {
        // Clusters name their DestinationRule and routes their VirtualService: a rename must
        // reach the proxies that show it, and change nothing else they would be pushed.
        let cache = TranslationCache::default();
        let first = mesh();
        let proxy = hello_v1();
        let clusters = cache.get(CLUSTER_TYPE, &first, &proxy).await.unwrap();
        let routes = cache.get(ROUTE_TYPE, &first, &proxy).await.unwrap();

        let mut rule_renamed = first.clone();
        rule_renamed.version = 2;
        rule_renamed.destination_rules[0].metadata.name = Some("hello-renamed".to_owned());
        let renamed_clusters = cache.get(CLUSTER_TYPE, &rule_renamed, &proxy).await.unwrap();
        assert_eq!(
            changed(&clusters, &renamed_clusters),
            [
                "outbound|80|v1|hello.demo.svc.cluster.local",
                "outbound|80|v2|hello.demo.svc.cluster.local",
                "outbound|80||hello.demo.svc.cluster.local",
            ]
        );
        let same_routes = cache.get(ROUTE_TYPE, &rule_renamed, &proxy).await.unwrap();
        assert!(changed(&routes, &same_routes).is_empty(), "routes name no rule");

        let mut route_renamed = rule_renamed.clone();
        route_renamed.version = 3;
        route_renamed.virtual_services[0].metadata.name = Some("hello-renamed".to_owned());
        let renamed_routes = cache.get(ROUTE_TYPE, &route_renamed, &proxy).await.unwrap();
        assert_eq!(changed(&same_routes, &renamed_routes), ["80"]);
        let kept = cache.get(CLUSTER_TYPE, &route_renamed, &proxy).await.unwrap();
        assert!(Arc::ptr_eq(&renamed_clusters, &kept), "clusters read no VirtualService");
    }

    #[tokio::test]
    async fn a_telemetry_retranslates_only_the_listeners_of_the_proxies_it_applies_to() {
        let cache = TranslationCache::default();
        let first = mesh();
        let hello = hello_v1();
        let other = workload("demo", "other", "10.9.0.1", &[("app", "other")]);
        let mut before = HashMap::new();
        for (proxy, type_url) in
            [(&hello, LISTENER_TYPE), (&other, LISTENER_TYPE), (&hello, CLUSTER_TYPE)]
        {
            before.insert(
                (proxy.id.clone(), type_url),
                cache.get(type_url, &first, proxy).await.unwrap(),
            );
        }
        let kept = |proxy: &Proxy, type_url: &'static str, now: &Arc<Translated>| {
            Arc::ptr_eq(&before[&(proxy.id.clone(), type_url)], now)
        };
        // A Telemetry selecting hello: its listeners translate again (and log now); the other
        // workload's and hello's clusters are kept.
        let mut with = first.clone();
        with.version = 2;
        let loaded = mesh_api::load::load_str(
            "t.yaml",
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: hello, namespace: demo}\nspec:\n  selector: {matchLabels: {app: hello}}\n  accessLogging: [{providers: [{name: envoy}]}]\n",
        );
        let Some(mesh_api::Resource::Telemetry(t)) =
            loaded.objects.into_iter().next().map(|o| o.resource)
        else {
            panic!("a Telemetry")
        };
        with.telemetries.push(t);
        let listeners = cache.get(LISTENER_TYPE, &with, &hello).await.unwrap();
        assert!(!kept(&hello, LISTENER_TYPE, &listeners));
        assert_eq!(
            changed(&before[&(hello.id.clone(), LISTENER_TYPE)], &listeners),
            ["virtualOutbound", "virtualInbound"]
        );
        assert!(kept(
            &other,
            LISTENER_TYPE,
            &cache.get(LISTENER_TYPE, &with, &other).await.unwrap()
        ));
        assert!(kept(&hello, CLUSTER_TYPE, &cache.get(CLUSTER_TYPE, &with, &hello).await.unwrap()));
        // The mesh config is read by every proxy's listeners, and by nothing else.
        let mut mesh_changed = with.clone();
        mesh_changed.version = 3;
        mesh_changed.mesh_config = Arc::new(mesh_api::mesh::MeshConfig {
            access_log_file: "/dev/stdout".into(),
            ..mesh_api::mesh::MeshConfig::default()
        });
        let now = cache.get(LISTENER_TYPE, &mesh_changed, &other).await.unwrap();
        assert!(!kept(&other, LISTENER_TYPE, &now), "the other proxy logs to the mesh's file now");
        assert!(kept(
            &hello,
            CLUSTER_TYPE,
            &cache.get(CLUSTER_TYPE, &mesh_changed, &hello).await.unwrap()
        ));
    }

    #[tokio::test]
    async fn the_cache_answers_what_translation_of_the_whole_snapshot_does() {
        // Each type is translated from only the parts it reads: that must change nothing.
        let cache = TranslationCache::default();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
        let (mut golden, rejected) = crate::source::local::read(&dir);
        assert!(rejected.is_empty(), "{rejected:?}");
        golden.version = 1;
        let mesh = mesh();
        let frontend =
            workload("demo", "frontend", "10.1.0.5", &[("app", "frontend"), ("version", "v1")]);
        let grpc = Proxy { proxyless: true, ..frontend.clone() };
        // A gateway: TLS passed through by the SNI of a bound VirtualService's `tls` rule, and
        // terminated with a Secret's certificate.
        let edge = mesh_api::load::load_str(
            "edge.yaml",
            r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec: {clusterIP: 10.96.0.9, ports: [{name: tls, port: 8443}], selector: {app: db}}
---
apiVersion: v1
kind: Secret
metadata: {name: cred, namespace: demo}
stringData: {tls.crt: CERT, tls.key: KEY}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: demo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8444, name: tls, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [web.example.com]
    tls: {mode: SIMPLE, credentialName: cred}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: demo}
spec:
  hosts: [db.example.com]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [db.example.com]}]
    route: [{destination: {host: db}}]
"#,
        );
        let objects: Vec<Arc<mesh_api::load::Loaded>> =
            edge.objects.into_iter().map(Arc::new).collect();
        let (mut edge, rejected) = crate::source::local::build(&objects);
        assert!(rejected.is_empty(), "{rejected:?}");
        edge.version = 1;
        let gateway = Proxy {
            router: true,
            labels: [("istio".to_owned(), "ingressgateway".to_owned())].into(),
            ..workload("demo", "edge", "10.1.0.7", &[])
        };
        // Telemetry at every scope, with the mesh config's providers.
        let telemetry_dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/telemetry");
        let (mut telemetry, rejected) = crate::source::local::read(&telemetry_dir.join("config"));
        assert!(rejected.is_empty(), "{rejected:?}");
        telemetry.mesh_config = Arc::new(
            mesh_api::mesh::MeshConfig::from_file(&telemetry_dir.join("meshconfig.yaml")).unwrap(),
        );
        telemetry.version = 1;
        let reviews = workload("demo", "reviews", "10.1.0.11", &[("app", "reviews")]);
        let cases = [
            (&mesh, hello_v1()),
            (&golden, frontend),
            (&golden, grpc),
            (&edge, gateway),
            (&telemetry, reviews),
        ];
        for (snapshot, proxy) in cases {
            for type_url in PUSH_ORDER {
                let whole = translate::generate(type_url, snapshot, &proxy).unwrap();
                let cached = cache.get(type_url, snapshot, &proxy).await.unwrap();
                assert!(cached.resources == whole, "{type_url} for {proxy:?}");
            }
        }
    }
}
