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
    /// Find what is wrong in the mesh's config across objects (references that resolve to
    /// nothing, conflicts, unreachable routes), with istioctl analyze's codes and messages.
    Analyze(AnalyzeCli),
    /// Check config files against the schema and the mesh's rules, as the webhook would.
    Validate(meshctl::analyze::ValidateArgs),
    /// The client's version, and the control plane's and the proxies' when a mesh is reachable.
    Version(meshctl::version::VersionArgs),
    /// Whether each proxy runs what the pilot sent it, per xDS type; with POD, what the pilot
    /// serves it compared with what it runs.
    #[command(name = "proxy-status", visible_alias = "ps")]
    ProxyStatus(meshctl::proxy_status::ProxyStatusArgs),
    /// What one proxy runs: its clusters, listeners, routes, endpoints or certificates.
    #[command(name = "proxy-config", visible_alias = "pc")]
    ProxyConfig(meshctl::proxy_config::ProxyConfigArgs),
    /// A live view of the mesh in the terminal: services, the service graph, proxies, live
    /// requests and config; `dashboard envoy POD` opens a proxy's admin on a local port.
    #[command(
        after_help = "Keys: Tab view, arrows or j/k move, Enter drill in, / filter, t a request's trace (Live), q quit.\n\nExamples:\n  meshctl dashboard\n  meshctl dashboard -n bookinfo --refresh 1\n  meshctl dashboard envoy productpage-v1\n  meshctl dashboard envoy productpage-v1.bookinfo --port 0"
    )]
    Dashboard(DashboardCli),
    /// One request followed through the mesh: a trace from the local mesh's collector
    /// (`meshctl local up --tracing`) as an indented tree with timings.
    #[command(
        after_help = "Examples:\n  meshctl trace\n  meshctl trace --last 5\n  meshctl trace --id 4bf92f3577b34da6a3ce929d0e0e4736\n  meshctl trace --last 1 -o json"
    )]
    Trace(TraceCli),
}

/// `meshctl trace`'s flags, and the mesh whose collector it reads.
#[derive(Debug, clap::Args)]
struct TraceCli {
    /// Which traces and how to print them.
    #[command(flatten)]
    args: meshctl::trace::TraceArgs,
    /// Which mesh.
    #[command(flatten)]
    mesh: meshctl::access::MeshArgs,
}

/// `meshctl dashboard`'s flags and subcommands.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct DashboardCli {
    /// Another dashboard than the terminal view.
    #[command(subcommand)]
    which: Option<DashboardCommand>,
    /// The terminal view's settings.
    #[command(flatten)]
    view: meshctl::dashboard::DashboardArgs,
    /// Which mesh.
    #[command(flatten)]
    mesh: meshctl::access::MeshArgs,
}

/// The dashboards of `meshctl dashboard`.
#[derive(Debug, Subcommand)]
enum DashboardCommand {
    /// A proxy's admin (config dump, clusters, stats, logging) on a local port, as
    /// `istioctl dashboard envoy` opens it.
    Envoy(meshctl::forward::EnvoyArgs),
}

/// Opens the terminal view on the mesh the flags choose.
fn dashboard(
    view: &meshctl::dashboard::DashboardArgs,
    mesh: &meshctl::access::MeshArgs,
) -> Result<i32, Box<dyn std::error::Error>> {
    let mesh = std::sync::Arc::from(meshctl::access::choose(mesh)?);
    let source = meshctl::access::MeshSource::new(mesh, view.namespace.clone());
    meshctl::dashboard::run_with_analyzer(
        std::sync::Arc::new(source),
        view,
        Some(meshctl::analyze::dashboard_findings),
    )?;
    Ok(0)
}

/// `meshctl analyze`'s flags, and the mesh whose config `-k` reads.
#[derive(Debug, clap::Args)]
struct AnalyzeCli {
    /// What to analyze and how to report it.
    #[command(flatten)]
    args: meshctl::analyze::AnalyzeArgs,
    /// Which mesh, with `-k`.
    #[command(flatten)]
    mesh: meshctl::access::MeshArgs,
}

/// Analyzes the files, on top of the live mesh's config when asked for (or when no file is
/// given).
fn analyze(cli: &AnalyzeCli) -> Result<i32, Box<dyn std::error::Error>> {
    let live = if cli.args.wants_live() {
        // Every namespace: a route of one names Services and Gateways of others; the findings
        // are narrowed to the namespace asked for afterwards.
        Some(meshctl::access::live_config(&cli.mesh, None)?)
    } else {
        None
    };
    Ok(meshctl::analyze::analyze(&cli.args, live)?)
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
        Command::Analyze(cli) => analyze(&cli),
        Command::Validate(args) => meshctl::analyze::validate(&args).map_err(Into::into),
        Command::Version(args) => Ok(meshctl::version::run(&args)),
        Command::ProxyStatus(args) => meshctl::proxy_status::run(&args).map_err(Into::into),
        Command::ProxyConfig(args) => meshctl::proxy_config::run(&args).map_err(Into::into),
        Command::Dashboard(DashboardCli {
            which: Some(DashboardCommand::Envoy(args)),
            mesh,
            ..
        }) => meshctl::forward::envoy(&args, &mesh).map(|()| 0).map_err(Into::into),
        Command::Dashboard(DashboardCli { which: None, view, mesh }) => dashboard(&view, &mesh),
        Command::Trace(TraceCli { args, mesh }) => meshctl::access::choose(&mesh)
            .map_err(Into::into)
            .and_then(|mesh| meshctl::trace::run(&args, mesh.as_ref()).map_err(Into::into)),
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
