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
mod tests;
