//! The local mesh (`meshctl local`): a connection is made by a thread that entered the network
//! namespace of the pod or control plane, so the loopback-only admin ports are reachable and
//! nothing of the mesh is exposed in the host's namespace.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AccessError, Conn, Mesh, Pod, Target};
use crate::local::collector;
use crate::local::plan::{self, CA_IP, PILOT_IP};
use crate::local::state::{STATE_FILE, State};

/// How long a connection may take to open inside the mesh (it is all on one machine).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A local mesh, as its state file records it.
pub struct LocalMesh {
    dir: PathBuf,
    state: State,
}

impl LocalMesh {
    /// Whether a local mesh is up in `dir`.
    pub fn is_up(dir: &Path) -> bool {
        Self::read(dir).is_ok_and(|state| state.up)
    }

    /// The local mesh of state directory `dir`; an error when none is up there.
    pub fn open(dir: &Path) -> Result<Self, AccessError> {
        let state = Self::read(dir)?;
        if !state.up {
            return Err(AccessError::NoMesh(format!(
                "the local mesh of {} is not up: run `meshctl local up`",
                dir.display()
            )));
        }
        Ok(Self { dir: dir.to_owned(), state })
    }

    /// The state file, read without taking the state's lock: it is replaced by a rename, so
    /// a reader sees one whole version, and a long-running dashboard must not block `apply`.
    fn read(dir: &Path) -> Result<State, AccessError> {
        let file = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AccessError::NoMesh(format!(
                    "no local mesh is up (nothing recorded in {}): run `meshctl local up`",
                    dir.display()
                ))
            } else {
                AccessError::io(&format!("cannot read {}", file.display()), e)
            }
        })?;
        serde_json::from_str(&text).map_err(|e| AccessError::Http {
            what: file.display().to_string(),
            reason: format!("not a state file meshctl can read: {e}"),
        })
    }

    /// The network namespace and address `target` listens in.
    fn locate(&self, target: &Target, port: u16) -> Result<(String, SocketAddr), AccessError> {
        let cp = plan::control_plane_namespace(&self.state.name);
        let at = |ip: Ipv4Addr| SocketAddr::new(ip.into(), port);
        match target {
            Target::Pilot => Ok((cp, at(PILOT_IP))),
            Target::Ca => Ok((cp, at(CA_IP))),
            Target::Tracing if self.state.tracing => Ok((cp, at(collector::IP))),
            Target::Tracing => Err(AccessError::NotFound(format!(
                "{} runs no trace receiver: bring it up with tracing \
                 (`meshctl local down`, then `meshctl local up --tracing`)",
                self.describe()
            ))),
            Target::Pod(pod) => {
                let found = self.pod(pod)?;
                // Admin and metrics listen on loopback; the namespace is the pod's own.
                Ok((plan::pod_namespace(&self.state.name, &found.name), at(Ipv4Addr::LOCALHOST)))
            }
        }
    }

    fn pod(&self, pod: &Pod) -> Result<&crate::local::state::Pod, AccessError> {
        self.state.pods.get(&pod.name).filter(|p| p.namespace == pod.namespace).ok_or_else(|| {
            AccessError::NotFound(format!(
                "no pod {pod} in {}; pods: {}",
                self.describe(),
                self.state.pods.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

impl Mesh for LocalMesh {
    fn describe(&self) -> String {
        format!("the local mesh {:?} ({})", self.state.name, self.dir.display())
    }

    fn connect(&self, target: &Target, port: u16) -> Result<Box<dyn Conn>, AccessError> {
        let (ns, address) = self.locate(target, port)?;
        let what = format!("{address} in namespace {ns}");
        let stream = std::thread::spawn(move || -> Result<TcpStream, String> {
            crate::local::probe::enter(&ns)?;
            TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| AccessError::Connect {
            what: what.clone(),
            reason: "the connecting thread failed".into(),
        })?
        .map_err(|reason| AccessError::Connect { what, reason })?;
        Ok(Box::new(stream))
    }

    fn pilot_token(&self) -> Option<String> {
        let file = self.dir.join(crate::local::control_plane::PILOT_DEBUG_TOKEN);
        std::fs::read_to_string(file).ok().map(|t| t.trim().to_owned())
    }

    fn config_documents(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<(String, String)>, AccessError> {
        // The pilot's directory holds every object (in subdirectories: what `apply` wrote, and
        // the pods' and services' WorkloadEntries and Services). Namespaces are filtered by
        // the analysis.
        let _ = namespace;
        let mut files = Vec::new();
        config_files(&self.state.config_dir, 0, &mut files)?;
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| AccessError::io(&format!("cannot read {}", path.display()), e))?;
                Ok((path.display().to_string(), text))
            })
            .collect()
    }

    fn find_pod(&self, name: &str) -> Result<Pod, AccessError> {
        let wanted = super::split_pod_name(name, "default");
        // A bare name is the local pod of that name, whatever its namespace.
        let found = match name.split_once('.') {
            Some(_) => self.pod(&wanted)?,
            None => self.state.pods.get(name).ok_or_else(|| {
                AccessError::NotFound(format!(
                    "no pod {name:?} in {}; pods: {}",
                    self.describe(),
                    self.state.pods.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?,
        };
        Ok(Pod { name: found.name.clone(), namespace: found.namespace.clone() })
    }
}

/// How deep the pilot's directory is read (`apply` and the pods write two levels).
const MAX_DEPTH: usize = 4;

/// The YAML and JSON files under `dir`, as the pilot's local source reads them.
fn config_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), AccessError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| AccessError::io(&format!("cannot list {}", dir.display()), e))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        // Dot files are skipped, as the pilot's loader skips them (ConfigMap mounts' `..data`).
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            if depth < MAX_DEPTH {
                config_files(&path, depth + 1, out)?;
            }
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}
