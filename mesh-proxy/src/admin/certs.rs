//! The certificates the proxy holds: its workload certificate from mesh-ca with the mesh's
//! roots, and a gateway's SDS certificates. `/certs` lists them as Envoy's admin does
//! (`envoy.admin.v3.Certificates` JSON), and the config dump shows the workload certificate
//! as an Envoy next to istio-agent shows it: SDS secrets `default` and `ROOTCA`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use mesh_api::xds::mtls::{ROOT_SECRET, WORKLOAD_SECRET};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use x509_parser::extensions::GeneralName;

/// Where Envoy says an inline certificate comes from.
const INLINE: &str = "<inline>";

/// The workload certificate as SDS secrets: `default` (the chain, the key redacted) and
/// `ROOTCA` (the roots), with the version and time a config dump gives them: the leaf's
/// start of validity, which changes with each rotation.
pub fn workload_secrets(
    chain: &[CertificateDer<'_>],
    root_pem: &str,
) -> (String, SystemTime, [Secret; 2]) {
    let issued = chain
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
        .and_then(|(_, cert)| u64::try_from(cert.validity().not_before.timestamp()).ok())
        .map_or(SystemTime::UNIX_EPOCH, |secs| {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
        });
    let pem: String = chain.iter().map(|der| to_pem(der)).collect();
    let inline = |bytes: Vec<u8>| {
        Some(DataSource { specifier: Some(Specifier::InlineBytes(bytes)), ..DataSource::default() })
    };
    let certificate = Secret {
        name: WORKLOAD_SECRET.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(pem.into_bytes()),
            private_key: inline(crate::tls::REDACTED.to_vec()),
            ..TlsCertificate::default()
        })),
    };
    let roots = Secret {
        name: ROOT_SECRET.to_owned(),
        r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(root_pem.as_bytes().to_vec()),
            ..CertificateValidationContext::default()
        })),
    };
    (crate::telemetry::rfc3339_seconds(issued), issued, [certificate, roots])
}

/// A DER certificate as PEM.
fn to_pem(der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The certificates in PEM `bytes` (those that do not parse are left out).
fn from_pem(bytes: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(bytes).filter_map(Result::ok).collect()
}

/// The bytes of an inline data source.
fn inline_bytes(source: Option<&DataSource>) -> Option<&[u8]> {
    match source?.specifier.as_ref()? {
        Specifier::InlineBytes(bytes) => Some(bytes),
        Specifier::InlineString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

/// One certificate as Envoy's `CertificateDetails` JSON (every field, as Envoy's `/certs`
/// prints them); `None` for bytes that are not a certificate.
fn details(der: &[u8], now: SystemTime) -> Option<serde_json::Value> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    // Envoy prints the serial as OpenSSL's BN_bn2hex does, in lower case: no leading zero
    // bytes.
    let serial = cert.raw_serial();
    let significant = serial.iter().position(|b| *b != 0).map_or(&[0u8][..], |i| &serial[i..]);
    let serial_number: String = significant.iter().map(|b| format!("{b:02x}")).collect();
    let names: Vec<serde_json::Value> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.iter().filter_map(alt_name).collect())
        .unwrap_or_default();
    let valid_from = cert.validity().not_before.timestamp();
    let expiration = cert.validity().not_after.timestamp();
    let now =
        i64::try_from(now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs())
            .unwrap_or(i64::MAX);
    let days = (expiration.saturating_sub(now) / 86_400).max(0);
    Some(serde_json::json!({
        "path": INLINE,
        "serial_number": serial_number,
        "subject_alt_names": names,
        // A uint64: protobuf's JSON writes it as a string.
        "days_until_expiration": days.to_string(),
        "valid_from": super::envoy_json::timestamp_text(valid_from),
        "expiration_time": super::envoy_json::timestamp_text(expiration),
    }))
}

/// A subject alternative name as Envoy's `SubjectAlternateName` JSON.
fn alt_name(name: &GeneralName<'_>) -> Option<serde_json::Value> {
    Some(match name {
        GeneralName::URI(uri) => serde_json::json!({ "uri": uri }),
        GeneralName::DNSName(dns) => serde_json::json!({ "dns": dns }),
        GeneralName::IPAddress(bytes) => {
            let ip = match bytes.len() {
                4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?),
                16 => std::net::IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?),
                _ => return None,
            };
            serde_json::json!({ "ip_address": ip.to_string() })
        }
        _ => return None,
    })
}

/// One TLS context's certificates as Envoy's `Certificate` JSON: its CA certificates and the
/// leaf of its chain.
fn certificate(
    ca: &[CertificateDer<'_>],
    leaf: Option<&CertificateDer<'_>>,
    now: SystemTime,
) -> serde_json::Value {
    serde_json::json!({
        "ca_cert": ca.iter().filter_map(|der| details(der, now)).collect::<Vec<_>>(),
        "cert_chain": leaf.and_then(|der| details(der, now)).into_iter().collect::<Vec<_>>(),
    })
}

/// `/certs`: the workload certificate (`chain`, leaf first) with the mesh's roots
/// (`root_pem`), then each SDS certificate with the client CA of the same credential
/// (`<name>-cacert`), then any other SDS CA, as Envoy's `envoy.admin.v3.Certificates` JSON.
pub fn certificates(
    chain: &[CertificateDer<'_>],
    root_pem: &str,
    secrets: &BTreeMap<String, Secret>,
    now: SystemTime,
) -> serde_json::Value {
    let mut out = vec![certificate(&from_pem(root_pem.as_bytes()), chain.first(), now)];
    let roots_of = |secret: &Secret| match &secret.r#type {
        Some(secret::Type::ValidationContext(v)) => {
            inline_bytes(v.trusted_ca.as_ref()).map(from_pem).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let mut paired = std::collections::BTreeSet::new();
    for (name, secret) in secrets {
        let Some(secret::Type::TlsCertificate(tls)) = &secret.r#type else { continue };
        let leaf = inline_bytes(tls.certificate_chain.as_ref()).map(from_pem).unwrap_or_default();
        let ca_name = format!("{name}-cacert");
        let ca = secrets.get(&ca_name).map(roots_of).unwrap_or_default();
        paired.insert(ca_name);
        out.push(certificate(&ca, leaf.first(), now));
    }
    for (name, secret) in secrets {
        if matches!(secret.r#type, Some(secret::Type::ValidationContext(_)))
            && !paired.contains(name)
        {
            out.push(certificate(&roots_of(secret), None, now));
        }
    }
    serde_json::json!({ "certificates": out })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn issued(ca: &rcgen::Issuer<'_, rcgen::KeyPair>, uri: &str) -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        params.serial_number = Some(vec![0x00, 0x0a, 0xbc].into());
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 11);
        params.signed_by(&key, ca).unwrap()
    }

    fn ca() -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(2029, 1, 1);
        params.not_after = rcgen::date_time_ymd(2039, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        (cert, rcgen::Issuer::new(params, key))
    }

    #[test]
    fn the_workload_certificate_reads_as_envoys_certs_and_istio_agents_secrets() {
        let (root, issuer) = ca();
        let leaf = issued(&issuer, "spiffe://cluster.local/ns/demo/sa/web");
        let chain = [leaf.der().clone()];
        let now = SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(1_893_456_000 + 86_400 * 3 + 60);
        let certs = certificates(&chain, &root.pem(), &BTreeMap::new(), now);
        let leaf_details = &certs["certificates"][0]["cert_chain"][0];
        assert_eq!(leaf_details["path"], "<inline>");
        assert_eq!(leaf_details["serial_number"], "0abc");
        assert_eq!(
            leaf_details["subject_alt_names"],
            serde_json::json!([{ "uri": "spiffe://cluster.local/ns/demo/sa/web" }])
        );
        assert_eq!(leaf_details["valid_from"], "2030-01-01T00:00:00Z");
        assert_eq!(leaf_details["expiration_time"], "2030-01-11T00:00:00Z");
        assert_eq!(leaf_details["days_until_expiration"], "6", "10 days less 3 and a minute");
        let root_details = &certs["certificates"][0]["ca_cert"][0];
        assert_eq!(root_details["subject_alt_names"], serde_json::json!([]));
        assert_eq!(root_details["expiration_time"], "2039-01-01T00:00:00Z");

        let (version, at, [default, rootca]) = workload_secrets(&chain, &root.pem());
        assert_eq!(version, "2030-01-01T00:00:00Z");
        assert_eq!(at, SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_893_456_000));
        let json = super::super::envoy_json::to_json(&default).unwrap();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(
            json,
            serde_json::json!({
                "name": "default",
                "tls_certificate": {
                    "certificate_chain": { "inline_bytes": b64(leaf.pem().as_bytes()) },
                    "private_key": { "inline_bytes": "W3JlZGFjdGVkXQ==" },
                },
            })
        );
        let json = super::super::envoy_json::to_json(&rootca).unwrap();
        assert_eq!(
            json["validation_context"]["trusted_ca"]["inline_bytes"],
            b64(root.pem().as_bytes())
        );
    }

    #[test]
    fn a_gateways_credentials_pair_each_certificate_with_its_client_ca() {
        let (root, issuer) = ca();
        let leaf = issued(&issuer, "spiffe://cluster.local/ns/istio-system/sa/gw");
        let inline = |pem: String| {
            Some(DataSource {
                specifier: Some(Specifier::InlineString(pem)),
                ..DataSource::default()
            })
        };
        let tls = |name: &str| Secret {
            name: name.to_owned(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(leaf.pem()),
                ..TlsCertificate::default()
            })),
        };
        let ca = |name: &str| Secret {
            name: name.to_owned(),
            r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
                trusted_ca: inline(root.pem()),
                ..CertificateValidationContext::default()
            })),
        };
        let secrets: BTreeMap<String, Secret> = [
            tls("kubernetes://a"),
            tls("kubernetes://m"),
            ca("kubernetes://m-cacert"),
            ca("kubernetes://lone-cacert"),
        ]
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
        let certs = certificates(&[leaf.der().clone()], &root.pem(), &secrets, SystemTime::now());
        let counts: Vec<(usize, usize)> = certs["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (c["ca_cert"].as_array().unwrap().len(), c["cert_chain"].as_array().unwrap().len())
            })
            .collect();
        // The workload's, a (no client CA), m with its CA, the lone CA.
        assert_eq!(counts, [(1, 1), (0, 1), (1, 1), (1, 0)]);
    }
}
