//! Whether a hop records a request's trace.

use super::{Incoming, X_CLIENT_TRACE_ID};
use http::HeaderMap;

/// Sampling resolution: one in a million, finer than the 0.01 % Istio's percentages are
/// written in.
const RESOLUTION: u64 = 1_000_000;

/// Why a request is, or is not, sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// B3 debug (`b3: d`, `x-b3-flags: 1`): always sampled.
    Debug,
    /// The caller decided (the `traceparent` flag, `x-b3-sampled`, `b3`'s state): kept, either
    /// way.
    Caller,
    /// The client asked for a trace with `x-client-trace-id` (Envoy's forced tracing).
    ClientTraceId,
    /// The random percentage.
    Random,
}

/// A sampling decision and its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the hop records its span and tells the next hop to record.
    pub sampled: bool,
    /// Why.
    pub reason: Reason,
}

/// Decides whether a request is sampled, in this order: B3 debug forces it; else the caller's
/// own decision is kept (sampled or not: a hop never splits a trace its caller decided on);
/// else `x-client-trace-id` in `headers` forces it; else it is sampled with probability
/// `percentage` (0 to 100, clamped), `random` being a uniformly random number (see
/// [`random_u64`](super::random_u64)).
pub fn decide(incoming: &Incoming, headers: &HeaderMap, percentage: f64, random: u64) -> Decision {
    if incoming.debug {
        return Decision { sampled: true, reason: Reason::Debug };
    }
    if let Some(sampled) = incoming.sampled {
        return Decision { sampled, reason: Reason::Caller };
    }
    if headers.contains_key(X_CLIENT_TRACE_ID) {
        return Decision { sampled: true, reason: Reason::ClientTraceId };
    }
    Decision { sampled: sampled_at(percentage, random), reason: Reason::Random }
}

/// Whether `random` falls within `percentage` of the range: 0 never, 100 always.
fn sampled_at(percentage: f64, random: u64) -> bool {
    if percentage.is_nan() {
        return false;
    }
    // Clamped to 0..=100 first, so the cast cannot overflow or go negative.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let threshold = (percentage.clamp(0.0, 100.0) / 100.0 * RESOLUTION as f64).round() as u64;
    random % RESOLUTION < threshold
}
