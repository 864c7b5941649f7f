//! Validation of VirtualService: hosts, gateways and the HTTP, TLS and TCP routes.

use super::destination;
use crate::ObjectRef;
use crate::identity::{is_dns_label, is_dns_subdomain};
use crate::networking::*;
use crate::validate::{Checker, Code, Path, ValidationError, is_header_name};

/// The `retryOn` conditions the proxy understands (Envoy's names); HTTP status codes may be
/// listed too.
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC status names an abort fault may return.
pub const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Validates a VirtualService.
pub fn virtual_service(vs: &VirtualService) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(vs));
    let spec = &vs.spec;
    let root = Path::root("spec");

    if spec.hosts.is_empty() {
        // Without hosts a VirtualService is a delegate: it only makes sense as the target of
        // another one's `delegate`, which cannot bind it to gateways or carry TCP/TLS routes.
        if !spec.gateways.is_empty() {
            c.error(&root.field("hosts"), Code::Required, "at least one host is required (only a delegate VirtualService has none, and a delegate cannot set gateways)");
        } else if !spec.tcp.is_empty() || !spec.tls.is_empty() {
            c.error(&root.field("hosts"), Code::Required, "at least one host is required (only a delegate VirtualService has none, and a delegate has only http routes)");
        }
    }
    let binds_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
    for (i, host) in spec.hosts.iter().enumerate() {
        let path = root.field("hosts").index(i);
        if host.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        c.host(&path, host);
        if host == "*" && binds_mesh {
            c.error(
                &path,
                Code::InvalidHost,
                "'*' cannot be used for the mesh gateway (sidecars): it would capture every host",
            );
        }
    }
    for (i, gw) in spec.gateways.iter().enumerate() {
        gateway_ref(&mut c, &root.field("gateways").index(i), gw);
    }
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        c.required(&root, "at least one http, tcp or tls route");
    }
    c.export_to(&root.field("exportTo"), &spec.export_to);

    for (i, route) in spec.http.iter().enumerate() {
        let path = root.field("http").index(i);
        http_route(&mut c, &path, route);
    }
    for (i, route) in spec.tls.iter().enumerate() {
        let path = root.field("tls").index(i);
        if route.matches.is_empty() {
            c.error(
                &path.field("match"),
                Code::Required,
                "a tls route needs at least one match with sniHosts",
            );
        }
        for (j, m) in route.matches.iter().enumerate() {
            let mpath = path.field("match").index(j);
            if m.sni_hosts.is_empty() {
                c.required(&mpath.field("sniHosts"), "at least one SNI host");
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                let spath = mpath.field("sniHosts").index(k);
                if c.host(&spath, sni) && !spec.hosts.iter().any(|h| host_covers(h, sni)) {
                    c.error(
                        &spath,
                        Code::SniNotCovered,
                        format!(
                            "SNI host {sni:?} is not covered by any of the VirtualService's hosts"
                        ),
                    );
                }
            }
            l4_match(&mut c, &mpath, &m.destination_subnets, None, m.port, &m.gateways);
        }
        route_destinations(&mut c, &path.field("route"), &route.route);
    }
    for (i, route) in spec.tcp.iter().enumerate() {
        let path = root.field("tcp").index(i);
        for (j, m) in route.matches.iter().enumerate() {
            let mpath = path.field("match").index(j);
            let source = m.source_subnet.as_deref();
            l4_match(&mut c, &mpath, &m.destination_subnets, source, m.port, &m.gateways);
        }
        route_destinations(&mut c, &path.field("route"), &route.route);
    }
    c.finish()
}

/// The connection-level conditions that TLS and TCP matches share (`source_subnet`: TCP only).
fn l4_match(
    c: &mut Checker,
    path: &Path,
    destination_subnets: &[String],
    source_subnet: Option<&str>,
    port: Option<u32>,
    gateways: &[String],
) {
    for (k, subnet) in destination_subnets.iter().enumerate() {
        c.ip_or_cidr(&path.field("destinationSubnets").index(k), subnet);
    }
    if let Some(subnet) = source_subnet {
        c.ip_or_cidr(&path.field("sourceSubnet"), subnet);
    }
    if let Some(port) = port {
        c.port(&path.field("port"), port);
    }
    for (k, gw) in gateways.iter().enumerate() {
        gateway_ref(c, &path.field("gateways").index(k), gw);
    }
}

/// Whether a VirtualService host covers an SNI name (equal, or a wildcard suffix of it).
fn host_covers(host: &str, sni: &str) -> bool {
    if host == "*" || host == sni {
        return true;
    }
    match host.strip_prefix('*') {
        Some(suffix) => sni.ends_with(suffix) && sni.len() > suffix.len(),
        None => false,
    }
}

/// `mesh` or `[namespace/]name` of a Gateway.
fn gateway_ref(c: &mut Checker, path: &Path, gw: &str) {
    if gw == "mesh" {
        return;
    }
    let (namespace, name) = match gw.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, gw),
    };
    let ok = namespace.is_none_or(is_dns_label) && is_dns_subdomain(name);
    if !ok {
        c.error(
            path,
            Code::InvalidName,
            format!("gateway {gw:?} must be 'mesh' or [namespace/]name of a Gateway"),
        );
    }
}

fn http_route(c: &mut Checker, path: &Path, route: &HttpRoute) {
    let has_route = !route.route.is_empty();
    let actions = [
        ("route", has_route),
        ("redirect", route.redirect.is_some()),
        ("directResponse", route.direct_response.is_some()),
        ("delegate", route.delegate.is_some()),
    ];
    let set: Vec<&str> = actions.iter().filter(|(_, set)| *set).map(|(name, _)| *name).collect();
    match set.as_slice() {
        [] => c.error(
            &path.field("route"),
            Code::Required,
            "at least one route destination is required (or a redirect, directResponse or delegate)",
        ),
        [_] => {}
        [first, second, ..] => c.error(
            &path.field(second),
            Code::ConflictingFields,
            format!("{second} cannot be used together with {first}"),
        ),
    }
    if route.rewrite.is_some() && (route.redirect.is_some() || route.direct_response.is_some()) {
        let with = if route.redirect.is_some() { "redirect" } else { "directResponse" };
        c.error(
            &path.field("rewrite"),
            Code::ConflictingFields,
            format!("rewrite cannot be used together with {with}"),
        );
    }

    for (i, m) in route.matches.iter().enumerate() {
        http_match(c, &path.field("match").index(i), m);
    }
    for (i, dest) in route.route.iter().enumerate() {
        let dpath = path.field("route").index(i);
        destination(c, &dpath.field("destination"), &dest.destination);
        if let Some(headers) = &dest.headers {
            header_operations(c, &dpath.field("headers"), headers);
        }
    }
    weights(c, &path.field("route"), route.route.iter().map(|d| d.weight));

    if let Some(redirect) = &route.redirect {
        http_redirect(c, &path.field("redirect"), redirect);
    }
    if let Some(direct) = &route.direct_response {
        let dpath = path.field("directResponse");
        c.http_status(&dpath.field("status"), i64::from(direct.status));
        if let Some(body) = &direct.body
            && body.string.is_some()
            && body.bytes.is_some()
        {
            c.not_both(&dpath.field("body"), "string", "bytes");
        }
    }
    if let Some(delegate) = &route.delegate {
        let dpath = path.field("delegate");
        if !is_dns_subdomain(&delegate.name) {
            c.error(
                &dpath.field("name"),
                Code::InvalidName,
                format!("{:?} is not a VirtualService name", delegate.name),
            );
        }
        if let Some(ns) = &delegate.namespace {
            c.namespace(&dpath.field("namespace"), ns);
        }
    }
    if let Some(rewrite) = &route.rewrite {
        let rpath = path.field("rewrite");
        if rewrite.uri.is_some() && rewrite.uri_regex_rewrite.is_some() {
            c.not_both(&rpath.field("uriRegexRewrite"), "uri", "uriRegexRewrite");
        }
        if let Some(regex) = &rewrite.uri_regex_rewrite {
            c.regex(&rpath.field("uriRegexRewrite").field("match"), &regex.pattern);
        }
        if rewrite.uri.is_none()
            && rewrite.authority.is_none()
            && rewrite.uri_regex_rewrite.is_none()
        {
            c.error(
                &rpath,
                Code::Required,
                "a rewrite must change uri, uriRegexRewrite or authority",
            );
        }
    }
    c.opt_timeout(&path.field("timeout"), route.timeout.as_ref());
    if let Some(retries) = &route.retries {
        http_retry(c, &path.field("retries"), retries);
    }
    if let Some(fault) = &route.fault {
        fault_injection(c, &path.field("fault"), fault);
    }
    http_mirrors(c, path, route);
    if let Some(cors) = &route.cors_policy {
        cors_policy(c, &path.field("corsPolicy"), cors);
    }
    if let Some(headers) = &route.headers {
        header_operations(c, &path.field("headers"), headers);
    }
}

fn http_redirect(c: &mut Checker, path: &Path, redirect: &HttpRedirect) {
    if let Some(code) = redirect.redirect_code
        && !(300..=399).contains(&code)
    {
        c.error(
            &path.field("redirectCode"),
            Code::InvalidHttpStatus,
            format!("redirect code {code} is not a redirect: must be 300 to 399"),
        );
    }
    if let Some(port) = redirect.port {
        c.port(&path.field("port"), port);
        if redirect.derive_port.is_some() {
            c.not_both(&path.field("derivePort"), "port", "derivePort");
        }
    }
    if let Some(derive) = &redirect.derive_port {
        c.known(&path.field("derivePort"), derive);
    }
    if let Some(scheme) = &redirect.scheme
        && !matches!(scheme.as_str(), "http" | "https")
    {
        c.error(
            &path.field("scheme"),
            Code::UnknownValue,
            format!("scheme {scheme:?} must be http or https"),
        );
    }
    if redirect.uri.is_none()
        && redirect.authority.is_none()
        && redirect.port.is_none()
        && redirect.derive_port.is_none()
        && redirect.scheme.is_none()
    {
        c.error(
            path,
            Code::Required,
            "a redirect must change at least one of uri, authority, port, derivePort or scheme",
        );
    }
}

/// `mirror` (with `mirrorPercentage` or the deprecated `mirrorPercent`) or `mirrors`.
fn http_mirrors(c: &mut Checker, path: &Path, route: &HttpRoute) {
    if let Some(mirror) = &route.mirror {
        destination(c, &path.field("mirror"), mirror);
    }
    if route.mirror.is_some() && !route.mirrors.is_empty() {
        c.not_both(&path.field("mirrors"), "mirror", "mirrors");
    }
    if route.mirror_percentage.is_some() && route.mirror_percent.is_some() {
        c.not_both(
            &path.field("mirrorPercent"),
            "mirrorPercentage",
            "the deprecated mirrorPercent",
        );
    }
    if let Some(percent) = &route.mirror_percentage {
        c.percent(&path.field("mirrorPercentage"), percent);
    }
    if let Some(percent) = route.mirror_percent {
        c.percentage(&path.field("mirrorPercent"), f64::from(percent));
    }
    if (route.mirror_percentage.is_some() || route.mirror_percent.is_some())
        && route.mirror.is_none()
    {
        c.error(
            &path.field("mirrorPercentage"),
            Code::Required,
            "a mirror percentage needs a mirror destination",
        );
    }
    for (i, mirror) in route.mirrors.iter().enumerate() {
        let mpath = path.field("mirrors").index(i);
        destination(c, &mpath.field("destination"), &mirror.destination);
        if let Some(percent) = &mirror.percentage {
            c.percent(&mpath.field("percentage"), percent);
        }
    }
}

fn http_match(c: &mut Checker, path: &Path, m: &HttpMatchRequest) {
    for (field, value) in
        [("uri", &m.uri), ("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)]
    {
        if let Some(value) = value {
            c.string_match(&path.field(field), value, true);
        }
    }
    for (field, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
        for (name, value) in map {
            let hpath = path.field(field).key(name);
            // `@request.auth.claims.<claim>` routes on a JWT claim (gateways).
            let claim = name.strip_prefix("@request.auth.claims.").is_some_and(|c| !c.is_empty());
            if !claim {
                c.header_syntax(&hpath, name);
            }
            // `regex: "*"` is Istio's spelling of "present" in withoutHeaders.
            if value.regex.as_deref() == Some("*")
                && value.exact.is_none()
                && value.prefix.is_none()
            {
                continue;
            }
            c.string_match(&hpath, value, false);
        }
    }
    for (name, value) in &m.query_params {
        let qpath = path.field("queryParams").key(name);
        if name.is_empty() {
            c.error(&qpath, Code::Required, "query parameter name is empty");
        }
        c.string_match(&qpath, value, false);
    }
    if let Some(port) = m.port {
        c.port(&path.field("port"), port);
    }
    for (i, gw) in m.gateways.iter().enumerate() {
        gateway_ref(c, &path.field("gateways").index(i), gw);
    }
    if let Some(ns) = &m.source_namespace {
        c.namespace(&path.field("sourceNamespace"), ns);
    }
}

/// Weights of 0..=100 that sum to 100 when there is more than one destination.
fn weights(c: &mut Checker, path: &Path, weights: impl Iterator<Item = Option<i32>>) {
    let weights: Vec<Option<i32>> = weights.collect();
    let mut in_range = true;
    for (i, weight) in weights.iter().enumerate() {
        if let Some(w) = weight
            && !(0..=100).contains(w)
        {
            in_range = false;
            c.error(
                &path.index(i).field("weight"),
                Code::WeightOutOfRange,
                format!("weight {w} is out of range: must be 0 to 100"),
            );
        }
    }
    if !in_range {
        return;
    }
    // A lone destination gets all the traffic whatever its weight, as in Istio.
    match weights.as_slice() {
        [] | [_] => {}
        many => {
            let total: i32 = many.iter().map(|w| w.unwrap_or(0)).sum();
            c.weights_total(path, i128::from(total));
        }
    }
}

fn route_destinations(c: &mut Checker, path: &Path, route: &[RouteDestination]) {
    if route.is_empty() {
        c.required(path, "at least one route destination");
    }
    for (i, dest) in route.iter().enumerate() {
        destination(c, &path.index(i).field("destination"), &dest.destination);
    }
    weights(c, path, route.iter().map(|d| d.weight));
}

/// A retry policy, of a route or the mesh-wide default.
pub(crate) fn http_retry(c: &mut Checker, path: &Path, retry: &HttpRetry) {
    if let Some(attempts) = retry.attempts
        && attempts < 0
    {
        c.error(
            &path.field("attempts"),
            Code::NegativeNumber,
            format!("attempts {attempts} must not be negative"),
        );
    }
    c.opt_duration(&path.field("perTryTimeout"), retry.per_try_timeout.as_ref());
    c.opt_duration(&path.field("backoff"), retry.backoff.as_ref());
    if let Some(retry_on) = &retry.retry_on {
        for condition in retry_on.split(',').map(str::trim) {
            let is_status = condition.parse::<u16>().is_ok_and(|code| (100..=599).contains(&code));
            if !is_status && !RETRY_ON.contains(&condition) {
                c.error(
                    &path.field("retryOn"),
                    Code::UnknownValue,
                    format!("unknown retry condition {condition:?}: must be an HTTP status code or one of {}", RETRY_ON.join(", ")),
                );
            }
        }
    }
}

fn fault_injection(c: &mut Checker, path: &Path, fault: &HttpFaultInjection) {
    if fault.delay.is_none() && fault.abort.is_none() {
        c.error(path, Code::Required, "a fault needs a delay or an abort");
    }
    if let Some(delay) = &fault.delay {
        let dpath = path.field("delay");
        match (&delay.fixed_delay, &delay.exponential_delay) {
            (Some(fixed), _) => c.duration(&dpath.field("fixedDelay"), fixed, false),
            (None, Some(_)) => c.error(
                &dpath.field("exponentialDelay"),
                Code::Unsupported,
                "exponentialDelay is not supported; use fixedDelay",
            ),
            // Istio accepts a delay without one; it delays nothing.
            (None, None) => {}
        }
        if let Some(percent) = &delay.percentage {
            c.percent(&dpath.field("percentage"), percent);
        }
        if let Some(percent) = delay.percent {
            c.percentage(&dpath.field("percent"), f64::from(percent));
            if delay.percentage.is_some() {
                c.not_both(&dpath.field("percent"), "percentage", "the deprecated percent");
            }
        }
    }
    if let Some(abort) = &fault.abort {
        let apath = path.field("abort");
        match (abort.http_status, &abort.grpc_status, &abort.http2_error) {
            (Some(status), None, None) => {
                c.http_status(&apath.field("httpStatus"), i64::from(status));
            }
            (None, Some(status), None) => {
                if !GRPC_STATUSES.contains(&status.as_str()) {
                    c.error(
                        &apath.field("grpcStatus"),
                        Code::UnknownValue,
                        format!(
                            "unknown gRPC status {status:?}: must be one of {}",
                            GRPC_STATUSES.join(", ")
                        ),
                    );
                }
            }
            (None, None, Some(_)) => c.error(
                &apath.field("http2Error"),
                Code::Unsupported,
                "http2Error is not supported; use httpStatus or grpcStatus",
            ),
            (None, None, None) => {
                c.error(&apath, Code::Required, "an abort needs httpStatus or grpcStatus");
            }
            _ => c.error(
                &apath,
                Code::ConflictingFields,
                "set only one of httpStatus, grpcStatus or http2Error",
            ),
        }
        if let Some(percent) = &abort.percentage {
            c.percent(&apath.field("percentage"), percent);
        }
    }
}

fn cors_policy(c: &mut Checker, path: &Path, cors: &CorsPolicy) {
    for (i, origin) in cors.allow_origins.iter().enumerate() {
        c.string_match(&path.field("allowOrigins").index(i), origin, true);
    }
    if !cors.allow_origin.is_empty() && !cors.allow_origins.is_empty() {
        c.not_both(&path.field("allowOrigin"), "allowOrigins", "the deprecated allowOrigin");
    }
    for (i, method) in cors.allow_methods.iter().enumerate() {
        if !is_header_name(method) || method.starts_with(':') {
            c.error(
                &path.field("allowMethods").index(i),
                Code::InvalidHttpMethod,
                format!("{method:?} is not an HTTP method"),
            );
        }
    }
    for (field, names) in
        [("allowHeaders", &cors.allow_headers), ("exposeHeaders", &cors.expose_headers)]
    {
        for (i, name) in names.iter().enumerate() {
            if name != "*" {
                c.header_syntax(&path.field(field).index(i), name);
            }
        }
    }
    c.opt_duration(&path.field("maxAge"), cors.max_age.as_ref());
    if let Some(mode) = &cors.unmatched_preflights {
        c.known(&path.field("unmatchedPreflights"), mode);
    }
}

fn header_operations(c: &mut Checker, path: &Path, headers: &Headers) {
    for (field, ops) in [("request", &headers.request), ("response", &headers.response)] {
        let Some(ops) = ops else { continue };
        let opath = path.field(field);
        for name in ops.set.keys() {
            c.header_name(&opath.field("set").key(name), name, false);
        }
        for name in ops.add.keys() {
            c.header_name(&opath.field("add").key(name), name, false);
        }
        for (i, name) in ops.remove.iter().enumerate() {
            c.header_name(&opath.field("remove").index(i), name, true);
        }
    }
}
