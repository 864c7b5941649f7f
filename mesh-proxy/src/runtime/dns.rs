//! DNS clusters (`STRICT_DNS`, `LOGICAL_DNS`): their host names resolved in the background
//! every `dns_refresh_rate` (Envoy's default: 5 s), so a request reads the last answer
//! instead of waiting for a lookup.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;

/// Envoy's DNS refresh rate when the cluster sets none.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// The last resolution of a DNS cluster's targets.
#[derive(Debug)]
pub struct DnsCache {
    targets: Vec<(String, u16)>,
    refresh: Duration,
    /// The addresses of the last resolution, targets in order; empty before the first.
    resolved: ArcSwap<Result<Vec<SocketAddr>, String>>,
    started: AtomicBool,
}

impl DnsCache {
    /// A cache for `targets`, refreshed as `cluster` says.
    pub fn new(targets: Vec<(String, u16)>, cluster: &Cluster) -> Self {
        // Deprecated in Envoy for the DNS cluster extension, but what Istio's pilot (and
        // ours) sets, and what Envoy still honours.
        #[allow(deprecated)]
        let refresh = cluster
            .dns_refresh_rate
            .as_ref()
            .and_then(super::duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_REFRESH);
        Self {
            targets,
            refresh,
            resolved: ArcSwap::from_pointee(Err("not resolved yet".to_owned())),
            started: AtomicBool::new(false),
        }
    }

    /// Whether this cache serves the same targets at the same rate (so an update can keep
    /// it, and its last answer).
    pub fn same_as(&self, other: &DnsCache) -> bool {
        self.targets == other.targets && self.refresh == other.refresh
    }

    /// The first address of the last resolution, or why there is none. Before the first
    /// background resolution has finished, resolves now (a cluster's first request must not
    /// fail only because it came early).
    pub async fn address(&self) -> Result<SocketAddr, String> {
        if let Ok(addresses) = self.resolved.load().as_ref() {
            return addresses.first().copied().ok_or_else(|| "no addresses".to_owned());
        }
        let resolved = self.resolve().await;
        let first = resolved
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|a| a.first().copied().ok_or_else(|| "no addresses".to_owned()));
        if resolved.is_ok() {
            self.resolved.store(Arc::new(resolved));
        }
        first
    }

    /// Every target's addresses, in order; the error says why none resolved.
    async fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        let mut addresses = Vec::new();
        let mut last = "no DNS targets".to_owned();
        for (host, port) in &self.targets {
            match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(found) => {
                    let before = addresses.len();
                    addresses.extend(found);
                    if addresses.len() == before {
                        last = format!("{host} has no addresses");
                    }
                }
                Err(e) => last = format!("cannot resolve {host}: {e}"),
            }
        }
        if addresses.is_empty() { Err(last) } else { Ok(addresses) }
    }

    /// Starts the background refresh on the current runtime, once; it stops when the last
    /// configuration holding this cache is gone.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::Relaxed) {
            return;
        }
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let refresh = {
                    let Some(cache) = cache.upgrade() else { return };
                    let resolved = cache.resolve().await;
                    if let Err(why) = &resolved {
                        tracing::debug!(targets = ?cache.targets, "DNS: {why}");
                    }
                    // A failed refresh keeps the last good answer, as Envoy does.
                    if resolved.is_ok() || cache.resolved.load().is_err() {
                        cache.resolved.store(Arc::new(resolved));
                    }
                    cache.refresh
                };
                tokio::time::sleep(refresh).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_in_the_background_and_stops_with_its_configuration() {
        #[allow(deprecated)]
        let cluster = Cluster {
            dns_refresh_rate: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 0,
                nanos: 10_000_000,
            }),
            ..Default::default()
        };
        let cache = Arc::new(DnsCache::new(vec![("localhost".to_owned(), 8080)], &cluster));
        assert_eq!(cache.refresh, Duration::from_millis(10));
        cache.start();
        cache.start();
        // The refresher resolves on its own: no request has asked yet.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cache.resolved.load().is_err() {
            assert!(std::time::Instant::now() < deadline, "the background never resolved");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let address = cache.address().await.unwrap();
        assert_eq!(address.port(), 8080);
        assert!(address.ip().is_loopback());
        let weak = Arc::downgrade(&cache);
        drop(cache);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(weak.upgrade().is_none(), "the refresher holds no strong reference");
    }

    #[tokio::test]
    async fn says_why_nothing_resolves() {
        let cache = DnsCache::new(Vec::new(), &Cluster::default());
        assert_eq!(cache.refresh, DEFAULT_REFRESH);
        assert_eq!(cache.address().await, Err("no DNS targets".to_owned()));
    }
}
