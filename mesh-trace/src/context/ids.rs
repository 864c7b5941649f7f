//! Trace and span ids: their hex forms as the headers and OTLP's JSON write them, and new random
//! ones made cheaply on any thread (a per-thread generator, no lock, no system call per id).

use std::cell::Cell;
use std::hash::{BuildHasher as _, Hasher as _};

/// A 128-bit trace id, as W3C Trace Context and OTLP carry it (big-endian bytes).
pub type TraceId = [u8; 16];

/// A 64-bit span id (big-endian bytes).
pub type SpanId = [u8; 8];

/// Writes `bytes` as lowercase hex, two characters a byte.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Reads exactly `2 * N` lowercase hex characters (the headers' specifications allow no other
/// case and no other length).
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Reads a trace id of 32 hex characters, or of 16 as 64-bit B3 ids are, padded on the left
/// with zeros as Envoy does. An all-zero id is invalid.
pub fn trace_id_from_hex(text: &str) -> Option<TraceId> {
    let id = match text.len() {
        32 => from_hex::<16>(text)?,
        16 => {
            let low = from_hex::<8>(text)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        _ => return None,
    };
    (id != [0; 16]).then_some(id)
}

/// Reads a span id of 16 hex characters. An all-zero id is invalid.
pub fn span_id_from_hex(text: &str) -> Option<SpanId> {
    from_hex::<8>(text).filter(|id| *id != [0; 8])
}

/// A trace id in B3's form: 16 characters when its high half is zero (a 64-bit id, as Envoy
/// writes it back), else 32.
pub(crate) fn push_b3_trace_id(out: &mut String, id: &TraceId) {
    if id[..8] == [0; 8] {
        push_hex(out, &id[8..]);
    } else {
        push_hex(out, id);
    }
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A seed differing per thread and per process: std's `RandomState` keys are random per
/// process and distinct per call; the time guards against a platform where they are not.
fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.finish()
}

/// A uniformly distributed random number from this thread's generator (SplitMix64: fast and
/// good enough for ids and sampling, not for secrets).
pub fn random_u64() -> u64 {
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn nonzero(value: u64) -> u64 {
    if value == 0 { 1 } else { value }
}

/// A new random trace id (never all zero).
pub fn new_trace_id() -> TraceId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&random_u64().to_be_bytes());
    id[8..].copy_from_slice(&nonzero(random_u64()).to_be_bytes());
    id
}

/// A new random span id (never all zero).
pub fn new_span_id() -> SpanId {
    nonzero(random_u64()).to_be_bytes()
}

/// The ids a hop uses when it makes its span: a new span id always, and a new trace id when
/// the request joined no trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewIds {
    /// The trace id, used only when the request carried none.
    pub trace_id: TraceId,
    /// The id of the hop's own span.
    pub span_id: SpanId,
}

impl NewIds {
    /// Random ids from this thread's generator.
    pub fn random() -> Self {
        Self { trace_id: new_trace_id(), span_id: new_span_id() }
    }
}
