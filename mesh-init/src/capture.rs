//! What a run of mesh-init does: print the plan, install it, or remove it.

use tracing::info;

use crate::cleanup::{self, Installed};
use crate::config::{Config, Ipv6Mode};
use crate::iptables::{Iptables, IptablesError};
use crate::plan::{self, Family};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// An iptables command failed.
    #[error(transparent)]
    Iptables(#[from] IptablesError),
    /// A later address family failed after an earlier one was installed; the earlier one was
    /// removed again, so the pod is left without capture rather than half captured.
    #[error(
        "{failed}\n(the IPv4 rules installed before this failure were removed again{rollback})"
    )]
    Partial {
        /// The error of the address family that failed.
        failed: Box<IptablesError>,
        /// How the rollback went, when it failed too.
        rollback: String,
    },
}

/// What a run of mesh-init does (`--dry-run`, `--cleanup`, or install).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Install the rules (replacing any of ours already there).
    Apply,
    /// Print the rules; touch nothing.
    DryRun,
    /// Remove the mesh's chains and jumps, and nothing else.
    Cleanup,
}

/// The address families to write rules for.
fn families(config: &Config, iptables: Option<&Iptables>) -> Vec<Family> {
    let v6 = match config.ipv6 {
        Ipv6Mode::On => true,
        Ipv6Mode::Off => false,
        // As Istio: the pod's own addresses decide; IPv6 ranges in the flags alone do not.
        Ipv6Mode::Auto => iptables.is_some_and(Iptables::has_global_ipv6),
    };
    if v6 { vec![Family::V4, Family::V6] } else { vec![Family::V4] }
}

/// The dry-run output: the restore input of each family, labelled.
pub fn dry_run(config: &Config) -> String {
    let families = match config.ipv6 {
        Ipv6Mode::Off => vec![Family::V4],
        // Without touching the namespace we cannot look for an IPv6 address: show both.
        Ipv6Mode::On | Ipv6Mode::Auto => vec![Family::V4, Family::V6],
    };
    let mut out = String::new();
    for family in families {
        let (tool, note) = match family {
            Family::V4 => ("iptables-restore --noflush", ""),
            Family::V6 => (
                "ip6tables-restore --noflush",
                if config.ipv6 == Ipv6Mode::Auto {
                    " (applied only when the pod has an IPv6 address)"
                } else {
                    ""
                },
            ),
        };
        out.push_str(&format!("# {tool}{note}\n"));
        out.push_str(&plan::render(config, family));
    }
    out
}

/// Installs the plan in each family, replacing what of ours is there; a family no longer
/// wanted (IPv6 after `--ipv6 on` was dropped) loses our rules.
pub fn apply(config: &Config, iptables: &Iptables) -> Result<(), CaptureError> {
    let families = families(config, Some(iptables));
    if !families.contains(&Family::V6) {
        remove_family(iptables, Family::V6)?;
    }
    let mut done = Vec::new();
    for family in families {
        let result = install(iptables, family, Some(&plan::render(config, family)));
        match result {
            Ok(()) => done.push(family),
            Err(err) if done.is_empty() => return Err(err.into()),
            Err(err) => {
                let rollback = done
                    .iter()
                    .map(|f| install(iptables, *f, None))
                    .find_map(Result::err)
                    .map(|e| format!(", except that the removal failed too: {e}"))
                    .unwrap_or_default();
                return Err(CaptureError::Partial { failed: Box::new(err), rollback });
            }
        }
        log_table(iptables, family);
    }
    Ok(())
}

/// Removes our chains and jumps from every family that has them.
pub fn remove(iptables: &Iptables) -> Result<(), CaptureError> {
    install(iptables, Family::V4, None)?;
    log_table(iptables, Family::V4);
    remove_family(iptables, Family::V6)
}

/// Removes our IPv6 rules, if IPv6 is there at all: a host without ip6tables, or whose kernel
/// has IPv6 (or its nat table) off, has none of ours.
fn remove_family(iptables: &Iptables, family: Family) -> Result<(), CaptureError> {
    match iptables.save(family, Some("nat")) {
        Ok(_) => install(iptables, family, None).map_err(Into::into),
        Err(err) => {
            tracing::debug!(?family, "no {family:?} nat table to clean: {err}");
            Ok(())
        }
    }
}

/// One transaction: remove what of ours is installed, then add `plan` when given.
fn install(iptables: &Iptables, family: Family, plan: Option<&str>) -> Result<(), IptablesError> {
    let before = iptables.save(family, Some("nat"))?;
    let installed: Installed = cleanup::installed(&before);
    if plan.is_none() && installed.is_empty() {
        return Ok(());
    }
    iptables.restore(family, &cleanup::transaction(&installed, plan))
}

fn log_table(iptables: &Iptables, family: Family) {
    match iptables.save(family, Some("nat")) {
        Ok(text) => info!(backend = iptables.variant(), ?family, "nat table now:\n{text}"),
        Err(err) => info!(?family, "cannot read the nat table back: {err}"),
    }
}
