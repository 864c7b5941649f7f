//! The loader: files, directories, stdin, YAML and JSON, and errors that say where.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::io::Cursor;

use mesh_api::Resource;
use mesh_api::load::{self, LoadError, LoadErrorKind};

fn only_error(report: load::LoadReport) -> LoadError {
    let mut errors = report.errors;
    assert_eq!(errors.len(), 1, "one error expected: {errors:?}");
    errors.remove(0)
}

const GOOD_VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: good
  namespace: default
spec:
  hosts: [good]
  http:
  - route:
    - destination:
        host: good
";

#[test]
fn unknown_field_names_file_document_line_and_path() {
    let text = format!(
        "{GOOD_VS}---\n# a typo in the second document\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: typo\nspec:\n  hosts: [typo]\n  http:\n  - route:\n    - destination:\n        host: typo\n    timout: 5s\n"
    );
    let report = load::load_str("routes.yaml", &text);
    assert_eq!(report.objects.len(), 1, "the good document still loads");
    let err = only_error(report);
    assert_eq!(err.file, "routes.yaml");
    assert_eq!(err.document, Some(2));
    assert_eq!(err.line, Some(24));
    assert_eq!(err.column, Some(5));
    let LoadErrorKind::Field { path, message } = &err.kind else { panic!("{err}") };
    assert_eq!(path, "spec.http[0].timout");
    assert!(message.starts_with("unknown field `timout`, expected one of"), "{message}");
    assert!(
        err.to_string().starts_with(
            "routes.yaml:24:5: document 2: spec.http[0].timout: unknown field `timout`"
        ),
        "{err}"
    );
}

#[test]
fn wrong_type_names_the_field_and_line() {
    let text = GOOD_VS.replace("  hosts: [good]\n", "  hosts: [good]\n  exportTo: 7\n");
    let err = only_error(load::load_str("vs.yaml", &text));
    assert_eq!(err.line, Some(8));
    let LoadErrorKind::Field { path, .. } = &err.kind else { panic!("{err}") };
    assert_eq!(path, "spec.exportTo");
}

#[test]
fn yaml_syntax_error_has_the_line() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [unclosed\n";
    let err = only_error(load::load_str("ns.yaml", text));
    assert!(matches!(err.kind, LoadErrorKind::Syntax { format: "YAML", .. }), "{err}");
    assert_eq!(err.line, Some(4));
    assert_eq!(err.document, Some(1));
}

#[test]
fn unknown_kind_is_reported_not_skipped() {
    let text =
        format!("{GOOD_VS}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n");
    let report = load::load_str("mixed.yaml", &text);
    assert_eq!(report.objects.len(), 1);
    let err = only_error(report);
    assert_eq!(err.document, Some(2));
    assert_eq!(err.line, Some(13));
    assert_eq!(
        err.kind.to_string(),
        "kind Deployment (apps/v1) is not a kind the mesh reads: expected one of VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, Sidecar, PeerAuthentication, AuthorizationPolicy, Telemetry, Service, Namespace, List"
    );
}

#[test]
fn a_gateway_api_gateway_is_read_as_one_and_not_as_an_istio_gateway() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  gatewayClassName: mesh\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n";
    let report = load::load_str("gw.yaml", text);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(matches!(report.objects[0].resource, Resource::KubeGateway(_)));
    // A field the mesh does not implement is refused by path, not dropped.
    let extra = text
        .replace("  gatewayClassName", "  infrastructure: {labels: {a: b}}\n  gatewayClassName");
    let err = only_error(load::load_str("gw.yaml", &extra));
    assert!(err.to_string().contains("infrastructure"), "{err}");
}

#[test]
fn wrong_api_version_says_which_to_use() {
    let text = GOOD_VS.replace("networking.istio.io/v1", "networking.istio.io/v2");
    let err = only_error(load::load_str("vs.yaml", &text));
    assert_eq!(
        err.kind.to_string(),
        "VirtualService is not served by apiVersion networking.istio.io/v2: use networking.istio.io/v1 or networking.istio.io/v1beta1 or networking.istio.io/v1alpha3"
    );
}

#[test]
fn missing_kind_is_an_error() {
    let err = only_error(load::load_str("x.yaml", "apiVersion: v1\nmetadata:\n  name: x\n"));
    assert_eq!(err.kind.to_string(), "missing kind: every object needs apiVersion and kind");
    assert_eq!(err.line, Some(1));
}

#[test]
fn empty_and_comment_only_documents_are_ignored() {
    let text = format!("---\n# nothing here\n---\n{GOOD_VS}---\n");
    let report = load::load_str("x.yaml", &text);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.objects.len(), 1);
    assert_eq!(report.objects[0].origin.document, 1);
    assert_eq!(report.objects[0].origin.line, 4);
}

#[test]
fn directory_is_read_recursively_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("b/nested")).unwrap();
    std::fs::create_dir_all(dir.path().join("..data")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), GOOD_VS.replace("good", "first")).unwrap();
    std::fs::write(dir.path().join("b/nested/c.yml"), GOOD_VS.replace("good", "second")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not config").unwrap();
    std::fs::write(dir.path().join("..data/dup.yaml"), GOOD_VS).unwrap();
    std::fs::write(
        dir.path().join("bad.json"),
        "{\"apiVersion\": \"v1\",\n \"kind\": \"Namespace\",\n \"metadata\": {\"name\": 5}}",
    )
    .unwrap();
    let report = load::load_path(dir.path());
    let names: Vec<String> = report.objects.iter().map(|o| o.resource.object_ref().name).collect();
    assert_eq!(names, ["first", "second"]);
    let err = only_error(report);
    assert!(err.file.ends_with("bad.json"), "{err}");
    assert_eq!(err.line, Some(3));
    let LoadErrorKind::Field { path, .. } = &err.kind else { panic!("{err}") };
    assert_eq!(path, "metadata.name");
}

#[test]
fn missing_path_is_an_error() {
    let err = only_error(load::load_path(std::path::Path::new("/nonexistent/mesh/config")));
    assert!(matches!(err.kind, LoadErrorKind::Io(_)));
    assert!(err.to_string().starts_with("/nonexistent/mesh/config: cannot read:"), "{err}");
}

#[test]
fn json_stream_and_kubectl_list_load() {
    let text = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "one"}}
{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "two"}},
  {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
   "metadata": {"name": "strict", "namespace": "two"}, "spec": {"mtls": {"mode": "STRICT"}}}
]}"#;
    let report = load::load_reader("<stdin>", Cursor::new(text));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let names: Vec<String> =
        report.objects.iter().map(|o| o.resource.object_ref().to_string()).collect();
    assert_eq!(names, ["Namespace one", "Namespace two", "PeerAuthentication two/strict"]);
    assert_eq!(report.objects[1].origin.document, 2);
    assert_eq!(report.objects[1].origin.line, 2);
    assert!(matches!(report.objects[2].resource, Resource::PeerAuthentication(_)));
}

#[test]
fn list_item_errors_name_the_item() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: security.istio.io/v1\n  kind: PeerAuthentication\n  metadata: {name: x}\n  spec:\n    mtls: {mode: STRICT, extra: 1}\n";
    let err = only_error(load::load_str("list.yaml", text));
    let LoadErrorKind::Field { path, .. } = &err.kind else { panic!("{err}") };
    assert_eq!(path, "items[0].spec.mtls.extra");
}

#[test]
fn json_syntax_error_has_line_and_column() {
    let err = only_error(load::load_str("<stdin>", "{\"apiVersion\": \"v1\",\n  \"kind\": }"));
    assert!(matches!(err.kind, LoadErrorKind::Syntax { format: "JSON", .. }), "{err}");
    assert_eq!((err.line, err.column), (Some(2), Some(11)));
}

#[test]
fn typo_in_kubernetes_fields_is_not_silently_dropped() {
    // Kubernetes' own types ignore unknown fields; the loader does not.
    let text = GOOD_VS
        .replace("  namespace: default\n", "  namespace: default\n  lables:\n    app: good\n");
    let err = only_error(load::load_str("vs.yaml", &text));
    assert_eq!(err.line, Some(6));
    let LoadErrorKind::Field { path, message } = &err.kind else { panic!("{err}") };
    assert_eq!((path.as_str(), message.as_str()), ("metadata.lables", "unknown field `lables`"));

    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  selector:\n    app: reviews\n  prots:\n  - port: 9080\n";
    let err = only_error(load::load_str("svc.yaml", service));
    assert_eq!(err.line, Some(8));
    let LoadErrorKind::Field { path, .. } = &err.kind else { panic!("{err}") };
    assert_eq!(path, "spec.prots");
}

#[test]
fn server_written_status_and_nulls_are_accepted() {
    let text = GOOD_VS.replace("metadata:\n", "metadata:\n  creationTimestamp: null\n")
        + "status:\n  observedGeneration: 3\n";
    let report = load::load_str("vs.yaml", &text);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.objects.len(), 1);
}

#[test]
fn typed_list_from_the_api_server_loads() {
    // `kubectl get --raw` returns items without apiVersion and kind.
    let text = r#"{"apiVersion": "networking.istio.io/v1", "kind": "VirtualServiceList",
 "items": [{"metadata": {"name": "a", "namespace": "default"},
            "spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}}]}]}}]}"#;
    let report = load::load_str("<stdin>", text);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.objects[0].resource.object_ref().to_string(), "VirtualService default/a");
}

#[test]
fn empty_values_read_as_not_set() {
    // `exportTo:` with nothing after it is a YAML null; Istio reads it as "not set".
    let text =
        GOOD_VS.replace("  hosts: [good]\n", "  hosts: [good]\n  exportTo:\n  gateways: ~\n");
    let report = load::load_str("vs.yaml", &text);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let deny_all = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-nothing\n  namespace: default\nspec:\n";
    let report = load::load_str("ap.yaml", deny_all);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.objects.len(), 1);
}

#[test]
fn misspelt_spec_is_reported() {
    let text = GOOD_VS.replace("spec:\n", "sepc:\n");
    let err = only_error(load::load_str("vs.yaml", &text));
    assert_eq!(err.line, Some(6));
    assert_eq!(err.kind.to_string(), "sepc: unknown field `sepc`");
}

#[test]
fn dropped_field_line_follows_the_path() {
    // `name:` appears under metadata first; the error points at the one under spec.ports.
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  ports:\n  - name: http\n    port: 9080\n    protocoll: TCP\n";
    let err = only_error(load::load_str("svc.yaml", service));
    assert_eq!(err.line, Some(9));
    assert_eq!(err.kind.to_string(), "spec.ports[0].protocoll: unknown field `protocoll`");
}

#[test]
fn json_array_of_objects_loads() {
    let text = r#"[{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}]"#;
    let report = load::load_str("ns.json", text);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.objects.len(), 2);
}

#[test]
fn json_syntax_error_keeps_the_documents_before_it() {
    let text = "{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"a\"}}\n{\"apiVersion\": ";
    let report = load::load_str("ns.json", text);
    assert_eq!(report.objects.len(), 1);
    let err = only_error(report);
    assert_eq!(err.document, Some(2));
    assert!(matches!(err.kind, LoadErrorKind::Syntax { format: "JSON", .. }), "{err}");
}

#[test]
fn one_bad_list_item_does_not_lose_the_others() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: good}\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: web}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: also-good}\n";
    let report = load::load_str("list.yaml", text);
    let names: Vec<String> = report.objects.iter().map(|o| o.resource.object_ref().name).collect();
    assert_eq!(names, ["good", "also-good"]);
    let err = only_error(report);
    let LoadErrorKind::Field { path, message } = &err.kind else { panic!("{err}") };
    assert_eq!(path, "items[1]");
    assert!(
        message.starts_with("kind Deployment (apps/v1) is not a kind the mesh reads"),
        "{message}"
    );
}

#[test]
fn kinds_the_mesh_does_not_implement_are_warned_about_and_the_rest_of_the_file_loads() {
    let report = mesh_api::load::load_str(
        "mixed.yaml",
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: lua, namespace: shop}\nspec: {configPatches: []}\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default}\nspec: {metrics: [{providers: [{name: prometheus}]}], tracing: [{randomSamplingPercentage: 10}]}\n---\napiVersion: telemetry.istio.io/v1alpha1\nkind: Telemetry\nmetadata: {name: logs, namespace: shop}\nspec: {accessLogging: [{providers: [{name: envoy}]}]}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: hello}\nspec: {hosts: [hello], http: [{route: [{destination: {host: hello}}]}]}\n",
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let kinds: Vec<String> = report.objects.iter().map(|o| o.resource.object_ref().kind).collect();
    assert_eq!(kinds, ["Telemetry", "Telemetry", "VirtualService"], "Telemetry is enforced");
    let warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "mixed.yaml:1: document 1: EnvoyFilter shop/lua is read but not enforced: the mesh does not implement EnvoyFilter",
            "mixed.yaml:6: document 2: Telemetry mesh-default: spec.metrics is read but not enforced"
        ]
    );
}
