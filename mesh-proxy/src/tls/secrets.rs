//! The secrets a gateway gets over SDS: checked when they arrive (a bad one is NACKed by name,
//! never quoting a key), turned into rustls material, and redacted for dumps.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate,
    certificate_validation_context::TrustChainVerification, secret,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::REDACTED;
use super::server::PeerChecks;

/// What the proxy cannot honour in a validation context (checked when it arrives, so what
/// would weaken verification is refused rather than ignored).
pub(super) fn check_validation(v: &CertificateValidationContext) -> Result<(), String> {
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
pub(super) fn inline(source: Option<&DataSource>, field: &str) -> Result<Vec<u8>, String> {
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

pub(super) fn roots(ca: &DataSource) -> Result<rustls::RootCertStore, String> {
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

pub(super) fn crls(crl: &DataSource) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let pem = inline(Some(crl), "crl")?;
    CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("crl is not PEM: {e}"))
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
