//! A pilot for tests, started through its app (`mesh_pilot::app::build_with`) as the binary
//! starts it: config read from a directory (polled often, debounced briefly), xDS and
//! monitoring on listeners handed over, ready before a test talks to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use mesh_pilot::ads::Discovery;
use mesh_pilot::app::{self, Bound, Config, Listeners};

/// How long a test pilot may take to read its first configuration, or to publish a change.
const WAIT: Duration = Duration::from_secs(20);

/// A running pilot serving a directory of YAML; stopped on drop.
pub struct TestPilot {
    /// The plaintext xDS address.
    pub xds: SocketAddr,
    /// The monitoring address (`/ready`, `/metrics`, `/debug/*`).
    pub monitoring: SocketAddr,
    /// What the pilot serves and each stream's sync status.
    pub discovery: Arc<Discovery>,
    bound: Bound,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestPilot {
    /// A pilot serving `yaml` (written as `mesh.yaml` into a directory of its own), on
    /// loopback.
    pub async fn from_yaml(yaml: &str) -> Self {
        let temp = tempfile::tempdir().unwrap();
        std::fs::write(temp.path().join("mesh.yaml"), yaml).unwrap();
        Self::in_temp(temp).await
    }

    /// A pilot serving a copy of the config files in `path` (so [`TestPilot::write`] leaves
    /// `path` alone), on loopback.
    pub async fn from_dir(path: &Path) -> Self {
        let temp = tempfile::tempdir().unwrap();
        copy_dir(path, temp.path());
        Self::in_temp(temp).await
    }

    async fn in_temp(temp: tempfile::TempDir) -> Self {
        let mut pilot = Self::start(Self::config(temp.path()), Self::listeners()).await;
        pilot._temp = Some(temp);
        pilot
    }

    /// The flags of a test pilot reading `dir`: polled every 50 ms, a push after 10 ms of
    /// quiet. Change what a test needs before [`TestPilot::start`].
    pub fn config(dir: &Path) -> Config {
        let dir = dir.display().to_string();
        Config::try_parse_from([
            "mesh-pilot",
            "--config-dir",
            &dir,
            "--poll-interval",
            "50ms",
            "--debounce-after",
            "10ms",
            "--debounce-max",
            "100ms",
        ])
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Plaintext xDS and monitoring on loopback, ports chosen by the system; no mTLS.
    pub fn listeners() -> Listeners {
        let (xds, _) = crate::net::listener();
        let (monitoring, _) = crate::net::listener();
        Listeners { xds: Some(xds), xds_mtls: None, monitoring, webhook: None }
    }

    /// Starts the pilot on `config` and `listeners` (reading `config.config_dir` in place)
    /// and waits until it is ready.
    pub async fn start(config: Config, listeners: Listeners) -> Self {
        let dir = config.config_dir.clone().expect("a test pilot reads a directory");
        let bound = app::build_with(config, listeners)
            .await
            .unwrap_or_else(|e| panic!("the test pilot did not start: {e:#}"));
        if tokio::time::timeout(WAIT, bound.ready.wait()).await.is_err() {
            panic!("the test pilot is not ready after {WAIT:?}: {:?}", bound.ready.pending());
        }
        Self {
            xds: bound.xds.expect("a test pilot serves plaintext xDS"),
            monitoring: bound.monitoring,
            discovery: bound.discovery.clone(),
            bound,
            dir,
            _temp: None,
        }
    }

    /// The running pilot: its readiness, its mTLS address, its published snapshots, its
    /// shutdown.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// The directory the pilot reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `yaml` as the file `name` of the pilot's directory (a new file or a new version)
    /// and waits until the pilot has published what it read; returns that snapshot's version.
    pub async fn write(&self, name: &str, yaml: &str) -> u64 {
        let mut snapshots = self.bound.snapshots.clone();
        let before = snapshots.borrow_and_update().version;
        std::fs::write(self.dir.join(name), yaml).unwrap();
        let published = tokio::time::timeout(WAIT, snapshots.wait_for(|s| s.version > before))
            .await
            .unwrap_or_else(|_| panic!("the test pilot did not publish {name} within {WAIT:?}"))
            .unwrap_or_else(|_| panic!("the test pilot stopped"));
        published.version
    }
}

/// Copies the files and directories below `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A pilot started as the binary runs with `--ca-address`: mesh-ca (its app, signing with the
/// root of a [`crate::ca::TestCa`]) gives the pilot its certificate before it turns ready; xDS
/// over mTLS and the admission webhooks are served. Both stop on drop.
pub struct SecuredPilot {
    /// The pilot.
    pub pilot: TestPilot,
    /// The test CA whose root mesh-ca signs with (for proxies' certificates and roots).
    pub mesh: crate::ca::TestCa,
    /// The mesh root, PEM.
    pub root_pem: String,
    _ca: crate::ca::RunningCa,
    _files: tempfile::TempDir,
}

impl SecuredPilot {
    /// Starts mesh-ca and a pilot reading `config_dir`, identified as `mesh-system/mesh-pilot`.
    pub async fn start(config_dir: &Path) -> Self {
        let mesh = crate::ca::TestCa::new();
        let files = tempfile::tempdir().unwrap();
        let ca = mesh.serve(files.path(), "t-pilot mesh-system/mesh-pilot\n").await;
        let token = files.path().join("pilot.token");
        std::fs::write(&token, "t-pilot").unwrap();

        let mut config = TestPilot::config(config_dir);
        config.ca_address = Some(ca.bound.grpc.to_string());
        config.root_cert = ca.root_cert.clone();
        config.token_path = token;
        let mut listeners = TestPilot::listeners();
        listeners.xds_mtls = Some(crate::net::listener().0);
        listeners.webhook = Some(crate::net::listener().0);
        // Ready means the certificate is there too.
        let pilot = TestPilot::start(config, listeners).await;
        let root_pem = std::fs::read_to_string(&ca.root_cert).unwrap();
        Self { pilot, mesh, root_pem, _ca: ca, _files: files }
    }
}
