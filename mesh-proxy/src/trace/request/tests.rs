use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::route::v3::{Decorator, Route, RouteMatch, route_match};
use envoy_types::pb::google::protobuf::BoolValue;
use http::header::{HeaderMap, HeaderValue};
use mesh_trace::context::{self, Incoming, Reason};
use mesh_trace::export::{AttributeValue, Kind, SpanStatus};

use super::*;
use crate::telemetry::{Entry, Protocol, Report, Reporter, ResponseFlags, Workload};
use crate::trace::config::{Collector, CustomTag, ExportSpec, TagValue, TraceConfig};

const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn config(random: f64) -> Arc<TraceConfig> {
    Arc::new(TraceConfig {
        export: Arc::new(ExportSpec {
            collector: Collector::Cluster(
                "outbound|4317||otel.mesh-system.svc.cluster.local".into(),
            ),
            service_name: "client.demo".into(),
            timeout: None,
            headers: Vec::new(),
            http_path: None,
        }),
        client_sampling: 100.0,
        random_sampling: random,
        overall_sampling: 100.0,
        max_path_tag_length: 24,
        custom_tags: vec![
            CustomTag {
                name: "istio.canonical_service".into(),
                value: TagValue::Literal("client".into()),
            },
            CustomTag {
                name: "user".into(),
                value: TagValue::Header { name: "x-user".try_into().unwrap(), default: None },
            },
            CustomTag {
                name: "tier".into(),
                value: TagValue::Header {
                    name: "x-tier".try_into().unwrap(),
                    default: Some("free".into()),
                },
            },
        ],
        spawn_upstream_span: false,
        operation: None,
        upstream_operation: None,
    })
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, HeaderValue::from_static(v));
    }
    map
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn start(config: &Arc<TraceConfig>, reporter: Reporter, incoming: &mut HeaderMap) -> RequestTrace {
    RequestTrace::start(config, incoming, reporter, epoch)
}

fn upstream(trace: &RequestTrace) -> HeaderMap {
    let mut out = HeaderMap::new();
    trace.inject(&mut out);
    out
}

fn route(prefix: &str) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn entry() -> Entry {
    Entry {
        method: "GET".into(),
        path: "/reviews/0?with=a-long-query".into(),
        authority: "reviews:9080".into(),
        protocol: Protocol::Http11,
        request_id: "6b2b4a0e-0000-4000-8000-000000000001".into(),
        user_agent: "curl/8".into(),
        downstream: "10.0.0.7:41000".into(),
        upstream_host: "10.0.0.9:9080".into(),
        upstream_cluster: "outbound|9080||reviews.demo.svc.cluster.local".into(),
        route: "default".into(),
        bytes_received: 12,
        bytes_sent: 345,
        ..Entry::default()
    }
}

fn me() -> Workload {
    Workload {
        name: "client-v1".into(),
        namespace: "demo".into(),
        canonical_service: "client".into(),
        canonical_revision: "v1".into(),
        ..Workload::default()
    }
}

fn attribute<'a>(
    span: &'a mesh_trace::export::SpanRecord,
    key: &str,
) -> Option<&'a AttributeValue> {
    span.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn text(value: &str) -> Option<AttributeValue> {
    Some(AttributeValue::from(value.to_owned()))
}

#[test]
fn a_w3c_caller_is_joined_and_the_child_goes_upstream_in_w3c_only() {
    let config = config(0.0);
    let mut incoming = headers(&[("traceparent", PARENT), ("tracestate", "vendor=1")]);
    let trace = start(&config, Reporter::Source, &mut incoming);
    assert!(trace.sampled(), "the caller's decision stands over 0 %");
    assert_eq!(trace.trace_id(), "0af7651916cd43dd8448eb211c80319c");
    let out = upstream(&trace);
    let traceparent = out["traceparent"].to_str().unwrap();
    assert!(traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "{traceparent}");
    assert!(traceparent.ends_with("-01"));
    assert!(!traceparent.contains("b7ad6b7169203331"), "this hop's own span id: {traceparent}");
    assert_eq!(out["tracestate"], "vendor=1");
    assert!(!out.contains_key("b3") && !out.contains_key("x-b3-traceid"), "{out:?}");
    assert_eq!(
        trace.context().parent_span_id.map(|p| context::to_hex(&p)).as_deref(),
        Some("b7ad6b7169203331")
    );
}

#[test]
fn b3_callers_get_their_format_back_and_w3c_too() {
    let zero = config(0.0);
    let mut multi = headers(&[
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-sampled", "1"),
    ]);
    let trace = start(&zero, Reporter::Source, &mut multi);
    let out = upstream(&trace);
    assert_eq!(out["x-b3-traceid"], "463ac35c9f6413ad");
    assert_eq!(out["x-b3-parentspanid"], "a2fb4a1d1a96d312");
    assert_eq!(out["x-b3-sampled"], "1");
    assert!(
        out["traceparent"].to_str().unwrap().starts_with("00-0000000000000000463ac35c9f6413ad-")
    );
    assert!(!out.contains_key("b3"));

    let mut single = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]);
    let trace = start(&config(100.0), Reporter::Source, &mut single);
    assert!(!trace.sampled(), "the caller said no, whatever the percentage");
    let out = upstream(&trace);
    let b3 = out["b3"].to_str().unwrap();
    assert!(
        b3.starts_with("80f198ee56343ba864fe8b2a57d3eff7-") && b3.ends_with("-0-e457b5a2e4d86bd1"),
        "{b3}"
    );
    assert!(out["traceparent"].to_str().unwrap().ends_with("-00"));
}

#[test]
fn without_a_caller_a_trace_starts_and_its_decision_goes_upstream() {
    let trace = start(&config(0.0), Reporter::Source, &mut HeaderMap::new());
    assert!(!trace.sampled());
    let out = upstream(&trace);
    assert!(out["traceparent"].to_str().unwrap().ends_with("-00"), "not sampled, said so");
    assert!(trace.finish(&ended(&entry(), &Report::default(), &me())).is_empty());

    let trace = start(&config(100.0), Reporter::Source, &mut HeaderMap::new());
    assert!(trace.sampled());
    assert!(upstream(&trace)["traceparent"].to_str().unwrap().ends_with("-01"));
    assert_eq!(trace.context().parent_span_id, None, "a root span");
}

#[test]
fn forced_sampling_is_honoured_at_zero_percent() {
    for forced in [
        headers(&[("x-b3-sampled", "1")]),
        headers(&[("x-b3-flags", "1")]),
        headers(&[("b3", "d")]),
        headers(&[("traceparent", PARENT)]),
        headers(&[("x-client-trace-id", "abc")]),
    ] {
        let mut incoming = forced.clone();
        assert!(start(&config(0.0), Reporter::Source, &mut incoming).sampled(), "{forced:?}");
    }
}

#[test]
fn client_and_overall_sampling_apply_to_the_proxys_own_decisions_only() {
    let mut quiet = (*config(0.0)).clone();
    quiet.client_sampling = 0.0;
    let forced = headers(&[("x-client-trace-id", "abc")]);
    let decision = sample(&quiet, &context::extract(&forced), &forced, [0, 0, 0]);
    assert!(!decision.sampled, "x-client-trace-id is not honoured at client_sampling 0");

    let mut none_kept = (*config(100.0)).clone();
    none_kept.overall_sampling = 0.0;
    let plain = HeaderMap::new();
    let decision = sample(&none_kept, &Incoming::default(), &plain, [0, 0, 0]);
    assert_eq!((decision.sampled, decision.reason), (false, Reason::Random));
    let caller = headers(&[("traceparent", PARENT)]);
    let decision = sample(&none_kept, &context::extract(&caller), &caller, [0, 0, 0]);
    assert!(decision.sampled, "the caller's decision is never undone");
}

#[test]
fn a_client_span_carries_envoys_and_istios_tags() {
    let mut incoming = headers(&[("traceparent", PARENT), ("x-user", "jason")]);
    let mut trace = start(&config(0.0), Reporter::Source, &mut incoming);
    trace.routed(
        &route("/"),
        "outbound|9080||reviews.demo.svc.cluster.local",
        "reviews:9080",
        9080,
    );
    let out = upstream(&trace);
    assert_eq!(
        out[DECORATOR_OPERATION], "reviews.demo.svc.cluster.local:9080/*",
        "named for the server"
    );

    let mut report =
        Report { status: 503, flags: ResponseFlags::NO_HEALTHY_UPSTREAM, ..Report::default() };
    report.destination = Arc::new(Workload {
        principal: "spiffe://cluster.local/ns/demo/sa/reviews".into(),
        ..Workload::default()
    });
    let spans = trace.finish(&ended(&entry(), &report, &me()));
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span.name, "reviews.demo.svc.cluster.local:9080/*");
    assert_eq!(span.kind, Kind::Client);
    assert_eq!(
        span.parent_span_id.map(|p| context::to_hex(&p)).as_deref(),
        Some("b7ad6b7169203331")
    );
    assert_eq!(span.start, epoch());
    assert_eq!(span.end, epoch() + Duration::from_millis(30));
    assert_eq!(span.status, SpanStatus::Error("503 (UH)".into()));
    let expect = [
        ("node_id", text("sidecar~10.0.0.7~client-v1-1.demo~demo.svc.cluster.local")),
        ("guid:x-request-id", text("6b2b4a0e-0000-4000-8000-000000000001")),
        ("http.url", text("http://reviews:9080/revi")),
        ("http.method", text("GET")),
        ("http.protocol", text("HTTP/1.1")),
        ("user_agent", text("curl/8")),
        ("peer.address", text("10.0.0.7")),
        ("upstream_cluster", text("outbound|9080||reviews.demo.svc.cluster.local")),
        ("upstream_address", text("10.0.0.9:9080")),
        ("route_name", text("default")),
        ("response_flags", text("UH")),
        ("peer.principal", text("spiffe://cluster.local/ns/demo/sa/reviews")),
        ("istio.workload", text("client-v1")),
        ("request_size", Some(AttributeValue::Int(12))),
        ("response_size", Some(AttributeValue::Int(345))),
        ("http.status_code", Some(AttributeValue::Int(503))),
        ("error", text("true")),
        ("istio.canonical_service", text("client")),
        ("user", text("jason")),
        ("tier", text("free")),
        ("istio.canonical_revision", text("v1")),
        ("istio.namespace", text("demo")),
    ];
    for (key, value) in expect {
        assert_eq!(attribute(span, key), value.as_ref(), "{key}");
    }
    let services = span.attributes.iter().filter(|(k, _)| k == "istio.canonical_service").count();
    assert_eq!(services, 1, "the connection manager's tag wins over the label");
}

#[test]
fn the_server_span_takes_the_callers_name_and_is_the_child_of_its_span() {
    let config = config(0.0);
    let mut client_side = headers(&[("traceparent", PARENT)]);
    let mut client = start(&config, Reporter::Source, &mut client_side);
    client.routed(
        &route("/"),
        "outbound|9080||reviews.demo.svc.cluster.local",
        "reviews:9080",
        9080,
    );
    let mut at_server = upstream(&client);
    let mut server = start(&config, Reporter::Destination, &mut at_server);
    assert!(!at_server.contains_key(DECORATOR_OPERATION), "not passed to the app");
    server.routed(&route("/"), "inbound|9080||", "reviews:9080", 9080);
    assert!(!upstream(&server).contains_key(DECORATOR_OPERATION), "inbound names nothing upstream");
    let spans =
        server.finish(&ended(&entry(), &Report { status: 200, ..Report::default() }, &me()));
    let span = &spans[0];
    assert_eq!(span.kind, Kind::Server);
    assert_eq!(span.name, "reviews.demo.svc.cluster.local:9080/*");
    assert_eq!(span.parent_span_id, Some(client.context().span_id));
    assert_eq!(span.trace_id, client.context().trace_id);
    assert_eq!(span.status, SpanStatus::Unset);
    assert_eq!(attribute(span, "error"), None);
}

#[test]
fn names_come_from_the_manager_then_the_decorator_then_istios_rule() {
    let mut exact = route("/");
    exact.r#match.as_mut().unwrap().path_specifier =
        Some(route_match::PathSpecifier::Path("/productpage".into()));
    let name = |config: &Arc<TraceConfig>, route: &Route, cluster: &str| {
        let mut trace = start(config, Reporter::Source, &mut headers(&[("x-b3-sampled", "1")]));
        trace.routed(route, cluster, "bookinfo.example.com", 80);
        let out = upstream(&trace);
        (
            trace.finish(&ended(&entry(), &Report::default(), &me()))[0].name.to_string(),
            out.get(DECORATOR_OPERATION).cloned(),
        )
    };
    let plain = config(0.0);
    assert_eq!(
        name(&plain, &exact, "outbound|9080||productpage.demo.svc.cluster.local").0,
        "productpage.demo.svc.cluster.local:9080/productpage"
    );
    assert_eq!(
        name(&plain, &route("/api"), "PassthroughCluster").0,
        "bookinfo.example.com:80/api*"
    );
    let mut decorated = route("/");
    decorated.decorator = Some(Decorator {
        operation: "checkout".into(),
        propagate: Some(BoolValue { value: false }),
    });
    assert_eq!(name(&plain, &decorated, "c"), ("checkout".to_owned(), None), "not propagated");
    let mut fixed = (*plain).clone();
    fixed.operation = Some("fixed".into());
    assert_eq!(name(&Arc::new(fixed), &decorated, "c").0, "fixed");
}

#[test]
fn a_gateway_spawns_a_client_span_for_the_upstream_call() {
    let mut gateway = (*config(100.0)).clone();
    gateway.spawn_upstream_span = true;
    let trace = start(&Arc::new(gateway), Reporter::Source, &mut HeaderMap::new());
    let out = upstream(&trace);
    let spans = trace.finish(&ended(&entry(), &Report { status: 200, ..Report::default() }, &me()));
    assert_eq!(spans.len(), 2);
    let (server, client) = (&spans[0], &spans[1]);
    assert_eq!((server.kind, client.kind), (Kind::Server, Kind::Client));
    assert_eq!(client.parent_span_id, Some(server.span_id));
    assert_eq!(client.name, "router outbound|9080||reviews.demo.svc.cluster.local egress");
    let injected = out["traceparent"].to_str().unwrap();
    assert!(
        injected.contains(&context::to_hex(&client.span_id)),
        "the upstream's parent is the client span"
    );
}

fn ended<'a>(entry: &'a Entry, report: &'a Report, me: &'a Workload) -> Ended<'a> {
    Ended {
        entry,
        report,
        elapsed: Duration::from_millis(30),
        me,
        node_id: "sidecar~10.0.0.7~client-v1-1.demo~demo.svc.cluster.local",
    }
}
