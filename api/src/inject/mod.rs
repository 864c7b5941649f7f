//! Sidecar injection, one pure function shared by the webhook and `meshctl kube-inject`: a pod
//! template in, the same pod with the mesh's containers and volumes out, so that both give the
//! same result byte for byte.
//!
//! What goes in (Istio's shape, the mesh's names): the `mesh-init` init container with
//! mesh-init's real flags from the pod's capture annotations; the `mesh-proxy` container as uid
//! 1337 with a read-only root file system and no capabilities, the pod's identity from the
//! downward API, a projected service-account token for `mesh-ca`, the mesh root from the
//! `mesh-ca-root-cert` ConfigMap, and readiness and startup probes on 15021; Prometheus
//! annotations and a status annotation naming what was added. A native sidecar (an init
//! container that keeps running) when asked for or configured, else the proxy as the first
//! container, holding the app's start until it is ready (`mesh-proxy wait` as its postStart
//! hook). The app's HTTP and TCP probes go through the proxy ([`probes`]). Injecting twice
//! changes nothing; `hostNetwork` pods and pods that opt out are left alone.

pub mod annotations;
pub mod probes;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
    Lifecycle, LifecycleHandler, ObjectFieldSelector, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SecurityContext, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::ports;

/// The init container that applies the capture rules.
pub const INIT_CONTAINER: &str = "mesh-init";
/// The proxy container.
pub const PROXY_CONTAINER: &str = "mesh-proxy";
/// The projected token volume (audience `mesh-ca`).
pub const TOKEN_VOLUME: &str = "mesh-token";
/// The root certificate volume (ConfigMap [`ROOT_CONFIGMAP`]).
pub const ROOT_VOLUME: &str = "mesh-ca-root-cert";
/// The ConfigMap mesh-ca writes the root certificate into in every namespace.
pub const ROOT_CONFIGMAP: &str = "mesh-ca-root-cert";
/// The downward-API volume with the pod's labels and annotations.
pub const PODINFO_VOLUME: &str = "mesh-podinfo";
/// A writable scratch directory for the proxy (its root file system is read-only).
pub const SCRATCH_VOLUME: &str = "mesh-data";
/// Audience of the projected token: mesh-ca accepts only tokens meant for it.
pub const TOKEN_AUDIENCE: &str = "mesh-ca";

/// What injection is configured with (the webhook's values, or `meshctl kube-inject`'s flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The mesh-proxy image.
    pub proxy_image: String,
    /// The mesh-init image.
    pub init_image: String,
    /// Put the proxy in as a native sidecar (Kubernetes 1.29+) unless the pod says otherwise.
    pub native_sidecar: bool,
    /// `host:port` of the pilot.
    pub pilot_address: String,
    /// `host:port` of mesh-ca.
    pub ca_address: String,
    /// The trust domain.
    pub trust_domain: String,
    /// The cluster's name in the mesh.
    pub cluster_id: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            proxy_image: "ghcr.io/mesh/mesh-proxy:latest".to_owned(),
            init_image: "ghcr.io/mesh/mesh-init:latest".to_owned(),
            native_sidecar: true,
            pilot_address: format!(
                "mesh-pilot.{}.svc:{}",
                ports::CONTROL_PLANE_NAMESPACE,
                ports::PILOT_XDS_TLS
            ),
            ca_address: format!(
                "mesh-ca.{}.svc:{}",
                ports::CONTROL_PLANE_NAMESPACE,
                ports::CA_GRPC
            ),
            trust_domain: crate::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            cluster_id: "Kubernetes".to_owned(),
        }
    }
}

/// What injection did with a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The pod, with the sidecar.
    Injected(Box<PodTemplateSpec>),
    /// Left as it was, and why.
    Skipped(Skip),
}

/// Why a pod was left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// It has the status annotation: injected already.
    AlreadyInjected,
    /// It uses the node's network: capturing would capture the node.
    HostNetwork,
    /// It says `sidecar.mesh.io/inject: "false"`.
    OptedOut,
}

/// Why a pod cannot be injected as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    /// The pod template has no spec.
    #[error("the pod template has no spec")]
    NoSpec,
    /// An annotation's value cannot be used.
    #[error("annotation {annotation}: {reason}")]
    Annotation {
        /// The annotation.
        annotation: String,
        /// What is wrong with its value.
        reason: String,
    },
}

/// Injects the sidecar into `pod`. `workload` names what owns it (a Deployment's name), for
/// metrics; the pod's own name or `app` label serve when it is `None`.
pub fn inject(
    pod: &PodTemplateSpec,
    workload: Option<&str>,
    config: &Config,
) -> Result<Outcome, InjectError> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or(InjectError::NoSpec)?;
    let annotations = meta.annotations.as_ref();
    if annotations.is_some_and(|a| a.contains_key(annotations::STATUS)) {
        return Ok(Outcome::Skipped(Skip::AlreadyInjected));
    }
    if spec.host_network == Some(true) {
        return Ok(Outcome::Skipped(Skip::HostNetwork));
    }
    if annotations::opted_out(meta.labels.as_ref(), annotations) {
        return Ok(Outcome::Skipped(Skip::OptedOut));
    }
    let native = match annotations::sidecar(annotations, "nativeSidecar") {
        Some(value) => parse_bool("sidecar.mesh.io/nativeSidecar", value)?,
        None => config.native_sidecar,
    };
    let rewrite_probes = match annotations::sidecar(annotations, "rewriteAppHTTPProbers") {
        Some(value) => parse_bool("sidecar.mesh.io/rewriteAppHTTPProbers", value)?,
        None => true,
    };
    let init = init_container(annotations, config)?;
    let mut spec = spec.clone();
    let probers =
        if rewrite_probes { probes::rewrite(&mut spec) } else { probes::AppProbers::new() };
    let proxy = proxy_container(&meta, workload, native, &probers, config)?;
    let app_container = spec.containers.first().map(|c| c.name.clone());
    let mut inits = spec.init_containers.take().unwrap_or_default();
    if native {
        // The capture first, then the proxy, then the app's own init containers: they run with
        // the mesh already in place.
        inits.insert(0, proxy);
        inits.insert(0, init);
    } else {
        // The capture last, so the app's init containers are not cut off from the network
        // before a proxy runs; the proxy first, and its postStart hook holds the app's start
        // until it is ready (the kubelet starts containers in order, each after the hook of the
        // one before). `kubectl exec` still defaults to the app (the annotation below).
        inits.push(init);
        spec.containers.insert(0, proxy);
    }
    spec.init_containers = Some(inits);
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.extend(mesh_volumes());

    let mut meta = meta;
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    let canonical = canonical_labels(labels, workload);
    labels.insert("security.istio.io/tlsMode".to_owned(), "istio".to_owned());
    labels.extend(canonical);
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert("prometheus.io/scrape".to_owned(), "true".to_owned());
    annotations.insert("prometheus.io/port".to_owned(), ports::PROXY_PROMETHEUS.to_string());
    annotations.insert("prometheus.io/path".to_owned(), "/stats/prometheus".to_owned());
    if let Some(app) = app_container {
        annotations.entry("kubectl.kubernetes.io/default-container".to_owned()).or_insert(app);
    }
    let status = serde_json::json!({
        "initContainers": if native { vec![INIT_CONTAINER, PROXY_CONTAINER] } else { vec![INIT_CONTAINER] },
        "containers": if native { Vec::<&str>::new() } else { vec![PROXY_CONTAINER] },
        "volumes": [SCRATCH_VOLUME, PODINFO_VOLUME, TOKEN_VOLUME, ROOT_VOLUME],
        "nativeSidecar": native,
    });
    annotations.insert(annotations::STATUS.to_owned(), status.to_string());
    Ok(Outcome::Injected(Box::new(PodTemplateSpec { metadata: Some(meta), spec: Some(spec) })))
}

fn parse_bool(annotation: &str, value: &str) -> Result<bool, InjectError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "y" | "yes" | "on" => Ok(true),
        "false" | "n" | "no" | "off" => Ok(false),
        other => Err(InjectError::Annotation {
            annotation: annotation.to_owned(),
            reason: format!("{other:?} is not true or false"),
        }),
    }
}

/// mesh-init's flags from the capture annotations (Istio's `traffic.sidecar.istio.io/*`
/// names, under either prefix), each value checked as mesh-init would read it.
fn init_container(
    annotations: Option<&BTreeMap<String, String>>,
    config: &Config,
) -> Result<Container, InjectError> {
    let mut args = vec![
        "--proxy-port".to_owned(),
        ports::PROXY_OUTBOUND.to_string(),
        "--inbound-capture-port".to_owned(),
        ports::PROXY_INBOUND.to_string(),
        "--proxy-uid".to_owned(),
        ports::PROXY_UID.to_string(),
    ];
    let excluded: Vec<String> =
        ports::DEFAULT_INBOUND_EXCLUDED.iter().map(u16::to_string).collect();
    let mut inbound_excluded = excluded.join(",");
    let flags: [(&str, &str, Check); 7] = [
        ("includeInboundPorts", "--inbound-ports", Check::PortsOrStar),
        ("excludeInboundPorts", "--inbound-exclude-ports", Check::Ports),
        ("includeOutboundIPRanges", "--outbound-ip-ranges", Check::RangesOrStar),
        ("excludeOutboundIPRanges", "--outbound-exclude-ip-ranges", Check::Ranges),
        ("includeOutboundPorts", "--outbound-ports", Check::Ports),
        ("excludeOutboundPorts", "--outbound-exclude-ports", Check::Ports),
        ("excludeInterfaces", "--exclude-interfaces", Check::Interfaces),
    ];
    for (name, flag, check) in flags {
        let Some(value) = annotations::traffic(annotations, name) else { continue };
        let value =
            value.split(',').map(str::trim).filter(|v| !v.is_empty()).collect::<Vec<_>>().join(",");
        check.run(&value).map_err(|reason| InjectError::Annotation {
            annotation: format!("traffic.sidecar.mesh.io/{name}"),
            reason,
        })?;
        if flag == "--inbound-exclude-ports" {
            if !value.is_empty() {
                inbound_excluded = format!("{inbound_excluded},{value}");
            }
            continue;
        }
        args.push(flag.to_owned());
        args.push(value);
    }
    args.push("--inbound-exclude-ports".to_owned());
    args.push(inbound_excluded);
    Ok(Container {
        name: INIT_CONTAINER.to_owned(),
        image: Some(config.init_image.clone()),
        args: Some(args),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            ..SecurityContext::default()
        }),
        resources: Some(resources(
            &[("cpu", "10m"), ("memory", "16Mi")],
            &[("cpu", "100m"), ("memory", "64Mi")],
        )),
        ..Container::default()
    })
}

/// How a capture annotation's value is checked.
#[derive(Clone, Copy)]
enum Check {
    Ports,
    PortsOrStar,
    Ranges,
    RangesOrStar,
    Interfaces,
}

impl Check {
    fn run(self, value: &str) -> Result<(), String> {
        let mut items = value.split(',').filter(|v| !v.is_empty());
        let star = value == "*";
        match self {
            Check::PortsOrStar | Check::RangesOrStar if star => Ok(()),
            Check::Ports | Check::PortsOrStar => items.try_for_each(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .map(drop)
                    .ok_or(format!("{p:?} is not a port"))
            }),
            Check::Ranges | Check::RangesOrStar => items.try_for_each(|r| {
                let (ip, prefix) = r.split_once('/').unwrap_or((r, ""));
                let ip: std::net::IpAddr =
                    ip.parse().map_err(|_| format!("{r:?} is not an IP range"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                match prefix.parse::<u8>() {
                    Ok(p) if p <= max => Ok(()),
                    _ if prefix.is_empty() => Ok(()),
                    _ => Err(format!("{r:?} has a bad prefix length")),
                }
            }),
            Check::Interfaces => items.try_for_each(|i| {
                let ok = i.len() <= 15
                    && i.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
                if ok { Ok(()) } else { Err(format!("{i:?} is not an interface name")) }
            }),
        }
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect()
}

fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(requests)),
        limits: Some(quantities(limits)),
        ..ResourceRequirements::default()
    }
}

fn field(path: &str) -> Option<EnvVarSource> {
    Some(EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.to_owned(),
            ..ObjectFieldSelector::default()
        }),
        ..EnvVarSource::default()
    })
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.to_owned()), ..EnvVar::default() }
}

fn probe(period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".to_owned()),
            port: IntOrString::Int(i32::from(ports::PROXY_HEALTH)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

/// The proxy: its identity from the downward API, its token, root and scratch space mounted,
/// probes on 15021, resources from the annotations.
fn proxy_container(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    workload: Option<&str>,
    native: bool,
    probers: &probes::AppProbers,
    config: &Config,
) -> Result<Container, InjectError> {
    let annotations = meta.annotations.as_ref();
    let quantity = |name: &str, default: &str| -> Result<String, InjectError> {
        let Some(value) = annotations::sidecar(annotations, name) else {
            return Ok(default.to_owned());
        };
        let ok = !value.is_empty()
            && value.chars().next().is_some_and(|c| c.is_ascii_digit())
            && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
        if ok {
            Ok(value.to_owned())
        } else {
            Err(InjectError::Annotation {
                annotation: format!("sidecar.mesh.io/{name}"),
                reason: format!("{value:?} is not a Kubernetes quantity"),
            })
        }
    };
    let requests =
        [("cpu", quantity("proxyCPU", "100m")?), ("memory", quantity("proxyMemory", "128Mi")?)];
    let limits = [
        ("cpu", quantity("proxyCPULimit", "2000m")?),
        ("memory", quantity("proxyMemoryLimit", "1024Mi")?),
    ];
    let pairs = |p: &[(&str, String); 2]| {
        p.iter().map(|(k, v)| ((*k).to_owned(), Quantity(v.clone()))).collect()
    };
    let mut env = vec![
        EnvVar { name: "POD_NAME".into(), value_from: field("metadata.name"), ..EnvVar::default() },
        EnvVar {
            name: "POD_NAMESPACE".into(),
            value_from: field("metadata.namespace"),
            ..EnvVar::default()
        },
        EnvVar {
            name: "INSTANCE_IP".into(),
            value_from: field("status.podIP"),
            ..EnvVar::default()
        },
        EnvVar {
            name: "SERVICE_ACCOUNT".into(),
            value_from: field("spec.serviceAccountName"),
            ..EnvVar::default()
        },
        env("MESH_PILOT_ADDRESS", &config.pilot_address),
        env("MESH_CA_ADDRESS", &config.ca_address),
        env("MESH_TRUST_DOMAIN", &config.trust_domain),
        env("MESH_CLUSTER_ID", &config.cluster_id),
        env("MESH_TOKEN_PATH", "/var/run/secrets/tokens/mesh-token"),
        env("MESH_ROOT_CERT", "/var/run/secrets/mesh/root-cert.pem"),
        env("MESH_LABELS_FILE", "/etc/mesh/pod/labels"),
    ];
    if let Some(workload) = workload {
        env.push(self::env("MESH_WORKLOAD_NAME", workload));
    }
    if !probers.is_empty() {
        let json = serde_json::to_string(probers).unwrap_or_default();
        env.push(self::env(probes::PROBERS_ENV, &json));
    }
    if let Some(concurrency) = annotations::sidecar(annotations, "concurrency") {
        concurrency.parse::<u16>().map_err(|_| InjectError::Annotation {
            annotation: "sidecar.mesh.io/concurrency".to_owned(),
            reason: format!("{concurrency:?} is not a number of workers"),
        })?;
        env.push(self::env("MESH_CONCURRENCY", concurrency));
    }
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    Ok(Container {
        name: PROXY_CONTAINER.to_owned(),
        image: Some(config.proxy_image.clone()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http-envoy-prom".to_owned()),
            container_port: i32::from(ports::PROXY_PROMETHEUS),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe(15, 4)),
        startup_probe: Some(probe(1, 600)),
        resources: Some(ResourceRequirements {
            requests: Some(pairs(&requests)),
            limits: Some(pairs(&limits)),
            ..ResourceRequirements::default()
        }),
        restart_policy: native.then(|| "Always".to_owned()),
        lifecycle: (!native).then(|| Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![PROXY_CONTAINER.to_owned(), "wait".to_owned()]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(i64::from(ports::PROXY_UID)),
            run_as_group: Some(i64::from(ports::PROXY_GID)),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount(SCRATCH_VOLUME, "/var/lib/mesh", false),
            mount(PODINFO_VOLUME, "/etc/mesh/pod", true),
            mount(TOKEN_VOLUME, "/var/run/secrets/tokens", true),
            mount(ROOT_VOLUME, "/var/run/secrets/mesh", true),
        ]),
        ..Container::default()
    })
}

/// The volumes the proxy mounts.
fn mesh_volumes() -> Vec<Volume> {
    let downward = |name: &str, path: &str| DownwardAPIVolumeFile {
        path: name.to_owned(),
        field_ref: Some(ObjectFieldSelector {
            field_path: path.to_owned(),
            ..ObjectFieldSelector::default()
        }),
        ..DownwardAPIVolumeFile::default()
    };
    vec![
        Volume {
            name: SCRATCH_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: PODINFO_VOLUME.to_owned(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    downward("labels", "metadata.labels"),
                    downward("annotations", "metadata.annotations"),
                ]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: TOKEN_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.to_owned()),
                        expiration_seconds: Some(43_200),
                        path: "mesh-token".to_owned(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: ROOT_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: ROOT_CONFIGMAP.to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

/// Label of a workload's canonical service, which telemetry names it by.
pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
/// Label of a workload's canonical revision.
pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// The canonical service labels Istio's injector gives a pod of `workload` with `labels`:
/// those it has, else the name from `app.kubernetes.io/name`, `app`, the workload's name (or
/// `unknown`), and the revision from `app.kubernetes.io/version`, `version` (or `latest`).
pub fn canonical_labels(
    labels: &BTreeMap<String, String>,
    workload: Option<&str>,
) -> [(String, String); 2] {
    let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k)).cloned();
    let name = first(&[CANONICAL_NAME, "app.kubernetes.io/name", "app"])
        .or_else(|| workload.map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    let revision = first(&[CANONICAL_REVISION, "app.kubernetes.io/version", "version"])
        .unwrap_or_else(|| "latest".to_owned());
    [(CANONICAL_NAME.to_owned(), name), (CANONICAL_REVISION.to_owned(), revision)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_labels_follow_istios_injector() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let values =
            |l: &BTreeMap<String, String>, w: Option<&str>| canonical_labels(l, w).map(|(_, v)| v);
        assert_eq!(
            values(&labels(&[("app", "reviews"), ("version", "v2")]), None),
            ["reviews", "v2"]
        );
        let kube = labels(&[
            ("app", "r"),
            ("app.kubernetes.io/name", "reviews"),
            ("app.kubernetes.io/version", "2.1"),
        ]);
        assert_eq!(values(&kube, Some("w")), ["reviews", "2.1"], "the recommended labels first");
        let own = labels(&[(CANONICAL_NAME, "rev"), ("app", "reviews")]);
        assert_eq!(values(&own, None), ["rev", "latest"], "a pod's own are kept");
        assert_eq!(values(&BTreeMap::new(), Some("reviews-v2")), ["reviews-v2", "latest"]);
        assert_eq!(values(&BTreeMap::new(), None), ["unknown", "latest"]);
    }
}
