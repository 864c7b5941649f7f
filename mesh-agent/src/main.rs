//! `mesh-agent`: parses its flags and runs.

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = mesh_agent::app::Config::parse();
    if let Err(e) = mesh_runtime::log::init(&config.log) {
        eprintln!("mesh-agent: {e}");
        return std::process::ExitCode::FAILURE;
    }
    match mesh_agent::app::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("mesh-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
