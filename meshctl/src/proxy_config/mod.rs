//! `meshctl proxy-config clusters|listeners|routes|endpoints|secret POD`: what one proxy is
//! running, read from its admin port (`/config_dump`, and `/clusters?format=json` for
//! endpoints) and shown as `istioctl proxy-config` shows it, for mesh-proxy and Envoy alike.
//! The tables are pure functions of the proxy's JSON ([`clusters`], [`listeners`], [`routes`],
//! [`endpoints`], [`secrets`]); only [`run`] reaches the mesh.

pub mod clusters;
pub mod dump;
pub mod endpoints;
pub mod listeners;
pub mod routes;
pub mod secrets;
pub mod table;

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use mesh_api::ports;
use serde_json::Value;

use crate::access::{self, AccessError, Mesh, MeshArgs, Target};
use dump::DumpError;

/// `meshctl proxy-config`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  meshctl proxy-config clusters reviews-v1 --fqdn reviews --direction outbound
  meshctl proxy-config listeners productpage-v1.default --port 9080
  meshctl proxy-config routes ingressgateway.mesh-system --name http.8080 -o json
  meshctl proxy-config endpoints reviews-v1 --cluster 'outbound|9080||ratings.default.svc.cluster.local'
  meshctl proxy-config secret reviews-v1")]
pub struct ProxyConfigArgs {
    /// What to show.
    #[command(subcommand)]
    pub kind: Kind,
    /// Which mesh.
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// The parts of a proxy's configuration.
#[derive(Debug, Subcommand)]
pub enum Kind {
    /// Its clusters: service, port, subset, direction, discovery type, DestinationRule.
    #[command(visible_aliases = ["cluster", "c"])]
    Clusters {
        /// The pod and output.
        #[command(flatten)]
        pod: PodArgs,
        /// Only the cluster of this whole name.
        #[arg(long)]
        name: Option<String>,
        /// Only clusters of services whose name contains this.
        #[arg(long)]
        fqdn: Option<String>,
        /// Only clusters of this port.
        #[arg(long)]
        port: Option<u16>,
        /// Only clusters of subsets whose name contains this.
        #[arg(long)]
        subset: Option<String>,
        /// Only `inbound` or `outbound` clusters.
        #[arg(long)]
        direction: Option<String>,
    },
    /// Its listeners, a row per filter chain: what it matches and where it sends it.
    #[command(visible_aliases = ["listener", "l"])]
    Listeners {
        /// The pod and output.
        #[command(flatten)]
        pod: PodArgs,
        /// Only the listener of this name.
        #[arg(long)]
        name: Option<String>,
        /// Only listeners of this address.
        #[arg(long)]
        address: Option<String>,
        /// Only listeners on this port, and chains for this destination port.
        #[arg(long)]
        port: Option<u16>,
        /// Only listeners of this type: HTTP, TCP, HTTP+TCP.
        #[arg(long = "type")]
        kind: Option<String>,
    },
    /// Its route configurations, a row per route: virtual host, domains, match, VirtualService.
    #[command(visible_aliases = ["route", "r"])]
    Routes {
        /// The pod and output.
        #[command(flatten)]
        pod: PodArgs,
        /// Only the route configuration of this name (`9080`, `http.8080`).
        #[arg(long)]
        name: Option<String>,
    },
    /// Its endpoints, per cluster, with their health and outlier ejection.
    #[command(visible_aliases = ["endpoint", "ep"])]
    Endpoints {
        /// The pod and output.
        #[command(flatten)]
        pod: PodArgs,
        /// Only the endpoints of the cluster of this whole name.
        #[arg(long, visible_alias = "name")]
        cluster: Option<String>,
        /// Only endpoints of this address.
        #[arg(long)]
        address: Option<String>,
        /// Only endpoints of this port.
        #[arg(long)]
        port: Option<u16>,
        /// Only endpoints of this health: HEALTHY, UNHEALTHY, DRAINING, DEGRADED, UNKNOWN.
        #[arg(long)]
        status: Option<String>,
    },
    /// Its certificates: its own chain and the roots it trusts, with serial and validity.
    #[command(visible_aliases = ["secrets", "s"])]
    Secret {
        /// The pod and output.
        #[command(flatten)]
        pod: PodArgs,
        /// Only the secret of this name (`default`, `ROOTCA`).
        #[arg(long)]
        name: Option<String>,
    },
}

/// The pod whose proxy to read, and how to print.
#[derive(Debug, Args)]
pub struct PodArgs {
    /// The pod: `name` or `name.namespace`.
    pub pod: String,
    /// A table, or the selected resources as the proxy reports them.
    #[arg(short, long, value_enum, default_value_t = Output::Short)]
    pub output: Output,
}

/// How to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table.
    Short,
    /// The selected resources, as JSON.
    Json,
    /// The selected resources, as YAML.
    Yaml,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    /// The mesh, the pod or its admin port could not be reached.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The proxy's answer is not what the command reads.
    #[error("{what}: {source}{hint}")]
    Dump {
        /// What was read.
        what: String,
        /// What is wrong with it.
        #[source]
        source: DumpError,
        /// What to do about it, if anything.
        hint: &'static str,
    },
    /// The selection could not be written as JSON or YAML.
    #[error("cannot write the {format}: {reason}")]
    Write {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// Why.
        reason: String,
    },
}

/// Runs `meshctl proxy-config`: prints the table or selection; the exit code is 0.
pub fn run(args: &ProxyConfigArgs) -> Result<i32, ProxyConfigError> {
    let mesh = access::choose(&args.mesh)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    print!("{}", show(mesh.as_ref(), &args.kind, now)?);
    Ok(0)
}

/// The text `kind` asks for, read from the proxy of its pod in `mesh`.
pub fn show(mesh: &dyn Mesh, kind: &Kind, now: i64) -> Result<String, ProxyConfigError> {
    let pod_args = match kind {
        Kind::Clusters { pod, .. }
        | Kind::Listeners { pod, .. }
        | Kind::Routes { pod, .. }
        | Kind::Endpoints { pod, .. }
        | Kind::Secret { pod, .. } => pod,
    };
    let pod = mesh.find_pod(&pod_args.pod)?;
    let admin_path = if matches!(kind, Kind::Endpoints { .. }) {
        "/clusters?format=json"
    } else {
        "/config_dump"
    };
    let text = access::get(mesh, &Target::Pod(pod.clone()), ports::PROXY_ADMIN, admin_path)?;
    let what = format!("{pod} :{}{admin_path}", ports::PROXY_ADMIN);
    let value = dump::parse(&text).map_err(|source| dump_error(&what, source))?;
    render(&value, kind, now, &what)
}

fn dump_error(what: &str, source: DumpError) -> ProxyConfigError {
    let hint = match source {
        DumpError::Missing(_) => {
            "; the proxy's admin answers in another shape than Envoy's (an older mesh-proxy?)"
        }
        DumpError::NotJson(_) => "",
    };
    ProxyConfigError::Dump { what: what.to_owned(), source, hint }
}

/// The table or selection `kind` asks for, from the proxy's JSON (its config dump, or its
/// clusters for endpoints; `what` names it in errors); `now` (Unix seconds) decides which
/// certificates are valid.
pub fn render(
    value: &Value,
    kind: &Kind,
    now: i64,
    what: &str,
) -> Result<String, ProxyConfigError> {
    let (output, selected) = select(value, kind, now).map_err(|e| dump_error(what, e))?;
    match selected {
        Selected::Table(text) => Ok(text),
        Selected::Resources(resources) => write(output, &resources),
    }
}

/// A table, or the resources to write as JSON or YAML.
enum Selected<'a> {
    Table(String),
    Resources(Vec<&'a Value>),
}

fn select<'a>(
    value: &'a Value,
    kind: &Kind,
    now: i64,
) -> Result<(Output, Selected<'a>), DumpError> {
    let table = |text: String| Ok((Output::Short, Selected::Table(text)));
    let (output, selected) = match kind {
        Kind::Clusters { pod, name, fqdn, port, subset, direction } => {
            let filter = clusters::ClusterFilter {
                name: name.clone(),
                fqdn: fqdn.clone(),
                port: *port,
                subset: subset.clone(),
                direction: direction.clone(),
            };
            if pod.output == Output::Short {
                return table(clusters::table(value, &filter)?);
            }
            (pod.output, clusters::select(value, &filter)?)
        }
        Kind::Listeners { pod, name, address, port, kind } => {
            let filter = listeners::ListenerFilter {
                name: name.clone(),
                address: address.clone(),
                port: *port,
                kind: kind.clone(),
            };
            if pod.output == Output::Short {
                return table(listeners::table(value, &filter)?);
            }
            (pod.output, listeners::select(value, &filter)?)
        }
        Kind::Routes { pod, name } => {
            let filter = routes::RouteFilter { name: name.clone() };
            if pod.output == Output::Short {
                return table(routes::table(value, &filter)?);
            }
            (pod.output, routes::select(value, &filter)?)
        }
        Kind::Endpoints { pod, cluster, address, port, status } => {
            let filter = endpoints::EndpointFilter {
                cluster: cluster.clone(),
                address: address.clone(),
                port: *port,
                status: status.clone(),
            };
            if pod.output == Output::Short {
                return table(endpoints::table(value, &filter)?);
            }
            (pod.output, endpoints::select(value, &filter)?)
        }
        Kind::Secret { pod, name } => {
            let filter = secrets::SecretFilter { name: name.clone() };
            if pod.output == Output::Short {
                return table(secrets::table(value, &filter, now)?);
            }
            (pod.output, secrets::select(value, &filter)?)
        }
    };
    Ok((output, Selected::Resources(selected)))
}

/// The selection as JSON (indented) or YAML.
fn write(output: Output, selected: &[&Value]) -> Result<String, ProxyConfigError> {
    let value = Value::Array(selected.iter().map(|v| (*v).clone()).collect());
    let text = match output {
        Output::Yaml => serde_saphyr::to_string(&value)
            .map_err(|e| ProxyConfigError::Write { format: "YAML", reason: e.to_string() })?,
        Output::Json | Output::Short => serde_json::to_string_pretty(&value)
            .map_err(|e| ProxyConfigError::Write { format: "JSON", reason: e.to_string() })?,
    };
    Ok(if text.ends_with('\n') { text } else { format!("{text}\n") })
}
