//! `mesh-ca`: the mesh's certificate authority. Signs SPIFFE workload certificates over
//! Istio's gRPC API (TLS, port 8060), distributes the root, and reports on port 15014.
//!
//! Local mode keeps its root in `--state-dir` and authenticates with `--tokens-file`;
//! Kubernetes mode keeps its root in the Secret `mesh-ca-secret` and asks TokenReview. With
//! `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) its signings are traced over OTLP.

use std::time::Duration;

use clap::Parser as _;
use mesh_ca::app::{self, Config};

/// How long queued spans may take to reach the collector when the CA stops.
const SPAN_FLUSH: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut config = Config::parse();
    let env = std::env::vars().collect();
    let tracing = match config.trace.layer("mesh-ca", &env) {
        Ok(tracing) => tracing,
        Err(err) => {
            eprintln!("mesh-ca: tracing: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (layer, guard) = tracing.unzip();
    if let Err(err) = mesh_runtime::log::init_with(&config.log, layer) {
        eprintln!("mesh-ca: {err}");
        return std::process::ExitCode::FAILURE;
    }
    config.span_stats = guard.as_ref().map(mesh_trace::export::Guard::stats);
    let result = async { app::build(config).await?.run().await }.await;
    if let Some(guard) = guard {
        guard.shutdown(SPAN_FLUSH).await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("mesh-ca: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
