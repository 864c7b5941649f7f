//! `meshctl local gateway`: a gateway pod (mesh-proxy as a router, or Envoy, with no app and no
//! capture) whose listeners come from the Gateways that select its labels, and ports of the
//! host forwarded to it so a person on the host reaches the mesh through it, as through a
//! LoadBalancer. The forward is `meshctl local forward`, a small process of its own in the
//! host's namespace (the only thing of the mesh there), recorded and stopped like the others.

use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::process::{self, Spawn};
use super::state::{Forward, Pod, Sidecar, StateDir};
use super::{LocalError, pods, running, wait_ready};

/// Most connections one forward carries at once; more are closed.
const MAX_FORWARDED: usize = 512;
/// How long a forward waits to connect to the pod.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a forward gets to listen.
const FORWARD_READY_LIMIT: Duration = Duration::from_secs(10);

/// Flags of `meshctl local gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// The gateway pod's name.
    pub name: String,
    /// Its labels, which Gateways select (`selector: {istio: ingressgateway}`).
    #[arg(long, default_value = "istio=ingressgateway")]
    pub labels: String,
    /// Its namespace.
    #[arg(long, short = 'n', default_value = mesh_api::ports::CONTROL_PLANE_NAMESPACE)]
    pub namespace: String,
    /// Its service account (default: the pod's name).
    #[arg(long)]
    pub service_account: Option<String>,
    /// A port of the host's 127.0.0.1 forwarded to a port the gateway listens on,
    /// `HOST_PORT:GATEWAY_PORT`; repeatable.
    #[arg(long = "port", value_parser = parse_forward)]
    pub ports: Vec<Forward>,
    /// The proxy (default: the mesh's, from `up --proxy`).
    #[arg(long, value_enum)]
    pub proxy: Option<Sidecar>,
}

fn parse_forward(text: &str) -> Result<Forward, String> {
    let (host, pod) =
        text.split_once(':').ok_or_else(|| format!("{text:?}: want HOST_PORT:GATEWAY_PORT"))?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    match (port(host), port(pod)) {
        (Some(host), Some(pod)) => Ok(Forward { host, pod }),
        _ => Err(format!("{text:?}: ports are 1 to 65535")),
    }
}

/// `meshctl local gateway`.
pub fn gateway(dir: &StateDir, args: GatewayArgs) -> Result<(), LocalError> {
    let mut state = running(dir)?;
    let labels = super::plan::parse_labels(&args.labels).map_err(LocalError::Refused)?;
    let sidecar = args.proxy.unwrap_or(state.proxy);
    let pod = Pod {
        name: args.name.clone(),
        namespace: args.namespace,
        ip: Ipv4Addr::UNSPECIFIED,
        veth: 0,
        labels,
        service_account: args.service_account.unwrap_or_else(|| args.name.clone()),
        port: None,
        sidecar: Some(sidecar),
        command: Vec::new(),
        gateway: true,
        forwards: args.ports,
    };
    let (pod, ns) = pods::record(dir, &mut state, pod)?;
    let name = pod.name.clone();
    let started = (|| {
        pods::make_network(dir, &mut state, &pod, &ns)?;
        pods::start_sidecar(dir, &mut state, &pod, &ns, sidecar)?;
        let meshctl = std::env::current_exe()
            .map_err(|e| LocalError::Io("cannot find meshctl itself".into(), e))?;
        for forward in &pod.forwards {
            let log =
                dir.join("pods").join(&pod.name).join(format!("forward-{}.log", forward.host));
            let to = SocketAddr::from((pod.ip, forward.pod));
            let argv = vec![
                meshctl.display().to_string(),
                "local".into(),
                "forward".into(),
                format!("--listen=127.0.0.1:{}", forward.host),
                format!("--namespace={ns}"),
                format!("--to={to}"),
            ];
            let spec = Spawn {
                role: format!("{}/forward-{}", pod.name, forward.host),
                namespace: "",
                user: None,
                argv,
                env: Vec::new(),
                log: &log,
            };
            let process = process::spawn_recorded(dir, &mut state, spec)?;
            let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, forward.host));
            wait_ready(
                &format!("the forward of port {}", forward.host),
                &process,
                FORWARD_READY_LIMIT,
                || {
                    TcpStream::connect_timeout(&listen, Duration::from_secs(1))
                        .map(drop)
                        .map_err(|e| format!("{listen}: {e}"))
                },
            )?;
        }
        Ok(())
    })();
    started
        .map_err(|source| LocalError::PodFailed { pod: name.clone(), source: Box::new(source) })?;
    let forwards: Vec<String> =
        pod.forwards.iter().map(|f| format!("127.0.0.1:{} -> {}", f.host, f.pod)).collect();
    println!(
        "gateway/{name} deployed: {} in namespace {}, {} ready{}",
        pod.ip,
        pod.namespace,
        match sidecar {
            Sidecar::MeshProxy => "mesh-proxy",
            Sidecar::Envoy => "Envoy",
        },
        if forwards.is_empty() { String::new() } else { format!(", {}", forwards.join(", ")) }
    );
    Ok(())
}

/// Flags of `meshctl local forward` (started by `gateway`; not for people).
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// Where to listen, in the host's namespace.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The pod's network namespace.
    #[arg(long)]
    pub namespace: String,
    /// The pod's address and port.
    #[arg(long)]
    pub to: SocketAddr,
}

/// `meshctl local forward`: accepts on the host and carries each connection to the pod,
/// connecting from inside the pod's namespace. Runs until killed.
pub fn forward(args: &ForwardArgs) -> Result<i32, LocalError> {
    let listener = TcpListener::bind(args.listen)
        .map_err(|e| LocalError::Io(format!("cannot listen on {}", args.listen), e))?;
    let open = Arc::new(AtomicUsize::new(0));
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_FORWARDED {
            open.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (open, ns, to) = (open.clone(), args.namespace.clone(), args.to);
        std::thread::spawn(move || {
            if let Err(why) = carry(client, &ns, to) {
                eprintln!("forward to {to}: {why}");
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(0)
}

/// Connects to `to` from inside `ns` and copies bytes both ways until both sides are done.
fn carry(client: TcpStream, ns: &str, to: SocketAddr) -> Result<(), String> {
    super::probe::enter(ns)?;
    let upstream = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    let (mut client_read, mut upstream_write) = (
        client.try_clone().map_err(|e| e.to_string())?,
        upstream.try_clone().map_err(|e| e.to_string())?,
    );
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    });
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = std::io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    up.join().map_err(|_| "the copying thread failed".to_owned())
}
