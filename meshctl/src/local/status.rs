//! `status`, `exec` and `logs`: looking at the local mesh and into its pods.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use mesh_api::ports;

use super::collector;
use super::control_plane::ready;
use super::plan::{self, CA_IP, PILOT_IP};
use super::process::{self, APP_USER};
use super::state::{State, StateDir};
use super::{LocalError, running};

/// Output formats of `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table for people.
    Wide,
    /// JSON for scripts.
    Json,
}

/// Flags of `meshctl local status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "wide")]
    pub output: Output,
}

/// Flags of `meshctl local exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The pod.
    pub pod: String,
    /// Run as root instead of `nobody`.
    #[arg(long)]
    pub root: bool,
    /// The command line.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Flags of `meshctl local logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The pod (or `mesh-pilot`, `mesh-ca`, `otel-collector`).
    pub pod: String,
    /// The sidecar's log (its access log included) instead of the app's.
    #[arg(long)]
    pub proxy: bool,
}

/// Whether a role's process runs, and whether it answers ready.
fn health(state: &State, role: &str, probe: impl FnOnce() -> Result<(), String>) -> (bool, String) {
    let running = state.processes.iter().any(|p| p.role == role && process::alive(p));
    if !running {
        return (false, "not running".into());
    }
    match probe() {
        Ok(()) => (true, "ready".into()),
        Err(reason) => (false, format!("not ready: {reason}")),
    }
}

/// `meshctl local status`.
pub fn status(dir: &StateDir, args: &StatusArgs) -> Result<(), LocalError> {
    let state = running(dir)?;
    let cp = plan::control_plane_namespace(&state.name);
    let monitoring = |ip: Ipv4Addr| SocketAddr::new(ip.into(), ports::CONTROL_PLANE_MONITORING);
    let mut control_plane: Vec<(&str, String, (bool, String))> = vec![
        (
            "mesh-pilot",
            format!("{PILOT_IP}:{}", ports::PILOT_XDS_TLS),
            health(&state, "mesh-pilot", || ready(&cp, monitoring(PILOT_IP), "/ready")),
        ),
        (
            "mesh-ca",
            format!("{CA_IP}:{}", ports::CA_GRPC),
            health(&state, "mesh-ca", || ready(&cp, monitoring(CA_IP), "/ready")),
        ),
    ];
    if state.tracing {
        let api = SocketAddr::new(collector::IP.into(), collector::API_PORT);
        control_plane.push((
            collector::NAME,
            format!("{}:{}", collector::IP, collector::OTLP_PORT),
            health(&state, collector::NAME, || ready(&cp, api, "/healthz")),
        ));
    }
    // A service's endpoints by name: its pods, and the collector.
    let endpoints = |service: &super::state::Service| -> Vec<String> {
        let mut names: Vec<String> =
            plan::selected(&state, service).map(|p| p.name.clone()).collect();
        if plan::backends(&state, service).contains(&collector::IP) {
            names.push(collector::NAME.to_owned());
        }
        names
    };
    let pods: Vec<_> = state
        .pods
        .values()
        .map(|pod| {
            let ns = plan::pod_namespace(&state.name, &pod.name);
            let sidecar = pod.sidecar.map(|kind| {
                let (address, path) = super::pods::health_endpoint(kind);
                health(&state, &format!("{}/proxy", pod.name), || ready(&ns, address, path))
            });
            let app = state
                .processes
                .iter()
                .any(|p| p.role == format!("{}/app", pod.name) && process::alive(p));
            (pod, sidecar, app)
        })
        .collect();
    let applied = std::fs::read_dir(state.config_dir.join("applied"))
        .map(|entries| entries.flatten().count())
        .unwrap_or(0);
    if args.output == Output::Json {
        let json = serde_json::json!({
            "name": state.name,
            "configDir": state.config_dir,
            "applied": applied,
            "controlPlane": control_plane.iter().map(|(name, address, (ok, detail))| serde_json::json!({
                "name": name, "address": address, "ready": ok, "detail": detail,
            })).collect::<Vec<_>>(),
            "pods": pods.iter().map(|(pod, sidecar, app)| serde_json::json!({
                "name": pod.name,
                "namespace": pod.namespace,
                "ip": pod.ip,
                "labels": pod.labels,
                "serviceAccount": pod.service_account,
                "sidecar": pod.sidecar,
                "sidecarReady": sidecar.as_ref().map(|(ok, _)| *ok),
                "appRunning": app,
                "networkNamespace": plan::pod_namespace(&state.name, &pod.name),
            })).collect::<Vec<_>>(),
            "services": state.services.values().map(|s| serde_json::json!({
                "name": s.name,
                "namespace": s.namespace,
                "vip": s.vip,
                "ports": s.ports.iter().map(|p| format!("{}:{}/{}", p.port, p.target_port, p.name)).collect::<Vec<_>>(),
                "endpoints": endpoints(s),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
        return Ok(());
    }
    println!(
        "LOCAL MESH {} (config {}, {applied} objects applied)\n",
        state.name,
        state.config_dir.display()
    );
    println!("{:<14} {:<18} STATUS", "CONTROL PLANE", "ADDRESS");
    for (name, address, (_, detail)) in &control_plane {
        println!("{name:<14} {address:<18} {detail}");
    }
    println!(
        "\n{:<20} {:<10} {:<12} {:<24} {:<6} LABELS",
        "POD", "NAMESPACE", "IP", "SIDECAR", "APP"
    );
    for (pod, sidecar, app) in &pods {
        let sidecar = match (pod.sidecar, sidecar) {
            (Some(kind), Some((_, detail))) => {
                format!(
                    "{} {detail}",
                    serde_json::to_value(kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                )
            }
            _ => "none".to_owned(),
        };
        let labels: Vec<String> = pod.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<20} {:<10} {:<12} {:<24} {:<6} {}",
            pod.name,
            pod.namespace,
            pod.ip.to_string(),
            sidecar,
            if *app { "up" } else { "down" },
            labels.join(",")
        );
    }
    println!("\n{:<20} {:<11} {:<12} {:<16} ENDPOINTS", "SERVICE", "NAMESPACE", "VIP", "PORTS");
    for service in state.services.values() {
        let ports: Vec<String> =
            service.ports.iter().map(|p| format!("{}/{}", p.port, p.name)).collect();
        let endpoints = endpoints(service);
        println!(
            "{:<20} {:<11} {:<12} {:<16} {}",
            service.name,
            service.namespace,
            service.vip.to_string(),
            ports.join(","),
            if endpoints.is_empty() { "<none>".to_owned() } else { endpoints.join(",") }
        );
    }
    Ok(())
}

/// `meshctl local exec`: the command's exit code.
pub fn exec(state: &State, args: &ExecArgs) -> Result<i32, LocalError> {
    if !state.pods.contains_key(&args.pod) {
        return Err(LocalError::Refused(format!("no pod named {}", args.pod)));
    }
    let ns = plan::pod_namespace(&state.name, &args.pod);
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &ns]);
    if !args.root {
        command.args([
            "setpriv",
            &format!("--reuid={}", APP_USER.uid),
            &format!("--regid={}", APP_USER.gid),
            "--clear-groups",
            "--",
        ]);
    }
    let status = command.args(&args.command).status().map_err(|e| LocalError::Start {
        role: format!("{:?}", args.command),
        reason: e.to_string(),
    })?;
    Ok(status.code().unwrap_or(128))
}

/// `meshctl local logs`.
pub fn logs(dir: &StateDir, args: &LogsArgs) -> Result<(), LocalError> {
    let state = running(dir)?;
    let path = match args.pod.as_str() {
        "mesh-pilot" | "mesh-ca" => dir.join("logs").join(format!("{}.log", args.pod)),
        collector::NAME if state.tracing => {
            dir.join("logs").join(format!("{}.log", collector::NAME))
        }
        pod if state.pods.contains_key(pod) => {
            dir.join("pods").join(pod).join(if args.proxy { "proxy.log" } else { "app.log" })
        }
        pod => return Err(LocalError::Refused(format!("no pod named {pod}"))),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| LocalError::Io(format!("cannot read {}", path.display()), e))?;
    print!("{text}");
    Ok(())
}
