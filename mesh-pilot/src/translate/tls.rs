//! Transport sockets: mesh mTLS towards sidecars (automatic, by endpoint metadata, or forced by
//! a DestinationRule's `ISTIO_MUTUAL`), the user's TLS settings (`SIMPLE`, `MUTUAL`), and mTLS
//! termination on the inbound side. Keys never pass through the pilot: certificates are named
//! by SDS (`default`, `ROOTCA`) and the proxy resolves them locally.

use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ConfigSource, DataSource, GrpcService, TransportSocket,
    api_config_source::ApiType,
    config_source::ConfigSourceSpecifier,
    data_source,
    grpc_service::{EnvoyGrpc, TargetSpecifier},
    transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, SdsSecretConfig, SubjectAltNameMatcher, TlsCertificate,
    UpstreamTlsContext, certificate_validation_context,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value::Kind};
use mesh_api::networking::{ClientTlsMode, ClientTlsSettings};
use mesh_api::xds::mtls;

use super::{any, duration};

/// Envoy's name for the TLS transport socket.
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// A secret fetched over SDS from the proxy's local agent.
fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ConfigSource {
            resource_api_version: 2, // V3
            // Do not hold a cluster or listener back waiting for a secret: the proxy has its
            // certificate before it reports ready.
            initial_fetch_timeout: Some(duration(std::time::Duration::ZERO)),
            config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    transport_api_version: 2, // V3
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                            cluster_name: mtls::SDS_CLUSTER.to_owned(),
                            ..EnvoyGrpc::default()
                        })),
                        ..GrpcService::default()
                    }],
                    set_node_on_first_message_only: true,
                    ..ApiConfigSource::default()
                },
            )),
            ..ConfigSource::default()
        }),
    }
}

/// Exact URI SAN matchers (SPIFFE identities).
fn uri_sans(identities: &[String]) -> Vec<SubjectAltNameMatcher> {
    identities
        .iter()
        .map(|id| SubjectAltNameMatcher {
            san_type: SanType::Uri as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(id.clone())),
                ..StringMatcher::default()
            }),
            ..SubjectAltNameMatcher::default()
        })
        .collect()
}

/// The mesh certificate, and the mesh trust bundle with `identities` as the accepted peers
/// (any mesh identity when empty).
fn mesh_context(identities: &[String], alpn: &[&str]) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(mtls::WORKLOAD_SECRET)],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: uri_sans(identities),
                    ..CertificateValidationContext::default()
                }),
                validation_context_sds_secret_config: Some(sds(mtls::ROOT_SECRET)),
                ..CombinedCertificateValidationContext::default()
            },
        )),
        alpn_protocols: alpn.iter().map(|p| (*p).to_owned()).collect(),
        ..CommonTlsContext::default()
    }
}

fn socket<T: prost::Name + prost::Message>(config: T) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(config))),
    }
}

/// Mesh mTLS to a sidecar of the destination, which must present one of `identities`.
pub fn upstream_mesh(sni: String, identities: &[String]) -> TransportSocket {
    socket(UpstreamTlsContext {
        common_tls_context: Some(mesh_context(identities, &mtls::ALPN)),
        sni,
        ..UpstreamTlsContext::default()
    })
}

/// Mesh mTLS termination: a client certificate from the mesh is required; which identities
/// may call is authorization's business, not the handshake's.
pub fn downstream_mesh(alpn: &[&str]) -> TransportSocket {
    socket(DownstreamTlsContext {
        common_tls_context: Some(mesh_context(&[], alpn)),
        require_client_certificate: Some(BoolValue { value: true }),
        ..DownstreamTlsContext::default()
    })
}

/// Automatic mTLS: endpoints whose metadata says they run a sidecar get mesh mTLS, the others
/// plaintext.
pub fn auto_mesh(sni: String, identities: &[String]) -> Vec<TransportSocketMatch> {
    let string = |s: &str| Value { kind: Some(Kind::StringValue(s.to_owned())) };
    vec![
        TransportSocketMatch {
            name: format!("{}-{}", mtls::TLS_MODE, mtls::TLS_MODE_ISTIO),
            r#match: Some(Struct {
                fields: [(mtls::TLS_MODE.to_owned(), string(mtls::TLS_MODE_ISTIO))]
                    .into_iter()
                    .collect(),
            }),
            transport_socket: Some(upstream_mesh(sni, identities)),
        },
        TransportSocketMatch {
            name: format!("{}-disabled", mtls::TLS_MODE),
            r#match: Some(Struct::default()),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".to_owned(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(any(
                    RawBuffer::default(),
                ))),
            }),
        },
    ]
}

/// How a cluster's connections are secured.
#[derive(Clone, Debug, PartialEq)]
pub enum Upstream {
    /// No transport socket: plaintext to every endpoint (outside the mesh, `DISABLE`, or automatic
    /// mTLS for a proxyless client).
    Plain,
    /// Mesh mTLS for endpoints with a sidecar, plaintext for the others.
    Auto(Vec<TransportSocketMatch>),
    /// One transport socket for every endpoint.
    Always(TransportSocket),
}

/// Mesh mTLS for a proxyless gRPC client: gRPC reads its certificates from the certificate
/// provider instance `default` of its bootstrap (gRFC A29), not from SDS.
pub fn upstream_mesh_proxyless(sni: String, identities: &[String]) -> TransportSocket {
    let provider = |name: &str| CertificateProviderPluginInstance {
        instance_name: mtls::WORKLOAD_SECRET.to_owned(),
        certificate_name: name.to_owned(),
    };
    socket(UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_provider_instance: Some(provider(mtls::WORKLOAD_SECRET)),
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    ca_certificate_provider_instance: Some(provider(mtls::ROOT_SECRET)),
                    match_typed_subject_alt_names: uri_sans(identities),
                    ..CertificateValidationContext::default()
                },
            )),
            ..CommonTlsContext::default()
        }),
        sni,
        ..UpstreamTlsContext::default()
    })
}

/// The transport of a cluster: the DestinationRule's TLS settings when it has them, else
/// automatic mTLS for services inside the mesh. Proxyless gRPC clients cannot choose a
/// transport per endpoint, so automatic mTLS is plaintext for them (mTLS when a
/// DestinationRule asks for `ISTIO_MUTUAL`).
pub fn upstream(
    settings: Option<&ClientTlsSettings>,
    sni: String,
    identities: &[String],
    mesh_internal: bool,
    proxyless: bool,
) -> Upstream {
    let Some(settings) = settings else {
        return if mesh_internal && !proxyless {
            Upstream::Auto(auto_mesh(sni, identities))
        } else {
            Upstream::Plain
        };
    };
    match settings.mode.as_ref() {
        None | Some(ClientTlsMode::Disable) | Some(ClientTlsMode::Unknown(_)) => Upstream::Plain,
        Some(ClientTlsMode::IstioMutual) => {
            let sans = if settings.subject_alt_names.is_empty() {
                identities.to_vec()
            } else {
                settings.subject_alt_names.clone()
            };
            let sni = settings.sni.clone().unwrap_or(sni);
            Upstream::Always(if proxyless {
                upstream_mesh_proxyless(sni, &sans)
            } else {
                upstream_mesh(sni, &sans)
            })
        }
        Some(mode @ (ClientTlsMode::Simple | ClientTlsMode::Mutual)) => {
            Upstream::Always(socket(user_tls(settings, *mode == ClientTlsMode::Mutual)))
        }
    }
}

/// `SIMPLE` or `MUTUAL` TLS with files the proxy reads (`credentialName` as an SDS name the
/// proxy resolves from a Secret of that name).
fn user_tls(settings: &ClientTlsSettings, mutual: bool) -> UpstreamTlsContext {
    let file = |path: &str| DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_owned())),
        ..DataSource::default()
    };
    let mut common = CommonTlsContext::default();
    if let Some(name) = &settings.credential_name {
        let name = format!("kubernetes://{name}");
        if mutual {
            common.tls_certificate_sds_secret_configs = vec![sds(&name)];
        }
        if !settings.insecure_skip_verify.unwrap_or(false) {
            common.validation_context_type =
                Some(ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        // The CA comes with the secret.
                        default_validation_context: Some(CertificateValidationContext {
                            system_root_certs: None,
                            ..validation(settings, None)
                        }),
                        validation_context_sds_secret_config: Some(sds(&format!("{name}-cacert"))),
                        ..CombinedCertificateValidationContext::default()
                    },
                ));
        }
    } else {
        if mutual
            && let (Some(cert), Some(key)) = (&settings.client_certificate, &settings.private_key)
        {
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: Some(file(cert)),
                private_key: Some(file(key)),
                ..TlsCertificate::default()
            }];
        }
        if !settings.insecure_skip_verify.unwrap_or(false) {
            let ca = settings.ca_certificates.as_deref().map(file);
            common.validation_context_type =
                Some(ValidationContextType::ValidationContext(validation(settings, ca)));
        }
    }
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: settings.sni.clone().unwrap_or_default(),
        ..UpstreamTlsContext::default()
    }
}

fn validation(
    settings: &ClientTlsSettings,
    ca: Option<DataSource>,
) -> CertificateValidationContext {
    // Without a CA bundle the server is checked against the system's roots, as Istio does.
    let system_root_certs =
        ca.is_none().then(certificate_validation_context::SystemRootCerts::default);
    CertificateValidationContext {
        trusted_ca: ca,
        system_root_certs,
        match_typed_subject_alt_names: settings
            .subject_alt_names
            .iter()
            .map(|name| SubjectAltNameMatcher {
                san_type: if name.contains("://") { SanType::Uri } else { SanType::Dns } as i32,
                matcher: Some(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(name.clone())),
                    ..StringMatcher::default()
                }),
                ..SubjectAltNameMatcher::default()
            })
            .collect(),
        ..CertificateValidationContext::default()
    }
}

/// The SDS name of a gateway credential (Istio's `kubernetes://<credentialName>`), served by
/// the pilot over ADS.
pub fn credential_name(credential: &str) -> String {
    format!("kubernetes://{credential}")
}

/// The SDS name of the CA a credential's clients must verify to (`...-cacert`).
pub fn credential_ca_name(credential: &str) -> String {
    format!("kubernetes://{credential}-cacert")
}

/// A secret fetched over ADS from the pilot (a gateway's credential).
fn ads_secret(name: String) -> SdsSecretConfig {
    SdsSecretConfig { name, sds_config: Some(super::cluster::ads()) }
}

/// TLS termination at a gateway with the certificate of `credential` (SIMPLE), and with
/// clients' certificates required and verified to its CA (`mutual`, MUTUAL).
pub fn downstream_gateway(credential: &str, mutual: bool) -> TransportSocket {
    let mut common = CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![ads_secret(credential_name(credential))],
        alpn_protocols: vec!["h2".to_owned(), "http/1.1".to_owned()],
        ..CommonTlsContext::default()
    };
    if mutual {
        common.validation_context_type = Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext::default()),
                validation_context_sds_secret_config: Some(ads_secret(credential_ca_name(
                    credential,
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

/// The SDS secrets of a credential: its certificate and key, and its CA when it has one (from
/// its own `ca.crt`, else from a `<name>-cacert` Secret), as a gateway asks for them.
pub fn credential_secrets(
    credential: &str,
    material: &crate::model::Credential,
    separate_ca: Option<&crate::model::Credential>,
) -> Vec<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret> {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
    let inline = |pem: &String| DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..DataSource::default()
    };
    let mut out = Vec::new();
    if let (Some(chain), Some(key)) = (&material.certificate_chain, &material.private_key) {
        out.push(Secret {
            name: credential_name(credential),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(chain)),
                private_key: Some(inline(key)),
                ..TlsCertificate::default()
            })),
        });
    }
    let ca = material.ca_certificates.as_ref().or_else(|| {
        separate_ca.and_then(|c| c.ca_certificates.as_ref().or(c.certificate_chain.as_ref()))
    });
    if let Some(ca) = ca {
        out.push(Secret {
            name: credential_ca_name(credential),
            r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
                trusted_ca: Some(inline(ca)),
                ..CertificateValidationContext::default()
            })),
        });
    }
    out
}
