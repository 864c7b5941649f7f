//! `mesh-ca`: the mesh's certificate authority. Signs SPIFFE workload certificates over
//! Istio's gRPC API (TLS, port 8060), distributes the root, and reports on port 15014.
//!
//! Local mode keeps its root in `--state-dir` and authenticates with `--tokens-file`;
//! Kubernetes mode keeps its root in the Secret `mesh-ca-secret` and asks TokenReview.

use clap::Parser as _;
use mesh_ca::app::{self, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Err(err) = mesh_runtime::log::init(&config.log) {
        eprintln!("mesh-ca: {err}");
        return std::process::ExitCode::FAILURE;
    }
    let served = async { app::build(config).await?.run().await };
    match served.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("mesh-ca: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
