//! `mesh-init`: installs (or removes, or prints) the iptables rules that send a pod's TCP
//! traffic through its sidecar. Exits non-zero with a message naming what failed.

use std::process::ExitCode;

use clap::Parser as _;
use mesh_init::app::{self, Config, Failure};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match app::run(&Config::parse()) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(Failure::Flags(err)) => {
            eprintln!("mesh-init: {err}");
            ExitCode::from(2)
        }
        Err(Failure::Capture(err)) => {
            eprintln!("mesh-init: {err:#}");
            ExitCode::FAILURE
        }
    }
}
