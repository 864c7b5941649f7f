//! App probes through the proxy, as pilot-agent does them. Under STRICT mTLS the kubelet's
//! plaintext probes to the app's port would be refused by the proxy's inbound listener, so
//! injection rewrites each HTTP and TCP probe of the app's containers into an HTTP GET of
//! `/app-health/<container>/<livez|readyz|startupz>` on the proxy's status port (15020, never
//! captured), and hands the original probes to the proxy in [`PROBERS_ENV`]; the proxy calls the
//! app on the pod IP from uid 1337 (not captured either) and answers with what it found.
//!
//! Left as they are: gRPC probes, probes with `scheme: HTTPS`, exec probes, probes on a named
//! port the container does not declare, and every probe of a pod annotated
//! `sidecar.mesh.io/rewriteAppHTTPProbers: "false"` (or Istio's annotation).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use crate::ports;

/// The proxy's environment variable carrying the original probes (JSON of [`AppProbers`]).
pub const PROBERS_ENV: &str = "MESH_KUBE_APP_PROBERS";

/// The prefix of the rewritten probes' paths.
pub const APP_HEALTH_PREFIX: &str = "/app-health/";

/// The original probes by rewritten path (`/app-health/reviews/readyz`).
pub type AppProbers = BTreeMap<String, AppProber>;

/// One original probe, as the proxy runs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProber {
    /// An HTTP GET of the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpProbe>,
    /// A TCP connect to the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpProbe>,
    /// How long the app has to answer (the kubelet's default is 1 s).
    #[serde(default = "one_second")]
    pub timeout_seconds: u32,
}

fn one_second() -> u32 {
    1
}

/// An HTTP probe of the app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// The path (with query), `/` when the probe named none.
    pub path: String,
    /// The app's port.
    pub port: u16,
    /// A host to call instead of the pod IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Headers the kubelet would have sent, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<Header>,
}

/// A header of an HTTP probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A TCP probe of the app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpProbe {
    /// The app's port.
    pub port: u16,
    /// A host to call instead of the pod IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Rewrites the HTTP and TCP probes of the app containers of `spec` (the proxy and mesh-init
/// are not among them yet) and returns the originals by their new path; empty when none was
/// rewritten.
pub fn rewrite(spec: &mut PodSpec) -> AppProbers {
    let mut probers = AppProbers::new();
    for container in &mut spec.containers {
        let name = container.name.clone();
        let declared = declared_ports(container);
        for (kind, probe) in [
            ("livez", &mut container.liveness_probe),
            ("readyz", &mut container.readiness_probe),
            ("startupz", &mut container.startup_probe),
        ] {
            let Some(original) = probe.as_mut() else { continue };
            let Some(prober) = prober(original, &declared) else { continue };
            let path = format!("{APP_HEALTH_PREFIX}{name}/{kind}");
            original.tcp_socket = None;
            original.http_get = Some(HTTPGetAction {
                path: Some(path.clone()),
                port: IntOrString::Int(i32::from(ports::PROXY_MERGED_METRICS)),
                scheme: Some("HTTP".to_owned()),
                ..HTTPGetAction::default()
            });
            probers.insert(path, prober);
        }
    }
    probers
}

/// The container's named ports.
fn declared_ports(container: &Container) -> BTreeMap<String, u16> {
    container
        .ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect()
}

/// What the proxy must do for `probe`, if it is one the proxy can run.
fn prober(probe: &Probe, declared: &BTreeMap<String, u16>) -> Option<AppProber> {
    let port = |port: &IntOrString| match port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|n| *n != 0),
        IntOrString::String(name) => declared.get(name).copied(),
    };
    let timeout_seconds =
        probe.timeout_seconds.and_then(|t| u32::try_from(t).ok()).filter(|t| *t > 0).unwrap_or(1);
    if let Some(get) = &probe.http_get {
        if get.scheme.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("HTTP")) {
            return None;
        }
        let path = get.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".to_owned());
        let http_headers = get
            .http_headers
            .iter()
            .flatten()
            .map(|h| Header { name: h.name.clone(), value: h.value.clone() })
            .collect();
        let http = HttpProbe { path, port: port(&get.port)?, host: get.host.clone(), http_headers };
        return Some(AppProber { http_get: Some(http), tcp_socket: None, timeout_seconds });
    }
    let tcp = probe.tcp_socket.as_ref()?;
    let tcp = TcpProbe { port: port(&tcp.port)?, host: tcp.host.clone() };
    Some(AppProber { http_get: None, tcp_socket: Some(tcp), timeout_seconds })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn http_and_tcp_probes_go_through_the_proxy_and_the_others_stay() {
        let mut pod = spec(serde_json::json!({"containers": [{
            "name": "reviews",
            "ports": [{"name": "http", "containerPort": 9080}],
            "livenessProbe": {"httpGet": {"path": "/health?deep=1", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "timeoutSeconds": 3, "periodSeconds": 7},
            "readinessProbe": {"tcpSocket": {"port": 9080}},
            "startupProbe": {"httpGet": {"path": "/", "port": 8443, "scheme": "HTTPS"}}
        }, {
            "name": "worker",
            "livenessProbe": {"exec": {"command": ["true"]}},
            "readinessProbe": {"grpc": {"port": 9090}},
            "startupProbe": {"httpGet": {"port": "undeclared"}}
        }]}));
        let untouched = pod.containers[1].clone();
        let probers = rewrite(&mut pod);
        assert_eq!(
            serde_json::to_value(&probers).unwrap(),
            serde_json::json!({
                "/app-health/reviews/livez": {"httpGet": {"path": "/health?deep=1", "port": 9080, "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "timeoutSeconds": 3},
                "/app-health/reviews/readyz": {"tcpSocket": {"port": 9080}, "timeoutSeconds": 1}
            })
        );
        let live = pod.containers[0].liveness_probe.as_ref().unwrap();
        let get = live.http_get.as_ref().unwrap();
        assert_eq!(
            (get.path.as_deref(), &get.port, get.http_headers.as_ref()),
            (Some("/app-health/reviews/livez"), &IntOrString::Int(15020), None)
        );
        assert_eq!(live.period_seconds, Some(7), "timing is the kubelet's, unchanged");
        let ready = pod.containers[0].readiness_probe.as_ref().unwrap();
        assert!(ready.tcp_socket.is_none() && ready.http_get.is_some());
        let startup = pod.containers[0].startup_probe.as_ref().unwrap();
        assert_eq!(startup.http_get.as_ref().unwrap().scheme.as_deref(), Some("HTTPS"));
        assert_eq!(pod.containers[1], untouched);
    }
}
