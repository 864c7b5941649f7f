//! Routes as VirtualServices: HTTPRoute and GRPCRoute rules as `http` rules, TLSRoute rules as
//! `tls` rules, bound to the listeners they attach to and, for a Service parent, to the mesh.
//! A backend in another namespace needs a ReferenceGrant there; without one the rule answers
//! 500, as the Gateway API says.

use std::collections::BTreeMap;

use mesh_api::gateway_api::{
    BackendRef, GrpcRouteMatch, GrpcRouteRule, HttpRouteFilter, HttpRouteMatch, HttpRouteRule,
    ReferenceGrant,
};
use mesh_api::networking::{
    Destination, HeaderOperations, Headers, HttpDirectResponse, HttpMatchRequest, HttpRedirect,
    HttpRewrite, HttpRoute, HttpRouteDestination, PortSelector, RouteDestination, StringMatch,
    TlsMatchAttributes, TlsRoute, VirtualService, VirtualServiceSpec,
};

use super::attach::{Attachment, Route, RouteKind, RouteObject};

/// The VirtualServices of one route: one bound to the listeners it attaches to, one bound to
/// the mesh for the Services it attaches to.
pub fn virtual_services(
    route: &Route<'_>,
    attachments: &[Attachment],
    grants: &[&ReferenceGrant],
    domain: &str,
) -> Vec<VirtualService> {
    let gateways: Vec<String> = attachments.iter().flat_map(Attachment::bindings).collect();
    let services: Vec<String> = attachments
        .iter()
        .filter_map(|a| match a {
            Attachment::Service { host, .. } => Some(host.clone()),
            _ => None,
        })
        .collect();
    let context = Context { route, grants, domain };
    let hosts =
        if route.hostnames.is_empty() { vec!["*".to_owned()] } else { route.hostnames.to_vec() };
    let suffix = route.kind.name().to_ascii_lowercase();
    let make = |suffix: &str, hosts: Vec<String>, gateways: Vec<String>| {
        let mut spec = VirtualServiceSpec { hosts, gateways, ..VirtualServiceSpec::default() };
        match route.object {
            RouteObject::Http(r) => {
                spec.http = r
                    .spec
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(i, rule)| context.http_rule(rule, i))
                    .collect();
            }
            RouteObject::Grpc(r) => {
                spec.http = r
                    .spec
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(i, rule)| context.grpc_rule(rule, i))
                    .collect();
            }
            RouteObject::Tls(r) => {
                spec.tls = r
                    .spec
                    .rules
                    .iter()
                    .filter_map(|rule| context.tls_rule(&rule.backend_refs))
                    .collect();
            }
        }
        let mut vs = VirtualService::new(&format!("{}-{suffix}", route.name), spec);
        vs.metadata.namespace = Some(route.namespace.clone());
        vs
    };
    let mut out = Vec::new();
    if !gateways.is_empty() {
        out.push(make(&suffix, hosts, gateways));
    }
    // GAMMA is HTTP and gRPC only: a TLSRoute's parent is a Gateway.
    if !services.is_empty() && route.kind != RouteKind::Tls {
        out.push(make(&format!("{suffix}-mesh"), services, vec!["mesh".to_owned()]));
    }
    out
}

/// What converting one route's rules needs.
struct Context<'r, 'a> {
    route: &'r Route<'a>,
    grants: &'r [&'r ReferenceGrant],
    domain: &'r str,
}

impl Context<'_, '_> {
    /// The destination of a backend, or `None` when it cannot be used: another kind than
    /// Service, or another namespace without a ReferenceGrant.
    fn destination(&self, b: &BackendRef) -> Option<Destination> {
        if b.kind.as_deref().is_some_and(|k| k != "Service")
            || b.group.as_deref().is_some_and(|g| !g.is_empty())
        {
            return None;
        }
        let namespace = &self.route.namespace;
        let ns = b.namespace.clone().unwrap_or_else(|| namespace.clone());
        if ns != *namespace && !granted(self.grants, self.route.kind, namespace, &ns, &b.name) {
            return None;
        }
        Some(Destination {
            host: format!("{}.{ns}.svc.{}", b.name, self.domain),
            port: b.port.map(|p| PortSelector { number: u32::from(p) }),
            ..Destination::default()
        })
    }

    /// The route part of an `http` rule: its weighted backends, or 500 when one cannot be
    /// used (the Gateway API answers 500 rather than send elsewhere).
    fn backends(&self, http: &mut HttpRoute, backends: &[BackendRef]) {
        let resolved: Vec<(Option<Destination>, i32)> =
            backends.iter().map(|b| (self.destination(b), b.weight.unwrap_or(1))).collect();
        if resolved.iter().any(|(d, _)| d.is_none()) || backends.is_empty() {
            http.direct_response =
                Some(HttpDirectResponse { status: 500, ..HttpDirectResponse::default() });
        } else {
            http.route = resolved
                .into_iter()
                .filter_map(|(d, weight)| {
                    Some(HttpRouteDestination {
                        destination: d?,
                        weight: Some(weight),
                        headers: None,
                    })
                })
                .collect();
        }
    }

    fn http_rule(&self, rule: &HttpRouteRule, index: usize) -> HttpRoute {
        let mut http = HttpRoute {
            name: Some(format!("{}.{index}", self.route.name)),
            matches: rule.matches.iter().map(request_match).collect(),
            ..HttpRoute::default()
        };
        self.backends(&mut http, &rule.backend_refs);
        for filter in &rule.filters {
            self.apply_filter(&mut http, filter);
        }
        if let Some(timeout) = rule.timeouts.as_ref().and_then(|t| t.request.as_deref()) {
            http.timeout = Some(mesh_api::Duration::new(timeout));
        }
        http
    }

    fn grpc_rule(&self, rule: &GrpcRouteRule, index: usize) -> HttpRoute {
        let mut http = HttpRoute {
            name: Some(format!("{}.{index}", self.route.name)),
            matches: rule.matches.iter().map(grpc_match).collect(),
            ..HttpRoute::default()
        };
        self.backends(&mut http, &rule.backend_refs);
        for filter in &rule.filters {
            self.apply_filter(&mut http, filter);
        }
        http
    }

    /// A TLSRoute rule: SNI names (the route's hostnames, all when it names none) to its
    /// backends. A backend that cannot be used leaves the rule out: the connection is refused,
    /// as the Gateway API says.
    fn tls_rule(&self, backends: &[BackendRef]) -> Option<TlsRoute> {
        let route: Option<Vec<RouteDestination>> = backends
            .iter()
            .filter(|b| b.weight != Some(0))
            .map(|b| Some(RouteDestination { destination: self.destination(b)?, weight: b.weight }))
            .collect();
        let route = route.filter(|r| !r.is_empty())?;
        let sni_hosts = if self.route.hostnames.is_empty() {
            vec!["*".to_owned()]
        } else {
            self.route.hostnames.to_vec()
        };
        Some(TlsRoute {
            matches: vec![TlsMatchAttributes { sni_hosts, ..TlsMatchAttributes::default() }],
            route,
        })
    }

    fn apply_filter(&self, http: &mut HttpRoute, filter: &HttpRouteFilter) {
        let headers = http.headers.get_or_insert_with(Headers::default);
        if let Some(m) = &filter.request_header_modifier {
            headers.request = Some(operations(m));
        }
        if let Some(m) = &filter.response_header_modifier {
            headers.response = Some(operations(m));
        }
        if headers.request.is_none() && headers.response.is_none() {
            http.headers = None;
        }
        if let Some(r) = &filter.request_redirect {
            http.route.clear();
            http.redirect = Some(HttpRedirect {
                uri: r
                    .path
                    .as_ref()
                    .and_then(|p| p.replace_full_path.clone().or(p.replace_prefix_match.clone())),
                authority: r.hostname.clone(),
                port: r.port.map(u32::from),
                scheme: r.scheme.clone(),
                redirect_code: Some(u32::from(r.status_code.unwrap_or(302))),
                ..HttpRedirect::default()
            });
        }
        if let Some(r) = &filter.url_rewrite {
            http.rewrite = Some(HttpRewrite {
                uri: r
                    .path
                    .as_ref()
                    .and_then(|p| p.replace_prefix_match.clone().or(p.replace_full_path.clone())),
                authority: r.hostname.clone(),
                ..HttpRewrite::default()
            });
        }
        if let Some(m) = &filter.request_mirror {
            let b = &m.backend_ref;
            let backend = BackendRef {
                group: b.group.clone(),
                kind: b.kind.clone(),
                name: b.name.clone(),
                namespace: b.namespace.clone(),
                port: b.port,
                weight: None,
            };
            // A mirror that cannot be used is no mirror; the request itself is unaffected.
            http.mirror = self.destination(&backend);
        }
    }
}

/// Whether `namespace`'s ReferenceGrants let routes of `kind` in `from` refer to its Service
/// `name`.
pub fn granted(
    grants: &[&ReferenceGrant],
    kind: RouteKind,
    from: &str,
    namespace: &str,
    name: &str,
) -> bool {
    use kube::ResourceExt as _;
    grants.iter().filter(|g| g.namespace().as_deref() == Some(namespace)).any(|g| {
        g.spec.from.iter().any(|f| {
            f.group == mesh_api::gateway_api::GROUP && f.kind == kind.name() && f.namespace == from
        }) && g.spec.to.iter().any(|t| {
            t.group.is_empty() && t.kind == "Service" && t.name.as_deref().is_none_or(|n| n == name)
        })
    })
}

/// An `Exact` or `RegularExpression` value condition.
fn string_match(kind: Option<&str>, value: &str) -> StringMatch {
    match kind {
        Some("RegularExpression") => {
            StringMatch { regex: Some(value.to_owned()), ..StringMatch::default() }
        }
        _ => StringMatch { exact: Some(value.to_owned()), ..StringMatch::default() },
    }
}

/// Header conditions, by lower-case name.
fn header_matches(list: &[mesh_api::gateway_api::ValueMatch]) -> BTreeMap<String, StringMatch> {
    list.iter()
        .map(|v| (v.name.to_ascii_lowercase(), string_match(v.match_type.as_deref(), &v.value)))
        .collect()
}

fn request_match(m: &HttpRouteMatch) -> HttpMatchRequest {
    let uri = m.path.as_ref().map(|p| {
        let value = p.value.clone().unwrap_or_else(|| "/".to_owned());
        match p.match_type.as_deref() {
            Some("Exact") => StringMatch { exact: Some(value), ..StringMatch::default() },
            Some("RegularExpression") => {
                StringMatch { regex: Some(value), ..StringMatch::default() }
            }
            _ => StringMatch { prefix: Some(value), ..StringMatch::default() },
        }
    });
    HttpMatchRequest {
        uri,
        headers: header_matches(&m.headers),
        query_params: m
            .query_params
            .iter()
            .map(|v| (v.name.clone(), string_match(v.match_type.as_deref(), &v.value)))
            .collect(),
        method: m
            .method
            .as_ref()
            .map(|method| StringMatch { exact: Some(method.clone()), ..StringMatch::default() }),
        ..HttpMatchRequest::default()
    }
}

fn operations(m: &mesh_api::gateway_api::HeaderModifier) -> HeaderOperations {
    HeaderOperations {
        set: m.set.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
        add: m.add.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
        remove: m.remove.clone(),
    }
}

/// A GRPCRoute match: the method as the request path (`/service/method`), headers as
/// headers.
fn grpc_match(m: &GrpcRouteMatch) -> HttpMatchRequest {
    let uri = m.method.as_ref().map(|method| {
        let regex = method.match_type.as_deref() == Some("RegularExpression");
        match (method.service.as_deref(), method.method.as_deref(), regex) {
            (Some(s), Some(m), false) => {
                StringMatch { exact: Some(format!("/{s}/{m}")), ..StringMatch::default() }
            }
            (Some(s), None, false) => {
                StringMatch { prefix: Some(format!("/{s}/")), ..StringMatch::default() }
            }
            (s, m, regex) => {
                let part = |p: Option<&str>| match p {
                    Some(p) if regex => p.to_owned(),
                    Some(p) => regex_escape(p),
                    None => "[^/]+".to_owned(),
                };
                StringMatch {
                    regex: Some(format!("/{}/{}", part(s), part(m))),
                    ..StringMatch::default()
                }
            }
        }
    });
    HttpMatchRequest { uri, headers: header_matches(&m.headers), ..HttpMatchRequest::default() }
}

/// `text` as a regular expression that matches it literally.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
