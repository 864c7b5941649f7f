//! `up` and `down`: the control plane of the local mesh, and the removal of everything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_api::ports;

use super::collector::{self, MESH_CONFIG_FILE};
use super::plan::{self, CA_IP, CA_NAME, PILOT_IP};
use super::process::{self, Spawn};
use super::state::{Sidecar, State, StateDir};
use super::{LocalError, net, probe, wait_ready};

/// How long the control plane gets to become ready.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long processes get to stop on SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The pilot's token file (its identity `mesh-system/mesh-pilot` at the CA).
const PILOT_TOKEN: &str = "pilot.token";
/// The token that opens the pilot's `/debug/*` on 10.77.0.2:15014 (`Authorization: Bearer`):
/// its monitoring port is on the bridge, not on loopback.
pub const PILOT_DEBUG_TOKEN: &str = "pilot-debug.token";
/// The CA's tokens file: one `<token> <namespace>/<service account>` line per workload.
pub const TOKENS: &str = "tokens";
/// The CA's state (root key and certificate).
pub const CA_DIR: &str = "ca";
/// Everything the mesh makes in its state directory (besides the state file and its lock):
/// what `down` removes there, and nothing else.
/// (The default config directory is recorded in the state when `up` makes it.)
const OWNED: [&str; 9] = [
    "ca",
    "logs",
    "pods",
    "bin",
    TOKENS,
    PILOT_TOKEN,
    PILOT_DEBUG_TOKEN,
    MESH_CONFIG_FILE,
    "state.json.new",
];

/// Flags of `meshctl local up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The directory the pilot reads config from (and `apply` writes to); made if missing.
    /// Default: `config` in the state directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The mesh's name: the prefix of its network namespaces.
    #[arg(long, default_value = "mesh")]
    pub name: String,
    /// Where mesh-ca, mesh-pilot, mesh-proxy and mesh-init are (default: next to meshctl).
    #[arg(long, env = "MESH_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The sidecar pods get unless `deploy --proxy` says otherwise.
    #[arg(long, value_enum, default_value = "mesh-proxy")]
    pub proxy: Sidecar,
    /// Run a trace collector (`otel-collector.mesh-system:4317`, keeping the last traces in
    /// memory for `meshctl trace` and the dashboard) and name it in the mesh config as the
    /// default tracing provider; the pilot and the CA send it their spans too.
    #[arg(long)]
    pub tracing: bool,
    /// With --tracing: the percentage of requests sampled where no Telemetry says otherwise
    /// (MeshConfig's `defaultConfig.tracing.sampling`; Istio's demo profile samples all).
    #[arg(long, default_value_t = 100.0, requires = "tracing", value_parser = percentage)]
    pub trace_sampling: f64,
}

/// A percentage from 0 to 100.
fn percentage(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a percentage from 0 to 100")),
    }
}

/// The roles of the control plane's processes: the mesh is up while they run.
const CONTROL_PLANE: [&str; 2] = ["mesh-ca", "mesh-pilot"];

/// The flags that take a process to mesh-ca with `token` (mesh-pilot's, mesh-proxy's and
/// mesh-agent's, which share their names).
pub fn ca_client_args(dir: &StateDir, token: &Path) -> Vec<String> {
    vec![
        format!("--ca-address={}", SocketAddr::new(CA_IP.into(), ports::CA_GRPC)),
        format!("--ca-server-name={CA_NAME}"),
        format!("--root-cert={}", root_cert(dir).display()),
        format!("--token-path={}", token.display()),
    ]
}

/// Where the root certificate is, for the workloads.
pub fn root_cert(dir: &StateDir) -> PathBuf {
    dir.join(CA_DIR).join("root-cert.pem")
}

/// The binaries next to this one (or in `$MESH_BIN_DIR`).
fn default_bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin"))
}

/// A binary of the mesh, or an error that says where it was looked for.
pub fn binary(bin_dir: &Path, name: &str) -> Result<PathBuf, LocalError> {
    let path = bin_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LocalError::Refused(format!(
            "{name} is not in {} (build it with `cargo build --release --bins`, or name its directory with --bin-dir)",
            bin_dir.display()
        )))
    }
}

/// `meshctl local up`.
pub fn up(dir: &StateDir, args: UpArgs) -> Result<(), LocalError> {
    plan::check_name("mesh", &args.name).map_err(LocalError::Refused)?;
    if let Some(previous) = dir.read()? {
        let running =
            |role: &str| previous.processes.iter().any(|p| p.role == role && process::alive(p));
        if previous.up && CONTROL_PLANE.iter().all(|role| running(role)) {
            if args.tracing && !previous.tracing {
                return Err(LocalError::Refused(format!(
                    "the local mesh {} is up without tracing: `meshctl local down`, then `meshctl local up --tracing`",
                    previous.name
                )));
            }
            println!(
                "A local mesh ({}) is already up; its state is in {}.\n`meshctl local status` shows it, `meshctl local down` removes it.",
                previous.name,
                dir.path.display()
            );
            return Ok(());
        }
        println!(
            "A previous local mesh did not finish or was killed: removing what it left first."
        );
        teardown(dir, &previous);
    }
    super::check_host()?;
    let bin_dir = args.bin_dir.unwrap_or_else(default_bin_dir);
    for name in ["mesh-ca", "mesh-pilot", "mesh-init"] {
        binary(&bin_dir, name)?;
    }
    let config_dir = args.dir.unwrap_or_else(|| dir.join("config"));
    let mut state = State::new(args.name.clone(), config_dir.clone(), bin_dir.clone());
    state.proxy = args.proxy;
    state.tracing = args.tracing;
    let sampling = args.tracing.then_some(args.trace_sampling);
    if !config_dir.exists() {
        state.created(&config_dir);
    }
    dir.write(&state)?;
    let result = start(dir, &mut state, sampling);
    if let Err(e) = result {
        // Half a mesh is worse than none: take it down, say why it failed.
        let _ = dir.write(&state);
        teardown(dir, &state);
        return Err(e);
    }
    println!(
        "Local mesh {name} is up.\n  mesh-pilot  {PILOT_IP} (xDS {}, mTLS {}), reading {} and the mesh config {}\n  mesh-ca     {CA_IP}:{}\nNext: `meshctl local deploy`, `meshctl local service`, `meshctl local apply -f`, `meshctl local status`.",
        ports::PILOT_XDS_PLAINTEXT,
        ports::PILOT_XDS_TLS,
        config_dir.display(),
        dir.join(MESH_CONFIG_FILE).display(),
        ports::CA_GRPC,
        name = state.name,
    );
    if state.tracing {
        println!(
            "  {}  {}:{} (OTLP/gRPC, the mesh config's default tracing provider, sampling {}%; OTLP/HTTP on {})\nTraces: `meshctl trace` (the last request's tree), `meshctl trace --id ID`, and `t` in the dashboard's Live view.",
            collector::NAME,
            collector::IP,
            collector::OTLP_PORT,
            args.trace_sampling,
            collector::OTLP_HTTP_PORT,
        );
    }
    Ok(())
}

/// Makes the network and starts the CA and the pilot (and, with `sampling`, the trace
/// collector first), recording each step before taking it.
fn start(dir: &StateDir, state: &mut State, sampling: Option<f64>) -> Result<(), LocalError> {
    let hub = plan::hub_namespace(&state.name);
    let cp = plan::control_plane_namespace(&state.name);
    for ns in [&hub, &cp] {
        if net::namespace_exists(ns) {
            return Err(LocalError::Refused(format!(
                "network namespace {ns} exists but no local mesh recorded it: another mesh of this name runs from another state directory (or remove it with `ip netns del {ns}`)"
            )));
        }
    }
    for sub in ["workloads", "services", "applied"] {
        let path = state.config_dir.join(sub);
        if !path.exists() {
            state.created(&path);
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| LocalError::Io(format!("cannot create {}", path.display()), e))?;
    }
    state.namespaces.push(hub.clone());
    dir.write(state)?;
    net::add_namespace(&hub)?;
    net::make_hub(&hub)?;
    state.namespaces.push(cp.clone());
    dir.write(state)?;
    net::add_namespace(&cp)?;
    let mut addresses = vec![PILOT_IP, CA_IP];
    if state.tracing {
        addresses.push(collector::IP);
    }
    net::attach(&hub, &cp, 0, &addresses)?;
    net::set_vip_rules(&hub, &plan::vip_rules(state))?;

    let logs = dir.join("logs");
    let ca_dir = dir.join(CA_DIR);
    for path in [&logs, &ca_dir] {
        std::fs::create_dir_all(path)
            .map_err(|e| LocalError::Io(format!("cannot create {}", path.display()), e))?;
    }
    let pilot_token = super::pods::new_token()?;
    let tokens = dir.join(TOKENS);
    write_private(
        &tokens,
        &format!("{pilot_token} {}/mesh-pilot\n", ports::CONTROL_PLANE_NAMESPACE),
    )?;
    write_private(&dir.join(PILOT_TOKEN), &pilot_token)?;
    write_private(&dir.join(PILOT_DEBUG_TOKEN), &super::pods::new_token()?)?;

    let monitoring = |ip| SocketAddr::new(ip, ports::CONTROL_PLANE_MONITORING);
    // The control plane's own spans go to the collector when there is one (an environment
    // variable, which a binary without tracing ignores).
    let mut control_plane_env = Vec::new();
    // The mesh config, which the pilot reads again when it changes.
    let mesh_config = dir.join(MESH_CONFIG_FILE);
    std::fs::write(&mesh_config, collector::mesh_config(sampling))
        .map_err(|e| LocalError::Io(format!("cannot write {}", mesh_config.display()), e))?;
    let pilot_args = vec![format!("--mesh-config={}", mesh_config.display())];
    if sampling.is_some() {
        start_collector(dir, state, &cp)?;
        control_plane_env.push((
            "MESH_OTLP_ENDPOINT".to_owned(),
            format!("http://{}", SocketAddr::new(collector::IP.into(), collector::OTLP_PORT)),
        ));
    }
    let ca_log = logs.join("mesh-ca.log");
    let ca = process::spawn_recorded(
        dir,
        state,
        Spawn {
            role: "mesh-ca".into(),
            namespace: &cp,
            user: None,
            argv: vec![
                binary(&state.bin_dir, "mesh-ca")?.display().to_string(),
                "--mode=local".into(),
                format!("--listen={}", SocketAddr::new(CA_IP.into(), ports::CA_GRPC)),
                format!("--monitoring-listen={}", monitoring(CA_IP.into())),
                format!("--state-dir={}", ca_dir.display()),
                format!("--plugin-dir={}", ca_dir.join("plugin").display()),
                format!("--tokens-file={}", tokens.display()),
                format!("--server-name={CA_NAME}"),
            ],
            env: control_plane_env.clone(),
            log: &ca_log,
        },
    )?;
    wait_ready("mesh-ca", &ca, READY_LIMIT, || ready(&cp, monitoring(CA_IP.into()), "/ready"))?;

    let pilot_log = logs.join("mesh-pilot.log");
    let pilot = process::spawn_recorded(
        dir,
        state,
        Spawn {
            role: "mesh-pilot".into(),
            namespace: &cp,
            user: None,
            argv: vec![
                binary(&state.bin_dir, "mesh-pilot")?.display().to_string(),
                format!("--config-dir={}", state.config_dir.display()),
                format!(
                    "--xds-listen={}",
                    SocketAddr::new(PILOT_IP.into(), ports::PILOT_XDS_PLAINTEXT)
                ),
                format!(
                    "--xds-mtls-listen={}",
                    SocketAddr::new(PILOT_IP.into(), ports::PILOT_XDS_TLS)
                ),
                format!("--monitoring-listen={}", monitoring(PILOT_IP.into())),
                format!("--debug-token-file={}", dir.join(PILOT_DEBUG_TOKEN).display()),
                // A person editing files expects to see the change at once.
                "--poll-interval=250ms".into(),
            ]
            .into_iter()
            .chain(pilot_args)
            .chain(ca_client_args(dir, &dir.join(PILOT_TOKEN)))
            .collect(),
            env: control_plane_env,
            log: &pilot_log,
        },
    )?;
    wait_ready("mesh-pilot", &pilot, READY_LIMIT, || {
        ready(&cp, monitoring(PILOT_IP.into()), "/ready")
    })?;
    state.up = true;
    dir.write(state)
}

/// Starts the trace collector (`meshctl local otlp`) in the control plane's namespace and
/// gives it its Service and WorkloadEntry, so sidecars reach it through the mesh as any
/// service.
fn start_collector(dir: &StateDir, state: &mut State, cp: &str) -> Result<(), LocalError> {
    let vip = plan::host_address(plan::VIP_NETWORK, state.next_vip_host)
        .ok_or_else(|| LocalError::Refused("the VIP range is full".into()))?;
    state.next_vip_host += 1;
    let service = collector::service(vip);
    state.services.insert(format!("{}/{}", service.namespace, service.name), service);
    super::pods::refresh(state)?;
    dir.write(state)?;
    let meshctl = std::env::current_exe()
        .map_err(|e| LocalError::Io("cannot find meshctl itself".into(), e))?;
    let api = SocketAddr::new(collector::IP.into(), collector::API_PORT);
    let log = dir.join("logs").join(format!("{}.log", collector::NAME));
    let collector = process::spawn_recorded(
        dir,
        state,
        Spawn {
            role: collector::NAME.into(),
            namespace: cp,
            user: None,
            argv: vec![
                meshctl.display().to_string(),
                "local".into(),
                "otlp".into(),
                format!("--listen={}", SocketAddr::new(collector::IP.into(), collector::OTLP_PORT)),
                format!(
                    "--listen-http={}",
                    SocketAddr::new(collector::IP.into(), collector::OTLP_HTTP_PORT)
                ),
                format!("--api={api}"),
            ],
            env: Vec::new(),
            log: &log,
        },
    )?;
    wait_ready(collector::NAME, &collector, READY_LIMIT, || ready(cp, api, "/healthz"))
}

/// Flags of `meshctl local restart`.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// `mesh-pilot`, `mesh-ca`, `otel-collector` (with --tracing), or a pod.
    pub name: String,
    /// A pod's sidecar rather than its app.
    #[arg(long)]
    pub proxy: bool,
}

/// `meshctl local restart`.
pub fn restart(dir: &StateDir, args: &RestartArgs) -> Result<(), LocalError> {
    let mut state = super::running(dir)?;
    let cp = plan::control_plane_namespace(&state.name);
    let role = match args.name.as_str() {
        "mesh-pilot" | "mesh-ca" => args.name.clone(),
        collector::NAME if state.tracing => args.name.clone(),
        pod if state.pods.contains_key(pod) => {
            format!("{pod}/{}", if args.proxy { "proxy" } else { "app" })
        }
        other => return Err(LocalError::Refused(format!("no pod named {other}"))),
    };
    let index = state
        .processes
        .iter()
        .position(|p| p.role == role)
        .ok_or_else(|| LocalError::Refused(format!("{} has no sidecar", args.name)))?;
    let started = process::restart(&state.processes[index], STOP_GRACE)?;
    state.processes[index] = started.clone();
    dir.write(&state)?;
    let monitoring =
        |ip: std::net::Ipv4Addr| SocketAddr::new(ip.into(), ports::CONTROL_PLANE_MONITORING);
    match role.as_str() {
        "mesh-pilot" => {
            wait_ready(&role, &started, READY_LIMIT, || ready(&cp, monitoring(PILOT_IP), "/ready"))?
        }
        "mesh-ca" => {
            wait_ready(&role, &started, READY_LIMIT, || ready(&cp, monitoring(CA_IP), "/ready"))?
        }
        collector::NAME => {
            let api = SocketAddr::new(collector::IP.into(), collector::API_PORT);
            wait_ready(&role, &started, READY_LIMIT, || ready(&cp, api, "/healthz"))?
        }
        _ => {
            let pod = &state.pods[&args.name];
            let ns = plan::pod_namespace(&state.name, &pod.name);
            if let (true, Some(kind)) = (args.proxy, pod.sidecar) {
                let (health, path) = super::pods::health_endpoint(kind);
                wait_ready(&role, &started, READY_LIMIT, || ready(&ns, health, path))?;
            } else if let Some(port) = pod.port {
                let address = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
                wait_ready(&role, &started, READY_LIMIT, || {
                    probe::connect(&ns, address, Duration::from_secs(1))
                })?;
            }
        }
    }
    println!("{role} restarted (pid {})", started.pid);
    Ok(())
}

/// `Ok` when `GET path` on `address` in `ns` answers 200.
pub fn ready(ns: &str, address: SocketAddr, path: &str) -> Result<(), String> {
    match probe::get(ns, address, path, Duration::from_secs(2))? {
        (200, _) => Ok(()),
        (status, body) => Err(format!("{status} {}", body.trim())),
    }
}

/// Writes a file only root reads (tokens).
pub fn write_private(path: &Path, text: &str) -> Result<(), LocalError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| LocalError::Io(format!("cannot write {}", path.display()), e))
}

/// `meshctl local down`.
pub fn down(dir: &StateDir) -> Result<(), LocalError> {
    let Some(state) = dir.read()? else {
        println!(
            "No local mesh is up (nothing recorded in {}); nothing to remove.",
            dir.path.display()
        );
        return Ok(());
    };
    let report = teardown(dir, &state);
    println!(
        "Local mesh {} removed: {} processes stopped{}, {} network namespaces and {} files deleted.",
        state.name,
        report.stopped,
        if report.killed.is_empty() {
            String::new()
        } else {
            format!(
                " ({} killed after {STOP_GRACE:?}: {})",
                report.killed.len(),
                report.killed.join(", ")
            )
        },
        report.namespaces,
        report.files,
    );
    for problem in &report.problems {
        eprintln!("warning: {problem}");
    }
    dir.remove();
    Ok(())
}

/// What a teardown did.
struct Teardown {
    stopped: usize,
    killed: Vec<String>,
    namespaces: usize,
    files: usize,
    problems: Vec<String>,
}

/// Removes everything `state` records, in reverse order of creation, carrying on past
/// failures (they are reported): processes, namespaces (and with them every link and rule),
/// hosts files, files in the config directory, the state directory's contents.
fn teardown(dir: &StateDir, state: &State) -> Teardown {
    let stopped = state.processes.iter().filter(|p| process::alive(p)).count();
    let killed = process::stop(&state.processes, STOP_GRACE);
    let mut problems = Vec::new();
    let mut namespaces = 0;
    for ns in state.namespaces.iter().rev() {
        process::kill_all(&net::namespace_pids(ns));
        if net::namespace_exists(ns) {
            namespaces += 1;
        }
        if let Err(e) = net::delete_namespace(ns) {
            problems.push(e.to_string());
        }
        if let Some(etc) = net::hosts_path(ns).parent() {
            let _ = std::fs::remove_dir_all(etc);
        }
    }
    let mut files = 0;
    for path in state.files.iter().rev() {
        let removed =
            if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        match removed {
            Ok(()) => files += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("cannot remove {}: {e}", path.display())),
        }
    }
    // Only what the mesh puts in the state directory: it may be a directory of the user's.
    for owned in OWNED {
        let path = dir.join(owned);
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
    if let Err(e) = dir.clear() {
        problems.push(e.to_string());
    }
    Teardown { stopped, killed, namespaces, files, problems }
}
