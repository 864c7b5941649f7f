//! How meshctl reaches a running mesh: the local mesh (a connection made from inside the network
//! namespace of the pod or control plane) or a cluster (the Kubernetes API's port-forward, which
//! arrives on the pod's loopback as `kubectl port-forward` does). Either gives a byte stream to a
//! port of a pod; everything above it (the pilot's `/debug/syncz`, a proxy's admin and metrics)
//! is the same HTTP for both.

mod cluster;
pub mod http;
mod local;
mod scrape;

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use clap::Args;
use mesh_api::ports;
use serde::Deserialize;

pub use cluster::ClusterMesh;
pub use local::LocalMesh;
pub use scrape::MeshSource;

/// A connection to a port of a pod: a TCP connection made inside the mesh's namespaces, or one
/// end of a socket pair whose other end a port-forward carries.
pub trait Conn: Read + Write + Send {
    /// A second handle on the same connection (one thread reads while another writes).
    fn try_clone_conn(&self) -> std::io::Result<Box<dyn Conn>>;
    /// Says no more will be written (the far side reads the end).
    fn shutdown_write(&self) -> std::io::Result<()>;
    /// How long a read may wait (`None`: for ever, as a stream of lines needs).
    fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> std::io::Result<()>;
}

impl Conn for std::net::TcpStream {
    fn try_clone_conn(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
    fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, timeout)
    }
}

impl Conn for std::os::unix::net::UnixStream {
    fn try_clone_conn(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
    fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
}

/// How long a read of a whole answer may wait for the next bytes.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What meshctl connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The control plane's mesh-pilot.
    Pilot,
    /// The control plane's mesh-ca.
    Ca,
    /// A pod of the mesh (a sidecar's or a gateway's).
    Pod(Pod),
    /// The local mesh's trace receiver (`meshctl local up --tracing`), its JSON API.
    Tracing,
}

/// A pod, as `kubectl` names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pod {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
}

impl std::fmt::Display for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// What went wrong reaching the mesh, naming what was asked of whom.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Neither a local mesh nor a cluster can be reached.
    #[error("{0}")]
    NoMesh(String),
    /// A connection failed.
    #[error("{what}: {reason}")]
    Connect {
        /// What was being reached.
        what: String,
        /// Why not.
        reason: String,
    },
    /// Reading or writing a connection or a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer was not what was expected.
    #[error("{what}: {reason}")]
    Http {
        /// What was asked.
        what: String,
        /// What came back.
        reason: String,
    },
    /// No proxy of that name.
    #[error("{0}")]
    NotFound(String),
    /// The Kubernetes API refused or failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was asked of it.
        what: String,
        /// Its error.
        #[source]
        source: kube::Error,
    },
}

impl AccessError {
    pub(crate) fn io(what: &str, source: std::io::Error) -> Self {
        AccessError::Io { what: what.to_owned(), source }
    }
}

/// A running mesh meshctl can look into.
pub trait Mesh: Send + Sync {
    /// Which mesh this is, for messages (`the local mesh "mesh"`, `cluster context kind-mesh`).
    fn describe(&self) -> String;

    /// A connection to `port` of `target`, made where that port listens (admin ports listen
    /// on the pod's loopback only).
    fn connect(&self, target: &Target, port: u16) -> Result<Box<dyn Conn>, AccessError>;

    /// The token the pilot's `/debug/*` needs from this side, if any (a cluster's port-forward
    /// arrives on the pilot's loopback and needs none).
    fn pilot_token(&self) -> Option<String>;

    /// The mesh's configuration and the Kubernetes objects the analysis reads (Namespaces,
    /// Services, workloads), as (origin, YAML or JSON text) documents; only `namespace`'s
    /// when one is given.
    fn config_documents(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<(String, String)>, AccessError>;

    /// Which pod a user means by `name` (`pod` or `pod.namespace`): the pods of the local mesh,
    /// or the cluster's pods.
    fn find_pod(&self, name: &str) -> Result<Pod, AccessError>;

    /// Every pilot, by name, and how to reach it: each proxy is connected to one of them, so
    /// a view of all proxies asks them all (a cluster runs several replicas).
    fn pilots(&self) -> Result<Vec<(String, Target)>, AccessError> {
        Ok(vec![("mesh-pilot".to_owned(), Target::Pilot)])
    }
}

/// Flags that choose the mesh, shared by the commands that look into one.
#[derive(Clone, Debug, Default, Args)]
pub struct MeshArgs {
    /// Use the local mesh (`meshctl local`), even when a kubeconfig exists.
    #[arg(long, global = true, conflicts_with = "kubeconfig")]
    pub local: bool,
    /// The local mesh's state directory.
    #[arg(long, global = true, env = "MESH_LOCAL_STATE", default_value = crate::local::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Use the cluster of this kubeconfig (default: the local mesh when one is up, else
    /// $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace of the control plane in the cluster.
    #[arg(long, global = true, default_value = "mesh-system")]
    pub mesh_namespace: String,
}

/// The mesh the flags name: the local mesh with `--local`, the cluster with `--kubeconfig`,
/// else the local mesh when one is up, else the default kubeconfig's cluster.
pub fn choose(args: &MeshArgs) -> Result<Box<dyn Mesh>, AccessError> {
    if args.kubeconfig.is_some() || args.context.is_some() {
        return Ok(Box::new(ClusterMesh::connect(args)?));
    }
    if args.local || LocalMesh::is_up(&args.state_dir) {
        return Ok(Box::new(LocalMesh::open(&args.state_dir)?));
    }
    ClusterMesh::connect(args).map(|m| Box::new(m) as Box<dyn Mesh>).map_err(|e| {
        AccessError::NoMesh(format!(
            "no local mesh is up (state directory {}) and no cluster can be reached ({e}); \
             run `meshctl local up`, or pass --kubeconfig",
            args.state_dir.display()
        ))
    })
}

/// `GET path` on `port` of `target`: the body of a 200 answer, else an error naming what
/// answered what.
pub fn get(mesh: &dyn Mesh, target: &Target, port: u16, path: &str) -> Result<String, AccessError> {
    let what = describe_target(target, port, path);
    let token = matches!(target, Target::Pilot).then(|| mesh.pilot_token()).flatten();
    let conn = mesh.connect(target, port)?;
    // A whole answer comes at once; a proxy that stops answering must not hang meshctl.
    conn.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| AccessError::io(&what, e))?;
    let (status, body) = http::get(conn, &what, &http::Get { path, token: token.as_deref() })?;
    if status != 200 {
        return Err(AccessError::Http {
            what,
            reason: format!("answered {status}: {}", body.trim()),
        });
    }
    Ok(body)
}

/// `GET path` on `port` of `target`, the body read as it comes (a stream of lines); a read
/// waits at most `idle` for the next bytes (a stream that sends keep-alive lines can say how
/// long a silence means a dead connection).
pub fn stream(
    mesh: &dyn Mesh,
    target: &Target,
    port: u16,
    path: &str,
    idle: Option<std::time::Duration>,
) -> Result<Box<dyn BufRead + Send>, AccessError> {
    let what = describe_target(target, port, path);
    let conn = mesh.connect(target, port)?;
    conn.set_read_timeout(idle).map_err(|e| AccessError::io(&what, e))?;
    let mut answer = http::stream(conn, &what, &http::Get { path, token: None })?;
    if answer.status != 200 {
        let mut text = String::new();
        let _ = answer.body.by_ref().take(4096).read_to_string(&mut text);
        return Err(AccessError::Http {
            what,
            reason: format!("answered {}: {}", answer.status, text.trim()),
        });
    }
    Ok(answer.body)
}

fn describe_target(target: &Target, port: u16, path: &str) -> String {
    match target {
        Target::Pilot => format!("mesh-pilot :{port}{path}"),
        Target::Ca => format!("mesh-ca :{port}{path}"),
        Target::Pod(pod) => format!("{pod} :{port}{path}"),
        Target::Tracing => format!("the trace receiver :{port}{path}"),
    }
}

/// One proxy connected to the pilot, with its sync state per type: an entry of `/debug/syncz`.
#[derive(Clone, Debug, Deserialize)]
pub struct SyncStatus {
    /// The node id (`sidecar~10.77.0.11~reviews-v2.default~default.svc.cluster.local`).
    pub proxy: String,
    /// What the proxy says it is (`mesh-proxy/0.1.0`, `envoy/1.34.1`).
    #[serde(default)]
    pub version: String,
    /// Per type URL.
    #[serde(default)]
    pub types: std::collections::BTreeMap<String, TypeSync>,
    /// The pilot that reported it (its pod's name in a cluster).
    #[serde(skip)]
    pub pilot: String,
    /// How to reach that pilot (for what it serves this proxy).
    #[serde(skip)]
    pub served_by: Option<Target>,
}

/// The sync state of one type for one proxy.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TypeSync {
    /// `SYNCED`, `STALE`, `NOT SENT` or `ERROR`.
    #[serde(default)]
    pub state: String,
    /// The version last sent.
    #[serde(default)]
    pub sent_version: String,
    /// The version the proxy last accepted.
    #[serde(default)]
    pub acked_version: String,
    /// The proxy's message on its last rejection.
    #[serde(default)]
    pub last_nack: Option<String>,
}

impl SyncStatus {
    /// The pod the node id names (`type~ip~pod.namespace~domain`).
    pub fn pod(&self) -> Option<Pod> {
        let node: mesh_api::xds::NodeId = self.proxy.parse().ok()?;
        Some(Pod { name: node.pod, namespace: node.namespace })
    }
}

/// The pilot's `/debug/syncz` text, parsed.
pub fn parse_syncz(text: &str) -> Result<Vec<SyncStatus>, AccessError> {
    serde_json::from_str(text).map_err(|e| AccessError::Http {
        what: "mesh-pilot /debug/syncz".into(),
        reason: format!("not the expected JSON: {e}"),
    })
}

/// The proxies connected to the pilots, as their `/debug/syncz` report them, each entry naming
/// the pilot that reported it (the raw text too, for callers that show it as is: a JSON array
/// of every pilot's entries). A pilot that cannot be reached is skipped while another answers.
pub fn syncz(mesh: &dyn Mesh) -> Result<(String, Vec<SyncStatus>), AccessError> {
    let port = ports::CONTROL_PLANE_MONITORING;
    let mut all = Vec::new();
    let mut raw = Vec::new();
    let mut first_error = None;
    for (name, target) in mesh.pilots()? {
        match get(mesh, &target, port, "/debug/syncz").and_then(|text| {
            let parsed = parse_syncz(&text)?;
            Ok((text, parsed))
        }) {
            Ok((text, entries)) => {
                if let Ok(serde_json::Value::Array(items)) = serde_json::from_str(&text) {
                    raw.extend(items);
                }
                all.extend(entries.into_iter().map(|mut e| {
                    e.pilot.clone_from(&name);
                    e.served_by = Some(target.clone());
                    e
                }));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if raw.is_empty()
        && let Some(e) = first_error
    {
        return Err(e);
    }
    Ok((serde_json::Value::Array(raw).to_string(), all))
}

/// The live mesh's documents for `meshctl analyze -k`: the chosen mesh's configuration.
pub fn live_config(
    args: &MeshArgs,
    namespace: Option<&str>,
) -> Result<Vec<(String, String)>, AccessError> {
    choose(args)?.config_documents(namespace)
}

/// Splits `pod` or `pod.namespace`.
pub(crate) fn split_pod_name(name: &str, default_namespace: &str) -> Pod {
    match name.split_once('.') {
        Some((pod, namespace)) => Pod { name: pod.to_owned(), namespace: namespace.to_owned() },
        None => Pod { name: name.to_owned(), namespace: default_namespace.to_owned() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncz_entries_name_their_pods() {
        let text = r#"[{"proxy":"sidecar~10.77.0.11~reviews-v2.default~default.svc.cluster.local",
            "version":"mesh-proxy/0.1.0",
            "types":{"type.googleapis.com/envoy.config.cluster.v3.Cluster":{"state":"SYNCED",
            "sent_version":"3","acked_version":"3","last_nack":null}}}]"#;
        let parsed = parse_syncz(text).unwrap();
        assert_eq!(
            parsed[0].pod(),
            Some(Pod { name: "reviews-v2".into(), namespace: "default".into() })
        );
        assert_eq!(parsed[0].version, "mesh-proxy/0.1.0");
        let err = parse_syncz("not found").unwrap_err().to_string();
        assert!(err.contains("/debug/syncz") && err.contains("not the expected JSON"), "{err}");
    }

    #[test]
    fn a_pod_name_may_carry_its_namespace() {
        assert_eq!(split_pod_name("productpage-v1.bookinfo", "default").namespace, "bookinfo");
        assert_eq!(split_pod_name("sleep", "default").namespace, "default");
    }
}
