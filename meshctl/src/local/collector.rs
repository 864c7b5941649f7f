//! What the local mesh's trace collector is (`meshctl local up --tracing`), as pure functions:
//! its address in the control plane's namespace, its Service and WorkloadEntry (sidecars reach
//! it through the mesh like any service), and the mesh config naming it as Istio's MeshConfig
//! names an OpenTelemetry collector. The process itself is `meshctl local otlp` ([`super::otlp`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::plan::DOMAIN;
use super::state::{Service, ServicePort};

/// The trace collector's address in the control-plane namespace (`up --tracing`).
pub const IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 4);
/// The collector's Service and workload name, in the control plane's namespace (as Istio's
/// OpenTelemetry samples name it).
pub const NAME: &str = "otel-collector";
/// Where the collector receives OTLP/gRPC (OTLP's standard port).
pub const OTLP_PORT: u16 = 4317;
/// Its OTLP/HTTP port (for Istio's `opentelemetry` providers with `http`).
pub const OTLP_HTTP_PORT: u16 = 4318;
/// Where the collector answers `meshctl trace` (Jaeger's query port).
pub const API_PORT: u16 = 16686;
/// The extension provider the mesh config names the collector by.
pub const PROVIDER: &str = "otel";
/// The mesh config file the pilot reads, in the state directory.
pub const MESH_CONFIG_FILE: &str = "mesh.yaml";
/// The collector's labels (its Service selects them).
pub fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), NAME.to_owned())])
}

/// The collector's Service: OTLP/gRPC on 4317 (`grpc-otlp`, so the pilot makes its cluster
/// HTTP/2 as gRPC needs) and OTLP/HTTP on 4318 (`http-otlp`), selecting the collector's
/// WorkloadEntry.
pub fn service(vip: Ipv4Addr) -> Service {
    Service {
        name: NAME.to_owned(),
        namespace: mesh_api::ports::CONTROL_PLANE_NAMESPACE.to_owned(),
        vip,
        ports: vec![
            ServicePort { name: "grpc-otlp".to_owned(), port: OTLP_PORT, target_port: OTLP_PORT },
            ServicePort {
                name: "http-otlp".to_owned(),
                port: OTLP_HTTP_PORT,
                target_port: OTLP_HTTP_PORT,
            },
        ],
        selector: labels(),
    }
}

/// The collector's WorkloadEntry: its address in the control plane's namespace and labels,
/// without `security.istio.io/tlsMode` (it has no sidecar: proxies send it plain gRPC).
pub fn workload_entry() -> String {
    let mut out = format!(
        "# Written by meshctl local up --tracing; removed with the mesh.\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {NAME}\n  namespace: {ns}\nspec:\n  address: {IP}\n  serviceAccount: {NAME}\n  labels:\n",
        ns = mesh_api::ports::CONTROL_PLANE_NAMESPACE,
    );
    for (key, value) in labels() {
        let _ = writeln!(out, "    {}: {}", super::plan::quoted(&key), super::plan::quoted(&value));
    }
    out
}

/// The mesh config the pilot reads: every proxy's access log on its stdout, as Istio's demo
/// profile has it; with `tracing`, the local collector named as the default tracing provider
/// (as Istio's OpenTelemetry task configures it), sampling `sampling` percent of requests
/// where no Telemetry says otherwise.
pub fn mesh_config(tracing: Option<f64>) -> String {
    let mut out = String::from(
        "# Written by meshctl local up: Istio's MeshConfig, read by the pilot (edits are picked up).\n\
         # The proxies' access logs (`meshctl local logs POD --proxy`); a Telemetry's\n\
         # accessLogging overrides this, an empty value turns it off.\n\
         accessLogFile: /dev/stdout\n",
    );
    if let Some(sampling) = tracing {
        let _ = write!(
            out,
            "extensionProviders:\n\
             - name: {PROVIDER}\n  opentelemetry:\n    service: {NAME}.{ns}.svc.{DOMAIN}\n    port: {OTLP_PORT}\n\
             defaultProviders:\n  tracing: [{PROVIDER}]\n",
            ns = mesh_api::ports::CONTROL_PLANE_NAMESPACE,
        );
        // Istio's `defaultConfig.tracing.sampling` reads 0 as unset (1%): none at all is the
        // mesh-wide percentage.
        if sampling > 0.0 {
            let _ = writeln!(out, "defaultConfig:\n  tracing:\n    sampling: {sampling}");
        } else {
            out.push_str("tracing:\n  samplingPercentage: 0\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::local::plan;
    use crate::local::state::State;

    #[test]
    fn the_collector_is_a_service_of_the_control_plane() {
        let mut state = State::new("m".into(), "config".into(), "bin".into());
        state.tracing = true;
        let service = service(plan::host_address(plan::VIP_NETWORK, 11).unwrap());
        let text = format!("{}---\n{}", workload_entry(), plan::service_object(&service));
        let report = mesh_api::load::load_str("local", &text);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        for loaded in &report.objects {
            assert!(mesh_api::validate::resource(&loaded.resource).is_empty());
        }
        let mesh_api::Resource::WorkloadEntry(we) = &report.objects[0].resource else {
            panic!("not a WorkloadEntry")
        };
        assert_eq!(we.spec.address, "10.77.0.4");
        // No sidecar: proxies must not speak mTLS to it.
        assert!(!we.spec.labels.contains_key("security.istio.io/tlsMode"));
        assert_eq!(we.spec.labels["app"], "otel-collector");
        assert!(text.contains("namespace: mesh-system"), "{text}");
        assert!(text.contains("{name: \"grpc-otlp\", port: 4317, targetPort: 4317}"), "{text}");
        assert!(text.contains("{name: \"http-otlp\", port: 4318, targetPort: 4318}"), "{text}");

        // Its VIP leads to it, as a pod's leads to the pod.
        state.services.insert("mesh-system/otel-collector".into(), service.clone());
        assert_eq!(plan::backends(&state, &service), [IP]);
        assert!(plan::vip_rules(&state).contains("-j DNAT --to-destination 10.77.0.4:4317\n"));
        assert!(plan::hosts_file(&state, "default").contains(
            "10.96.0.11\totel-collector.mesh-system otel-collector.mesh-system.svc otel-collector.mesh-system.svc.cluster.local\n"
        ));
        state.tracing = false;
        assert!(plan::backends(&state, &service).is_empty());
    }

    #[test]
    fn the_mesh_config_names_the_collector_as_istio_does() {
        use mesh_api::mesh::MeshConfig;
        let config = MeshConfig::from_yaml("mesh.yaml", &mesh_config(Some(100.0))).unwrap();
        assert_eq!(config.default_tracing_providers(), ["otel"]);
        let provider = config.extension_provider("otel").unwrap();
        let otel = provider.opentelemetry.as_ref().unwrap();
        assert_eq!(
            (otel.service.as_str(), otel.port),
            ("otel-collector.mesh-system.svc.cluster.local", 4317)
        );
        assert_eq!(config.trace_sampling(), 100.0);
        let none = MeshConfig::from_yaml("mesh.yaml", &mesh_config(Some(0.0))).unwrap();
        assert_eq!(none.trace_sampling(), 0.0);
        let some = MeshConfig::from_yaml("mesh.yaml", &mesh_config(Some(2.5))).unwrap();
        assert_eq!(some.trace_sampling(), 2.5);
        let off = MeshConfig::from_yaml("mesh.yaml", &mesh_config(None)).unwrap();
        assert_eq!(
            off,
            MeshConfig { access_log_file: "/dev/stdout".into(), ..MeshConfig::default() }
        );
        assert_eq!(config.access_log_file, "/dev/stdout", "access logs, traced or not");
    }
}
