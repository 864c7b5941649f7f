//! What the kubelet would run for a local pod with a mesh-proxy sidecar, read from the pod spec
//! the injector makes of it (`mesh_api::inject`, the webhook's and `meshctl kube-inject`'s
//! code): mesh-init with the init container's arguments, and mesh-proxy with the proxy
//! container's environment. So every local mesh pod runs the sidecar exactly as an injected
//! Kubernetes pod would, and the local end-to-end suite proves the injected spec works.
//!
//! The kubelet's part is played here, purely: downward-API fields get the pod's values, and the
//! proxy's volumes become directories of the pod (`<pod dir>/volumes/<volume>`), so a path
//! under a volume's mount path points into that directory instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_api::inject::{self, Outcome};

use super::state::Pod;

/// The name of a local pod's app container.
pub const APP_CONTAINER: &str = "app";

/// The sidecar of an injected local pod, ready to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sidecar {
    /// mesh-init's arguments, as the init container names them.
    pub init_args: Vec<String>,
    /// The proxy's environment, resolved as the kubelet would.
    pub proxy_env: Vec<(String, String)>,
    /// The proxy's volumes: name and the directory that stands for it.
    pub volumes: BTreeMap<String, PathBuf>,
    /// The path of the app's readiness probe on the proxy's status port, if it has one.
    pub app_readiness: Option<String>,
}

/// The pod as Kubernetes would hold it before injection: its labels and service account, and
/// the app container with its port and a TCP readiness probe on that port.
pub fn pod_template(pod: &Pod) -> PodTemplateSpec {
    let app = Container {
        name: APP_CONTAINER.to_owned(),
        command: Some(pod.command.clone()),
        ports: pod.port.map(|port| {
            vec![ContainerPort { container_port: i32::from(port), ..ContainerPort::default() }]
        }),
        readiness_probe: pod.port.map(|port| Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(port)),
                ..TCPSocketAction::default()
            }),
            ..Probe::default()
        }),
        ..Container::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            labels: Some(pod.labels.clone()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(pod.service_account.clone()),
            containers: vec![app],
            ..PodSpec::default()
        }),
    }
}

/// The sidecar the injector gives `pod` (a local pod is its own workload), with volumes under
/// `pod_dir`.
pub fn sidecar(pod: &Pod, pod_dir: &Path) -> Result<Sidecar, String> {
    let injected =
        match inject::inject(&pod_template(pod), Some(&pod.name), &inject::Config::default()) {
            Ok(Outcome::Injected(injected)) => injected,
            Ok(Outcome::Skipped(why)) => {
                return Err(format!("the injector skipped the pod: {why:?}"));
            }
            Err(err) => return Err(format!("the injector refused the pod: {err}")),
        };
    let spec = injected.spec.unwrap_or_default();
    let containers = || spec.init_containers.iter().flatten().chain(&spec.containers);
    let named = |name: &str| {
        containers()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("the injected pod has no {name}"))
    };
    let init = named(inject::INIT_CONTAINER)?;
    let proxy = named(inject::PROXY_CONTAINER)?;
    let volumes: BTreeMap<String, PathBuf> = proxy
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), pod_dir.join("volumes").join(&m.name)))
        .collect();
    let mounts: Vec<(&str, &Path)> = proxy
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| Some((m.mount_path.as_str(), volumes.get(&m.name)?.as_path())))
        .collect();
    let mut proxy_env = Vec::new();
    for var in proxy.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => in_volume(value, &mounts),
            (None, Some(from)) => {
                let path = from.field_ref.as_ref().map(|f| f.field_path.as_str()).unwrap_or("");
                field(pod, path)
                    .ok_or_else(|| format!("{}: no local value for {path:?}", var.name))?
            }
            (None, None) => String::new(),
        };
        proxy_env.push((var.name.clone(), value));
    }
    let app_readiness = spec
        .containers
        .iter()
        .find(|c| c.name == APP_CONTAINER)
        .and_then(|c| c.readiness_probe.as_ref()?.http_get.as_ref()?.path.clone());
    Ok(Sidecar {
        init_args: init.args.clone().unwrap_or_default(),
        proxy_env,
        volumes,
        app_readiness,
    })
}

/// A downward-API field of the pod.
fn field(pod: &Pod, path: &str) -> Option<String> {
    match path {
        "metadata.name" => Some(pod.name.clone()),
        "metadata.namespace" => Some(pod.namespace.clone()),
        "status.podIP" => Some(pod.ip.to_string()),
        "spec.serviceAccountName" => Some(pod.service_account.clone()),
        _ => None,
    }
}

/// `value` with a mount path at its start replaced by the directory of that volume.
fn in_volume(value: &str, mounts: &[(&str, &Path)]) -> String {
    for (mount, dir) in mounts {
        if let Some(rest) = value.strip_prefix(mount)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{}{rest}", dir.display());
        }
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::Ipv4Addr;

    use super::*;

    fn pod() -> Pod {
        Pod {
            name: "reviews-v2".into(),
            namespace: "bookinfo".into(),
            ip: Ipv4Addr::new(10, 77, 0, 12),
            veth: 12,
            labels: [("app".to_owned(), "reviews".to_owned())].into(),
            service_account: "bookinfo-reviews".into(),
            port: Some(9080),
            sidecar: None,
            command: vec!["bookinfo".into(), "reviews".into()],
            gateway: false,
            forwards: Vec::new(),
        }
    }

    #[test]
    fn the_sidecar_is_what_the_injector_names_with_the_kubelets_part_played_locally() {
        let sidecar = sidecar(&pod(), Path::new("state/pods/reviews-v2")).unwrap();
        let env: BTreeMap<&str, &str> =
            sidecar.proxy_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env["POD_NAME"], "reviews-v2");
        assert_eq!(env["POD_NAMESPACE"], "bookinfo");
        assert_eq!(env["INSTANCE_IP"], "10.77.0.12");
        assert_eq!(env["SERVICE_ACCOUNT"], "bookinfo-reviews");
        assert_eq!(env["MESH_WORKLOAD_NAME"], "reviews-v2");
        assert_eq!(env["MESH_PILOT_ADDRESS"], "mesh-pilot.mesh-system.svc:15012");
        assert_eq!(env["MESH_TOKEN_PATH"], "state/pods/reviews-v2/volumes/mesh-token/mesh-token");
        assert_eq!(
            env["MESH_ROOT_CERT"],
            "state/pods/reviews-v2/volumes/mesh-ca-root-cert/root-cert.pem"
        );
        assert_eq!(env["MESH_LABELS_FILE"], "state/pods/reviews-v2/volumes/mesh-podinfo/labels");
        assert!(env["MESH_KUBE_APP_PROBERS"].contains(r#""tcpSocket":{"port":9080}"#));
        assert_eq!(sidecar.app_readiness.as_deref(), Some("/app-health/app/readyz"));
        // mesh-init's arguments are the init container's, word for word.
        let template = pod_template(&pod());
        let Outcome::Injected(injected) =
            inject::inject(&template, Some("reviews-v2"), &inject::Config::default()).unwrap()
        else {
            panic!("not injected")
        };
        let init = &injected.spec.unwrap().init_containers.unwrap()[0];
        assert_eq!(Some(&sidecar.init_args), init.args.as_ref());
        assert_eq!(
            sidecar.volumes.keys().collect::<Vec<_>>(),
            ["mesh-ca-root-cert", "mesh-data", "mesh-podinfo", "mesh-token"]
        );
    }

    #[test]
    fn only_whole_path_segments_of_a_mount_are_replaced() {
        let mounts = [("/var/run/secrets/mesh", Path::new("pod/volumes/certs"))];
        assert_eq!(
            in_volume("/var/run/secrets/mesh/root-cert.pem", &mounts),
            "pod/volumes/certs/root-cert.pem"
        );
        assert_eq!(in_volume("/var/run/secrets/meshy", &mounts), "/var/run/secrets/meshy");
        assert_eq!(in_volume("mesh-pilot:15012", &mounts), "mesh-pilot:15012");
    }
}
