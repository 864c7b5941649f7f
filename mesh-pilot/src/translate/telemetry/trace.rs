//! The HCM's `tracing`, as istiod's `configureTracingFromTelemetry` writes it: the
//! OpenTelemetry tracer with the collector's outbound cluster, sampling, custom tags.

use envoy_types::pb::envoy::config::core::v3::{
    GrpcService, HeaderValue, HeaderValueOption, HttpService, HttpUri, grpc_service, header_value_option,
    http_uri,
};
use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, tracing};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing as HcmTracing;
use envoy_types::pb::envoy::r#type::tracing::v3::{CustomTag, custom_tag};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use mesh_api::mesh::{ExtensionProvider, MeshConfig, OpenTelemetryTracingProvider};
use mesh_api::telemetry::CustomTag as TagSpec;
use mesh_api::xds::ClusterName;
use std::collections::BTreeMap;

use super::Class;
use crate::model::{Proxy, Snapshot};
use crate::translate::any;

/// Envoy's name of the OpenTelemetry tracer.
pub const OPENTELEMETRY_TRACER: &str = "envoy.tracers.opentelemetry";

/// How long an OTLP/HTTP export may take when the provider does not say (Istio's documented
/// default; Envoy requires one).
const HTTP_EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The HCM's `tracing` for `proxy`'s HCMs of `class`, or none.
pub fn envoy_tracing(snapshot: &Snapshot, proxy: &Proxy, class: Class) -> Option<HcmTracing> {
    let mesh = snapshot.mesh_config.as_ref();
    let Some(config) = super::tracing(snapshot, proxy) else {
        // Neither Telemetry nor a default provider: Istio's older switch, without a provider.
        if !mesh.enable_tracing {
            return None;
        }
        let mut tracing = HcmTracing::default();
        sampling(&mut tracing, mesh.trace_sampling());
        tracing.custom_tags = custom_tags(None, mesh, proxy);
        tracing.max_path_tag_length = proxy_max_path_tag_length(mesh);
        return Some(tracing);
    };
    let spec = match class {
        Class::SidecarInbound => config.server,
        Class::SidecarOutbound | Class::Gateway => config.client,
    };
    if spec.disabled {
        return None;
    }
    // A provider the mesh cannot use (not OpenTelemetry, or a collector not in the registry):
    // no tracing, as istiod leaves it out when it cannot configure the provider.
    let mut tracing = from_provider(snapshot, proxy, spec.provider.as_deref()?)?;
    sampling(
        &mut tracing,
        spec.random_sampling_percentage.unwrap_or_else(|| mesh.trace_sampling()),
    );
    tracing.custom_tags = custom_tags(spec.custom_tags, mesh, proxy);
    if tracing.max_path_tag_length.is_none() {
        tracing.max_path_tag_length = proxy_max_path_tag_length(mesh);
    }
    Some(tracing)
}

fn proxy_max_path_tag_length(mesh: &MeshConfig) -> Option<UInt32Value> {
    let length = mesh.default_config.tracing.as_ref().map_or(0, |t| t.max_path_tag_length);
    (length != 0).then_some(UInt32Value { value: length })
}

/// Istio's sampling: every client-forced and overall decision kept, `random` of the rest.
fn sampling(tracing: &mut HcmTracing, random: f64) {
    tracing.client_sampling = Some(Percent { value: 100.0 });
    tracing.overall_sampling = Some(Percent { value: 100.0 });
    tracing.random_sampling = Some(Percent { value: random });
}

/// The service name spans are reported under: the proxy's, as Istio's default node cluster
/// names it (`<app>.<namespace>`, else the canonical name, else `istio-proxy`).
pub fn service_name(proxy: &Proxy) -> String {
    let app = ["app", "service.istio.io/canonical-name"].iter().find_map(|k| proxy.labels.get(*k));
    match app {
        Some(app) => format!("{app}.{}", proxy.namespace),
        None => "istio-proxy".to_owned(),
    }
}

/// The host name and outbound cluster of a provider's service (Istio's `LookupCluster`):
/// `[<namespace>/]<hostname>` of a service the proxy sees, `<name>.<namespace>` taken for
/// `<name>.<namespace>.svc.<domain>`; only a port the service has (its cluster exists).
pub fn lookup_cluster(snapshot: &Snapshot, service: &str, port: u32) -> Option<(String, String)> {
    let port = u16::try_from(port).ok()?;
    let (namespace, host) = match service.split_once('/') {
        Some((namespace, host)) => (Some(namespace), host),
        None => (None, service),
    };
    let find = |host: &str| {
        snapshot.services.get(host).filter(|s| namespace.is_none_or(|ns| ns == s.namespace))
    };
    let found = find(host).or_else(|| find(&format!("{host}.svc.{}", snapshot.domain)))?;
    found.port(port)?;
    Some((found.hostname.clone(), ClusterName::outbound(port, None, &found.hostname).to_string()))
}

/// The tracer of a provider: OpenTelemetry only (other kinds are read, not implemented).
fn from_provider(
    snapshot: &Snapshot,
    proxy: &Proxy,
    provider: &ExtensionProvider,
) -> Option<HcmTracing> {
    let otel = provider.opentelemetry.as_ref()?;
    let config = opentelemetry(snapshot, proxy, otel)?;
    Some(HcmTracing {
        provider: Some(tracing::Http {
            name: OPENTELEMETRY_TRACER.to_owned(),
            config_type: Some(tracing::http::ConfigType::TypedConfig(any(config))),
        }),
        // Gateways start a child span for the upstream call (istiod's default for them).
        spawn_upstream_span: proxy.router.then_some(BoolValue { value: true }),
        max_path_tag_length: (otel.max_tag_length != 0)
            .then_some(UInt32Value { value: otel.max_tag_length }),
        ..HcmTracing::default()
    })
}

fn opentelemetry(
    snapshot: &Snapshot,
    proxy: &Proxy,
    otel: &OpenTelemetryTracingProvider,
) -> Option<OpenTelemetryConfig> {
    let (hostname, cluster) = lookup_cluster(snapshot, &otel.service, otel.port)?;
    let mut config =
        OpenTelemetryConfig { service_name: service_name(proxy), ..Default::default() };
    match &otel.http {
        Some(http) => {
            let timeout =
                http.timeout.as_ref().and_then(|t| t.parse().ok()).unwrap_or(HTTP_EXPORT_TIMEOUT);
            config.http_service = Some(HttpService {
                http_uri: Some(HttpUri {
                    // Istio joins the host and the path without a scheme.
                    uri: format!("{hostname}/{}", http.path.trim_start_matches('/')),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster)),
                    timeout: Some(crate::translate::duration(timeout)),
                }),
                request_headers_to_add: http
                    .headers
                    .iter()
                    .map(|h| HeaderValueOption {
                        header: Some(HeaderValue {
                            key: h.name.clone(),
                            value: h.value.clone(),
                            ..Default::default()
                        }),
                        append_action:
                            header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                        ..Default::default()
                    })
                    .collect(),
                ..HttpService::default()
            });
        }
        None => {
            config.grpc_service = Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: cluster,
                        authority: hostname,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            });
        }
    }
    Some(config)
}

/// Istio's tags of every span (canonical service and revision, mesh, namespace), then the
/// Telemetry's custom tags, or the mesh config's where the Telemetry sets none; by tag name.
fn custom_tags(
    telemetry: Option<&BTreeMap<String, TagSpec>>,
    mesh: &MeshConfig,
    proxy: &Proxy,
) -> Vec<CustomTag> {
    let label = |key: &str, default: &str| {
        proxy.labels.get(key).cloned().unwrap_or_else(|| default.to_owned())
    };
    let literal = |tag: &str, value: String| CustomTag {
        tag: tag.to_owned(),
        r#type: Some(custom_tag::Type::Literal(custom_tag::Literal { value })),
    };
    let namespace =
        if proxy.namespace.is_empty() { "default".to_owned() } else { proxy.namespace.clone() };
    let mut tags = vec![
        literal("istio.canonical_revision", label("service.istio.io/canonical-revision", "latest")),
        literal("istio.canonical_service", label("service.istio.io/canonical-name", "unknown")),
        literal("istio.mesh_id", mesh.mesh_id().to_owned()),
        literal("istio.namespace", namespace),
    ];
    let configured = match telemetry {
        Some(tags) if !tags.is_empty() => Some(tags),
        _ => mesh.default_config.tracing.as_ref().map(|t| &t.custom_tags),
    };
    for (name, spec) in configured.into_iter().flatten() {
        let r#type = if let Some(literal) = &spec.literal {
            custom_tag::Type::Literal(custom_tag::Literal { value: literal.value.clone() })
        } else if let Some(env) = &spec.environment {
            custom_tag::Type::Environment(custom_tag::Environment {
                name: env.name.clone(),
                default_value: env.default_value.clone(),
            })
        } else if let Some(header) = &spec.header {
            custom_tag::Type::RequestHeader(custom_tag::Header {
                name: header.name.clone(),
                default_value: header.default_value.clone(),
            })
        } else {
            continue;
        };
        tags.push(CustomTag { tag: name.clone(), r#type: Some(r#type) });
    }
    tags.sort_by(|a, b| a.tag.cmp(&b.tag));
    tags
}
