//! RDS: one route configuration per HTTP port (named by the port, `"9080"`), a virtual host per
//! service with all its names, and the routes of the VirtualService for that host (matches,
//! weighted destinations and subsets, timeouts, retries, faults, rewrites, redirects, direct
//! responses, header changes, mirrors, CORS), or a default route to the service.

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
    header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
    query_parameter_matcher, redirect_action, retry_policy, route, route_action, route_match,
    weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use mesh_api::networking::{
    Destination, Headers, HttpMatchRequest, HttpRetry, HttpRoute, Percent, StringMatch,
    VirtualService,
};
use mesh_api::xds::{ClusterName, PASSTHROUGH_CLUSTER};

use super::listener::{CORS_FILTER, FAULT_FILTER};
use super::{any, config_duration, duration};
use crate::model::{Proxy, Service, Snapshot};

/// The mesh's default retry policy (Istio's): 2 retries on connection-level failures.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// One route configuration per HTTP service port.
pub fn route_configs(snapshot: &Snapshot, proxy: &Proxy) -> Vec<RouteConfiguration> {
    let ports: BTreeSet<u16> = snapshot
        .services
        .values()
        .flat_map(|s| s.ports.iter().filter(|p| p.protocol.is_http()).map(|p| p.port))
        .collect();
    ports.into_iter().map(|port| route_config(snapshot, proxy, port)).collect()
}

fn route_config(snapshot: &Snapshot, proxy: &Proxy, port: u16) -> RouteConfiguration {
    let mut taken = BTreeSet::new();
    let mut virtual_hosts = Vec::new();
    for service in
        snapshot.services.values().filter(|s| s.port(port).is_some_and(|p| p.protocol.is_http()))
    {
        let domains: Vec<String> =
            domains(service, proxy, port).into_iter().filter(|d| taken.insert(d.clone())).collect();
        if domains.is_empty() {
            continue;
        }
        virtual_hosts.push(VirtualHost {
            name: format!("{}:{port}", service.hostname),
            domains,
            routes: routes(snapshot, proxy, service, port),
            ..VirtualHost::default()
        });
    }
    // Unknown hosts on a known port go where the caller sent them (ALLOW_ANY), or get a 502
    // (REGISTRY_ONLY), as Istio answers.
    let (name, action) = if super::scope::registry_only(snapshot, proxy) {
        (
            "block_all",
            route::Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..DirectResponseAction::default()
            }),
        )
    } else {
        (
            "allow_any",
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                    PASSTHROUGH_CLUSTER.to_owned(),
                )),
                timeout: Some(duration(std::time::Duration::ZERO)),
                ..RouteAction::default()
            }),
        )
    };
    virtual_hosts.push(VirtualHost {
        name: name.to_owned(),
        domains: vec!["*".to_owned()],
        routes: vec![Route {
            name: name.to_owned(),
            r#match: Some(prefix("/")),
            action: Some(action),
            ..Route::default()
        }],
        ..VirtualHost::default()
    });
    RouteConfiguration {
        name: mesh_api::xds::route_config_name(port),
        virtual_hosts,
        validate_clusters: Some(BoolValue { value: false }),
        ..RouteConfiguration::default()
    }
}

/// The names of a service as seen from the proxy's namespace, with and without the port. The
/// bare short name only for services of the proxy's own namespace, as Kubernetes DNS resolves it.
fn domains(service: &Service, proxy: &Proxy, port: u16) -> Vec<String> {
    let names = service.short_names("");
    let mut out = Vec::new();
    for name in names {
        if name == service.name && service.namespace != proxy.namespace {
            continue;
        }
        out.push(format!("{name}:{port}"));
        out.push(name);
    }
    out
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.to_owned())),
        ..RouteMatch::default()
    }
}

/// Whether a VirtualService host (relative to its namespace) covers a service host name.
pub fn host_matches(pattern: &str, hostname: &str) -> bool {
    pattern == "*"
        || pattern == hostname
        || pattern
            .strip_prefix('*')
            .is_some_and(|suffix| hostname.ends_with(suffix) && hostname.len() > suffix.len())
}

/// What routes are built for: the mesh's sidecars, or one gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding<'a> {
    /// Sidecars (`mesh` in a `gateways` list).
    Mesh,
    /// The Gateway `namespace/name`.
    Gateway {
        /// Its namespace.
        namespace: &'a str,
        /// Its name.
        name: &'a str,
    },
}

impl Binding<'_> {
    /// Whether a `gateways` list of an object in `namespace` names this (Istio's rule: an
    /// empty list means the mesh only; a bare name is a Gateway of the object's namespace).
    pub fn named_in(&self, gateways: &[String], namespace: &str) -> bool {
        match self {
            Binding::Mesh => gateways.is_empty() || gateways.iter().any(|g| g == "mesh"),
            Binding::Gateway { namespace: gw_namespace, name } => {
                gateways.iter().any(|g| match g.split_once('/') {
                    Some((ns, n)) => ns == *gw_namespace && n == *name,
                    None => g == name && namespace == *gw_namespace,
                })
            }
        }
    }
}

fn applies_to_mesh(gateways: &[String]) -> bool {
    Binding::Mesh.named_in(gateways, "")
}

/// The VirtualService for a service, as sidecars see it: the first (by namespace and name)
/// that is bound to the mesh and names the host.
fn virtual_service<'a>(snapshot: &'a Snapshot, service: &Service) -> Option<&'a VirtualService> {
    let mut found: Vec<&VirtualService> = snapshot
        .virtual_services
        .iter()
        .filter(|vs| applies_to_mesh(&vs.spec.gateways))
        .filter(|vs| {
            let ns = vs.metadata.namespace.as_deref().unwrap_or("default");
            vs.spec.hosts.iter().any(|h| host_matches(&snapshot.resolve(h, ns), &service.hostname))
        })
        .collect();
    found.sort_by_key(|vs| (vs.metadata.namespace.clone(), vs.metadata.name.clone()));
    found.into_iter().next()
}

fn routes(snapshot: &Snapshot, proxy: &Proxy, service: &Service, port: u16) -> Vec<Route> {
    let Some(vs) = virtual_service(snapshot, service) else {
        return vec![default_route(
            &ClusterName::outbound(port, None, &service.hostname).to_string(),
        )];
    };
    vs_routes(snapshot, proxy, vs, port, Binding::Mesh)
}

/// The routes of a VirtualService's HTTP rules for requests on `port`, bound as `binding` says
/// (a rule whose match names other gateways is left out), each naming the VirtualService in
/// its metadata.
pub fn vs_routes(
    snapshot: &Snapshot,
    proxy: &Proxy,
    vs: &VirtualService,
    port: u16,
    binding: Binding<'_>,
) -> Vec<Route> {
    let namespace = vs.metadata.namespace.as_deref().unwrap_or("default");
    // Every route names the VirtualService it came from, as istiod's do (a Gateway API
    // route's is the VirtualService the source layer made of it, as istiod's is too).
    let origin = super::origin::config_metadata(vs);
    let mut out = Vec::new();
    for (i, http) in vs.spec.http.iter().enumerate() {
        let name = http.name.clone().unwrap_or_else(|| {
            format!("{}.{namespace}.{i}", vs.metadata.name.as_deref().unwrap_or_default())
        });
        let Some(action) = action(snapshot, proxy, http, namespace, port) else { continue };
        let per_filter = per_filter_config(http, proxy.proxyless);
        let matches: Vec<Option<&HttpMatchRequest>> = if http.matches.is_empty() {
            vec![None]
        } else {
            http.matches.iter().map(Some).collect()
        };
        for m in matches {
            if let Some(m) = m
                && !match_applies(m, proxy, port, binding, namespace)
            {
                continue;
            }
            let mut route = Route {
                name: name.clone(),
                r#match: Some(route_match(m)),
                action: Some(action.clone()),
                typed_per_filter_config: per_filter.clone(),
                metadata: Some(origin.clone()),
                ..Route::default()
            };
            if let Some(headers) = &http.headers {
                apply_headers(&mut route, headers);
            }
            out.push(route);
        }
    }
    out
}

fn default_route(cluster: &str) -> Route {
    Route {
        name: "default".to_owned(),
        r#match: Some(prefix("/")),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
            timeout: Some(duration(std::time::Duration::ZERO)),
            retry_policy: Some(retry(None)),
            ..RouteAction::default()
        })),
        ..Route::default()
    }
}

/// Conditions decided when translating: the port, the caller's labels and namespace, the
/// gateways (a sidecar is `mesh`).
fn match_applies(
    m: &HttpMatchRequest,
    proxy: &Proxy,
    port: u16,
    binding: Binding<'_>,
    namespace: &str,
) -> bool {
    m.port.is_none_or(|p| p == u32::from(port))
        && m.source_labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
        && m.source_namespace.as_ref().is_none_or(|ns| *ns == proxy.namespace)
        && (m.gateways.is_empty() || binding.named_in(&m.gateways, namespace))
}

fn string_matcher(m: &StringMatch, ignore_case: bool) -> Option<StringMatcher> {
    let pattern = if let Some(exact) = &m.exact {
        string_matcher::MatchPattern::Exact(exact.clone())
    } else if let Some(prefix) = &m.prefix {
        string_matcher::MatchPattern::Prefix(prefix.clone())
    } else if let Some(regex) = &m.regex {
        string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: regex.clone(),
            ..RegexMatcher::default()
        })
    } else {
        return None;
    };
    Some(StringMatcher { match_pattern: Some(pattern), ignore_case })
}

fn header_matcher(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    let specifier = match string_matcher(m, false) {
        Some(sm) => header_matcher::HeaderMatchSpecifier::StringMatch(sm),
        None => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
    };
    HeaderMatcher {
        name: name.to_owned(),
        invert_match: invert,
        header_match_specifier: Some(specifier),
        ..HeaderMatcher::default()
    }
}

fn route_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let Some(m) = m else { return prefix("/") };
    let ignore_case = m.ignore_uri_case.unwrap_or(false);
    let path = match &m.uri {
        Some(StringMatch { exact: Some(p), .. }) => route_match::PathSpecifier::Path(p.clone()),
        Some(StringMatch { prefix: Some(p), .. }) => route_match::PathSpecifier::Prefix(p.clone()),
        Some(StringMatch { regex: Some(r), .. }) => {
            route_match::PathSpecifier::SafeRegex(RegexMatcher {
                regex: r.clone(),
                ..RegexMatcher::default()
            })
        }
        _ => route_match::PathSpecifier::Prefix("/".to_owned()),
    };
    let mut headers: Vec<HeaderMatcher> = Vec::new();
    for (pseudo, value) in
        [(":method", &m.method), (":authority", &m.authority), (":scheme", &m.scheme)]
    {
        if let Some(value) = value {
            headers.push(header_matcher(pseudo, value, false));
        }
    }
    headers.extend(m.headers.iter().map(|(name, value)| header_matcher(name, value, false)));
    headers.extend(m.without_headers.iter().map(|(name, value)| header_matcher(name, value, true)));
    let query_parameters = m
        .query_params
        .iter()
        .map(|(name, value)| QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match string_matcher(value, false) {
                Some(sm) => query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(sm),
                None => query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        })
        .collect();
    RouteMatch {
        path_specifier: Some(path),
        case_sensitive: ignore_case.then_some(BoolValue { value: false }),
        headers,
        query_parameters,
        ..RouteMatch::default()
    }
}

/// The cluster a destination names: its host resolved in the VirtualService's namespace, its
/// port (given, the service's only one, or the port the request came on), its subset.
pub fn destination_cluster(
    snapshot: &Snapshot,
    dest: &Destination,
    namespace: &str,
    port: u16,
) -> String {
    let host = snapshot.resolve(&dest.host, namespace);
    let number = match &dest.port {
        Some(p) => u16::try_from(p.number).unwrap_or(port),
        None => match snapshot.services.get(&host).map(|s| s.ports.as_slice()) {
            Some([only]) => only.port,
            _ => port,
        },
    };
    ClusterName::outbound(number, dest.subset.as_deref(), &host).to_string()
}

fn percent(p: &Percent) -> FractionalPercent {
    // Istio's precision: millionths.
    FractionalPercent {
        numerator: (p.value.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

fn action(
    snapshot: &Snapshot,
    proxy: &Proxy,
    http: &HttpRoute,
    namespace: &str,
    port: u16,
) -> Option<route::Action> {
    if let Some(redirect) = &http.redirect {
        return Some(route::Action::Redirect(RedirectAction {
            host_redirect: redirect.authority.clone().unwrap_or_default(),
            port_redirect: redirect.port.unwrap_or(0),
            response_code: match redirect.redirect_code.unwrap_or(301) {
                302 => redirect_action::RedirectResponseCode::Found,
                303 => redirect_action::RedirectResponseCode::SeeOther,
                307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
                308 => redirect_action::RedirectResponseCode::PermanentRedirect,
                _ => redirect_action::RedirectResponseCode::MovedPermanently,
            } as i32,
            scheme_rewrite_specifier: redirect
                .scheme
                .clone()
                .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
            path_rewrite_specifier: redirect
                .uri
                .clone()
                .map(redirect_action::PathRewriteSpecifier::PathRedirect),
            ..RedirectAction::default()
        }));
    }
    if let Some(direct) = &http.direct_response {
        let body = direct.body.as_ref().and_then(|b| {
            let specifier = match (&b.string, &b.bytes) {
                (Some(text), _) => data_source::Specifier::InlineString(text.clone()),
                (None, Some(encoded)) => {
                    data_source::Specifier::InlineBytes(base64_decode(encoded)?)
                }
                (None, None) => return None,
            };
            Some(DataSource { specifier: Some(specifier), ..DataSource::default() })
        });
        return Some(route::Action::DirectResponse(DirectResponseAction {
            status: direct.status,
            body,
            ..DirectResponseAction::default()
        }));
    }
    if http.route.is_empty() {
        // Delegation is resolved into the delegate's routes by the config layer, not here.
        return None;
    }
    let cluster_specifier = match http.route.as_slice() {
        [only] => route_action::ClusterSpecifier::Cluster(destination_cluster(
            snapshot,
            &only.destination,
            namespace,
            port,
        )),
        many => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .filter(|d| d.weight.unwrap_or(0) > 0)
                .map(|d| {
                    let mut cw = weighted_cluster::ClusterWeight {
                        name: destination_cluster(snapshot, &d.destination, namespace, port),
                        weight: Some(UInt32Value {
                            value: u32::try_from(d.weight.unwrap_or(0)).unwrap_or(0),
                        }),
                        ..weighted_cluster::ClusterWeight::default()
                    };
                    if let Some(headers) = &d.headers {
                        let (add, remove) = header_ops(headers.request.as_ref());
                        cw.request_headers_to_add = add;
                        cw.request_headers_to_remove = remove;
                        let (add, remove) = header_ops(headers.response.as_ref());
                        cw.response_headers_to_add = add;
                        cw.response_headers_to_remove = remove;
                    }
                    cw
                })
                .collect(),
            ..WeightedCluster::default()
        }),
    };
    let mut action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(
            http.timeout
                .as_ref()
                .and_then(config_duration)
                .unwrap_or_else(|| duration(std::time::Duration::ZERO)),
        ),
        retry_policy: match &http.retries {
            Some(r) if r.attempts == Some(0) => None,
            other => Some(retry(other.as_ref())),
        },
        hash_policy: http
            .route
            .first()
            .map(|d| hash_policy(snapshot, proxy, &d.destination, namespace, port))
            .unwrap_or_default(),
        ..RouteAction::default()
    };
    if let Some(rewrite) = &http.rewrite {
        if let Some(uri) = &rewrite.uri {
            action.prefix_rewrite = uri.clone();
        }
        if let Some(regex) = &rewrite.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(RegexMatcher {
                    regex: regex.pattern.clone(),
                    ..RegexMatcher::default()
                }),
                substitution: regex.rewrite.clone(),
            });
        }
        if let Some(authority) = &rewrite.authority {
            action.host_rewrite_specifier =
                Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(authority.clone()));
        }
    }
    let mirrors = http
        .mirror
        .iter()
        .map(|d| {
            (
                d,
                http.mirror_percentage
                    .clone()
                    .or(http.mirror_percent.map(|p| Percent { value: f64::from(p) })),
            )
        })
        .chain(http.mirrors.iter().map(|m| (&m.destination, m.percentage.clone())));
    action.request_mirror_policies = mirrors
        .map(|(dest, pct)| route_action::RequestMirrorPolicy {
            cluster: destination_cluster(snapshot, dest, namespace, port),
            runtime_fraction: pct.map(|p| RuntimeFractionalPercent {
                default_value: Some(percent(&p)),
                ..RuntimeFractionalPercent::default()
            }),
            ..route_action::RequestMirrorPolicy::default()
        })
        .collect();
    Some(route::Action::Route(action))
}

/// Session affinity: the consistent-hash key of the destination's DestinationRule (subset and
/// port settings first), as a route hash policy, as Istio puts it.
fn hash_policy(
    snapshot: &Snapshot,
    proxy: &Proxy,
    dest: &Destination,
    namespace: &str,
    port: u16,
) -> Vec<route_action::HashPolicy> {
    use route_action::hash_policy::{
        ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
    };
    let host = snapshot.resolve(&dest.host, namespace);
    let Some(rule) = snapshot.destination_rule(&host, &proxy.namespace) else { return Vec::new() };
    let number = dest.port.as_ref().and_then(|p| u16::try_from(p.number).ok()).unwrap_or(port);
    let subset =
        dest.subset.as_ref().and_then(|name| rule.spec.subsets.iter().find(|s| &s.name == name));
    let policies =
        [subset.and_then(|s| s.traffic_policy.as_ref()), rule.spec.traffic_policy.as_ref()];
    let hash = policies.into_iter().flatten().find_map(|policy| {
        let level = policy
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().is_some_and(|s| s.number == u32::from(number)));
        level
            .and_then(|l| l.load_balancer.as_ref())
            .or(policy.load_balancer.as_ref())?
            .consistent_hash
            .clone()
    });
    let Some(hash) = hash else { return Vec::new() };
    let specifier = if let Some(header) = hash.http_header_name {
        PolicySpecifier::Header(Header { header_name: header, ..Header::default() })
    } else if let Some(cookie) = hash.http_cookie {
        PolicySpecifier::Cookie(Cookie {
            name: cookie.name,
            ttl: cookie.ttl.as_ref().and_then(config_duration),
            path: cookie.path.unwrap_or_default(),
            ..Cookie::default()
        })
    } else if hash.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    } else if let Some(name) = hash.http_query_parameter_name {
        PolicySpecifier::QueryParameter(QueryParameter { name })
    } else {
        return Vec::new();
    };
    vec![route_action::HashPolicy {
        policy_specifier: Some(specifier),
        ..route_action::HashPolicy::default()
    }]
}

fn retry(retries: Option<&HttpRetry>) -> RetryPolicy {
    let retry_on =
        retries.and_then(|r| r.retry_on.clone()).unwrap_or_else(|| DEFAULT_RETRY_ON.to_owned());
    let mut conditions = Vec::new();
    let mut codes = Vec::new();
    for condition in retry_on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match condition.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => conditions.push(condition.to_owned()),
        }
    }
    if !codes.is_empty() && !conditions.iter().any(|c| c == "retriable-status-codes") {
        conditions.push("retriable-status-codes".to_owned());
    }
    RetryPolicy {
        retry_on: conditions.join(","),
        num_retries: Some(UInt32Value {
            value: retries
                .and_then(|r| r.attempts)
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(2),
        }),
        per_try_timeout: retries.and_then(|r| r.per_try_timeout.as_ref()).and_then(config_duration),
        retriable_status_codes: codes,
        retry_host_predicate: vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_owned(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(any(
                PreviousHostsPredicate::default(),
            ))),
        }],
        host_selection_retry_max_attempts: 5,
        ..RetryPolicy::default()
    }
}

/// Fault and CORS settings of a route. Proxyless gRPC clients get no CORS (a browser matter
/// they refuse to parse).
fn per_filter_config(http: &HttpRoute, proxyless: bool) -> HashMap<String, Any> {
    let mut out = HashMap::new();
    if let Some(fault) = &http.fault {
        let mut config = HttpFault::default();
        if let Some(delay) = &fault.delay
            && let Some(fixed) = delay.fixed_delay.as_ref().and_then(config_duration)
        {
            let pct =
                delay.percentage.clone().or(delay.percent.map(|p| Percent { value: f64::from(p) }));
            config.delay = Some(FaultDelay {
                fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(fixed)),
                percentage: Some(percent(&pct.unwrap_or(Percent { value: 100.0 }))),
            });
        }
        if let Some(abort) = &fault.abort {
            let error_type = match (&abort.http_status, &abort.grpc_status) {
                (Some(status), _) => {
                    u32::try_from(*status).ok().map(fault_abort::ErrorType::HttpStatus)
                }
                (None, Some(name)) => grpc_code(name).map(fault_abort::ErrorType::GrpcStatus),
                _ => None,
            };
            if let Some(error_type) = error_type {
                config.abort = Some(FaultAbort {
                    error_type: Some(error_type),
                    percentage: Some(percent(
                        &abort.percentage.clone().unwrap_or(Percent { value: 100.0 }),
                    )),
                    ..FaultAbort::default()
                });
            }
        }
        out.insert(FAULT_FILTER.to_owned(), any(config));
    }
    if let Some(cors) = http.cors_policy.as_ref().filter(|_| !proxyless) {
        let mut origins: Vec<StringMatcher> =
            cors.allow_origins.iter().filter_map(|m| string_matcher(m, false)).collect();
        origins.extend(cors.allow_origin.iter().map(|o| StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(o.clone())),
            ignore_case: false,
        }));
        let policy = envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy {
            allow_origin_string_match: origins,
            allow_methods: cors.allow_methods.join(","),
            allow_headers: cors.allow_headers.join(","),
            expose_headers: cors.expose_headers.join(","),
            max_age: cors
                .max_age
                .as_ref()
                .and_then(|d| d.parse().ok())
                .map(|d| d.as_secs().to_string())
                .unwrap_or_default(),
            allow_credentials: cors.allow_credentials.map(|value| BoolValue { value }),
            ..Default::default()
        };
        out.insert(CORS_FILTER.to_owned(), any(policy));
    }
    out
}

fn grpc_code(name: &str) -> Option<u32> {
    mesh_api::validate::GRPC_STATUSES
        .iter()
        .position(|s| *s == name)
        .and_then(|i| u32::try_from(i).ok())
}

fn header_ops(
    ops: Option<&mesh_api::networking::HeaderOperations>,
) -> (Vec<HeaderValueOption>, Vec<String>) {
    let Some(ops) = ops else { return (Vec::new(), Vec::new()) };
    let option = |(key, value): (&String, &String),
                  action: header_value_option::HeaderAppendAction| {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: key.clone(),
                value: value.clone(),
                ..HeaderValue::default()
            }),
            append_action: action as i32,
            ..HeaderValueOption::default()
        }
    };
    let mut add: Vec<HeaderValueOption> = ops
        .set
        .iter()
        .map(|kv| option(kv, header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect();
    add.extend(
        ops.add
            .iter()
            .map(|kv| option(kv, header_value_option::HeaderAppendAction::AppendIfExistsOrAdd)),
    );
    (add, ops.remove.clone())
}

fn apply_headers(route: &mut Route, headers: &Headers) {
    let (add, remove) = header_ops(headers.request.as_ref());
    route.request_headers_to_add = add;
    route.request_headers_to_remove = remove;
    let (add, remove) = header_ops(headers.response.as_ref());
    route.response_headers_to_add = add;
    route.response_headers_to_remove = remove;
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let produced = chunk.len().saturating_sub(1);
        for i in 0..produced {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}
