//! The HCM's `access_log`: Envoy's file logger for each provider that logs, with Istio's
//! formats, and the Telemetry's filter expression compiled into Envoy's native access log
//! filters (where istiod writes a CEL filter, which the mesh's proxy does not evaluate). The
//! same loggers go on the TCP proxies, and on the listeners filtered to the connections no
//! chain takes (`NR`), as istiod writes them.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, AndFilter, ComparisonFilter, DurationFilter, HeaderFilter,
    OrFilter, ResponseFlagFilter, StatusCodeFilter, access_log, access_log_filter,
    comparison_filter,
};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, JsonFormatOptions, RuntimeUInt32, SubstitutionFormatString, data_source,
    substitution_format_string,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::Any;
use mesh_api::mesh::{
    AccessLogEncoding, EnvoyFileAccessLogProvider, ExtensionProvider, MeshConfig,
};
use mesh_api::telemetry::filter::{Compare, Expr, HeaderTest};

use super::Class;
use crate::model::{Proxy, Snapshot};
use crate::translate::{any, sorted};

/// Envoy's name of the file access logger.
pub const FILE_ACCESS_LOG: &str = "envoy.access_loggers.file";

/// Istio's text format (`EnvoyTextLogFormat`).
pub const TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% \
%PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \
\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \
\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% \
%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% \
%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's JSON format (`EnvoyJSONLogFormatIstio`): field and command operator.
pub const JSON_FORMAT: &[(&str, &str)] = &[
    ("authority", "%REQ(:AUTHORITY)%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("connection_termination_details", "%CONNECTION_TERMINATION_DETAILS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("duration", "%DURATION%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("route_name", "%ROUTE_NAME%"),
    ("start_time", "%START_TIME%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"),
    ("upstream_transport_failure_reason", "%UPSTREAM_TRANSPORT_FAILURE_REASON%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
];

/// The runtime key of the filters' thresholds: none is ever set, so the default applies
/// (Envoy requires a key).
const UNSET_RUNTIME_KEY: &str = "mesh.access_log.unset";

/// The `access_log` of `proxy`'s HCMs of `class`: a logger per provider that logs (filtered
/// as its rule says), else the mesh config's `accessLogFile`.
pub fn envoy_access_logs(snapshot: &Snapshot, proxy: &Proxy, class: Class) -> Vec<AccessLog> {
    let mesh = snapshot.mesh_config.as_ref();
    let specs = super::access_logging(snapshot, proxy, class).unwrap_or_default();
    // Providers that write no access log (prometheus, the other kinds) are left out; when
    // none is left, the mesh config's older setting applies, as in istiod.
    let built: Vec<(AccessLog, _)> =
        specs.into_iter().filter_map(|spec| Some((logger(mesh, &spec.provider)?, spec))).collect();
    if built.is_empty() {
        return legacy(mesh).into_iter().collect();
    }
    built
        .into_iter()
        .filter(|(_, spec)| !spec.disabled)
        .filter_map(|(mut log, spec)| {
            if let Some(filter) = spec.filter {
                // Validation refuses what does not parse: an object that got here anyway
                // logs nothing rather than everything.
                let expr = mesh_api::telemetry::filter::parse(&filter.expression).ok()?;
                log.filter = Some(compile_filter(&expr));
            }
            Some(log)
        })
        .collect()
}

/// A listener's own loggers: `loggers` (its connection managers'), each logging only the
/// connections the listener closes because no chain takes them (Envoy's `NR`), in place of
/// their own filters (which speak of requests).
pub fn listener_access_logs(loggers: &[AccessLog]) -> Vec<AccessLog> {
    let no_route = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(
            ResponseFlagFilter { flags: vec!["NR".to_owned()] },
        )),
    };
    loggers.iter().map(|l| AccessLog { filter: Some(no_route.clone()), ..l.clone() }).collect()
}

/// The mesh config's `accessLogFile` logger, if it names a file.
fn legacy(mesh: &MeshConfig) -> Option<AccessLog> {
    (!mesh.access_log_file.is_empty()).then(|| mesh_config_logger(&mesh.access_log_file, mesh))
}

/// The logger of a provider, if it is one that writes access logs.
fn logger(mesh: &MeshConfig, provider: &ExtensionProvider) -> Option<AccessLog> {
    let file = provider.envoy_file_access_log.as_ref()?;
    let path = if file.path.is_empty() { "/dev/stdout" } else { file.path.as_str() };
    // The built-in provider without its own format follows the mesh config's encoding.
    if provider.name == mesh_api::mesh::ENVOY_ACCESS_LOG_PROVIDER && file.log_format.is_none() {
        return Some(mesh_config_logger(path, mesh));
    }
    Some(file_logger(path, file))
}

fn mesh_config_logger(path: &str, mesh: &MeshConfig) -> AccessLog {
    match mesh.access_log_encoding {
        AccessLogEncoding::Json => json_logger(path, &istio_json_format()),
        _ => text_logger(path, TEXT_FORMAT),
    }
}

fn file_logger(path: &str, provider: &EnvoyFileAccessLogProvider) -> AccessLog {
    let format = provider.log_format.as_ref();
    match (format.and_then(|f| f.text.as_deref()), format.and_then(|f| f.labels.as_ref())) {
        (Some(text), _) => {
            // "Istio will insert a newline on all formats (if missing)."
            let text = if text.ends_with('\n') { text.to_owned() } else { format!("{text}\n") };
            text_logger(path, &text)
        }
        (None, Some(labels)) if !labels.is_empty() => json_logger(path, labels),
        (None, Some(_)) => json_logger(path, &istio_json_format()),
        (None, None) => text_logger(path, TEXT_FORMAT),
    }
}

fn istio_json_format() -> BTreeMap<String, serde_json::Value> {
    JSON_FORMAT.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v))).collect()
}

fn text_logger(path: &str, text: &str) -> AccessLog {
    let config = FileAccessLog {
        path: path.to_owned(),
        access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(
            SubstitutionFormatString {
                format: Some(substitution_format_string::Format::TextFormatSource(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(text.to_owned())),
                    ..DataSource::default()
                })),
                ..SubstitutionFormatString::default()
            },
        )),
    };
    file_access_log(any(config))
}

/// A JSON-lines logger; the format's `Struct` is encoded with its fields sorted, so the same
/// format is the same bytes (prost keeps a `Struct` in a `HashMap`).
fn json_logger(path: &str, labels: &BTreeMap<String, serde_json::Value>) -> AccessLog {
    /// `SubstitutionFormatString.json_format`.
    const JSON_FORMAT_TAG: u32 = 2;
    /// `FileAccessLog.log_format`.
    const LOG_FORMAT_TAG: u32 = 5;
    #[allow(deprecated)] // Istio still sets it; Envoy ignores it.
    let options = SubstitutionFormatString {
        json_format_options: Some(JsonFormatOptions { sort_properties: false }),
        ..SubstitutionFormatString::default()
    };
    let format = sorted::with_field(&options, JSON_FORMAT_TAG, sorted::json_struct(labels));
    let file = FileAccessLog { path: path.to_owned(), access_log_format: None };
    let bytes = sorted::with_field(&file, LOG_FORMAT_TAG, format);
    file_access_log(sorted::any::<FileAccessLog>(bytes))
}

fn file_access_log(config: Any) -> AccessLog {
    AccessLog {
        name: FILE_ACCESS_LOG.to_owned(),
        config_type: Some(access_log::ConfigType::TypedConfig(config)),
        filter: None,
    }
}

fn comparison(op: comparison_filter::Op, value: u32) -> ComparisonFilter {
    ComparisonFilter {
        op: op as i32,
        value: Some(RuntimeUInt32 {
            default_value: value,
            runtime_key: UNSET_RUNTIME_KEY.to_owned(),
        }),
    }
}

fn status(op: comparison_filter::Op, value: u32) -> AccessLogFilter {
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::StatusCodeFilter(
            StatusCodeFilter { comparison: Some(comparison(op, value)) },
        )),
    }
}

fn duration(op: comparison_filter::Op, millis: u32) -> AccessLogFilter {
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::DurationFilter(
            DurationFilter { comparison: Some(comparison(op, millis)) },
        )),
    }
}

/// Envoy's comparison for `op value`: Envoy compares with `==`, `!=`, `>=` and `<=` only, so
/// `> n` is `>= n + 1` and `< n` is `<= n - 1` (the parser refuses `< 0`).
fn envoy_op(op: Compare, value: u64) -> (comparison_filter::Op, u32) {
    use comparison_filter::Op;
    let (op, value) = match op {
        Compare::Eq => (Op::Eq, value),
        Compare::Ne => (Op::Ne, value),
        Compare::Ge => (Op::Ge, value),
        Compare::Le => (Op::Le, value),
        Compare::Gt => (Op::Ge, value.saturating_add(1)),
        Compare::Lt => (Op::Le, value.saturating_sub(1)),
    };
    (op, u32::try_from(value).unwrap_or(u32::MAX))
}

/// A filter expression as Envoy's native access log filters.
pub fn compile_filter(expr: &Expr) -> AccessLogFilter {
    use access_log_filter::FilterSpecifier;
    match expr {
        Expr::ResponseCode(op, code) => {
            let (op, value) = envoy_op(*op, u64::from(*code));
            status(op, value)
        }
        Expr::ResponseDuration(op, millis) => {
            let (op, value) = envoy_op(*op, *millis);
            duration(op, value)
        }
        Expr::Header(name, test) => {
            let exact = |value: &str| {
                header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(value.to_owned())),
                    ignore_case: false,
                })
            };
            let (specifier, invert_match) = match test {
                HeaderTest::Equals(value) => (exact(value), false),
                HeaderTest::NotEquals(value) => (exact(value), true),
                HeaderTest::Present => {
                    (header_matcher::HeaderMatchSpecifier::PresentMatch(true), false)
                }
                HeaderTest::Absent => {
                    (header_matcher::HeaderMatchSpecifier::PresentMatch(true), true)
                }
            };
            AccessLogFilter {
                filter_specifier: Some(FilterSpecifier::HeaderFilter(HeaderFilter {
                    header: Some(HeaderMatcher {
                        name: name.clone(),
                        header_match_specifier: Some(specifier),
                        invert_match,
                        ..HeaderMatcher::default()
                    }),
                })),
            }
        }
        Expr::And(items) => AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::AndFilter(AndFilter {
                filters: items.iter().map(compile_filter).collect(),
            })),
        },
        Expr::Or(items) => AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::OrFilter(OrFilter {
                filters: items.iter().map(compile_filter).collect(),
            })),
        },
    }
}
