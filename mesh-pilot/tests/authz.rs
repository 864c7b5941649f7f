//! AuthorizationPolicy as Envoy RBAC, beyond the golden file: which policies apply to which
//! proxy, what an empty policy means, what a TCP chain keeps of HTTP-only rules, and CUSTOM
//! failing closed.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use envoy_types::pb::envoy::config::rbac::v3::{Rbac, permission, rbac};
use mesh_api::security::AuthorizationPolicy;
use mesh_pilot::model::{Proxy, Snapshot};
use mesh_pilot::translate::authz::{self, Chain};

fn snapshot(yaml: &str) -> Snapshot {
    let report = mesh_api::load::load_str("authz.yaml", yaml);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut snapshot = Snapshot::default();
    for o in report.objects {
        match o.resource {
            mesh_api::Resource::AuthorizationPolicy(p) => snapshot.authorization_policies.push(p),
            other => panic!("unexpected {other:?}"),
        }
    }
    let invalid: Vec<String> = snapshot
        .authorization_policies
        .iter()
        .flat_map(|p| {
            mesh_api::validate::resource(&mesh_api::Resource::AuthorizationPolicy(p.clone()))
        })
        .map(|e| e.to_string())
        .collect();
    assert!(invalid.is_empty(), "invalid test policies: {invalid:?}");
    snapshot
}

fn proxy(namespace: &str, app: &str) -> Proxy {
    Proxy {
        id: format!("sidecar~10.1.0.5~{app}-1.{namespace}~{namespace}.svc.cluster.local"),
        namespace: namespace.into(),
        labels: [("app".to_owned(), app.to_owned())].into(),
        ips: vec!["10.1.0.5".parse().unwrap()],
        ..Proxy::default()
    }
}

fn names(policies: &[&AuthorizationPolicy]) -> Vec<String> {
    policies
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap(),
                p.metadata.name.as_deref().unwrap()
            )
        })
        .collect()
}

const SELECTION: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: mesh-system}
spec: {action: DENY, rules: [{from: [{source: {ipBlocks: ["192.0.2.1"]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: every-web, namespace: mesh-system}
spec: {selector: {matchLabels: {app: web}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: namespace-wide, namespace: shop}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-only, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: other}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: trying-it, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: web-gateway}]
  rules: [{to: [{operation: {paths: ["/admin"]}}]}]
  action: DENY
"#;

#[test]
fn policies_apply_by_root_namespace_namespace_and_selector() {
    let s = snapshot(SELECTION);
    assert_eq!(
        names(&authz::applicable(&s, &proxy("shop", "web"))),
        ["mesh-system/every-web", "mesh-system/mesh-wide", "shop/namespace-wide", "shop/web-only"]
    );
    assert_eq!(
        names(&authz::applicable(&s, &proxy("shop", "api"))),
        ["mesh-system/mesh-wide", "shop/namespace-wide"]
    );
    // A root-namespace selector reaches workloads of every namespace.
    assert_eq!(
        names(&authz::applicable(&s, &proxy("blog", "web"))),
        ["mesh-system/every-web", "mesh-system/mesh-wide"]
    );
    // The policy naming a Gateway applies to that gateway's proxies only.
    let mut gateway = proxy("shop", "gw");
    gateway.router = true;
    gateway.labels.insert("gateway.networking.k8s.io/gateway-name".into(), "web-gateway".into());
    assert_eq!(
        names(&authz::applicable(&s, &gateway)),
        ["mesh-system/mesh-wide", "shop/edge", "shop/namespace-wide"]
    );
}

fn actions(configs: &[Rbac]) -> Vec<(i32, usize)> {
    configs.iter().map(|c| (c.action, c.policies.len())).collect()
}

#[test]
fn an_allow_without_rules_denies_all_and_a_deny_without_rules_does_nothing() {
    let s = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: shop}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-nothing, namespace: shop}
spec: {action: DENY}
"#,
    );
    let policies = authz::applicable(&s, &proxy("shop", "web"));
    // One ALLOW filter with no policy: nothing matches, everything is denied.
    assert_eq!(actions(&authz::configs(&policies, Chain::Http)), [(rbac::Action::Allow as i32, 0)]);
}

const HTTP_ONLY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: shop}
spec:
  rules:
  - to: [{operation: {methods: [GET]}}]
  - from: [{source: {namespaces: [shop]}}]
    to: [{operation: {ports: ["5432"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [POST], ports: ["8080"]}}]
"#;

#[test]
fn on_tcp_an_allow_loses_its_http_rules_and_a_deny_widens() {
    let s = snapshot(HTTP_ONLY);
    let policies = authz::applicable(&s, &proxy("shop", "web"));
    let tcp = authz::configs(&policies, Chain::Tcp);
    assert_eq!(
        actions(&tcp),
        [(rbac::Action::Deny as i32, 1), (rbac::Action::Allow as i32, 1)],
        "the ALLOW rule naming a method is left out; the one on a port stays"
    );
    // The DENY keeps its port and drops its method: all TCP to 8080 is denied.
    let deny = &tcp[0].policies["ns[shop]-policy[deny-post]-rule[0]"];
    assert_eq!(deny.permissions[0].rule, Some(permission::Rule::DestinationPort(8080)));
    assert!(tcp[1].policies.contains_key("ns[shop]-policy[allow-get]-rule[1]"));
    // On HTTP both ALLOW rules are there.
    let http = authz::configs(&policies, Chain::Http);
    assert_eq!(actions(&http), [(rbac::Action::Deny as i32, 1), (rbac::Action::Allow as i32, 2)]);
}

#[test]
fn custom_is_not_implemented_and_fails_closed() {
    let s = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"#,
    );
    let policies = authz::applicable(&s, &proxy("shop", "web"));
    assert_eq!(actions(&authz::configs(&policies, Chain::Http)), [(rbac::Action::Deny as i32, 1)]);
}
