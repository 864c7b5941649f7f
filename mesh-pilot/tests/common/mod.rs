//! What the pilot's tests share: the small mesh of `tests/data/mesh`, and a mesh CA issuing
//! workload certificates (served to Envoy over SDS where a test needs it).

#![allow(dead_code)] // Each test binary uses its own part.

use std::path::Path;
use std::sync::Arc;

use mesh_pilot::model::Snapshot;
use mesh_pilot::source::local;

/// The test mesh (two versions of `hello`, a TCP `db`, a VirtualService, a DestinationRule),
/// numbered as the first published snapshot.
pub fn mesh() -> Snapshot {
    let (mut snapshot, rejected) =
        local::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mesh"));
    assert!(rejected.is_empty(), "the test mesh is valid: {rejected:?}");
    snapshot.version = 1;
    snapshot
}

/// Every routing and traffic-policy feature in one mesh (`tests/data/golden`).
pub fn golden_mesh() -> Snapshot {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    let (mut snapshot, rejected) = local::read(&dir);
    assert!(rejected.is_empty(), "the golden mesh is valid: {rejected:#?}");
    snapshot.version = 1;
    snapshot
}

/// The sidecar of `frontend` in the golden mesh.
pub fn frontend() -> mesh_pilot::model::Proxy {
    mesh_pilot::model::Proxy {
        id: "sidecar~10.1.0.5~frontend-1.demo~demo.svc.cluster.local".into(),
        namespace: "demo".into(),
        labels: [("app", "frontend"), ("version", "v1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ips: vec!["10.1.0.5".parse().unwrap()],
        service_account: "frontend".into(),
        proxyless: false,
    }
}

/// The trust domain of the test CA.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// A mesh CA for tests.
pub struct Mesh {
    authority: mesh_ca::authority::Authority,
    /// The root certificate, PEM.
    pub root_pem: String,
}

impl Mesh {
    /// A CA with a fresh root.
    pub fn new() -> Self {
        let root = mesh_ca::root::RootMaterial::generate(
            TRUST_DOMAIN,
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        let authority = mesh_ca::authority::Authority::new(
            &root,
            TRUST_DOMAIN,
            mesh_ca::authority::Policy::default(),
        )
        .unwrap();
        Self { root_pem: authority.root_pem().to_owned(), authority }
    }

    /// A workload certificate signed by the CA, as the CA client would obtain it.
    pub fn issue(&self, namespace: &str, service_account: &str) -> mesh_ca::sds::Material {
        let id =
            mesh_api::identity::SpiffeId::new(TRUST_DOMAIN, namespace, service_account).unwrap();
        self.authority.issue_workload(&id).unwrap()
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
    /// would; returns the port.
    pub async fn sds(&self, namespace: &str, service_account: &str) -> u16 {
        let (tx, rx) =
            tokio::sync::watch::channel(Arc::new(self.issue(namespace, service_account)));
        std::mem::forget(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(mesh_ca::sds::SecretService::new(rx).into_server())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        port
    }
}
