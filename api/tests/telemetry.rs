//! Telemetry (`telemetry.istio.io/v1`) and the mesh config's providers: what loads, what
//! validation says (field path and reason), and how providers are found.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use mesh_api::Resource;
use mesh_api::load;
use mesh_api::mesh::{IMPLICIT_TRACING_PROVIDER, MeshConfig, MeshConfigError};

fn telemetry(spec: &str) -> Vec<(String, String)> {
    let yaml = format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: t\n  namespace: shop\nspec:\n{spec}"
    );
    let objects =
        load::load_str("t.yaml", &yaml).into_result().unwrap_or_else(|e| panic!("{}", e[0]));
    let [loaded] = objects.as_slice() else { panic!("one object") };
    assert!(matches!(loaded.resource, Resource::Telemetry(_)));
    mesh_api::validate::resource(&loaded.resource).into_iter().map(|e| (e.path, e.reason)).collect()
}

#[test]
fn istio_examples_are_valid() {
    let spec = r#"  selector:
    matchLabels: {app: reviews}
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 10.5
    disableSpanReporting: false
    customTags:
      team: {literal: {value: shop}}
      node: {environment: {name: NODE_NAME, defaultValue: unknown}}
      user: {header: {name: x-user}}
  - match: {mode: SERVER}
    randomSamplingPercentage: 100
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400 || response.duration > duration('1s')"}
  - match: {mode: CLIENT}
    disabled: true
  metrics:
  - providers: [{name: prometheus}]
    overrides: [{match: {metric: REQUEST_COUNT, mode: CLIENT}, disabled: true}]
"#;
    assert_eq!(telemetry(spec), Vec::<(String, String)>::new());
}

#[test]
fn wrong_values_name_the_field() {
    let spec = r#"  selector: {matchLabels: {app: a}}
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]
  tracing:
  - randomSamplingPercentage: 150
    providers: [{name: ""}]
    match: {mode: BOTH}
    customTags:
      two: {literal: {value: a}, header: {name: x}}
      none: {}
      empty: {literal: {value: ""}}
  accessLogging:
  - filter: {expression: "connection.mtls"}
"#;
    let errors = telemetry(spec);
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec",
            "spec.tracing[0].match.mode",
            "spec.tracing[0].providers[0].name",
            "spec.tracing[0].randomSamplingPercentage",
            "spec.tracing[0].customTags[empty].literal.value",
            "spec.tracing[0].customTags[none]",
            "spec.tracing[0].customTags[two]",
            "spec.accessLogging[0].filter.expression",
        ]
    );
    assert_eq!(errors[0].1, "set only one of selector, targetRef and targetRefs");
    assert_eq!(errors[3].1, "percentage 150 is out of range: must be 0 to 100");
    assert_eq!(errors[5].1, "a custom tag takes exactly one of literal, environment and header");
    assert!(
        errors[7].1.starts_with("unsupported attribute or function `connection` (at character 1); the mesh compiles response.code"),
        "{}",
        errors[7].1
    );
}

#[test]
fn unknown_fields_are_refused() {
    let yaml = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t}\nspec:\n  tracing:\n  - randomSamplingPercentag: 10\n";
    let report = load::load_str("t.yaml", yaml);
    assert_eq!(report.errors.len(), 1);
    assert!(report.errors[0].to_string().contains("unknown field `randomSamplingPercentag`"));
}

fn mesh(text: &str) -> MeshConfig {
    MeshConfig::from_yaml("mesh.yaml", text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn istio_providers_load_and_are_found_by_name() {
    let config = mesh(
        r#"enableTracing: true
extensionProviders:
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317, maxTagLength: 256}
- name: otel-http
  opentelemetry:
    service: collector.example.com
    port: 4318
    http: {path: /v1/traces, timeout: 5s, headers: [{name: x-token, value: secret}]}
- name: json-log
  envoyFileAccessLog: {path: /dev/stderr, logFormat: {labels: {code: "%RESPONSE_CODE%"}}}
- name: authz
  envoyExtAuthzGrpc: {service: authz.foo.svc.cluster.local, port: 9000}
defaultProviders: {tracing: [OTEL], accessLogging: [envoy]}
defaultConfig:
  tracing: {sampling: 25, customTags: {team: {literal: {value: shop}}}}
"#,
    );
    let otel = config.extension_provider("Otel").unwrap();
    assert_eq!(otel.opentelemetry.as_ref().unwrap().port, 4317);
    let envoy = config.extension_provider("envoy").unwrap();
    assert_eq!(envoy.envoy_file_access_log.as_ref().unwrap().path, "/dev/stdout");
    assert!(config.extension_provider("prometheus").unwrap().prometheus.is_some());
    assert!(config.extension_provider("zipkin").is_none());
    assert_eq!(config.default_tracing_providers(), ["OTEL"]);
    assert_eq!(config.default_access_logging_providers(), ["envoy"]);
    assert_eq!(config.trace_sampling(), 25.0);
}

#[test]
fn the_older_tracing_setting_is_an_implicit_provider() {
    let config =
        mesh("tracing: {otlpEndpoint: otel-collector.observability:4317, samplingPercentage: 5}\n");
    assert_eq!(config.default_tracing_providers(), [IMPLICIT_TRACING_PROVIDER]);
    let provider = config.extension_provider(IMPLICIT_TRACING_PROVIDER).unwrap();
    let otel = provider.opentelemetry.as_ref().unwrap();
    assert_eq!((otel.service.as_str(), otel.port), ("otel-collector.observability", 4317));
    assert_eq!(config.trace_sampling(), 5.0);
    // defaultProviders and defaultConfig.tracing.sampling take precedence, as in Istio.
    let config = mesh(
        "tracing: {otlpEndpoint: a:4317}\nextensionProviders: [{name: b, opentelemetry: {service: b, port: 1}}]\ndefaultProviders: {tracing: [b]}\ndefaultConfig: {tracing: {sampling: 50}}\n",
    );
    assert_eq!(config.default_tracing_providers(), ["b"]);
    assert_eq!(config.trace_sampling(), 50.0);
    assert_eq!(mesh("").default_tracing_providers(), Vec::<String>::new());
    assert_eq!(mesh("").trace_sampling(), 1.0);
}

#[test]
fn provider_mistakes_are_reported() {
    let text = r#"extensionProviders:
- name: a
  opentelemetry: {service: "", port: 0, http: {path: ""}}
- name: A
  envoyFileAccessLog: {}
  zipkin: {}
- name: none
defaultProviders: {tracing: [nowhere]}
defaultConfig: {tracing: {sampling: -1}}
"#;
    let Err(MeshConfigError::Invalid { errors, .. }) = MeshConfig::from_yaml("mesh.yaml", text)
    else {
        panic!("invalid")
    };
    let found: Vec<(&str, &str)> =
        errors.iter().map(|e| (e.path.as_str(), e.reason.as_str())).collect();
    assert_eq!(
        found,
        [
            (
                "meshConfig.defaultConfig.tracing.sampling",
                "percentage -1 is out of range: must be 0 to 100"
            ),
            ("meshConfig.extensionProviders[0].opentelemetry.service", "service is required"),
            (
                "meshConfig.extensionProviders[0].opentelemetry.port",
                "port 0 is out of range: must be 1 to 65535"
            ),
            ("meshConfig.extensionProviders[0].opentelemetry.http.path", "path is required"),
            (
                "meshConfig.extensionProviders[1].name",
                "provider name \"A\" is declared more than once"
            ),
            ("meshConfig.extensionProviders[1]", "a provider has exactly one kind"),
            (
                "meshConfig.extensionProviders[2]",
                "a provider needs one kind (opentelemetry, envoyFileAccessLog...)"
            ),
            ("meshConfig.defaultProviders.tracing[0]", "\"nowhere\" names no extension provider"),
        ]
    );
}
