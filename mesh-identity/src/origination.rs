//! TLS a proxy originates to a server outside the mesh (a DestinationRule's `tls` SIMPLE or
//! MUTUAL): the server's chain verified to the given roots, then its name checked — against
//! the rule's `subjectAltNames` when it has some (any one of the certificate's DNS or URI
//! SANs equal to one of them), else against the SNI, as a browser would. With MUTUAL the
//! proxy presents the rule's client certificate. Skipping verification is the caller's
//! choice (`insecure_skip_verify`), made explicit by [`ServerCheck::None`].

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;

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
    let (roots, check) = match check {
        ServerCheck::Verify { roots, sans } if sans.is_empty() => {
            (Some(roots), crate::verify::ServerCheck::ServerName)
        }
        ServerCheck::Verify { roots, sans } => {
            (Some(roots), crate::verify::ServerCheck::Names(sans))
        }
        ServerCheck::None => (None, crate::verify::ServerCheck::Nothing),
    };
    let verifier = Arc::new(crate::verify::ServerVerifier { roots, check, algs });
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
