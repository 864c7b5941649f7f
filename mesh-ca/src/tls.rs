//! rustls configurations for the mesh: mutual TLS between workloads with SPIFFE identities,
//! and server-authenticated TLS to the CA. Certificates are read through a [`CertStore`], a
//! lock-free snapshot that rotation replaces without touching live connections.

use std::sync::Arc;

use arc_swap::ArcSwap;
use mesh_api::identity::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

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

fn material(what: &'static str, why: impl std::fmt::Display) -> TlsError {
    TlsError::Material { what, why: why.to_string() }
}

/// The crypto provider of the whole mesh: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates of a PEM chain.
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

/// The current certificate and key, readable without locks and replaceable at any time.
/// Connections already up keep the certificate they started with.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    /// A store holding a chain (leaf first, PEM) and its key (PKCS#8 PEM).
    pub fn new(chain: &[String], key_pem: &str) -> Result<Self, TlsError> {
        Ok(Self { current: ArcSwap::from_pointee(certified_key(chain, key_pem)?) })
    }

    /// Replaces the certificate; new handshakes use it from now on.
    pub fn replace(&self, chain: &[String], key_pem: &str) -> Result<(), TlsError> {
        self.current.store(Arc::new(certified_key(chain, key_pem)?));
        Ok(())
    }

    /// The certificate in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

fn certified_key(chain: &[String], key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let certs = certs_from_pem(chain)?;
    if certs.is_empty() {
        return Err(material("certificate chain", "is empty"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| material("private key", e))?;
    let signing = provider().key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| material("private key", format!("does not match the certificate: {e}")))?;
    Ok(certified)
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The SPIFFE identity of a peer certificate chain (leaf first), if its URI SAN is one.
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => uri.parse().ok(),
        _ => None,
    })
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
    let verifier = Arc::new(IdentityVerifier {
        roots,
        expected,
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
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Verifies client chains with webpki, then requires a SPIFFE id of the trust domain.
#[derive(Debug)]
struct TrustDomainVerifier {
    base: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl ClientCertVerifier for TrustDomainVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.base.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.base.verify_client_cert(end_entity, intermediates, now)?;
        match peer_identity(std::slice::from_ref(end_entity)) {
            Some(id) if id.trust_domain() == self.trust_domain => {
                Ok(ClientCertVerified::assertion())
            }
            Some(id) => Err(rustls::Error::General(format!(
                "peer identity {id} is not in trust domain {}",
                self.trust_domain
            ))),
            None => {
                Err(rustls::Error::General("peer certificate has no SPIFFE identity".to_owned()))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.base.supported_verify_schemes()
    }
}

/// Verifies a server chain to the mesh roots, then requires one of the expected identities.
#[derive(Debug)]
struct IdentityVerifier {
    roots: Arc<RootCertStore>,
    expected: Expected,
    algs: WebPkiSupportedAlgorithms,
}

/// Which server identities a client accepts.
#[derive(Debug)]
enum Expected {
    AnyOf(Vec<SpiffeId>),
    TrustDomain(String),
}

impl Expected {
    fn admits(&self, id: &SpiffeId) -> bool {
        match self {
            Expected::AnyOf(ids) => ids.contains(id),
            Expected::TrustDomain(domain) => id.trust_domain() == domain,
        }
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::AnyOf(ids) => {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                f.write_str(&ids.join(" or "))
            }
            Expected::TrustDomain(domain) => write!(f, "an identity of trust domain {domain}"),
        }
    }
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        match peer_identity(std::slice::from_ref(end_entity)) {
            Some(id) if self.expected.admits(&id) => Ok(ServerCertVerified::assertion()),
            Some(id) => Err(rustls::Error::General(format!(
                "server identity {id} is not the expected {}",
                self.expected
            ))),
            None => {
                Err(rustls::Error::General("server certificate has no SPIFFE identity".to_owned()))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Most TLS handshakes in progress at once on one listener.
const MAX_HANDSHAKES: usize = 256;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The TLS connections accepted on `listener`, as a stream a tonic server can serve
/// (`serve_with_incoming`; peers' certificates reach handlers through `Request::peer_certs`).
/// Handshakes run in their own tasks, bounded in number and time, so slow or unauthenticated
/// peers cannot hold up the others. The stream ends when its receiver is dropped.
pub fn incoming(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!("TLS accept failed: {err}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "too many TLS handshakes in progress; connection dropped");
                continue;
            };
            let (acceptor, sender) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(tls)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(%peer, "TLS handshake failed: {err}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A gRPC endpoint at `address` (`host:port`) reached over TLS with `config` (ALPN set to
/// HTTP/2), presenting `server_name` in SNI. Connections are made lazily and re-made after
/// failures, as tonic does. For mesh mTLS (`mesh_client_config`) the server name is only SNI:
/// the peer's SPIFFE identity is what is verified.
pub fn grpc_channel(
    address: &str,
    server_name: rustls_pki_types::ServerName<'static>,
    mut config: rustls::ClientConfig,
) -> Result<GrpcEndpoint, tonic::transport::Error> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(std::time::Duration::from_secs(5));
    Ok(GrpcEndpoint { endpoint, connector, server_name, address: address.to_owned() })
}

/// A gRPC endpoint behind TLS; see [`grpc_channel`].
#[derive(Clone)]
pub struct GrpcEndpoint {
    endpoint: tonic::transport::Endpoint,
    connector: tokio_rustls::TlsConnector,
    server_name: rustls_pki_types::ServerName<'static>,
    address: String,
}

impl std::fmt::Debug for GrpcEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcEndpoint")
            .field("address", &self.address)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl GrpcEndpoint {
    /// Every call fails after `timeout` (not for streams that should live long).
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.endpoint = self.endpoint.timeout(timeout);
        self
    }

    /// The channel; it connects on first use.
    pub fn connect_lazy(self) -> tonic::transport::Channel {
        let Self { endpoint, connector, server_name, address } = self;
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let (connector, server_name, address) =
                (connector.clone(), server_name.clone(), address.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&address).await?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
    }
}
