//! Trace context on the wire: which trace and span a request belongs to, read from and written
//! to its headers in the formats the mesh speaks, and whether this hop records it.
//!
//! Formats: W3C Trace Context (`traceparent`, `tracestate`), B3 single (`b3`) and B3 multi
//! (`x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`). A hop
//! reads them with [`extract`], decides with [`decide`], makes its own context with
//! [`Incoming::child`] and writes it upstream with [`inject`] in the formats it received plus
//! W3C always:
//!
//! ```
//! use mesh_trace::context::{self, NewIds};
//! let mut headers = http::HeaderMap::new();
//! headers.insert("x-b3-traceid", "463ac35c9f6413ad".parse().unwrap());
//! headers.insert("x-b3-spanid", "a2fb4a1d1a96d312".parse().unwrap());
//! headers.insert("x-b3-sampled", "1".parse().unwrap());
//!
//! let incoming = context::extract(&headers);
//! let decision = context::decide(&incoming, &headers, 1.0, context::random_u64());
//! let ctx = incoming.child(decision.sampled, NewIds::random());
//! context::inject(&mut headers, &ctx, incoming.formats);
//!
//! assert!(ctx.sampled == Some(true));
//! assert_eq!(headers["x-b3-traceid"], "463ac35c9f6413ad");
//! assert_eq!(headers["x-b3-parentspanid"], "a2fb4a1d1a96d312");
//! assert!(headers["traceparent"].to_str().unwrap().starts_with("00-0000000000000000463ac35c9f6413ad-"));
//! ```
//!
//! Everything here is pure (no I/O, no clock); the only state is the per-thread id generator.

mod ids;
mod sampling;
#[cfg(test)]
mod tests;

pub use ids::{
    NewIds, SpanId, TraceId, from_hex, new_span_id, new_trace_id, random_u64, span_id_from_hex,
    to_hex, trace_id_from_hex,
};
pub use sampling::{Decision, Reason, decide};

use http::{HeaderMap, HeaderValue, header::HeaderName};

/// W3C's `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// W3C's `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// B3's single header.
pub const B3: HeaderName = HeaderName::from_static("b3");
/// B3 multi: the trace id.
pub const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// B3 multi: the caller's span id.
pub const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// B3 multi: the caller's parent span id.
pub const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// B3 multi: the sampling decision (`1` or `0`).
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// B3 multi: `1` is debug (forced sampling).
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
/// Envoy's header by which a client asks for its request to be traced.
pub const X_CLIENT_TRACE_ID: HeaderName = HeaderName::from_static("x-client-trace-id");

/// W3C allows at most 32 members in `tracestate`.
const TRACESTATE_MAX_MEMBERS: usize = 32;

/// A set of the header formats a request carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Formats(u8);

impl Formats {
    /// No format.
    pub const NONE: Self = Self(0);
    /// W3C Trace Context (`traceparent`, `tracestate`).
    pub const W3C: Self = Self(1);
    /// B3's single `b3` header.
    pub const B3_SINGLE: Self = Self(2);
    /// B3's `x-b3-*` headers.
    pub const B3_MULTI: Self = Self(4);

    /// Whether every format of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Both sets together.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl std::ops::BitOr for Formats {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl std::ops::BitOrAssign for Formats {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

/// Where a request is in a trace: the trace, the span that sent it (or, once a hop has made
/// its own with [`Incoming::child`], that hop's span), and what was decided about recording it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace. 64-bit B3 ids are held with a zero high half.
    pub trace_id: TraceId,
    /// The span.
    pub span_id: SpanId,
    /// The span's parent, when known (B3 carries it; a hop's own span has the caller's).
    pub parent_span_id: Option<SpanId>,
    /// Whether the trace is recorded: `None` leaves the decision to the next hop (B3 only).
    pub sampled: Option<bool>,
    /// B3's debug flag: recorded whatever any sampler says.
    pub debug: bool,
    /// W3C `tracestate`, passed on as it came (several headers joined with `,`), when valid.
    pub tracestate: Option<String>,
}

/// What a request's headers said about its trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The caller's context, when a format carried valid ids. W3C wins over B3 single, which
    /// wins over B3 multi, when several did.
    pub parent: Option<TraceContext>,
    /// The formats whose headers were present (valid or not): those a hop writes upstream.
    pub formats: Formats,
    /// The caller's sampling decision, also when it came without ids (`b3: 0`, or
    /// `x-b3-sampled` alone).
    pub sampled: Option<bool>,
    /// B3 debug (`b3: d` or `x-b3-flags: 1`): the caller forces sampling.
    pub debug: bool,
}

impl Incoming {
    /// The context of this hop's own span: a child of the caller's span in its trace (keeping
    /// its `tracestate`), or the root of a new trace from `new`.
    pub fn child(&self, sampled: bool, new: NewIds) -> TraceContext {
        match &self.parent {
            Some(parent) => TraceContext {
                trace_id: parent.trace_id,
                span_id: new.span_id,
                parent_span_id: Some(parent.span_id),
                sampled: Some(sampled),
                debug: self.debug,
                tracestate: parent.tracestate.clone(),
            },
            None => TraceContext {
                trace_id: new.trace_id,
                span_id: new.span_id,
                parent_span_id: None,
                sampled: Some(sampled),
                debug: self.debug,
                tracestate: None,
            },
        }
    }
}

/// The one value of a header that may appear once; none when absent, repeated or not text.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok().map(str::trim)
}

/// Reads `traceparent` (W3C Trace Context level 1): `version-traceid-parentid-flags`, lowercase
/// hex. Version `ff` is invalid; a higher version than `00` is read by its first four fields
/// (the spec's forward compatibility), `00` must be exactly 55 characters.
pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = from_hex::<1>(value.get(0..2)?)?[0];
    if version == 0xff || (version == 0 && bytes.len() != 55) {
        return None;
    }
    if bytes.len() > 55 && bytes[55] != b'-' {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let trace_id = from_hex::<16>(value.get(3..35)?).filter(|id| *id != [0; 16])?;
    let span_id = span_id_from_hex(value.get(36..52)?)?;
    let flags = from_hex::<1>(value.get(53..55)?)?[0];
    Some(TraceContext {
        trace_id,
        span_id,
        parent_span_id: None,
        sampled: Some(flags & 0x01 == 0x01),
        debug: false,
        tracestate: None,
    })
}

/// Checks W3C `tracestate` (all its headers joined): at most 32 `key=value` members, keys and
/// values as the spec allows. Returns it with empty members dropped, or `None` when any member
/// is invalid (the spec lets a hop discard the whole header then).
pub fn parse_tracestate(value: &str) -> Option<String> {
    let mut members = Vec::new();
    for member in value.split(',').map(|m| m.trim_matches([' ', '\t'])) {
        if member.is_empty() {
            continue;
        }
        let (key, val) = member.split_once('=')?;
        if !valid_tracestate_key(key) || !valid_tracestate_value(val) {
            return None;
        }
        members.push(member);
    }
    if members.is_empty() || members.len() > TRACESTATE_MAX_MEMBERS {
        return None;
    }
    Some(members.join(","))
}

fn valid_tracestate_key(key: &str) -> bool {
    let allowed = |c: u8| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/');
    let (tenant, system) = match key.split_once('@') {
        Some((tenant, system)) => (tenant, Some(system)),
        None => (key, None),
    };
    match system {
        // A multi-tenant key: tenant up to 241 characters starting with a letter or digit,
        // system up to 14 starting with a letter.
        Some(system) => {
            let tenant_ok = tenant.len() <= 241
                && tenant
                    .bytes()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && tenant.bytes().all(allowed);
            let system_ok = system.len() <= 14
                && system.bytes().next().is_some_and(|c| c.is_ascii_lowercase())
                && system.bytes().all(allowed);
            tenant_ok && system_ok
        }
        None => {
            key.len() <= 256
                && key.bytes().next().is_some_and(|c| c.is_ascii_lowercase())
                && key.bytes().all(allowed)
        }
    }
}

fn valid_tracestate_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && !value.ends_with(' ')
        && value.bytes().all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

/// A B3 sampling state: `1` accept, `0` deny, `d` debug.
fn b3_state(text: &str) -> Option<(bool, bool)> {
    match text {
        "1" => Some((true, false)),
        "0" => Some((false, false)),
        "d" => Some((true, true)),
        _ => None,
    }
}

/// What a `b3` single header said: ids (when it had them), the sampling state and debug.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct B3Single {
    /// The context, when the header carried ids.
    pub context: Option<TraceContext>,
    /// The sampling state, when present.
    pub sampled: Option<bool>,
    /// `d`: debug.
    pub debug: bool,
}

/// Reads B3's single header: `{traceid}-{spanid}[-{state}[-{parentspanid}]]` or a state alone
/// (`0`, `1`, `d`). Trace ids of 16 or 32 lowercase hex characters, span ids of 16; an all-zero
/// id makes the header invalid.
pub fn parse_b3_single(value: &str) -> Option<B3Single> {
    if let Some((sampled, debug)) = b3_state(value) {
        return Some(B3Single { context: None, sampled: Some(sampled), debug });
    }
    let mut fields = value.split('-');
    let trace_id = trace_id_from_hex(fields.next()?)?;
    let span_id = span_id_from_hex(fields.next()?)?;
    let (sampled, debug) = match fields.next() {
        Some(state) => {
            let (sampled, debug) = b3_state(state)?;
            (Some(sampled), debug)
        }
        None => (None, false),
    };
    let parent_span_id = match fields.next() {
        Some(parent) => Some(span_id_from_hex(parent)?),
        None => None,
    };
    if fields.next().is_some() {
        return None;
    }
    let context =
        TraceContext { trace_id, span_id, parent_span_id, sampled, debug, tracestate: None };
    Some(B3Single { context: Some(context), sampled, debug })
}

/// `x-b3-sampled`: `1` or `0`, and `true`/`false` as older tracers (and Envoy) accept.
fn b3_sampled(value: &str) -> Option<bool> {
    match value {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// Reads what a request's headers say about its trace.
pub fn extract(headers: &HeaderMap) -> Incoming {
    let mut incoming = Incoming::default();

    let has_w3c = headers.contains_key(TRACEPARENT);
    let has_single = headers.contains_key(B3);
    let has_multi = [&X_B3_TRACEID, &X_B3_SPANID, &X_B3_PARENTSPANID, &X_B3_SAMPLED, &X_B3_FLAGS]
        .into_iter()
        .any(|name| headers.contains_key(name));
    for (present, format) in
        [(has_w3c, Formats::W3C), (has_single, Formats::B3_SINGLE), (has_multi, Formats::B3_MULTI)]
    {
        if present {
            incoming.formats |= format;
        }
    }

    // B3 multi first, so the formats read later (and preferred) overwrite it.
    if has_multi {
        let sampled = single(headers, &X_B3_SAMPLED).and_then(b3_sampled);
        let debug = single(headers, &X_B3_FLAGS) == Some("1");
        incoming.sampled = sampled;
        incoming.debug |= debug;
        let trace_id = single(headers, &X_B3_TRACEID).and_then(trace_id_from_hex);
        let span_id = single(headers, &X_B3_SPANID).and_then(span_id_from_hex);
        let parent_span_id = single(headers, &X_B3_PARENTSPANID).and_then(span_id_from_hex);
        if let (Some(trace_id), Some(span_id)) = (trace_id, span_id) {
            incoming.parent = Some(TraceContext {
                trace_id,
                span_id,
                parent_span_id,
                sampled,
                debug,
                tracestate: None,
            });
        }
    }
    if has_single && let Some(b3) = single(headers, &B3).and_then(parse_b3_single) {
        incoming.debug |= b3.debug;
        incoming.sampled = b3.sampled.or(incoming.sampled);
        if b3.context.is_some() {
            incoming.parent = b3.context;
        }
    }
    if has_w3c && let Some(mut ctx) = single(headers, &TRACEPARENT).and_then(parse_traceparent) {
        let states: Vec<&str> =
            headers.get_all(TRACESTATE).iter().filter_map(|v| v.to_str().ok()).collect();
        if !states.is_empty() {
            ctx.tracestate = parse_tracestate(&states.join(","));
        }
        ctx.debug = incoming.debug;
        incoming.sampled = ctx.sampled;
        incoming.parent = Some(ctx);
    }
    if let Some(parent) = &mut incoming.parent {
        parent.debug = incoming.debug;
    }
    incoming
}

fn header_value(text: String) -> Option<HeaderValue> {
    HeaderValue::try_from(text).ok()
}

/// Writes `ctx` into `headers` in W3C (always) and in the B3 formats of `formats`, replacing
/// whatever trace headers were there (so a stale format cannot contradict the new span).
pub fn inject(headers: &mut HeaderMap, ctx: &TraceContext, formats: Formats) {
    for name in [
        TRACEPARENT,
        TRACESTATE,
        B3,
        X_B3_TRACEID,
        X_B3_SPANID,
        X_B3_PARENTSPANID,
        X_B3_SAMPLED,
        X_B3_FLAGS,
    ] {
        headers.remove(name);
    }
    let sampled = ctx.sampled.unwrap_or(false) || ctx.debug;

    let mut traceparent = String::with_capacity(55);
    traceparent.push_str("00-");
    ids::push_hex(&mut traceparent, &ctx.trace_id);
    traceparent.push('-');
    ids::push_hex(&mut traceparent, &ctx.span_id);
    traceparent.push_str(if sampled { "-01" } else { "-00" });
    if let Some(value) = header_value(traceparent) {
        headers.insert(TRACEPARENT, value);
    }
    if let Some(value) = ctx.tracestate.clone().and_then(header_value) {
        headers.insert(TRACESTATE, value);
    }

    let state = match (ctx.debug, ctx.sampled) {
        (true, _) => Some("d"),
        (false, Some(true)) => Some("1"),
        (false, Some(false)) => Some("0"),
        (false, None) => None,
    };
    if formats.contains(Formats::B3_SINGLE) {
        let mut b3 = String::with_capacity(68);
        ids::push_b3_trace_id(&mut b3, &ctx.trace_id);
        b3.push('-');
        ids::push_hex(&mut b3, &ctx.span_id);
        // The parent may only follow a sampling state.
        if let Some(state) = state {
            b3.push('-');
            b3.push_str(state);
            if let Some(parent) = &ctx.parent_span_id {
                b3.push('-');
                ids::push_hex(&mut b3, parent);
            }
        }
        if let Some(value) = header_value(b3) {
            headers.insert(B3, value);
        }
    }
    if formats.contains(Formats::B3_MULTI) {
        let mut trace_id = String::with_capacity(32);
        ids::push_b3_trace_id(&mut trace_id, &ctx.trace_id);
        let multi = [
            (X_B3_TRACEID, Some(trace_id)),
            (X_B3_SPANID, Some(to_hex(&ctx.span_id))),
            (X_B3_PARENTSPANID, ctx.parent_span_id.map(|p| to_hex(&p))),
            // Debug implies accept: B3 says not to send both.
            (X_B3_FLAGS, ctx.debug.then(|| "1".to_owned())),
            (
                X_B3_SAMPLED,
                if ctx.debug {
                    None
                } else {
                    ctx.sampled.map(|s| if s { "1" } else { "0" }.to_owned())
                },
            ),
        ];
        for (name, value) in multi {
            if let Some(value) = value.and_then(header_value) {
                headers.insert(name, value);
            }
        }
    }
}
