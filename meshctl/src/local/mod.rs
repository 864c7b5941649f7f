//! `meshctl local`: a mesh on one Linux machine, no cluster. The control plane (mesh-ca in local
//! mode, mesh-pilot reading a directory) runs as real processes of the real binaries in a
//! network namespace of its own; each "pod" is a network namespace on a bridge (itself inside a
//! hub namespace, never the host's), with mesh-init's real rules, the proxy as uid 1337 and the
//! app as `nobody`. Everything made is recorded first in a state directory, so `down` removes
//! it all, also after a crash.

pub mod collector;
mod config;
pub(crate) mod control_plane;
mod gateway;
pub mod kubelet;
mod net;
pub mod otlp;
pub mod plan;
mod pods;
pub(crate) mod probe;
mod process;
pub mod state;
mod status;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use state::{State, StateDir};

/// Where local meshes keep their state unless told otherwise (gone at reboot, as are the
/// namespaces it describes).
pub const DEFAULT_STATE_DIR: &str = "/run/mesh-local";

/// What went wrong, naming the command, file or process at fault.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A system command failed.
    #[error("`{command}` failed: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed, or why it could not run.
        reason: String,
    },
    /// A process could not be started.
    #[error("cannot start {role}: {reason}")]
    Start {
        /// What it was to be.
        role: String,
        /// Why not.
        reason: String,
    },
    /// A process started but did not become ready.
    #[error("{role} is not ready: {reason}\n--- last lines of {log}\n{tail}")]
    NotReady {
        /// What it is.
        role: String,
        /// Why: it exited, or the last probe's answer when time ran out.
        reason: String,
        /// Its log file.
        log: String,
        /// The end of its log.
        tail: String,
    },
    /// The state file is damaged.
    #[error(
        "the local mesh's state {file} cannot be used: {reason}; remove it and what it names by hand"
    )]
    State {
        /// The state file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A pod was recorded but could not be brought up; it stays for inspection.
    #[error(
        "{source}\npod {pod} stays for inspection: `meshctl local logs {pod}` (--proxy for its sidecar); `meshctl local remove {pod}` removes it"
    )]
    PodFailed {
        /// The pod.
        pod: String,
        /// What failed.
        #[source]
        source: Box<LocalError>,
    },
    /// The command needs a running mesh.
    #[error("no local mesh is up (state directory {0}): run `meshctl local up` first")]
    NotUp(PathBuf),
    /// What the user asked for cannot be done as asked.
    #[error("{0}")]
    Refused(String),
    /// Config files are invalid; nothing was written.
    #[error("{count} problem(s) found, nothing applied:\n{report}")]
    Invalid {
        /// How many problems.
        count: usize,
        /// One line per problem: file, line, field, reason.
        report: String,
    },
}

/// `meshctl local`'s flags and subcommands.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// The state directory: which local mesh this command works on.
    #[arg(long, global = true, env = "MESH_LOCAL_STATE", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: LocalCommand,
}

/// The subcommands of `meshctl local`.
#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start the control plane (mesh-ca and mesh-pilot) in a network namespace of its own.
    #[command(
        after_help = "Examples:\n  meshctl local up\n  meshctl local up --dir ./mesh-config\n  meshctl local up --tracing"
    )]
    Up(control_plane::UpArgs),
    /// Remove everything the local mesh created: processes, namespaces, links, files.
    Down,
    /// Run a pod: its own network namespace and address, a sidecar, and CMD as `nobody`.
    #[command(
        after_help = "Examples:\n  meshctl local deploy reviews-v1 --labels app=reviews,version=v1 \\\n      --service-account bookinfo-reviews --port 9080 -- /usr/local/bin/bookinfo reviews --version v1\n  meshctl local deploy sleep --labels app=sleep -- sleep infinity"
    )]
    Deploy(pods::DeployArgs),
    /// Run a gateway: mesh-proxy as a router (or Envoy) listening on the ports of the Gateways
    /// that select its labels, with ports of the host forwarded to it.
    #[command(
        after_help = "Examples:\n  meshctl local gateway ingressgateway --port 8080:8080\n  meshctl local apply -f bookinfo-gateway.yaml\n  curl http://127.0.0.1:8080/productpage\n  meshctl local gateway egressgateway --labels istio=egressgateway"
    )]
    Gateway(gateway::GatewayArgs),
    /// Carry a port of the host to a pod (started by `gateway`).
    #[command(hide = true)]
    Forward(gateway::ForwardArgs),
    /// The trace collector (started by `up --tracing`).
    #[command(hide = true)]
    Otlp(otlp::OtlpArgs),
    /// Remove one pod (its sidecar, app, namespace and WorkloadEntry).
    Remove {
        /// The pod's name.
        name: String,
    },
    /// Give a service a VIP and names (`NAME`, `NAME.NS`, `NAME.NS.svc.cluster.local`).
    #[command(
        after_help = "Examples:\n  meshctl local service reviews --port 9080\n  meshctl local service db --port 5432 --port-name tcp-postgres --selector app=postgres"
    )]
    Service(pods::ServiceArgs),
    /// Validate routing and policy YAML and hand it to the pilot (nothing invalid is written).
    #[command(
        after_help = "Examples:\n  meshctl local apply -f virtual-service-all-v1.yaml\n  cat rules.yaml | meshctl local apply -f -"
    )]
    Apply(config::FileArgs),
    /// Withdraw objects applied before (named by the same files).
    Delete(config::FileArgs),
    /// The control plane's health, the pods with their addresses and sidecars, the services.
    Status(status::StatusArgs),
    /// Run a command inside a pod (as `nobody`, its traffic through the sidecar).
    #[command(
        after_help = "Examples:\n  meshctl local exec sleep -- curl -s http://productpage:9080/productpage"
    )]
    Exec(status::ExecArgs),
    /// Print a pod's logs (the app's, or its sidecar's with --proxy).
    Logs(status::LogsArgs),
    /// Restart mesh-pilot, mesh-ca, or a pod's app (or its sidecar with --proxy), waiting
    /// until it is ready again.
    #[command(
        after_help = "Examples:\n  meshctl local restart mesh-pilot\n  meshctl local restart reviews-v2 --proxy"
    )]
    Restart(control_plane::RestartArgs),
}

/// Runs a `meshctl local` command; the exit code to end with.
pub fn run(args: LocalArgs) -> Result<i32, LocalError> {
    // A forward runs as long as its gateway, and must not hold the state's lock.
    if let LocalCommand::Forward(forward) = &args.command {
        return gateway::forward(forward);
    }
    if let LocalCommand::Otlp(otlp) = &args.command {
        return otlp::otlp(otlp);
    }
    // Only `up` makes a state directory: looking at, or removing, a mesh that is not there
    // must leave nothing behind.
    if !matches!(args.command, LocalCommand::Up(_))
        && !args.state_dir.join(state::STATE_FILE).exists()
    {
        if matches!(args.command, LocalCommand::Down) {
            println!(
                "No local mesh is up (nothing recorded in {}); nothing to remove.",
                args.state_dir.display()
            );
            return Ok(0);
        }
        return Err(LocalError::NotUp(args.state_dir));
    }
    let dir = StateDir::lock(&args.state_dir)?;
    match args.command {
        LocalCommand::Up(up) => control_plane::up(&dir, up).map(|()| 0),
        LocalCommand::Down => control_plane::down(&dir).map(|()| 0),
        LocalCommand::Deploy(deploy) => pods::deploy(&dir, deploy).map(|()| 0),
        LocalCommand::Gateway(args) => gateway::gateway(&dir, args).map(|()| 0),
        LocalCommand::Forward(forward) => gateway::forward(&forward),
        LocalCommand::Otlp(otlp) => otlp::otlp(&otlp),
        LocalCommand::Remove { name } => pods::remove(&dir, &name).map(|()| 0),
        LocalCommand::Service(service) => pods::service(&dir, service).map(|()| 0),
        LocalCommand::Apply(files) => config::apply(&dir, &files).map(|()| 0),
        LocalCommand::Delete(files) => config::delete(&dir, &files).map(|()| 0),
        LocalCommand::Status(status) => status::status(&dir, &status).map(|()| 0),
        LocalCommand::Exec(exec) => {
            // The command may run for long: other `meshctl local` commands must not wait.
            let state = running(&dir)?;
            drop(dir);
            status::exec(&state, &exec)
        }
        LocalCommand::Logs(logs) => status::logs(&dir, &logs).map(|()| 0),
        LocalCommand::Restart(restart) => control_plane::restart(&dir, &restart).map(|()| 0),
    }
}

/// The state of the mesh that is up, or [`LocalError::NotUp`].
fn running(dir: &StateDir) -> Result<State, LocalError> {
    match dir.read()? {
        Some(state) if state.up => Ok(state),
        _ => Err(LocalError::NotUp(dir.path.clone())),
    }
}

/// Waits until `check` says `process` is ready (`Ok`), at most `limit`, and no longer once
/// the process has exited; the error carries the last reason and the end of its log.
fn wait_ready(
    role: &str,
    process: &state::Process,
    limit: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), LocalError> {
    let deadline = Instant::now() + limit;
    loop {
        let reason = match check() {
            Ok(()) => return Ok(()),
            Err(_) if !process::alive(process) => "it exited".to_owned(),
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(reason) => format!("not ready within {limit:?}: {reason}"),
        };
        return Err(LocalError::NotReady {
            role: role.to_owned(),
            reason,
            log: process.log.display().to_string(),
            tail: tail(&process.log, 20),
        });
    }
}

/// The last `lines` lines of a log file.
fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether this machine has what a local mesh needs (root, iproute2, iptables, setpriv).
fn check_host() -> Result<(), LocalError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LocalError::Refused(
            "the local mesh makes network namespaces and iptables rules: run it as root".into(),
        ));
    }
    for tool in ["ip", "iptables-restore", "setpriv"] {
        if net::run(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
            return Err(LocalError::Refused(format!(
                "`{tool}` is missing: install iproute2, iptables and util-linux (`make deps` does)"
            )));
        }
    }
    Ok(())
}
