//! An HTTP connection manager's `tracing`, compiled once with its listener: where spans go
//! (the OpenTelemetry tracer's collector, named by a cluster of the proxy's own), how many
//! requests are sampled (`client_sampling`, `random_sampling`, `overall_sampling`), the custom
//! tags (literals, request headers, environment variables read here), and how long a path tag
//! may be. Exactly the fields Envoy reads, as the pilot writes them; pure.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{GrpcService, HttpService, grpc_service, http_uri};
use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, tracing as tracer};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::r#type::tracing::v3::custom_tag;
use envoy_types::pb::envoy::r#type::v3::Percent;
use http::header::HeaderName;
use prost::Message as _;

/// Envoy's name of the OpenTelemetry tracer.
pub const OPENTELEMETRY_TRACER: &str = "envoy.tracers.opentelemetry";
/// Envoy's default for `max_path_tag_length`.
pub const DEFAULT_MAX_PATH_TAG_LENGTH: usize = 256;
/// The longest value a tag takes from traffic (a request header), in bytes.
pub const MAX_TAG_VALUE: usize = 256;
/// The most custom tags one connection manager may add to a span; more are ignored.
pub const MAX_CUSTOM_TAGS: usize = 64;

/// Where a connection manager's spans are exported, and as which service: one exporter per
/// distinct value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExportSpec {
    /// The collector.
    pub collector: Collector,
    /// `service.name` of the spans (the tracer's `service_name`; the workload's when empty).
    pub service_name: String,
    /// How long one export may take (the gRPC service's `timeout`), when set.
    pub timeout: Option<Duration>,
    /// gRPC metadata sent with each export (the gRPC service's `initial_metadata`), or the
    /// HTTP service's `request_headers_to_add`.
    pub headers: Vec<(String, String)>,
    /// OTLP over HTTP to this path (the HTTP service's URI's); `None`: OTLP over gRPC.
    pub http_path: Option<String>,
}

/// Where the collector is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Collector {
    /// An endpoint of a cluster of the proxy's (`envoy_grpc.cluster_name`: the collector's
    /// `outbound|4317||otel-collector.<ns>.svc.cluster.local`), resolved from its endpoints.
    Cluster(String),
    /// A `host:port` dialled directly (`google_grpc.target_uri`).
    Target(String),
    /// No provider (Istio's older `enableTracing`): the collector the standard
    /// `OTEL_EXPORTER_OTLP_*` variables name, if any.
    Environment,
    /// A provider the proxy does not export to (another tracer): headers are still read and
    /// written, spans are counted as dropped.
    Unsupported(String),
}

/// A tag's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagValue {
    /// Fixed (a literal, or an environment variable read when the listener was compiled).
    Literal(String),
    /// A request header's value, else the default (no tag when neither).
    Header {
        /// The header.
        name: HeaderName,
        /// Its default.
        default: Option<String>,
    },
}

/// A custom tag: its name and where its value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomTag {
    /// The tag (attribute) name.
    pub name: String,
    /// Its value.
    pub value: TagValue,
}

/// A connection manager's tracing, compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    /// Where spans go.
    pub export: Arc<ExportSpec>,
    /// Of the requests with `x-client-trace-id`, the percentage traced for it (Envoy's
    /// `client_sampling`, 100 by default).
    pub client_sampling: f64,
    /// Of the requests no caller decided for, the percentage traced (`random_sampling`, 100
    /// by default in Envoy; the pilot writes the mesh's percentage).
    pub random_sampling: f64,
    /// Of the requests traced by either of the above, the percentage kept
    /// (`overall_sampling`, 100 by default).
    pub overall_sampling: f64,
    /// The longest `http.url` tag, in bytes.
    pub max_path_tag_length: usize,
    /// Custom tags, in order.
    pub custom_tags: Vec<CustomTag>,
    /// A gateway's: a CLIENT span for the upstream request, child of the SERVER span
    /// (`spawn_upstream_span`).
    pub spawn_upstream_span: bool,
    /// The span's name, when the connection manager fixes it (`operation`, a literal).
    pub operation: Option<String>,
    /// The upstream span's name, when fixed (`upstream_operation`, a literal).
    pub upstream_operation: Option<String>,
}

fn percent(value: Option<&Percent>) -> f64 {
    match value {
        Some(p) if p.value.is_finite() => p.value.clamp(0.0, 100.0),
        Some(_) => 0.0,
        None => 100.0,
    }
}

/// A format string without `%` is the literal it says; Envoy's command operators are not
/// evaluated here, so a string with them is ignored (the default name applies).
fn literal(text: &str) -> Option<String> {
    (!text.is_empty() && !text.contains('%')).then(|| text.to_owned())
}

impl TraceConfig {
    /// Compiles a connection manager's `tracing`; `env` reads the environment variables of
    /// `environment` tags.
    pub fn compile(hcm: &Tracing, env: impl Fn(&str) -> Option<String>) -> Self {
        // A provider the proxy cannot export to is said once, by the exporters.
        let export = Arc::new(export_spec(hcm.provider.as_ref()));
        let mut custom_tags = Vec::new();
        for tag in hcm.custom_tags.iter().take(MAX_CUSTOM_TAGS) {
            let value = match &tag.r#type {
                Some(custom_tag::Type::Literal(l)) => Some(TagValue::Literal(l.value.clone())),
                Some(custom_tag::Type::Environment(e)) => env(&e.name)
                    .or_else(|| (!e.default_value.is_empty()).then(|| e.default_value.clone()))
                    .map(TagValue::Literal),
                Some(custom_tag::Type::RequestHeader(h)) => {
                    HeaderName::try_from(h.name.to_ascii_lowercase()).ok().map(|name| {
                        TagValue::Header {
                            name,
                            default: (!h.default_value.is_empty()).then(|| h.default_value.clone()),
                        }
                    })
                }
                // Metadata and formatted values are not evaluated: no tag.
                _ => None,
            };
            if let Some(value) = value
                && !tag.tag.is_empty()
            {
                custom_tags.push(CustomTag { name: tag.tag.clone(), value });
            }
        }
        Self {
            export,
            client_sampling: percent(hcm.client_sampling.as_ref()),
            random_sampling: percent(hcm.random_sampling.as_ref()),
            overall_sampling: percent(hcm.overall_sampling.as_ref()),
            max_path_tag_length: hcm
                .max_path_tag_length
                .as_ref()
                .and_then(|l| usize::try_from(l.value).ok())
                .unwrap_or(DEFAULT_MAX_PATH_TAG_LENGTH),
            custom_tags,
            spawn_upstream_span: hcm.spawn_upstream_span.as_ref().is_some_and(|b| b.value),
            operation: literal(&hcm.operation),
            upstream_operation: literal(&hcm.upstream_operation),
        }
    }
}

/// Where a provider sends its spans.
fn export_spec(provider: Option<&tracer::Http>) -> ExportSpec {
    let unsupported = |why: String| ExportSpec {
        collector: Collector::Unsupported(why),
        service_name: String::new(),
        timeout: None,
        headers: Vec::new(),
        http_path: None,
    };
    let Some(provider) = provider else {
        return ExportSpec { collector: Collector::Environment, ..unsupported(String::new()) };
    };
    if provider.name != OPENTELEMETRY_TRACER {
        return unsupported(format!(
            "tracer {:?} is not implemented (only {OPENTELEMETRY_TRACER} is)",
            provider.name
        ));
    }
    let Some(tracer::http::ConfigType::TypedConfig(any)) = &provider.config_type else {
        return unsupported(format!("tracer {OPENTELEMETRY_TRACER} without a typed_config"));
    };
    let config = match OpenTelemetryConfig::decode(any.value.as_slice()) {
        Ok(config) => config,
        Err(err) => return unsupported(format!("OpenTelemetryConfig does not decode: {err}")),
    };
    match (&config.grpc_service, &config.http_service) {
        (Some(grpc), _) => grpc_export(grpc, config.service_name).unwrap_or_else(unsupported),
        (None, Some(http)) => http_export(http, config.service_name).unwrap_or_else(unsupported),
        (None, None) => {
            unsupported("OpenTelemetryConfig names no grpc_service or http_service".into())
        }
    }
}

/// OTLP over HTTP: to an endpoint of the URI's cluster, at the URI's path (Istio writes
/// `<host>/<path>`, without a scheme).
fn http_export(http: &HttpService, service_name: String) -> Result<ExportSpec, String> {
    let uri = http.http_uri.as_ref().ok_or("the http_service has no http_uri")?;
    let cluster = match &uri.http_upstream_type {
        Some(http_uri::HttpUpstreamType::Cluster(cluster)) if !cluster.is_empty() => cluster,
        _ => return Err("the http_service's URI names no cluster".to_owned()),
    };
    let without_scheme = uri.uri.split_once("://").map_or(uri.uri.as_str(), |(_, rest)| rest);
    let path = match without_scheme.find('/') {
        Some(slash) => &without_scheme[slash..],
        None => "/v1/traces",
    };
    if path.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(format!("the http_service's URI {:?} has a bad path", uri.uri));
    }
    let timeout = uri.timeout.as_ref().and_then(crate::runtime::duration).filter(|t| !t.is_zero());
    let headers = http
        .request_headers_to_add
        .iter()
        .filter_map(|h| h.header.as_ref())
        .filter(|h| !h.key.is_empty())
        .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
        .collect();
    Ok(ExportSpec {
        collector: Collector::Cluster(cluster.clone()),
        service_name,
        timeout,
        headers,
        http_path: Some(path.to_owned()),
    })
}

fn grpc_export(grpc: &GrpcService, service_name: String) -> Result<ExportSpec, String> {
    let collector = match &grpc.target_specifier {
        Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) if !e.cluster_name.is_empty() => {
            Collector::Cluster(e.cluster_name.clone())
        }
        Some(grpc_service::TargetSpecifier::GoogleGrpc(g)) if !g.target_uri.is_empty() => {
            Collector::Target(g.target_uri.clone())
        }
        _ => return Err("the grpc_service names no cluster and no target".to_owned()),
    };
    let timeout = grpc
        .timeout
        .as_ref()
        .and_then(crate::runtime::duration)
        .filter(|timeout| !timeout.is_zero());
    let headers = grpc
        .initial_metadata
        .iter()
        .filter(|h| !h.key.is_empty())
        .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
        .collect();
    Ok(ExportSpec { collector, service_name, timeout, headers, http_path: None })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::HeaderValue;
    use envoy_types::pb::envoy::r#type::tracing::v3::CustomTag as EnvoyTag;
    use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};

    use super::*;

    /// The HCM `tracing` the pilot writes for a sidecar (istiod's shape).
    fn istio_tracing() -> Tracing {
        let otel = OpenTelemetryConfig {
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: "outbound|4317||otel-collector.mesh-system.svc.cluster.local"
                            .to_owned(),
                        authority: "otel-collector.mesh-system.svc.cluster.local".to_owned(),
                        ..Default::default()
                    },
                )),
                timeout: Some(envoy_types::pb::google::protobuf::Duration { seconds: 2, nanos: 0 }),
                initial_metadata: vec![HeaderValue {
                    key: "X-Tenant".to_owned(),
                    value: "a".to_owned(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            service_name: "reviews.default".to_owned(),
            ..Default::default()
        };
        let literal = |tag: &str, value: &str| EnvoyTag {
            tag: tag.to_owned(),
            r#type: Some(custom_tag::Type::Literal(custom_tag::Literal {
                value: value.to_owned(),
            })),
        };
        Tracing {
            client_sampling: Some(Percent { value: 100.0 }),
            random_sampling: Some(Percent { value: 1.5 }),
            overall_sampling: Some(Percent { value: 100.0 }),
            provider: Some(tracer::Http {
                name: OPENTELEMETRY_TRACER.to_owned(),
                config_type: Some(tracer::http::ConfigType::TypedConfig(Any {
                    type_url: "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
                        .to_owned(),
                    value: otel.encode_to_vec(),
                })),
            }),
            custom_tags: vec![
                literal("istio.canonical_service", "reviews"),
                EnvoyTag {
                    tag: "cluster".to_owned(),
                    r#type: Some(custom_tag::Type::Environment(custom_tag::Environment {
                        name: "CLUSTER_ID".to_owned(),
                        default_value: "unknown".to_owned(),
                    })),
                },
                EnvoyTag {
                    tag: "region".to_owned(),
                    r#type: Some(custom_tag::Type::Environment(custom_tag::Environment {
                        name: "REGION".to_owned(),
                        default_value: "eu".to_owned(),
                    })),
                },
                EnvoyTag {
                    tag: "user".to_owned(),
                    r#type: Some(custom_tag::Type::RequestHeader(custom_tag::Header {
                        name: "X-User".to_owned(),
                        default_value: String::new(),
                    })),
                },
            ],
            max_path_tag_length: Some(UInt32Value { value: 64 }),
            ..Default::default()
        }
    }

    #[test]
    fn istios_tracing_compiles_to_its_collector_sampling_and_tags() {
        let env = |name: &str| (name == "CLUSTER_ID").then(|| "Kubernetes".to_owned());
        let config = TraceConfig::compile(&istio_tracing(), env);
        assert_eq!(
            *config.export,
            ExportSpec {
                collector: Collector::Cluster(
                    "outbound|4317||otel-collector.mesh-system.svc.cluster.local".to_owned()
                ),
                service_name: "reviews.default".to_owned(),
                timeout: Some(Duration::from_secs(2)),
                headers: vec![("x-tenant".to_owned(), "a".to_owned())],
                http_path: None,
            }
        );
        assert_eq!(
            (config.client_sampling, config.random_sampling, config.overall_sampling),
            (100.0, 1.5, 100.0)
        );
        assert_eq!(config.max_path_tag_length, 64);
        assert_eq!(
            config.custom_tags,
            vec![
                CustomTag {
                    name: "istio.canonical_service".to_owned(),
                    value: TagValue::Literal("reviews".to_owned())
                },
                CustomTag {
                    name: "cluster".to_owned(),
                    value: TagValue::Literal("Kubernetes".to_owned())
                },
                CustomTag { name: "region".to_owned(), value: TagValue::Literal("eu".to_owned()) },
                CustomTag {
                    name: "user".to_owned(),
                    value: TagValue::Header {
                        name: HeaderName::from_static("x-user"),
                        default: None
                    }
                },
            ]
        );
        assert!(!config.spawn_upstream_span);
        assert_eq!(config.operation, None);
    }

    #[test]
    fn envoys_defaults_apply_to_what_is_not_set() {
        let config = TraceConfig::compile(&Tracing::default(), |_| None);
        assert_eq!(config.export.collector, Collector::Environment, "no provider");
        assert_eq!(
            (config.client_sampling, config.random_sampling, config.overall_sampling),
            (100.0, 100.0, 100.0),
            "Envoy samples everything unless told otherwise"
        );
        assert_eq!(config.max_path_tag_length, DEFAULT_MAX_PATH_TAG_LENGTH);
        let odd = Tracing {
            random_sampling: Some(Percent { value: f64::NAN }),
            overall_sampling: Some(Percent { value: 250.0 }),
            spawn_upstream_span: Some(BoolValue { value: true }),
            operation: "checkout".to_owned(),
            upstream_operation: "%REQ(:PATH)%".to_owned(),
            ..Default::default()
        };
        let config = TraceConfig::compile(&odd, |_| None);
        assert_eq!((config.random_sampling, config.overall_sampling), (0.0, 100.0));
        assert!(config.spawn_upstream_span);
        assert_eq!(config.operation.as_deref(), Some("checkout"));
        assert_eq!(config.upstream_operation, None, "command operators are not evaluated");
    }

    #[test]
    fn providers_the_proxy_cannot_export_to_are_named() {
        let mut zipkin = istio_tracing();
        zipkin.provider.as_mut().unwrap().name = "envoy.tracers.zipkin".to_owned();
        let config = TraceConfig::compile(&zipkin, |_| None);
        assert!(
            matches!(&config.export.collector, Collector::Unsupported(why) if why.contains("envoy.tracers.zipkin")),
            "{:?}",
            config.export
        );

        let http =
            OpenTelemetryConfig { http_service: Some(Default::default()), ..Default::default() };
        let config = TraceConfig::compile(&with_otel(&http), |_| None);
        assert!(
            matches!(&config.export.collector, Collector::Unsupported(why) if why.contains("no http_uri")),
            "{:?}",
            config.export
        );
        assert_eq!(config.random_sampling, 1.5, "sampling still applies to the headers");
    }

    /// Istio's tracing with `otel` as its OpenTelemetry tracer's config.
    fn with_otel(otel: &OpenTelemetryConfig) -> Tracing {
        let mut tracing = istio_tracing();
        tracing.provider.as_mut().unwrap().config_type =
            Some(tracer::http::ConfigType::TypedConfig(Any {
                type_url: String::new(),
                value: otel.encode_to_vec(),
            }));
        tracing
    }

    #[test]
    fn an_http_service_exports_otlp_over_http_to_its_cluster_and_path() {
        use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, HttpUri};
        // As the pilot writes Istio's `opentelemetry.http` provider.
        let http = OpenTelemetryConfig {
            http_service: Some(HttpService {
                http_uri: Some(HttpUri {
                    uri: "otel-collector.observability.svc.cluster.local/v1/traces".to_owned(),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                        "outbound|4318||otel-collector.observability.svc.cluster.local".to_owned(),
                    )),
                    timeout: Some(envoy_types::pb::google::protobuf::Duration {
                        seconds: 3,
                        nanos: 0,
                    }),
                }),
                request_headers_to_add: vec![HeaderValueOption {
                    header: Some(HeaderValue {
                        key: "X-Token".to_owned(),
                        value: "t".to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            service_name: "reviews.default".to_owned(),
            ..Default::default()
        };
        let config = TraceConfig::compile(&with_otel(&http), |_| None);
        assert_eq!(
            *config.export,
            ExportSpec {
                collector: Collector::Cluster(
                    "outbound|4318||otel-collector.observability.svc.cluster.local".to_owned()
                ),
                service_name: "reviews.default".to_owned(),
                timeout: Some(Duration::from_secs(3)),
                headers: vec![("x-token".to_owned(), "t".to_owned())],
                http_path: Some("/v1/traces".to_owned()),
            }
        );
    }

    #[test]
    fn a_google_grpc_target_is_dialled_directly() {
        let grpc = GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::GoogleGrpc(
                grpc_service::GoogleGrpc {
                    target_uri: "127.0.0.1:4317".to_owned(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let spec = grpc_export(&grpc, String::new()).unwrap();
        assert_eq!(spec.collector, Collector::Target("127.0.0.1:4317".to_owned()));
        assert!(grpc_export(&GrpcService::default(), String::new()).is_err());
    }
}
