//! What a route asks of the proxy beyond choosing a cluster, compiled once per route: the
//! route timeout, retries (which outcomes, how many, per-try timeout, backoff, another host),
//! fault injection (delay and abort, by percentage), request mirroring and CORS. Pure: the
//! request path in `proxy::http` asks these what to do and does it.

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::{Route, route, route_action};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use prost::Message;

use crate::routing::StringMatch;

/// First retry backoff (Envoy's default base interval); later ones double, up to 10 times it.
pub const RETRY_BASE: Duration = Duration::from_millis(25);
/// Largest request body kept for retries and mirrors; bigger bodies are streamed and not
/// retried.
pub const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// A probability, in parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerMillion(pub u32);

impl PerMillion {
    fn of(fraction: Option<&FractionalPercent>) -> Self {
        let Some(f) = fraction else { return PerMillion(1_000_000) };
        let scale = match DenominatorType::try_from(f.denominator) {
            Ok(DenominatorType::Hundred) => 10_000,
            Ok(DenominatorType::TenThousand) => 100,
            _ => 1,
        };
        PerMillion(f.numerator.saturating_mul(scale).min(1_000_000))
    }

    /// Whether a draw (uniform over `u64`) falls within the probability.
    pub fn hit(self, draw: u64) -> bool {
        (draw % 1_000_000) < u64::from(self.0)
    }
}

/// How an attempt ended, as retry conditions see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No connection.
    ConnectFailure,
    /// The connection or stream failed before a response, or the per-try timeout passed.
    Reset,
    /// The peer refused the stream before processing it (HTTP/2 `REFUSED_STREAM`).
    Refused,
    /// A response, with its gRPC status from the headers if any.
    Response {
        /// HTTP status.
        status: u16,
        /// `grpc-status` of a trailers-only response.
        grpc: Option<u32>,
    },
}

/// A route's retry policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Timeout of each attempt.
    pub per_try_timeout: Option<Duration>,
    /// The `retry_on` conditions.
    pub on: Vec<String>,
    /// Statuses for `retriable-status-codes`.
    pub statuses: Vec<u16>,
    /// Whether retries go to another host than the ones tried (`previous_hosts`).
    pub other_host: bool,
}

impl Retry {
    /// Whether `outcome` is one the policy retries.
    pub fn retriable(&self, outcome: Outcome) -> bool {
        let on = |name: &str| self.on.iter().any(|c| c == name);
        match outcome {
            Outcome::ConnectFailure => {
                on("connect-failure") || on("reset") || on("5xx") || on("gateway-error")
            }
            Outcome::Reset => on("reset") || on("5xx") || on("gateway-error"),
            Outcome::Refused => {
                on("refused-stream") || on("reset") || on("5xx") || on("gateway-error")
            }
            Outcome::Response { status, grpc } => {
                (on("5xx") && status >= 500)
                    || (on("gateway-error") && matches!(status, 502..=504))
                    || (on("retriable-4xx") && status == 409)
                    || (on("retriable-status-codes") && self.statuses.contains(&status))
                    || match grpc {
                        Some(1) => on("cancelled"),
                        Some(4) => on("deadline-exceeded"),
                        Some(8) => on("resource-exhausted"),
                        Some(14) => on("unavailable"),
                        _ => false,
                    }
            }
        }
    }

    /// The wait before retry number `n` (1-based): full jitter over an exponentially growing
    /// window from [`RETRY_BASE`], capped at ten times it. `draw` is a uniform random number.
    pub fn backoff(n: u32, draw: u64) -> Duration {
        let window =
            RETRY_BASE.saturating_mul(1 << n.saturating_sub(1).min(8)).min(RETRY_BASE * 10);
        let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(draw % millis)
    }
}

/// An injected fault.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    /// A delay before the request goes on, and how often.
    pub delay: Option<(Duration, PerMillion)>,
    /// An abort instead of the request, and how often.
    pub abort: Option<(Abort, PerMillion)>,
}

/// How a request is aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abort {
    /// With this HTTP status.
    Http(u16),
    /// With this gRPC status (HTTP 200, `grpc-status`).
    Grpc(u32),
}

/// A mirror: a copy of the request, fire and forget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// Where copies go.
    pub cluster: String,
    /// How often.
    pub fraction: PerMillion,
}

/// A route's CORS policy.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<StringMatch>,
    /// `access-control-allow-methods`.
    pub allow_methods: String,
    /// `access-control-allow-headers`.
    pub allow_headers: String,
    /// `access-control-expose-headers`.
    pub expose_headers: String,
    /// `access-control-max-age`.
    pub max_age: String,
    /// `access-control-allow-credentials: true`.
    pub allow_credentials: bool,
}

impl Cors {
    /// Whether requests from `origin` are allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|m| m.matches(origin))
    }
}

/// Everything a route asks beyond routing.
#[derive(Debug, Default)]
pub struct RoutePolicy {
    /// Route timeout (`None`: disabled, Istio's default).
    pub timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<Retry>,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// Mirrors.
    pub mirrors: Vec<Mirror>,
    /// CORS.
    pub cors: Option<Cors>,
}

/// A duration that is set and not zero (zero means "none" for timeouts and delays).
fn duration(d: Option<&PbDuration>) -> Option<Duration> {
    d.and_then(crate::runtime::duration).filter(|d| !d.is_zero())
}

impl RoutePolicy {
    /// Compiles what `route` asks; errors name the part that cannot be honoured.
    pub fn compile(route: &Route) -> Result<Self, String> {
        let mut policy = RoutePolicy::default();
        if let Some(route::Action::Route(action)) = &route.action {
            policy.timeout = duration(action.timeout.as_ref());
            if let Some(r) = &action.retry_policy {
                policy.retry = Some(Retry {
                    retries: r.num_retries.as_ref().map_or(1, |n| n.value),
                    per_try_timeout: duration(r.per_try_timeout.as_ref()),
                    on: r
                        .retry_on
                        .split(',')
                        .map(|c| c.trim().to_owned())
                        .filter(|c| !c.is_empty())
                        .collect(),
                    statuses: r
                        .retriable_status_codes
                        .iter()
                        .filter_map(|s| u16::try_from(*s).ok())
                        .collect(),
                    other_host: r
                        .retry_host_predicate
                        .iter()
                        .any(|p| p.name == "envoy.retry_host_predicates.previous_hosts"),
                });
            }
            policy.mirrors = action
                .request_mirror_policies
                .iter()
                .map(|m| Mirror {
                    cluster: m.cluster.clone(),
                    fraction: PerMillion::of(
                        m.runtime_fraction.as_ref().and_then(|f| f.default_value.as_ref()),
                    ),
                })
                .collect();
            if let Some(route_action::ClusterSpecifier::ClusterHeader(_)) =
                &action.cluster_specifier
            {
                return Err("cluster_header is not implemented".to_owned());
            }
        }
        if let Some(any) = route.typed_per_filter_config.get("envoy.filters.http.fault") {
            let fault = HttpFault::decode(any.value.as_slice())
                .map_err(|e| format!("fault filter config: {e}"))?;
            let delay = fault.delay.as_ref().and_then(|d| match d.fault_delay_secifier {
                Some(FaultDelaySecifier::FixedDelay(ref fixed)) => {
                    Some((duration(Some(fixed))?, PerMillion::of(d.percentage.as_ref())))
                }
                _ => None,
            });
            let abort = match fault.abort.as_ref() {
                None => None,
                Some(a) => {
                    let kind = match a.error_type {
                        Some(fault_abort::ErrorType::HttpStatus(s)) => Abort::Http(
                            u16::try_from(s).map_err(|_| format!("fault abort status {s}"))?,
                        ),
                        Some(fault_abort::ErrorType::GrpcStatus(s)) => Abort::Grpc(s),
                        _ => return Err("fault abort by header is not implemented".to_owned()),
                    };
                    Some((kind, PerMillion::of(a.percentage.as_ref())))
                }
            };
            policy.fault = Some(Fault { delay, abort });
        }
        if let Some(any) = route.typed_per_filter_config.get("envoy.filters.http.cors") {
            let cors = CorsPolicy::decode(any.value.as_slice())
                .map_err(|e| format!("CORS filter config: {e}"))?;
            policy.cors = Some(Cors {
                origins: cors
                    .allow_origin_string_match
                    .iter()
                    .map(StringMatch::compile)
                    .collect::<Result<_, _>>()?,
                allow_methods: cors.allow_methods,
                allow_headers: cors.allow_headers,
                expose_headers: cors.expose_headers,
                max_age: cors.max_age,
                allow_credentials: cors.allow_credentials.is_some_and(|b| b.value),
            });
        }
        Ok(policy)
    }
}
