//! MeshConfig: the settings that hold for the whole mesh (trust domain, timeouts, tracing,
//! outbound policy), with Istio's field names where Istio has the same setting.
//!
//! Every field has a default, so an empty file is a valid config; unknown fields are refused.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::networking::{HttpRetry, OutboundTrafficMode};
use crate::validate::{Checker, Code, Path, ValidationError};
use crate::{Duration, ObjectRef, identity, ports};

/// Mesh-wide settings, read from the mesh config file (Istio's `MeshConfig` where the two share a
/// setting); every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    /// Trust domain of every SPIFFE identity (`cluster.local`).
    pub trust_domain: String,
    /// Namespace whose policies apply to the whole mesh (`mesh-system`).
    pub root_namespace: String,
    /// Identifier of the mesh, sent as node metadata (`MESH_ID`); the trust domain when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mesh_id: String,
    /// What happens to traffic for destinations outside the registry.
    pub outbound_traffic_policy: MeshOutboundTrafficPolicy,
    /// TCP connect timeout towards upstreams (10s by default).
    pub connect_timeout: Duration,
    /// How long the proxy waits for the first bytes of a connection before treating it as
    /// opaque TCP (0s, Istio's default: as long as the client takes).
    pub protocol_detection_timeout: Duration,
    /// Retry policy of routes that set none.
    pub default_http_retry_policy: HttpRetry,
    /// Where proxies write access logs (`/dev/stdout`); empty turns them off.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub access_log_file: String,
    /// Format of access log lines: `TEXT` (the default) or `JSON`.
    pub access_log_encoding: AccessLogEncoding,
    /// Where spans are sent and what share of requests is sampled.
    pub tracing: Tracing,
    /// Settings every proxy starts with (Istio's `defaultConfig`): where the pilot and the CA are,
    /// drain times, worker threads.
    pub default_config: ProxyConfig,
    /// Lifetime of workload certificates (rotated at half of it).
    pub workload_cert_ttl: Duration,
}

string_enum! {
    /// Access log formats.
    pub enum AccessLogEncoding {
        /// Istio's default text format.
        Text = "TEXT",
        /// One JSON object per line.
        Json = "JSON",
    }
}

/// The mesh-wide outbound traffic policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MeshOutboundTrafficPolicy {
    /// `ALLOW_ANY` (default) or `REGISTRY_ONLY`.
    pub mode: OutboundTrafficMode,
}

impl Default for MeshOutboundTrafficPolicy {
    fn default() -> Self {
        Self { mode: OutboundTrafficMode::AllowAny }
    }
}

/// Tracing over OpenTelemetry (OTLP/gRPC).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// OTLP/gRPC collector (`otel-collector.observability:4317`); no spans are sent without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Share of requests sampled when the caller made no decision (Istio's default is 1%).
    pub sampling_percentage: f64,
}

impl Default for Tracing {
    fn default() -> Self {
        Self { otlp_endpoint: None, sampling_percentage: 1.0 }
    }
}

/// Defaults for every proxy of the mesh.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// `host:port` of the pilot's xDS server (`mesh-pilot.mesh-system.svc:15012` by default).
    pub discovery_address: String,
    /// `host:port` of the CA's gRPC server (`mesh-ca.mesh-system.svc:8060` by default).
    pub ca_address: String,
    /// How long a draining proxy keeps serving connections it already has (45s by default).
    pub drain_duration: Duration,
    /// How long a terminating proxy waits before it stops (5s by default).
    pub termination_drain_duration: Duration,
    /// Worker threads of the proxy's data path (1 by default; at least 1).
    pub concurrency: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let ns = ports::CONTROL_PLANE_NAMESPACE;
        Self {
            discovery_address: format!("mesh-pilot.{ns}.svc:{}", ports::PILOT_XDS_TLS),
            ca_address: format!("mesh-ca.{ns}.svc:{}", ports::CA_GRPC),
            drain_duration: Duration::new("45s"),
            termination_drain_duration: Duration::new("5s"),
            concurrency: 1,
        }
    }
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            trust_domain: identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            root_namespace: ports::CONTROL_PLANE_NAMESPACE.to_owned(),
            mesh_id: String::new(),
            outbound_traffic_policy: MeshOutboundTrafficPolicy::default(),
            connect_timeout: Duration::new("10s"),
            protocol_detection_timeout: Duration::new("0s"),
            default_http_retry_policy: HttpRetry {
                attempts: Some(2),
                retry_on: Some(
                    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                        .to_owned(),
                ),
                ..HttpRetry::default()
            },
            access_log_file: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            tracing: Tracing::default(),
            default_config: ProxyConfig::default(),
            workload_cert_ttl: Duration::new("24h"),
        }
    }
}

/// Why a MeshConfig could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MeshConfigError {
    /// The file could not be read.
    #[error("cannot read mesh config {path}: {source}")]
    Io {
        /// Path of the mesh config file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML does not fit the MeshConfig schema.
    #[error("{0}")]
    Parse(Box<crate::load::LoadError>),
    /// The values break a rule.
    #[error("mesh config {source_name} is invalid:\n{}", .errors.iter().map(|e| format!("  {}: {}", e.path, e.reason)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Where the config came from.
        source_name: String,
        /// Every problem found.
        errors: Vec<ValidationError>,
    },
}

impl MeshConfig {
    /// Reads a MeshConfig from YAML (or JSON) text and validates it. `source_name` is used in
    /// error messages (a file name).
    pub fn from_yaml(source_name: &str, text: &str) -> Result<Self, MeshConfigError> {
        let config: MeshConfig = if text.trim().is_empty() {
            MeshConfig::default()
        } else {
            crate::load::parse_single(source_name, text).map_err(MeshConfigError::Parse)?
        };
        let errors = config.validate();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(MeshConfigError::Invalid { source_name: source_name.to_owned(), errors })
        }
    }

    /// Reads and validates a MeshConfig file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, MeshConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| MeshConfigError::Io { path: path.display().to_string(), source })?;
        Self::from_yaml(&path.display().to_string(), &text)
    }

    /// Every rule the config breaks.
    pub fn validate(&self) -> Vec<ValidationError> {
        let mut c = Checker::new(ObjectRef::new("MeshConfig", None, ""));
        let root = Path::root("meshConfig");
        if let Err(err) = identity::validate_trust_domain(&self.trust_domain) {
            c.error(&root.field("trustDomain"), Code::InvalidName, err.to_string());
        }
        c.namespace(&root.field("rootNamespace"), &self.root_namespace);
        let mode = &self.outbound_traffic_policy.mode;
        c.known(&root.field("outboundTrafficPolicy").field("mode"), mode);
        c.duration(&root.field("connectTimeout"), &self.connect_timeout, false);
        c.duration(&root.field("protocolDetectionTimeout"), &self.protocol_detection_timeout, true);
        let retry = &self.default_http_retry_policy;
        crate::validate::http_retry(&mut c, &root.field("defaultHttpRetryPolicy"), retry);
        let enc = &self.access_log_encoding;
        c.known(&root.field("accessLogEncoding"), enc);
        let sampling = self.tracing.sampling_percentage;
        c.percentage(&root.field("tracing").field("samplingPercentage"), sampling);
        if let Some(endpoint) = &self.tracing.otlp_endpoint {
            host_and_port(&mut c, &root.field("tracing").field("otlpEndpoint"), endpoint);
        }
        let proxy = root.field("defaultConfig");
        for (field, address) in [
            ("discoveryAddress", &self.default_config.discovery_address),
            ("caAddress", &self.default_config.ca_address),
        ] {
            host_and_port(&mut c, &proxy.field(field), address);
        }
        c.duration(&proxy.field("drainDuration"), &self.default_config.drain_duration, true);
        c.duration(
            &proxy.field("terminationDrainDuration"),
            &self.default_config.termination_drain_duration,
            true,
        );
        if self.default_config.concurrency == 0 {
            c.error(
                &proxy.field("concurrency"),
                Code::NumberTooSmall,
                "concurrency must be at least 1",
            );
        }
        c.duration(&root.field("workloadCertTtl"), &self.workload_cert_ttl, false);
        c.finish()
    }

    /// The mesh id, which defaults to the trust domain.
    pub fn mesh_id(&self) -> &str {
        if self.mesh_id.is_empty() { &self.trust_domain } else { &self.mesh_id }
    }
}

/// An address to dial: `host:port`, the port 1 to 65535.
fn host_and_port(c: &mut Checker, path: &Path, address: &str) {
    let ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok {
        c.error(path, Code::InvalidAddress, format!("{address:?} must be host:port"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config = MeshConfig::from_yaml("mesh.yaml", "").unwrap();
        assert_eq!(config, MeshConfig::default());
        assert_eq!(config.trust_domain, "cluster.local");
        assert_eq!(config.mesh_id(), "cluster.local");
        assert_eq!(config.outbound_traffic_policy.mode, OutboundTrafficMode::AllowAny);
        assert_eq!(config.default_config.discovery_address, "mesh-pilot.mesh-system.svc:15012");
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let text = "trustDomain: example.org\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY\ntracing:\n  otlpEndpoint: collector:4317\n";
        let config = MeshConfig::from_yaml("mesh.yaml", text).unwrap();
        assert_eq!(config.trust_domain, "example.org");
        assert_eq!(config.outbound_traffic_policy.mode, OutboundTrafficMode::RegistryOnly);
        assert_eq!(config.tracing.otlp_endpoint.as_deref(), Some("collector:4317"));
        assert_eq!(config.connect_timeout.as_str(), "10s");
    }

    #[test]
    fn reports_every_bad_value() {
        let text = "trustDomain: Bad!\nconnectTimeout: 10\naccessLogEncoding: XML\n";
        let err = MeshConfig::from_yaml("mesh.yaml", text).unwrap_err();
        let MeshConfigError::Invalid { errors, .. } = err else { panic!("{err}") };
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["meshConfig.trustDomain", "meshConfig.connectTimeout", "meshConfig.accessLogEncoding"]
        );
        assert_eq!(errors[2].reason, "unknown value \"XML\": must be one of TEXT, JSON");
    }

    #[test]
    fn unknown_fields_name_file_and_line() {
        let err =
            MeshConfig::from_yaml("mesh.yaml", "trustDomain: a.b\ntrustDomian: c\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("mesh.yaml:2:"), "{text}");
        assert!(text.contains("trustDomian"), "{text}");
    }
}
