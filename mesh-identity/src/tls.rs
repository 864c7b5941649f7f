//! rustls configurations for the mesh: mutual TLS between workloads with SPIFFE identities,
//! and server-authenticated TLS to the CA. Certificates are read through a [`CertStore`], so
//! rotation reaches new handshakes without touching live connections.

use std::sync::Arc;

use mesh_api::identity::SpiffeId;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::store::CertStore;
use crate::verify::{Expected, ServerCheck, ServerVerifier, TrustDomainVerifier};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key does not parse or does not fit.
    #[error("{what}: {why}")]
    Material {
        /// Which certificate or key.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

pub(crate) fn material(what: &'static str, why: impl std::fmt::Display) -> TlsError {
    TlsError::Material { what, why: why.to_string() }
}

/// The crypto provider of the whole mesh: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Decodes PEM certificates (any number per string) into DER, in order.
pub fn certs_from_pem(pems: &[String]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pems.iter()
        .flat_map(|pem| CertificateDer::pem_slice_iter(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| material("certificate chain", e))
}

/// A root store holding the mesh roots (PEM).
pub fn roots(root_pems: &[String]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs_from_pem(root_pems)? {
        store.add(cert).map_err(|e| material("root certificate", e))?;
    }
    Ok(Arc::new(store))
}

/// Server side of workload mTLS: accepts clients whose chain verifies to the mesh roots and
/// whose URI SAN is a SPIFFE id of `trust_domain`. Read the peer with [`peer_identity`] on
/// `ServerConnection::peer_certificates`.
pub fn mesh_server_config(
    store: Arc<CertStore>,
    roots: Arc<RootCertStore>,
    trust_domain: &str,
) -> Result<rustls::ServerConfig, TlsError> {
    let base = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| material("client verifier", e))?;
    let verifier = Arc::new(TrustDomainVerifier { base, trust_domain: trust_domain.to_owned() });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Client side of workload mTLS: presents the workload certificate and accepts only a server
/// whose chain verifies to the mesh roots and whose SPIFFE id is one of `expected`. Connect with
/// any server name (such as `ServerName::IpAddress`): the identity is what is checked.
pub fn mesh_client_config(
    store: Arc<CertStore>,
    roots: Arc<RootCertStore>,
    expected: Vec<SpiffeId>,
) -> Result<rustls::ClientConfig, TlsError> {
    client_config(store, roots, Expected::AnyOf(expected))
}

/// Like [`mesh_client_config`] for a server whose own identity is not known in advance: any
/// SPIFFE id of `trust_domain` is accepted.
pub fn mesh_client_config_for_trust_domain(
    store: Arc<CertStore>,
    roots: Arc<RootCertStore>,
    trust_domain: &str,
) -> Result<rustls::ClientConfig, TlsError> {
    client_config(store, roots, Expected::TrustDomain(trust_domain.to_owned()))
}

fn client_config(
    store: Arc<CertStore>,
    roots: Arc<RootCertStore>,
    expected: Expected,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(ServerVerifier {
        roots: Some(roots),
        check: ServerCheck::Spiffe(expected),
        algs: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(store);
    Ok(config)
}

/// TLS to the CA: the CA's serving certificate must verify to `roots` for its DNS name.
pub fn ca_client_config(roots: Arc<RootCertStore>) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The CA's own TLS: its serving certificate, no client certificate (callers use tokens).
pub fn ca_server_config(store: Arc<CertStore>) -> Result<rustls::ServerConfig, TlsError> {
    server_config(store, &[b"h2"])
}

/// Plain server TLS with the certificate `store` holds (rotations take effect on the next
/// handshake), no client certificate, offering `alpn`: the CA's gRPC and the pilot's webhooks,
/// whose clients check the DNS names of the certificate against the mesh root.
pub fn server_config(
    store: Arc<CertStore>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
