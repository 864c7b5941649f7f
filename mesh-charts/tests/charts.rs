//! Every chart rendered with its defaults and with each profile, each document read back as the
//! Kubernetes object it claims to be, and what users rely on checked: identities, RBAC, the
//! webhooks, the Services, the MeshConfig, the gateways, and how profiles and values change them.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_charts::{
    Capabilities, KubeVersion, Manifest, Overrides, Profile, ReleasePlan, RenderError, ValuesFile,
};
use pretty_assertions::assert_eq;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const NAMESPACE: &str = "mesh-system";

fn plan_for(overrides: &Overrides, namespace: &str) -> Vec<ReleasePlan> {
    mesh_charts::plan(overrides, namespace).unwrap_or_else(|e| panic!("{e}"))
}

fn profile(profile: Profile) -> Overrides {
    Overrides { profile: Some(profile), ..Overrides::default() }
}

fn with_set(set: &[&str]) -> Overrides {
    Overrides { set: set.iter().map(|s| (*s).to_owned()).collect(), ..Overrides::default() }
}

/// Every manifest of every release the overrides call for.
fn manifests(overrides: &Overrides, namespace: &str) -> Vec<Manifest> {
    plan_for(overrides, namespace)
        .iter()
        .flat_map(|release| {
            release
                .render(&Capabilities::default())
                .unwrap_or_else(|e| panic!("{}: {e}", release.name))
        })
        .collect()
}

/// The object of `kind` called `name`, as its k8s-openapi type.
fn object<T: DeserializeOwned>(manifests: &[Manifest], kind: &str, name: &str) -> T {
    let manifest = manifests
        .iter()
        .find(|m| m.kind() == kind && m.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    serde_json::from_value(manifest.object.clone()).unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
}

/// Reads `object` as `T` and writes it back: a field k8s-openapi does not know (a misspelling,
/// a field at the wrong level) is lost on the way, and the difference names it.
fn read_back<T: DeserializeOwned + Serialize>(what: &str, object: &Value) {
    let typed: T = serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, object, "{what} changes when read as its Kubernetes type");
}

fn check_object(manifest: &Manifest) {
    let what = format!("{} {} ({})", manifest.kind(), manifest.name(), manifest.template);
    let o = &manifest.object;
    match manifest.kind() {
        "ServiceAccount" => read_back::<ServiceAccount>(&what, o),
        "ClusterRole" => read_back::<ClusterRole>(&what, o),
        "ClusterRoleBinding" => read_back::<ClusterRoleBinding>(&what, o),
        "Role" => read_back::<Role>(&what, o),
        "RoleBinding" => read_back::<RoleBinding>(&what, o),
        "Deployment" => read_back::<Deployment>(&what, o),
        "Service" => read_back::<Service>(&what, o),
        "ConfigMap" => read_back::<ConfigMap>(&what, o),
        "PodDisruptionBudget" => read_back::<PodDisruptionBudget>(&what, o),
        "MutatingWebhookConfiguration" => read_back::<MutatingWebhookConfiguration>(&what, o),
        "ValidatingWebhookConfiguration" => read_back::<ValidatingWebhookConfiguration>(&what, o),
        other => panic!("{what}: a kind this test does not know: {other}"),
    }
    let cluster_scoped = [
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    if cluster_scoped.contains(&manifest.kind()) {
        assert_eq!(manifest.namespace(), None, "{what}");
    } else {
        assert!(manifest.namespace().is_some(), "{what} names no namespace");
    }
    let labels = &o["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/part-of"], "mesh", "{what}");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{what}");
}

#[test]
fn every_chart_renders_with_defaults_and_every_profile() {
    let cases = [
        Overrides::default(),
        profile(Profile::Default),
        profile(Profile::Demo),
        profile(Profile::Minimal),
    ];
    for overrides in &cases {
        let all = manifests(overrides, NAMESPACE);
        assert!(!all.is_empty());
        let mut seen = BTreeSet::new();
        for manifest in &all {
            check_object(manifest);
            let key = (
                manifest.kind().to_owned(),
                manifest.namespace().map(str::to_owned),
                manifest.name().to_owned(),
            );
            assert!(seen.insert(key.clone()), "{key:?} rendered twice");
        }
    }
    // The charts Helm users install one by one render on their own defaults too.
    for chart in mesh_charts::chart_names() {
        let values = mesh_charts::values(chart, &Overrides::default()).unwrap();
        let release = mesh_charts::Release::new(format!("mesh-{chart}"), NAMESPACE);
        for manifest in
            mesh_charts::render(chart, &values, &release, &Capabilities::default()).unwrap()
        {
            check_object(&manifest);
        }
    }
}

#[test]
fn crds_are_the_base_charts_files_untemplated() {
    let crds = mesh_charts::crds("base").unwrap();
    assert_eq!(crds.len(), mesh_api::crds::all().len());
    for file in &crds {
        let object: Value = serde_saphyr::from_str(file.contents).unwrap();
        read_back::<CustomResourceDefinition>(file.path, &object);
    }
    assert!(mesh_charts::crds("mesh").unwrap().is_empty());
    let base = mesh_charts::render(
        "base",
        &mesh_charts::Values::new(),
        &mesh_charts::Release::new("mesh-base", NAMESPACE),
        &Capabilities::default(),
    );
    assert_eq!(base, Ok(Vec::new()), "the base chart has no templates");
}

#[test]
fn every_deployment_runs_as_its_own_service_account_safely() {
    for p in Profile::ALL {
        let all = manifests(&profile(p), NAMESPACE);
        let accounts: BTreeSet<(Option<&str>, &str)> = all
            .iter()
            .filter(|m| m.kind() == "ServiceAccount")
            .map(|m| (m.namespace(), m.name()))
            .collect();
        for manifest in all.iter().filter(|m| m.kind() == "Deployment") {
            let deployment: Deployment = object(&all, "Deployment", manifest.name());
            let spec = deployment.spec.unwrap();
            let pod = spec.template.spec.unwrap();
            let account = pod.service_account_name.as_deref().unwrap_or("default");
            assert!(
                accounts.contains(&(manifest.namespace(), account)),
                "{}: no ServiceAccount {account}",
                manifest.name()
            );
            assert_eq!(pod.security_context.as_ref().and_then(|s| s.run_as_non_root), Some(true));
            let labels = spec.template.metadata.unwrap().labels.unwrap();
            assert_eq!(
                labels.get("sidecar.mesh.io/inject").map(String::as_str),
                Some("false"),
                "{}",
                manifest.name()
            );
            let selector = spec.selector.match_labels.unwrap();
            assert!(
                selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
                "{}: the selector misses its pods",
                manifest.name()
            );
            assert!(pod.init_containers.is_none(), "{}", manifest.name());
            for container in &pod.containers {
                let security = container.security_context.clone().unwrap();
                assert_eq!(security.read_only_root_filesystem, Some(true), "{}", container.name);
                assert_eq!(security.allow_privilege_escalation, Some(false), "{}", container.name);
                assert_eq!(
                    security.capabilities.unwrap().drop,
                    Some(vec!["ALL".to_owned()]),
                    "{}",
                    container.name
                );
                assert!(
                    container.resources.as_ref().and_then(|r| r.requests.as_ref()).is_some(),
                    "{}",
                    container.name
                );
                assert!(container.readiness_probe.is_some(), "{}", container.name);
            }
        }
    }
}

fn env(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => format!("<{}>", from.field_ref.as_ref().unwrap().field_path),
                (None, None) => String::new(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

fn container(all: &[Manifest], deployment: &str) -> Container {
    let d: Deployment = object(all, "Deployment", deployment);
    d.spec.unwrap().template.spec.unwrap().containers.remove(0)
}

#[test]
fn control_plane_deployments_are_configured_as_the_binaries_read_it() {
    let all = manifests(&Overrides::default(), "istio-system");
    let ca = container(&all, "mesh-ca");
    assert_eq!(ca.image.as_deref(), Some("ghcr.io/mesh/mesh-ca:0.1.0"));
    let ca_env = env(&ca);
    assert_eq!(ca_env["MESH_CA_MODE"], "kubernetes");
    assert_eq!(ca_env["POD_NAMESPACE"], "<metadata.namespace>");
    assert_eq!(ca_env["MESH_TRUST_DOMAIN"], "cluster.local");
    let probe = ca.readiness_probe.unwrap().http_get.unwrap();
    assert_eq!(
        (probe.path.as_deref(), probe.port.clone()),
        (Some("/ready"), IntOrString::Int(15014))
    );

    let pilot = container(&all, "mesh-pilot");
    let pilot_env = env(&pilot);
    let expected = [
        ("MESH_CA_ADDRESS", "mesh-ca.istio-system.svc:8060"),
        ("MESH_CA_SERVER_NAME", "mesh-ca.istio-system.svc"),
        ("MESH_ROOT_CERT", "/var/run/secrets/mesh/root-cert.pem"),
        ("MESH_TOKEN_PATH", "/var/run/secrets/tokens/mesh-token"),
        ("POD_NAMESPACE", "<metadata.namespace>"),
        ("SERVICE_ACCOUNT", "<spec.serviceAccountName>"),
        ("MESH_INJECT_PROXY_IMAGE", "ghcr.io/mesh/mesh-proxy:0.1.0"),
        ("MESH_INJECT_INIT_IMAGE", "ghcr.io/mesh/mesh-init:0.1.0"),
        ("MESH_INJECT_NATIVE_SIDECAR", "true"),
        ("RUST_LOG", "info"),
    ];
    for (name, value) in expected {
        assert_eq!(pilot_env.get(name).map(String::as_str), Some(value), "{name}");
    }
    let probe = pilot.readiness_probe.unwrap().http_get.unwrap();
    assert_eq!(
        (probe.path.as_deref(), probe.port.clone()),
        (Some("/ready"), IntOrString::Int(15014))
    );
    let d: Deployment = object(&all, "Deployment", "mesh-pilot");
    let pod = d.spec.unwrap().template.spec.unwrap();
    let volumes = pod.volumes.unwrap();
    let token = volumes.iter().find(|v| v.name == "mesh-token").unwrap();
    let projection = token.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
        .service_account_token
        .clone()
        .unwrap();
    assert_eq!(
        (projection.audience.as_deref(), projection.path.as_str()),
        (Some("mesh-ca"), "mesh-token")
    );
    let root = volumes.iter().find(|v| v.name == "mesh-ca-root-cert").unwrap();
    assert_eq!(root.config_map.as_ref().unwrap().name, "mesh-ca-root-cert");
    let mounts: BTreeMap<String, String> =
        pilot.volume_mounts.unwrap().into_iter().map(|m| (m.name, m.mount_path)).collect();
    assert_eq!(mounts["mesh-token"], "/var/run/secrets/tokens");
    assert_eq!(mounts["mesh-ca-root-cert"], "/var/run/secrets/mesh");
}

#[test]
fn images_and_injection_follow_the_values() {
    let all = manifests(
        &with_set(&[
            "global.hub=registry.local/mesh",
            "global.tag=dev",
            "pilot.image=other.io/pilot:1",
            "sidecarInjector.nativeSidecar=false",
        ]),
        NAMESPACE,
    );
    assert_eq!(
        container(&all, "mesh-ca").image.as_deref(),
        Some("registry.local/mesh/mesh-ca:dev")
    );
    let pilot = container(&all, "mesh-pilot");
    assert_eq!(pilot.image.as_deref(), Some("other.io/pilot:1"));
    let pilot_env = env(&pilot);
    assert_eq!(pilot_env["MESH_INJECT_PROXY_IMAGE"], "registry.local/mesh/mesh-proxy:dev");
    assert_eq!(pilot_env["MESH_INJECT_INIT_IMAGE"], "registry.local/mesh/mesh-init:dev");
    assert_eq!(pilot_env["MESH_INJECT_NATIVE_SIDECAR"], "false");
    assert_eq!(
        container(&all, "mesh-ingressgateway").image.as_deref(),
        Some("registry.local/mesh/mesh-proxy:dev")
    );

    // "auto" follows the cluster: a native sidecar from Kubernetes 1.29 on (even a provider's
    // prerelease-style version), none before. 1.28 is below the charts' kubeVersion, so the
    // plain template is rendered with an old version through the engine's semverCompare only
    // for versions the chart accepts: a provider build of 1.33.
    let plan = plan_for(&Overrides::default(), NAMESPACE);
    let mesh = plan.iter().find(|r| r.name == "mesh").unwrap();
    let gke = Capabilities { kube_version: KubeVersion::parse("v1.33.5-gke.1200").unwrap() };
    let rendered = mesh.render(&gke).unwrap();
    assert_eq!(env(&container(&rendered, "mesh-pilot"))["MESH_INJECT_NATIVE_SIDECAR"], "true");
    let err = mesh_charts::plan(&with_set(&["sidecarInjector.nativeSidecar=sometimes"]), NAMESPACE)
        .unwrap()
        .iter()
        .find(|r| r.name == "mesh")
        .unwrap()
        .render(&Capabilities::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("sidecarInjector.nativeSidecar must be true, false or auto"),
        "{err}"
    );
}

#[test]
fn services_expose_the_ports_the_mesh_uses() {
    let all = manifests(&Overrides::default(), NAMESPACE);
    let ports = |name: &str| -> BTreeMap<String, (i32, IntOrString)> {
        let service: Service = object(&all, "Service", name);
        service
            .spec
            .unwrap()
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), (p.port, p.target_port.unwrap())))
            .collect()
    };
    let pilot = ports("mesh-pilot");
    assert_eq!(pilot["https-webhook"], (443, IntOrString::Int(15017)));
    assert!(!pilot.contains_key("grpc-xds"), "plaintext xDS is never exposed: {pilot:?}");
    assert_eq!(pilot["tls-xds"], (15012, IntOrString::Int(15012)));
    assert_eq!(pilot["http-monitoring"], (15014, IntOrString::Int(15014)));
    let ca = ports("mesh-ca");
    assert_eq!(ca["grpc-ca"], (8060, IntOrString::Int(8060)));
    assert_eq!(ca["http-monitoring"], (15014, IntOrString::Int(15014)));
    // The Services select the pods of their Deployments.
    for name in ["mesh-ca", "mesh-pilot", "mesh-ingressgateway"] {
        let service: Service = object(&all, "Service", name);
        let deployment: Deployment = object(&all, "Deployment", name);
        let pod_labels = deployment.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        let selector = service.spec.unwrap().selector.unwrap();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "{name}");
    }
}

#[test]
fn the_pilots_plaintext_xds_and_debug_endpoints_are_closed_unless_asked_for() {
    let pod = |all: &[Manifest]| {
        let d: Deployment = object(all, "Deployment", "mesh-pilot");
        d.spec.unwrap().template.spec.unwrap()
    };
    let all = manifests(&Overrides::default(), NAMESPACE);
    let pilot = container(&all, "mesh-pilot");
    let pilot_env = env(&pilot);
    assert!(!pilot_env.contains_key("MESH_PILOT_XDS_PLAINTEXT"), "{pilot_env:?}");
    assert!(!pilot_env.contains_key("MESH_PILOT_DEBUG_TOKEN_FILE"), "{pilot_env:?}");
    let ports: Vec<i32> = pilot.ports.unwrap().iter().map(|p| p.container_port).collect();
    assert_eq!(ports, [15012, 15014, 15017]);
    assert!(pod(&all).volumes.unwrap().iter().all(|v| v.secret.is_none()));

    let all = manifests(
        &with_set(&["pilot.xdsPlaintext=true", "pilot.debugTokenSecret=mesh-pilot-debug"]),
        NAMESPACE,
    );
    let pilot = container(&all, "mesh-pilot");
    let pilot_env = env(&pilot);
    assert_eq!(pilot_env["MESH_PILOT_XDS_PLAINTEXT"], "true");
    assert_eq!(pilot_env["MESH_PILOT_DEBUG_TOKEN_FILE"], "/var/run/secrets/mesh-debug/token");
    let mounts: BTreeMap<String, String> =
        pilot.volume_mounts.unwrap().into_iter().map(|m| (m.name, m.mount_path)).collect();
    assert_eq!(mounts["mesh-pilot-debug"], "/var/run/secrets/mesh-debug");
    let volumes = pod(&all).volumes.unwrap();
    let secret = volumes.iter().find(|v| v.name == "mesh-pilot-debug").unwrap();
    assert_eq!(secret.secret.as_ref().unwrap().secret_name.as_deref(), Some("mesh-pilot-debug"));
    // Asking for plaintext xDS serves it on the pod's loopback: still not in the Service.
    let service: Service = object(&all, "Service", "mesh-pilot");
    let ports: Vec<i32> = service.spec.unwrap().ports.unwrap().iter().map(|p| p.port).collect();
    assert!(!ports.contains(&15010), "{ports:?}");
}

#[test]
fn webhooks_call_the_pilot_service() {
    let all = manifests(&Overrides::default(), "istio-system");
    let injector: MutatingWebhookConfiguration =
        object(&all, "MutatingWebhookConfiguration", "mesh-sidecar-injector");
    let webhooks = injector.webhooks.unwrap();
    let names: Vec<&str> = webhooks.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "namespace.sidecar-injector.mesh.io",
            "istio-namespace.sidecar-injector.mesh.io",
            "object.sidecar-injector.mesh.io",
            "istio-object.sidecar-injector.mesh.io",
        ]
    );
    for webhook in &webhooks {
        let service = webhook.client_config.service.clone().unwrap();
        assert_eq!(
            (
                service.name.as_str(),
                service.namespace.as_str(),
                service.path.as_deref(),
                service.port
            ),
            ("mesh-pilot", "istio-system", Some("/inject"), Some(443)),
            "{}",
            webhook.name
        );
        assert_eq!(webhook.client_config.ca_bundle, None, "mesh-pilot fills the caBundle");
        let rules = webhook.rules.clone().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].operations, Some(vec!["CREATE".to_owned()]));
        assert_eq!(rules[0].resources, Some(vec!["pods".to_owned()]));
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(webhook.side_effects, "None");
        assert_eq!(webhook.admission_review_versions, vec!["v1".to_owned()]);
    }
    let namespaced = &webhooks[0];
    let selector = namespaced.namespace_selector.clone().unwrap().match_expressions.unwrap();
    assert_eq!((selector[0].key.as_str(), selector[0].operator.as_str()), ("mesh-injection", "In"));
    assert_eq!(selector[0].values, Some(vec!["enabled".to_owned()]));
    let by_pod = &webhooks[2];
    let labels = by_pod.object_selector.clone().unwrap().match_labels.unwrap();
    assert_eq!(labels.get("sidecar.mesh.io/inject").map(String::as_str), Some("true"));

    let without_istio = manifests(&with_set(&["sidecarInjector.istioLabels=false"]), NAMESPACE);
    let injector: MutatingWebhookConfiguration =
        object(&without_istio, "MutatingWebhookConfiguration", "mesh-sidecar-injector");
    assert_eq!(injector.webhooks.unwrap().len(), 2);

    let validator: ValidatingWebhookConfiguration =
        object(&all, "ValidatingWebhookConfiguration", "mesh-validator");
    let webhooks = validator.webhooks.unwrap();
    assert_eq!(webhooks.len(), 1);
    let service = webhooks[0].client_config.service.clone().unwrap();
    assert_eq!(
        (service.name.as_str(), service.namespace.as_str(), service.path.as_deref(), service.port),
        ("mesh-pilot", "istio-system", Some("/validate"), Some(443))
    );
    assert_eq!(webhooks[0].client_config.ca_bundle, None);
    let rule = &webhooks[0].rules.clone().unwrap()[0];
    assert_eq!(
        rule.api_groups,
        Some(vec![
            "networking.istio.io".to_owned(),
            "security.istio.io".to_owned(),
            "telemetry.istio.io".to_owned()
        ])
    );
    assert_eq!(rule.operations, Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]));
    assert_eq!(webhooks[0].failure_policy.as_deref(), Some("Ignore"));
    let strict = manifests(&with_set(&["validation.failurePolicy=Fail"]), NAMESPACE);
    let validator: ValidatingWebhookConfiguration =
        object(&strict, "ValidatingWebhookConfiguration", "mesh-validator");
    assert_eq!(validator.webhooks.unwrap()[0].failure_policy.as_deref(), Some("Fail"));
}

fn rules(all: &[Manifest], kind: &str, name: &str) -> Vec<PolicyRule> {
    match kind {
        "ClusterRole" => object::<ClusterRole>(all, kind, name).rules.unwrap(),
        _ => object::<Role>(all, kind, name).rules.unwrap(),
    }
}

/// The verbs `rules` grant on `resource` of `group`, and the names they are limited to (empty:
/// any name).
fn grants(rules: &[PolicyRule], group: &str, resource: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for rule in rules {
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        if groups.iter().any(|g| g == group) && resources.iter().any(|r| r == resource) {
            for verb in &rule.verbs {
                out.insert(verb.clone(), rule.resource_names.clone().unwrap_or_default());
            }
        }
    }
    out
}

#[test]
fn rbac_grants_what_the_code_uses_and_no_more() {
    let all = manifests(&Overrides::default(), NAMESPACE);
    for kind in ["ClusterRole", "Role"] {
        for manifest in all.iter().filter(|m| m.kind() == kind) {
            for rule in rules(&all, kind, manifest.name()) {
                assert!(
                    !rule.verbs.iter().any(|v| v == "*"),
                    "{} grants every verb",
                    manifest.name()
                );
                let resources = rule.resources.unwrap_or_default();
                assert!(
                    !resources.iter().any(|r| r.contains('*')),
                    "{} grants every resource",
                    manifest.name()
                );
            }
        }
    }
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let ca = rules(&all, "ClusterRole", "mesh-ca");
    assert_eq!(
        grants(&ca, "authentication.k8s.io", "tokenreviews").keys().collect::<Vec<_>>(),
        ["create"]
    );
    let configmaps = grants(&ca, "", "configmaps");
    for verb in ["get", "list", "watch", "update", "patch"] {
        assert_eq!(configmaps[verb], names(&["mesh-ca-root-cert"]), "{verb}");
    }
    assert_eq!(configmaps["create"], Vec::<String>::new());
    assert!(grants(&ca, "", "secrets").is_empty(), "mesh-ca reads no Secret outside its namespace");
    let ca_role = rules(&all, "Role", "mesh-ca");
    let secrets = grants(&ca_role, "", "secrets");
    assert_eq!(secrets.keys().collect::<Vec<_>>(), ["create", "get"]);
    assert_eq!(secrets["get"], names(&["mesh-ca-secret"]));

    let pilot = rules(&all, "ClusterRole", "mesh-pilot");
    for (group, resource) in
        [("", "services"), ("", "pods"), ("discovery.k8s.io", "endpointslices"), ("", "namespaces")]
    {
        let verbs = grants(&pilot, group, resource);
        assert!(verbs.contains_key("list") && verbs.contains_key("watch"), "{resource}");
        assert!(!verbs.contains_key("update") && !verbs.contains_key("create"), "{resource}");
    }
    // Gateways' TLS Secrets (credentialName), read only.
    let secrets = grants(&pilot, "", "secrets");
    assert_eq!(
        secrets.keys().collect::<Vec<_>>(),
        ["list", "watch"],
        "mesh-pilot reads Secrets only"
    );
    // Every kind charts/base defines, read only.
    for file in mesh_charts::crds("base").unwrap() {
        let crd: CustomResourceDefinition = serde_saphyr::from_str(file.contents).unwrap();
        let verbs = grants(&pilot, &crd.spec.group, &crd.spec.names.plural);
        assert_eq!(
            verbs.keys().collect::<Vec<_>>(),
            ["get", "list", "watch"],
            "{}",
            crd.spec.names.plural
        );
    }
    // The Gateway API: read; statuses written; only GatewayClasses made.
    for resource in ["gateways", "httproutes", "grpcroutes", "tlsroutes", "referencegrants"] {
        let verbs = grants(&pilot, "gateway.networking.k8s.io", resource);
        assert_eq!(verbs.keys().collect::<Vec<_>>(), ["get", "list", "watch"], "{resource}");
    }
    let classes = grants(&pilot, "gateway.networking.k8s.io", "gatewayclasses");
    assert_eq!(classes.keys().collect::<Vec<_>>(), ["create", "get", "list", "patch", "watch"]);
    for kind in ["gatewayclasses", "gateways", "httproutes", "grpcroutes", "tlsroutes"] {
        let verbs = grants(&pilot, "gateway.networking.k8s.io", &format!("{kind}/status"));
        assert_eq!(verbs.keys().collect::<Vec<_>>(), ["patch", "update"], "{kind}/status");
    }
    for (resource, name) in [
        ("mutatingwebhookconfigurations", "mesh-sidecar-injector"),
        ("validatingwebhookconfigurations", "mesh-validator"),
    ] {
        let verbs = grants(&pilot, "admissionregistration.k8s.io", resource);
        assert_eq!(
            verbs.keys().collect::<Vec<_>>(),
            ["get", "list", "patch", "update", "watch"],
            "{resource}"
        );
        assert!(verbs.values().all(|n| *n == names(&[name])), "{resource} limited to {name}");
    }
    // Each role is bound to its own service account in the release namespace.
    for name in ["mesh-ca", "mesh-pilot"] {
        let binding: ClusterRoleBinding = object(&all, "ClusterRoleBinding", name);
        assert_eq!(binding.role_ref.name, name);
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str(), subject.namespace.as_deref()),
            ("ServiceAccount", name, Some(NAMESPACE))
        );
    }
    let binding: RoleBinding = object(&all, "RoleBinding", "mesh-ca");
    assert_eq!(binding.role_ref.name, "mesh-ca");
}

fn mesh_config(all: &[Manifest]) -> mesh_api::mesh::MeshConfig {
    let config: ConfigMap = object(all, "ConfigMap", "mesh");
    let text = config.data.unwrap().remove("mesh").unwrap();
    mesh_api::mesh::MeshConfig::from_yaml("ConfigMap mesh", &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn mesh_config_is_valid_and_follows_the_release() {
    let config = mesh_config(&manifests(&Overrides::default(), "istio-system"));
    assert_eq!(config.trust_domain, "cluster.local");
    assert_eq!(config.root_namespace, "istio-system");
    assert_eq!(config.default_config.discovery_address, "mesh-pilot.istio-system.svc:15012");
    assert_eq!(config.default_config.ca_address, "mesh-ca.istio-system.svc:8060");
    assert_eq!(config.access_log_file, "");

    let file = ValuesFile {
        name: "my-values.yaml".to_owned(),
        text: "global:\n  trustDomain: example.org\nmeshConfig:\n  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n  defaultConfig:\n    concurrency: 4\n".to_owned(),
    };
    let overrides = Overrides { files: vec![file], ..Overrides::default() };
    let all = manifests(&overrides, NAMESPACE);
    let config = mesh_config(&all);
    assert_eq!(config.trust_domain, "example.org");
    assert_eq!(config.default_config.concurrency, 4);
    assert_eq!(config.default_config.discovery_address, "mesh-pilot.mesh-system.svc:15012");
    assert_eq!(format!("{:?}", config.outbound_traffic_policy.mode), "RegistryOnly");
    assert_eq!(env(&container(&all, "mesh-ca"))["MESH_TRUST_DOMAIN"], "example.org");
    assert_eq!(env(&container(&all, "mesh-ingressgateway"))["MESH_TRUST_DOMAIN"], "example.org");
}

#[test]
fn profiles_differ_as_documented() {
    let releases = |p: Profile| -> Vec<String> {
        plan_for(&profile(p), NAMESPACE).into_iter().map(|r| r.name).collect()
    };
    assert_eq!(releases(Profile::Minimal), ["mesh-base", "mesh"]);
    assert_eq!(releases(Profile::Default), ["mesh-base", "mesh", "mesh-ingressgateway"]);
    assert_eq!(
        releases(Profile::Demo),
        ["mesh-base", "mesh", "mesh-egressgateway", "mesh-ingressgateway"]
    );
    assert_eq!(
        plan_for(&Overrides::default(), NAMESPACE),
        plan_for(&profile(Profile::Default), NAMESPACE),
        "the chart's defaults are the default profile"
    );

    let requests = |all: &[Manifest], name: &str| {
        let resources = container(all, name).resources.unwrap();
        let requests = resources.requests.unwrap();
        (requests["cpu"].0.clone(), requests["memory"].0.clone())
    };
    let default = manifests(&profile(Profile::Default), NAMESPACE);
    let demo = manifests(&profile(Profile::Demo), NAMESPACE);
    assert_eq!(requests(&default, "mesh-pilot"), ("200m".to_owned(), "256Mi".to_owned()));
    assert_eq!(requests(&demo, "mesh-pilot"), ("10m".to_owned(), "100Mi".to_owned()));
    assert_eq!(requests(&demo, "mesh-ca"), ("10m".to_owned(), "32Mi".to_owned()));
    assert_eq!(requests(&default, "mesh-ingressgateway"), ("100m".to_owned(), "128Mi".to_owned()));
    assert_eq!(requests(&demo, "mesh-ingressgateway"), ("10m".to_owned(), "40Mi".to_owned()));
    assert_eq!(requests(&demo, "mesh-egressgateway"), ("10m".to_owned(), "40Mi".to_owned()));
    assert_eq!(mesh_config(&default).access_log_file, "");
    assert_eq!(mesh_config(&demo).access_log_file, "/dev/stdout");

    // A profile is a starting point: values and --set go over it.
    let overrides = Overrides {
        profile: Some(Profile::Minimal),
        set: vec!["gateways.egress.enabled=true".to_owned()],
        ..Overrides::default()
    };
    assert_eq!(
        plan_for(&overrides, NAMESPACE).iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["mesh-base", "mesh", "mesh-egressgateway"]
    );
}

#[test]
fn gateways_are_proxies_without_capture() {
    let all = manifests(&profile(Profile::Demo), NAMESPACE);
    for (name, istio, service_type) in [
        ("mesh-ingressgateway", "ingressgateway", "LoadBalancer"),
        ("mesh-egressgateway", "egressgateway", "ClusterIP"),
    ] {
        let deployment: Deployment = object(&all, "Deployment", name);
        let spec = deployment.spec.unwrap();
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["istio"], istio);
        assert_eq!(labels["app"], name);
        let pod = spec.template.spec.unwrap();
        assert!(pod.init_containers.is_none(), "no capture, so no mesh-init");
        assert_eq!(pod.service_account_name.as_deref(), Some(name));
        let proxy = &pod.containers[0];
        let ports: BTreeSet<i32> = proxy.ports.iter().flatten().map(|p| p.container_port).collect();
        assert!(ports.is_superset(&[8080, 8443, 15021].into()), "{ports:?}");
        let proxy_env = env(proxy);
        assert_eq!(proxy_env["MESH_PILOT_ADDRESS"], "mesh-pilot.mesh-system.svc:15012");
        assert_eq!(proxy_env["MESH_CA_ADDRESS"], "mesh-ca.mesh-system.svc:8060");
        assert_eq!(
            proxy_env["MESH_PILOT_IDENTITY"],
            "spiffe://cluster.local/ns/mesh-system/sa/mesh-pilot"
        );
        assert_eq!(proxy_env["MESH_WORKLOAD_NAME"], name);
        let volumes = pod.volumes.unwrap();
        let token = volumes.iter().find(|v| v.name == "mesh-token").unwrap();
        let projection = token.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
            .service_account_token
            .clone()
            .unwrap();
        assert_eq!(projection.audience.as_deref(), Some("mesh-ca"));
        assert!(
            volumes
                .iter()
                .any(|v| v.config_map.as_ref().is_some_and(|c| c.name == "mesh-ca-root-cert"))
        );

        let service: Service = object(&all, "Service", name);
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some(service_type));
        let ports: BTreeMap<i32, IntOrString> =
            spec.ports.unwrap().into_iter().map(|p| (p.port, p.target_port.unwrap())).collect();
        assert_eq!(ports[&80], IntOrString::Int(8080));
        assert_eq!(ports[&443], IntOrString::Int(8443));
        assert_eq!(ports[&15021], IntOrString::Int(15021));
        let _: ServiceAccount = object(&all, "ServiceAccount", name);
    }
}

#[test]
fn disruption_budgets_only_with_more_than_one_replica() {
    let pdbs = |all: &[Manifest]| -> Vec<String> {
        all.iter()
            .filter(|m| m.kind() == "PodDisruptionBudget")
            .map(|m| m.name().to_owned())
            .collect()
    };
    assert!(pdbs(&manifests(&Overrides::default(), NAMESPACE)).is_empty());
    let all = manifests(&with_set(&["pilot.replicaCount=2"]), NAMESPACE);
    assert_eq!(pdbs(&all), ["mesh-pilot"]);
    let pdb: PodDisruptionBudget = object(&all, "PodDisruptionBudget", "mesh-pilot");
    let spec = pdb.spec.unwrap();
    assert_eq!(spec.min_available, Some(IntOrString::Int(1)));
    assert_eq!(spec.selector.unwrap().match_labels.unwrap()["app"], "mesh-pilot");
    let deployment: Deployment = object(&all, "Deployment", "mesh-pilot");
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));
    // The same from a values file, where Helm reads numbers as float64.
    let file =
        ValuesFile { name: "f.yaml".to_owned(), text: "ca:\n  replicaCount: 3\n".to_owned() };
    let all = manifests(&Overrides { files: vec![file], ..Overrides::default() }, NAMESPACE);
    assert_eq!(pdbs(&all), ["mesh-ca"]);
    assert!(
        manifests(
            &with_set(&["pilot.replicaCount=2", "pilot.podDisruptionBudget.enabled=false"]),
            NAMESPACE
        )
        .iter()
        .all(|m| m.kind() != "PodDisruptionBudget")
    );
}

#[test]
fn errors_name_the_chart_template_line_and_key() {
    let plan = plan_for(&with_set(&["global.hub="]), NAMESPACE);
    let mesh = plan.iter().find(|r| r.name == "mesh").unwrap();
    match mesh.render(&Capabilities::default()).unwrap_err() {
        RenderError::Template { chart, template, line, reason } => {
            assert_eq!(chart, "mesh");
            assert_eq!(template, "mesh/templates/_helpers.tpl");
            assert!(line.is_some());
            assert!(
                reason.starts_with("global.hub is required (included from mesh/templates/"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    let old = Capabilities { kube_version: KubeVersion::parse("v1.28.4").unwrap() };
    assert_eq!(
        mesh.render(&old).unwrap_err().to_string(),
        "chart mesh needs Kubernetes >=1.33.0-0; the cluster runs v1.28.4"
    );
    assert_eq!(
        mesh_charts::render(
            "nope",
            &mesh_charts::Values::new(),
            &mesh.release(),
            &Capabilities::default()
        )
        .unwrap_err()
        .to_string(),
        "no chart \"nope\" (the charts are: base, gateway, mesh)"
    );
    let bad =
        mesh_charts::plan(&with_set(&["gateways.ingress.enabled=yes"]), NAMESPACE).unwrap_err();
    assert_eq!(bad.to_string(), "value gateways.ingress.enabled: must be true or false");
    let bad = mesh_charts::plan(&with_set(&["pilot"]), NAMESPACE).unwrap_err();
    assert_eq!(bad.to_string(), "--set \"pilot\": key \"pilot\" has no value");
}

#[test]
fn notes_are_rendered_apart_from_the_manifests() {
    let plan = plan_for(&Overrides::default(), NAMESPACE);
    let mesh = plan.iter().find(|r| r.name == "mesh").unwrap();
    let notes = mesh_charts::notes("mesh", &mesh.values, &mesh.release(), &Capabilities::default())
        .unwrap()
        .unwrap();
    assert!(
        notes.contains("kubectl label namespace <namespace> mesh-injection=enabled"),
        "{notes}"
    );
    assert!(
        mesh.render(&Capabilities::default())
            .unwrap()
            .iter()
            .all(|m| !m.template.ends_with("NOTES.txt"))
    );
}

#[test]
fn install_order_puts_webhooks_last() {
    let mut all = manifests(&Overrides::default(), NAMESPACE);
    mesh_charts::sort_for_install(&mut all);
    let kinds: Vec<&str> = all.iter().map(Manifest::kind).collect();
    let first = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap();
    assert!(first("ServiceAccount") < first("ClusterRole"));
    assert!(first("ConfigMap") < first("Deployment"));
    assert!(first("Service") < first("Deployment"));
    assert!(first("Deployment") < first("MutatingWebhookConfiguration"));
    assert_eq!(kinds.last(), Some(&"ValidatingWebhookConfiguration"));
}
