//! The rustls server configuration of a gateway chain: its certificates by SNI, and for MUTUAL
//! the client verifier with Envoy's extra checks (SANs, hashes, pins) and failure stats.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, secret, subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::SdsTls;
use super::secrets::{certified_key, check_validation, crls, roots};
use crate::routing::StringMatch;

/// The validation context of a `CombinedValidationContext`: what came over SDS merged into
/// the listener's default, as Envoy merges them (set fields replace, lists add up).
pub(super) fn merge(
    default: Option<CertificateValidationContext>,
    dynamic: &CertificateValidationContext,
) -> CertificateValidationContext {
    let Some(mut merged) = default else { return dynamic.clone() };
    if dynamic.trusted_ca.is_some() {
        merged.trusted_ca.clone_from(&dynamic.trusted_ca);
    }
    if dynamic.crl.is_some() {
        merged.crl.clone_from(&dynamic.crl);
    }
    merged.verify_certificate_spki.extend(dynamic.verify_certificate_spki.iter().cloned());
    merged.verify_certificate_hash.extend(dynamic.verify_certificate_hash.iter().cloned());
    merged
        .match_typed_subject_alt_names
        .extend(dynamic.match_typed_subject_alt_names.iter().cloned());
    #[allow(deprecated)]
    merged.match_subject_alt_names.extend(dynamic.match_subject_alt_names.iter().cloned());
    merged.only_verify_leaf_cert_crl |= dynamic.only_verify_leaf_cert_crl;
    merged.suppress_client_ca_list |= dynamic.suppress_client_ca_list;
    merged
}

/// The server configuration of a chain: its certificates and client verification from
/// `secrets`, its ALPN and versions. The error says why its handshakes are refused (a secret
/// that has not arrived or does not fit).
pub fn server_config(
    spec: &SdsTls,
    secrets: &BTreeMap<String, Secret>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let secret = |name: &String| {
        secrets.get(name).and_then(|s| s.r#type.as_ref()).ok_or_else(|| {
            format!("secret {name:?} has not arrived (is the credential's Secret there?)")
        })
    };
    let mut keys = Vec::with_capacity(spec.certificates.len());
    for name in &spec.certificates {
        match secret(name)? {
            secret::Type::TlsCertificate(c) => {
                keys.push(certified_key(c).map_err(|why| format!("secret {name:?}: {why}"))?);
            }
            _ => return Err(format!("secret {name:?} is not a tls_certificate")),
        }
    }
    let mut validation = spec.validation.clone();
    if let Some(name) = &spec.validation_secret {
        match secret(name)? {
            secret::Type::ValidationContext(v) => validation = Some(merge(validation, v)),
            _ => return Err(format!("secret {name:?} is not a validation_context")),
        }
    }
    let verifier = client_verifier(validation.as_ref(), spec.require_client_certificate)?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match spec.versions {
        (TlsProtocol::TlSv13, _) => &[&rustls::version::TLS13],
        (_, TlsProtocol::TlSv12) => &[&rustls::version::TLS12],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = rustls::ServerConfig::builder_with_provider(mesh_identity::tls::provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Certificates(keys)));
    config.alpn_protocols = spec.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// Client verification by `validation`: none without a trusted CA (then a required client
/// certificate is an error: no client could pass).
pub(super) fn client_verifier(
    validation: Option<&CertificateValidationContext>,
    require: bool,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let Some((v, ca)) = validation.and_then(|v| Some((v, v.trusted_ca.as_ref()?))) else {
        return if require {
            Err("require_client_certificate is set but no trusted CA verifies clients (has the \
                 -cacert secret arrived?)"
                .to_owned())
        } else {
            Ok(None)
        };
    };
    check_validation(v)?;
    let mut builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca)?),
        mesh_identity::tls::provider(),
    );
    if let Some(crl) = &v.crl {
        builder = builder.with_crls(crls(crl)?);
        if v.only_verify_leaf_cert_crl {
            builder = builder.only_check_end_entity_revocation();
        }
    }
    if !require {
        builder = builder.allow_unauthenticated();
    }
    if v.suppress_client_ca_list {
        builder = builder.clear_root_hint_subjects();
    }
    let base = builder.build().map_err(|e| format!("client verifier: {e}"))?;
    let checks = PeerChecks::compile(v)?;
    if checks.is_empty() { Ok(Some(base)) } else { Ok(Some(Arc::new(Checked { base, checks }))) }
}

/// The server certificates of a chain: the first whose key suits the client is presented.
#[derive(Debug)]
pub(super) struct Certificates(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or_else(|| self.0.first())
            .cloned()
    }
}

/// Why a verified client certificate was still refused; the Envoy stat it counts in.
#[derive(Debug)]
pub(super) struct PeerRejected(&'static str);

impl std::fmt::Display for PeerRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            FAIL_VERIFY_SAN => {
                f.write_str("no subject alternative name of the client certificate is accepted")
            }
            _ => f.write_str("the client certificate's hash is not an accepted one"),
        }
    }
}

impl std::error::Error for PeerRejected {}

/// Envoy's stat: a client certificate whose SANs match no matcher.
pub(super) const FAIL_VERIFY_SAN: &str = "fail_verify_san";
/// Envoy's stat: a client certificate whose hash or SPKI is not listed.
pub(super) const FAIL_VERIFY_CERT_HASH: &str = "fail_verify_cert_hash";

/// What a client certificate must be beyond verifying to the CA: one of the SANs matched,
/// one of the hashes (SHA-256 of the certificate, or of its SPKI).
#[derive(Debug, Default)]
pub(super) struct PeerChecks {
    /// Matchers with the SAN type they apply to (`None`: any type, the deprecated field).
    sans: Vec<(Option<SanType>, StringMatch)>,
    /// SHA-256 digests of accepted certificates.
    hashes: Vec<Vec<u8>>,
    /// SHA-256 digests of accepted subject public keys.
    spkis: Vec<Vec<u8>>,
}

impl PeerChecks {
    pub(super) fn compile(v: &CertificateValidationContext) -> Result<Self, String> {
        let mut checks = PeerChecks::default();
        for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
            let kind = SanType::try_from(m.san_type).unwrap_or(SanType::Unspecified);
            if !matches!(kind, SanType::Dns | SanType::Uri | SanType::Email | SanType::IpAddress) {
                return Err(format!(
                    "match_typed_subject_alt_names[{i}]: SAN type {} is not implemented",
                    kind.as_str_name()
                ));
            }
            let matcher = m
                .matcher
                .as_ref()
                .ok_or_else(|| format!("match_typed_subject_alt_names[{i}] has no matcher"))?;
            let compiled = StringMatch::compile(matcher)
                .map_err(|why| format!("match_typed_subject_alt_names[{i}]: {why}"))?;
            checks.sans.push((Some(kind), compiled));
        }
        #[allow(deprecated)]
        for (i, m) in v.match_subject_alt_names.iter().enumerate() {
            let compiled = StringMatch::compile(m)
                .map_err(|why| format!("match_subject_alt_names[{i}]: {why}"))?;
            checks.sans.push((None, compiled));
        }
        for (i, hash) in v.verify_certificate_hash.iter().enumerate() {
            let hex: String = hash.chars().filter(|c| *c != ':').collect();
            let digest = (0..hex.len())
                .step_by(2)
                .map(|at| hex.get(at..at + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .filter(|d| d.len() == 32)
                .ok_or_else(|| {
                    format!("verify_certificate_hash[{i}] is not a hex SHA-256 digest")
                })?;
            checks.hashes.push(digest);
        }
        for (i, spki) in v.verify_certificate_spki.iter().enumerate() {
            use base64::Engine as _;
            let digest = base64::engine::general_purpose::STANDARD
                .decode(spki)
                .ok()
                .filter(|d| d.len() == 32)
                .ok_or_else(|| {
                    format!("verify_certificate_spki[{i}] is not a base64 SHA-256 digest")
                })?;
            checks.spkis.push(digest);
        }
        Ok(checks)
    }

    fn is_empty(&self) -> bool {
        self.sans.is_empty() && self.hashes.is_empty() && self.spkis.is_empty()
    }

    /// `None` if `leaf` passes; else the Envoy stat of the failure.
    pub(super) fn refuse(&self, leaf: &CertificateDer<'_>) -> Option<&'static str> {
        let sha256 = |bytes: &[u8]| ring::digest::digest(&ring::digest::SHA256, bytes);
        let parsed = x509_parser::parse_x509_certificate(leaf).ok().map(|(_, cert)| cert);
        if !self.hashes.is_empty() || !self.spkis.is_empty() {
            let hash = sha256(leaf);
            let by_hash = self.hashes.iter().any(|h| h.as_slice() == hash.as_ref());
            let by_spki = parsed.as_ref().is_some_and(|cert| {
                let spki = sha256(cert.tbs_certificate.subject_pki.raw);
                self.spkis.iter().any(|s| s.as_slice() == spki.as_ref())
            });
            if !by_hash && !by_spki {
                return Some(FAIL_VERIFY_CERT_HASH);
            }
        }
        if self.sans.is_empty() {
            return None;
        }
        let Some(cert) = parsed else { return Some(FAIL_VERIFY_SAN) };
        let Ok(Some(extension)) = cert.subject_alternative_name() else {
            return Some(FAIL_VERIFY_SAN);
        };
        use x509_parser::extensions::GeneralName;
        let names = extension.value.general_names.iter().filter_map(|name| match name {
            GeneralName::DNSName(s) => Some((SanType::Dns, (*s).to_owned())),
            GeneralName::URI(s) => Some((SanType::Uri, (*s).to_owned())),
            GeneralName::RFC822Name(s) => Some((SanType::Email, (*s).to_owned())),
            GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                    16 => <[u8; 16]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                    _ => None,
                };
                ip.map(|ip| (SanType::IpAddress, ip.to_string()))
            }
            _ => None,
        });
        let names: Vec<(SanType, String)> = names.collect();
        let accepted = self.sans.iter().any(|(kind, matcher)| {
            names.iter().any(|(k, v)| kind.is_none_or(|kind| kind == *k) && matcher.matches(v))
        });
        (!accepted).then_some(FAIL_VERIFY_SAN)
    }
}

/// Verifies client chains with webpki, then the SANs and hashes the validation context asks.
#[derive(Debug)]
pub(super) struct Checked {
    base: Arc<dyn ClientCertVerifier>,
    checks: PeerChecks,
}

impl ClientCertVerifier for Checked {
    fn offer_client_auth(&self) -> bool {
        self.base.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.base.client_auth_mandatory()
    }

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
        match self.checks.refuse(end_entity) {
            None => Ok(ClientCertVerified::assertion()),
            Some(stat) => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PeerRejected(stat))),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.base.supported_verify_schemes()
    }
}

/// Envoy's stat for any failed downstream handshake (`listener.<address>.ssl.connection_error`).
pub const CONNECTION_ERROR: &str = "connection_error";
/// Envoy's stat for a completed downstream handshake (`listener.<address>.ssl.handshake`).
pub const HANDSHAKE: &str = "handshake";

/// The Envoy stat that says more of why a handshake failed, besides [`CONNECTION_ERROR`]:
/// `fail_verify_no_cert` (a client certificate was required and none came),
/// `fail_verify_error` (it does not verify to the CA), `fail_verify_san`,
/// `fail_verify_cert_hash`; `None` for other failures.
pub fn failure_stat(err: &std::io::Error) -> Option<&'static str> {
    let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::NoCertificatesPresented => Some("fail_verify_no_cert"),
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => Some(
            other
                .0
                .downcast_ref::<PeerRejected>()
                .map_or("fail_verify_error", |rejected| rejected.0),
        ),
        rustls::Error::InvalidCertificate(_) => Some("fail_verify_error"),
        _ => None,
    }
}
