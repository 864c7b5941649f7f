//! Outlier detection: endpoints that fail in a row (5xx, or gateway errors: 502/503/504 and
//! connection failures) are ejected from load balancing for a time that grows with each
//! ejection and shrinks again by one step per `interval` of good health, never more than
//! `max_ejection_percent` of a cluster at once (one is always allowed), and ejections are
//! ignored when too few endpoints would be left (Envoy's panic threshold, Istio's
//! `minHealthPercent`). With `split_external_local_origin_errors`, failures of the proxy's
//! own (connect failures, resets) are counted apart from the upstream's answers, against
//! `consecutive_local_origin_failure`. State is per endpoint, lock-free, and carried across
//! configuration updates.
//!
//! One difference from Envoy: Envoy brings endpoints back on its `interval` timer, so an
//! ejection lasts up to one interval longer than its length; here it lasts its length.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;

use crate::policy::Outcome;
use crate::runtime::duration;

/// Longest an ejection lasts, however often the endpoint was ejected (Envoy's default
/// `max_ejection_time`).
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// Milliseconds since the proxy started (never 0).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
}

/// One endpoint's outlier state: failures in a row by kind, until when it is ejected, and how often
/// it was.
#[derive(Debug, Default)]
pub struct HostHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Until when it is ejected ([`now_ms`] time; 0: never ejected).
    ejected_until: AtomicU64,
    /// Ejections since start (shown in `/clusters`).
    ejections: AtomicU32,
    /// The multiplier of the base ejection time for the last ejection (Envoy's ejection
    /// time backoff).
    backoff: AtomicU32,
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
            (&self.consecutive_local, &older.consecutive_local),
            (&self.ejections, &older.ejections),
            (&self.backoff, &older.backoff),
        ] {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.ejected_until.store(older.ejected_until.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// A cluster's outlier detection, read from its Envoy `outlier_detection` with Envoy's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierPolicy {
    /// Consecutive 5xx that eject (`None`: not by this rule).
    pub consecutive_5xx: Option<u32>,
    /// Consecutive gateway errors (502, 503, 504, connect failures) that eject (`None`: not by this
    /// rule).
    pub consecutive_gateway: Option<u32>,
    /// Whether the proxy's own failures (connect failures, resets) are counted apart.
    pub split_local: bool,
    /// Consecutive failures of the proxy's own that eject, when counted apart.
    pub consecutive_local: Option<u32>,
    /// First ejection's length; each ejection soon after another lasts one base longer.
    pub base_ejection: Duration,
    /// How often a healthy endpoint's ejection length steps back down by one base.
    pub interval: Duration,
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
            split_local: od.split_external_local_origin_errors,
            consecutive_local: value(od.consecutive_local_origin_failure.as_ref())
                .or(Some(5))
                .filter(|_| on(value(od.enforcing_consecutive_local_origin_failure.as_ref()), 100)),
            base_ejection: od
                .base_ejection_time
                .as_ref()
                .and_then(duration)
                .unwrap_or(Duration::from_secs(30)),
            interval: od
                .interval
                .as_ref()
                .and_then(duration)
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(10)),
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
        self.record_at(health, index, outcome, now_ms());
    }

    /// [`record`](Self::record) at time `now` ([`now_ms`]).
    pub fn record_at(&self, health: &[&HostHealth], index: usize, outcome: Outcome, now: u64) {
        let Some(host) = health.get(index) else { return };
        // What the outcome counts as: (5xx, gateway error, failure of the proxy's own), each
        // `None` when it leaves that count alone.
        let local_failure =
            matches!(outcome, Outcome::ConnectFailure | Outcome::Reset | Outcome::Refused);
        let (fivexx, gateway, local) = match outcome {
            _ if local_failure && self.split_local => (None, None, Some(true)),
            _ if local_failure => (Some(true), Some(true), None),
            Outcome::Response { status, .. } => (
                Some(status >= 500),
                Some(matches!(status, 502..=504)),
                self.split_local.then_some(false),
            ),
            _ => (None, None, None),
        };
        let bump = |counter: &AtomicU32, failed: Option<bool>| match failed {
            Some(true) => counter.fetch_add(1, Ordering::Relaxed) + 1,
            Some(false) => {
                counter.store(0, Ordering::Relaxed);
                0
            }
            None => 0,
        };
        let n5xx = bump(&host.consecutive_5xx, fivexx);
        let ngw = bump(&host.consecutive_gateway, gateway);
        let nlocal = bump(&host.consecutive_local, local);
        let reached =
            |threshold: Option<u32>, count: u32| threshold.is_some_and(|t| t > 0 && count >= t);
        let tripped = reached(self.consecutive_5xx, n5xx)
            || reached(self.consecutive_gateway, ngw)
            || (self.split_local && reached(self.consecutive_local, nlocal));
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
        let backoff = self.next_backoff(host, now);
        host.backoff.store(backoff, Ordering::Relaxed);
        let length =
            self.base_ejection.saturating_mul(backoff).min(MAX_EJECTION.max(self.base_ejection));
        host.ejected_until
            .store(now + u64::try_from(length.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        host.consecutive_5xx.store(0, Ordering::Relaxed);
        host.consecutive_gateway.store(0, Ordering::Relaxed);
        host.consecutive_local.store(0, Ordering::Relaxed);
        tracing::info!(ejection = times, ?length, "endpoint ejected by outlier detection");
    }

    /// The multiplier for a new ejection of `host` at `now`: one more than the last, less
    /// one for each whole `interval` the host has been back since, never past the one that
    /// reaches the maximum ejection time (Envoy's ejection time backoff).
    fn next_backoff(&self, host: &HostHealth, now: u64) -> u32 {
        let last = host.backoff.load(Ordering::Relaxed);
        let back_since = host.ejected_until.load(Ordering::Relaxed);
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX).max(1);
        let healthy_intervals =
            if back_since == 0 { 0 } else { now.saturating_sub(back_since) / interval };
        let decayed = u64::from(last).saturating_sub(healthy_intervals);
        let base = self.base_ejection.as_millis().max(1);
        let most =
            u64::try_from(MAX_EJECTION.as_millis().div_ceil(base)).unwrap_or(u64::MAX).max(1);
        u32::try_from((decayed + 1).min(most)).unwrap_or(u32::MAX)
    }
}
