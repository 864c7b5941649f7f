//! The HCM `tracing` as the pilot writes it for Istio's `opentelemetry` provider, written by
//! hand for the tracing tests (so they do not lean on the pilot's own translation).

use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, tracing as tracer};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::Any;
use prost::Message as _;

/// Envoy's OpenTelemetry tracer configured by `otel`, sampling `percentage` of requests at
/// random (client and overall sampling at 100 %, as Istio writes them).
pub fn tracing_to(otel: &OpenTelemetryConfig, percentage: f64) -> Tracing {
    Tracing {
        client_sampling: Some(Percent { value: 100.0 }),
        random_sampling: Some(Percent { value: percentage }),
        overall_sampling: Some(Percent { value: 100.0 }),
        provider: Some(tracer::Http {
            name: "envoy.tracers.opentelemetry".into(),
            config_type: Some(tracer::http::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig".into(),
                value: otel.encode_to_vec(),
            })),
        }),
        ..Default::default()
    }
}
