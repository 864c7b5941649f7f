//! MeshConfig: the settings that hold for the whole mesh (trust domain, timeouts, tracing,
//! outbound policy), with Istio's field names where Istio has the same setting.
//!
//! Every field has a default, so an empty file is a valid config; unknown fields are refused.
//! Telemetry's providers are Istio's `extensionProviders` (with Istio's built-in `envoy` file
//! access log and `prometheus`) and `defaultProviders`; the mesh's own older `tracing`
//! (`otlpEndpoint`, `samplingPercentage`) still works, as an implicit OpenTelemetry provider
//! ([`IMPLICIT_TRACING_PROVIDER`]) and the mesh-wide sampling default.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::networking::{HttpRetry, OutboundTrafficMode};
use crate::telemetry::CustomTag;
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
    /// Where spans are sent and what share of requests is sampled (the mesh's own setting, older
    /// than `extensionProviders`: an endpoint makes the default tracing provider when
    /// `defaultProviders.tracing` names none, and the percentage is the mesh-wide default).
    pub tracing: Tracing,
    /// Istio's switch for tracing where neither a Telemetry nor a default provider says how:
    /// spans are sampled and propagated but, without a provider, reported nowhere. Off by
    /// default (Istio's default is on, with a tracer in its bootstrap the mesh does not have).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub enable_tracing: bool,
    /// Providers that Telemetry (and AuthorizationPolicy CUSTOM) name: OpenTelemetry collectors,
    /// file access logs. `envoy` (a file access log to `/dev/stdout`) and `prometheus` exist
    /// without being declared, as in Istio; a declared provider of the same name replaces them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extension_providers: Vec<ExtensionProvider>,
    /// The providers used where a Telemetry names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_providers: Option<DefaultProviders>,
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

/// The name of the OpenTelemetry provider that `tracing.otlpEndpoint` makes (a declared
/// provider of this name replaces it).
pub const IMPLICIT_TRACING_PROVIDER: &str = "mesh-otlp";

/// The built-in access log provider: Envoy's file logger to `/dev/stdout`.
pub const ENVOY_ACCESS_LOG_PROVIDER: &str = "envoy";

/// An extension provider (Istio's `MeshConfig.ExtensionProvider`): a name and exactly one kind.
/// The mesh implements `opentelemetry` (tracing) and `envoyFileAccessLog` (access logs); the
/// other kinds are read so that an Istio mesh config loads, and do nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// The name Telemetry and `defaultProviders` use (compared without regard to case).
    pub name: String,
    /// An OpenTelemetry collector that receives spans over OTLP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<OpenTelemetryTracingProvider>,
    /// Envoy's file access logger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_file_access_log: Option<EnvoyFileAccessLogProvider>,
    /// Prometheus metrics (what the proxies export anyway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<serde_json::Value>,
    /// Read, not implemented: an ext_authz HTTP service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<serde_json::Value>,
    /// Read, not implemented: an ext_authz gRPC service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_grpc: Option<serde_json::Value>,
    /// Read, not implemented: a Zipkin tracer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<serde_json::Value>,
    /// Read, not implemented: a Lightstep tracer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lightstep: Option<serde_json::Value>,
    /// Read, not implemented: a Datadog tracer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datadog: Option<serde_json::Value>,
    /// Read, not implemented: Stackdriver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stackdriver: Option<serde_json::Value>,
    /// Read, not implemented: an OpenCensus agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opencensus: Option<serde_json::Value>,
    /// Read, not implemented: a SkyWalking tracer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skywalking: Option<serde_json::Value>,
    /// Read, not implemented: Envoy's HTTP gRPC access log service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_http_als: Option<serde_json::Value>,
    /// Read, not implemented: Envoy's TCP gRPC access log service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_tcp_als: Option<serde_json::Value>,
    /// Read, not implemented: Envoy's OpenTelemetry access log service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_otel_als: Option<serde_json::Value>,
    /// Read, not implemented: an SDS server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sds: Option<serde_json::Value>,
}

impl ExtensionProvider {
    /// How many provider kinds it sets (exactly one is valid).
    fn kinds(&self) -> usize {
        let opaque = [
            &self.prometheus,
            &self.envoy_ext_authz_http,
            &self.envoy_ext_authz_grpc,
            &self.zipkin,
            &self.lightstep,
            &self.datadog,
            &self.stackdriver,
            &self.opencensus,
            &self.skywalking,
            &self.envoy_http_als,
            &self.envoy_tcp_als,
            &self.envoy_otel_als,
            &self.sds,
        ];
        usize::from(self.opentelemetry.is_some())
            + usize::from(self.envoy_file_access_log.is_some())
            + opaque.iter().filter(|o| o.is_some()).count()
    }
}

/// An OpenTelemetry collector (Istio's `OpenTelemetryTracingProvider`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenTelemetryTracingProvider {
    /// The collector's service: `[<namespace>/]<hostname>` of a Service or ServiceEntry
    /// (`otel-collector.observability.svc.cluster.local`; `name.namespace` is taken too).
    pub service: String,
    /// The port of the service that takes OTLP.
    pub port: u32,
    /// Longest path tag a span carries (0: the proxy's default).
    #[serde(skip_serializing_if = "is_zero")]
    pub max_tag_length: u32,
    /// Export over OTLP/HTTP to this path instead of OTLP/gRPC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpService>,
    /// Read, not implemented: OpenTelemetry resource detectors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_detectors: Option<serde_json::Value>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An HTTP endpoint of a provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpService {
    /// The path on the service (`/v1/traces`).
    pub path: String,
    /// How long a request may take (3s when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Headers added to every request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeader>,
}

/// A header a provider's requests carry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HttpHeader {
    /// The header's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// Envoy's file access logger (Istio's `EnvoyFileAccessLogProvider`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFileAccessLogProvider {
    /// The file (`/dev/stdout` when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// The line format; Istio's default text format (or the mesh's `accessLogEncoding` for
    /// the built-in `envoy` provider) when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// An access log line format: exactly one of `text` and `labels`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogFormat {
    /// A text line with Envoy's command operators (`%RESPONSE_CODE%`); a newline is added
    /// when missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A JSON object per line, its values Envoy's command operators; `{}` is Istio's default
    /// JSON format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, serde_json::Value>>,
}

/// The providers used where a Telemetry names none (Istio's `DefaultProviders`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultProviders {
    /// Tracing providers (only the first is used, as in Istio).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<String>,
    /// Metrics providers (read, not enforced).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// Access logging providers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<String>,
}

/// Tracing settings of every proxy (Istio's `ProxyConfig.tracing`): the sampling percentage and
/// tags used where no Telemetry sets them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyTracing {
    /// Share of requests sampled, 0 to 100 (0: unset, the mesh's `tracing.samplingPercentage`
    /// applies).
    #[serde(skip_serializing_if = "is_unset")]
    pub sampling: f64,
    /// Tags added to every span where no Telemetry sets any, by tag name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Longest path tag a span carries (0: the proxy's default).
    #[serde(skip_serializing_if = "is_zero")]
    pub max_path_tag_length: u32,
    /// Read, not implemented: Istio's bootstrap Zipkin tracer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<serde_json::Value>,
    /// Read, not implemented: Istio's bootstrap Datadog tracer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datadog: Option<serde_json::Value>,
    /// Read, not implemented: Istio's bootstrap Lightstep tracer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lightstep: Option<serde_json::Value>,
    /// Read, not implemented: Istio's bootstrap Stackdriver tracer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stackdriver: Option<serde_json::Value>,
    /// Read, not implemented: Istio's bootstrap OpenCensus agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_census_agent: Option<serde_json::Value>,
    /// Read, not implemented: TLS towards a bootstrap tracer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_settings: Option<serde_json::Value>,
}

fn is_unset(value: &f64) -> bool {
    *value == 0.0
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
    /// Tracing defaults (sampling, tags) where no Telemetry sets them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<ProxyTracing>,
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
            tracing: None,
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
            enable_tracing: false,
            extension_providers: Vec::new(),
            default_providers: None,
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
        if let Some(tracing) = &self.default_config.tracing {
            let path = proxy.field("tracing");
            c.percentage(&path.field("sampling"), tracing.sampling);
            crate::validate::custom_tags(&mut c, &path.field("customTags"), &tracing.custom_tags);
        }
        c.duration(&root.field("workloadCertTtl"), &self.workload_cert_ttl, false);
        self.validate_providers(&mut c, &root);
        c.finish()
    }

    fn validate_providers(&self, c: &mut Checker, root: &Path) {
        let mut names = std::collections::BTreeSet::new();
        for (i, provider) in self.extension_providers.iter().enumerate() {
            let path = root.field("extensionProviders").index(i);
            if provider.name.is_empty() {
                c.required(&path.field("name"), "name");
            } else if !names.insert(provider.name.to_ascii_lowercase()) {
                c.error(
                    &path.field("name"),
                    Code::Duplicate,
                    format!("provider name {:?} is declared more than once", provider.name),
                );
            }
            match provider.kinds() {
                0 => c.error(
                    &path,
                    Code::Required,
                    "a provider needs one kind (opentelemetry, envoyFileAccessLog...)",
                ),
                1 => {}
                _ => c.error(&path, Code::ConflictingFields, "a provider has exactly one kind"),
            }
            if let Some(otel) = &provider.opentelemetry {
                let path = path.field("opentelemetry");
                if otel.service.is_empty() {
                    c.required(&path.field("service"), "service");
                }
                c.port(&path.field("port"), otel.port);
                if let Some(http) = &otel.http {
                    let http_path = path.field("http");
                    if http.path.is_empty() {
                        c.required(&http_path.field("path"), "path");
                    }
                    c.opt_duration(&http_path.field("timeout"), http.timeout.as_ref());
                    for (j, header) in http.headers.iter().enumerate() {
                        c.header_syntax(
                            &http_path.field("headers").index(j).field("name"),
                            &header.name,
                        );
                    }
                }
            }
            if let Some(format) =
                provider.envoy_file_access_log.as_ref().and_then(|f| f.log_format.as_ref())
                && format.text.is_some()
                && format.labels.is_some()
            {
                let path = path.field("envoyFileAccessLog").field("logFormat");
                c.not_both(&path.field("labels"), "text", "labels");
            }
        }
        if let Some(defaults) = &self.default_providers {
            let path = root.field("defaultProviders");
            for (field, list) in
                [("tracing", &defaults.tracing), ("accessLogging", &defaults.access_logging)]
            {
                for (i, name) in list.iter().enumerate() {
                    if self.extension_provider(name).is_none() {
                        c.error(
                            &path.field(field).index(i),
                            Code::UnknownValue,
                            format!("{name:?} names no extension provider"),
                        );
                    }
                }
            }
        }
    }

    /// The extension provider of this name (without regard to case): a declared one, else a
    /// built-in (`envoy`, `prometheus`, and [`IMPLICIT_TRACING_PROVIDER`] when
    /// `tracing.otlpEndpoint` is set).
    pub fn extension_provider(&self, name: &str) -> Option<Cow<'_, ExtensionProvider>> {
        if let Some(found) =
            self.extension_providers.iter().find(|p| p.name.eq_ignore_ascii_case(name))
        {
            return Some(Cow::Borrowed(found));
        }
        let builtin = if name.eq_ignore_ascii_case(ENVOY_ACCESS_LOG_PROVIDER) {
            ExtensionProvider {
                name: ENVOY_ACCESS_LOG_PROVIDER.to_owned(),
                envoy_file_access_log: Some(EnvoyFileAccessLogProvider {
                    path: "/dev/stdout".to_owned(),
                    log_format: None,
                }),
                ..ExtensionProvider::default()
            }
        } else if name.eq_ignore_ascii_case("prometheus") {
            ExtensionProvider {
                name: "prometheus".to_owned(),
                prometheus: Some(serde_json::Value::Object(serde_json::Map::new())),
                ..ExtensionProvider::default()
            }
        } else if name.eq_ignore_ascii_case(IMPLICIT_TRACING_PROVIDER) {
            let (host, port) = self.tracing.otlp_endpoint.as_deref()?.rsplit_once(':')?;
            ExtensionProvider {
                name: IMPLICIT_TRACING_PROVIDER.to_owned(),
                opentelemetry: Some(OpenTelemetryTracingProvider {
                    service: host.to_owned(),
                    port: port.parse().ok()?,
                    ..OpenTelemetryTracingProvider::default()
                }),
                ..ExtensionProvider::default()
            }
        } else {
            return None;
        };
        Some(Cow::Owned(builtin))
    }

    /// The default tracing providers: `defaultProviders.tracing`, else the implicit one of
    /// `tracing.otlpEndpoint` when it is set.
    pub fn default_tracing_providers(&self) -> Vec<String> {
        match &self.default_providers {
            Some(defaults) if !defaults.tracing.is_empty() => defaults.tracing.clone(),
            _ if self.tracing.otlp_endpoint.is_some() => vec![IMPLICIT_TRACING_PROVIDER.to_owned()],
            _ => Vec::new(),
        }
    }

    /// The default access logging providers (`defaultProviders.accessLogging`).
    pub fn default_access_logging_providers(&self) -> &[String] {
        self.default_providers.as_ref().map_or(&[], |d| d.access_logging.as_slice())
    }

    /// The sampling percentage where no Telemetry sets one: `defaultConfig.tracing.sampling`
    /// when set (above 100 read as 1, as Istio does), else `tracing.samplingPercentage`.
    pub fn trace_sampling(&self) -> f64 {
        match self.default_config.tracing.as_ref().map(|t| t.sampling) {
            Some(sampling) if sampling != 0.0 => {
                if sampling > 100.0 {
                    1.0
                } else {
                    sampling
                }
            }
            _ => self.tracing.sampling_percentage,
        }
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
