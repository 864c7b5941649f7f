//! Where spans go and how they are batched: [`ExportSettings`], from what the mesh configured
//! plus the standard `OTEL_*` variables, read from a map (the caller reads the environment once,
//! at its edge; tests pass maps).

use std::collections::BTreeMap;
use std::time::Duration;

/// The endpoint named by the OpenTelemetry specification for every signal.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The endpoint for traces only (wins over the one for every signal).
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// gRPC metadata sent with every export: `key=value` pairs, comma-separated, values
/// percent-encoded.
pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// Like [`OTEL_EXPORTER_OTLP_HEADERS`], for traces only (added after, so it wins on a clash).
pub const OTEL_EXPORTER_OTLP_TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
/// How long one export may take, in milliseconds.
pub const OTEL_EXPORTER_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
/// Like [`OTEL_EXPORTER_OTLP_TIMEOUT`], for traces only (wins).
pub const OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
/// The most spans sent in one export.
pub const OTEL_BSP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";
/// The most spans waiting to be exported; more are dropped and counted.
pub const OTEL_BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
/// The longest a span waits for its batch to fill, in milliseconds.
pub const OTEL_BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
/// The `service.name` of the spans (wins over the one the binary gives).
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// More resource attributes: `key=value` pairs, comma-separated, values percent-encoded.
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// The specification's defaults.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_BATCH: usize = 512;
const DEFAULT_MAX_QUEUE: usize = 2048;
const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_secs(5);
/// No queue larger than this, whatever is asked: it holds finished spans in memory.
const MAX_QUEUE_LIMIT: usize = 1 << 20;

/// How spans travel to the collector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// OTLP over gRPC (the collector's `TraceService`, port 4317 by convention).
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies, POSTed to this path of the endpoint (`/v1/traces`
    /// by convention, port 4318).
    Http {
        /// The path, starting with `/`.
        path: String,
    },
}

/// How and where spans are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSettings {
    /// The collector, `http://host:port`.
    pub endpoint: String,
    /// gRPC or HTTP (the default is gRPC; the `OTEL_*` variables are read for gRPC only).
    pub transport: Transport,
    /// gRPC metadata, or HTTP headers, sent with every export (lowercase keys).
    pub headers: Vec<(String, String)>,
    /// How long one export may take before its spans count as dropped.
    pub timeout: Duration,
    /// The most spans sent in one export (at most `max_queue`).
    pub max_batch: usize,
    /// The most finished spans waiting for export; a full queue drops new ones and counts them.
    pub max_queue: usize,
    /// The longest a span waits for its batch to fill before it is sent anyway.
    pub schedule_delay: Duration,
    /// The `service.name` resource attribute (Istio's `<workload>.<namespace>` for proxies).
    pub service_name: String,
    /// More resource attributes (`k8s.namespace.name`, ...).
    pub resource: Vec<(String, String)>,
}

impl ExportSettings {
    /// Settings with the specification's defaults for everything but the endpoint (normalized as
    /// [`normalize_endpoint`] does) and the service name.
    pub fn new(endpoint: &str, service_name: &str) -> Result<Self, SettingsError> {
        Ok(Self {
            endpoint: normalize_endpoint(endpoint)?,
            transport: Transport::Grpc,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_batch: DEFAULT_MAX_BATCH,
            max_queue: DEFAULT_MAX_QUEUE,
            schedule_delay: DEFAULT_SCHEDULE_DELAY,
            service_name: service_name.to_owned(),
            resource: Vec::new(),
        })
    }

    /// Settings from what the mesh configured (`endpoint`: MeshConfig's provider, a flag) and the
    /// standard variables in `env`. The configured endpoint wins over the variables' (an explicit
    /// setting wins over the environment, as the OpenTelemetry SDKs do); with neither, tracing is
    /// off (`Ok(None)`). Every other setting comes from `env` or the specification's default.
    pub fn from_env(
        endpoint: Option<&str>,
        service_name: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Option<Self>, SettingsError> {
        let var = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let endpoint = endpoint
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .or_else(|| var(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT))
            .or_else(|| var(OTEL_EXPORTER_OTLP_ENDPOINT));
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        let mut settings = Self::new(endpoint, service_name)?;
        for name in [OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TRACES_HEADERS] {
            if let Some(text) = var(name) {
                for (key, value) in key_values(name, text)? {
                    let key = key.to_ascii_lowercase();
                    settings.headers.retain(|(k, _)| *k != key);
                    settings.headers.push((key, value));
                }
            }
        }
        // The traces' own variable is read last, so it wins.
        for name in [OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT] {
            if let Some(text) = var(name) {
                settings.timeout = Duration::from_millis(number(name, text)?);
            }
        }
        if let Some(text) = var(OTEL_BSP_SCHEDULE_DELAY) {
            settings.schedule_delay = Duration::from_millis(number(OTEL_BSP_SCHEDULE_DELAY, text)?);
        }
        if let Some(text) = var(OTEL_BSP_MAX_QUEUE_SIZE) {
            settings.max_queue = size(OTEL_BSP_MAX_QUEUE_SIZE, text)?;
        }
        if let Some(text) = var(OTEL_BSP_MAX_EXPORT_BATCH_SIZE) {
            settings.max_batch = size(OTEL_BSP_MAX_EXPORT_BATCH_SIZE, text)?;
        }
        if let Some(name) = var(OTEL_SERVICE_NAME) {
            name.clone_into(&mut settings.service_name);
        }
        if let Some(text) = var(OTEL_RESOURCE_ATTRIBUTES) {
            settings.resource = key_values(OTEL_RESOURCE_ATTRIBUTES, text)?;
        }
        Ok(Some(settings.bounded()))
    }

    /// The settings with the queue within its limit and a batch no larger than the queue, as
    /// the specification says.
    pub fn bounded(mut self) -> Self {
        self.max_queue = self.max_queue.clamp(1, MAX_QUEUE_LIMIT);
        self.max_batch = self.max_batch.clamp(1, self.max_queue);
        self
    }
}

/// Why export settings are refused; each names the setting and what was given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// The endpoint is not `host:port` or `http://host:port`.
    #[error("bad OTLP endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// What was given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A variable does not hold what it should.
    #[error("bad {variable}={value:?}: {reason}")]
    Variable {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What it should hold.
        reason: &'static str,
    },
}

/// An endpoint as gRPC dials it: `host:port` becomes `http://host:port`; `http://` is kept;
/// `https://` is refused (the exporter has no TLS client: collectors are reached in plaintext
/// inside the cluster, as Istio's default providers are).
pub fn normalize_endpoint(endpoint: &str) -> Result<String, SettingsError> {
    let bad = |reason| SettingsError::Endpoint { endpoint: endpoint.to_owned(), reason };
    let endpoint = endpoint.trim();
    if endpoint.starts_with("https://") {
        return Err(bad("TLS to the collector is not supported: use http://"));
    }
    let url = if endpoint.starts_with("http://") {
        endpoint.to_owned()
    } else if endpoint.contains("://") {
        return Err(bad("the scheme must be http://"));
    } else {
        format!("http://{endpoint}")
    };
    let authority = url["http://".len()..].trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains(char::is_whitespace) {
        return Err(bad("expected host:port"));
    }
    match http::uri::Authority::try_from(authority) {
        Ok(parsed) if !parsed.host().is_empty() => Ok(format!("http://{authority}")),
        _ => Err(bad("expected host:port")),
    }
}

fn number(variable: &'static str, text: &str) -> Result<u64, SettingsError> {
    text.parse().map_err(|_| SettingsError::Variable {
        variable,
        value: text.to_owned(),
        reason: "expected a whole number",
    })
}

fn size(variable: &'static str, text: &str) -> Result<usize, SettingsError> {
    let n = number(variable, text)?;
    match usize::try_from(n) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(SettingsError::Variable {
            variable,
            value: text.to_owned(),
            reason: "expected a positive number",
        }),
    }
}

/// `key=value,key2=value2` (W3C Baggage's form, which the specification uses for headers and
/// resource attributes): keys and values trimmed, values percent-decoded; empty members skipped.
fn key_values(variable: &'static str, text: &str) -> Result<Vec<(String, String)>, SettingsError> {
    let bad = |reason| SettingsError::Variable { variable, value: text.to_owned(), reason };
    let mut pairs = Vec::new();
    for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (key, value) = member.split_once('=').ok_or_else(|| bad("expected key=value pairs"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(bad("a key is empty"));
        }
        let value = percent_decode(value.trim()).ok_or_else(|| bad("bad percent-encoding"))?;
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn nothing_configured_is_tracing_off() {
        assert_eq!(ExportSettings::from_env(None, "svc", &env(&[])), Ok(None));
        assert_eq!(ExportSettings::from_env(Some(" "), "svc", &env(&[])), Ok(None));
    }

    #[test]
    fn defaults_are_the_specifications() {
        let settings =
            ExportSettings::from_env(Some("collector:4317"), "svc", &env(&[])).unwrap().unwrap();
        assert_eq!(
            settings,
            ExportSettings {
                endpoint: "http://collector:4317".to_owned(),
                transport: Transport::Grpc,
                headers: vec![],
                timeout: Duration::from_secs(10),
                max_batch: 512,
                max_queue: 2048,
                schedule_delay: Duration::from_secs(5),
                service_name: "svc".to_owned(),
                resource: vec![],
            }
        );
    }

    #[test]
    fn the_configured_endpoint_wins_then_the_traces_variable_then_the_general_one() {
        let vars = env(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://general:4317"),
            (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "http://traces:4317"),
        ]);
        let endpoint = |configured| {
            ExportSettings::from_env(configured, "s", &vars).unwrap().unwrap().endpoint
        };
        assert_eq!(endpoint(Some("mine:4317")), "http://mine:4317");
        assert_eq!(endpoint(None), "http://traces:4317");
        let general = env(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://general:4317/")]);
        let settings = ExportSettings::from_env(None, "s", &general).unwrap().unwrap();
        assert_eq!(settings.endpoint, "http://general:4317");
    }

    #[test]
    fn every_standard_variable_is_read() {
        let vars = env(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "127.0.0.1:4317"),
            (OTEL_EXPORTER_OTLP_HEADERS, "Authorization=Bearer%20abc, x-tenant = a"),
            (OTEL_EXPORTER_OTLP_TRACES_HEADERS, "x-tenant=b"),
            (OTEL_EXPORTER_OTLP_TIMEOUT, "2500"),
            (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "64"),
            (OTEL_BSP_MAX_QUEUE_SIZE, "256"),
            (OTEL_BSP_SCHEDULE_DELAY, "200"),
            (OTEL_SERVICE_NAME, "from-env"),
            (OTEL_RESOURCE_ATTRIBUTES, "k8s.namespace.name=default,team=a%2Cb"),
        ]);
        let settings = ExportSettings::from_env(None, "given", &vars).unwrap().unwrap();
        assert_eq!(
            settings,
            ExportSettings {
                endpoint: "http://127.0.0.1:4317".to_owned(),
                transport: Transport::Grpc,
                headers: vec![
                    ("authorization".to_owned(), "Bearer abc".to_owned()),
                    ("x-tenant".to_owned(), "b".to_owned()),
                ],
                timeout: Duration::from_millis(2500),
                max_batch: 64,
                max_queue: 256,
                schedule_delay: Duration::from_millis(200),
                service_name: "from-env".to_owned(),
                resource: vec![
                    ("k8s.namespace.name".to_owned(), "default".to_owned()),
                    ("team".to_owned(), "a,b".to_owned()),
                ],
            }
        );
    }

    #[test]
    fn the_traces_timeout_wins() {
        let vars = env(&[
            (OTEL_EXPORTER_OTLP_TIMEOUT, "2500"),
            (OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, "700"),
        ]);
        let settings = ExportSettings::from_env(Some("c:1"), "s", &vars).unwrap().unwrap();
        assert_eq!(settings.timeout, Duration::from_millis(700));
    }

    #[test]
    fn a_batch_is_never_larger_than_the_queue_and_the_queue_has_a_limit() {
        let vars =
            env(&[(OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "5000"), (OTEL_BSP_MAX_QUEUE_SIZE, "100")]);
        let settings = ExportSettings::from_env(Some("c:1"), "s", &vars).unwrap().unwrap();
        assert_eq!((settings.max_batch, settings.max_queue), (100, 100));
        let vars = env(&[(OTEL_BSP_MAX_QUEUE_SIZE, "999999999999")]);
        let settings = ExportSettings::from_env(Some("c:1"), "s", &vars).unwrap().unwrap();
        assert_eq!(settings.max_queue, 1 << 20);
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        for (name, value, reason) in [
            (OTEL_EXPORTER_OTLP_TIMEOUT, "10s", "expected a whole number"),
            (OTEL_BSP_MAX_QUEUE_SIZE, "0", "expected a positive number"),
            (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "-1", "expected a whole number"),
            (OTEL_EXPORTER_OTLP_HEADERS, "just-a-key", "expected key=value pairs"),
            (OTEL_EXPORTER_OTLP_HEADERS, "k=%zz", "bad percent-encoding"),
            (OTEL_RESOURCE_ATTRIBUTES, "=v", "a key is empty"),
        ] {
            let err =
                ExportSettings::from_env(Some("c:1"), "s", &env(&[(name, value)])).unwrap_err();
            assert_eq!(
                err,
                SettingsError::Variable { variable: name, value: value.to_owned(), reason },
            );
            assert!(err.to_string().starts_with(&format!("bad {name}=")), "{err}");
        }
    }

    #[test]
    fn endpoints_are_normalized_or_refused() {
        assert_eq!(
            normalize_endpoint("otel-collector.mesh-system:4317").unwrap(),
            "http://otel-collector.mesh-system:4317"
        );
        assert_eq!(normalize_endpoint("http://[::1]:4317/").unwrap(), "http://[::1]:4317");
        for bad in
            ["https://c:4317", "grpc://c:4317", "http://", "c:4317/v1/traces", "c 1:2", ":4317"]
        {
            assert!(normalize_endpoint(bad).is_err(), "{bad}");
        }
    }
}
