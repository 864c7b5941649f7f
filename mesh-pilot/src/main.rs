//! `mesh-pilot`: the control plane. Local mode reads a directory of Kubernetes and Istio YAML,
//! watches it, and serves Envoy v3 xDS (state-of-the-world ADS) in plaintext on
//! 127.0.0.1:15010 (or `--xds-listen`); Kubernetes mode serves plaintext only with
//! `--xds-plaintext`. With `--ca-address`, xDS over mesh mTLS on 15012. Metrics and readiness
//! on 15014, with debug endpoints there for loopback or the `--debug-token-file` token. Its
//! pushes are traced over OTLP to `--otlp-endpoint`, else `OTEL_EXPORTER_OTLP_ENDPOINT`, else
//! the mesh config's default tracing provider (read at start).

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser as _;
use mesh_api::mesh::MeshConfig;
use mesh_pilot::app::{self, Config};
use mesh_trace::export::{OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT};

/// How long queued spans may take to reach the collector when the pilot stops.
const SPAN_FLUSH: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let env = std::env::vars().collect();
    let mut trace = config.trace.clone();
    if trace.otlp_endpoint.is_none() && !names_collector(&env) {
        // Errors in the mesh config are the config source's to report; here it only may name
        // a collector.
        let path = mesh_pilot::mesh_config::path(
            config.mesh_config.as_deref(),
            config.config_dir.is_some(),
        );
        trace.otlp_endpoint =
            mesh_pilot::mesh_config::read(path.as_deref()).ok().as_ref().and_then(mesh_collector);
    }
    let tracing = match trace.layer("mesh-pilot", &env) {
        Ok(tracing) => tracing,
        Err(err) => {
            eprintln!("mesh-pilot: tracing: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (layer, guard) = tracing.unzip();
    if let Err(err) = mesh_runtime::log::init_with(&config.log, layer) {
        eprintln!("mesh-pilot: {err}");
        return std::process::ExitCode::FAILURE;
    }
    let served = async {
        let pilot = app::build(config).await?;
        if let Some(guard) = &guard {
            pilot.discovery.metrics.spans_dropped.follow(guard.stats());
        }
        pilot.run().await
    };
    let result = served.await;
    if let Some(guard) = guard {
        guard.shutdown(SPAN_FLUSH).await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("mesh-pilot: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether the standard variables name a collector (they win over the mesh config).
fn names_collector(env: &BTreeMap<String, String>) -> bool {
    [OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT]
        .iter()
        .any(|name| env.get(*name).is_some_and(|v| !v.trim().is_empty()))
}

/// The collector of the mesh's first default tracing provider, when it takes OTLP over gRPC:
/// `host:port` of its `[<namespace>/]<hostname>` service.
fn mesh_collector(mesh: &MeshConfig) -> Option<String> {
    let name = mesh.default_tracing_providers().into_iter().next()?;
    let provider = mesh.extension_provider(&name)?;
    let otel = provider.opentelemetry.as_ref().filter(|o| o.http.is_none())?;
    let host = otel.service.rsplit_once('/').map_or(otel.service.as_str(), |(_, host)| host);
    (!host.is_empty() && otel.port != 0).then(|| format!("{host}:{}", otel.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(yaml: &str) -> MeshConfig {
        MeshConfig::from_yaml("mesh.yaml", yaml).unwrap()
    }

    #[test]
    fn the_mesh_configs_default_tracing_provider_names_the_collector() {
        let named = mesh(
            "extensionProviders:\n- name: otel\n  opentelemetry: {service: observability/otel-collector.observability.svc.cluster.local, port: 4317}\ndefaultProviders: {tracing: [otel]}\n",
        );
        assert_eq!(
            mesh_collector(&named).as_deref(),
            Some("otel-collector.observability.svc.cluster.local:4317")
        );
        let older = mesh("tracing: {otlpEndpoint: collector.mesh-system:4317}\n");
        assert_eq!(mesh_collector(&older).as_deref(), Some("collector.mesh-system:4317"));
    }

    #[test]
    fn no_default_provider_or_an_http_one_names_none() {
        assert_eq!(mesh_collector(&mesh("{}")), None);
        let http = mesh(
            "extensionProviders:\n- name: otel\n  opentelemetry: {service: otel.o.svc, port: 4318, http: {path: /v1/traces}}\ndefaultProviders: {tracing: [otel]}\n",
        );
        assert_eq!(mesh_collector(&http), None);
    }

    #[test]
    fn the_standard_variables_win_over_the_mesh_config() {
        let env = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(names_collector(&env(OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4317")));
        assert!(names_collector(&env(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "c:4317")));
        assert!(!names_collector(&env(OTEL_EXPORTER_OTLP_ENDPOINT, " ")));
        assert!(!names_collector(&BTreeMap::new()));
    }
}
