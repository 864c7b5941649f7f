//! The proxy's settings: flags, each also an environment variable (the injector sets them from
//! the pod's downward API), checked together, with errors that name the flag and the variable.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use mesh_api::identity::SpiffeId;
use mesh_api::xds::{NodeId, ProxyType, metadata};

/// Command-line flags (and environment variables) of `mesh-proxy`.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "mesh-proxy", version, about = "The mesh's sidecar proxy")]
pub struct Flags {
    /// `sidecar` (captured traffic on 15001 and 15006) or `router`: a gateway, listening on the
    /// ports of the Gateways that select it (Istio's `proxy router`).
    #[arg(long, env = "MESH_PROXY_TYPE", value_enum, default_value = "sidecar")]
    pub proxy_type: Role,
    /// Worker threads carrying traffic (Istio's `concurrency`; 0: one per CPU).
    #[arg(long, env = "MESH_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,
    /// `host:port` of the pilot's xDS server.
    #[arg(long, env = "MESH_PILOT_ADDRESS", default_value = "mesh-pilot.mesh-system.svc:15012")]
    pub pilot_address: String,
    /// mesh-ca's address and name, the mesh root, the workload's token.
    #[command(flatten)]
    pub ca: mesh_identity::flags::CaFlags,
    /// The pod's name (downward API): the pod part of the xDS node id.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The pod's namespace: part of the workload identity and of the node id.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// The pod's service account: the workload certificate is issued for it.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// The pod's IP address: the pilot finds the proxy's own endpoints by it.
    #[arg(long, env = "INSTANCE_IP")]
    pub pod_ip: Option<String>,
    /// The pod's labels, in the downward API's format (`key="value"` per line).
    #[arg(long, env = "MESH_LABELS_FILE", default_value = "/etc/mesh/pod/labels")]
    pub labels_file: PathBuf,
    /// Trust domain of workload identities.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_api::identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// The cluster the pod runs in.
    #[arg(long, env = "MESH_CLUSTER_ID", default_value = "Kubernetes")]
    pub cluster_id: String,
    /// The workload the pod belongs to (its Deployment's name, as Istio's
    /// `ISTIO_META_WORKLOAD_NAME`): `source_workload`/`destination_workload` in metrics.
    /// Default: the `app` label, else the pod's name.
    #[arg(long, env = "MESH_WORKLOAD_NAME")]
    pub workload_name: Option<String>,
    /// The cluster DNS domain, the end of the node id (`<namespace>.svc.<domain>`).
    #[arg(long, env = "MESH_DNS_DOMAIN", default_value = "cluster.local")]
    pub dns_domain: String,
    /// The pilot's SPIFFE id, checked on the mTLS xDS connection (default: the `mesh-pilot`
    /// service account of `mesh-system` in the trust domain).
    #[arg(long, env = "MESH_PILOT_IDENTITY")]
    pub pilot_identity: Option<String>,
    /// Lifetime asked of the CA for the workload certificate.
    #[arg(long, env = "MESH_CERT_TTL", default_value = "24h", value_parser = duration)]
    pub cert_ttl: std::time::Duration,
    /// Outbound capture port (where mesh-init redirects the app's outgoing connections).
    #[arg(long, env = "MESH_OUTBOUND_PORT", default_value_t = 15001)]
    pub outbound_port: u16,
    /// Inbound capture port (where mesh-init redirects connections to the pod).
    #[arg(long, env = "MESH_INBOUND_PORT", default_value_t = 15006)]
    pub inbound_port: u16,
    /// Admin port (loopback only).
    #[arg(long, env = "MESH_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,
    /// Readiness port (`/healthz/ready`).
    #[arg(long, env = "MESH_HEALTH_PORT", default_value_t = 15021)]
    pub health_port: u16,
    /// Prometheus port (`/stats/prometheus`).
    #[arg(long, env = "MESH_METRICS_PORT", default_value_t = 15090)]
    pub metrics_port: u16,
    /// How long in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "MESH_DRAIN_DURATION", default_value = "5s", value_parser = duration)]
    pub drain_duration: std::time::Duration,
    /// Access log format: `text` (Envoy's default, as Istio prints it), `json`, or `off`.
    #[arg(long, env = "MESH_ACCESS_LOG", value_enum, default_value = "text")]
    pub access_log: crate::telemetry::LogFormat,
    /// How long to wait for a client's first bytes before treating it as opaque TCP; 0s (the
    /// default, as Istio's) waits as long as the client takes. A timeout sends a slow client of
    /// an HTTP port past routing and policy as opaque TCP.
    #[arg(long, env = "MESH_PROTOCOL_DETECTION_TIMEOUT", default_value = "0s", value_parser = duration)]
    pub protocol_detection_timeout: std::time::Duration,
    /// Port of the app's probes run by the proxy (`/app-health/...`), never captured.
    #[arg(long, env = "MESH_STATUS_PORT", default_value_t = mesh_api::ports::PROXY_MERGED_METRICS)]
    pub status_port: u16,
    /// The app's original probes, by the path injection rewrote them to (JSON, set by the
    /// injector).
    #[arg(long, env = mesh_api::inject::probes::PROBERS_ENV)]
    pub app_probers: Option<String>,
    /// Logging (`--log-level`, `--log-format`).
    #[command(flatten)]
    pub log: mesh_runtime::log::LogFlags,
    /// `mesh-proxy wait`, instead of running the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What kind of proxy this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Next to an app, its traffic captured by mesh-init's rules.
    Sidecar,
    /// A gateway (ingress or egress): listeners from the Gateways, no capture.
    Router,
}

/// What `mesh-proxy` does besides being the proxy.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Waits until the proxy of this pod is ready (exit 0), or fails after the timeout: the
    /// postStart hook that holds the app's start until the proxy can carry its traffic.
    Wait {
        /// How long to wait.
        #[arg(long, default_value = "60s", value_parser = duration)]
        timeout: std::time::Duration,
        /// How often to ask.
        #[arg(long, default_value = "200ms", value_parser = duration)]
        period: std::time::Duration,
    },
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    mesh_api::duration::parse(text).map_err(|e| e.to_string())
}

/// What is wrong with the settings, naming the flag and its environment variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// A required setting has no value.
    #[error("{flag} (or {env}) is required: {why}")]
    Missing {
        /// The flag's name (`--pod-name`).
        flag: &'static str,
        /// The environment variable that also sets it (`POD_NAME`).
        env: &'static str,
        /// What the proxy needs the value for, so the error says why it is required.
        why: &'static str,
    },
    /// A setting has a value that cannot be used.
    #[error("{flag} {value:?}: {why}")]
    Invalid {
        /// The flag at fault (`--pod-ip`), or the flags whose values were combined.
        flag: &'static str,
        /// The value given.
        value: String,
        /// Why it cannot be used.
        why: String,
    },
}

/// What [`Settings::from_flags`] derives from the flags once they are checked: addresses, identity,
/// node id, labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `host:port` of the pilot's xDS server (`--pilot-address`).
    pub pilot_address: String,
    /// `host:port` of the CA's gRPC server (`--ca-address`).
    pub ca_address: String,
    /// File with the workload's token for the CA, read again for every request (projected tokens
    /// are refreshed).
    pub token_path: PathBuf,
    /// The workload's SPIFFE identity (trust domain, namespace, service account), which its
    /// certificate must carry.
    pub identity: SpiffeId,
    /// The node id the pilot knows the proxy by.
    pub node_id: NodeId,
    /// The pod's labels from `--labels-file` (none when the file is missing), sent as node metadata
    /// `LABELS`.
    pub labels: BTreeMap<String, String>,
    /// The cluster the pod runs in.
    pub cluster_id: String,
    /// The workload's name (`--workload-name`, else the `app` label, else the pod's name).
    pub workload_name: String,
    /// The app's probes the proxy runs (`--app-probers`), by path.
    pub app_probers: mesh_api::inject::probes::AppProbers,
}

fn required(
    value: &Option<String>,
    flag: &'static str,
    env: &'static str,
    why: &'static str,
) -> Result<String, SettingsError> {
    value.clone().filter(|v| !v.trim().is_empty()).ok_or(SettingsError::Missing { flag, env, why })
}

/// Reads labels in the downward API's format: `key="value"` per line, values quoted and
/// escaped as Go strings. A missing file means no labels (the pod may have none).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) =
            line.split_once('=').ok_or_else(|| format!("line {}: no '=' in {line:?}", n + 1))?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format!("line {}: the value of {key:?} is not quoted", n + 1))?;
        labels.insert(key.to_owned(), value.replace("\\\"", "\"").replace("\\\\", "\\"));
    }
    Ok(labels)
}

impl Settings {
    /// Checks the flags; every problem is reported with the flag and variable to fix.
    pub fn from_flags(flags: &Flags) -> Result<Self, SettingsError> {
        let pod =
            required(&flags.pod_name, "--pod-name", "POD_NAME", "it names the proxy to the pilot")?;
        let namespace = required(
            &flags.pod_namespace,
            "--pod-namespace",
            "POD_NAMESPACE",
            "the identity and the config the proxy gets depend on it",
        )?;
        let service_account = required(
            &flags.service_account,
            "--service-account",
            "SERVICE_ACCOUNT",
            "the workload certificate is issued for it",
        )?;
        let ip_text = required(
            &flags.pod_ip,
            "--pod-ip",
            "INSTANCE_IP",
            "the pilot finds the proxy's own endpoints by it",
        )?;
        let ip: IpAddr = ip_text.parse().map_err(|e| SettingsError::Invalid {
            flag: "--pod-ip",
            value: ip_text.clone(),
            why: format!("not an IP address ({e})"),
        })?;
        let identity =
            SpiffeId::new(&flags.trust_domain, &namespace, &service_account).map_err(|e| {
                SettingsError::Invalid {
                    flag: "--trust-domain/--pod-namespace/--service-account",
                    value: format!("{}/{namespace}/{service_account}", flags.trust_domain),
                    why: e.to_string(),
                }
            })?;
        let labels = match std::fs::read_to_string(&flags.labels_file) {
            Ok(text) => parse_labels(&text).map_err(|why| SettingsError::Invalid {
                flag: "--labels-file",
                value: flags.labels_file.display().to_string(),
                why,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(SettingsError::Invalid {
                    flag: "--labels-file",
                    value: flags.labels_file.display().to_string(),
                    why: e.to_string(),
                });
            }
        };
        let workload_name = flags
            .workload_name
            .clone()
            .filter(|w| !w.trim().is_empty())
            .or_else(|| labels.get("app").cloned())
            .unwrap_or_else(|| pod.clone());
        let app_probers = match &flags.app_probers {
            Some(json) if !json.trim().is_empty() => {
                crate::app_health::parse(json).map_err(|why| SettingsError::Invalid {
                    flag: "--app-probers",
                    value: json.clone(),
                    why,
                })?
            }
            _ => Default::default(),
        };
        Ok(Self {
            app_probers,
            pilot_address: flags.pilot_address.clone(),
            ca_address: flags.ca.ca_address.clone(),
            token_path: flags.ca.token_path.clone(),
            node_id: NodeId {
                proxy_type: match flags.proxy_type {
                    Role::Sidecar => ProxyType::Sidecar,
                    Role::Router => ProxyType::Router,
                },
                ip,
                pod: pod.clone(),
                namespace,
                dns_domain: flags.dns_domain.clone(),
            },
            identity,
            labels,
            cluster_id: flags.cluster_id.clone(),
            workload_name,
        })
    }

    /// The xDS node: the id, and the metadata Istio's agents send.
    pub fn node(&self) -> Node {
        let text = |s: &str| Value { kind: Some(Kind::StringValue(s.to_owned())) };
        let labels =
            Struct { fields: self.labels.iter().map(|(k, v)| (k.clone(), text(v))).collect() };
        let workload = &self.workload_name;
        let fields = [
            (metadata::NAMESPACE, text(&self.node_id.namespace)),
            (metadata::SERVICE_ACCOUNT, text(self.identity.service_account())),
            (metadata::INSTANCE_IPS, text(&self.node_id.ip.to_string())),
            (metadata::INTERCEPTION_MODE, text("REDIRECT")),
            (metadata::CLUSTER_ID, text(&self.cluster_id)),
            (metadata::WORKLOAD_NAME, text(workload)),
            (metadata::MESH_ID, text(self.identity.trust_domain())),
            (metadata::LABELS, Value { kind: Some(Kind::StructValue(labels)) }),
        ];
        Node {
            id: self.node_id.to_string(),
            cluster: format!("{workload}.{}", self.node_id.namespace),
            metadata: Some(Struct {
                fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            }),
            // What `meshctl proxy-status` and `version` show for this proxy.
            user_agent_name: "mesh-proxy".to_owned(),
            user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").to_owned(),
            )),
            ..Node::default()
        }
    }
}
