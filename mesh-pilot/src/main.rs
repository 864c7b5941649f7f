//! `mesh-pilot`: the control plane. Local mode reads a directory of Kubernetes and Istio YAML,
//! watches it, and serves Envoy v3 xDS (state-of-the-world ADS) in plaintext on
//! 127.0.0.1:15010 (or `--xds-listen`); Kubernetes mode serves plaintext only with
//! `--xds-plaintext`. With `--ca-address`, xDS over mesh mTLS on 15012. Metrics and readiness
//! on 15014, with debug endpoints there for loopback or the `--debug-token-file` token.

use clap::Parser as _;
use mesh_pilot::app::{self, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Err(err) = mesh_runtime::log::init(&config.log) {
        eprintln!("mesh-pilot: {err}");
        return std::process::ExitCode::FAILURE;
    }
    let served = async { app::build(config).await?.run().await };
    match served.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("mesh-pilot: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
