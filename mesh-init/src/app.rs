//! How `mesh-init` runs, for its `main` and for tests alike: [`Config`] is what it is started
//! with (istio-iptables' flags), [`run`] checks them and installs, removes or prints the
//! capture rules, and says which of its two ways it failed.

use anyhow::Context as _;

use crate::capture::{self, Action};
use crate::config::Flags;
use crate::iptables::Iptables;

/// What `mesh-init` is started with: its flags, each also an environment variable.
pub type Config = Flags;

/// Why `mesh-init` did not do its job.
#[derive(Debug)]
pub enum Failure {
    /// The flags do not make a valid capture (exit status 2, as for a usage error).
    Flags(crate::config::ConfigError),
    /// iptables could not be used or refused the rules (exit status 1).
    Capture(anyhow::Error),
}

/// Checks `config` and does what it asks: installs the capture rules (all or none), removes
/// them (`--cleanup`), or returns them as text without touching anything (`--dry-run`).
/// Returns what to print.
pub fn run(config: &Config) -> Result<String, Failure> {
    let rules = crate::config::Config::from_flags(config).map_err(Failure::Flags)?;
    let action = match (config.dry_run, config.cleanup) {
        (true, _) => Action::DryRun,
        (false, true) => Action::Cleanup,
        (false, false) => Action::Apply,
    };
    if action == Action::DryRun {
        return Ok(capture::dry_run(&rules));
    }
    let netns = config.network_namespace.clone();
    let place = netns
        .as_deref()
        .map_or("the current network namespace".to_owned(), |ns| format!("network namespace {ns}"));
    let done = Iptables::detect(netns, rules.backend)
        .with_context(|| format!("cannot use iptables in {place}"))
        .and_then(|iptables| match action {
            Action::Apply => capture::apply(&rules, &iptables)
                .with_context(|| format!("cannot install the capture rules in {place}")),
            Action::Cleanup => capture::remove(&iptables)
                .with_context(|| format!("cannot remove the capture rules from {place}")),
            Action::DryRun => Ok(()),
        });
    done.map(|()| String::new()).map_err(Failure::Capture)
}
