//! Outlier detection as Envoy counts it: the proxy's own failures (connect failures, resets)
//! counted with the upstream's 5xx, or apart when `split_external_local_origin_errors` is
//! set; ejection time growing with ejections close together and shrinking again by one base
//! per healthy interval. Pure: times are given, not waited for.

use std::time::Duration;

use mesh_proxy::outlier::{HostHealth, OutlierPolicy};
use mesh_proxy::policy::Outcome;

const FAILED: Outcome = Outcome::ConnectFailure;
const S503: Outcome = Outcome::Response { status: 503, grpc: None };
const S200: Outcome = Outcome::Response { status: 200, grpc: None };

fn policy(split_local: bool) -> OutlierPolicy {
    OutlierPolicy {
        consecutive_5xx: Some(3),
        consecutive_gateway: None,
        split_local,
        consecutive_local: Some(2),
        base_ejection: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        max_percent: 100,
        panic_percent: 0.0,
    }
}

/// Feeds `outcomes` for the first of two hosts at `now`; whether it ends up ejected.
fn ejected_after(policy: &OutlierPolicy, outcomes: &[Outcome]) -> bool {
    let (a, b) = (HostHealth::default(), HostHealth::default());
    for outcome in outcomes {
        policy.record_at(&[&a, &b], 0, *outcome, 1_000);
    }
    a.is_ejected(1_000)
}

#[test]
fn local_failures_count_as_5xx_unless_split() {
    let mixed = policy(false);
    assert!(ejected_after(&mixed, &[FAILED, FAILED, FAILED]), "three failures count as 5xx");
    assert!(ejected_after(&mixed, &[FAILED, S503, FAILED]), "and add up with 503s");
    assert!(!ejected_after(&mixed, &[FAILED, FAILED, S200]), "a 200 starts the count again");

    let split = policy(true);
    assert!(ejected_after(&split, &[FAILED, FAILED]), "two local failures eject when split");
    assert!(!ejected_after(&split, &[FAILED, S503, FAILED]), "a response is a local success");
    assert!(!ejected_after(&split, &[S503, FAILED, S503]), "local failures are not 5xx");
    assert!(ejected_after(&split, &[S503, FAILED, S503, S503]), "5xx still count by themselves");
}

#[test]
fn ejections_grow_when_close_together_and_shrink_with_health() {
    let policy = policy(false);
    let (a, b) = (HostHealth::default(), HostHealth::default());
    let fail_at = |now: u64| {
        for _ in 0..3 {
            policy.record_at(&[&a, &b], 0, S503, now);
        }
    };
    fail_at(1_000);
    assert!(a.is_ejected(1_999) && !a.is_ejected(2_000), "the first ejection lasts one base");
    fail_at(2_500);
    assert!(a.is_ejected(4_499) && !a.is_ejected(4_500), "soon after: two bases");
    fail_at(4_600);
    assert!(a.is_ejected(7_599) && !a.is_ejected(7_600), "soon after again: three");
    // Back at 7.6 s; three healthy intervals take it down three steps, to the first length.
    fail_at(10_700);
    assert!(a.is_ejected(11_699) && !a.is_ejected(11_700), "after health: one base again");
    assert_eq!(a.ejections(), 4);
}
