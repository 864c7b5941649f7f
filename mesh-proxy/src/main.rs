//! `mesh-proxy`: the sidecar. Gets the workload certificate from mesh-ca, the configuration
//! from the pilot over ADS, then takes the app's traffic on 15001 (outbound) and 15006
//! (inbound); admin on 127.0.0.1:15000, readiness on 15021, metrics on 15090. On SIGTERM it
//! drains: not ready, no new connections, in-flight requests finish within the drain period.

use clap::Parser as _;
use mesh_proxy::app::{self, Config};

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Some(command) = &config.command {
        return run_command(command, &config);
    }
    let log = match mesh_runtime::log::init(&config.log) {
        Ok(log) => log,
        Err(err) => {
            eprintln!("mesh-proxy: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The main thread only starts things and waits for the end; traffic and control work
    // have runtimes of their own (see `app`).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mesh-proxy: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async { app::build(config, Some(log)).await?.run().await }) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("mesh-proxy: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `mesh-proxy wait`: needs no logging set-up, only the readiness port.
fn run_command(command: &mesh_proxy::settings::Command, config: &Config) -> std::process::ExitCode {
    let mesh_proxy::settings::Command::Wait { timeout, period } = command;
    let health = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, config.health_port));
    let waited = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(mesh_proxy::app_health::wait_ready(health, *period, *timeout)));
    match waited {
        Ok(Ok(())) => {
            println!("mesh-proxy is ready");
            std::process::ExitCode::SUCCESS
        }
        Ok(Err(why)) => {
            eprintln!("mesh-proxy wait: {why}");
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("mesh-proxy wait: cannot start the async runtime: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
