//! Outlier detection: endpoints that fail in a row (5xx, or gateway errors: 502/503/504 and
//! connection failures) are ejected from load balancing for a time that grows with each
//! ejection, never more than `max_ejection_percent` of a cluster at once (one is always
//! allowed), and ejections are ignored when too few endpoints would be left (Envoy's panic
//! threshold, Istio's `minHealthPercent`). State is per endpoint, lock-free, and carried
//! across configuration updates.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;

use crate::policy::Outcome;

/// Envoy's default `max_ejection_time`.
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// Milliseconds since the proxy started (never 0).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
}

/// One endpoint's recent record.
#[derive(Debug, Default)]
pub struct HostHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Until when it is ejected ([`now_ms`] time; 0: not ejected).
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

impl HostHealth {
    /// Whether it is ejected at `now` ([`now_ms`]).
    pub fn is_ejected(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Relaxed)
    }

    /// How many times it has been ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Takes over the record of the same endpoint in an older configuration.
    pub fn carry_from(&self, older: &HostHealth) {
        for (to, from) in [
            (&self.consecutive_5xx, &older.consecutive_5xx),
            (&self.consecutive_gateway, &older.consecutive_gateway),
            (&self.ejections, &older.ejections),
        ] {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.ejected_until.store(older.ejected_until.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// A cluster's outlier detection.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierPolicy {
    /// Consecutive 5xx that eject (`None`: not by this rule).
    pub consecutive_5xx: Option<u32>,
    /// Consecutive gateway errors that eject.
    pub consecutive_gateway: Option<u32>,
    /// First ejection's length; the n-th lasts n times as long.
    pub base_ejection: Duration,
    /// Most of the cluster ejected at once, in percent.
    pub max_percent: u32,
    /// Below this share of usable endpoints (percent), ejections are ignored.
    pub panic_percent: f64,
}

impl OutlierPolicy {
    /// The policy of `cluster`, if it has outlier detection.
    pub fn of(cluster: &Cluster) -> Option<Self> {
        let od = cluster.outlier_detection.as_ref()?;
        let value = |v: Option<&envoy_types::pb::google::protobuf::UInt32Value>| v.map(|v| v.value);
        // An `enforcing_*` of 0 turns a rule off (Envoy's default is 100 for consecutive 5xx
        // and 0 for gateway failures).
        let on = |enforcing: Option<u32>, default: u32| enforcing.unwrap_or(default) > 0;
        Some(Self {
            consecutive_5xx: value(od.consecutive_5xx.as_ref())
                .or(Some(5))
                .filter(|_| on(value(od.enforcing_consecutive_5xx.as_ref()), 100)),
            consecutive_gateway: value(od.consecutive_gateway_failure.as_ref())
                .filter(|_| on(value(od.enforcing_consecutive_gateway_failure.as_ref()), 0)),
            base_ejection: od
                .base_ejection_time
                .as_ref()
                .and_then(|d| {
                    Some(
                        Duration::from_secs(u64::try_from(d.seconds).ok()?)
                            + Duration::from_nanos(u64::try_from(d.nanos).ok()?),
                    )
                })
                .unwrap_or(Duration::from_secs(30)),
            max_percent: value(od.max_ejection_percent.as_ref()).unwrap_or(10),
            panic_percent: cluster
                .common_lb_config
                .as_ref()
                .and_then(|c| c.healthy_panic_threshold.as_ref())
                .map_or(50.0, |p| p.value),
        })
    }

    /// Records how a request to `hosts[index]` ended, ejecting it if that makes too many
    /// failures in a row.
    pub fn record(&self, health: &[&HostHealth], index: usize, outcome: Outcome) {
        let Some(host) = health.get(index) else { return };
        let (fivexx, gateway) = match outcome {
            Outcome::ConnectFailure | Outcome::Reset | Outcome::Refused => (true, true),
            Outcome::Response { status, .. } => (status >= 500, matches!(status, 502..=504)),
        };
        let bump = |counter: &AtomicU32, failed: bool| {
            if failed {
                counter.fetch_add(1, Ordering::Relaxed) + 1
            } else {
                counter.store(0, Ordering::Relaxed);
                0
            }
        };
        let n5xx = bump(&host.consecutive_5xx, fivexx);
        let ngw = bump(&host.consecutive_gateway, gateway);
        let tripped = self.consecutive_5xx.is_some_and(|t| t > 0 && n5xx >= t)
            || self.consecutive_gateway.is_some_and(|t| t > 0 && ngw >= t);
        let now = now_ms();
        if !tripped || host.is_ejected(now) {
            return;
        }
        let ejected = health.iter().filter(|h| h.is_ejected(now)).count();
        let allowed = ejected == 0
            || (ejected + 1) * 100
                <= usize::try_from(self.max_percent).unwrap_or(100) * health.len();
        if !allowed {
            return;
        }
        let times = host.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length =
            self.base_ejection.saturating_mul(times).min(MAX_EJECTION.max(self.base_ejection));
        host.ejected_until
            .store(now + u64::try_from(length.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        host.consecutive_5xx.store(0, Ordering::Relaxed);
        host.consecutive_gateway.store(0, Ordering::Relaxed);
        tracing::info!(ejection = times, ?length, "endpoint ejected by outlier detection");
    }
}
