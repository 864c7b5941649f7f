//! Envoy's response flags: why a request or connection ended as it did, as a set that prints
//! the way Envoy prints `%RESPONSE_FLAGS%` (codes in Envoy's order, comma-separated, `-` for
//! none). Istio's `response_flags` label and the access log carry them; tests compare them
//! with a real Envoy's log, so the text must match Envoy's to the letter.

use std::fmt;

/// A set of Envoy response flags. Each flag's bit is its position in Envoy's own list
/// (`CoreResponseFlag`), so printing in bit order is printing in Envoy's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

impl ResponseFlags {
    /// No flag: the request went as asked.
    pub const NONE: Self = Self(0);
    /// Every flag (a mask: never a request's flags).
    pub const ALL: Self = Self(u32::MAX);
    /// `UH`: the cluster has no healthy endpoint.
    pub const NO_HEALTHY_UPSTREAM: Self = Self(1 << 1);
    /// `UT`: the upstream did not answer in time.
    pub const UPSTREAM_REQUEST_TIMEOUT: Self = Self(1 << 2);
    /// `UR`: the upstream reset the stream (here: refused it, HTTP/2 `REFUSED_STREAM`).
    pub const UPSTREAM_REMOTE_RESET: Self = Self(1 << 4);
    /// `UF`: no connection to the upstream.
    pub const UPSTREAM_CONNECTION_FAILURE: Self = Self(1 << 5);
    /// `UC`: the upstream connection ended during the request.
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 6);
    /// `UO`: a circuit breaker of the cluster was full.
    pub const UPSTREAM_OVERFLOW: Self = Self(1 << 7);
    /// `NR`: no route (or no filter chain) for the request or connection.
    pub const NO_ROUTE_FOUND: Self = Self(1 << 8);
    /// `DI`: held by an injected delay.
    pub const DELAY_INJECTED: Self = Self(1 << 9);
    /// `FI`: aborted by an injected fault.
    pub const FAULT_INJECTED: Self = Self(1 << 10);
    /// `URX`: the outcome was retriable but the retries ran out.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self(1 << 15);
    /// `DPE`: the downstream request could not be parsed or forwarded as sent.
    pub const DOWNSTREAM_PROTOCOL_ERROR: Self = Self(1 << 18);
    /// `UPE`: the upstream response body failed mid-stream.
    pub const UPSTREAM_PROTOCOL_ERROR: Self = Self(1 << 23);
    /// `NC`: the route's cluster is not configured.
    pub const NO_CLUSTER_FOUND: Self = Self(1 << 24);

    /// Every flag with its code, in bit order (which is Envoy's order).
    const CODES: [(Self, &'static str); 13] = [
        (Self::NO_HEALTHY_UPSTREAM, "UH"),
        (Self::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (Self::UPSTREAM_REMOTE_RESET, "UR"),
        (Self::UPSTREAM_CONNECTION_FAILURE, "UF"),
        (Self::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Self::UPSTREAM_OVERFLOW, "UO"),
        (Self::NO_ROUTE_FOUND, "NR"),
        (Self::DELAY_INJECTED, "DI"),
        (Self::FAULT_INJECTED, "FI"),
        (Self::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (Self::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
        (Self::UPSTREAM_PROTOCOL_ERROR, "UPE"),
        (Self::NO_CLUSTER_FOUND, "NC"),
    ];

    /// The flag Envoy prints as `code` (`UH`), if the proxy sets it.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::CODES.iter().find(|(_, c)| *c == code).map(|(flag, _)| *flag)
    }

    /// Whether any flag of `other` is set here.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags as text, without allocating (metrics labels are looked up per request).
    pub fn text(self) -> FlagsText {
        let mut text = FlagsText { bytes: [0; FlagsText::CAPACITY], len: 0 };
        if self.is_empty() {
            text.push("-");
        }
        for (flag, code) in Self::CODES {
            if self.contains(flag) {
                if text.len > 0 {
                    text.push(",");
                }
                text.push(code);
            }
        }
        text
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, other: Self) {
        self.0 |= other.0;
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// [`ResponseFlags`] printed into a buffer on the stack.
pub struct FlagsText {
    bytes: [u8; FlagsText::CAPACITY],
    len: usize,
}

impl FlagsText {
    /// Room for every flag at once, with the commas between them.
    const CAPACITY: usize = 48;

    /// The text.
    pub fn as_str(&self) -> &str {
        let written = self.bytes.get(..self.len).unwrap_or_default();
        std::str::from_utf8(written).unwrap_or_default()
    }

    fn push(&mut self, s: &str) {
        let end = self.len + s.len();
        // Always room (checked at compile time below).
        if let Some(room) = self.bytes.get_mut(self.len..end) {
            room.copy_from_slice(s.as_bytes());
            self.len = end;
        }
    }
}

// All flags at once, comma-separated, must fit in `FlagsText`.
const _: () = {
    let mut len = 0;
    let mut i = 0;
    while i < ResponseFlags::CODES.len() {
        len += ResponseFlags::CODES[i].1.len() + 1;
        i += 1;
    }
    assert!(len <= FlagsText::CAPACITY);
};

#[cfg(test)]
mod tests {
    use super::ResponseFlags as F;

    #[test]
    fn flags_print_as_envoy_prints_them() {
        assert_eq!(F::NONE.to_string(), "-");
        assert_eq!(F::NO_ROUTE_FOUND.to_string(), "NR");
        assert_eq!(F::DOWNSTREAM_PROTOCOL_ERROR.to_string(), "DPE");
        // Envoy's order, whatever order they were set in.
        let retried = F::UPSTREAM_RETRY_LIMIT_EXCEEDED;
        assert_eq!((retried | F::UPSTREAM_CONNECTION_FAILURE).to_string(), "UF,URX");
        assert_eq!((F::UPSTREAM_REQUEST_TIMEOUT | retried).to_string(), "UT,URX");
        assert_eq!((retried | F::UPSTREAM_REMOTE_RESET).to_string(), "UR,URX");
        assert_eq!((retried | F::UPSTREAM_CONNECTION_TERMINATION).to_string(), "UC,URX");
        assert_eq!((F::FAULT_INJECTED | F::DELAY_INJECTED).to_string(), "DI,FI");
        let mut all = F::NONE;
        for (flag, _) in F::CODES {
            all |= flag;
        }
        assert_eq!(all.to_string(), "UH,UT,UR,UF,UC,UO,NR,DI,FI,URX,DPE,UPE,NC");
        assert_eq!(all.text().as_str(), all.to_string(), "the stack text is the same");
        assert_eq!(F::NONE.text().as_str(), "-");
    }

    #[test]
    fn codes_are_in_bit_order_one_bit_each() {
        for pair in F::CODES.windows(2) {
            assert!(pair[0].0.0 < pair[1].0.0, "{} before {}", pair[0].1, pair[1].1);
        }
        assert!(F::CODES.iter().all(|(flag, _)| flag.0.count_ones() == 1));
        assert!(F::UPSTREAM_OVERFLOW.contains(F::NONE));
        assert!(!F::UPSTREAM_OVERFLOW.contains(F::NO_ROUTE_FOUND));
    }
}
