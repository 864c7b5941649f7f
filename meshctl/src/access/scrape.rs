//! The dashboard's data from a running mesh: each round asks the pilot which proxies are
//! connected, then scrapes every proxy (a few at a time, each on its own connection) and reads
//! the mesh's configuration.

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mesh_api::ports;

use super::{Mesh, Pod, Target};
use crate::dashboard::source::{ConfigDoc, ProxyId, ProxyScrape, Scrape, Source};

/// Proxies scraped at once: enough that a round of a few dozen takes about one request's time,
/// few enough not to flood a cluster's API server with port-forwards.
const PARALLEL: usize = 8;

/// How long a tap may stay silent before it is taken for dead: mesh-proxy sends an empty line
/// every 5 s when there is nothing to say.
const TAP_IDLE: Duration = Duration::from_secs(20);

/// How long the mesh's configuration is kept between reads: it changes by people's hands, and
/// a cluster's lists are the heaviest requests of a round.
const CONFIG_TTL: Duration = Duration::from_secs(10);

/// The configuration last read, and when.
type CachedConfig = Option<(Instant, Result<Vec<ConfigDoc>, String>)>;

/// A mesh as the dashboard's [`Source`].
pub struct MeshSource {
    mesh: Arc<dyn Mesh>,
    namespace: Option<String>,
    // Only the scraping thread takes it (`blocking_lock`, never inside a runtime).
    config: tokio::sync::Mutex<CachedConfig>,
}

impl MeshSource {
    /// The dashboard's view of `mesh`, its proxies and config limited to `namespace` if given.
    pub fn new(mesh: Arc<dyn Mesh>, namespace: Option<String>) -> Self {
        Self { mesh, namespace, config: tokio::sync::Mutex::new(None) }
    }

    /// The mesh's configuration, read again when the last read is older than [`CONFIG_TTL`].
    fn config(&self) -> Result<Vec<ConfigDoc>, String> {
        let mut cached = self.config.blocking_lock();
        match &*cached {
            Some((read, config)) if read.elapsed() < CONFIG_TTL => config.clone(),
            _ => {
                let config = self
                    .mesh
                    .config_documents(self.namespace.as_deref())
                    .map_err(|e| e.to_string());
                *cached = Some((Instant::now(), config.clone()));
                config
            }
        }
    }

    fn scrape_proxy(&self, id: ProxyId) -> ProxyScrape {
        let target = Target::Pod(Pod { name: id.pod.clone(), namespace: id.namespace.clone() });
        let get = |port: u16, path: &str| {
            super::get(self.mesh.as_ref(), &target, port, path).map_err(|e| e.to_string())
        };
        ProxyScrape {
            metrics: get(ports::PROXY_PROMETHEUS, "/stats/prometheus"),
            server_info: get(ports::PROXY_ADMIN, "/server_info"),
            certs: get(ports::PROXY_ADMIN, "/certs"),
            id,
        }
    }
}

impl Source for MeshSource {
    fn scrape(&self) -> Scrape {
        let at = SystemTime::now();
        let syncz = super::syncz(self.mesh.as_ref());
        let ids: Vec<ProxyId> = match &syncz {
            Ok((_, statuses)) => statuses
                .iter()
                .filter_map(|s| {
                    let pod = s.pod()?;
                    Some(ProxyId {
                        pod: pod.name,
                        namespace: pod.namespace,
                        node_id: Some(s.proxy.clone()),
                    })
                })
                .filter(|id| self.namespace.as_ref().is_none_or(|ns| &id.namespace == ns))
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut proxies = Vec::with_capacity(ids.len());
        for batch in ids.chunks(PARALLEL) {
            std::thread::scope(|scope| {
                let handles: Vec<_> =
                    batch.iter().map(|id| scope.spawn(|| self.scrape_proxy(id.clone()))).collect();
                for (handle, id) in handles.into_iter().zip(batch) {
                    proxies.push(handle.join().unwrap_or_else(|_| ProxyScrape {
                        id: id.clone(),
                        metrics: Err("the scraping thread failed".into()),
                        server_info: Err("the scraping thread failed".into()),
                        certs: Err("the scraping thread failed".into()),
                    }));
                }
            });
        }
        Scrape {
            at,
            syncz: syncz.map(|(text, _)| text).map_err(|e| e.to_string()),
            proxies,
            config: self.config(),
        }
    }

    fn tap(&self, proxy: &ProxyId) -> Result<Box<dyn BufRead + Send>, String> {
        let target =
            Target::Pod(Pod { name: proxy.pod.clone(), namespace: proxy.namespace.clone() });
        super::stream(self.mesh.as_ref(), &target, ports::PROXY_ADMIN, "/tap", Some(TAP_IDLE))
            .map_err(|e| e.to_string())
    }

    fn trace(&self, trace_id: &str) -> Result<String, String> {
        crate::trace::fetch(self.mesh.as_ref(), trace_id).map_err(|e| e.to_string())
    }
}
