//! The ADS server: one state-of-the-world stream per proxy, with per-type versions, nonces and
//! ACK/NACK bookkeeping, pushes in make-before-break order (CDS, EDS, LDS, RDS), and a per-proxy
//! record of what was sent and acknowledged (`syncz`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::{Stream, StreamExt};
use mesh_api::xds::PUSH_ORDER;
use tokio::sync::{RwLock, mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::model::{Proxy, Snapshot};
use crate::translate;

/// Most resource names a request may subscribe to; more is refused as abuse.
pub(crate) const MAX_NAMES: usize = 100_000;

/// Sync state of one type for one proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// Version of the last response sent.
    pub sent_version: String,
    /// Nonce of the last response sent.
    pub sent_nonce: String,
    /// Version the proxy last accepted.
    pub acked_version: String,
    /// Nonce the proxy last accepted.
    pub acked_nonce: String,
    /// The proxy's message on its last rejection, until it accepts again.
    pub last_nack: Option<String>,
}

impl TypeStatus {
    /// `SYNCED`, `STALE`, `NOT SENT` or `ERROR`, as Istio's proxy-status says them.
    pub fn state(&self) -> &'static str {
        if self.last_nack.is_some() {
            "ERROR"
        } else if self.sent_nonce.is_empty() {
            "NOT SENT"
        } else if self.sent_nonce == self.acked_nonce {
            "SYNCED"
        } else {
            "STALE"
        }
    }
}

/// What `/debug/syncz` reports for one proxy.
#[derive(Clone, Debug, Default)]
pub struct ProxyStatus {
    /// Node id.
    pub id: String,
    /// What the pilot read from the node.
    pub node: Proxy,
    /// Per type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// Who is on the other end of a stream, as far as the transport can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The plaintext port: the node is taken at its word (local mode, tests, trusted networks).
    Plaintext,
    /// The mTLS port: the identity in the client certificate, if it carries a SPIFFE id.
    Mesh(Option<mesh_api::identity::SpiffeId>),
}

impl Caller {
    /// The caller on the mTLS port, from its verified client certificate chain.
    pub(crate) fn from_certificates(
        chain: Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
    ) -> Self {
        Caller::Mesh(chain.and_then(|chain| mesh_identity::peer_identity(chain.as_slice())))
    }

    /// Refuses a node that claims another workload than the certificate proves.
    fn admit(&self, proxy: &Proxy) -> Result<(), Status> {
        match self {
            Caller::Plaintext => Ok(()),
            Caller::Mesh(None) => {
                Err(Status::unauthenticated("the client certificate carries no SPIFFE identity"))
            }
            Caller::Mesh(Some(identity)) => {
                if identity.namespace() == proxy.namespace
                    && identity.service_account() == proxy.service_account
                {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "node {} claims namespace {:?} and service account {:?}, but its certificate is {identity}",
                        proxy.id, proxy.namespace, proxy.service_account
                    )))
                }
            }
        }
    }
}

/// The xDS server state shared by all streams.
pub struct Discovery {
    pub(crate) snapshots: watch::Receiver<Arc<Snapshot>>,
    pub(crate) status: RwLock<BTreeMap<u64, ProxyStatus>>,
    next_connection: AtomicU64,
    /// The xDS metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Translations of the current snapshot, by what they depend on.
    cache: tokio::sync::Mutex<(u64, HashMap<CacheKey, Arc<Translated>>)>,
}

/// One translation, shared by every stream it applies to: the resources, a hash of each
/// (streams compare hashes, never bytes, and keep no copies), and where each name is.
pub(crate) struct Translated {
    pub(crate) resources: translate::Resources,
    pub(crate) hashes: Vec<u64>,
    /// Each resource as a `DiscoveryResponse` entry, shared by every response that carries it.
    pub(crate) encoded: Vec<bytes::Bytes>,
    /// [`name_hash`] of each resource's name.
    name_hashes: Vec<u64>,
    index: HashMap<String, usize>,
}

/// A stable 64-bit hash of a resource name: what a state-of-the-world subscription keeps.
fn name_hash(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

impl Translated {
    fn new(resources: translate::Resources) -> Self {
        use std::hash::{Hash, Hasher};
        let hashes = resources
            .iter()
            .map(|(_, any)| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                any.type_url.hash(&mut hasher);
                any.value.hash(&mut hasher);
                hasher.finish()
            })
            .collect();
        let index = resources.iter().enumerate().map(|(i, (name, _))| (name.clone(), i)).collect();
        let encoded = resources.iter().map(|(_, any)| crate::wire::encode_resource(any)).collect();
        let name_hashes = resources.iter().map(|(name, _)| name_hash(name)).collect();
        Self { resources, hashes, encoded, name_hashes, index }
    }

    /// The hash of the resource of this name, if there is one.
    pub(crate) fn hash_of(&self, name: &str) -> Option<u64> {
        self.index.get(name).map(|i| self.hashes[*i])
    }

    /// The hash this translation has for the resource at `i` of `other`: found at the same
    /// position when the names line up (the usual case between two snapshots), else by name.
    fn hash_like(&self, other: &Translated, i: usize) -> Option<u64> {
        // Equal 64-bit name hashes at the same position are taken as the same name.
        if self.name_hashes.get(i) == other.name_hashes.get(i) {
            return self.hashes.get(i).copied();
        }
        self.hash_of(&other.resources[i].0)
    }
}

/// What a translation depends on besides the snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    type_url: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    ips: Vec<std::net::IpAddr>,
    proxyless: bool,
}

impl Discovery {
    /// A server pushing whatever `snapshots` holds.
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>) -> Arc<Self> {
        Arc::new(Self {
            snapshots,
            status: RwLock::new(BTreeMap::new()),
            next_connection: AtomicU64::new(1),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            cache: tokio::sync::Mutex::new((u64::MAX, HashMap::new())),
        })
    }

    /// The resources of one type for a proxy, translated once per snapshot for every proxy
    /// that would get the same answer: every type depends on the proxy's namespace and labels
    /// (its Sidecar, route source matches), CDS and LDS also on its addresses (inbound ports).
    pub(crate) async fn resources(
        &self,
        type_url: &str,
        snapshot: &Snapshot,
        proxy: &Proxy,
    ) -> Option<Arc<Translated>> {
        let key = CacheKey {
            type_url: type_url.to_owned(),
            namespace: proxy.namespace.clone(),
            // Labels choose the Sidecar, so every type depends on them.
            labels: proxy.labels.clone(),
            ips: if type_url == mesh_api::xds::CLUSTER_TYPE
                || type_url == mesh_api::xds::LISTENER_TYPE
            {
                proxy.ips.clone()
            } else {
                Vec::new()
            },
            proxyless: proxy.proxyless,
        };
        let mut cache = self.cache.lock().await;
        if cache.0 != snapshot.version {
            *cache = (snapshot.version, HashMap::new());
        }
        if let Some(hit) = cache.1.get(&key) {
            return Some(hit.clone());
        }
        let generated = Arc::new(Translated::new(translate::generate(type_url, snapshot, proxy)?));
        // Bounded: a snapshot with more distinct proxies than this translates the rest uncached.
        if cache.1.len() < 10_000 {
            cache.1.insert(key, generated.clone());
        }
        Some(generated)
    }

    /// [`Self::resources`], plus what exists only when asked for by name: API listeners
    /// (`host:port`) for proxyless gRPC clients.
    pub(crate) async fn resources_named(
        &self,
        type_url: &str,
        snapshot: &Snapshot,
        proxy: &Proxy,
        names: &[String],
    ) -> Option<Arc<Translated>> {
        let translated = self.resources(type_url, snapshot, proxy).await?;
        let on_demand: Vec<_> = names
            .iter()
            .filter(|n| translated.hash_of(n).is_none())
            .filter_map(|n| translate::on_demand(type_url, snapshot, proxy, n))
            .collect();
        if on_demand.is_empty() {
            return Some(translated);
        }
        let mut all = translated.resources.clone();
        all.extend(on_demand);
        Some(Arc::new(Translated::new(all)))
    }

    /// Registers a stream's proxy from the node of its first request.
    pub(crate) async fn connect(
        &self,
        id: u64,
        node: Option<&envoy_types::pb::envoy::config::core::v3::Node>,
        caller: &Caller,
    ) -> Result<Proxy, Status> {
        let node =
            node.ok_or_else(|| Status::invalid_argument("the first request must carry the node"))?;
        let proxy = Proxy::from_node(node);
        if let Err(refused) = caller.admit(&proxy) {
            warn!(connection = id, node = %proxy.id, "xDS stream refused: {}", refused.message());
            self.metrics.identity_refused.inc();
            return Err(refused);
        }
        info!(connection = id, node = %proxy.id, "proxy connected");
        self.status.write().await.insert(
            id,
            ProxyStatus { id: proxy.id.clone(), node: proxy.clone(), types: BTreeMap::new() },
        );
        Ok(proxy)
    }

    /// What every request needs before its protocol looks at it: the stream's proxy registered
    /// from the first request's node (and its identity checked), the type one this pilot
    /// serves, the subscription within bounds. `Ok(false)`: ignore the request.
    pub(crate) async fn accept(
        &self,
        id: u64,
        proxy: &mut Option<Proxy>,
        node: Option<&envoy_types::pb::envoy::config::core::v3::Node>,
        caller: &Caller,
        type_url: &str,
        names: usize,
    ) -> Result<bool, Status> {
        if proxy.is_none() {
            *proxy = Some(self.connect(id, node, caller).await?);
        }
        if !PUSH_ORDER.contains(&type_url) {
            // Unknown types are answered with nothing rather than an error: Envoy asks for
            // types a control plane may not serve.
            debug!(connection = id, %type_url, "request for a type this pilot does not serve");
            return Ok(false);
        }
        if names > MAX_NAMES {
            return Err(Status::resource_exhausted(format!(
                "more than {MAX_NAMES} resource names in one request"
            )));
        }
        Ok(true)
    }

    /// Records a proxy's rejection of a response (its log line, metric and `syncz` entry);
    /// it is not answered.
    pub(crate) async fn nack(&self, id: u64, type_url: &str, nonce: &str, message: &str) {
        warn!(connection = id, %type_url, "proxy rejected {nonce}: {message}");
        self.metrics.rejects.get_or_create(&crate::metrics::TypeLabel::of(type_url)).inc();
        self.record(id, type_url, |s| s.last_nack = Some(message.to_owned())).await;
    }

    /// Updates what a stream has sent or had acknowledged of one type.
    pub(crate) async fn record(
        &self,
        id: u64,
        type_url: &str,
        update: impl FnOnce(&mut TypeStatus),
    ) {
        if let Some(proxy) = self.status.write().await.get_mut(&id) {
            update(proxy.types.entry(type_url.to_owned()).or_default());
        }
    }

    /// The last nonce sent to a stream for one type.
    pub(crate) async fn sent_nonce(&self, id: u64, type_url: &str) -> String {
        self.status
            .read()
            .await
            .get(&id)
            .and_then(|p| p.types.get(type_url).map(|s| s.sent_nonce.clone()))
            .unwrap_or_default()
    }

    /// Waits until some proxy has acknowledged the last response of every type in `types`;
    /// fails at once on a rejection (with the proxy's message) or after `timeout`.
    pub async fn wait_until_synced(
        &self,
        types: &[&str],
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.syncz().await;
            if let Some(nack) =
                status.iter().flat_map(|p| p.types.values()).find_map(|s| s.last_nack.clone())
            {
                return Err(format!("a proxy rejected the configuration: {nack}"));
            }
            if status.iter().any(|p| {
                types.iter().all(|t| p.types.get(*t).is_some_and(|s| s.state() == "SYNCED"))
            }) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("not synced after {timeout:?}: {status:?}"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// What a connected proxy (by node id) is served now, as Envoy's admin config dump
    /// writes it (`envoy.admin.v3.ConfigDump` JSON); `None` when no such proxy is connected.
    pub async fn config_dump(
        &self,
        proxy_id: &str,
    ) -> Option<Result<serde_json::Value, mesh_api::envoy::JsonError>> {
        let proxy =
            self.status.read().await.values().find(|p| p.id == proxy_id).map(|p| p.node.clone())?;
        let snapshot = self.snapshots.borrow().clone();
        let version = snapshot.version.to_string();
        let mut configs = Vec::new();
        // Envoy's dump order and field names: (dump type, list field, entry field).
        let sections = [
            (mesh_api::xds::CLUSTER_TYPE, "ClustersConfigDump", "dynamicActiveClusters", "cluster"),
            (
                mesh_api::xds::ENDPOINT_TYPE,
                "EndpointsConfigDump",
                "dynamicEndpointConfigs",
                "endpointConfig",
            ),
            (mesh_api::xds::LISTENER_TYPE, "ListenersConfigDump", "dynamicListeners", "listener"),
            (mesh_api::xds::ROUTE_TYPE, "RoutesConfigDump", "dynamicRouteConfigs", "routeConfig"),
        ];
        for (type_url, dump, list, field) in sections {
            let Some(translated) = self.resources(type_url, &snapshot, &proxy).await else {
                continue;
            };
            let mut entries = Vec::new();
            for (name, any) in &translated.resources {
                let json = match mesh_api::envoy::to_json(&any.type_url, &any.value) {
                    Ok(json) => json,
                    Err(err) => return Some(Err(err)),
                };
                entries.push(if type_url == mesh_api::xds::LISTENER_TYPE {
                    serde_json::json!({"name": name, "activeState": {"versionInfo": version, field: json}})
                } else {
                    serde_json::json!({"versionInfo": version, field: json})
                });
            }
            configs.push(serde_json::json!({
                "@type": format!("type.googleapis.com/envoy.admin.v3.{dump}"),
                list: entries,
            }));
        }
        Some(Ok(serde_json::json!({ "configs": configs })))
    }

    /// The sync state of every connected proxy.
    pub async fn syncz(&self) -> Vec<ProxyStatus> {
        self.status.read().await.values().cloned().collect()
    }

    /// The gRPC service for the plaintext port: nodes are believed.
    pub fn service(self: &Arc<Self>) -> crate::wire::AdsService {
        crate::wire::AdsService::new(self.clone(), false)
    }

    /// The gRPC service for the mTLS port: a node must be the workload its client certificate
    /// names (namespace and service account), or its stream is refused.
    pub fn mtls_service(self: &Arc<Self>) -> crate::wire::AdsService {
        crate::wire::AdsService::new(self.clone(), true)
    }
}

/// Serves ADS over mesh mTLS on `listener` (port 15012) until `shutdown`: the client must
/// present a certificate of `roots` for `trust_domain`, and a node is admitted only as the
/// workload that certificate names. The pilot presents the certificate in `store`.
pub async fn serve_mtls(
    discovery: Arc<Discovery>,
    listener: tokio::net::TcpListener,
    store: Arc<mesh_identity::CertStore>,
    roots: Arc<rustls::RootCertStore>,
    trust_domain: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut config = mesh_identity::tls::mesh_server_config(store, roots, trust_domain)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    tonic::transport::Server::builder()
        .add_service(discovery.mtls_service())
        .serve_with_incoming_shutdown(
            mesh_identity::accept::incoming(listener, Arc::new(config)),
            shutdown,
        )
        .await?;
    Ok(())
}

/// Why the mTLS xDS server could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS configuration could not be built from the certificates.
    #[error("TLS configuration for xDS: {0}")]
    Tls(#[from] mesh_identity::TlsError),
    /// The gRPC server failed.
    #[error("xDS server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The tonic-generated side of ADS over a [`Discovery`]: delta streams (state-of-the-world
/// streams are framed by [`crate::wire`]).
pub struct Ads {
    discovery: Arc<Discovery>,
    mtls: bool,
}

impl Ads {
    pub(crate) fn new(discovery: Arc<Discovery>, mtls: bool) -> Self {
        Self { discovery, mtls }
    }

    fn caller<T>(&self, request: &Request<T>) -> Caller {
        if self.mtls { Caller::from_certificates(request.peer_certs()) } else { Caller::Plaintext }
    }
}

/// Serves one state-of-the-world stream; its responses come out of the returned receiver.
pub(crate) fn serve_sotw(
    discovery: &Arc<Discovery>,
    requests: impl Stream<Item = Result<crate::wire::SotwRequest, Status>> + Send + Unpin + 'static,
    caller: Caller,
) -> mpsc::Receiver<Result<crate::wire::Response, Status>> {
    serve(discovery, requests, |id, discovery, tx| Stream_ {
        id,
        discovery,
        tx,
        caller,
        proxy: None,
        watched: HashMap::new(),
        nonce: 0,
    })
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        // `wire::AdsService` routes these before they reach the generated server.
        Err(Status::internal("state-of-the-world ADS is served by the pilot's own framing"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let caller = self.caller(&request);
        let responses = serve(&self.discovery, request.into_inner(), |id, discovery, tx| {
            crate::delta::DeltaStream::new(id, discovery, tx, caller)
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(responses))))
    }
}

/// One protocol's handling of an ADS stream (state of the world or delta).
pub(crate) trait Handler: Send + 'static {
    /// The requests of the protocol.
    type Request: Send + 'static;
    /// Handles one request from the proxy.
    fn on_request(
        &mut self,
        request: Self::Request,
    ) -> impl Future<Output = Result<(), Status>> + Send;
    /// Pushes what a new snapshot changed.
    fn on_snapshot(&mut self) -> impl Future<Output = Result<(), Status>> + Send;
}

/// Runs a stream: requests and snapshot changes in one loop, the connection counted and its
/// sync state dropped when it ends, a protocol error sent to the proxy as the final status.
fn serve<H, T>(
    discovery: &Arc<Discovery>,
    mut requests: impl Stream<Item = Result<H::Request, Status>> + Send + Unpin + 'static,
    handler: impl FnOnce(u64, Arc<Discovery>, mpsc::Sender<Result<T, Status>>) -> H,
) -> mpsc::Receiver<Result<T, Status>>
where
    H: Handler,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let discovery = discovery.clone();
    let id = discovery.next_connection.fetch_add(1, Ordering::Relaxed);
    discovery.metrics.connected.inc();
    let mut handler = handler(id, discovery.clone(), tx.clone());
    tokio::spawn(async move {
        let mut snapshots = discovery.snapshots.clone();
        let result = loop {
            tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(request)) => {
                        if let Err(status) = handler.on_request(request).await {
                            break Err(status);
                        }
                    }
                    Some(Err(status)) => {
                        // A request that does not decode, or the transport failing: the
                        // status goes back (if anyone is listening) and the stream ends.
                        debug!(connection = id, "stream ended: {status}");
                        break Err(status);
                    }
                    None => break Ok(()),
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break Err(Status::unavailable("the pilot is shutting down"));
                    }
                    if let Err(status) = handler.on_snapshot().await {
                        break Err(status);
                    }
                }
            }
        };
        if let Err(status) = result {
            let _ = tx.send(Err(status)).await;
        }
        discovery.status.write().await.remove(&id);
        discovery.metrics.connected.dec();
    });
    rx
}

/// The names a state-of-the-world stream asked for, kept small: a proxy subscribed to
/// thousands of endpoint assignments must not cost thousands of strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Names {
    /// No names, or `*`: everything.
    wildcard: bool,
    /// [`name_hash`] of each name, sorted.
    hashes: Vec<u64>,
    /// Names that may only exist when asked for (`host:port` API listeners), verbatim.
    on_demand: Vec<String>,
}

impl Names {
    fn of(type_url: &str, names: &crate::wire::RawNames) -> Self {
        let mut hashes: Vec<u64> = names.iter().map(name_hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        let on_demand = if type_url == mesh_api::xds::LISTENER_TYPE {
            names.iter().filter(|n| n.contains(':')).map(str::to_owned).collect()
        } else {
            Vec::new()
        };
        Self { wildcard: names.len() == 0 || names.iter().any(|n| n == "*"), hashes, on_demand }
    }

    fn wants(&self, hash: u64) -> bool {
        self.wildcard || self.hashes.binary_search(&hash).is_ok()
    }
}

/// What one stream watches of one type.
struct Watched {
    /// Requested names.
    names: Names,
    /// The fingerprint of the names as last sent by the proxy ([`crate::wire::RawNames`]).
    raw: u64,
    /// Fingerprint of the last resources sent, to skip pushes that change nothing.
    sent: Option<u64>,
    /// The translation last sent from (shared with the other streams it applies to), to send
    /// EDS and RDS incrementally.
    last: Option<Arc<Translated>>,
}

struct Stream_ {
    id: u64,
    discovery: Arc<Discovery>,
    tx: mpsc::Sender<Result<crate::wire::Response, Status>>,
    caller: Caller,
    proxy: Option<Proxy>,
    watched: HashMap<String, Watched>,
    nonce: u64,
}

impl Handler for Stream_ {
    type Request = crate::wire::SotwRequest;

    async fn on_request(&mut self, request: crate::wire::SotwRequest) -> Result<(), Status> {
        self.handle(request).await
    }

    async fn on_snapshot(&mut self) -> Result<(), Status> {
        self.push_all(false).await
    }
}

impl Stream_ {
    async fn handle(&mut self, sotw: crate::wire::SotwRequest) -> Result<(), Status> {
        let crate::wire::SotwRequest { request, names: raw } = sotw;
        let type_url = request.type_url.clone();
        let node = request.node.as_ref();
        let discovery = &self.discovery;
        if !discovery
            .accept(self.id, &mut self.proxy, node, &self.caller, &type_url, raw.len())
            .await?
        {
            return Ok(());
        }
        if let Some(error) = &request.error_detail {
            discovery.nack(self.id, &type_url, &request.response_nonce, &error.message).await;
            return Ok(());
        }
        let sent_nonce = self.discovery.sent_nonce(self.id, &type_url).await;
        if !request.response_nonce.is_empty() && request.response_nonce != sent_nonce {
            debug!(connection = self.id, %type_url, "stale nonce {} ignored", request.response_nonce);
            return Ok(());
        }
        // The same names as last time (the usual ACK) cost a fingerprint compare, not a decode.
        let current = self.watched.get(&type_url);
        let first = current.is_none();
        let new_names = match current {
            Some(w) if w.raw == raw.fingerprint => None,
            Some(w) => Some(Names::of(&type_url, &raw)).filter(|n| *n != w.names),
            None => Some(Names::of(&type_url, &raw)),
        };
        let names_changed = !first && new_names.is_some();
        if !request.response_nonce.is_empty() {
            // An ACK of what was sent.
            let version = request.version_info.clone();
            let nonce = request.response_nonce.clone();
            self.record(&type_url, |s| {
                s.acked_version = version;
                s.acked_nonce = nonce;
                s.last_nack = None;
            })
            .await;
        }
        if first || names_changed || request.response_nonce.is_empty() {
            let watched = self.watched.entry(type_url.clone()).or_insert(Watched {
                names: Names::default(),
                raw: 0,
                sent: None,
                last: None,
            });
            if let Some(names) = new_names {
                watched.names = names;
            }
            watched.raw = raw.fingerprint;
            watched.sent = None;
            watched.last = None;
            self.push(&type_url, true).await?;
        } else if let Some(watched) = self.watched.get_mut(&type_url) {
            // The same names in another order: remembered, so the next ACK is cheap again.
            watched.raw = raw.fingerprint;
        }
        Ok(())
    }

    async fn record(&self, type_url: &str, update: impl FnOnce(&mut TypeStatus)) {
        self.discovery.record(self.id, type_url, update).await;
    }

    /// Pushes every watched type, in make-before-break order.
    async fn push_all(&mut self, force: bool) -> Result<(), Status> {
        for type_url in PUSH_ORDER {
            if self.watched.contains_key(type_url) {
                self.push(type_url, force).await?;
            }
        }
        Ok(())
    }

    /// Sends the current state of one type, unless it is what was sent last (and not forced).
    async fn push(&mut self, type_url: &str, force: bool) -> Result<(), Status> {
        let Some(proxy) = &self.proxy else { return Ok(()) };
        let snapshot = self.discovery.snapshots.borrow().clone();
        if snapshot.version == 0 {
            // Nothing read yet: an empty answer would make a reconnecting proxy drop the
            // config it runs on. The first snapshot answers every waiting request.
            return Ok(());
        }
        let Some(watched) = self.watched.get_mut(type_url) else { return Ok(()) };
        let Some(translated) = self
            .discovery
            .resources_named(type_url, &snapshot, proxy, &watched.names.on_demand)
            .await
        else {
            return Ok(());
        };
        let selected: Vec<usize> = (0..translated.resources.len())
            .filter(|i| watched.names.wants(translated.name_hashes[*i]))
            .collect();
        // A hash of hashes: a thousand streams must not each keep their last response.
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            for i in &selected {
                translated.hashes[*i].hash(&mut hasher);
            }
            hasher.finish()
        };
        if !force && watched.sent.as_ref() == Some(&fingerprint) {
            return Ok(());
        }
        // Listeners and clusters are state of the world: every response holds them all. Route
        // configurations and endpoints are not (a missing one is not a deletion): after the
        // first response only the changed ones go, so one endpoint change is one small message.
        let incremental =
            type_url == mesh_api::xds::ENDPOINT_TYPE || type_url == mesh_api::xds::ROUTE_TYPE;
        let previous = if force || !incremental { None } else { watched.last.clone() };
        self.nonce += 1;
        let nonce = format!("{}-{}", self.id, self.nonce);
        let version = snapshot.version.to_string();
        let changed = selected.into_iter().filter(|i| {
            previous
                .as_ref()
                .is_none_or(|p| p.hash_like(&translated, *i) != Some(translated.hashes[*i]))
        });
        let response = crate::wire::Response::new(
            &version,
            changed.map(|i| &translated.encoded[i]),
            type_url,
            &nonce,
        );
        watched.last = Some(translated);
        watched.sent = Some(fingerprint);
        self.record(type_url, |s| {
            s.sent_version = version;
            s.sent_nonce = nonce;
        })
        .await;
        self.discovery.metrics.observe_push(type_url, snapshot.published);
        self.tx.send(Ok(response)).await.map_err(|_| Status::cancelled("the proxy went away"))
    }
}

/// Publishes snapshots after `after` of quiet, or at the latest `max` after the first change of
/// a burst, numbering them. Many changes make one push.
pub async fn debounce(
    mut changes: mpsc::Receiver<Snapshot>,
    publish: watch::Sender<Arc<Snapshot>>,
    after: std::time::Duration,
    max: std::time::Duration,
) {
    let mut version = publish.borrow().version;
    while let Some(mut latest) = changes.recv().await {
        let burst_started = tokio::time::Instant::now();
        loop {
            let quiet_until = tokio::time::Instant::now() + after;
            let deadline = (burst_started + max).min(quiet_until);
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Ok(Some(next)) => {
                    latest = next;
                    if tokio::time::Instant::now() >= burst_started + max {
                        break;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        version += 1;
        latest.version = version;
        latest.published = Some(std::time::Instant::now());
        if publish.send(Arc::new(latest)).is_err() {
            return;
        }
    }
}
