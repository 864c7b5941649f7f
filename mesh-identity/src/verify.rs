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

/// Verifies a server: its chain to `roots` (unless there are none: `insecure_skip_verify`),
/// then who it is, as [`ServerCheck`] says. One verifier for mesh mTLS (SPIFFE identities) and
/// for TLS originated outside the mesh (DNS/URI names, or the SNI).
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    pub(crate) roots: Option<Arc<RootCertStore>>,
    pub(crate) check: ServerCheck,
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

/// What a client requires of the server's certificate once its chain verifies.
#[derive(Debug)]
pub(crate) enum ServerCheck {
    /// A SPIFFE identity the mesh expects.
    Spiffe(Expected),
    /// One of these DNS or URI SANs.
    Names(Vec<String>),
    /// The name the client connected to (the SNI), as webpki checks it.
    ServerName,
    /// Nothing (no roots either: `insecure_skip_verify`).
    Nothing,
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

/// The DNS and URI SANs of a certificate.
fn names_of(cert: &CertificateDer<'_>) -> Vec<String> {
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

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        if let Some(roots) = &self.roots {
            verify_server_cert_signed_by_trust_anchor(
                &parsed,
                roots,
                intermediates,
                now,
                self.algs.all,
            )?;
        }
        match &self.check {
            ServerCheck::Spiffe(expected) => require_identity(end_entity, "server", |id| {
                (!expected.admits(id)).then(|| format!("is not the expected {expected}"))
            })?,
            ServerCheck::Names(names) => {
                let present = names_of(end_entity);
                if !present.iter().any(|n| names.contains(n)) {
                    return Err(rustls::Error::General(format!(
                        "server certificate names {} and none of the expected {}",
                        if present.is_empty() { "nothing".to_owned() } else { present.join(", ") },
                        names.join(", ")
                    )));
                }
            }
            ServerCheck::ServerName => rustls::client::verify_server_name(&parsed, server_name)?,
            ServerCheck::Nothing => {}
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
