//! `mesh-init`: installs (or removes, or prints) the iptables rules that send a pod's TCP
//! traffic through its sidecar. Exits non-zero with a message naming what failed.

use std::process::ExitCode;

use clap::Parser as _;
use mesh_init::app::{self, Config, Failure};

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(err) = mesh_runtime::log::init(&config.log) {
        eprintln!("mesh-init: {err}");
        return ExitCode::FAILURE;
    }
    match app::run(&config) {
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
