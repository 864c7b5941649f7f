//! The merge of the scopes and the HCM fields, as istiod computes them.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::sync::Arc;

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLogFilter, access_log_filter};
use envoy_types::pb::envoy::config::trace::v3::OpenTelemetryConfig;
use envoy_types::pb::envoy::config::trace::v3::tracing::http::ConfigType;
use envoy_types::pb::envoy::r#type::tracing::v3::custom_tag;
use mesh_api::mesh::MeshConfig;
use mesh_api::telemetry::filter::parse;
use prost::Message;

use super::*;

/// The objects of `yaml` (Services, Telemetries) as the local source builds them, with `mesh`.
fn build(yaml: &str, mesh: &str) -> Snapshot {
    let mut report = mesh_api::load::load_str("t.yaml", yaml);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    crate::source::local::in_default_namespace(&mut report.objects);
    let objects: Vec<_> = report.objects.into_iter().map(Arc::new).collect();
    let (mut snapshot, rejected) = crate::source::local::build(&objects);
    assert!(rejected.is_empty(), "{rejected:?}");
    snapshot.mesh_config = Arc::new(MeshConfig::from_yaml("mesh.yaml", mesh).unwrap());
    snapshot.root_namespace.clone_from(&snapshot.mesh_config.root_namespace);
    snapshot
}

fn proxy(namespace: &str, app: &str) -> Proxy {
    Proxy {
        namespace: namespace.to_owned(),
        labels: [("app".to_owned(), app.to_owned())].into(),
        ..Proxy::default()
    }
}

fn telemetry(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}---\n"
    )
}

const COLLECTOR: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: otel-collector, namespace: observability}\nspec:\n  clusterIP: 10.96.9.9\n  ports: [{name: grpc-otlp, port: 4317}, {name: http-otlp, port: 4318}]\n---\n";

const PROVIDERS: &str = r#"extensionProviders:
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317}
- name: other
  opentelemetry: {service: observability/otel-collector.observability.svc.cluster.local, port: 4318, maxTagLength: 99}
- name: http
  opentelemetry:
    service: otel-collector.observability
    port: 4318
    http: {path: v1/traces, headers: [{name: x-token, value: t}]}
- name: missing
  opentelemetry: {service: nowhere.example.com, port: 4317}
- name: stderr
  envoyFileAccessLog: {path: /dev/stderr, logFormat: {text: "%RESPONSE_CODE%"}}
"#;

fn names(applicable: Applicable<'_>) -> Vec<&str> {
    applicable.levels().map(|t| t.metadata.name.as_deref().unwrap()).collect()
}

#[test]
fn scopes_are_root_namespace_then_namespace_then_the_oldest_selecting_one() {
    let yaml = [
        telemetry("mesh-system", "mesh", "  tracing: [{}]\n"),
        telemetry("mesh-system", "root-selector", "  selector: {matchLabels: {app: reviews}}\n"),
        telemetry("demo", "ns", "  tracing: [{}]\n"),
        telemetry("demo", "b-reviews", "  selector: {matchLabels: {app: reviews}}\n"),
        telemetry("demo", "a-reviews", "  selector: {matchLabels: {app: reviews}}\n"),
        telemetry("other", "other-ns", "  tracing: [{}]\n"),
    ]
    .concat();
    let snapshot = build(&yaml, "");
    // No creation times (files): by name, so a-reviews is the one of the two.
    assert_eq!(
        names(applicable(&snapshot, &proxy("demo", "reviews"))),
        ["mesh", "ns", "a-reviews"]
    );
    assert_eq!(names(applicable(&snapshot, &proxy("demo", "ratings"))), ["mesh", "ns"]);
    // A selector in the root namespace selects workloads of that namespace only.
    assert_eq!(
        names(applicable(&snapshot, &proxy("mesh-system", "reviews"))),
        ["mesh", "root-selector"]
    );
    assert_eq!(names(applicable(&snapshot, &proxy("shop", "x"))), ["mesh"]);
}

#[test]
fn the_oldest_of_two_selecting_telemetries_applies() {
    let mut snapshot = build(
        &[
            telemetry("demo", "a", "  selector: {matchLabels: {app: reviews}}\n"),
            telemetry("demo", "b", "  selector: {matchLabels: {app: reviews}}\n"),
        ]
        .concat(),
        "",
    );
    let stamp = |t: &mut mesh_api::telemetry::Telemetry, time: &str| {
        t.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(time.parse().unwrap()));
    };
    stamp(&mut snapshot.telemetries[0], "2025-03-01T00:00:00Z");
    stamp(&mut snapshot.telemetries[1], "2025-01-01T00:00:00Z");
    sort(&mut snapshot.telemetries);
    assert_eq!(names(applicable(&snapshot, &proxy("demo", "reviews"))), ["b"]);
}

#[test]
fn gateway_targets_select_the_gateways_pods() {
    let snapshot = build(
        &telemetry(
            "web",
            "gw",
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: public}]\n",
        ),
        "",
    );
    let mut gateway = proxy("web", "x");
    assert_eq!(names(applicable(&snapshot, &gateway)), Vec::<&str>::new());
    gateway.labels.insert(GATEWAY_NAME_LABEL.into(), "public".into());
    assert_eq!(names(applicable(&snapshot, &gateway)), ["gw"]);
}

fn provider_name(spec: &TracingSpec<'_>) -> Option<String> {
    spec.provider.as_ref().map(|p| p.name.clone())
}

#[test]
fn tracing_merges_provider_sampling_and_reporting_by_side() {
    let yaml = [
        telemetry("mesh-system", "mesh", "  tracing: [{randomSamplingPercentage: 10}]\n"),
        telemetry(
            "demo",
            "ns",
            "  tracing:\n  - match: {mode: SERVER}\n    providers: [{name: other}]\n  - match: {mode: CLIENT}\n    disableSpanReporting: true\n",
        ),
        telemetry(
            "demo",
            "reviews",
            "  selector: {matchLabels: {app: reviews}}\n  tracing:\n  - disableSpanReporting: false\n    customTags: {team: {literal: {value: shop}}}\n",
        ),
    ]
    .concat();
    let mesh = format!("{PROVIDERS}defaultProviders: {{tracing: [otel]}}\n");
    let snapshot = build(&yaml, &mesh);
    let ratings = tracing(&snapshot, &proxy("demo", "ratings")).unwrap();
    assert_eq!(provider_name(&ratings.client).as_deref(), Some("otel"));
    assert!(ratings.client.disabled, "the namespace turned client spans off");
    assert_eq!(provider_name(&ratings.server).as_deref(), Some("other"));
    assert!(!ratings.server.disabled);
    assert_eq!(ratings.server.random_sampling_percentage, Some(10.0), "the mesh's, inherited");
    let reviews = tracing(&snapshot, &proxy("demo", "reviews")).unwrap();
    assert!(!reviews.client.disabled, "the workload turned them on again");
    assert_eq!(reviews.client.custom_tags.map(|t| t.len()), Some(1));
    // Without a Telemetry or a default provider, the older settings apply.
    assert_eq!(tracing(&build(COLLECTOR, ""), &proxy("demo", "x")), None);
}

#[test]
fn an_unknown_provider_disables_tracing() {
    let snapshot =
        build(&telemetry("demo", "t", "  tracing: [{providers: [{name: zipkin}]}]\n"), PROVIDERS);
    let config = tracing(&snapshot, &proxy("demo", "x")).unwrap();
    assert!(config.client.disabled && config.server.disabled);
    assert_eq!(envoy_tracing(&snapshot, &proxy("demo", "x"), Class::SidecarOutbound), None);
}

fn otel(tracing: &HcmTracing) -> OpenTelemetryConfig {
    let provider = tracing.provider.as_ref().unwrap();
    assert_eq!(provider.name, OPENTELEMETRY_TRACER);
    let Some(ConfigType::TypedConfig(any)) = &provider.config_type else { panic!("typed") };
    OpenTelemetryConfig::decode(any.value.as_slice()).unwrap()
}

fn tags(tracing: &HcmTracing) -> Vec<(String, String)> {
    tracing
        .custom_tags
        .iter()
        .map(|t| {
            let value = match t.r#type.as_ref().unwrap() {
                custom_tag::Type::Literal(l) => l.value.clone(),
                custom_tag::Type::Environment(e) => format!("env:{}:{}", e.name, e.default_value),
                custom_tag::Type::RequestHeader(h) => {
                    format!("header:{}:{}", h.name, h.default_value)
                }
                other => format!("{other:?}"),
            };
            (t.tag.clone(), value)
        })
        .collect()
}

#[test]
fn the_hcm_gets_the_opentelemetry_tracer_of_the_collectors_cluster() {
    let yaml = [
        COLLECTOR,
        &telemetry(
            "demo",
            "t",
            "  tracing:\n  - providers: [{name: otel}]\n    randomSamplingPercentage: 25\n    customTags:\n      team: {literal: {value: shop}}\n      user: {header: {name: x-user, defaultValue: anon}}\n      node: {environment: {name: NODE}}\n",
        ),
    ]
    .concat();
    let snapshot =
        build(&yaml, &format!("{PROVIDERS}defaultConfig: {{tracing: {{sampling: 3}}}}\n"));
    let mut reviews = proxy("demo", "reviews");
    reviews.labels.insert("service.istio.io/canonical-revision".into(), "v2".into());
    let tracing = envoy_tracing(&snapshot, &reviews, Class::SidecarOutbound).unwrap();
    let config = otel(&tracing);
    assert_eq!(config.service_name, "reviews.demo");
    let Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc)) =
        config.grpc_service.and_then(|g| g.target_specifier)
    else {
        panic!("envoy_grpc")
    };
    assert_eq!(grpc.cluster_name, "outbound|4317||otel-collector.observability.svc.cluster.local");
    assert_eq!(grpc.authority, "otel-collector.observability.svc.cluster.local");
    assert_eq!(tracing.random_sampling.as_ref().map(|p| p.value), Some(25.0), "the Telemetry's");
    assert_eq!(tracing.client_sampling.as_ref().map(|p| p.value), Some(100.0));
    assert_eq!(tracing.overall_sampling.as_ref().map(|p| p.value), Some(100.0));
    assert_eq!(tracing.spawn_upstream_span, None, "sidecars do not, as Istio");
    assert_eq!(
        tags(&tracing),
        [
            ("istio.canonical_revision", "v2"),
            ("istio.canonical_service", "unknown"),
            ("istio.mesh_id", "cluster.local"),
            ("istio.namespace", "demo"),
            ("node", "env:NODE:"),
            ("team", "shop"),
            ("user", "header:x-user:anon"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    // Inbound too (both sides), and a gateway starts a child span for its upstream call.
    assert!(envoy_tracing(&snapshot, &reviews, Class::SidecarInbound).is_some());
    let gateway = Proxy { router: true, ..reviews.clone() };
    let tracing = envoy_tracing(&snapshot, &gateway, Class::Gateway).unwrap();
    assert_eq!(tracing.spawn_upstream_span.map(|b| b.value), Some(true));
}

#[test]
fn sampling_comes_from_the_telemetry_then_the_proxy_config_then_the_mesh() {
    let yaml = [COLLECTOR, &telemetry("demo", "t", "  tracing: [{}]\n")].concat();
    let random = |mesh: &str| {
        let snapshot = build(&yaml, &format!("{PROVIDERS}{mesh}"));
        let tracing = envoy_tracing(&snapshot, &proxy("demo", "a"), Class::SidecarInbound);
        tracing.and_then(|t| t.random_sampling).map(|p| p.value)
    };
    // The Telemetry names no provider and there is no default: nothing to report to.
    assert_eq!(random(""), None);
    let default = "defaultProviders: {tracing: [otel]}\n";
    assert_eq!(random(default), Some(1.0), "the mesh's tracing.samplingPercentage default");
    assert_eq!(random(&format!("{default}tracing: {{samplingPercentage: 7}}\n")), Some(7.0));
    assert_eq!(
        random(&format!(
            "{default}tracing: {{samplingPercentage: 7}}\ndefaultConfig: {{tracing: {{sampling: 40}}}}\n"
        )),
        Some(40.0)
    );
}

#[test]
fn the_older_otlp_endpoint_is_the_default_provider() {
    let snapshot = build(
        COLLECTOR,
        "tracing: {otlpEndpoint: otel-collector.observability:4317, samplingPercentage: 100}\n",
    );
    let tracing = envoy_tracing(&snapshot, &proxy("demo", "a"), Class::SidecarOutbound).unwrap();
    assert_eq!(tracing.random_sampling.map(|p| p.value), Some(100.0));
    let Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc)) =
        otel(&tracing).grpc_service.and_then(|g| g.target_specifier)
    else {
        panic!("envoy_grpc")
    };
    assert_eq!(grpc.cluster_name, "outbound|4317||otel-collector.observability.svc.cluster.local");
}

#[test]
fn otlp_over_http_and_collectors_that_are_not_there() {
    let yaml =
        [COLLECTOR, &telemetry("demo", "t", "  tracing: [{providers: [{name: http}]}]\n")].concat();
    let snapshot_http = build(&yaml, PROVIDERS);
    let tracing =
        envoy_tracing(&snapshot_http, &proxy("demo", "a"), Class::SidecarOutbound).unwrap();
    let http = otel(&tracing).http_service.unwrap();
    let uri = http.http_uri.unwrap();
    assert_eq!(uri.uri, "otel-collector.observability.svc.cluster.local/v1/traces");
    assert_eq!(uri.timeout.map(|t| t.seconds), Some(3));
    assert_eq!(http.request_headers_to_add[0].header.as_ref().unwrap().key, "x-token");
    // The provider's port must be one the service has, and the service must be known.
    let yaml =
        [COLLECTOR, &telemetry("demo", "t", "  tracing: [{providers: [{name: missing}]}]\n")]
            .concat();
    let missing = build(&yaml, PROVIDERS);
    assert_eq!(envoy_tracing(&missing, &proxy("demo", "a"), Class::SidecarOutbound), None);
    assert_eq!(
        lookup_port(&snapshot_http, "otel-collector.observability.svc.cluster.local", 9999),
        None
    );
    assert_eq!(
        lookup_port(&snapshot_http, "other/otel-collector.observability.svc.cluster.local", 4317),
        None,
        "a namespace that is not the service's"
    );
}

fn lookup_port(snapshot: &Snapshot, service: &str, port: u32) -> Option<String> {
    trace::lookup_cluster(snapshot, service, port).map(|(_, cluster)| cluster)
}

#[test]
fn enable_tracing_alone_traces_without_a_provider() {
    let snapshot = build(
        "",
        "enableTracing: true\ndefaultConfig: {tracing: {sampling: 5, maxPathTagLength: 64, customTags: {a: {literal: {value: b}}}}}\n",
    );
    let tracing = envoy_tracing(&snapshot, &proxy("demo", "x"), Class::SidecarInbound).unwrap();
    assert_eq!(tracing.provider, None);
    assert_eq!(tracing.random_sampling.map(|p| p.value), Some(5.0));
    assert_eq!(tracing.max_path_tag_length.map(|l| l.value), Some(64));
    assert!(tags(&tracing).contains(&("a".to_owned(), "b".to_owned())));
    assert_eq!(
        envoy_tracing(&build(COLLECTOR, ""), &proxy("demo", "x"), Class::SidecarInbound),
        None
    );
}

fn logged(snapshot: &Snapshot, proxy: &Proxy, class: Class) -> Vec<(String, bool)> {
    access_logging(snapshot, proxy, class)
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.provider.name.clone(), s.disabled))
        .collect()
}

#[test]
fn access_logging_merges_providers_and_disabling_by_scope_and_side() {
    let yaml = [
        telemetry("mesh-system", "mesh", "  accessLogging: [{providers: [{name: envoy}]}]\n"),
        telemetry("demo", "ns", "  accessLogging: [{disabled: true}]\n"),
        telemetry(
            "demo",
            "reviews",
            "  selector: {matchLabels: {app: reviews}}\n  accessLogging:\n  - match: {mode: SERVER}\n    disabled: false\n",
        ),
    ]
    .concat();
    let snapshot = build(&yaml, PROVIDERS);
    let on = vec![("envoy".to_owned(), false)];
    let off = vec![("envoy".to_owned(), true)];
    assert_eq!(logged(&snapshot, &proxy("shop", "x"), Class::SidecarInbound), on);
    assert_eq!(logged(&snapshot, &proxy("demo", "x"), Class::SidecarInbound), off);
    assert_eq!(logged(&snapshot, &proxy("demo", "reviews"), Class::SidecarInbound), on);
    assert_eq!(logged(&snapshot, &proxy("demo", "reviews"), Class::SidecarOutbound), off);
    // Disabled: no logger, and no fallback to the mesh config's accessLogFile.
    assert!(envoy_access_logs(&snapshot, &proxy("demo", "x"), Class::SidecarInbound).is_empty());
    assert_eq!(envoy_access_logs(&snapshot, &proxy("shop", "x"), Class::SidecarInbound).len(), 1);
}

#[test]
fn a_narrower_rule_replaces_the_providers() {
    let yaml = [
        telemetry("demo", "ns", "  accessLogging: [{providers: [{name: envoy}]}]\n"),
        telemetry(
            "demo",
            "w",
            "  selector: {matchLabels: {app: w}}\n  accessLogging:\n  - providers: [{name: stderr}]\n    filter: {expression: 'response.code >= 500'}\n",
        ),
    ]
    .concat();
    let snapshot =
        build(&yaml, &format!("{PROVIDERS}defaultProviders: {{accessLogging: [envoy]}}\n"));
    let specs = access_logging(&snapshot, &proxy("demo", "w"), Class::SidecarInbound).unwrap();
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].provider.name, "stderr");
    assert_eq!(specs[0].filter.map(|f| f.expression.as_str()), Some("response.code >= 500"));
    // Defaults alone log everywhere.
    assert_eq!(
        logged(&snapshot, &proxy("shop", "x"), Class::SidecarOutbound),
        [("envoy".to_owned(), false)]
    );
}

#[test]
fn access_logs_without_telemetry_follow_the_mesh_configs_access_log_file() {
    let snapshot = build("", "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n");
    assert_eq!(access_logging(&snapshot, &proxy("demo", "x"), Class::SidecarInbound), None);
    let logs = envoy_access_logs(&snapshot, &proxy("demo", "x"), Class::SidecarInbound);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].name, "envoy.access_loggers.file");
    assert!(
        envoy_access_logs(&build("", ""), &proxy("demo", "x"), Class::SidecarInbound).is_empty()
    );
}

#[test]
fn json_formats_encode_the_same_way_every_time() {
    let mesh = "extensionProviders:\n- name: j\n  envoyFileAccessLog: {logFormat: {labels: {z: '%A%', a: '%B%', m: {n: '%C%', b: 1}}}}\n";
    let yaml = telemetry("demo", "t", "  accessLogging: [{providers: [{name: j}]}]\n");
    let snapshot = build(&yaml, mesh);
    let bytes: Vec<Vec<u8>> = (0..5)
        .map(|_| {
            let logs = envoy_access_logs(&snapshot, &proxy("demo", "x"), Class::SidecarInbound);
            let Some(access_log::ConfigType::TypedConfig(any)) = &logs[0].config_type else {
                panic!()
            };
            any.value.clone()
        })
        .collect();
    assert!(bytes.windows(2).all(|w| w[0] == w[1]));
    use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
    use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
        FileAccessLog, file_access_log::AccessLogFormat,
    };
    let file = FileAccessLog::decode(bytes[0].as_slice()).unwrap();
    assert_eq!(file.path, "/dev/stdout");
    let Some(AccessLogFormat::LogFormat(format)) = file.access_log_format else { panic!() };
    let Some(Format::JsonFormat(json)) = format.format else { panic!() };
    let mut keys: Vec<&String> = json.fields.keys().collect();
    keys.sort();
    assert_eq!(keys, ["a", "m", "z"]);
}

use envoy_types::pb::envoy::config::accesslog::v3::access_log;
use envoy_types::pb::envoy::config::core::v3::grpc_service;

fn compiled(expression: &str) -> AccessLogFilter {
    compile_filter(&parse(expression).unwrap())
}

/// A compact form of a compiled filter: `status>=500`, `header(x==y)`, `and(...)`.
fn show(filter: &AccessLogFilter) -> String {
    use access_log_filter::FilterSpecifier as F;
    let op = |op: i32| match op {
        0 => "==",
        1 => ">=",
        2 => "<=",
        3 => "!=",
        _ => "?",
    };
    let cmp = |c: &Option<envoy_types::pb::envoy::config::accesslog::v3::ComparisonFilter>| {
        let c = c.as_ref().unwrap();
        let value = c.value.as_ref().unwrap();
        assert!(!value.runtime_key.is_empty(), "Envoy requires a runtime key");
        format!("{}{}", op(c.op), value.default_value)
    };
    match filter.filter_specifier.as_ref().unwrap() {
        F::StatusCodeFilter(f) => format!("status{}", cmp(&f.comparison)),
        F::DurationFilter(f) => format!("duration{}", cmp(&f.comparison)),
        F::HeaderFilter(f) => {
            let h = f.header.as_ref().unwrap();
            let test = match h.header_match_specifier.as_ref().unwrap() {
                header_matcher::HeaderMatchSpecifier::PresentMatch(true) => "present".to_owned(),
                header_matcher::HeaderMatchSpecifier::StringMatch(m) => {
                    format!("=={:?}", m.match_pattern.as_ref().unwrap())
                }
                other => format!("{other:?}"),
            };
            format!("{}header({} {test})", if h.invert_match { "!" } else { "" }, h.name)
        }
        F::AndFilter(f) => {
            format!("and({})", f.filters.iter().map(show).collect::<Vec<_>>().join(", "))
        }
        F::OrFilter(f) => {
            format!("or({})", f.filters.iter().map(show).collect::<Vec<_>>().join(", "))
        }
        other => format!("{other:?}"),
    }
}

use envoy_types::pb::envoy::config::route::v3::header_matcher;

#[test]
fn filter_expressions_become_envoys_native_filters() {
    for (expression, expected) in [
        ("response.code >= 400", "status>=400"),
        ("response.code > 499", "status>=500"),
        ("response.code < 400", "status<=399"),
        ("response.code <= 204", "status<=204"),
        ("response.code == 503", "status==503"),
        ("response.code != 200", "status!=200"),
        ("response.duration > duration('1s')", "duration>=1001"),
        ("response.duration <= duration('250ms')", "duration<=250"),
        ("request.headers['x-debug'] == 'on'", "header(x-debug ==Exact(\"on\"))"),
        ("request.headers['x-debug'] != 'on'", "!header(x-debug ==Exact(\"on\"))"),
        ("has(request.headers.authorization)", "header(authorization present)"),
        ("!has(request.headers.authorization)", "!header(authorization present)"),
        (
            "response.code >= 500 || response.duration > duration('2s') && 'x-canary' in request.headers",
            "or(status>=500, and(duration>=2001, header(x-canary present)))",
        ),
    ] {
        assert_eq!(show(&compiled(expression)), expected, "{expression}");
    }
}

#[test]
fn the_filter_applies_to_the_logger_of_its_providers() {
    let yaml = telemetry(
        "demo",
        "t",
        "  accessLogging:\n  - providers: [{name: envoy}]\n    filter: {expression: 'response.code >= 400'}\n",
    );
    let snapshot = build(&yaml, "");
    let logs = envoy_access_logs(&snapshot, &proxy("demo", "x"), Class::SidecarOutbound);
    assert_eq!(logs.len(), 1);
    assert_eq!(show(logs[0].filter.as_ref().unwrap()), "status>=400");
}

#[test]
fn tcp_proxies_log_as_the_connection_managers_do_and_listeners_log_what_no_chain_takes() {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
    let services = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: demo}\nspec:\n  clusterIP: 10.96.0.7\n  ports: [{name: tcp-db, port: 5432}]\n---\n";
    let tcp_logs = |snapshot: &Snapshot| -> Vec<(String, usize)> {
        let listeners = crate::translate::listener::listeners(snapshot, &proxy("demo", "x"));
        listeners
            .iter()
            .flat_map(|l| l.filter_chains.iter().chain(&l.default_filter_chain))
            .flat_map(|c| &c.filters)
            .filter(|f| f.name == "envoy.filters.network.tcp_proxy")
            .map(|f| {
                let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else { panic!() };
                let proxy = TcpProxy::decode(any.value.as_slice()).unwrap();
                (proxy.stat_prefix, proxy.access_log.len())
            })
            .collect()
    };
    use envoy_types::pb::envoy::config::listener::v3::filter;

    let logged = build(services, "accessLogFile: /dev/stdout\n");
    let tcp = tcp_logs(&logged);
    assert!(tcp.iter().any(|(name, _)| name == "outbound|5432||db.demo.svc.cluster.local"));
    assert!(tcp.iter().any(|(name, _)| name == "PassthroughCluster"));
    assert!(tcp.iter().all(|(_, loggers)| *loggers == 1), "{tcp:?}");
    for listener in crate::translate::listener::listeners(&logged, &proxy("demo", "x")) {
        assert_eq!(listener.access_log.len(), 1, "{}", listener.name);
        let flags = match &listener.access_log[0].filter {
            Some(AccessLogFilter {
                filter_specifier: Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(f)),
            }) => f.flags.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(flags, ["NR"], "only the connections no chain takes");
    }

    // No logger anywhere: nothing is logged.
    let quiet = build(services, "");
    assert!(tcp_logs(&quiet).iter().all(|(_, loggers)| *loggers == 0));
    let listeners = crate::translate::listener::listeners(&quiet, &proxy("demo", "x"));
    assert!(listeners.iter().all(|l| l.access_log.is_empty()));
}
