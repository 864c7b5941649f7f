//! `meshctl`: parses the command line and runs the command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The mesh's command line.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about = "The mesh's command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A mesh on this Linux machine, no cluster: control plane, pods with sidecars, config.
    Local(meshctl::local::LocalArgs),
    /// Add the sidecar to the pod templates of Kubernetes manifests, as the webhook would.
    KubeInject(meshctl::kube_inject::KubeInjectArgs),
    /// Install the control plane on a Kubernetes cluster (the charts embedded in meshctl).
    Install(meshctl::install::InstallArgs),
    /// Remove what `meshctl install` installed.
    Uninstall(meshctl::install::UninstallArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<i32, Box<dyn std::error::Error>> = match cli.command {
        Command::Local(args) => meshctl::local::run(args).map_err(Into::into),
        Command::KubeInject(args) => {
            meshctl::kube_inject::run(&args).map(|()| 0).map_err(Into::into)
        }
        Command::Install(args) => meshctl::install::install(&args).map(|()| 0).map_err(Into::into),
        Command::Uninstall(args) => {
            meshctl::install::uninstall(&args).map(|()| 0).map_err(Into::into)
        }
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
