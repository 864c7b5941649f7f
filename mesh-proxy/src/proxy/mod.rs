//! The data path: the outbound (15001) and inbound (15006) listeners, what each connection
//! becomes (HTTP with routes, or TCP), and the upstream connections behind them. Everything
//! here reads the current [`Runtime`] per connection or request, so a configuration update
//! changes what new requests do without touching connections already open.

mod authorize;
pub mod http;
pub mod listen;
pub mod tcp;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use mesh_api::identity::SpiffeId;
use mesh_identity::CertStore;
use tokio::sync::watch;

use crate::balance::PeerIdentity;
use crate::runtime::{ClusterTls, Runtime, Upstream};
use crate::telemetry::{AccessLog, Metrics, Workload};
use upstream::{Endpoint, Pools};

thread_local! {
    /// The index of the worker thread this is (0 off the workers).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as worker `index` (its upstream pools are `index`'s).
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// Errors carried by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request and response the proxy handles.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The workload certificate and what peers must verify to.
pub struct MeshTls {
    /// The workload certificate (rotated in place).
    pub store: Arc<CertStore>,
    /// The mesh roots.
    pub roots: Arc<rustls::RootCertStore>,
    /// The trust domain peers must belong to.
    pub trust_domain: String,
    /// Server side of inbound mesh mTLS.
    pub server: Arc<rustls::ServerConfig>,
}

impl MeshTls {
    /// TLS for a workload with `store`'s certificate.
    pub fn new(
        store: Arc<CertStore>,
        roots: Arc<rustls::RootCertStore>,
        trust_domain: &str,
    ) -> Result<Self, mesh_identity::TlsError> {
        let mut server =
            mesh_identity::tls::mesh_server_config(store.clone(), roots.clone(), trust_domain)?;
        // The sidecar protocols first: a peer sidecar offering `h2` gets one multiplexed
        // connection; `istio*` alone means opaque TCP or HTTP found by sniffing.
        server.alpn_protocols = [&b"h2"[..], b"http/1.1", b"istio-peer-exchange", b"istio"]
            .iter()
            .map(|p| p.to_vec())
            .collect();
        Ok(Self { store, roots, trust_domain: trust_domain.to_owned(), server: Arc::new(server) })
    }
}

/// Tunables of the data path.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// How long to wait for a client's first bytes before treating it as opaque TCP (zero:
    /// as long as the client takes).
    pub detection_timeout: Duration,
    /// How long a client may take to send a request head.
    pub header_timeout: Duration,
    /// Largest request head accepted (bigger: 431).
    pub max_header_bytes: usize,
    /// Worker threads carrying traffic; each has its own upstream pools.
    pub workers: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            detection_timeout: Duration::ZERO,
            header_timeout: Duration::from_secs(30),
            max_header_bytes: 60 * 1024,
            workers: 1,
        }
    }
}

/// What every connection handler shares.
pub struct Shared {
    /// The compiled configuration in force.
    pub runtime: ArcSwap<Runtime>,
    /// Mesh mTLS.
    pub tls: Arc<MeshTls>,
    /// Upstream HTTP connections, per worker thread.
    pools: Vec<Pools>,
    /// Metrics.
    pub metrics: Metrics,
    /// Access log.
    pub log: AccessLog,
    /// This workload, for telemetry and the peer-metadata exchange.
    pub me: Arc<Workload>,
    /// [`Workload::header`] of this workload, made once.
    pub me_header: Option<::http::HeaderValue>,
    /// This workload's identity.
    pub identity: SpiffeId,
    /// Tunables.
    pub tuning: Tuning,
    /// Counts the configurations put in force: connections held by a listener an update
    /// replaced drain when it moves ([`listen::serve_http`]).
    pub updates: watch::Sender<u64>,
    /// Where recorded requests' spans go (the exporters the control thread keeps).
    pub spans: crate::trace::Spans,
}

impl Shared {
    /// Shared state over `runtime`.
    pub fn new(
        runtime: Runtime,
        tls: Arc<MeshTls>,
        metrics: Metrics,
        log: AccessLog,
        me: Workload,
        identity: SpiffeId,
        tuning: Tuning,
    ) -> Self {
        Self {
            runtime: ArcSwap::from_pointee(runtime),
            pools: (0..tuning.workers.max(1)).map(|_| Pools::new(tls.clone())).collect(),
            tls,
            metrics,
            log,
            me_header: ::http::HeaderValue::from_str(&me.header()).ok(),
            me: Arc::new(me),
            identity,
            tuning,
            updates: watch::Sender::new(0),
            spans: crate::trace::Spans::default(),
        }
    }
}

impl Shared {
    /// The upstream pools of the worker thread this runs on (a worker's connections are
    /// driven by its own runtime, so a request and its upstream connection share a thread).
    pub fn pools(&self) -> &Pools {
        // There is always at least one (`Shared::new`).
        let last = self.pools.len().saturating_sub(1);
        &self.pools[WORKER.with(std::cell::Cell::get).min(last)]
    }

    /// Compiles every update `store` accepts and puts it in force (a compile failure keeps
    /// the last one, and is logged). The receiver turns true at the first complete
    /// configuration (every cluster's endpoints and every listener's routes in).
    pub fn follow(self: Arc<Self>, store: Arc<crate::xds::store::Store>) -> watch::Receiver<bool> {
        let mut changes = store.changes();
        let (complete, first) = watch::channel(false);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let updates = *changes.borrow_and_update();
                self.metrics.config_updates.set(i64::try_from(updates).unwrap_or(i64::MAX));
                let config = store.current();
                match Runtime::update(config.clone(), &self.runtime.load()) {
                    Ok(runtime) => {
                        runtime.start_background();
                        self.runtime.store(Arc::new(runtime));
                        self.updates.send_modify(|n| *n += 1);
                        if config.complete() {
                            complete.send_replace(true);
                        }
                    }
                    Err(why) => {
                        tracing::warn!("cannot compile the configuration, keeping the last: {why}");
                    }
                }
            }
        });
        first
    }
}

/// The service host of an outbound cluster (`outbound|9080|v1|reviews.default.svc...`), for
/// telemetry; `None` for other clusters.
pub fn service_host(cluster: &str) -> Option<String> {
    use mesh_api::xds::{ClusterName, Direction};
    cluster
        .parse::<ClusterName>()
        .ok()
        .filter(|name| name.direction == Direction::Outbound)
        .map(|name| name.host)
}

/// Why no upstream endpoint could be chosen: the status, Envoy's response flag, and why.
#[derive(Debug)]
pub struct NoEndpoint {
    /// HTTP status to answer with.
    pub status: u16,
    /// Response flag.
    pub flag: crate::telemetry::ResponseFlags,
    /// What went wrong.
    pub reason: String,
}

/// An endpoint chosen for a request or connection; its in-flight count (read by least
/// request) drops when this is dropped.
pub struct Picked {
    /// Where to connect, and how.
    pub endpoint: Endpoint,
    /// How to reach the cluster: connect timeout, HTTP version, pooling, circuit breakers.
    pub transport: Arc<crate::runtime::Transport>,
    active: Option<(Arc<Upstream>, usize)>,
}

impl Picked {
    /// Records how the request to this endpoint ended (outlier detection).
    pub fn report(&self, outcome: crate::policy::Outcome) {
        if let Some((upstream, index)) = &self.active
            && let Upstream::Balanced(balancer) = upstream.as_ref()
        {
            balancer.record(*index, outcome);
        }
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        if let Some((upstream, index)) = &self.active
            && let Upstream::Balanced(balancer) = upstream.as_ref()
            && let Some(host) = balancer.hosts().get(*index)
        {
            host.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Chooses an endpoint of `cluster` for a connection that was going to `destination`.
pub async fn pick(
    runtime: &Runtime,
    cluster: &str,
    destination: SocketAddr,
    hash: Option<u64>,
) -> Result<Picked, NoEndpoint> {
    use crate::telemetry::ResponseFlags as F;
    let no = |status, flag, reason: String| NoEndpoint { status, flag, reason };
    let (Some(upstream), Some(transport)) =
        (runtime.upstreams.get(cluster), runtime.transports.get(cluster))
    else {
        return Err(no(503, F::NO_CLUSTER_FOUND, format!("cluster {cluster:?} is not configured")));
    };
    // Who the server must be: for mesh mTLS to every endpoint, the cluster's identities (a
    // DestinationRule's subjectAltNames) over the endpoint's; an endpoint whose identity is
    // not known is refused, never taken for any workload of the trust domain.
    let (mesh_all, server_name, origination) = match &transport.tls {
        ClusterTls::Unsupported(why) => {
            return Err(no(503, F::UPSTREAM_CONNECTION_FAILURE, why.clone()));
        }
        ClusterTls::Mesh { sni, identities } => {
            let ids = (!identities.is_empty()).then(|| PeerIdentity::OneOf(identities.clone()));
            (Some(ids), sni.clone(), None)
        }
        ClusterTls::Originate { sni, config } => (None, sni.clone(), Some(config.clone())),
        ClusterTls::ByEndpoint => (None, None, None),
    };
    let endpoint = |address, mesh: Option<PeerIdentity>| Endpoint {
        address,
        bind: transport.bind,
        mesh: match &mesh_all {
            Some(cluster) => cluster.clone().or(mesh).or(Some(PeerIdentity::Unknown)),
            None => mesh,
        },
        server_name: server_name.clone(),
        origination: origination.clone(),
    };
    let mut picked = Picked {
        endpoint: endpoint(destination, None),
        transport: transport.clone(),
        active: None,
    };
    match upstream.as_ref() {
        Upstream::OriginalDestination => {}
        Upstream::Balanced(balancer) => {
            let Some(index) = balancer.pick_index(hash) else {
                return Err(no(
                    503,
                    F::NO_HEALTHY_UPSTREAM,
                    format!("cluster {cluster:?} has no healthy endpoint"),
                ));
            };
            let host = &balancer.hosts()[index];
            host.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            picked.endpoint = endpoint(host.address, host.mesh.clone());
            picked.active = Some((upstream.clone(), index));
        }
        Upstream::Dns(_) => {
            let resolved = match runtime.dns.get(cluster) {
                Some(cache) => cache.address().await,
                None => Err("its DNS resolution is not set up".to_owned()),
            };
            match resolved {
                Ok(address) => picked.endpoint = endpoint(address, None),
                Err(why) => {
                    return Err(no(
                        503,
                        F::NO_HEALTHY_UPSTREAM,
                        format!("cluster {cluster:?}: {why}"),
                    ));
                }
            }
        }
    }
    Ok(picked)
}
