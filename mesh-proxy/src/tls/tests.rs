//! The TLS of gateway chains, checked piece by piece.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, Secret, SubjectAltNameMatcher, TlsCertificate, secret,
    subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use super::server::{FAIL_VERIFY_CERT_HASH, FAIL_VERIFY_SAN, PeerChecks};
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
    secrets.insert("kubernetes://m-cacert".to_owned(), client_ca("kubernetes://m-cacert", &ca.pem));
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
