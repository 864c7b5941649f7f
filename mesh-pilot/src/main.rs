//! `mesh-pilot`: the control plane. Local mode reads a directory of Kubernetes and Istio YAML,
//! watches it, and serves Envoy v3 xDS (state-of-the-world ADS) in plaintext on
//! 127.0.0.1:15010 (or `--xds-listen`); Kubernetes mode serves plaintext only with
//! `--xds-plaintext`. With `--ca-address`, xDS over mesh mTLS on 15012. Metrics and readiness
//! on 15014, with debug endpoints there for loopback or the `--debug-token-file` token. With
//! `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) its pushes are traced over OTLP.

use std::time::Duration;

use clap::Parser as _;
use mesh_pilot::app::{self, Config};

/// How long queued spans may take to reach the collector when the pilot stops.
const SPAN_FLUSH: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let env = std::env::vars().collect();
    let tracing = match config.trace.layer("mesh-pilot", &env) {
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
