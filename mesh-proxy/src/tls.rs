//! TLS a listener terminates with certificates of its own, as a gateway's `SIMPLE`, `MUTUAL`
//! and `OPTIONAL_MUTUAL` servers do (Istio's `credentialName`): what a filter chain's
//! `DownstreamTlsContext` asks for, the secrets the pilot serves for it over SDS on the ADS
//! stream (checked when they arrive, redacted for dumps), and the rustls server configuration
//! built from both. Mesh mTLS (the workload certificate: SDS `default` and `ROOTCA`, which the
//! pilot never serves) is told apart here and left to [`crate::proxy::MeshTls`].
//!
//! Pure functions of configuration: no I/O, nothing read from files.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, config_source::ConfigSourceSpecifier, data_source::Specifier,
    transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, DownstreamTlsContext, SdsSecretConfig, Secret, TlsCertificate,
    certificate_validation_context::TrustChainVerification,
    common_tls_context::ValidationContextType, secret, subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
};
use mesh_api::xds::mtls::{ROOT_SECRET, WORKLOAD_SECRET};
use prost::Message as _;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};

use crate::routing::StringMatch;

/// Envoy's name of the TLS transport socket.
pub const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
/// Envoy's name of the plaintext transport socket.
pub const RAW_BUFFER_SOCKET: &str = "envoy.transport_sockets.raw_buffer";
/// What stands in a config dump for a private key (Envoy's redaction).
pub const REDACTED: &[u8] = b"[redacted]";

/// How a filter chain's transport socket secures the connections it takes.
#[derive(Clone, Debug, PartialEq)]
pub enum DownstreamTls {
    /// Mesh mTLS with the workload certificate (SDS `default`, peers checked against `ROOTCA`,
    /// both local to the proxy): a sidecar's inbound mTLS chains, a gateway's `ISTIO_MUTUAL`.
    Mesh,
    /// TLS with certificates the pilot serves over SDS on the ADS stream.
    Sds(Box<SdsTls>),
}

/// What a `DownstreamTlsContext` with certificates from the pilot asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SdsTls {
    /// SDS names of the server certificates (`tls_certificate` secrets), in the listener's
    /// order: the first whose key the client can use is presented.
    pub certificates: Vec<String>,
    /// SDS name of the client CA (a `validation_context` secret): `MUTUAL`.
    pub validation_secret: Option<String>,
    /// Validation settings carried in the listener (`default_validation_context`, or a whole
    /// `validation_context`); the secret's are merged into them.
    pub validation: Option<CertificateValidationContext>,
    /// Whether a client must present a certificate (`MUTUAL`); without, a verified one is
    /// optional (`OPTIONAL_MUTUAL`).
    pub require_client_certificate: bool,
    /// ALPN protocols offered, in order (`h2`, `http/1.1`).
    pub alpn: Vec<String>,
    /// Lowest and highest TLS version (`tls_params`; rustls speaks 1.2 and 1.3).
    pub versions: (TlsProtocol, TlsProtocol),
    /// The secrets that hold a configuration back until they arrive: all but those whose
    /// `sds_config` sets a zero `initial_fetch_timeout` (Envoy's listener warming).
    pub awaited: Vec<String>,
}

impl SdsTls {
    /// Every SDS name it reads: the certificates, then the client CA.
    pub fn secret_names(&self) -> impl Iterator<Item = &String> {
        self.certificates.iter().chain(self.validation_secret.iter())
    }
}

/// How `socket` secures the connections of its chain: `None` for plaintext (`raw_buffer`).
/// The error says what the proxy cannot do with it (the listener is NACKed with it).
pub fn downstream(socket: &TransportSocket) -> Result<Option<DownstreamTls>, String> {
    match socket.name.as_str() {
        RAW_BUFFER_SOCKET => return Ok(None),
        TLS_SOCKET => {}
        other => return Err(format!("{other:?} is not a transport socket this proxy implements")),
    }
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        return Err("the TLS transport socket has no typed_config".to_owned());
    };
    let expected = <DownstreamTlsContext as prost::Name>::type_url();
    if any.type_url != expected {
        return Err(format!("typed_config is a {}, not a {expected}", any.type_url));
    }
    let context = DownstreamTlsContext::decode(any.value.as_slice())
        .map_err(|e| format!("typed_config does not decode: {e}"))?;
    of_context(&context).map(Some)
}

/// The SDS secret is one of the mesh's own, which the proxy holds itself.
fn is_local_mesh(config: &SdsSecretConfig) -> bool {
    (config.name == WORKLOAD_SECRET || config.name == ROOT_SECRET) && !is_ads(config)
}

fn is_ads(config: &SdsSecretConfig) -> bool {
    matches!(
        config.sds_config.as_ref().and_then(|s| s.config_source_specifier.as_ref()),
        Some(ConfigSourceSpecifier::Ads(_))
    )
}

/// Checks that `config` names a secret served over ADS; returns whether it is awaited.
fn from_ads(config: &SdsSecretConfig, at: &str) -> Result<bool, String> {
    if config.name.is_empty() {
        return Err(format!("{at} has no name"));
    }
    if !is_ads(config) {
        return Err(format!(
            "{at}: secret {:?} is not served over ADS (it needs sds_config: {{ads: {{}}}}); the \
             proxy fetches no other SDS but the mesh's own {WORKLOAD_SECRET:?} and {ROOT_SECRET:?}",
            config.name
        ));
    }
    let zero = config
        .sds_config
        .as_ref()
        .and_then(|s| s.initial_fetch_timeout.as_ref())
        .is_some_and(|d| d.seconds == 0 && d.nanos == 0);
    Ok(!zero)
}

fn of_context(context: &DownstreamTlsContext) -> Result<DownstreamTls, String> {
    let common = context.common_tls_context.as_ref().ok_or("it has no common_tls_context")?;
    let certs = &common.tls_certificate_sds_secret_configs;
    if !certs.is_empty() && certs.iter().all(is_local_mesh) {
        return Ok(DownstreamTls::Mesh);
    }
    if !common.tls_certificates.is_empty() {
        return Err("common_tls_context.tls_certificates (certificates inline in the listener) \
                    is not implemented: serve them as SDS secrets over ADS"
            .to_owned());
    }
    #[allow(deprecated)]
    if common.tls_certificate_provider_instance.is_some()
        || common.tls_certificate_certificate_provider.is_some()
        || common.tls_certificate_certificate_provider_instance.is_some()
        || common.custom_tls_certificate_selector.is_some()
        || common.custom_handshaker.is_some()
    {
        return Err("common_tls_context: certificate providers, custom certificate selectors \
                    and handshakers are not implemented"
            .to_owned());
    }
    if certs.is_empty() {
        return Err("common_tls_context.tls_certificate_sds_secret_configs is empty: the \
                    listener has no certificate to present"
            .to_owned());
    }
    let mut spec = SdsTls {
        require_client_certificate: context
            .require_client_certificate
            .as_ref()
            .is_some_and(|b| b.value),
        alpn: common.alpn_protocols.clone(),
        ..SdsTls::default()
    };
    for (i, config) in certs.iter().enumerate() {
        let at = format!("common_tls_context.tls_certificate_sds_secret_configs[{i}]");
        if from_ads(config, &at)? {
            spec.awaited.push(config.name.clone());
        }
        spec.certificates.push(config.name.clone());
    }
    let validation_secret = |spec: &mut SdsTls, config: &SdsSecretConfig, at: &str| {
        if from_ads(config, at)? {
            spec.awaited.push(config.name.clone());
        }
        spec.validation_secret = Some(config.name.clone());
        Ok::<(), String>(())
    };
    #[allow(deprecated)]
    match &common.validation_context_type {
        None => {}
        Some(ValidationContextType::ValidationContext(inline)) => {
            check_validation(inline).map_err(|why| format!("validation_context: {why}"))?;
            spec.validation = Some(inline.clone());
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(config)) => {
            validation_secret(
                &mut spec,
                config,
                "common_tls_context.validation_context_sds_secret_config",
            )?;
        }
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            if combined.validation_context_certificate_provider.is_some()
                || combined.validation_context_certificate_provider_instance.is_some()
            {
                return Err("combined_validation_context: certificate providers are not \
                            implemented"
                    .to_owned());
            }
            if let Some(config) = &combined.validation_context_sds_secret_config {
                validation_secret(
                    &mut spec,
                    config,
                    "common_tls_context.combined_validation_context.validation_context_sds_secret_config",
                )?;
            }
            if let Some(default) = &combined.default_validation_context {
                check_validation(default).map_err(|why| {
                    format!("combined_validation_context.default_validation_context: {why}")
                })?;
                spec.validation = Some(default.clone());
            }
        }
        Some(_) => {
            return Err("common_tls_context: validation by certificate provider is not \
                        implemented"
                .to_owned());
        }
    }
    let params = common.tls_params.clone().unwrap_or_default();
    let version = |v: i32, field: &str| {
        TlsProtocol::try_from(v).map_err(|_| format!("tls_params.{field} {v} is not a TLS version"))
    };
    let (min, max) = (
        version(params.tls_minimum_protocol_version, "tls_minimum_protocol_version")?,
        version(params.tls_maximum_protocol_version, "tls_maximum_protocol_version")?,
    );
    if matches!(max, TlsProtocol::TlSv10 | TlsProtocol::TlSv11) {
        return Err(format!(
            "tls_params.tls_maximum_protocol_version {}: only TLS 1.2 and 1.3 are implemented",
            max.as_str_name()
        ));
    }
    if min == TlsProtocol::TlSv13 && max == TlsProtocol::TlSv12 {
        return Err("tls_params: the minimum version is above the maximum".to_owned());
    }
    spec.versions = (min, max);
    Ok(DownstreamTls::Sds(Box::new(spec)))
}

/// What the proxy cannot honour in a validation context (checked when it arrives, so what
/// would weaken verification is refused rather than ignored).
fn check_validation(v: &CertificateValidationContext) -> Result<(), String> {
    if v.custom_validator_config.is_some() {
        return Err("custom_validator_config is not implemented".to_owned());
    }
    if v.trust_chain_verification != TrustChainVerification::VerifyTrustChain as i32 {
        return Err("trust_chain_verification ACCEPT_UNTRUSTED is not implemented".to_owned());
    }
    if v.allow_expired_certificate {
        return Err("allow_expired_certificate is not implemented".to_owned());
    }
    if v.ca_certificate_provider_instance.is_some() || v.system_root_certs.is_some() {
        return Err("ca_certificate_provider_instance and system_root_certs are not implemented: \
                    send trusted_ca inline"
            .to_owned());
    }
    if v.watched_directory.is_some() {
        return Err("watched_directory is not implemented".to_owned());
    }
    if let Some(ca) = &v.trusted_ca {
        roots(ca)?;
    }
    if let Some(crl) = &v.crl {
        crls(crl)?;
    }
    PeerChecks::compile(v)?;
    Ok(())
}

/// Checks a secret as it arrives: a `tls_certificate` must make a certificate and key rustls
/// can serve with (the key matching the certificate), a `validation_context` must hold a CA
/// that parses. The error (the NACK's reason) never quotes key material.
pub fn check_secret(secret: &Secret) -> Result<(), String> {
    match &secret.r#type {
        Some(secret::Type::TlsCertificate(certificate)) => certified_key(certificate).map(drop),
        Some(secret::Type::ValidationContext(validation)) => {
            check_validation(validation).map_err(|why| format!("validation_context: {why}"))
        }
        Some(secret::Type::SessionTicketKeys(_)) => {
            Err("session_ticket_keys secrets are not implemented".to_owned())
        }
        Some(secret::Type::GenericSecret(_)) => {
            Err("generic_secret secrets are not implemented".to_owned())
        }
        None => Err("it holds neither a tls_certificate nor a validation_context".to_owned()),
    }
}

/// The bytes of an inline data source; files and environment variables are not read.
fn inline(source: Option<&DataSource>, field: &str) -> Result<Vec<u8>, String> {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::InlineBytes(bytes)) => Ok(bytes.clone()),
        Some(Specifier::InlineString(text)) => Ok(text.clone().into_bytes()),
        Some(Specifier::Filename(_)) => {
            Err(format!("{field} names a file: only inline_bytes and inline_string are read"))
        }
        Some(Specifier::EnvironmentVariable(_)) => Err(format!(
            "{field} names an environment variable: only inline_bytes and inline_string are read"
        )),
        None => Err(format!("{field} is missing")),
    }
}

/// The certificate chain and key of a `tls_certificate`, ready to serve.
pub fn certified_key(certificate: &TlsCertificate) -> Result<Arc<CertifiedKey>, String> {
    if certificate.pkcs12.is_some() {
        return Err("tls_certificate.pkcs12 is not implemented: send PEM".to_owned());
    }
    if certificate.private_key_provider.is_some() {
        return Err("tls_certificate.private_key_provider is not implemented".to_owned());
    }
    if certificate.password.is_some() {
        return Err("tls_certificate.password (an encrypted key) is not implemented".to_owned());
    }
    let chain_pem =
        inline(certificate.certificate_chain.as_ref(), "tls_certificate.certificate_chain")?;
    let key_pem = inline(certificate.private_key.as_ref(), "tls_certificate.private_key")?;
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_certificate.certificate_chain is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls_certificate.certificate_chain holds no PEM certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "tls_certificate.private_key is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"
        )
    })?;
    let provider = mesh_identity::tls::provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| format!("tls_certificate: the key and certificate cannot serve: {e}"))
}

fn roots(ca: &DataSource) -> Result<rustls::RootCertStore, String> {
    let pem = inline(Some(ca), "trusted_ca")?;
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("trusted_ca is not PEM: {e}"))?;
        store.add(cert).map_err(|e| format!("trusted_ca: {e}"))?;
    }
    if store.is_empty() {
        return Err("trusted_ca holds no PEM certificate".to_owned());
    }
    Ok(store)
}

fn crls(crl: &DataSource) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let pem = inline(Some(crl), "crl")?;
    CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("crl is not PEM: {e}"))
}

/// The validation context of a `CombinedValidationContext`: what came over SDS merged into
/// the listener's default, as Envoy merges them (set fields replace, lists add up).
fn merge(
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
fn client_verifier(
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
struct Certificates(Vec<Arc<CertifiedKey>>);

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
struct PeerRejected(&'static str);

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
const FAIL_VERIFY_SAN: &str = "fail_verify_san";
/// Envoy's stat: a client certificate whose hash or SPKI is not listed.
const FAIL_VERIFY_CERT_HASH: &str = "fail_verify_cert_hash";

/// What a client certificate must be beyond verifying to the CA: one of the SANs matched,
/// one of the hashes (SHA-256 of the certificate, or of its SPKI).
#[derive(Debug, Default)]
struct PeerChecks {
    /// Matchers with the SAN type they apply to (`None`: any type, the deprecated field).
    sans: Vec<(Option<SanType>, StringMatch)>,
    /// SHA-256 digests of accepted certificates.
    hashes: Vec<Vec<u8>>,
    /// SHA-256 digests of accepted subject public keys.
    spkis: Vec<Vec<u8>>,
}

impl PeerChecks {
    fn compile(v: &CertificateValidationContext) -> Result<Self, String> {
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
    fn refuse(&self, leaf: &CertificateDer<'_>) -> Option<&'static str> {
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
struct Checked {
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

/// `secret` as a config dump shows it: private keys, passwords and other secret bytes
/// replaced by `[redacted]`, as Envoy's dump does.
pub fn redact(secret: &Secret) -> Secret {
    let hidden = |source: &mut Option<DataSource>| {
        if source.is_some() {
            *source = Some(DataSource {
                specifier: Some(Specifier::InlineBytes(REDACTED.to_vec())),
                ..DataSource::default()
            });
        }
    };
    let mut out = secret.clone();
    match &mut out.r#type {
        Some(secret::Type::TlsCertificate(c)) => {
            hidden(&mut c.private_key);
            hidden(&mut c.password);
            hidden(&mut c.pkcs12);
        }
        Some(secret::Type::SessionTicketKeys(k)) => {
            for key in &mut k.keys {
                *key = DataSource {
                    specifier: Some(Specifier::InlineBytes(REDACTED.to_vec())),
                    ..DataSource::default()
                };
            }
        }
        Some(secret::Type::GenericSecret(g)) => {
            hidden(&mut g.secret);
            for value in g.secrets.values_mut() {
                *value = DataSource {
                    specifier: Some(Specifier::InlineBytes(REDACTED.to_vec())),
                    ..DataSource::default()
                };
            }
        }
        Some(secret::Type::ValidationContext(_)) | None => {}
    }
    out
}

/// Certificates and gateway resources for the crate's tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testing {
    use envoy_types::pb::envoy::config::core::v3::{
        AggregatedConfigSource, ConfigSource, DataSource, TransportSocket,
        config_source::ConfigSourceSpecifier, data_source::Specifier, transport_socket,
    };
    use envoy_types::pb::envoy::config::listener::v3::{
        Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter,
    };
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
    };
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
        Secret, TlsCertificate, common_tls_context::CombinedCertificateValidationContext,
        common_tls_context::ValidationContextType, secret,
    };
    use envoy_types::pb::google::protobuf::BoolValue;

    /// A certificate authority: its certificate (PEM) and what it signs.
    pub struct Ca {
        issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        /// The CA's certificate, PEM.
        pub pem: String,
    }

    impl Ca {
        pub fn new(name: &str) -> Self {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let issuer =
                rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                    .unwrap();
            let pem = issuer.pem();
            Self { issuer, pem }
        }

        /// A certificate for DNS `names` and its key, PEM.
        pub fn leaf(&self, names: &[&str]) -> (String, String) {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(
                names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
            )
            .unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    fn inline(pem: &str) -> Option<DataSource> {
        Some(DataSource {
            specifier: Some(Specifier::InlineBytes(pem.as_bytes().to_vec())),
            ..DataSource::default()
        })
    }

    /// A `tls_certificate` secret.
    pub fn certificate(name: &str, (chain, key): &(String, String)) -> Secret {
        Secret {
            name: name.to_owned(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(chain),
                private_key: inline(key),
                ..TlsCertificate::default()
            })),
        }
    }

    /// A `validation_context` secret trusting `ca_pem`.
    pub fn client_ca(name: &str, ca_pem: &str) -> Secret {
        Secret {
            name: name.to_owned(),
            r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
                trusted_ca: inline(ca_pem),
                ..CertificateValidationContext::default()
            })),
        }
    }

    /// An SDS secret fetched over ADS.
    pub fn ads(name: &str) -> SdsSecretConfig {
        SdsSecretConfig {
            name: name.to_owned(),
            sds_config: Some(ConfigSource {
                resource_api_version: 2,
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                ..ConfigSource::default()
            }),
        }
    }

    /// A gateway's TLS: the certificate `credential`, and with `mutual` clients verified to
    /// `<credential>-cacert` (the pilot's SIMPLE and MUTUAL).
    pub fn gateway_socket(credential: &str, mutual: bool) -> TransportSocket {
        let mut common = CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![ads(credential)],
            alpn_protocols: vec!["h2".to_owned(), "http/1.1".to_owned()],
            ..CommonTlsContext::default()
        };
        if mutual {
            common.validation_context_type =
                Some(ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext::default()),
                        validation_context_sds_secret_config: Some(ads(&format!(
                            "{credential}-cacert"
                        ))),
                        ..CombinedCertificateValidationContext::default()
                    },
                ));
        }
        socket(DownstreamTlsContext {
            common_tls_context: Some(common),
            require_client_certificate: mutual.then_some(BoolValue { value: true }),
            ..DownstreamTlsContext::default()
        })
    }

    /// A TLS transport socket with `context`.
    pub fn socket(context: DownstreamTlsContext) -> TransportSocket {
        TransportSocket {
            name: super::TLS_SOCKET.to_owned(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(
                envoy_types::util::pack_any(context),
            )),
        }
    }

    /// An HTTPS gateway listener on `port`: per `(server name, socket)`, a chain serving the
    /// RDS routes `https.<port>`.
    pub fn https_listener(port: u32, chains: Vec<(&str, TransportSocket)>) -> Listener {
        use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
        use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
        let hcm = HttpConnectionManager {
            stat_prefix: "https".to_owned(),
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: format!("https.{port}"),
                ..Rds::default()
            })),
            ..HttpConnectionManager::default()
        };
        Listener {
            name: format!("0.0.0.0_{port}"),
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "0.0.0.0".to_owned(),
                    port_specifier: Some(PortSpecifier::PortValue(port)),
                    ..SocketAddress::default()
                })),
            }),
            listener_filters: vec![ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".to_owned(),
                ..ListenerFilter::default()
            }],
            filter_chains: chains
                .into_iter()
                .map(|(sni, socket)| FilterChain {
                    filter_chain_match: Some(FilterChainMatch {
                        server_names: vec![sni.to_owned()],
                        ..FilterChainMatch::default()
                    }),
                    transport_socket: Some(socket),
                    filters: vec![Filter {
                        name: "envoy.filters.network.http_connection_manager".to_owned(),
                        config_type: Some(filter::ConfigType::TypedConfig(
                            envoy_types::util::pack_any(hcm.clone()),
                        )),
                    }],
                    ..FilterChain::default()
                })
                .collect(),
            ..Listener::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CommonTlsContext, SubjectAltNameMatcher,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

    use super::testing::*;
    use super::*;

    fn sds(socket: &TransportSocket) -> SdsTls {
        match downstream(socket).unwrap() {
            Some(DownstreamTls::Sds(tls)) => *tls,
            other => panic!("not SDS TLS: {other:?}"),
        }
    }

    #[test]
    fn mesh_mtls_and_a_gateways_own_tls_are_told_apart_by_their_secrets() {
        // What the pilot sends a sidecar's inbound mTLS chains: the local `default`/`ROOTCA`.
        let mesh = mesh_pilot::translate::tls::downstream_mesh(&["h2", "http/1.1"]);
        assert_eq!(downstream(&mesh).unwrap(), Some(DownstreamTls::Mesh));

        let simple = sds(&gateway_socket("kubernetes://bookinfo-cred", false));
        assert_eq!(simple.certificates, ["kubernetes://bookinfo-cred"]);
        assert_eq!(simple.validation_secret, None);
        assert!(!simple.require_client_certificate);
        assert_eq!(simple.alpn, ["h2", "http/1.1"]);
        assert_eq!(simple.awaited, ["kubernetes://bookinfo-cred"]);

        let mutual = sds(&gateway_socket("kubernetes://bookinfo-cred", true));
        assert_eq!(mutual.validation_secret.as_deref(), Some("kubernetes://bookinfo-cred-cacert"));
        assert!(mutual.require_client_certificate);
        assert_eq!(
            mutual.secret_names().collect::<Vec<_>>(),
            ["kubernetes://bookinfo-cred", "kubernetes://bookinfo-cred-cacert"]
        );

        let raw = TransportSocket { name: RAW_BUFFER_SOCKET.to_owned(), config_type: None };
        assert_eq!(downstream(&raw).unwrap(), None);

        // A credential from another SDS server (the sidecar's agent) cannot be fetched.
        let mut from_agent = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                    name: "kubernetes://bookinfo-cred".to_owned(),
                    sds_config: None,
                }],
                ..CommonTlsContext::default()
            }),
            ..DownstreamTlsContext::default()
        };
        let why = downstream(&socket(from_agent.clone())).unwrap_err();
        assert!(why.contains("\"kubernetes://bookinfo-cred\" is not served over ADS"), "{why}");
        // Certificates inline in the listener are not implemented.
        if let Some(common) = from_agent.common_tls_context.as_mut() {
            common.tls_certificate_sds_secret_configs = vec![ads("kubernetes://x")];
            common.tls_certificates = vec![TlsCertificate::default()];
        }
        let why = downstream(&socket(from_agent)).unwrap_err();
        assert!(why.contains("tls_certificates"), "{why}");
    }

    #[test]
    fn secrets_are_checked_when_they_arrive_without_quoting_keys() {
        let ca = Ca::new("gateway test CA");
        let good = ca.leaf(&["bookinfo.example.com"]);
        check_secret(&certificate("kubernetes://a", &good)).unwrap();
        check_secret(&client_ca("kubernetes://a-cacert", &ca.pem)).unwrap();

        let other = ca.leaf(&["other.example.com"]);
        let mismatched = (good.0.clone(), other.1.clone());
        let why = check_secret(&certificate("kubernetes://a", &mismatched)).unwrap_err();
        assert!(why.contains("the key and certificate cannot serve"), "{why}");
        assert!(!why.contains("PRIVATE KEY") && !why.contains(&other.1[30..60]), "{why}");

        let garbage = (good.0.clone(), "not a key".to_owned());
        let why = check_secret(&certificate("kubernetes://a", &garbage)).unwrap_err();
        assert!(why.starts_with("tls_certificate.private_key is not a PEM private key"), "{why}");
        let no_chain = (String::new(), good.1.clone());
        let why = check_secret(&certificate("kubernetes://a", &no_chain)).unwrap_err();
        assert_eq!(why, "tls_certificate.certificate_chain holds no PEM certificate");
        let why = check_secret(&client_ca("kubernetes://a-cacert", "no CA here")).unwrap_err();
        assert_eq!(why, "validation_context: trusted_ca holds no PEM certificate");
        let empty = Secret { name: "kubernetes://a".to_owned(), r#type: None };
        assert!(check_secret(&empty).is_err());
    }

    #[test]
    fn a_dump_shows_the_certificate_and_never_the_key() {
        let ca = Ca::new("gateway test CA");
        let material = ca.leaf(&["bookinfo.example.com"]);
        let redacted = redact(&certificate("kubernetes://a", &material));
        let Some(secret::Type::TlsCertificate(c)) = &redacted.r#type else { panic!() };
        assert_eq!(
            c.private_key.as_ref().and_then(|k| k.specifier.clone()),
            Some(Specifier::InlineBytes(REDACTED.to_vec()))
        );
        assert_eq!(
            c.certificate_chain.as_ref().and_then(|k| k.specifier.clone()),
            Some(Specifier::InlineBytes(material.0.into_bytes()))
        );
    }

    #[test]
    fn a_chain_serves_only_once_its_secrets_are_there() {
        let ca = Ca::new("gateway test CA");
        let mutual = sds(&gateway_socket("kubernetes://m", true));
        let mut secrets = BTreeMap::new();
        let why = server_config(&mutual, &secrets).unwrap_err();
        assert!(why.starts_with("secret \"kubernetes://m\" has not arrived"), "{why}");
        secrets.insert(
            "kubernetes://m".to_owned(),
            certificate("kubernetes://m", &ca.leaf(&["m.example.com"])),
        );
        let why = server_config(&mutual, &secrets).unwrap_err();
        assert!(why.starts_with("secret \"kubernetes://m-cacert\" has not arrived"), "{why}");
        secrets.insert(
            "kubernetes://m-cacert".to_owned(),
            client_ca("kubernetes://m-cacert", &ca.pem),
        );
        let config = server_config(&mutual, &secrets).unwrap();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        // The certificate where the CA should be, and the other way round.
        let swapped =
            SdsTls { certificates: vec!["kubernetes://m-cacert".to_owned()], ..SdsTls::default() };
        let why = server_config(&swapped, &secrets).unwrap_err();
        assert_eq!(why, "secret \"kubernetes://m-cacert\" is not a tls_certificate");
    }

    #[test]
    fn client_certificates_can_be_held_to_their_names_and_hashes() {
        let ca = Ca::new("client CA");
        let (pem, _) = ca.leaf(&["client.example.com"]);
        let leaf = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let dns = |pattern: string_matcher::MatchPattern| SubjectAltNameMatcher {
            san_type: SanType::Dns as i32,
            matcher: Some(StringMatcher { match_pattern: Some(pattern), ..Default::default() }),
            ..Default::default()
        };
        let checks = |v: CertificateValidationContext| PeerChecks::compile(&v).unwrap();
        let exact = |name: &str| CertificateValidationContext {
            match_typed_subject_alt_names: vec![dns(string_matcher::MatchPattern::Exact(
                name.to_owned(),
            ))],
            ..Default::default()
        };
        assert_eq!(checks(exact("client.example.com")).refuse(&leaf), None);
        assert_eq!(checks(exact("admin.example.com")).refuse(&leaf), Some(FAIL_VERIFY_SAN));
        let suffix = CertificateValidationContext {
            match_typed_subject_alt_names: vec![dns(string_matcher::MatchPattern::Suffix(
                ".example.com".to_owned(),
            ))],
            ..Default::default()
        };
        assert_eq!(checks(suffix).refuse(&leaf), None);
        let hash: String = ring::digest::digest(&ring::digest::SHA256, &leaf)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let by_hash = |h: String| CertificateValidationContext {
            verify_certificate_hash: vec![h],
            ..Default::default()
        };
        assert_eq!(checks(by_hash(hash)).refuse(&leaf), None);
        assert_eq!(checks(by_hash("00".repeat(32))).refuse(&leaf), Some(FAIL_VERIFY_CERT_HASH));
        assert!(PeerChecks::compile(&by_hash("abc".to_owned())).is_err());
    }
}
