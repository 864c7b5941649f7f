//! SPIFFE verification: which peer a certificate names, and the rustls verifiers that accept
//! a peer only for the identity (or trust domain) the mesh expects of it.

use std::sync::Arc;

use mesh_api::identity::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

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

/// The SPIFFE identity of `end_entity` must be there and pass `refuse` (which says why it
/// does not, if it does not); `role` ("peer", "server") names the certificate in errors.
fn require_identity(
    end_entity: &CertificateDer<'_>,
    role: &str,
    refuse: impl FnOnce(&SpiffeId) -> Option<String>,
) -> Result<(), rustls::Error> {
    let Some(id) = peer_identity(std::slice::from_ref(end_entity)) else {
        return Err(rustls::Error::General(format!("{role} certificate has no SPIFFE identity")));
    };
    match refuse(&id) {
        Some(why) => Err(rustls::Error::General(format!("{role} identity {id} {why}"))),
        None => Ok(()),
    }
}

/// Verifies client chains with webpki, then requires a SPIFFE id of the trust domain.
#[derive(Debug)]
pub(crate) struct TrustDomainVerifier {
    pub(crate) base: Arc<dyn ClientCertVerifier>,
    pub(crate) trust_domain: String,
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
        require_identity(end_entity, "peer", |id| {
            (id.trust_domain() != self.trust_domain)
                .then(|| format!("is not in trust domain {}", self.trust_domain))
        })?;
        Ok(ClientCertVerified::assertion())
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
pub(crate) struct IdentityVerifier {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) expected: Expected,
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

/// Which server identities a client accepts.
#[derive(Debug)]
pub(crate) enum Expected {
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
        require_identity(end_entity, "server", |id| {
            (!self.expected.admits(id)).then(|| format!("is not the expected {}", self.expected))
        })?;
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
