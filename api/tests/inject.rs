//! Sidecar injection against golden files (`tests/data/inject/*.injected.yaml`; regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p mesh-api --test inject` and read the diff), and its rules:
//! idempotent, skips hostNetwork and opted-out pods, refuses bad annotations by name.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::PodTemplateSpec;
use mesh_api::inject::{Config, InjectError, Outcome, Skip, inject};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/inject").join(name)
}

fn read(name: &str) -> PodTemplateSpec {
    let text = std::fs::read_to_string(data(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn injected(pod: &PodTemplateSpec, config: &Config) -> PodTemplateSpec {
    match inject(pod, Some("hello"), config).unwrap() {
        Outcome::Injected(pod) => *pod,
        Outcome::Skipped(why) => panic!("skipped: {why:?}"),
    }
}

fn golden(name: &str, pod: &PodTemplateSpec) {
    let text = serde_saphyr::to_string(pod).unwrap();
    let path = data(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    pretty_assertions::assert_eq!(want, text, "{name} differs from its golden file");
}

#[test]
fn a_native_sidecar_runs_first_with_the_capture_before_it() {
    let pod = injected(&read("hello.yaml"), &Config::default());
    golden("hello.native.injected.yaml", &pod);
    let spec = pod.spec.unwrap();
    let inits: Vec<&str> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(inits, ["mesh-init", "mesh-proxy", "migrate"]);
    assert_eq!(spec.containers.len(), 1, "the app alone among the containers");
}

#[test]
fn without_native_sidecars_the_proxy_is_the_first_container_holding_the_app_and_the_capture_runs_last()
 {
    let config = Config { native_sidecar: false, ..Config::default() };
    let pod = injected(&read("hello.yaml"), &config);
    golden("hello.classic.injected.yaml", &pod);
    let spec = pod.spec.unwrap();
    let inits: Vec<&str> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(inits, ["migrate", "mesh-init"]);
    let containers: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(containers, ["mesh-proxy", "hello"]);
    let proxy = &spec.containers[0];
    assert_eq!(proxy.restart_policy, None);
    let hook = proxy.lifecycle.as_ref().unwrap().post_start.as_ref().unwrap();
    let command = hook.exec.as_ref().unwrap().command.as_ref().unwrap();
    assert_eq!(command, &["mesh-proxy", "wait"], "the app starts once the proxy is ready");
    let annotations = pod.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations["kubectl.kubernetes.io/default-container"], "hello");
}

#[test]
fn app_probes_go_through_the_proxy_unless_the_pod_says_not_to() {
    let pod = injected(&read("probes.yaml"), &Config::default());
    golden("probes.injected.yaml", &pod);
    let spec = pod.spec.unwrap();
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    let probers = proxy.env.iter().flatten().find(|e| e.name == "MESH_KUBE_APP_PROBERS").unwrap();
    let probers: mesh_api::inject::probes::AppProbers =
        serde_json::from_str(probers.value.as_deref().unwrap()).unwrap();
    let paths: Vec<&str> = probers.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        ["/app-health/web/livez", "/app-health/web/readyz", "/app-health/web/startupz"]
    );
    let ready = spec.containers[0].readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(ready.path.as_deref(), Some("/app-health/web/readyz"));

    let mut pod = read("probes.yaml");
    pod.metadata
        .as_mut()
        .unwrap()
        .annotations
        .get_or_insert_with(Default::default)
        .insert("sidecar.istio.io/rewriteAppHTTPProbers".to_owned(), "false".to_owned());
    let original = pod.spec.as_ref().unwrap().containers[0].clone();
    let spec = injected(&pod, &Config::default()).spec.unwrap();
    assert_eq!(spec.containers[0], original, "Istio's opt-out annotation is honoured");
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    assert!(!proxy.env.iter().flatten().any(|e| e.name == "MESH_KUBE_APP_PROBERS"));
}

#[test]
fn annotations_become_capture_flags_and_proxy_settings() {
    let pod = injected(&read("annotated.yaml"), &Config::default());
    golden("annotated.injected.yaml", &pod);
    let spec = pod.spec.unwrap();
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let args = init.args.as_ref().unwrap().join(" ");
    for want in [
        "--inbound-ports 8080,9090",
        "--outbound-ip-ranges 10.0.0.0/8,172.16.0.0/12",
        "--outbound-exclude-ip-ranges 169.254.169.254/32",
        "--outbound-ports 443",
        "--outbound-exclude-ports 5432",
        "--exclude-interfaces eth1",
        "--inbound-exclude-ports 15020,15021,15090,15008,9091",
    ] {
        assert!(args.contains(want), "{want:?} not in {args:?}");
    }
    // nativeSidecar "false" on the pod wins over the default.
    assert_eq!(spec.containers[0].name, "mesh-proxy");
}

#[test]
fn injecting_twice_changes_nothing() {
    let once = injected(&read("hello.yaml"), &Config::default());
    assert_eq!(
        inject(&once, Some("hello"), &Config::default()).unwrap(),
        Outcome::Skipped(Skip::AlreadyInjected)
    );
}

#[test]
fn host_network_and_opted_out_pods_are_left_alone() {
    let mut pod = read("hello.yaml");
    pod.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(
        inject(&pod, None, &Config::default()).unwrap(),
        Outcome::Skipped(Skip::HostNetwork)
    );
    for (where_, key) in
        [("label", "sidecar.mesh.io/inject"), ("annotation", "sidecar.istio.io/inject")]
    {
        let mut pod = read("hello.yaml");
        let meta = pod.metadata.as_mut().unwrap();
        let map = if where_ == "label" { &mut meta.labels } else { &mut meta.annotations };
        map.get_or_insert_with(Default::default).insert(key.to_owned(), "false".to_owned());
        assert_eq!(
            inject(&pod, None, &Config::default()).unwrap(),
            Outcome::Skipped(Skip::OptedOut),
            "{where_} {key}"
        );
    }
}

#[test]
fn a_bad_annotation_is_refused_by_name() {
    for (key, value, said) in [
        ("traffic.sidecar.mesh.io/excludeOutboundPorts", "5432,http", "\"http\" is not a port"),
        ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "10.0.0.0/33", "bad prefix length"),
        ("sidecar.mesh.io/proxyMemory", "lots", "not a Kubernetes quantity"),
        ("sidecar.mesh.io/nativeSidecar", "maybe", "not true or false"),
    ] {
        let mut pod = read("hello.yaml");
        let meta = pod.metadata.as_mut().unwrap();
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value.to_owned());
        match inject(&pod, None, &Config::default()) {
            Err(InjectError::Annotation { reason, .. }) => {
                assert!(reason.contains(said), "{key}: {reason}")
            }
            other => panic!("{key}={value}: {other:?}"),
        }
    }
}
