//! Running the iptables binaries: picking the backend, applying a transaction with
//! `iptables-restore --noflush`, reading `iptables-save`, all inside the target network
//! namespace. The only module of the crate that runs commands.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::config::Backend;
use crate::plan::Family;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// The binary is not installed.
    #[error(
        "{program} was not found in PATH: install the iptables package (and iproute2 for --network-namespace)"
    )]
    Missing {
        /// Name of the binary not found in PATH.
        program: String,
    },
    /// The binary could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// Name of the binary that could not be started.
        program: String,
        /// The OS error from starting it.
        source: std::io::Error,
    },
    /// The binary ran and failed.
    #[error("{command} failed (exit {code}): {stderr}{hint}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit code as text, or `signal` when a signal ended the process.
        code: String,
        /// Its error output.
        stderr: String,
        /// What probably went wrong, when recognisable.
        hint: String,
    },
}

/// Runs iptables commands in a network namespace (or the current one).
#[derive(Clone, Debug)]
pub struct Iptables {
    netns: Option<String>,
    /// Binary name prefix: `iptables`, `iptables-nft` or `iptables-legacy`.
    variant: &'static str,
}

impl Iptables {
    /// Picks the binaries: for `auto`, the backend that already holds rules (kube-proxy or a
    /// CNI may have chosen one, and mixing them breaks both), else the system default.
    pub fn detect(netns: Option<String>, backend: Backend) -> Result<Self, IptablesError> {
        let mut this = Self { netns, variant: "iptables" };
        this.variant = match backend {
            Backend::Nft => "iptables-nft",
            Backend::Legacy => "iptables-legacy",
            Backend::Auto => {
                // (rules, rules of ours) in each backend, None when it is not installed.
                let count = |variant: &'static str| -> Option<(usize, usize)> {
                    let probe = Self { netns: this.netns.clone(), variant };
                    let text = probe.save(Family::V4, None).ok()?;
                    let rules = text.lines().filter(|l| l.starts_with("-A ")).count();
                    let ours = crate::cleanup::installed(&text);
                    Some((rules, usize::from(!ours.is_empty())))
                };
                let (legacy, nft) = (count("iptables-legacy"), count("iptables-nft"));
                match (legacy, nft) {
                    // Where our rules already are, so a re-run replaces them.
                    (Some((_, 1)), Some((_, 0)) | None) => "iptables-legacy",
                    (Some((_, 0)) | None, Some((_, 1))) => "iptables-nft",
                    // Else where the node's other rules are (kube-proxy, CNI).
                    (Some((l, _)), Some((0, _)) | None) if l > 0 => "iptables-legacy",
                    (Some((0, _)) | None, Some((n, _))) if n > 0 => "iptables-nft",
                    // Else the system default, or whichever exists.
                    _ if probe_exists(&this.netns, "iptables") => "iptables",
                    (_, Some(_)) => "iptables-nft",
                    (Some(_), None) => "iptables-legacy",
                    (None, None) => "iptables",
                }
            }
        };
        // Fail early, with the install hint, when the chosen binaries are missing. Other
        // failures (a kernel without nat) are reported precisely when the rules are applied.
        if let Err(err @ (IptablesError::Missing { .. } | IptablesError::Spawn { .. })) =
            this.save(Family::V4, None)
        {
            return Err(err);
        }
        Ok(this)
    }

    /// The binary prefix in use (`iptables-nft`, `iptables-legacy` or `iptables`).
    pub fn variant(&self) -> &str {
        self.variant
    }

    fn program(&self, family: Family, tool: &str) -> String {
        let base = match family {
            Family::V4 => self.variant.to_owned(),
            Family::V6 => self.variant.replacen("iptables", "ip6tables", 1),
        };
        format!("{base}{tool}")
    }

    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, program]);
                command
            }
            None => Command::new(program),
        }
    }

    /// `iptables-save` (of one table when given).
    pub fn save(&self, family: Family, table: Option<&str>) -> Result<String, IptablesError> {
        let program = self.program(family, "-save");
        let mut args = Vec::new();
        if let Some(table) = table {
            args.extend(["-t", table]);
        }
        self.run(&program, &args, None)
    }

    /// `iptables-restore --noflush` of a transaction: all of it applies or none.
    pub fn restore(&self, family: Family, input: &str) -> Result<(), IptablesError> {
        let program = self.program(family, "-restore");
        self.run(&program, &["--noflush"], Some(input)).map(|_| ())
    }

    /// Whether the namespace has a global IPv6 address.
    pub fn has_global_ipv6(&self) -> bool {
        let mut command = self.command("ip");
        command.args(["-6", "-o", "addr", "show", "scope", "global"]);
        command
            .output()
            .map(|out| out.status.success() && !out.stdout.trim_ascii().is_empty())
            .unwrap_or(false)
    }

    fn run(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, IptablesError> {
        let mut command = self.command(program);
        command.args(args);
        command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let line =
            std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
        let spawn_error = |source: std::io::Error| {
            let missing = source.kind() == std::io::ErrorKind::NotFound;
            let launcher = if self.netns.is_some() { "ip" } else { program };
            if missing {
                IptablesError::Missing { program: launcher.to_owned() }
            } else {
                IptablesError::Spawn { program: launcher.to_owned(), source }
            }
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(input.as_bytes()).map_err(spawn_error)?;
        }
        let out = child.wait_with_output().map_err(spawn_error)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        // `ip netns exec` reports a missing program with exit 255 and "No such file".
        if self.netns.is_some()
            && stderr.contains("No such file or directory")
            && stderr.contains(program)
        {
            return Err(IptablesError::Missing { program: program.to_owned() });
        }
        Err(IptablesError::Failed {
            command: line,
            code: out.status.code().map_or("signal".to_owned(), |c| c.to_string()),
            hint: hint(&stderr).map(|h| format!("\nhint: {h}")).unwrap_or_default(),
            stderr,
        })
    }
}

/// Whether `<variant>-save` can be run.
fn probe_exists(netns: &Option<String>, variant: &'static str) -> bool {
    let probe = Iptables { netns: netns.clone(), variant };
    !matches!(
        probe.save(Family::V4, Some("nat")),
        Err(IptablesError::Missing { .. } | IptablesError::Spawn { .. })
    )
}

/// What an iptables error message probably means.
pub fn hint(stderr: &str) -> Option<&'static str> {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("table `nat'")
        || lower.contains("table 'nat'")
        || lower.contains("can't initialize iptables table")
        || lower.contains("unable to initialize table")
    {
        Some(
            "the kernel lacks the nat table: load the iptable_nat and nf_nat modules (or nf_tables for the nft backend)",
        )
    } else if lower.contains("owner") && (lower.contains("match") || lower.contains("extension")) {
        Some("the kernel lacks the owner match: load the xt_owner module")
    } else if lower.contains("redirect") && lower.contains("target") {
        Some("the kernel lacks the REDIRECT target: load the xt_REDIRECT module")
    } else if lower.contains("rule_append failed") || lower.contains("could not process rule") {
        Some(
            "the kernel refused a rule: it may lack nat, the owner match or REDIRECT (load nf_nat, xt_owner and xt_REDIRECT, or nft_chain_nat for the nft backend)",
        )
    } else if lower.contains("permission denied") || lower.contains("operation not permitted") {
        Some("mesh-init needs CAP_NET_ADMIN (and CAP_NET_RAW) in the pod's network namespace")
    } else if lower.contains("cannot open network namespace") {
        Some("the network namespace does not exist: check `ip netns list`")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::hint;

    #[test]
    fn recognises_kernel_gaps() {
        assert!(hint("iptables-restore v1.8.7 (legacy): iptables-restore: unable to initialize table 'nat'").unwrap().contains("nat table"));
        assert!(
            hint("iptables-restore: Couldn't load match `owner':No such file or directory")
                .unwrap()
                .contains("xt_owner")
        );
        assert!(
            hint("Cannot open network namespace \"x\": No such file or directory")
                .unwrap()
                .contains("ip netns list")
        );
        assert_eq!(hint("line 3 failed"), None);
    }
}
