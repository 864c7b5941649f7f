//! Mixed loads: manifests as `kubectl apply` takes them, mesh config beside any other kind.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use mesh_api::ObjectRef;
use mesh_api::load::{self, KubeObject, LoadErrorKind};

const MIXED: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {mesh-injection: enabled}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: cart, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart-v1, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  template:
    metadata:
      labels: {app: cart, version: v1}
    spec:
      serviceAccountName: cart
      containers:
      - name: cart
        image: cart:1
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cart-settings, namespace: shop}
data: {mode: fast}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: cart, namespace: shop}
spec: {}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: knative-cart, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart]
  http:
  - route:
    - destination: {host: cart}
";

#[test]
fn a_mixed_file_loads_every_kind_it_needs_and_skips_the_others() {
    let report = load::load_str_mixed("shop.yaml", MIXED);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mesh: Vec<ObjectRef> = report.objects.iter().map(|o| o.resource.object_ref()).collect();
    assert_eq!(
        mesh,
        [
            ObjectRef::new("Namespace", None, "shop"),
            ObjectRef::new("Service", Some("shop"), "cart"),
            ObjectRef::new("VirtualService", Some("shop"), "cart"),
        ]
    );
    let kube: Vec<ObjectRef> = report.kubernetes.iter().map(|k| k.object.object_ref()).collect();
    assert_eq!(
        kube,
        [
            ObjectRef::new("ServiceAccount", Some("shop"), "cart"),
            ObjectRef::new("Deployment", Some("shop"), "cart-v1"),
            ObjectRef::new("ConfigMap", Some("shop"), "cart-settings"),
        ]
    );
    let deployment = &report.kubernetes[1];
    assert_eq!(deployment.origin.line, 11);
    let template = deployment.object.pod_template().unwrap();
    assert_eq!(template.labels.unwrap().get("version").map(String::as_str), Some("v1"));
    let skipped: Vec<(&str, &str, usize)> = report
        .skipped
        .iter()
        .map(|s| (s.kind.as_str(), s.api_version.as_str(), s.origin.line))
        .collect();
    assert_eq!(
        skipped,
        [("Ingress", "networking.k8s.io/v1", 38), ("Service", "serving.knative.dev/v1", 43)]
    );
}

#[test]
fn the_strict_load_still_refuses_other_kinds() {
    let report = load::load_str("shop.yaml", MIXED);
    let kinds: Vec<String> = report
        .errors
        .iter()
        .map(|e| match &e.kind {
            LoadErrorKind::UnknownKind { kind, .. } => kind.clone(),
            LoadErrorKind::WrongApiVersion { kind, .. } => format!("{kind} (version)"),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["ServiceAccount", "Deployment", "ConfigMap", "Ingress", "Service (version)"]
    );
    assert!(report.kubernetes.is_empty() && report.skipped.is_empty());
}

#[test]
fn a_typo_in_a_mesh_group_is_still_an_error() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualSevice\nmetadata: {name: typo, namespace: shop}\nspec: {}\n";
    let report = load::load_str_mixed("typo.yaml", text);
    assert_eq!(report.errors.len(), 1);
    let err = &report.errors[0];
    assert!(matches!(err.kind, LoadErrorKind::UnknownKind { .. }), "{err}");
    assert_eq!(err.object, Some(ObjectRef::new("VirtualSevice", Some("shop"), "typo")));
}

#[test]
fn a_malformed_workload_is_an_error_naming_it() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec:\n  replicas: many\n  selector: {}\n  template: {}\n";
    let report = load::load_str_mixed("bad.yaml", text);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let err = &report.errors[0];
    assert_eq!(err.object, Some(ObjectRef::new("Deployment", None, "bad")));
    assert!(err.to_string().contains("spec.replicas"), "{err}");
}

#[test]
fn workloads_of_a_list_take_their_namespace_from_the_default() {
    let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
      {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "a"}},
       "spec": {"containers": [{"name": "a", "image": "a"}]}},
      {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
       "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
         "metadata": {"labels": {"app": "cron"}}, "spec": {"containers": []}}}}}}
    ]}"#;
    let mut report = load::load_str_mixed("list.json", text);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for loaded in &mut report.kubernetes {
        loaded.object.default_namespace("team");
    }
    let apps: Vec<(String, Option<String>)> = report
        .kubernetes
        .iter()
        .map(|k| {
            let labels = k.object.pod_template().unwrap().labels.unwrap();
            (k.object.object_ref().to_string(), labels.get("app").cloned())
        })
        .collect();
    assert_eq!(
        apps,
        [
            ("Pod team/p".to_owned(), Some("a".to_owned())),
            ("CronJob team/c".to_owned(), Some("cron".to_owned()))
        ]
    );
    assert!(matches!(report.kubernetes[0].object, KubeObject::Pod(_)));
}

#[test]
fn a_directory_of_mixed_files_loads_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.yaml"), MIXED).unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: first}\n",
    )
    .unwrap();
    let report = load::load_path_mixed(dir.path());
    assert!(report.errors.is_empty());
    assert_eq!(report.kubernetes[0].object.object_ref().name, "first");
    assert_eq!(report.kubernetes.len(), 4);
    assert!(!report.is_empty());
    assert!(load::load_str_mixed("empty.yaml", "# nothing\n").is_empty());
}
