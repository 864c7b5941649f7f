//! What every ADS stream shares: the published snapshots, the translation cache, the registry
//! of streams' sync status, and the metrics.

use std::sync::Arc;

use tokio::sync::watch;

use super::cache::{Translated, TranslationCache};
use super::status::{ProxyStatus, Registry};
use crate::model::{Proxy, Snapshot};
use crate::translate;

/// The xDS server state shared by all streams.
pub struct Discovery {
    /// The snapshot to serve; every stream pushes when it changes.
    pub(crate) snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The sync status of every live stream.
    pub(crate) registry: Registry,
    /// The xDS metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Translations, by what they depend on.
    cache: TranslationCache,
}

impl Discovery {
    /// A server pushing whatever `snapshots` holds.
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>) -> Arc<Self> {
        Arc::new(Self {
            snapshots,
            registry: Registry::default(),
            metrics: Arc::new(crate::metrics::Metrics::default()),
            cache: TranslationCache::default(),
        })
    }

    /// The resources of one type for a proxy, translated once for every proxy that would get
    /// the same answer, and again only when a part of the snapshot they read changes.
    pub(crate) async fn resources(
        &self,
        type_url: &str,
        snapshot: &Snapshot,
        proxy: &Proxy,
    ) -> Option<Arc<Translated>> {
        self.cache.get(type_url, snapshot, proxy).await
    }

    /// [`Self::resources`], plus what exists only when asked for by name: API listeners
    /// (`host:port`) for proxyless gRPC clients, the snapshot scoped once for all of them.
    /// `on_demand` is already capped by the stream ([`super::stream::MAX_ON_DEMAND`]).
    pub(crate) async fn resources_named(
        &self,
        type_url: &str,
        snapshot: &Snapshot,
        proxy: &Proxy,
        on_demand: &[String],
    ) -> Option<Arc<Translated>> {
        let translated = self.resources(type_url, snapshot, proxy).await?;
        let missing =
            on_demand.iter().map(String::as_str).filter(|n| translated.hash_of(n).is_none());
        let found = translate::on_demand_all(type_url, snapshot, proxy, missing);
        if found.is_empty() {
            return Some(translated);
        }
        Some(Arc::new(translated.extended(found)))
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

    /// The sync state of every connected proxy.
    pub async fn syncz(&self) -> Vec<ProxyStatus> {
        self.registry.statuses().await
    }
}
