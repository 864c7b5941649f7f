//! Sync status: what each stream has sent and had acknowledged, per type. A stream owns its
//! status and updates it without touching any other stream's; the [`Registry`] holds a reader
//! of each live stream's, which is what `/debug/syncz` and [`super::Discovery::syncz`] read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{RwLock, watch};

use crate::model::Proxy;

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

/// The sync status of one stream, owned by it; the registry keeps only a reader.
pub(crate) struct StreamStatus {
    status: watch::Sender<ProxyStatus>,
}

impl StreamStatus {
    /// Updates what the stream has sent or had acknowledged of one type.
    pub(crate) fn record(&self, type_url: &str, update: impl FnOnce(&mut TypeStatus)) {
        self.status.send_modify(|status| {
            update(status.types.entry(type_url.to_owned()).or_default());
        });
    }

    /// The last nonce sent for one type (empty before the first response).
    pub(crate) fn sent_nonce(&self, type_url: &str) -> String {
        self.status.borrow().types.get(type_url).map(|s| s.sent_nonce.clone()).unwrap_or_default()
    }
}

/// The live streams' sync status, by stream id: one entry per admitted stream, removed when
/// the stream ends.
#[derive(Default)]
pub(crate) struct Registry {
    streams: RwLock<BTreeMap<u64, watch::Receiver<ProxyStatus>>>,
    next_id: AtomicU64,
}

impl Registry {
    /// A new stream id (ids start at 1 and are never reused).
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a stream's proxy; the stream keeps what is returned and writes its status there.
    pub(crate) async fn register(&self, id: u64, proxy: &Proxy) -> StreamStatus {
        let (status, reader) = watch::channel(ProxyStatus {
            id: proxy.id.clone(),
            node: proxy.clone(),
            types: BTreeMap::new(),
        });
        self.streams.write().await.insert(id, reader);
        StreamStatus { status }
    }

    /// Forgets a stream that ended.
    pub(crate) async fn remove(&self, id: u64) {
        self.streams.write().await.remove(&id);
    }

    /// The status of every live stream, in the order they connected.
    pub(crate) async fn statuses(&self) -> Vec<ProxyStatus> {
        self.streams
            .read()
            .await
            .values()
            // A stream whose status is gone ended (its task stopped before removing itself).
            .filter(|reader| reader.has_changed().is_ok())
            .map(|reader| reader.borrow().clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_stream_writes_its_own_status_and_the_registry_reads_the_live_ones() {
        let registry = Registry::default();
        let (a, b) = (registry.next_id(), registry.next_id());
        let proxy = |id: &str| Proxy { id: id.into(), ..Proxy::default() };
        let first = registry.register(a, &proxy("a")).await;
        let second = registry.register(b, &proxy("b")).await;
        first.record("t", |s| s.sent_nonce = "1-1".into());
        assert_eq!(first.sent_nonce("t"), "1-1");
        assert_eq!(second.sent_nonce("t"), "");
        let statuses = registry.statuses().await;
        assert_eq!(statuses.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(statuses[0].types["t"].state(), "STALE");

        // A stream gone without removing itself is not reported; a removed one is forgotten.
        drop(second);
        assert_eq!(registry.statuses().await.len(), 1);
        registry.remove(a).await;
        registry.remove(b).await;
        assert!(registry.streams.read().await.is_empty());
    }
}
