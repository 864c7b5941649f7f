//! Validation of the Gateway API's kinds: what their CRDs' schemas and CEL rules would refuse
//! and what the mesh cannot serve (a filter of another kind, a match on nothing), named by
//! field so a Gateway API user sees the same refusals as with any other implementation.

use std::collections::BTreeSet;

use crate::ObjectRef;
use crate::gateway_api::*;
use crate::validate::{Checker, Code, Path, ValidationError};

/// Validates a Gateway.
pub fn gateway(gw: &Gateway) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(gw));
    let root = Path::root("spec");
    if gw.spec.listeners.is_empty() {
        c.required(&root.field("listeners"), "at least one listener");
    }
    let mut names = BTreeSet::new();
    for (i, l) in gw.spec.listeners.iter().enumerate() {
        let path = root.field("listeners").index(i);
        if !names.insert(l.name.as_str()) {
            c.error(
                &path.field("name"),
                Code::Duplicate,
                format!("listener name {:?} is used by an earlier listener", l.name),
            );
        }
        c.port(&path.field("port"), u32::from(l.port));
        c.one_of(&path.field("protocol"), &l.protocol, &["HTTP", "HTTPS", "TLS", "TCP"]);
        if let Some(host) = &l.hostname {
            c.host(&path.field("hostname"), host);
        }
        match (&l.tls, l.protocol.as_str()) {
            (None, "HTTPS" | "TLS") => c.required(
                &path.field("tls"),
                &format!("tls settings for a {} listener", l.protocol),
            ),
            (Some(tls), _) => {
                let mode = tls.mode.as_deref().unwrap_or("Terminate");
                c.one_of(&path.field("tls").field("mode"), mode, &["Terminate", "Passthrough"]);
                if mode == "Terminate" && tls.certificate_refs.is_empty() {
                    c.required(
                        &path.field("tls").field("certificateRefs"),
                        "a certificate to terminate with",
                    );
                }
                if mode == "Passthrough" && l.protocol != "TLS" {
                    c.error(
                        &path.field("tls").field("mode"),
                        Code::TlsModeMismatch,
                        format!("Passthrough needs protocol TLS, not {}", l.protocol),
                    );
                }
            }
            (None, _) => {}
        }
        if let Some(from) = l
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref())
            .and_then(|n| n.from.as_deref())
        {
            c.one_of(&path.field("allowedRoutes.namespaces.from"), from, &["Same", "All"]);
        }
    }
    c.finish()
}

/// Validates an HTTPRoute.
pub fn http_route(route: &HTTPRoute) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(route));
    let root = Path::root("spec");
    parents_and_hosts(&mut c, &root, &route.spec.parent_refs, &route.spec.hostnames);
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let path = root.field("rules").index(i);
        for (j, m) in rule.matches.iter().enumerate() {
            let path = path.field("matches").index(j);
            if let Some(p) = &m.path {
                let kind = p.match_type.as_deref().unwrap_or("PathPrefix");
                c.one_of(
                    &path.field("path.type"),
                    kind,
                    &["Exact", "PathPrefix", "RegularExpression"],
                );
                let value = p.value.as_deref().unwrap_or("/");
                if kind == "RegularExpression" {
                    c.regex(&path.field("path.value"), value);
                } else if !value.starts_with('/') {
                    c.error(&path.field("path.value"), Code::UnknownValue, "a path starts with /");
                }
            }
            values(&mut c, &path.field("headers"), &m.headers);
            values(&mut c, &path.field("queryParams"), &m.query_params);
        }
        filters(&mut c, &path.field("filters"), &rule.filters, HTTP_FILTERS);
        backends(&mut c, &path.field("backendRefs"), &rule.backend_refs);
        if let Some(t) = &rule.timeouts {
            for (field, value) in [("request", &t.request), ("backendRequest", &t.backend_request)]
            {
                if let Some(value) = value {
                    c.duration(
                        &path.field("timeouts").field(field),
                        &crate::Duration::new(value),
                        true,
                    );
                }
            }
        }
    }
    c.finish()
}

/// Validates a GRPCRoute.
pub fn grpc_route(route: &GRPCRoute) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(route));
    let root = Path::root("spec");
    parents_and_hosts(&mut c, &root, &route.spec.parent_refs, &route.spec.hostnames);
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let path = root.field("rules").index(i);
        for (j, m) in rule.matches.iter().enumerate() {
            let path = path.field("matches").index(j);
            if let Some(method) = &m.method {
                let kind = method.match_type.as_deref().unwrap_or("Exact");
                c.one_of(&path.field("method.type"), kind, &["Exact", "RegularExpression"]);
                if method.service.is_none() && method.method.is_none() {
                    c.required(&path.field("method"), "a service, a method or both");
                }
                for (field, value) in [("service", &method.service), ("method", &method.method)] {
                    if let Some(value) = value {
                        if kind == "RegularExpression" {
                            c.regex(&path.field("method").field(field), value);
                        } else if value.is_empty() || value.contains('/') {
                            c.error(
                                &path.field("method").field(field),
                                Code::UnknownValue,
                                format!("{value:?} is not a gRPC {field} name"),
                            );
                        }
                    }
                }
            }
            values(&mut c, &path.field("headers"), &m.headers);
        }
        filters(&mut c, &path.field("filters"), &rule.filters, GRPC_FILTERS);
        backends(&mut c, &path.field("backendRefs"), &rule.backend_refs);
    }
    c.finish()
}

/// Validates a TLSRoute.
pub fn tls_route(route: &TLSRoute) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(route));
    let root = Path::root("spec");
    parents_and_hosts(&mut c, &root, &route.spec.parent_refs, &route.spec.hostnames);
    if route.spec.rules.is_empty() {
        c.required(&root.field("rules"), "a rule with backends");
    }
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let path = root.field("rules").index(i).field("backendRefs");
        if rule.backend_refs.is_empty() {
            c.required(&path, "at least one backend");
        }
        backends(&mut c, &path, &rule.backend_refs);
    }
    c.finish()
}

const HTTP_FILTERS: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
    "RequestMirror",
];
const GRPC_FILTERS: &[&str] = &["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror"];

fn parents_and_hosts(c: &mut Checker, root: &Path, parents: &[ParentReference], hosts: &[String]) {
    for (i, p) in parents.iter().enumerate() {
        let path = root.field("parentRefs").index(i);
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        c.one_of(&path.field("kind"), kind, &["Gateway", "Service"]);
        if let Some(port) = p.port {
            c.port(&path.field("port"), u32::from(port));
        }
    }
    for (i, host) in hosts.iter().enumerate() {
        c.host(&root.field("hostnames").index(i), host);
    }
}

fn values(c: &mut Checker, path: &Path, list: &[ValueMatch]) {
    for (i, v) in list.iter().enumerate() {
        let path = path.index(i);
        let kind = v.match_type.as_deref().unwrap_or("Exact");
        c.one_of(&path.field("type"), kind, &["Exact", "RegularExpression"]);
        if kind == "RegularExpression" {
            c.regex(&path.field("value"), &v.value);
        }
    }
}

fn filters(c: &mut Checker, path: &Path, filters: &[HttpRouteFilter], known: &[&str]) {
    for (i, f) in filters.iter().enumerate() {
        let path = path.index(i);
        c.one_of(&path.field("type"), &f.filter_type, known);
        let (field, present) = match f.filter_type.as_str() {
            "RequestHeaderModifier" => {
                ("requestHeaderModifier", f.request_header_modifier.is_some())
            }
            "ResponseHeaderModifier" => {
                ("responseHeaderModifier", f.response_header_modifier.is_some())
            }
            "RequestRedirect" => ("requestRedirect", f.request_redirect.is_some()),
            "URLRewrite" => ("urlRewrite", f.url_rewrite.is_some()),
            "RequestMirror" => ("requestMirror", f.request_mirror.is_some()),
            _ => continue,
        };
        if !present {
            c.required(&path.field(field), &format!("the settings of a {} filter", f.filter_type));
        }
        if let Some(code) = f.request_redirect.as_ref().and_then(|r| r.status_code)
            && code != 301
            && code != 302
        {
            c.error(
                &path.field("requestRedirect.statusCode"),
                Code::InvalidHttpStatus,
                format!("a redirect answers 301 or 302, not {code}"),
            );
        }
    }
}

fn backends(c: &mut Checker, path: &Path, backends: &[BackendRef]) {
    for (i, b) in backends.iter().enumerate() {
        let path = path.index(i);
        if let Some(port) = b.port {
            c.port(&path.field("port"), u32::from(port));
        }
        if let Some(weight) = b.weight
            && !(0..=1_000_000).contains(&weight)
        {
            c.error(
                &path.field("weight"),
                Code::WeightOutOfRange,
                format!("a backend weight is 0 to 1000000, not {weight}"),
            );
        }
    }
}
