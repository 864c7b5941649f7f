//! What an upstream TLS context asks of a cluster's connections, read once per configuration:
//! for mesh mTLS, the identities the server may have (its SAN matchers); for TLS to a server
//! outside the mesh (a DestinationRule's `SIMPLE`/`MUTUAL`), the client configuration — roots
//! (`trusted_ca`, else the system's), the names to check (`match_typed_subject_alt_names`,
//! else the SNI), and the client certificate for MUTUAL. A context that cannot be honoured (a
//! file that does not read, a certificate over SDS) is an error: the cluster fails closed.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, UpstreamTlsContext, common_tls_context,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher;
use mesh_api::identity::SpiffeId;
use mesh_identity::origination::{ClientCertificate, ServerCheck, client_config};
use rustls::RootCertStore;

/// The validation context of `context`, however it is given.
fn validation(context: &UpstreamTlsContext) -> Option<&CertificateValidationContext> {
    use common_tls_context::ValidationContextType as V;
    match context.common_tls_context.as_ref()?.validation_context_type.as_ref()? {
        V::ValidationContext(v) => Some(v),
        V::CombinedValidationContext(c) => c.default_validation_context.as_ref(),
        _ => None,
    }
}

/// The exact names of the context's SAN matchers.
fn names(context: &UpstreamTlsContext) -> Vec<String> {
    validation(context)
        .map(|v| {
            v.match_typed_subject_alt_names
                .iter()
                .filter_map(|m| match m.matcher.as_ref()?.match_pattern.as_ref()? {
                    string_matcher::MatchPattern::Exact(name) => Some(name.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The SPIFFE identities a mesh server may present (none: the endpoint's own).
pub fn mesh_identities(context: &UpstreamTlsContext) -> Vec<SpiffeId> {
    names(context).iter().filter_map(|n| n.parse().ok()).collect()
}

fn read(source: &DataSource, what: &str) -> Result<String, String> {
    match source.specifier.as_ref() {
        Some(data_source::Specifier::Filename(path)) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the {what} {path}: {e}"))
        }
        Some(data_source::Specifier::InlineString(text)) => Ok(text.clone()),
        Some(data_source::Specifier::InlineBytes(bytes)) => {
            Ok(String::from_utf8_lossy(bytes).into_owned())
        }
        _ => Err(format!("the {what} comes from where the proxy cannot read it")),
    }
}

/// The system's roots (for a rule without `caCertificates`, as Envoy and Istio do).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!("no system root certificates ({:?})", found.errors.first()));
    }
    Ok(roots)
}

/// The client configuration of a non-mesh context.
pub fn config(context: &UpstreamTlsContext) -> Result<rustls::ClientConfig, String> {
    let common = context.common_tls_context.clone().unwrap_or_default();
    if !common.tls_certificate_sds_secret_configs.is_empty()
        || matches!(
            common.validation_context_type,
            Some(common_tls_context::ValidationContextType::CombinedValidationContext(_))
        )
    {
        return Err("certificates from a Secret (credentialName) are served to gateways only; \
                    give the sidecar files (clientCertificate, privateKey, caCertificates)"
            .to_owned());
    }
    let check = match validation(context) {
        None => ServerCheck::None,
        Some(v) => {
            let roots = match &v.trusted_ca {
                Some(ca) => {
                    let pem = read(ca, "CA certificates")?;
                    let mut roots = RootCertStore::empty();
                    let certs = mesh_identity::tls::certs_from_pem(&[pem])
                        .map_err(|e| format!("CA certificates: {e}"))?;
                    let (added, _) = roots.add_parsable_certificates(certs);
                    if added == 0 {
                        return Err("no usable certificate in caCertificates".to_owned());
                    }
                    roots
                }
                None => system_roots()?,
            };
            ServerCheck::Verify { roots: std::sync::Arc::new(roots), sans: names(context) }
        }
    };
    let client = match common.tls_certificates.first() {
        Some(cert) => Some(ClientCertificate {
            chain_pem: read(
                cert.certificate_chain.as_ref().ok_or("a client certificate without a chain")?,
                "client certificate",
            )?,
            key_pem: read(
                cert.private_key.as_ref().ok_or("a client certificate without a key")?,
                "client key",
            )?,
        }),
        None => None,
    };
    client_config(check, client.as_ref()).map_err(|e| e.to_string())
}
