//! Which listeners a route attaches to: the Gateway API's rules (the parent's section and
//! port, the kinds a listener's protocol takes, `allowedRoutes.namespaces`, hostname
//! intersection), decided once here for both the translation and the status, so what a user
//! reads in `status.parents` is what the gateway does.

use kube::ResourceExt as _;
use mesh_api::gateway_api::{
    BackendRef, GRPCRoute, Gateway as KubeGateway, HTTPRoute, Listener, ParentReference, TLSRoute,
};

use super::listener_gateway_name;
use crate::translate::route::host_matches;

/// The kinds of route the mesh serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteKind {
    /// HTTPRoute.
    Http,
    /// GRPCRoute.
    Grpc,
    /// TLSRoute.
    Tls,
}

impl RouteKind {
    /// The kind as the API names it.
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tls => "TLSRoute",
        }
    }

    /// The route kinds a listener takes (Gateway API: HTTP and HTTPS take HTTPRoute and
    /// GRPCRoute, TLS in Passthrough takes TLSRoute; the mesh serves no TCPRoute).
    pub fn of_listener(l: &Listener) -> Vec<RouteKind> {
        let passthrough = l.tls.as_ref().and_then(|t| t.mode.as_deref()) == Some("Passthrough");
        match (l.protocol.as_str(), passthrough) {
            ("HTTP" | "HTTPS", false) => vec![RouteKind::Http, RouteKind::Grpc],
            ("TLS", true) => vec![RouteKind::Tls],
            _ => Vec::new(),
        }
    }
}

/// The rules of a route, by kind.
#[derive(Clone, Copy, Debug)]
pub enum RouteObject<'a> {
    /// An HTTPRoute.
    Http(&'a HTTPRoute),
    /// A GRPCRoute.
    Grpc(&'a GRPCRoute),
    /// A TLSRoute.
    Tls(&'a TLSRoute),
}

/// A route of any kind, as attachment and status see it.
#[derive(Clone, Debug)]
pub struct Route<'a> {
    /// Its kind.
    pub kind: RouteKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its `metadata.generation`.
    pub generation: Option<i64>,
    /// `spec.hostnames`.
    pub hostnames: &'a [String],
    /// `spec.parentRefs`.
    pub parent_refs: &'a [ParentReference],
    /// The backends of all its rules.
    pub backends: Vec<&'a BackendRef>,
    /// The object.
    pub object: RouteObject<'a>,
}

impl<'a> Route<'a> {
    fn new<K: kube::Resource>(
        kind: RouteKind,
        object: &'a K,
        hostnames: &'a [String],
        parent_refs: &'a [ParentReference],
        backends: Vec<&'a BackendRef>,
        rules: RouteObject<'a>,
    ) -> Self {
        Route {
            kind,
            namespace: object.namespace().unwrap_or_else(|| "default".to_owned()),
            name: object.name_any(),
            generation: object.meta().generation,
            hostnames,
            parent_refs,
            backends,
            object: rules,
        }
    }

    /// An HTTPRoute.
    pub fn http(r: &'a HTTPRoute) -> Self {
        let backends = r.spec.rules.iter().flat_map(|rule| &rule.backend_refs).collect();
        let (hosts, parents) = (&r.spec.hostnames, &r.spec.parent_refs);
        Route::new(RouteKind::Http, r, hosts, parents, backends, RouteObject::Http(r))
    }

    /// A GRPCRoute.
    pub fn grpc(r: &'a GRPCRoute) -> Self {
        let backends = r.spec.rules.iter().flat_map(|rule| &rule.backend_refs).collect();
        let (hosts, parents) = (&r.spec.hostnames, &r.spec.parent_refs);
        Route::new(RouteKind::Grpc, r, hosts, parents, backends, RouteObject::Grpc(r))
    }

    /// A TLSRoute.
    pub fn tls(r: &'a TLSRoute) -> Self {
        let backends = r.spec.rules.iter().flat_map(|rule| &rule.backend_refs).collect();
        let (hosts, parents) = (&r.spec.hostnames, &r.spec.parent_refs);
        Route::new(RouteKind::Tls, r, hosts, parents, backends, RouteObject::Tls(r))
    }
}

/// What one `parentRef` of a route comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// Listeners of a Gateway of the mesh: the `namespace/name` of the Istio Gateways they
    /// became, and the listeners' names (for their `attachedRoutes`).
    Listeners {
        /// The Gateway's namespace.
        namespace: String,
        /// The Gateway's name.
        gateway: String,
        /// The listeners taken.
        listeners: Vec<String>,
    },
    /// A Service: the route applies to mesh traffic for this host (GAMMA).
    Service {
        /// The Service's host name.
        host: String,
        /// The Service's namespace.
        namespace: String,
    },
    /// A parent of the mesh that does not take the route: the Gateway API's reason and a
    /// sentence saying why.
    Refused {
        /// `NoMatchingParent`, `NotAllowedByListeners` or `NoMatchingListenerHostname`.
        reason: &'static str,
        /// Why, for people.
        message: String,
    },
    /// Not the mesh's (a Gateway of another class, another kind of parent): its controller
    /// says.
    NotOurs,
}

impl Attachment {
    /// The Istio Gateway names (`namespace/name`) a VirtualService for this parent binds to.
    pub fn bindings(&self) -> Vec<String> {
        match self {
            Attachment::Listeners { namespace, gateway, listeners } => listeners
                .iter()
                .map(|l| format!("{namespace}/{}", listener_gateway_name(gateway, l)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Where `parent` attaches `route`, among the mesh's Gateways (`gateways`: of its classes
/// only; a Gateway of another class is another controller's).
pub fn attach(
    gateways: &[&KubeGateway],
    route: &Route<'_>,
    parent: &ParentReference,
    domain: &str,
) -> Attachment {
    let namespace = parent.namespace.clone().unwrap_or_else(|| route.namespace.clone());
    let group = parent.group.as_deref();
    match parent.kind.as_deref().unwrap_or("Gateway") {
        "Service" if group.is_none_or(str::is_empty) => {
            return Attachment::Service {
                host: format!("{}.{namespace}.svc.{domain}", parent.name),
                namespace,
            };
        }
        "Gateway" if group.is_none_or(|g| g == mesh_api::gateway_api::GROUP) => {}
        _ => return Attachment::NotOurs,
    }
    let Some(gateway) = gateways
        .iter()
        .find(|g| g.name_any() == parent.name && g.namespace().as_deref() == Some(&namespace))
    else {
        return Attachment::NotOurs;
    };
    let named: Vec<&Listener> = gateway
        .spec
        .listeners
        .iter()
        .filter(|l| parent.section_name.as_ref().is_none_or(|s| *s == l.name))
        .filter(|l| parent.port.is_none_or(|p| p == l.port))
        .collect();
    if named.is_empty() {
        let what = match (&parent.section_name, parent.port) {
            (Some(s), Some(p)) => format!("no listener {s:?} on port {p}"),
            (Some(s), None) => format!("no listener {s:?}"),
            (None, Some(p)) => format!("no listener on port {p}"),
            (None, None) => "no listeners".to_owned(),
        };
        return refused(
            "NoMatchingParent",
            format!("Gateway {namespace}/{} has {what}", parent.name),
        );
    }
    let gateway_ns = gateway.namespace().unwrap_or_default();
    let by_kind: Vec<&Listener> =
        named.into_iter().filter(|l| RouteKind::of_listener(l).contains(&route.kind)).collect();
    if by_kind.is_empty() {
        return refused(
            "NotAllowedByListeners",
            format!(
                "no listener of Gateway {gateway_ns}/{} takes a {}",
                parent.name,
                route.kind.name()
            ),
        );
    }
    let by_namespace: Vec<&Listener> = by_kind
        .into_iter()
        .filter(|l| namespace_allowed(l, &gateway_ns, &route.namespace))
        .collect();
    if by_namespace.is_empty() {
        return refused(
            "NotAllowedByListeners",
            format!(
                "the listeners of Gateway {gateway_ns}/{} take routes of their own namespace only \
                 (allowedRoutes.namespaces.from: Same), not of {}",
                parent.name, route.namespace
            ),
        );
    }
    let listeners: Vec<String> = by_namespace
        .into_iter()
        .filter(|l| hostnames_intersect(l.hostname.as_deref(), route.hostnames))
        .map(|l| l.name.clone())
        .collect();
    if listeners.is_empty() {
        return refused(
            "NoMatchingListenerHostname",
            format!(
                "none of the hostnames {:?} is served by a listener of Gateway {gateway_ns}/{}",
                route.hostnames, parent.name
            ),
        );
    }
    Attachment::Listeners { namespace: gateway_ns, gateway: parent.name.clone(), listeners }
}

fn refused(reason: &'static str, message: String) -> Attachment {
    Attachment::Refused { reason, message }
}

/// `allowedRoutes.namespaces.from`: `Same` (the default) or `All`.
fn namespace_allowed(l: &Listener, gateway_ns: &str, route_ns: &str) -> bool {
    let from = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.as_deref());
    from == Some("All") || gateway_ns == route_ns
}

/// Whether a route's hostnames and a listener's hostname have a host in common (either
/// absent: all hosts).
pub fn hostnames_intersect(listener: Option<&str>, route: &[String]) -> bool {
    let Some(listener) = listener else { return true };
    route.is_empty() || route.iter().any(|h| host_matches(listener, h) || host_matches(h, listener))
}
