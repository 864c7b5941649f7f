//! TLS a proxy originates to a server outside the mesh (a DestinationRule's `tls` SIMPLE or
//! MUTUAL): the server's chain verified to the given roots, then its name checked — against
//! the rule's `subjectAltNames` when it has some (any one of the certificate's DNS or URI
//! SANs equal to one of them), else against the SNI, as a browser would. With MUTUAL the
//! proxy presents the rule's client certificate. Skipping verification is the caller's
//! choice (`insecure_skip_verify`), made explicit by [`ServerCheck::None`].

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::tls::{TlsError, material, provider};

/// How the server is checked.
#[derive(Clone, Debug)]
pub enum ServerCheck {
    /// Its chain to these roots, and its name: one of `sans` (DNS or URI), or the SNI when
    /// `sans` is empty.
    Verify {
        /// The trusted roots.
        roots: Arc<RootCertStore>,
        /// Names one of which the certificate must carry.
        sans: Vec<String>,
    },
    /// Not at all (`insecure_skip_verify`).
    None,
}

/// A client certificate and its key (PEM), for MUTUAL.
pub struct ClientCertificate {
    /// The chain, leaf first.
    pub chain_pem: String,
    /// The private key.
    pub key_pem: String,
}

/// The rustls client configuration of an origination.
pub fn client_config(
    check: ServerCheck,
    client: Option<&ClientCertificate>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let algs = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        ServerCheck::Verify { roots, sans } => Arc::new(NameVerifier { roots, sans, algs }),
        ServerCheck::None => Arc::new(NoVerifier { algs }),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(match client {
        Some(cert) => {
            let chain = crate::tls::certs_from_pem(std::slice::from_ref(&cert.chain_pem))?;
            if chain.is_empty() {
                return Err(material("client certificate", "no certificate in the PEM"));
            }
            let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
                .map_err(|e| material("client key", e))?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// The DNS and URI SANs of a certificate.
fn sans_of(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else { return Vec::new() };
    let Ok(Some(san)) = parsed.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(n) => Some((*n).to_owned()),
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

#[derive(Debug)]
struct NameVerifier {
    roots: Arc<RootCertStore>,
    sans: Vec<String>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
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
        if self.sans.is_empty() {
            verify_server_name(&parsed, server_name)?;
        } else {
            let present = sans_of(end_entity);
            if !present.iter().any(|san| self.sans.contains(san)) {
                return Err(rustls::Error::General(format!(
                    "server certificate names {} and none of the expected {}",
                    if present.is_empty() { "nothing".to_owned() } else { present.join(", ") },
                    self.sans.join(", ")
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
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

/// `insecure_skip_verify`: the handshake's signatures are still checked (the server holds
/// the key of the certificate it shows), not who it is.
#[derive(Debug)]
struct NoVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
