//! Validation of the `networking.istio.io` kinds.

use std::collections::{BTreeMap, BTreeSet};

use super::{Checker, Path, ValidationError, check_wildcard_domain};
use crate::ObjectRef;
use crate::identity::{is_dns_label, is_dns_subdomain};
use crate::networking::*;

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
            c.error(&root.field("hosts"), "at least one host is required (only a delegate VirtualService has none, and a delegate cannot set gateways)");
        } else if !spec.tcp.is_empty() || !spec.tls.is_empty() {
            c.error(&root.field("hosts"), "at least one host is required (only a delegate VirtualService has none, and a delegate has only http routes)");
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
                "'*' cannot be used for the mesh gateway (sidecars): it would capture every host",
            );
        }
    }
    for (i, gw) in spec.gateways.iter().enumerate() {
        gateway_ref(&mut c, &root.field("gateways").index(i), gw);
    }
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        c.error(&root, "at least one http, tcp or tls route is required");
    }
    c.export_to(&root.field("exportTo"), &spec.export_to);

    for (i, route) in spec.http.iter().enumerate() {
        let path = root.field("http").index(i);
        http_route(&mut c, &path, route);
    }
    for (i, route) in spec.tls.iter().enumerate() {
        let path = root.field("tls").index(i);
        if route.matches.is_empty() {
            c.error(&path.field("match"), "a tls route needs at least one match with sniHosts");
        }
        for (j, m) in route.matches.iter().enumerate() {
            let mpath = path.field("match").index(j);
            if m.sni_hosts.is_empty() {
                c.error(&mpath.field("sniHosts"), "at least one SNI host is required");
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                let spath = mpath.field("sniHosts").index(k);
                if let Err(reason) = check_wildcard_domain(sni) {
                    c.error(&spath, reason);
                } else if !spec.hosts.iter().any(|h| host_covers(h, sni)) {
                    c.error(
                        &spath,
                        format!(
                            "SNI host {sni:?} is not covered by any of the VirtualService's hosts"
                        ),
                    );
                }
            }
            for (k, subnet) in m.destination_subnets.iter().enumerate() {
                c.ip_or_cidr(&mpath.field("destinationSubnets").index(k), subnet);
            }
            if let Some(port) = m.port {
                c.port(&mpath.field("port"), port);
            }
            for (k, gw) in m.gateways.iter().enumerate() {
                gateway_ref(&mut c, &mpath.field("gateways").index(k), gw);
            }
        }
        route_destinations(&mut c, &path.field("route"), &route.route);
    }
    for (i, route) in spec.tcp.iter().enumerate() {
        let path = root.field("tcp").index(i);
        for (j, m) in route.matches.iter().enumerate() {
            let mpath = path.field("match").index(j);
            for (k, subnet) in m.destination_subnets.iter().enumerate() {
                c.ip_or_cidr(&mpath.field("destinationSubnets").index(k), subnet);
            }
            if let Some(subnet) = &m.source_subnet {
                c.ip_or_cidr(&mpath.field("sourceSubnet"), subnet);
            }
            if let Some(port) = m.port {
                c.port(&mpath.field("port"), port);
            }
            for (k, gw) in m.gateways.iter().enumerate() {
                gateway_ref(&mut c, &mpath.field("gateways").index(k), gw);
            }
        }
        route_destinations(&mut c, &path.field("route"), &route.route);
    }
    c.finish()
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
        c.error(path, format!("gateway {gw:?} must be 'mesh' or [namespace/]name of a Gateway"));
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
            "at least one route destination is required (or a redirect, directResponse or delegate)",
        ),
        [_] => {}
        [first, second, ..] => c.error(
            &path.field(second),
            format!("{second} cannot be used together with {first}"),
        ),
    }
    if route.rewrite.is_some() && (route.redirect.is_some() || route.direct_response.is_some()) {
        let with = if route.redirect.is_some() { "redirect" } else { "directResponse" };
        c.error(&path.field("rewrite"), format!("rewrite cannot be used together with {with}"));
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
        let rpath = path.field("redirect");
        if let Some(code) = redirect.redirect_code
            && !(300..=399).contains(&code)
        {
            c.error(
                &rpath.field("redirectCode"),
                format!("redirect code {code} is not a redirect: must be 300 to 399"),
            );
        }
        if let Some(port) = redirect.port {
            c.port(&rpath.field("port"), port);
            if redirect.derive_port.is_some() {
                c.error(&rpath.field("derivePort"), "set port or derivePort, not both");
            }
        }
        if let Some(derive) = &redirect.derive_port {
            c.known(&rpath.field("derivePort"), derive);
        }
        if let Some(scheme) = &redirect.scheme
            && !matches!(scheme.as_str(), "http" | "https")
        {
            c.error(&rpath.field("scheme"), format!("scheme {scheme:?} must be http or https"));
        }
        if redirect.uri.is_none()
            && redirect.authority.is_none()
            && redirect.port.is_none()
            && redirect.derive_port.is_none()
            && redirect.scheme.is_none()
        {
            c.error(
                &rpath,
                "a redirect must change at least one of uri, authority, port, derivePort or scheme",
            );
        }
    }
    if let Some(direct) = &route.direct_response {
        let dpath = path.field("directResponse");
        if !(200..=599).contains(&direct.status) {
            c.error(
                &dpath.field("status"),
                format!("status {} is not a valid HTTP status: must be 200 to 599", direct.status),
            );
        }
        if let Some(body) = &direct.body
            && body.string.is_some()
            && body.bytes.is_some()
        {
            c.error(&dpath.field("body"), "set string or bytes, not both");
        }
    }
    if let Some(delegate) = &route.delegate {
        let dpath = path.field("delegate");
        if !is_dns_subdomain(&delegate.name) {
            c.error(
                &dpath.field("name"),
                format!("{:?} is not a VirtualService name", delegate.name),
            );
        }
        if let Some(ns) = &delegate.namespace
            && !is_dns_label(ns)
        {
            c.error(&dpath.field("namespace"), format!("{ns:?} is not a namespace name"));
        }
    }
    if let Some(rewrite) = &route.rewrite {
        let rpath = path.field("rewrite");
        if rewrite.uri.is_some() && rewrite.uri_regex_rewrite.is_some() {
            c.error(&rpath.field("uriRegexRewrite"), "set uri or uriRegexRewrite, not both");
        }
        if let Some(regex) = &rewrite.uri_regex_rewrite {
            c.regex(&rpath.field("uriRegexRewrite").field("match"), &regex.pattern);
        }
        if rewrite.uri.is_none()
            && rewrite.authority.is_none()
            && rewrite.uri_regex_rewrite.is_none()
        {
            c.error(&rpath, "a rewrite must change uri, uriRegexRewrite or authority");
        }
    }
    if let Some(timeout) = &route.timeout {
        c.duration(&path.field("timeout"), timeout, true);
    }
    if let Some(retries) = &route.retries {
        http_retry(c, &path.field("retries"), retries);
    }
    if let Some(fault) = &route.fault {
        fault_injection(c, &path.field("fault"), fault);
    }
    if let Some(mirror) = &route.mirror {
        destination(c, &path.field("mirror"), mirror);
    }
    if route.mirror.is_some() && !route.mirrors.is_empty() {
        c.error(&path.field("mirrors"), "set mirror or mirrors, not both");
    }
    if route.mirror_percentage.is_some() && route.mirror_percent.is_some() {
        c.error(
            &path.field("mirrorPercent"),
            "set mirrorPercentage or the deprecated mirrorPercent, not both",
        );
    }
    if let Some(percent) = &route.mirror_percentage {
        c.percent(&path.field("mirrorPercentage"), percent);
    }
    if let Some(percent) = route.mirror_percent
        && percent > 100
    {
        c.error(
            &path.field("mirrorPercent"),
            format!("percentage {percent} is out of range: must be 0 to 100"),
        );
    }
    if (route.mirror_percentage.is_some() || route.mirror_percent.is_some())
        && route.mirror.is_none()
    {
        c.error(&path.field("mirrorPercentage"), "a mirror percentage needs a mirror destination");
    }
    for (i, mirror) in route.mirrors.iter().enumerate() {
        let mpath = path.field("mirrors").index(i);
        destination(c, &mpath.field("destination"), &mirror.destination);
        if let Some(percent) = &mirror.percentage {
            c.percent(&mpath.field("percentage"), percent);
        }
    }
    if let Some(cors) = &route.cors_policy {
        cors_policy(c, &path.field("corsPolicy"), cors);
    }
    if let Some(headers) = &route.headers {
        header_operations(c, &path.field("headers"), headers);
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
            if !claim && !super::is_header_name(name) {
                c.error(&hpath, format!("{name:?} is not a valid HTTP header name"));
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
            c.error(&qpath, "query parameter name is empty");
        }
        c.string_match(&qpath, value, false);
    }
    if let Some(port) = m.port {
        c.port(&path.field("port"), port);
    }
    for (i, gw) in m.gateways.iter().enumerate() {
        gateway_ref(c, &path.field("gateways").index(i), gw);
    }
    if let Some(ns) = &m.source_namespace
        && !is_dns_label(ns)
    {
        c.error(&path.field("sourceNamespace"), format!("{ns:?} is not a namespace name"));
    }
}

fn destination(c: &mut Checker, path: &Path, dest: &Destination) {
    if dest.host.is_empty() {
        c.error(&path.field("host"), "host is required");
    } else if dest.host == "*" {
        c.error(&path.field("host"), "a destination must name a service, not '*'");
    } else {
        c.host(&path.field("host"), &dest.host);
    }
    if let Some(subset) = &dest.subset
        && !super::is_host_label(subset)
    {
        c.error(&path.field("subset"), format!("subset {subset:?} is not a valid subset name"));
    }
    if let Some(port) = &dest.port {
        c.port(&path.field("port").field("number"), port.number);
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
            if total != 100 {
                c.error(path, format!("weights add up to {total}: they must sum to 100"));
            }
        }
    }
}

fn route_destinations(c: &mut Checker, path: &Path, route: &[RouteDestination]) {
    if route.is_empty() {
        c.error(path, "at least one route destination is required");
    }
    for (i, dest) in route.iter().enumerate() {
        destination(c, &path.index(i).field("destination"), &dest.destination);
    }
    weights(c, path, route.iter().map(|d| d.weight));
}

pub(crate) fn http_retry(c: &mut Checker, path: &Path, retry: &HttpRetry) {
    if let Some(attempts) = retry.attempts
        && attempts < 0
    {
        c.error(&path.field("attempts"), format!("attempts {attempts} must not be negative"));
    }
    c.opt_duration(&path.field("perTryTimeout"), retry.per_try_timeout.as_ref());
    c.opt_duration(&path.field("backoff"), retry.backoff.as_ref());
    if let Some(retry_on) = &retry.retry_on {
        for condition in retry_on.split(',').map(str::trim) {
            let is_status = condition.parse::<u16>().is_ok_and(|code| (100..=599).contains(&code));
            if !is_status && !RETRY_ON.contains(&condition) {
                c.error(
                    &path.field("retryOn"),
                    format!("unknown retry condition {condition:?}: must be an HTTP status code or one of {}", RETRY_ON.join(", ")),
                );
            }
        }
    }
}

fn fault_injection(c: &mut Checker, path: &Path, fault: &HttpFaultInjection) {
    if fault.delay.is_none() && fault.abort.is_none() {
        c.error(path, "a fault needs a delay or an abort");
    }
    if let Some(delay) = &fault.delay {
        let dpath = path.field("delay");
        match (&delay.fixed_delay, &delay.exponential_delay) {
            (Some(fixed), _) => c.duration(&dpath.field("fixedDelay"), fixed, false),
            (None, Some(_)) => c.error(
                &dpath.field("exponentialDelay"),
                "exponentialDelay is not supported; use fixedDelay",
            ),
            // Istio accepts a delay without one; it delays nothing.
            (None, None) => {}
        }
        if let Some(percent) = &delay.percentage {
            c.percent(&dpath.field("percentage"), percent);
        }
        if let Some(percent) = delay.percent {
            if !(0..=100).contains(&percent) {
                c.error(
                    &dpath.field("percent"),
                    format!("percentage {percent} is out of range: must be 0 to 100"),
                );
            }
            if delay.percentage.is_some() {
                c.error(
                    &dpath.field("percent"),
                    "set percentage or the deprecated percent, not both",
                );
            }
        }
    }
    if let Some(abort) = &fault.abort {
        let apath = path.field("abort");
        match (abort.http_status, &abort.grpc_status, &abort.http2_error) {
            (Some(status), None, None) => {
                if !(200..=599).contains(&status) {
                    c.error(
                        &apath.field("httpStatus"),
                        format!("status {status} is not a valid HTTP status: must be 200 to 599"),
                    );
                }
            }
            (None, Some(status), None) => {
                if !GRPC_STATUSES.contains(&status.as_str()) {
                    c.error(
                        &apath.field("grpcStatus"),
                        format!(
                            "unknown gRPC status {status:?}: must be one of {}",
                            GRPC_STATUSES.join(", ")
                        ),
                    );
                }
            }
            (None, None, Some(_)) => c.error(
                &apath.field("http2Error"),
                "http2Error is not supported; use httpStatus or grpcStatus",
            ),
            (None, None, None) => c.error(&apath, "an abort needs httpStatus or grpcStatus"),
            _ => c.error(&apath, "set only one of httpStatus, grpcStatus or http2Error"),
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
        c.error(
            &path.field("allowOrigin"),
            "set allowOrigins or the deprecated allowOrigin, not both",
        );
    }
    for (i, method) in cors.allow_methods.iter().enumerate() {
        if !super::is_header_name(method) || method.starts_with(':') {
            c.error(
                &path.field("allowMethods").index(i),
                format!("{method:?} is not an HTTP method"),
            );
        }
    }
    for (field, names) in
        [("allowHeaders", &cors.allow_headers), ("exposeHeaders", &cors.expose_headers)]
    {
        for (i, name) in names.iter().enumerate() {
            if name != "*" && !super::is_header_name(name) {
                c.error(
                    &path.field(field).index(i),
                    format!("{name:?} is not a valid HTTP header name"),
                );
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

/// Validates a DestinationRule.
pub fn destination_rule(dr: &DestinationRule) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(dr));
    let spec = &dr.spec;
    let root = Path::root("spec");
    if spec.host.is_empty() {
        c.error(&root.field("host"), "host is required");
    } else {
        c.host(&root.field("host"), &spec.host);
    }
    if let Some(policy) = &spec.traffic_policy {
        traffic_policy(&mut c, &root.field("trafficPolicy"), policy);
    }
    let mut names = BTreeSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let path = root.field("subsets").index(i);
        if subset.name.is_empty() {
            c.error(&path.field("name"), "subset name is required");
        } else if !super::is_host_label(&subset.name) {
            c.error(
                &path.field("name"),
                format!(
                    "subset name {:?} must be a DNS label (letters, digits and '-')",
                    subset.name
                ),
            );
        } else if !names.insert(subset.name.as_str()) {
            c.error(
                &path.field("name"),
                format!("subset name {:?} is already used by an earlier subset", subset.name),
            );
        }
        labels(&mut c, &path.field("labels"), &subset.labels);
        if let Some(policy) = &subset.traffic_policy {
            traffic_policy(&mut c, &path.field("trafficPolicy"), policy);
        }
    }
    c.export_to(&root.field("exportTo"), &spec.export_to);
    if let Some(selector) = &spec.workload_selector {
        labels(
            &mut c,
            &root.field("workloadSelector").field("matchLabels"),
            &selector.match_labels,
        );
    }
    c.finish()
}

fn labels(c: &mut Checker, path: &Path, labels: &BTreeMap<String, String>) {
    for (key, value) in labels {
        let name = key.rsplit_once('/').map_or(key.as_str(), |(_, name)| name);
        let key_ok = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && key.rsplit_once('/').is_none_or(|(prefix, _)| is_dns_subdomain(prefix));
        if !key_ok {
            c.error(&path.key(key), format!("{key:?} is not a valid label key"));
        }
        let value_ok = value.len() <= 63
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !value_ok {
            c.error(&path.key(key), format!("{value:?} is not a valid label value"));
        }
    }
}

fn traffic_policy(c: &mut Checker, path: &Path, policy: &TrafficPolicy) {
    port_policy(
        c,
        path,
        policy.load_balancer.as_ref(),
        policy.connection_pool.as_ref(),
        policy.outlier_detection.as_ref(),
        policy.tls.as_ref(),
    );
    let mut ports = BTreeSet::new();
    for (i, port_policy_entry) in policy.port_level_settings.iter().enumerate() {
        let ppath = path.field("portLevelSettings").index(i);
        match &port_policy_entry.port {
            None => c.error(&ppath.field("port"), "port is required"),
            Some(port) => {
                c.port(&ppath.field("port").field("number"), port.number);
                if !ports.insert(port.number) {
                    c.error(
                        &ppath.field("port").field("number"),
                        format!("port {} already has settings in an earlier entry", port.number),
                    );
                }
            }
        }
        port_policy(
            c,
            &ppath,
            port_policy_entry.load_balancer.as_ref(),
            port_policy_entry.connection_pool.as_ref(),
            port_policy_entry.outlier_detection.as_ref(),
            port_policy_entry.tls.as_ref(),
        );
    }
    if let Some(tunnel) = &policy.tunnel {
        let tpath = path.field("tunnel");
        if let Some(protocol) = &tunnel.protocol
            && !matches!(protocol.as_str(), "CONNECT" | "POST")
        {
            c.error(
                &tpath.field("protocol"),
                format!("unknown value {protocol:?}: must be one of CONNECT, POST"),
            );
        }
        if tunnel.target_host.is_empty() {
            c.error(&tpath.field("targetHost"), "targetHost is required");
        }
        c.port(&tpath.field("targetPort"), tunnel.target_port);
    }
    if let Some(proxy_protocol) = &policy.proxy_protocol
        && let Some(version) = &proxy_protocol.version
    {
        c.known(&path.field("proxyProtocol").field("version"), version);
    }
    if let Some(budget) = &policy.retry_budget
        && let Some(percent) = &budget.percent
    {
        c.percent(&path.field("retryBudget").field("percent"), percent);
    }
}

fn port_policy(
    c: &mut Checker,
    path: &Path,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        load_balancer(c, &path.field("loadBalancer"), lb);
    }
    if let Some(pool) = pool {
        connection_pool(c, &path.field("connectionPool"), pool);
    }
    if let Some(outlier) = outlier {
        outlier_detection(c, &path.field("outlierDetection"), outlier);
    }
    if let Some(tls) = tls {
        client_tls(c, &path.field("tls"), tls);
    }
}

fn load_balancer(c: &mut Checker, path: &Path, lb: &LoadBalancerSettings) {
    if let Some(simple) = &lb.simple {
        c.known(&path.field("simple"), simple);
        if lb.consistent_hash.is_some() {
            c.error(&path.field("consistentHash"), "set simple or consistentHash, not both");
        }
    }
    if let Some(hash) = &lb.consistent_hash {
        let hpath = path.field("consistentHash");
        let keys = [
            hash.http_header_name.is_some(),
            hash.http_cookie.is_some(),
            hash.use_source_ip == Some(true),
            hash.http_query_parameter_name.is_some(),
        ];
        match keys.iter().filter(|k| **k).count() {
            0 | 1 => {}
            _ => c.error(&hpath, "set only one hash key of httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName"),
        }
        if let Some(name) = &hash.http_header_name
            && !super::is_header_name(name)
        {
            c.error(
                &hpath.field("httpHeaderName"),
                format!("{name:?} is not a valid HTTP header name"),
            );
        }
        if let Some(cookie) = &hash.http_cookie {
            if cookie.name.is_empty() {
                c.error(&hpath.field("httpCookie").field("name"), "cookie name is required");
            }
            c.opt_duration(&hpath.field("httpCookie").field("ttl"), cookie.ttl.as_ref());
        }
        if hash.ring_hash.is_some() && hash.maglev.is_some() {
            c.error(&hpath.field("maglev"), "set ringHash or maglev, not both");
        }
        if hash.minimum_ring_size.is_some() && hash.maglev.is_some() {
            c.error(
                &hpath.field("minimumRingSize"),
                "minimumRingSize applies to ringHash, not maglev",
            );
        }
    }
    if let Some(locality) = &lb.locality_lb_setting {
        let lpath = path.field("localityLbSetting");
        if !locality.distribute.is_empty() && !locality.failover.is_empty() {
            c.error(&lpath.field("failover"), "set distribute or failover, not both");
        }
        for (i, rule) in locality.distribute.iter().enumerate() {
            let total: u64 = rule.to.values().map(|w| u64::from(*w)).sum();
            if total != 100 {
                c.error(
                    &lpath.field("distribute").index(i).field("to"),
                    format!("weights add up to {total}: they must sum to 100"),
                );
            }
        }
        for (i, rule) in locality.failover.iter().enumerate() {
            if rule.from.is_empty() || rule.to.is_empty() {
                c.error(
                    &lpath.field("failover").index(i),
                    "failover needs both from and to regions",
                );
            } else if rule.from == rule.to {
                c.error(
                    &lpath.field("failover").index(i),
                    format!("region {:?} cannot fail over to itself", rule.from),
                );
            }
        }
    }
    c.opt_duration(&path.field("warmupDurationSecs"), lb.warmup_duration_secs.as_ref());
    if let Some(warmup) = &lb.warmup {
        let wpath = path.field("warmup");
        c.opt_duration(&wpath.field("duration"), warmup.duration.as_ref());
        if let Some(min) = warmup.minimum_percent
            && !(0.0..=100.0).contains(&min)
        {
            c.error(
                &wpath.field("minimumPercent"),
                format!("percentage {min} is out of range: must be 0 to 100"),
            );
        }
        if let Some(aggression) = warmup.aggression
            && aggression < 1.0
        {
            c.error(
                &wpath.field("aggression"),
                format!("aggression {aggression} must be at least 1"),
            );
        }
    }
}

fn connection_pool(c: &mut Checker, path: &Path, pool: &ConnectionPoolSettings) {
    let non_negative = |c: &mut Checker, path: Path, value: Option<i32>| {
        if let Some(v) = value
            && v < 0
        {
            c.error(&path, format!("{v} must not be negative"));
        }
    };
    if pool.tcp.is_none() && pool.http.is_none() {
        c.error(path, "set tcp or http settings");
    }
    if let Some(tcp) = &pool.tcp {
        let tpath = path.field("tcp");
        non_negative(c, tpath.field("maxConnections"), tcp.max_connections);
        c.opt_duration(&tpath.field("connectTimeout"), tcp.connect_timeout.as_ref());
        c.opt_duration(&tpath.field("maxConnectionDuration"), tcp.max_connection_duration.as_ref());
        if let Some(idle) = &tcp.idle_timeout {
            c.duration(&tpath.field("idleTimeout"), idle, true);
        }
        if let Some(keepalive) = &tcp.tcp_keepalive {
            let kpath = tpath.field("tcpKeepalive");
            c.opt_duration(&kpath.field("time"), keepalive.time.as_ref());
            c.opt_duration(&kpath.field("interval"), keepalive.interval.as_ref());
        }
    }
    if let Some(http) = &pool.http {
        let hpath = path.field("http");
        non_negative(c, hpath.field("http1MaxPendingRequests"), http.http1_max_pending_requests);
        non_negative(c, hpath.field("http2MaxRequests"), http.http2_max_requests);
        non_negative(c, hpath.field("maxRequestsPerConnection"), http.max_requests_per_connection);
        non_negative(c, hpath.field("maxRetries"), http.max_retries);
        non_negative(c, hpath.field("maxConcurrentStreams"), http.max_concurrent_streams);
        if let Some(idle) = &http.idle_timeout {
            c.duration(&hpath.field("idleTimeout"), idle, true);
        }
        if let Some(policy) = &http.h2_upgrade_policy {
            c.known(&hpath.field("h2UpgradePolicy"), policy);
        }
    }
}

fn outlier_detection(c: &mut Checker, path: &Path, outlier: &OutlierDetection) {
    for (field, value) in [
        ("maxEjectionPercent", outlier.max_ejection_percent),
        ("minHealthPercent", outlier.min_health_percent),
    ] {
        if let Some(v) = value
            && !(0..=100).contains(&v)
        {
            c.error(
                &path.field(field),
                format!("percentage {v} is out of range: must be 0 to 100"),
            );
        }
    }
    if let Some(v) = outlier.consecutive_errors
        && v < 0
    {
        c.error(&path.field("consecutiveErrors"), format!("{v} must not be negative"));
    }
    c.opt_duration(&path.field("interval"), outlier.interval.as_ref());
    c.opt_duration(&path.field("baseEjectionTime"), outlier.base_ejection_time.as_ref());
}

fn client_tls(c: &mut Checker, path: &Path, tls: &ClientTlsSettings) {
    let Some(mode) = &tls.mode else {
        return;
    };
    c.known(&path.field("mode"), mode);
    match mode {
        ClientTlsMode::Mutual => {
            let has_files = tls.client_certificate.is_some() && tls.private_key.is_some();
            if !has_files && tls.credential_name.is_none() {
                c.error(path, "MUTUAL needs credentialName, or clientCertificate and privateKey");
            }
        }
        ClientTlsMode::IstioMutual => {
            for (field, set) in [
                ("clientCertificate", tls.client_certificate.is_some()),
                ("privateKey", tls.private_key.is_some()),
                ("caCertificates", tls.ca_certificates.is_some()),
                ("credentialName", tls.credential_name.is_some()),
            ] {
                if set {
                    c.error(&path.field(field), format!("{field} cannot be set with ISTIO_MUTUAL: the mesh's own workload certificates are used"));
                }
            }
        }
        _ => {}
    }
}

/// Validates a Gateway.
pub fn gateway(gw: &Gateway) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(gw));
    let root = Path::root("spec");
    if gw.spec.servers.is_empty() {
        c.error(&root.field("servers"), "at least one server is required");
    }
    let mut names = BTreeSet::new();
    for (i, server) in gw.spec.servers.iter().enumerate() {
        let path = root.field("servers").index(i);
        port(&mut c, &path.field("port"), &server.port, true);
        if server.hosts.is_empty() {
            c.error(&path.field("hosts"), "at least one host is required");
        }
        for (j, host) in server.hosts.iter().enumerate() {
            namespaced_host(&mut c, &path.field("hosts").index(j), host, false);
        }
        if let Some(name) = &server.name
            && !names.insert(name.as_str())
        {
            c.error(
                &path.field("name"),
                format!("server name {name:?} is used by an earlier server"),
            );
        }
        let protocol = server.port.protocol.to_ascii_uppercase();
        let terminates = matches!(protocol.as_str(), "HTTPS" | "TLS");
        match &server.tls {
            None if terminates => {
                c.error(&path.field("tls"), format!("a {protocol} server needs tls settings"))
            }
            None => {}
            Some(tls) => server_tls(&mut c, &path.field("tls"), tls, &protocol),
        }
    }
    labels(&mut c, &root.field("selector"), &gw.spec.selector);
    c.finish()
}

fn server_tls(c: &mut Checker, path: &Path, tls: &ServerTlsSettings, protocol: &str) {
    if let Some(mode) = &tls.mode {
        c.known(&path.field("mode"), mode);
        let has_credential = tls.credential_name.is_some() || !tls.credential_names.is_empty();
        let has_files = (tls.server_certificate.is_some() && tls.private_key.is_some())
            || !tls.tls_certificates.is_empty();
        match mode {
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                if !has_credential && !has_files {
                    c.error(
                        path,
                        format!("{mode} needs credentialName, or serverCertificate and privateKey"),
                    );
                }
                if *mode != ServerTlsMode::Simple
                    && !has_credential
                    && tls.ca_certificates.is_none()
                {
                    c.error(path, format!("{mode} needs caCertificates (or a credentialName holding the CA) to verify clients"));
                }
            }
            _ => {}
        }
        if matches!(protocol, "HTTP" | "GRPC" | "HTTP2" | "TCP")
            && *mode != ServerTlsMode::IstioMutual
        {
            c.error(
                &path.field("mode"),
                format!("TLS mode {mode} needs an HTTPS or TLS server, not {protocol}"),
            );
        }
    }
    if tls.credential_name.is_some() && !tls.credential_names.is_empty() {
        c.error(&path.field("credentialNames"), "set credentialName or credentialNames, not both");
    }
    for (field, version) in [
        ("minProtocolVersion", &tls.min_protocol_version),
        ("maxProtocolVersion", &tls.max_protocol_version),
    ] {
        if let Some(v) = version {
            c.known(&path.field(field), v);
        }
    }
    if let (Some(min), Some(max)) = (&tls.min_protocol_version, &tls.max_protocol_version) {
        let rank = |v: &TlsProtocol| TlsProtocol::KNOWN.iter().position(|k| *k == v.as_str());
        if let (Some(lo), Some(hi)) = (rank(min), rank(max))
            && lo > 0
            && hi > 0
            && lo > hi
        {
            c.error(
                &path.field("minProtocolVersion"),
                format!("{min} is above maxProtocolVersion {max}"),
            );
        }
    }
}

/// A port with number, protocol and name; `protocol_required` for gateway servers.
fn port(c: &mut Checker, path: &Path, port: &Port, protocol_required: bool) {
    c.port(&path.field("number"), port.number);
    if port.protocol.is_empty() {
        if protocol_required {
            c.error(&path.field("protocol"), "protocol is required");
        }
    } else if !PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(&port.protocol)) {
        c.error(
            &path.field("protocol"),
            format!(
                "unknown protocol {:?}: must be one of {}",
                port.protocol,
                PROTOCOLS.join(", ")
            ),
        );
    }
    if let Some(target) = port.target_port {
        c.port(&path.field("targetPort"), target);
    }
}

/// `[namespace/]dnsName` (gateways) or `namespace/dnsName` (sidecar egress, `namespace_required`).
fn namespaced_host(c: &mut Checker, path: &Path, host: &str, namespace_required: bool) {
    let (namespace, name) = match host.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, host),
    };
    match namespace {
        None if namespace_required => {
            c.error(
                path,
                format!(
                    "host {host:?} must be namespace/dnsName, as in \"./*\" or \"istio-system/*\""
                ),
            );
            return;
        }
        Some(ns) if !(matches!(ns, "*" | "." | "~") || is_dns_label(ns)) => {
            c.error(path, format!("{ns:?} in host {host:?} is not a namespace, '.', '~' or '*'"));
        }
        _ => {}
    }
    if let Err(reason) = check_wildcard_domain(name) {
        c.error(path, reason);
    }
}

/// Validates a ServiceEntry.
pub fn service_entry(se: &ServiceEntry) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(se));
    let spec = &se.spec;
    let root = Path::root("spec");
    if spec.hosts.is_empty() {
        c.error(&root.field("hosts"), "at least one host is required");
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        let path = root.field("hosts").index(i);
        if host == "*" {
            c.error(&path, "'*' is not allowed as a ServiceEntry host");
        } else {
            c.host(&path, host);
        }
    }
    for (i, address) in spec.addresses.iter().enumerate() {
        c.ip_or_cidr(&root.field("addresses").index(i), address);
    }
    let mut numbers = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let path = root.field("ports").index(i);
        // An empty protocol asks the proxy to detect it, as in Istio.
        port(&mut c, &path, p, false);
        if !numbers.insert(p.number) {
            c.error(&path.field("number"), format!("port {} is declared twice", p.number));
        }
        if p.name.is_empty() {
            c.error(&path.field("name"), "port name is required");
        } else if !names.insert(p.name.as_str()) {
            c.error(&path.field("name"), format!("port name {:?} is declared twice", p.name));
        }
    }
    if let Some(location) = &spec.location {
        c.known(&root.field("location"), location);
    }
    let resolution = spec.resolution.clone().unwrap_or(Resolution::None);
    c.known(&root.field("resolution"), &resolution);
    if !spec.endpoints.is_empty() && spec.workload_selector.is_some() {
        c.error(&root.field("workloadSelector"), "set endpoints or workloadSelector, not both");
    }
    match resolution {
        Resolution::None if !spec.endpoints.is_empty() => {
            c.error(&root.field("endpoints"), "endpoints cannot be set with resolution NONE");
        }
        Resolution::Dns | Resolution::DnsRoundRobin if spec.endpoints.is_empty() => {
            for (i, host) in spec.hosts.iter().enumerate() {
                if host.starts_with('*') {
                    c.error(&root.field("hosts").index(i), format!("wildcard host {host:?} cannot be resolved with DNS: add endpoints or use resolution NONE or DYNAMIC_DNS"));
                }
            }
        }
        _ => {}
    }
    for (i, endpoint) in spec.endpoints.iter().enumerate() {
        let path = root.field("endpoints").index(i);
        workload_entry_spec(&mut c, &path, endpoint);
        if resolution == Resolution::Static
            && !endpoint.address.is_empty()
            && !endpoint.address.starts_with("unix://")
            && endpoint.address.parse::<std::net::IpAddr>().is_err()
        {
            c.error(
                &path.field("address"),
                format!("{:?} must be an IP address with resolution STATIC", endpoint.address),
            );
        }
        for name in endpoint.ports.keys() {
            if !spec.ports.iter().any(|p| &p.name == name) {
                c.error(
                    &path.field("ports").key(name),
                    format!("no port named {name:?} is declared in spec.ports"),
                );
            }
        }
    }
    if let Some(selector) = &spec.workload_selector {
        labels(&mut c, &root.field("workloadSelector").field("labels"), &selector.labels);
    }
    c.export_to(&root.field("exportTo"), &spec.export_to);
    c.finish()
}

/// Validates a WorkloadEntry.
pub fn workload_entry(we: &WorkloadEntry) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(we));
    workload_entry_spec(&mut c, &Path::root("spec"), &we.spec);
    c.finish()
}

fn workload_entry_spec(c: &mut Checker, path: &Path, spec: &WorkloadEntrySpec) {
    let address = &spec.address;
    if address.is_empty() {
        c.error(&path.field("address"), "address is required");
    } else if let Some(socket) = address.strip_prefix("unix://") {
        if !socket.starts_with('/') && !socket.starts_with('@') {
            c.error(
                &path.field("address"),
                format!("unix socket {address:?} must be an absolute path"),
            );
        }
    } else if address.parse::<std::net::IpAddr>().is_err() {
        if let Err(reason) = check_wildcard_domain(address) {
            c.error(&path.field("address"), reason);
        } else if address.contains('*') {
            c.error(&path.field("address"), format!("address {address:?} cannot be a wildcard"));
        }
    }
    for (name, number) in &spec.ports {
        c.port(&path.field("ports").key(name), *number);
    }
    labels(c, &path.field("labels"), &spec.labels);
    if let Some(sa) = &spec.service_account
        && !is_dns_subdomain(sa)
    {
        c.error(
            &path.field("serviceAccount"),
            format!("{sa:?} is not a valid service account name"),
        );
    }
    if spec.weight == Some(0) {
        c.error(&path.field("weight"), "weight must be at least 1 (leave it out for the default)");
    }
}

/// Validates a Sidecar.
pub fn sidecar(sc: &Sidecar) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(sc));
    let spec = &sc.spec;
    let root = Path::root("spec");
    if let Some(selector) = &spec.workload_selector {
        labels(&mut c, &root.field("workloadSelector").field("labels"), &selector.labels);
    }
    let mut ingress_ports = BTreeSet::new();
    for (i, ingress) in spec.ingress.iter().enumerate() {
        let path = root.field("ingress").index(i);
        port(&mut c, &path.field("port"), &ingress.port, false);
        if !ingress_ports.insert(ingress.port.number) {
            c.error(
                &path.field("port").field("number"),
                format!("port {} is declared twice", ingress.port.number),
            );
        }
        if let Some(mode) = &ingress.capture_mode {
            c.known(&path.field("captureMode"), mode);
        }
        if let Some(endpoint) = &ingress.default_endpoint {
            default_endpoint(&mut c, &path.field("defaultEndpoint"), endpoint);
        }
        if let Some(pool) = &ingress.connection_pool {
            connection_pool(&mut c, &path.field("connectionPool"), pool);
        }
    }
    let mut catch_all = 0;
    for (i, egress) in spec.egress.iter().enumerate() {
        let path = root.field("egress").index(i);
        if egress.hosts.is_empty() {
            c.error(&path.field("hosts"), "at least one host is required, as namespace/dnsName");
        }
        for (j, host) in egress.hosts.iter().enumerate() {
            namespaced_host(&mut c, &path.field("hosts").index(j), host, true);
        }
        match &egress.port {
            Some(p) => port(&mut c, &path.field("port"), p, false),
            None => catch_all += 1,
        }
        if catch_all > 1 && egress.port.is_none() {
            c.error(&path.field("port"), "only one egress listener may leave out the port");
        }
        if let Some(mode) = &egress.capture_mode {
            c.known(&path.field("captureMode"), mode);
        }
    }
    if let Some(pool) = &spec.inbound_connection_pool {
        connection_pool(&mut c, &root.field("inboundConnectionPool"), pool);
    }
    if let Some(policy) = &spec.outbound_traffic_policy {
        let path = root.field("outboundTrafficPolicy");
        if let Some(mode) = &policy.mode {
            c.known(&path.field("mode"), mode);
        }
        if let Some(proxy) = &policy.egress_proxy {
            if policy.mode != Some(OutboundTrafficMode::AllowAny) {
                c.error(&path.field("egressProxy"), "egressProxy only applies with mode ALLOW_ANY");
            }
            destination(&mut c, &path.field("egressProxy"), proxy);
        }
    }
    c.finish()
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT` or `unix:///path`.
fn default_endpoint(c: &mut Checker, path: &Path, endpoint: &str) {
    if endpoint.starts_with("unix://") {
        return;
    }
    let ok = endpoint.parse::<std::net::SocketAddr>().is_ok_and(|addr| {
        addr.port() != 0 && (addr.ip().is_loopback() || addr.ip().is_unspecified())
    });
    if !ok {
        c.error(path, format!("{endpoint:?} must be 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix:///path"));
    }
}
