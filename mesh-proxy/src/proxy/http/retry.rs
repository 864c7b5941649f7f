//! Retries as a pure decision: after each attempt, from the route's retry policy, how the
//! attempt ended and whether the request can be sent again, whether to try again and after
//! what backoff, or stop (and whether the retries ran out, Envoy's `URX`). No I/O here:
//! [`super::send`] drives it, and holds the cluster's retry budget while it waits.

use std::net::SocketAddr;
use std::time::Duration;

use crate::policy::{Outcome, Retry};

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Try again after this backoff (if the cluster's retry budget has room).
    Retry {
        /// The wait before the next attempt.
        after: Duration,
    },
    /// Stop: the last attempt's result is the answer.
    Done {
        /// The outcome was one the policy retries, but no attempt remained (Envoy's `URX`).
        retries_exhausted: bool,
    },
}

/// The attempts of one request under a route's retry policy (none: one attempt).
pub(super) struct Retries<'a> {
    policy: Option<&'a Retry>,
    /// Attempts started so far.
    attempts: u32,
    /// Endpoints tried, kept only when the policy asks for another host each time.
    tried: Vec<SocketAddr>,
    /// A uniform random number, for the backoff's jitter.
    draw: fn() -> u64,
}

impl<'a> Retries<'a> {
    /// Attempts under `policy`; `draw` gives the backoff's randomness.
    pub(super) fn new(policy: Option<&'a Retry>, draw: fn() -> u64) -> Self {
        Self { policy, attempts: 0, tried: Vec::new(), draw }
    }

    /// Whether the next attempt should look for another endpoint than `address`: the policy
    /// asks for a host not tried yet (`previous_hosts`), and `address` was tried.
    pub(super) fn avoids(&self, address: SocketAddr) -> bool {
        self.tried.contains(&address)
    }

    /// Notes an attempt starting, to `address`.
    pub(super) fn start(&mut self, address: SocketAddr) {
        self.attempts += 1;
        if self.policy.is_some_and(|r| r.other_host) {
            self.tried.push(address);
        }
    }

    /// Attempts started so far.
    pub(super) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How long each attempt may take.
    pub(super) fn per_try_timeout(&self) -> Option<Duration> {
        self.policy.and_then(|r| r.per_try_timeout)
    }

    /// What follows an attempt that ended as `outcome`; `replayable`: the request can be
    /// sent again (its body was kept).
    pub(super) fn on_outcome(&mut self, outcome: Outcome, replayable: bool) -> Next {
        let Some(policy) = self.policy else { return Next::Done { retries_exhausted: false } };
        let retriable = policy.retriable(outcome);
        let attempts_left = self.attempts <= policy.retries;
        if retriable && attempts_left && replayable {
            Next::Retry { after: Retry::backoff(self.attempts, (self.draw)()) }
        } else {
            Next::Done { retries_exhausted: retriable && !attempts_left }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &str, retries: u32) -> Retry {
        Retry { retries, on: vec![on.to_owned()], ..Retry::default() }
    }

    fn status(status: u16) -> Outcome {
        Outcome::Response { status, grpc: None }
    }

    /// The largest draw: each backoff is the top of its window.
    fn top() -> u64 {
        u64::MAX
    }

    /// Runs attempts that all end as `outcome`, until the machine stops; returns what it said
    /// after each.
    fn run(retries: &mut Retries<'_>, outcome: Outcome, replayable: bool) -> Vec<Next> {
        let mut said = Vec::new();
        loop {
            retries.start(([10, 0, 0, 1], 80).into());
            let next = retries.on_outcome(outcome, replayable);
            said.push(next);
            if matches!(next, Next::Done { .. }) || said.len() > 10 {
                return said;
            }
        }
    }

    #[test]
    fn retriable_outcomes_are_retried_until_the_retries_run_out() {
        let policy = policy("5xx", 2);
        let mut retries = Retries::new(Some(&policy), top);
        let said = run(&mut retries, status(503), true);
        let millis = |ms| Next::Retry { after: Duration::from_millis(ms) };
        // Full jitter over 25 ms, then 50 ms (the draw's remainder in each window).
        let expected =
            [millis(u64::MAX % 25), millis(u64::MAX % 50), Next::Done { retries_exhausted: true }];
        assert_eq!(said, expected, "two retries, then URX");
        assert_eq!(retries.attempts(), 3);
    }

    #[test]
    fn a_success_or_an_outcome_not_retried_ends_at_once() {
        let policy = policy("gateway-error", 3);
        let mut retries = Retries::new(Some(&policy), top);
        retries.start(([10, 0, 0, 1], 80).into());
        assert_eq!(retries.on_outcome(status(200), true), Next::Done { retries_exhausted: false });
        let said = run(&mut Retries::new(Some(&policy), top), status(500), true);
        assert_eq!(said, [Next::Done { retries_exhausted: false }], "500 is no gateway error");
        let said = run(&mut Retries::new(None, top), Outcome::Reset, true);
        assert_eq!(said, [Next::Done { retries_exhausted: false }], "no policy, no retry");
    }

    #[test]
    fn a_streamed_body_is_not_retried_and_is_no_exhaustion() {
        let twice = policy("reset", 2);
        let said = run(&mut Retries::new(Some(&twice), top), Outcome::Reset, false);
        assert_eq!(said, [Next::Done { retries_exhausted: false }]);
        // With no retry configured at all, a retriable outcome is exhausted on the first try.
        let none = policy("reset", 0);
        let said = run(&mut Retries::new(Some(&none), top), Outcome::Reset, false);
        assert_eq!(said, [Next::Done { retries_exhausted: true }]);
    }

    #[test]
    fn previous_hosts_are_avoided_only_when_the_policy_asks() {
        let (a, b) = (([10, 0, 0, 1], 80).into(), ([10, 0, 0, 2], 80).into());
        let plain = policy("5xx", 2);
        let mut retries = Retries::new(Some(&plain), top);
        retries.start(a);
        assert!(!retries.avoids(a), "any host will do");

        let other = Retry { other_host: true, ..policy("5xx", 2) };
        let mut retries = Retries::new(Some(&other), top);
        retries.start(a);
        assert!(retries.avoids(a) && !retries.avoids(b));
        assert_eq!(retries.per_try_timeout(), None);
    }

    #[test]
    fn backoff_stays_within_a_doubling_window() {
        let policy = policy("5xx", 9);
        let mut retries = Retries::new(Some(&policy), top);
        let said = run(&mut retries, Outcome::ConnectFailure, true);
        for (n, next) in said.iter().enumerate() {
            let window = (25u64 << n).min(250);
            match next {
                Next::Retry { after } => assert!(*after < Duration::from_millis(window)),
                Next::Done { retries_exhausted } => assert!(retries_exhausted),
            }
        }
        assert_eq!(said.len(), 10, "nine retries, then done");
    }
}
