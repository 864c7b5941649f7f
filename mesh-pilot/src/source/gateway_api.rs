//! The Kubernetes Gateway API, served through the same model as Istio's own kinds (as Istio
//! does it): a Gateway of class `mesh` (or `istio`) becomes an Istio Gateway selecting the
//! proxies labelled `gateway.networking.k8s.io/gateway-name: <name>`, and an HTTPRoute becomes a
//! VirtualService bound to the Gateways it attaches to, or to the mesh when its parent is a
//! Service (GAMMA). A backend in another namespace needs a ReferenceGrant there; without one
//! the rule answers 500, as the Gateway API says. Pure: objects in, Istio objects out.

use std::collections::BTreeMap;

use kube::ResourceExt as _;
use mesh_api::gateway_api::{
    BackendRef, GATEWAY_CLASS, GATEWAY_NAME_LABEL, Gateway as KubeGateway, HTTPRoute,
    HttpRouteFilter, HttpRouteMatch, HttpRouteRule, ReferenceGrant,
};
use mesh_api::networking::{
    Destination, Gateway, GatewaySpec, HeaderOperations, Headers, HttpDirectResponse,
    HttpMatchRequest, HttpRedirect, HttpRewrite, HttpRoute, HttpRouteDestination, Port,
    PortSelector, Server, ServerTlsMode, ServerTlsSettings, StringMatch, VirtualService,
    VirtualServiceSpec,
};

/// The name of the Istio Gateway a Gateway API Gateway becomes (kept apart from an Istio
/// Gateway of the same name).
pub fn gateway_name(name: &str) -> String {
    format!("{name}-k8s-gateway")
}

/// Gateways of the mesh's class, as Istio Gateways.
pub fn gateways(gateways: &[&KubeGateway]) -> Vec<Gateway> {
    gateways
        .iter()
        .filter(|g| matches!(g.spec.gateway_class_name.as_str(), GATEWAY_CLASS | "istio"))
        .map(|g| {
            let name = g.name_any();
            let servers = g
                .spec
                .listeners
                .iter()
                .map(|l| {
                    let all = l
                        .allowed_routes
                        .as_ref()
                        .and_then(|a| a.namespaces.as_ref())
                        .and_then(|n| n.from.as_deref())
                        == Some("All");
                    let host = l.hostname.clone().unwrap_or_else(|| "*".to_owned());
                    let tls = l.tls.as_ref().map(|t| {
                        let passthrough = t.mode.as_deref() == Some("Passthrough");
                        ServerTlsSettings {
                            mode: Some(if passthrough {
                                ServerTlsMode::Passthrough
                            } else {
                                ServerTlsMode::Simple
                            }),
                            credential_name: t.certificate_refs.first().map(|c| c.name.clone()),
                            ..ServerTlsSettings::default()
                        }
                    });
                    Server {
                        port: Port {
                            number: u32::from(l.port),
                            protocol: l.protocol.clone(),
                            name: l.name.clone(),
                            target_port: None,
                        },
                        hosts: vec![format!("{}/{host}", if all { "*" } else { "." })],
                        tls,
                        name: Some(l.name.clone()),
                        ..Server::default()
                    }
                })
                .collect();
            let mut gateway = Gateway::new(
                &gateway_name(&name),
                GatewaySpec {
                    selector: [(GATEWAY_NAME_LABEL.to_owned(), name.clone())].into(),
                    servers,
                },
            );
            gateway.metadata.namespace = g.namespace();
            gateway
        })
        .collect()
}

/// HTTPRoutes as VirtualServices: one bound to the Gateways a route attaches to, and one
/// bound to the mesh for the Services it attaches to.
pub fn http_routes(
    routes: &[&HTTPRoute],
    grants: &[&ReferenceGrant],
    domain: &str,
) -> Vec<VirtualService> {
    let mut out = Vec::new();
    for route in routes {
        let namespace = route.namespace().unwrap_or_else(|| "default".to_owned());
        let parent_ns = |ns: &Option<String>| ns.clone().unwrap_or_else(|| namespace.clone());
        let gateways: Vec<String> = route
            .spec
            .parent_refs
            .iter()
            .filter(|p| p.kind.as_deref().is_none_or(|k| k == "Gateway"))
            .map(|p| format!("{}/{}", parent_ns(&p.namespace), gateway_name(&p.name)))
            .collect();
        let services: Vec<String> = route
            .spec
            .parent_refs
            .iter()
            .filter(|p| p.kind.as_deref() == Some("Service"))
            .map(|p| format!("{}.{}.svc.{domain}", p.name, parent_ns(&p.namespace)))
            .collect();
        let http: Vec<HttpRoute> = route
            .spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                http_rule(rule, &namespace, grants, domain, &format!("{}.{i}", route.name_any()))
            })
            .collect();
        let hosts = if route.spec.hostnames.is_empty() {
            vec!["*".to_owned()]
        } else {
            route.spec.hostnames.clone()
        };
        let mut make = |suffix: &str, hosts: Vec<String>, gateways: Vec<String>| {
            let mut vs = VirtualService::new(
                &format!("{}-{suffix}", route.name_any()),
                VirtualServiceSpec {
                    hosts,
                    gateways,
                    http: http.clone(),
                    ..VirtualServiceSpec::default()
                },
            );
            vs.metadata.namespace = Some(namespace.clone());
            out.push(vs);
        };
        if !gateways.is_empty() {
            make("httproute", hosts, gateways);
        }
        if !services.is_empty() {
            make("httproute-mesh", services, vec!["mesh".to_owned()]);
        }
    }
    out
}

/// Whether `namespace`'s ReferenceGrants let HTTPRoutes of `from` refer to its Service `name`.
fn granted(grants: &[&ReferenceGrant], from: &str, namespace: &str, name: &str) -> bool {
    grants.iter().filter(|g| g.namespace().as_deref() == Some(namespace)).any(|g| {
        g.spec.from.iter().any(|f| {
            f.group == mesh_api::gateway_api::GROUP && f.kind == "HTTPRoute" && f.namespace == from
        }) && g.spec.to.iter().any(|t| {
            t.group.is_empty() && t.kind == "Service" && t.name.as_deref().is_none_or(|n| n == name)
        })
    })
}

fn http_rule(
    rule: &HttpRouteRule,
    namespace: &str,
    grants: &[&ReferenceGrant],
    domain: &str,
    name: &str,
) -> HttpRoute {
    let destination = |b: &BackendRef| -> Option<Destination> {
        if b.kind.as_deref().is_some_and(|k| k != "Service") {
            return None;
        }
        let ns = b.namespace.clone().unwrap_or_else(|| namespace.to_owned());
        if ns != namespace && !granted(grants, namespace, &ns, &b.name) {
            return None;
        }
        Some(Destination {
            host: format!("{}.{ns}.svc.{domain}", b.name),
            port: b.port.map(|p| PortSelector { number: u32::from(p) }),
            ..Destination::default()
        })
    };
    let mut http = HttpRoute {
        name: Some(name.to_owned()),
        matches: rule.matches.iter().map(request_match).collect(),
        ..HttpRoute::default()
    };
    let backends: Vec<(Option<Destination>, i32)> =
        rule.backend_refs.iter().map(|b| (destination(b), b.weight.unwrap_or(1))).collect();
    if backends.iter().any(|(d, _)| d.is_none()) {
        // A backend that cannot be used (an unknown kind, or another namespace without a
        // ReferenceGrant): the Gateway API answers 500 rather than send elsewhere.
        http.direct_response =
            Some(HttpDirectResponse { status: 500, ..HttpDirectResponse::default() });
    } else {
        http.route = backends
            .into_iter()
            .filter_map(|(d, weight)| {
                Some(HttpRouteDestination { destination: d?, weight: Some(weight), headers: None })
            })
            .collect();
    }
    for filter in &rule.filters {
        apply_filter(&mut http, filter, namespace, domain);
    }
    if let Some(timeout) = rule.timeouts.as_ref().and_then(|t| t.request.as_deref()) {
        http.timeout = Some(mesh_api::Duration::new(timeout));
    }
    http
}

fn request_match(m: &HttpRouteMatch) -> HttpMatchRequest {
    let string = |kind: Option<&str>, value: &str| match kind {
        Some("RegularExpression") => {
            StringMatch { regex: Some(value.to_owned()), ..StringMatch::default() }
        }
        _ => StringMatch { exact: Some(value.to_owned()), ..StringMatch::default() },
    };
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
    let values = |list: &[mesh_api::gateway_api::ValueMatch]| -> BTreeMap<String, StringMatch> {
        list.iter()
            .map(|v| (v.name.to_ascii_lowercase(), string(v.match_type.as_deref(), &v.value)))
            .collect()
    };
    HttpMatchRequest {
        uri,
        headers: values(&m.headers),
        query_params: m
            .query_params
            .iter()
            .map(|v| (v.name.clone(), string(v.match_type.as_deref(), &v.value)))
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

fn apply_filter(http: &mut HttpRoute, filter: &HttpRouteFilter, namespace: &str, domain: &str) {
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
        let ns = b.namespace.clone().unwrap_or_else(|| namespace.to_owned());
        http.mirror = Some(Destination {
            host: format!("{}.{ns}.svc.{domain}", b.name),
            port: b.port.map(|p| PortSelector { number: u32::from(p) }),
            ..Destination::default()
        });
    }
}
