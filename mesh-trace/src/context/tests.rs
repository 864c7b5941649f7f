use super::*;
use pretty_assertions::assert_eq;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn hex16(text: &str) -> TraceId {
    trace_id_from_hex(text).unwrap()
}

fn hex8(text: &str) -> SpanId {
    span_id_from_hex(text).unwrap()
}

fn value<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
    map.get(name).map(|v| v.to_str().unwrap())
}

const W3C_SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// --- W3C traceparent (the spec's examples and its rules for invalid values) ---

#[test]
fn the_w3c_example_is_read_with_its_ids_and_flag() {
    let ctx = parse_traceparent(W3C_SAMPLED).unwrap();
    assert_eq!(to_hex(&ctx.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(to_hex(&ctx.span_id), "00f067aa0ba902b7");
    assert_eq!(ctx.sampled, Some(true));
    let ctx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    assert_eq!(ctx.sampled, Some(false));
}

#[test]
fn only_the_sampled_bit_of_the_flags_counts() {
    let ctx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09").unwrap();
    assert_eq!(ctx.sampled, Some(true));
    let ctx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-08").unwrap();
    assert_eq!(ctx.sampled, Some(false));
}

#[test]
fn invalid_traceparents_are_rejected() {
    for bad in [
        // version ff is forbidden
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        // all-zero trace id, all-zero parent id
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        // uppercase hex
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
        // version 00 with anything after the flags
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
        // too short, wrong separators, non-hex
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        // a higher version whose extra part does not start with a dash
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "",
    ] {
        assert_eq!(parse_traceparent(bad), None, "{bad}");
    }
}

#[test]
fn a_higher_version_is_read_by_its_first_four_fields() {
    let ctx = parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")
        .unwrap();
    assert_eq!(to_hex(&ctx.span_id), "00f067aa0ba902b7");
    assert_eq!(ctx.sampled, Some(true));
    assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").is_some());
}

#[test]
fn two_traceparent_headers_make_neither_valid() {
    let map = headers(&[
        ("traceparent", W3C_SAMPLED),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ]);
    let incoming = extract(&map);
    assert_eq!(incoming.parent, None);
    assert_eq!(incoming.formats, Formats::W3C);
}

// --- W3C tracestate ---

#[test]
fn tracestate_is_kept_and_its_headers_joined() {
    let map = headers(&[
        ("traceparent", W3C_SAMPLED),
        ("tracestate", "rojo=00f067aa0ba902b7"),
        ("tracestate", "congo=t61rcWkgMzE, ,"),
    ]);
    let ctx = extract(&map).parent.unwrap();
    assert_eq!(ctx.tracestate.as_deref(), Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
}

#[test]
fn tracestate_keys_and_values_follow_the_spec() {
    assert_eq!(parse_tracestate("tenant1@vendor=x").as_deref(), Some("tenant1@vendor=x"));
    assert_eq!(parse_tracestate("1tenant@vendor=x").as_deref(), Some("1tenant@vendor=x"));
    assert_eq!(parse_tracestate("a*b/c_d-e=x y").as_deref(), Some("a*b/c_d-e=x y"));
    for bad in
        ["Rojo=1", "1rojo=1", "rojo", "rojo=", "rojo=a=b", "t@1vendor=x", "@v=x", "rojo=x,y", ""]
    {
        assert_eq!(parse_tracestate(bad), None, "{bad:?}");
    }
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    assert_eq!(parse_tracestate(&many.join(",")), None);
    assert!(parse_tracestate(&many[..32].join(",")).is_some());
}

#[test]
fn an_invalid_tracestate_is_dropped_but_the_traceparent_kept() {
    let map = headers(&[("traceparent", W3C_SAMPLED), ("tracestate", "Bad Key=1")]);
    let ctx = extract(&map).parent.unwrap();
    assert_eq!(ctx.tracestate, None);
    assert_eq!(to_hex(&ctx.span_id), "00f067aa0ba902b7");
}

// --- B3 single ---

#[test]
fn b3_single_in_every_form_of_the_spec() {
    let full =
        parse_b3_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
            .unwrap();
    let ctx = full.context.unwrap();
    assert_eq!(to_hex(&ctx.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(to_hex(&ctx.span_id), "e457b5a2e4d86bd1");
    assert_eq!(ctx.parent_span_id, Some(hex8("05e3ac9a4f6e3b90")));
    assert_eq!((ctx.sampled, ctx.debug), (Some(true), false));

    let deferred = parse_b3_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1").unwrap();
    assert_eq!(deferred.sampled, None);
    assert_eq!(deferred.context.unwrap().parent_span_id, None);

    let debug = parse_b3_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d").unwrap();
    assert!(debug.debug);

    assert_eq!(
        parse_b3_single("0"),
        Some(B3Single { context: None, sampled: Some(false), debug: false })
    );
    assert_eq!(
        parse_b3_single("1"),
        Some(B3Single { context: None, sampled: Some(true), debug: false })
    );
    assert_eq!(
        parse_b3_single("d"),
        Some(B3Single { context: None, sampled: Some(true), debug: true })
    );
}

#[test]
fn a_64_bit_b3_trace_id_is_padded_on_the_left_as_envoy_does() {
    let ctx = parse_b3_single("463ac35c9f6413ad-a2fb4a1d1a96d312-1").unwrap().context.unwrap();
    assert_eq!(to_hex(&ctx.trace_id), "0000000000000000463ac35c9f6413ad");
}

#[test]
fn invalid_b3_single_headers_are_rejected() {
    for bad in [
        "2",
        "true",
        "80f198ee56343ba864fe8b2a57d3eff7",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
        // a parent needs a sampling state before it
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-05e3ac9a4f6e3b90",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-1",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1--05e3ac9a4f6e3b90",
        "00000000000000000000000000000000-e457b5a2e4d86bd1-1",
        "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
        "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1",
        // 24 characters is neither a 64- nor a 128-bit id
        "80f198ee56343ba864fe8b2a-e457b5a2e4d86bd1-1",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd-1",
        "",
    ] {
        assert_eq!(parse_b3_single(bad), None, "{bad:?}");
    }
}

// --- B3 multi ---

#[test]
fn b3_multi_is_read_with_its_parent_and_decision() {
    let map = headers(&[
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
    ]);
    let incoming = extract(&map);
    assert_eq!(incoming.formats, Formats::B3_MULTI);
    assert_eq!(
        incoming.parent,
        Some(TraceContext {
            trace_id: hex16("80f198ee56343ba864fe8b2a57d3eff7"),
            span_id: hex8("e457b5a2e4d86bd1"),
            parent_span_id: Some(hex8("05e3ac9a4f6e3b90")),
            sampled: Some(true),
            debug: false,
            tracestate: None,
        })
    );
    assert_eq!(incoming.sampled, Some(true));
}

#[test]
fn b3_multi_edge_cases() {
    // A decision alone: no ids, but the decision and the format count.
    let incoming = extract(&headers(&[("x-b3-sampled", "0")]));
    assert_eq!((incoming.parent, incoming.sampled), (None, Some(false)));
    assert_eq!(incoming.formats, Formats::B3_MULTI);
    // A trace id without a span id is no context.
    let incoming = extract(&headers(&[("x-b3-traceid", "463ac35c9f6413ad")]));
    assert_eq!(incoming.parent, None);
    // `true`/`false`, as older tracers and Envoy accept.
    let incoming = extract(&headers(&[("x-b3-sampled", "true")]));
    assert_eq!(incoming.sampled, Some(true));
    // An unknown decision is no decision; an invalid parent is dropped, the ids kept.
    let incoming = extract(&headers(&[
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-parentspanid", "zz"),
        ("x-b3-sampled", "yes"),
    ]));
    let parent = incoming.parent.unwrap();
    assert_eq!((parent.parent_span_id, parent.sampled, incoming.sampled), (None, None, None));
    assert_eq!(to_hex(&parent.trace_id), "0000000000000000463ac35c9f6413ad");
    // Flags 1 is debug; other flags are not.
    assert!(extract(&headers(&[("x-b3-flags", "1")])).debug);
    assert!(!extract(&headers(&[("x-b3-flags", "0")])).debug);
}

// --- several formats at once ---

#[test]
fn w3c_wins_over_b3_and_every_present_format_is_reported() {
    let map = headers(&[
        ("traceparent", W3C_SAMPLED),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ]);
    let incoming = extract(&map);
    assert_eq!(incoming.formats, Formats::W3C | Formats::B3_SINGLE | Formats::B3_MULTI);
    let parent = incoming.parent.unwrap();
    assert_eq!(to_hex(&parent.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(incoming.sampled, Some(true));
}

#[test]
fn b3_single_wins_over_b3_multi_and_an_invalid_w3c_falls_back_to_b3() {
    let map = headers(&[
        ("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-sampled", "1"),
    ]);
    let incoming = extract(&map);
    assert_eq!(to_hex(&incoming.parent.unwrap().trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(incoming.sampled, Some(false));
}

#[test]
fn no_headers_no_context() {
    assert_eq!(extract(&HeaderMap::new()), Incoming::default());
    assert!(Incoming::default().formats.is_empty());
}

// --- sampling ---

fn decided(pairs: &[(&str, &str)], percentage: f64, random: u64) -> Decision {
    let map = headers(pairs);
    decide(&extract(&map), &map, percentage, random)
}

#[test]
fn forced_flags_sample_whatever_the_percentage() {
    for forced in [
        &[("x-b3-sampled", "1")][..],
        &[("x-b3-flags", "1")],
        &[("b3", "d")],
        &[("traceparent", W3C_SAMPLED)],
        &[("x-client-trace-id", "my-request")],
    ] {
        assert!(decided(forced, 0.0, 0).sampled, "{forced:?}");
    }
    assert_eq!(decided(&[("x-b3-flags", "1")], 0.0, 0).reason, Reason::Debug);
    assert_eq!(decided(&[("x-client-trace-id", "x")], 0.0, 0).reason, Reason::ClientTraceId);
}

#[test]
fn the_callers_no_is_kept_over_the_percentage_and_the_client_trace_id() {
    for no in [
        &[("x-b3-sampled", "0")][..],
        &[("b3", "0")],
        &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")],
    ] {
        let mut pairs = no.to_vec();
        pairs.push(("x-client-trace-id", "x"));
        assert_eq!(
            decided(&pairs, 100.0, 0),
            Decision { sampled: false, reason: Reason::Caller },
            "{no:?}"
        );
    }
}

#[test]
fn debug_beats_the_callers_no() {
    let decision = decided(&[("x-b3-sampled", "0"), ("x-b3-flags", "1")], 0.0, 0);
    assert_eq!(decision, Decision { sampled: true, reason: Reason::Debug });
}

#[test]
fn a_deferred_b3_decision_goes_to_the_percentage() {
    let pairs = [("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")];
    assert_eq!(decided(&pairs, 0.0, 0), Decision { sampled: false, reason: Reason::Random });
    assert_eq!(decided(&pairs, 100.0, 0), Decision { sampled: true, reason: Reason::Random });
}

#[test]
fn the_percentage_cuts_the_random_range() {
    assert!(!decided(&[], 0.0, 0).sampled);
    assert!(decided(&[], 100.0, u64::MAX).sampled);
    assert!(decided(&[], 100.0, 999_999).sampled);
    // 1 % is 10,000 in a million.
    assert!(decided(&[], 1.0, 9_999).sampled);
    assert!(!decided(&[], 1.0, 10_000).sampled);
    assert!(decided(&[], 1.0, 3_000_000 + 5).sampled);
    // out of range is clamped; NaN never samples
    assert!(decided(&[], 250.0, 999_999).sampled);
    assert!(!decided(&[], -3.0, 0).sampled);
    assert!(!decided(&[], f64::NAN, 0).sampled);
}

#[test]
fn a_percentage_samples_about_that_share_of_random_numbers() {
    let sampled = (0..100_000).filter(|_| decided(&[], 10.0, random_u64()).sampled).count();
    assert!((9_000..11_000).contains(&sampled), "{sampled}");
}

// --- a hop's own context and injection ---

const NEW: NewIds = NewIds { trace_id: [0x11; 16], span_id: [0x22; 8] };

#[test]
fn a_child_keeps_the_trace_and_names_the_callers_span_as_parent() {
    let map = headers(&[("traceparent", W3C_SAMPLED), ("tracestate", "rojo=1")]);
    let child = extract(&map).child(true, NEW);
    assert_eq!(
        child,
        TraceContext {
            trace_id: hex16("4bf92f3577b34da6a3ce929d0e0e4736"),
            span_id: [0x22; 8],
            parent_span_id: Some(hex8("00f067aa0ba902b7")),
            sampled: Some(true),
            debug: false,
            tracestate: Some("rojo=1".to_owned()),
        }
    );
}

#[test]
fn without_a_caller_the_child_starts_a_trace() {
    let child = extract(&HeaderMap::new()).child(false, NEW);
    assert_eq!(child.trace_id, [0x11; 16]);
    assert_eq!(child.parent_span_id, None);
    assert_eq!(child.sampled, Some(false));
}

#[test]
fn injection_writes_w3c_always_and_only_the_b3_formats_received() {
    let map = headers(&[("traceparent", W3C_SAMPLED)]);
    let incoming = extract(&map);
    let mut out = headers(&[("b3", "stale"), ("x-b3-sampled", "0")]);
    inject(&mut out, &incoming.child(true, NEW), incoming.formats);
    assert_eq!(
        value(&out, "traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-2222222222222222-01")
    );
    assert_eq!(out.len(), 1, "{out:?}");

    let mut out = HeaderMap::new();
    inject(&mut out, &extract(&HeaderMap::new()).child(false, NEW), Formats::NONE);
    assert_eq!(
        value(&out, "traceparent"),
        Some("00-11111111111111111111111111111111-2222222222222222-00")
    );
}

#[test]
fn injection_in_b3_single_and_multi_keeps_a_64_bit_trace_id_64_bit() {
    let map = headers(&[
        ("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-1"),
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ]);
    let incoming = extract(&map);
    let mut out = HeaderMap::new();
    inject(&mut out, &incoming.child(true, NEW), incoming.formats);
    assert_eq!(value(&out, "b3"), Some("463ac35c9f6413ad-2222222222222222-1-a2fb4a1d1a96d312"));
    assert_eq!(value(&out, "x-b3-traceid"), Some("463ac35c9f6413ad"));
    assert_eq!(value(&out, "x-b3-spanid"), Some("2222222222222222"));
    assert_eq!(value(&out, "x-b3-parentspanid"), Some("a2fb4a1d1a96d312"));
    assert_eq!(value(&out, "x-b3-sampled"), Some("1"));
    assert_eq!(value(&out, "x-b3-flags"), None);
    assert_eq!(
        value(&out, "traceparent"),
        Some("00-0000000000000000463ac35c9f6413ad-2222222222222222-01")
    );
}

#[test]
fn injection_carries_debug_as_b3_says() {
    let map = headers(&[("b3", "d"), ("x-b3-flags", "1")]);
    let incoming = extract(&map);
    let mut out = HeaderMap::new();
    inject(&mut out, &incoming.child(true, NEW), incoming.formats);
    assert_eq!(value(&out, "b3"), Some("11111111111111111111111111111111-2222222222222222-d"));
    assert_eq!(value(&out, "x-b3-flags"), Some("1"));
    assert_eq!(value(&out, "x-b3-sampled"), None);
    assert!(value(&out, "traceparent").unwrap().ends_with("-01"));
}

#[test]
fn an_undecided_b3_context_is_written_without_state_or_parent() {
    let ctx = TraceContext {
        trace_id: [0x11; 16],
        span_id: [0x22; 8],
        parent_span_id: Some([0x33; 8]),
        sampled: None,
        debug: false,
        tracestate: None,
    };
    let mut out = HeaderMap::new();
    inject(&mut out, &ctx, Formats::B3_SINGLE | Formats::B3_MULTI);
    assert_eq!(value(&out, "b3"), Some("11111111111111111111111111111111-2222222222222222"));
    assert_eq!(value(&out, "x-b3-sampled"), None);
    assert_eq!(value(&out, "x-b3-parentspanid"), Some("3333333333333333"));
}

#[test]
fn what_is_injected_reads_back_as_the_same_context() {
    let ctx = TraceContext {
        trace_id: hex16("80f198ee56343ba864fe8b2a57d3eff7"),
        span_id: hex8("e457b5a2e4d86bd1"),
        parent_span_id: Some(hex8("05e3ac9a4f6e3b90")),
        sampled: Some(false),
        debug: false,
        tracestate: Some("congo=t61rcWkgMzE".to_owned()),
    };
    for format in [Formats::B3_SINGLE, Formats::B3_MULTI] {
        let mut out = HeaderMap::new();
        inject(&mut out, &ctx, format);
        out.remove("traceparent");
        out.remove("tracestate");
        let back = extract(&out);
        assert_eq!(back.formats, format);
        assert_eq!(back.parent, Some(TraceContext { tracestate: None, ..ctx.clone() }));
    }
    let mut out = HeaderMap::new();
    inject(&mut out, &ctx, Formats::NONE);
    let back = extract(&out).parent.unwrap();
    // W3C carries no parent of the span.
    assert_eq!(back, TraceContext { parent_span_id: None, ..ctx });
}

// --- ids ---

#[test]
fn hex_round_trips_and_rejects_other_lengths_and_cases() {
    assert_eq!(to_hex(&[0x00, 0xab, 0xff]), "00abff");
    assert_eq!(from_hex::<3>("00abff"), Some([0x00, 0xab, 0xff]));
    assert_eq!(from_hex::<3>("00ABFF"), None);
    assert_eq!(from_hex::<3>("00abf"), None);
    assert_eq!(trace_id_from_hex("0000000000000000"), None);
    assert_eq!(span_id_from_hex("0000000000000000"), None);
}

#[test]
fn new_ids_are_never_zero_and_differ() {
    let a = NewIds::random();
    let b = NewIds::random();
    assert_ne!(a, b);
    assert_ne!(a.trace_id, [0; 16]);
    assert_ne!(a.span_id, [0; 8]);
    assert_ne!(new_trace_id(), new_trace_id());
    assert_ne!(new_span_id(), new_span_id());
}

#[test]
fn formats_are_a_set() {
    let both = Formats::W3C | Formats::B3_MULTI;
    assert!(both.contains(Formats::W3C));
    assert!(both.contains(Formats::B3_MULTI));
    assert!(!both.contains(Formats::B3_SINGLE));
    assert!(both.contains(Formats::NONE));
    assert!(!both.is_empty());
}

// --- arbitrary input ---

fn pick(n: usize) -> usize {
    usize::try_from(random_u64() % u64::try_from(n).unwrap()).unwrap()
}

/// `base` with a few characters replaced by ones the headers are made of (and a few others),
/// and sometimes cut short.
fn mutated(base: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefABF-=,@ *_/d";
    let mut bytes = base.as_bytes().to_vec();
    for _ in 0..pick(4) {
        let at = pick(bytes.len());
        bytes[at] = ALPHABET[pick(ALPHABET.len())];
    }
    if pick(4) == 0 {
        bytes.truncate(pick(bytes.len() + 1));
    }
    String::from_utf8(bytes).unwrap()
}

#[test]
fn mutated_values_never_panic_and_what_parses_writes_back_the_same() {
    let mut parsed = (0, 0);
    for _ in 0..20_000 {
        let _ = parse_tracestate(&mutated("rojo=00f067aa0ba902b7,congo@t61=rcWkgMzE"));
        if let Some(ctx) = parse_traceparent(&mutated(W3C_SAMPLED)) {
            parsed.0 += 1;
            let mut out = HeaderMap::new();
            inject(&mut out, &ctx, Formats::NONE);
            let again = parse_traceparent(value(&out, "traceparent").unwrap()).unwrap();
            assert_eq!(again, TraceContext { debug: false, ..ctx });
        }
        let text = mutated("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90");
        if let Some(B3Single { context: Some(ctx), .. }) = parse_b3_single(&text) {
            parsed.1 += 1;
            let mut out = HeaderMap::new();
            inject(&mut out, &ctx, Formats::B3_SINGLE);
            let again = parse_b3_single(value(&out, "b3").unwrap()).unwrap().context.unwrap();
            assert_eq!(again, ctx, "{text:?}");
        }
    }
    // Both kinds of value were read back many times, not only refused.
    assert!(parsed.0 > 1_000 && parsed.1 > 1_000, "{parsed:?}");
}

#[test]
fn prefixes_of_valid_values_are_rejected_or_read_the_same() {
    let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90";
    for end in 0..b3.len() {
        if let Some(b3) = parse_b3_single(&b3[..end]) {
            assert!(b3.context.is_none() || end >= 49, "{end}");
        }
    }
    for end in 0..W3C_SAMPLED.len() {
        assert_eq!(parse_traceparent(&W3C_SAMPLED[..end]), None, "{end}");
    }
}
