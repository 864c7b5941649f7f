//! Certificates and gateway resources for the crate's tests.
#![allow(clippy::unwrap_used)]

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
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, common_tls_context::CombinedCertificateValidationContext,
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
            config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
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
        common.validation_context_type = Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext::default()),
                validation_context_sds_secret_config: Some(ads(&format!("{credential}-cacert"))),
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
        config_type: Some(transport_socket::ConfigType::TypedConfig(envoy_types::util::pack_any(
            context,
        ))),
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
