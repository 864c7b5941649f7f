//! A mesh CA for tests: a fresh root and an authority that issues workload certificates
//! directly (as the CA would for a caller with the right token), in the forms tests need:
//! PEM material, a rustls certificate store, the roots, and SDS for an Envoy sidecar.

use std::sync::Arc;
use std::time::Duration;

use mesh_api::identity::SpiffeId;
use mesh_ca::authority::{Authority, Policy};
use mesh_ca::root::RootMaterial;
use mesh_ca::sds::Material;

/// The trust domain of the test CA.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// A CA with its own root, valid for an hour.
pub struct TestCa {
    /// The signing authority, shared with a CA server a test starts.
    pub authority: Arc<Authority>,
    /// The root and its key, for a test that starts the CA from a state directory.
    pub root: RootMaterial,
    /// The root certificate, PEM.
    pub root_pem: String,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A CA with a fresh root in [`TRUST_DOMAIN`].
    pub fn new() -> Self {
        let root = RootMaterial::generate(TRUST_DOMAIN, Duration::from_secs(3600)).unwrap();
        let authority = Arc::new(Authority::new(&root, TRUST_DOMAIN, Policy::default()).unwrap());
        Self { root_pem: authority.root_pem().to_owned(), authority, root }
    }

    /// The SPIFFE id of `namespace`/`service_account` in the test trust domain.
    pub fn id(namespace: &str, service_account: &str) -> SpiffeId {
        SpiffeId::new(TRUST_DOMAIN, namespace, service_account).unwrap()
    }

    /// A workload certificate signed by the CA, as the CA client would obtain it.
    pub fn issue(&self, namespace: &str, service_account: &str) -> Material {
        self.authority.issue_workload(&Self::id(namespace, service_account)).unwrap()
    }

    /// The same, ready for rustls.
    pub fn store(&self, namespace: &str, service_account: &str) -> Arc<mesh_identity::CertStore> {
        let m = self.issue(namespace, service_account);
        Arc::new(mesh_identity::CertStore::new(&m.chain, &m.key_pem).unwrap())
    }

    /// The mesh roots for rustls.
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        mesh_identity::tls::roots(std::slice::from_ref(&self.root_pem)).unwrap()
    }

    /// Serves a workload's secrets over SDS on loopback, as the agent next to an Envoy sidecar
    /// would, for as long as the test runs; returns the port.
    pub async fn sds(&self, namespace: &str, service_account: &str) -> u16 {
        let (listener, address) = crate::net::tokio_listener();
        serve_sds(listener, self.issue(namespace, service_account));
        address.port()
    }
}

/// Serves `material` over SDS on `listener`, as the agent next to an Envoy sidecar would, for
/// as long as the runtime runs.
pub fn serve_sds(listener: tokio::net::TcpListener, material: Material) {
    let (keep, secrets) = tokio::sync::watch::channel(Arc::new(material));
    tokio::spawn(async move {
        let _keep = keep;
        tonic::transport::Server::builder()
            .add_service(mesh_ca::sds::SecretService::new(secrets).into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
}

impl TestCa {
    /// Writes the root and its key into `dir` in the layout of mesh-ca's `--state-dir`, so a
    /// mesh-ca started on it signs with this CA's root.
    pub fn write_state_dir(&self, dir: &std::path::Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("root-key.pem"), &self.root.signing_key_pem).unwrap();
        std::fs::write(dir.join("root-cert.pem"), &self.root.signing_cert_pem).unwrap();
    }
}

/// mesh-ca itself (its app, in this process, local mode) signing with a [`TestCa`]'s root.
pub struct RunningCa {
    /// The running CA (stopped on drop): its gRPC address is `bound.grpc`.
    pub bound: mesh_ca::app::Bound,
    /// The root certificate file workloads verify the CA and each other with.
    pub root_cert: std::path::PathBuf,
}

impl TestCa {
    /// Starts mesh-ca's app with this CA's root, its state under `dir`, admitting the callers
    /// of `tokens` (`<token> <namespace>/<service account>` lines).
    pub async fn serve(&self, dir: &std::path::Path, tokens: &str) -> RunningCa {
        use clap::Parser as _;
        let state = dir.join("ca");
        self.write_state_dir(&state);
        let tokens_file = dir.join("tokens");
        std::fs::write(&tokens_file, tokens).unwrap();
        let config = mesh_ca::app::Config::try_parse_from([
            "mesh-ca".to_owned(),
            "--mode=local".to_owned(),
            format!("--state-dir={}", state.display()),
            format!("--plugin-dir={}", state.join("no-plugin").display()),
            format!("--tokens-file={}", tokens_file.display()),
        ])
        .unwrap();
        let listeners = mesh_ca::app::Listeners {
            grpc: crate::net::listener().0,
            monitoring: crate::net::listener().0,
        };
        let bound = mesh_ca::app::build_with(config, listeners).await.unwrap();
        RunningCa { bound, root_cert: state.join("root-cert.pem") }
    }
}
