//! Which requests an HTTP connection manager's access loggers log: Envoy's native access log
//! filters (`status_code_filter`, `duration_filter`, `header_filter`, `and_filter`,
//! `or_filter`, and `response_flag_filter`, `grpc_status_filter`, `traceable_filter`,
//! `not_health_check_filter`), the form the pilot compiles a Telemetry's filter expression
//! into, compiled with the listener and decided when a request ends. Pure.
//!
//! As in Envoy, a request is logged only when its connection manager (a TCP connection: its
//! `tcp_proxy`; a connection no chain takes: its listener) lists a file access logger whose
//! filter passes; it is logged once (the proxy has one access log, in the format of its
//! `--access-log` flag) however many loggers would log it. Loggers of other kinds (gRPC or
//! OpenTelemetry access log services) are not the proxy's to run, and log nothing.

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, ComparisonFilter, access_log_filter, comparison_filter,
};

use super::ResponseFlags;
use crate::routing::{HeaderMatch, RequestHead};

/// The most header tests one connection manager's filters may hold (their results are one
/// bit each in a `u64` the request carries).
pub const MAX_HEADER_TESTS: usize = 64;
/// The deepest nesting of `and`/`or` filters compiled.
const MAX_DEPTH: usize = 16;

/// A comparison of Envoy's `ComparisonFilter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ge,
    Le,
    Ne,
}

impl Op {
    fn holds(self, left: u64, right: u64) -> bool {
        match self {
            Op::Eq => left == right,
            Op::Ge => left >= right,
            Op::Le => left <= right,
            Op::Ne => left != right,
        }
    }
}

/// A compiled filter.
#[derive(Debug)]
enum Node {
    Status(Op, u64),
    Duration(Op, u64),
    /// The header test at this index of [`LogPolicy::headers`].
    Header(usize),
    /// Any of these flags is set (any flag, when empty the mask is every flag).
    Flags(ResponseFlags),
    /// Whether the gRPC status is (or, with `exclude`, is not) one of these.
    Grpc {
        statuses: Vec<u32>,
        exclude: bool,
    },
    Traceable,
    And(Vec<Node>),
    Or(Vec<Node>),
    /// A filter the proxy does not evaluate: it lets the request be logged.
    Pass,
}

/// What is known of a request when it ends, for the filters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ended {
    /// The response code (0 when there was none).
    pub status: u16,
    /// How long the request took, in milliseconds.
    pub duration_ms: u64,
    /// Envoy's response flags.
    pub flags: ResponseFlags,
    /// The gRPC status label (`0`..`16`, `unknown`), when there was one.
    pub grpc_status: Option<&'static str>,
    /// Whether the request was traced (sampled).
    pub traced: bool,
    /// The results of the header tests, taken when the request arrived
    /// ([`LogPolicy::header_bits`]).
    pub header_bits: u64,
}

/// Envoy's name of the file access logger.
pub const FILE_LOGGER: &str = "envoy.access_loggers.file";
/// The type of its configuration.
const FILE_LOGGER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";

/// The access logging of a connection manager, a TCP proxy or a listener.
#[derive(Debug, Default)]
pub struct LogPolicy {
    /// The filter of each file logger (`None`: it logs every request); none: nothing logged.
    loggers: Vec<Option<Node>>,
    headers: Vec<HeaderMatch>,
}

impl LogPolicy {
    /// The policy of an `access_log` list.
    pub fn of(loggers: &[AccessLog]) -> Self {
        let mut headers = Vec::new();
        let compiled = loggers
            .iter()
            .filter(|logger| is_file_logger(logger))
            .map(|logger| logger.filter.as_ref().map(|f| compile(f, &mut headers, 0)))
            .collect();
        Self { loggers: compiled, headers }
    }

    /// Whether any file logger is listed (else nothing is logged, and a request's headers
    /// need not be kept for the log).
    pub fn is_configured(&self) -> bool {
        !self.loggers.is_empty()
    }

    /// The header tests' results for a request (bit `i` for test `i`); 0 when there are none,
    /// which is most often, at no cost.
    pub fn header_bits(&self, request: &RequestHead<'_>) -> u64 {
        self.headers
            .iter()
            .enumerate()
            .filter(|(_, test)| test.matches(request))
            .fold(0, |bits, (i, _)| bits | (1 << i))
    }

    /// Whether the request is logged.
    pub fn logs(&self, ended: &Ended) -> bool {
        self.loggers.iter().any(|filter| filter.as_ref().is_none_or(|f| eval(f, ended)))
    }
}

/// Whether `logger` writes lines to a file (by its name or its configuration's type), which
/// the proxy's access log stands for.
fn is_file_logger(logger: &AccessLog) -> bool {
    use envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType;
    match &logger.config_type {
        Some(ConfigType::TypedConfig(any)) => any.type_url == FILE_LOGGER_TYPE,
        _ => logger.name == FILE_LOGGER,
    }
}

fn op(comparison: Option<&ComparisonFilter>) -> (Op, u64) {
    let Some(comparison) = comparison else { return (Op::Ge, 0) };
    let value = comparison.value.as_ref().map_or(0, |v| u64::from(v.default_value));
    let op = match comparison_filter::Op::try_from(comparison.op) {
        Ok(comparison_filter::Op::Eq) => Op::Eq,
        Ok(comparison_filter::Op::Ge) => Op::Ge,
        Ok(comparison_filter::Op::Le) => Op::Le,
        Ok(comparison_filter::Op::Ne) => Op::Ne,
        Err(_) => Op::Eq,
    };
    (op, value)
}

fn compile(filter: &AccessLogFilter, headers: &mut Vec<HeaderMatch>, depth: usize) -> Node {
    use access_log_filter::FilterSpecifier as F;
    let pass = |why: &str| {
        tracing::warn!(
            "access log filter not evaluated, requests are logged as if it passed: {why}"
        );
        Node::Pass
    };
    if depth > MAX_DEPTH {
        return pass("nested too deeply");
    }
    let mut many = |filters: &[AccessLogFilter]| -> Vec<Node> {
        filters.iter().map(|f| compile(f, headers, depth + 1)).collect()
    };
    match &filter.filter_specifier {
        Some(F::StatusCodeFilter(f)) => {
            let (op, value) = op(f.comparison.as_ref());
            Node::Status(op, value)
        }
        Some(F::DurationFilter(f)) => {
            let (op, value) = op(f.comparison.as_ref());
            Node::Duration(op, value)
        }
        Some(F::AndFilter(f)) => Node::And(many(&f.filters)),
        Some(F::OrFilter(f)) => Node::Or(many(&f.filters)),
        Some(F::HeaderFilter(f)) => {
            let Some(matcher) = &f.header else { return pass("header_filter without a header") };
            if headers.len() >= MAX_HEADER_TESTS {
                return pass("more than 64 header tests");
            }
            match HeaderMatch::compile(matcher) {
                Ok(test) => {
                    headers.push(test);
                    Node::Header(headers.len() - 1)
                }
                Err(why) => pass(&why),
            }
        }
        Some(F::ResponseFlagFilter(f)) => {
            let mut mask = ResponseFlags::NONE;
            for code in &f.flags {
                // Flags the proxy never sets cannot match.
                if let Some(flag) = ResponseFlags::from_code(code) {
                    mask |= flag;
                }
            }
            if f.flags.is_empty() { Node::Flags(ResponseFlags::ALL) } else { Node::Flags(mask) }
        }
        Some(F::GrpcStatusFilter(f)) => Node::Grpc {
            statuses: f.statuses.iter().filter_map(|s| u32::try_from(*s).ok()).collect(),
            exclude: f.exclude,
        },
        Some(F::TraceableFilter(_)) => Node::Traceable,
        // The proxy never takes a request for a health check.
        Some(F::NotHealthCheckFilter(_)) => Node::Pass,
        Some(_) => pass(
            "only status code, duration, header, response flag, gRPC status, traceable, and, or filters are implemented",
        ),
        None => pass("a filter without a specifier"),
    }
}

fn eval(node: &Node, ended: &Ended) -> bool {
    match node {
        Node::Status(op, value) => op.holds(u64::from(ended.status), *value),
        Node::Duration(op, value) => op.holds(ended.duration_ms, *value),
        Node::Header(i) => ended.header_bits & (1 << i) != 0,
        Node::Flags(mask) => ended.flags.intersects(*mask),
        Node::Grpc { statuses, exclude } => {
            // Envoy takes a request without a gRPC status as UNKNOWN (2).
            let status = ended.grpc_status.and_then(|s| s.parse::<u32>().ok()).unwrap_or(2);
            statuses.contains(&status) != *exclude
        }
        Node::Traceable => ended.traced,
        Node::And(nodes) => nodes.iter().all(|n| eval(n, ended)),
        Node::Or(nodes) => nodes.iter().any(|n| eval(n, ended)),
        Node::Pass => true,
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::accesslog::v3::{
        AndFilter, DurationFilter, HeaderFilter, OrFilter, ResponseFlagFilter, StatusCodeFilter,
    };
    use envoy_types::pb::envoy::config::core::v3::RuntimeUInt32;
    use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
    use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

    use super::*;
    use access_log_filter::FilterSpecifier as F;

    fn comparison(op: comparison_filter::Op, value: u32) -> Option<ComparisonFilter> {
        Some(ComparisonFilter {
            op: op as i32,
            value: Some(RuntimeUInt32 { default_value: value, runtime_key: "k".to_owned() }),
        })
    }

    fn filter(specifier: F) -> AccessLogFilter {
        AccessLogFilter { filter_specifier: Some(specifier) }
    }

    fn status(op: comparison_filter::Op, value: u32) -> AccessLogFilter {
        filter(F::StatusCodeFilter(StatusCodeFilter { comparison: comparison(op, value) }))
    }

    fn header(name: &str, exact: Option<&str>, invert: bool) -> AccessLogFilter {
        let specifier = match exact {
            Some(value) => header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(value.to_owned())),
                ignore_case: false,
            }),
            None => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
        };
        filter(F::HeaderFilter(HeaderFilter {
            header: Some(HeaderMatcher {
                name: name.to_owned(),
                header_match_specifier: Some(specifier),
                invert_match: invert,
                ..Default::default()
            }),
        }))
    }

    fn logger(filter: Option<AccessLogFilter>) -> AccessLog {
        AccessLog { name: "envoy.access_loggers.file".to_owned(), filter, config_type: None }
    }

    fn bits(policy: &LogPolicy, pairs: &[(&'static str, &'static str)]) -> u64 {
        let mut headers = http::HeaderMap::new();
        for (k, v) in pairs {
            headers.insert(*k, http::HeaderValue::from_static(v));
        }
        let head = RequestHead { authority: "a", path: "/", method: "GET", headers: &headers };
        policy.header_bits(&head)
    }

    #[test]
    fn no_logger_logs_nothing_and_a_logger_without_filter_everything() {
        let none = LogPolicy::of(&[]);
        assert!(!none.is_configured());
        assert!(!none.logs(&Ended { status: 200, ..Ended::default() }), "as Envoy: no logger");
        let errors = logger(Some(status(comparison_filter::Op::Ge, 400)));
        let both = LogPolicy::of(&[errors, logger(None)]);
        assert!(both.is_configured());
        assert!(both.logs(&Ended { status: 200, ..Ended::default() }), "the second logs all");
    }

    #[test]
    fn only_file_loggers_count() {
        use envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType;
        use envoy_types::pb::google::protobuf::Any;
        let typed = |type_url: &str| AccessLog {
            name: "anything".to_owned(),
            filter: None,
            config_type: Some(ConfigType::TypedConfig(Any {
                type_url: type_url.to_owned(),
                value: Vec::new(),
            })),
        };
        let otel = typed(
            "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
        );
        assert!(!LogPolicy::of(&[otel]).logs(&Ended::default()), "not the proxy's to run");
        assert!(LogPolicy::of(&[typed(FILE_LOGGER_TYPE)]).logs(&Ended::default()));
    }

    #[test]
    fn response_code_at_least_400_as_the_pilot_compiles_it() {
        // `response.code >= 400`
        let policy = LogPolicy::of(&[logger(Some(status(comparison_filter::Op::Ge, 400)))]);
        assert!(!policy.logs(&Ended { status: 200, ..Ended::default() }));
        assert!(policy.logs(&Ended { status: 404, ..Ended::default() }));
        assert!(policy.logs(&Ended { status: 503, ..Ended::default() }));
        // `response.code > 499` is `>= 500`.
        let policy = LogPolicy::of(&[logger(Some(status(comparison_filter::Op::Ge, 500)))]);
        assert!(!policy.logs(&Ended { status: 499, ..Ended::default() }));
    }

    #[test]
    fn and_or_duration_and_headers_combine() {
        // `response.duration >= 100 && (request.headers['x-debug'] == 'on' || !has(x-canary))`
        let slow = filter(F::DurationFilter(DurationFilter {
            comparison: comparison(comparison_filter::Op::Ge, 100),
        }));
        let tree = filter(F::AndFilter(AndFilter {
            filters: vec![
                slow,
                filter(F::OrFilter(OrFilter {
                    filters: vec![
                        header("x-debug", Some("on"), false),
                        header("x-canary", None, true),
                    ],
                })),
            ],
        }));
        let policy = LogPolicy::of(&[logger(Some(tree))]);
        let ended = |duration_ms, header_bits| Ended {
            status: 200,
            duration_ms,
            header_bits,
            ..Ended::default()
        };
        let debug = bits(&policy, &[("x-debug", "on"), ("x-canary", "1")]);
        let canary = bits(&policy, &[("x-canary", "1")]);
        let plain = bits(&policy, &[]);
        assert_eq!((debug, canary, plain), (0b01, 0b00, 0b10));
        assert!(policy.logs(&ended(150, debug)));
        assert!(!policy.logs(&ended(150, canary)), "neither header test holds");
        assert!(policy.logs(&ended(150, plain)));
        assert!(!policy.logs(&ended(99, debug)), "too fast");
    }

    #[test]
    fn flags_grpc_and_traceable_filters() {
        let flags = |codes: &[&str]| {
            LogPolicy::of(&[logger(Some(filter(F::ResponseFlagFilter(ResponseFlagFilter {
                flags: codes.iter().map(|c| (*c).to_owned()).collect(),
            }))))])
        };
        let uh = Ended { flags: ResponseFlags::NO_HEALTHY_UPSTREAM, ..Ended::default() };
        assert!(flags(&["UH", "NR"]).logs(&uh));
        assert!(!flags(&["NR"]).logs(&uh));
        assert!(flags(&[]).logs(&uh), "no flags named: any flag");
        assert!(!flags(&[]).logs(&Ended::default()));

        let traced = LogPolicy::of(&[logger(Some(filter(F::TraceableFilter(Default::default()))))]);
        assert!(traced.logs(&Ended { traced: true, ..Ended::default() }));
        assert!(!traced.logs(&Ended::default()));

        let grpc = |exclude| {
            LogPolicy::of(&[logger(Some(filter(F::GrpcStatusFilter(
                envoy_types::pb::envoy::config::accesslog::v3::GrpcStatusFilter {
                    statuses: vec![14],
                    exclude,
                },
            ))))])
        };
        let unavailable = Ended { grpc_status: Some("14"), ..Ended::default() };
        assert!(grpc(false).logs(&unavailable));
        assert!(!grpc(true).logs(&unavailable));
        assert!(grpc(true).logs(&Ended { grpc_status: Some("0"), ..Ended::default() }));
    }

    #[test]
    fn filters_it_cannot_evaluate_let_requests_be_logged() {
        let runtime = filter(F::RuntimeFilter(Default::default()));
        let policy = LogPolicy::of(&[logger(Some(runtime))]);
        assert!(policy.logs(&Ended::default()));
    }
}
