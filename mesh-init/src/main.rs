//! `mesh-init`: installs (or removes, or prints) the iptables rules that send a pod's TCP
//! traffic through its sidecar. Exits non-zero with a message naming what failed.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mesh_init::capture::{self, Action};
use mesh_init::config::{Config, Flags};
use mesh_init::iptables::Iptables;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let flags = Flags::parse();
    let config = match Config::from_flags(&flags) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("mesh-init: {err}");
            return ExitCode::from(2);
        }
    };
    let action = match (flags.dry_run, flags.cleanup) {
        (true, _) => Action::DryRun,
        (false, true) => Action::Cleanup,
        (false, false) => Action::Apply,
    };
    match run(&config, flags.network_namespace, action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mesh-init: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config, netns: Option<String>, action: Action) -> anyhow::Result<()> {
    if action == Action::DryRun {
        print!("{}", capture::dry_run(config));
        return Ok(());
    }
    let place = netns
        .as_deref()
        .map_or("the current network namespace".to_owned(), |ns| format!("network namespace {ns}"));
    let iptables = Iptables::detect(netns, config.backend)
        .with_context(|| format!("cannot use iptables in {place}"))?;
    match action {
        Action::Apply => capture::apply(config, &iptables)
            .with_context(|| format!("cannot install the capture rules in {place}")),
        Action::Cleanup => capture::remove(&iptables)
            .with_context(|| format!("cannot remove the capture rules from {place}")),
        Action::DryRun => Ok(()),
    }
}
