//! TLS a listener terminates with certificates of its own, as a gateway's `SIMPLE`, `MUTUAL`
//! and `OPTIONAL_MUTUAL` servers do (Istio's `credentialName`): what a filter chain's
//! `DownstreamTlsContext` asks for, the secrets the pilot serves for it over SDS on the ADS
//! stream (checked when they arrive, redacted for dumps), and the rustls server configuration
//! built from both. Mesh mTLS (the workload certificate: SDS `default` and `ROOTCA`, which the
//! pilot never serves) is told apart here and left to [`crate::proxy::MeshTls`].
//!
//! Pure functions of configuration: no I/O, nothing read from files.

use envoy_types::pb::envoy::config::core::v3::{
    TransportSocket, config_source::ConfigSourceSpecifier, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, DownstreamTlsContext, SdsSecretConfig,
    common_tls_context::ValidationContextType, tls_parameters::TlsProtocol,
};
use mesh_api::xds::mtls::{ROOT_SECRET, WORKLOAD_SECRET};
use prost::Message as _;

mod secrets;
mod server;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use secrets::check_validation;
pub use secrets::{certified_key, check_secret, redact};
pub use server::{CONNECTION_ERROR, HANDSHAKE, failure_stat, server_config};

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
