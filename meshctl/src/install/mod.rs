//! `meshctl install` and `meshctl uninstall`: the control plane on a cluster, rendered from the
//! Helm charts embedded in meshctl (`mesh-charts`: the same files Helm users install), shown,
//! confirmed, applied with server-side apply, and waited for until it works: CRDs established,
//! mesh-ca and mesh-pilot ready, the webhook answering. `--dry-run` prints the manifests and
//! touches nothing. Uninstall removes what install recorded; `--purge` the CRDs too.
//!
//! [`plan`] is pure (order, namespaces, the record); [`apply`] makes the API calls.

pub mod apply;
pub mod plan;

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

/// Flags that pick the cluster, as kubectl's.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClusterArgs {
    /// The kubeconfig file (default: `$KUBECONFIG`, then `~/.kube/config`).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
    /// The control plane's namespace.
    #[arg(short = 'n', long, default_value = mesh_api::ports::CONTROL_PLANE_NAMESPACE)]
    pub namespace: String,
}

/// Flags of `meshctl install`.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = "Examples:
  meshctl install                                  # the default profile, after a confirmation
  meshctl install --profile demo -y                # the demo profile, no question asked
  meshctl install --set global.hub=registry.local/mesh --set global.tag=1.2.0
  meshctl install -f my-values.yaml --dry-run > mesh.yaml   # the manifests, applied by nobody")]
pub struct InstallArgs {
    /// The set of components and settings to start from: default, demo or minimal.
    #[arg(long, default_value = "default")]
    pub profile: String,
    /// A value of the charts, `key.path=value` (Helm's `--set` syntax); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A values file (Helm's `-f`); repeatable, later files win.
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// Print the manifests that would be applied, and apply nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before applying.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// The longest wait for each readiness step.
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub timeout: Duration,
    /// The cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Flags of `meshctl uninstall`.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = "Examples:
  meshctl uninstall            # what install applied, after a confirmation
  meshctl uninstall --purge -y # the CRDs too: every VirtualService and the like goes with them")]
pub struct UninstallArgs {
    /// Remove the mesh's CRDs too, and with them every object of those kinds.
    #[arg(long)]
    pub purge: bool,
    /// Do not ask before removing.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// The cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

fn duration(text: &str) -> Result<Duration, String> {
    mesh_api::duration::parse(text).map_err(|e| e.to_string())
}

/// Why install or uninstall failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The charts could not be rendered with these values.
    #[error("rendering the charts: {0}")]
    Render(String),
    /// The rendered objects cannot be installed.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// No cluster to talk to.
    #[error("cannot use the kubeconfig: {0}")]
    Kubeconfig(String),
    /// A call or a wait failed.
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    /// The person said no.
    #[error("nothing done: not confirmed (-y answers yes)")]
    NotConfirmed,
    /// The terminal or the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The objects the charts render for `args`: the CRDs, then the rest (the mesh chart, then a
/// gateway release for each gateway the profile enables).
pub fn render(args: &InstallArgs) -> Result<plan::Plan, InstallError> {
    let render_error = |e: &dyn std::fmt::Display| InstallError::Render(e.to_string());
    let profile: mesh_charts::Profile = args.profile.parse().map_err(|e| render_error(&e))?;
    let mut files = Vec::new();
    for path in &args.values {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InstallError::Render(format!("{}: {e}", path.display())))?;
        files.push(mesh_charts::ValuesFile { name: path.display().to_string(), text });
    }
    let overrides = mesh_charts::Overrides {
        profile: Some(profile),
        files,
        set: args.set.clone(),
        set_string: Vec::new(),
    };
    let releases =
        mesh_charts::plan(&overrides, &args.cluster.namespace).map_err(|e| render_error(&e))?;
    let capabilities = mesh_charts::Capabilities::default();
    let (mut crds, mut objects) = (Vec::new(), Vec::new());
    for release in &releases {
        for file in release.crds().map_err(|e| render_error(&e))? {
            for (document, _, body) in mesh_api::load::yaml_documents(file.contents) {
                let crd: serde_json::Value = serde_saphyr::from_str(body).map_err(|e| {
                    InstallError::Render(format!("{} document {document}: {e}", file.path))
                })?;
                if !crd.is_null() {
                    crds.push(crd);
                }
            }
        }
        let manifests = release.render(&capabilities).map_err(|e| render_error(&e))?;
        objects.extend(manifests.into_iter().map(|m| m.object));
    }
    Ok(plan::plan(&args.cluster.namespace, crds, objects)?)
}

/// The manifests of a plan, as `--dry-run` prints them: YAML documents, in apply order.
pub fn manifests(plan: &plan::Plan) -> String {
    plan.objects
        .iter()
        .map(|object| serde_saphyr::to_string(object).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

async fn client(cluster: &ClusterArgs) -> Result<kube::Client, InstallError> {
    let options = kube::config::KubeConfigOptions {
        context: cluster.context.clone(),
        ..kube::config::KubeConfigOptions::default()
    };
    let config = match &cluster.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| InstallError::Kubeconfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| InstallError::Kubeconfig(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| InstallError::Kubeconfig(e.to_string()))
}

fn confirm(question: &str) -> Result<(), InstallError> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(InstallError::NotConfirmed)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, InstallError> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// `meshctl install`.
pub fn install(args: &InstallArgs) -> Result<(), InstallError> {
    let plan = render(args)?;
    if args.dry_run {
        print!("{}", manifests(&plan));
        return Ok(());
    }
    println!("meshctl install --profile {} will apply, in this order:", args.profile);
    for object in &plan.objects {
        println!("  {}", plan::ObjectRef::of(object));
    }
    if !args.yes {
        confirm("Proceed?")?;
    }
    let runtime = runtime()?;
    runtime.block_on(async {
        let client = client(&args.cluster).await?;
        let waits = apply::Waits { timeout: args.timeout, period: Duration::from_secs(1) };
        apply::install(&client, &plan, waits, &mut std::io::stdout()).await?;
        println!("✔ the mesh is installed in namespace {}", plan.namespace);
        println!(
            "  Next: kubectl label namespace default {}={} and restart your workloads",
            mesh_api::ports::INJECTION_NAMESPACE_LABEL.0,
            mesh_api::ports::INJECTION_NAMESPACE_LABEL.1
        );
        Ok(())
    })
}

/// `meshctl uninstall`.
pub fn uninstall(args: &UninstallArgs) -> Result<(), InstallError> {
    if !args.yes {
        let what = if args.purge {
            "the mesh and its CRDs (with every object of those kinds)"
        } else {
            "the mesh"
        };
        confirm(&format!("Remove {what} from namespace {}?", args.cluster.namespace))?;
    }
    runtime()?.block_on(async {
        let client = client(&args.cluster).await?;
        let removed =
            apply::uninstall(&client, &args.cluster.namespace, args.purge, &mut std::io::stdout())
                .await?;
        println!("✔ uninstalled: {removed} objects removed");
        Ok(())
    })
}
