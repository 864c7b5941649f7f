//! The client side of the edge, as a person outside the mesh meets it: a test PKI (a CA, server
//! certificates for the gateway's hosts, client certificates for MUTUAL) and an HTTPS GET that
//! trusts only that CA, sends SNI, and may present a client certificate.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Pem {
    /// The certificate chain, leaf first.
    pub chain: String,
    /// The private key.
    pub key: String,
}

/// A CA that signs the edge's certificates.
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM: what clients (and a MUTUAL gateway) trust.
    pub ca_pem: String,
}

impl TestPki {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        let ca_pem = cert.pem();
        Ok(Self { issuer: Issuer::new(params, key), ca_pem })
    }

    /// A certificate for `names` (DNS SANs), signed by the CA: a server's, or a client's.
    pub fn issue(&self, names: &[&str]) -> anyhow::Result<Pem> {
        let key = KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem { chain: cert.pem(), key: key.serialize_pem() })
    }

    /// A certificate naming `uri` (a URI SAN, such as a SPIFFE id), signed by the CA.
    pub fn issue_uri(&self, uri: &str) -> anyhow::Result<Pem> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names =
            vec![rcgen::SanType::URI(rcgen::string::Ia5String::try_from(uri)?)];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem { chain: cert.pem(), key: key.serialize_pem() })
    }
}

/// The answer to an HTTPS GET, and the certificate the server presented.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// The server's leaf certificate, DER.
    pub certificate: Vec<u8>,
}

/// `GET path` over TLS to `address`, with SNI `sni`, trusting only `ca_pem`, presenting
/// `client` if given. An `Err` is a refused handshake or a broken answer.
pub fn https_get(
    address: SocketAddr,
    sni: &str,
    path: &str,
    ca_pem: &str,
    client: Option<&Pem>,
) -> anyhow::Result<Answer> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(pem) => {
            let chain = CertificateDer::pem_slice_iter(pem.chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes())?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(sni.to_owned())?;
    let connection = rustls::ClientConnection::new(Arc::new(config), name)?;
    let tcp = TcpStream::connect_timeout(&address, Duration::from_secs(10))
        .with_context(|| format!("connect {address}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {sni}\r\nUser-Agent: mesh-e2e\r\nConnection: close\r\n\r\n"
    )
    .context("TLS handshake or request")?;
    let mut raw = Vec::new();
    // A peer that closes without close_notify still gave its answer.
    match (&mut tls).take(16 << 20).read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e).context("reading the answer"),
    }
    let certificate = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of head")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    Ok(Answer { status, headers, body, certificate })
}

/// Accepts any server: for a test that plays an attacker, who does not care who answers.
#[derive(Debug)]
struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Plays a sidecar that is not one: mesh mTLS (the mesh's ALPN) to `address` with `client`'s
/// certificate, then `GET path`. `Ok` only if the server took the certificate and answered.
pub fn impersonate(address: SocketAddr, path: &str, client: &Pem) -> anyhow::Result<u16> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyServer(provider.signature_verification_algorithms));
    let chain =
        CertificateDer::pem_slice_iter(client.chain.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(client.key.as_bytes())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols =
        mesh_api::xds::mtls::ALPN.iter().map(|p| p.as_bytes().to_vec()).collect();
    let connection = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::IpAddress(address.ip().into()),
    )?;
    let tcp = TcpStream::connect_timeout(&address, Duration::from_secs(10))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    write!(tls, "GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    (&mut tls).take(1 << 20).read_to_end(&mut raw)?;
    let head = String::from_utf8_lossy(&raw);
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no HTTP answer")
}
