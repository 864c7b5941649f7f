//! The Gateway API's conditions, computed from the same decisions as the translation: for
//! each GatewayClass of the mesh `Accepted`; for each Gateway of its classes `Accepted` and
//! `Programmed`, and per listener `Accepted`, `ResolvedRefs`, `Programmed` and
//! `attachedRoutes`; for each route, per parent of the mesh, `Accepted` and `ResolvedRefs`.
//! Pure: what the cluster holds comes in through [`Cluster`]; the Kubernetes source writes the
//! result. A condition keeps its `lastTransitionTime` while its status stays the same.

use std::collections::{BTreeMap, HashMap};

use kube::ResourceExt as _;
use mesh_api::ObjectRef;
use mesh_api::gateway_api::status::{
    Condition, GatewayAddress, GatewayClassStatus, GatewayStatus, ListenerStatus, RouteGroupKind,
    RouteParentStatus, RouteStatus,
};
use mesh_api::gateway_api::{BackendRef, CONTROLLER_NAME, GATEWAY_NAME_LABEL, GROUP, Listener};

use super::Inputs;
use super::attach::{self, Attachment, Route, RouteKind};
use super::routes::granted;

/// What the status needs to know of the cluster beyond the Gateway API objects.
pub trait Cluster {
    /// Whether the mesh knows the Service of this host name.
    fn service_exists(&self, host: &str) -> bool;
    /// Whether a TLS Secret with a certificate and key exists.
    fn certificate_exists(&self, namespace: &str, name: &str) -> bool;
    /// How many ready proxies carry the Gateway's label.
    fn ready_proxies(&self, namespace: &str, gateway: &str) -> usize;
    /// Where the Gateway is reached (its Service's load balancer or cluster IP).
    fn addresses(&self, namespace: &str, gateway: &str) -> Vec<GatewayAddress>;
}

/// The statuses the pilot owns, by object.
#[derive(Debug, Default, PartialEq)]
pub struct Statuses {
    /// GatewayClasses of the mesh's controller, by name.
    pub classes: BTreeMap<String, GatewayClassStatus>,
    /// Gateways of the mesh's classes, by namespace and name.
    pub gateways: BTreeMap<(String, String), GatewayStatus>,
    /// Routes with a parent of the mesh, by kind, namespace and name: the whole
    /// `status.parents`, other controllers' entries kept as they were.
    pub routes: BTreeMap<(RouteKind, String, String), RouteStatus>,
}

/// Computes every status. `invalid` holds the reasons objects were refused by validation
/// (their last valid version may be in force; their status says why they are not accepted
/// as they are). `now` is the RFC 3339 time for conditions that change.
pub fn statuses(
    inputs: &Inputs<'_>,
    cluster: &dyn Cluster,
    invalid: &HashMap<ObjectRef, String>,
    domain: &str,
    now: &str,
) -> Statuses {
    let mut out = Statuses::default();
    for class in &inputs.classes {
        if class.spec.controller_name != CONTROLLER_NAME {
            continue;
        }
        let conditions = vec![condition(
            "Accepted",
            true,
            "Accepted",
            format!("Handled by {CONTROLLER_NAME}"),
            class.metadata.generation,
        )];
        let old = class.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        out.classes.insert(
            class.name_any(),
            GatewayClassStatus { conditions: settle(conditions, old, now) },
        );
    }

    let gateways = inputs.our_gateways();
    let mut attached: HashMap<(String, String, String), i32> = HashMap::new();
    for route in inputs.routes() {
        let refused = invalid.get(&route_ref(&route));
        let mut ours = Vec::new();
        for parent in route.parent_refs {
            let attachment = attach::attach(&gateways, &route, parent, domain);
            let generation = route.generation;
            let accepted = match (&attachment, refused) {
                (Attachment::NotOurs, _) => continue,
                (_, Some(reason)) => {
                    condition("Accepted", false, "UnsupportedValue", reason.clone(), generation)
                }
                (Attachment::Listeners { namespace, gateway, listeners }, None) => {
                    for l in listeners {
                        *attached
                            .entry((namespace.clone(), gateway.clone(), l.clone()))
                            .or_default() += 1;
                    }
                    condition(
                        "Accepted",
                        true,
                        "Accepted",
                        format!("Attached to listeners {}", listeners.join(", ")),
                        generation,
                    )
                }
                (Attachment::Service { host, .. }, None) => {
                    if cluster.service_exists(host) {
                        condition(
                            "Accepted",
                            true,
                            "Accepted",
                            format!("Routes mesh traffic for {host}"),
                            generation,
                        )
                    } else {
                        condition(
                            "Accepted",
                            false,
                            "NoMatchingParent",
                            format!("no Service {host}"),
                            generation,
                        )
                    }
                }
                (Attachment::Refused { reason, message }, None) => {
                    condition("Accepted", false, reason, message.clone(), generation)
                }
            };
            let resolved = match resolve(&route, &inputs.grants, cluster, domain) {
                Ok(()) => condition(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "All backends resolved".to_owned(),
                    generation,
                ),
                Err((reason, message)) => {
                    condition("ResolvedRefs", false, reason, message, generation)
                }
            };
            ours.push(RouteParentStatus {
                parent_ref: parent.clone(),
                controller_name: CONTROLLER_NAME.to_owned(),
                conditions: vec![accepted, resolved],
            });
        }
        if ours.is_empty() {
            continue;
        }
        let old = route_status(&route);
        let mut parents: Vec<RouteParentStatus> = old
            .map(|s| {
                s.parents.iter().filter(|p| p.controller_name != CONTROLLER_NAME).cloned().collect()
            })
            .unwrap_or_default();
        for mut entry in ours {
            let before = old
                .and_then(|s| {
                    s.parents.iter().find(|p| {
                        p.controller_name == CONTROLLER_NAME && p.parent_ref == entry.parent_ref
                    })
                })
                .map(|p| p.conditions.as_slice())
                .unwrap_or_default();
            entry.conditions = settle(entry.conditions, before, now);
            parents.push(entry);
        }
        out.routes.insert(
            (route.kind, route.namespace.clone(), route.name.clone()),
            RouteStatus { parents },
        );
    }

    for gateway in gateways {
        let namespace = gateway.namespace().unwrap_or_else(|| "default".to_owned());
        let name = gateway.name_any();
        let generation = gateway.metadata.generation;
        let listeners: Vec<ListenerStatus> = gateway
            .spec
            .listeners
            .iter()
            .map(|l| {
                let count = attached
                    .get(&(namespace.clone(), name.clone(), l.name.clone()))
                    .copied()
                    .unwrap_or(0);
                listener_status(l, &namespace, count, cluster, generation)
            })
            .collect();
        let accepted = match invalid.get(&ObjectRef::of(gateway)) {
            Some(reason) => condition("Accepted", false, "Invalid", reason.clone(), generation),
            None if !listeners.is_empty()
                && listeners.iter().all(|l| !is_true(&l.conditions, "Accepted")) =>
            {
                condition(
                    "Accepted",
                    false,
                    "ListenersNotValid",
                    "No listener is valid".to_owned(),
                    generation,
                )
            }
            None => condition(
                "Accepted",
                true,
                "Accepted",
                format!("Handled by {CONTROLLER_NAME}"),
                generation,
            ),
        };
        let proxies = cluster.ready_proxies(&namespace, &name);
        let programmed = if proxies > 0 {
            condition(
                "Programmed",
                true,
                "Programmed",
                format!("{proxies} ready gateway proxies"),
                generation,
            )
        } else {
            condition(
                "Programmed",
                false,
                "NoResources",
                format!(
                    "No ready proxy labelled {GATEWAY_NAME_LABEL}={name} in {namespace}: deploy one (the mesh's gateway chart)"
                ),
                generation,
            )
        };
        let old = gateway.status.as_ref();
        let listeners = listeners
            .into_iter()
            .map(|mut l| {
                let before = old
                    .and_then(|s| s.listeners.iter().find(|o| o.name == l.name))
                    .map(|o| o.conditions.as_slice())
                    .unwrap_or_default();
                l.conditions = settle(l.conditions, before, now);
                l
            })
            .collect();
        let before = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
        out.gateways.insert(
            (namespace.clone(), name.clone()),
            GatewayStatus {
                addresses: cluster.addresses(&namespace, &name),
                conditions: settle(vec![accepted, programmed], before, now),
                listeners,
            },
        );
    }
    out
}

fn listener_status(
    l: &Listener,
    namespace: &str,
    attached_routes: i32,
    cluster: &dyn Cluster,
    generation: Option<i64>,
) -> ListenerStatus {
    let kinds = RouteKind::of_listener(l);
    let accepted = if kinds.is_empty() {
        condition(
            "Accepted",
            false,
            "UnsupportedProtocol",
            format!(
                "The mesh serves HTTP, HTTPS and TLS Passthrough listeners, not {} ({})",
                l.protocol,
                l.tls.as_ref().and_then(|t| t.mode.as_deref()).unwrap_or("Terminate")
            ),
            generation,
        )
    } else {
        condition("Accepted", true, "Accepted", "Listener is valid".to_owned(), generation)
    };
    let resolved = match certificate(l, namespace, cluster) {
        Ok(()) => condition(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "All references resolved".to_owned(),
            generation,
        ),
        Err((reason, message)) => condition("ResolvedRefs", false, reason, message, generation),
    };
    let programmed = if accepted.status == "True" && resolved.status == "True" {
        condition("Programmed", true, "Programmed", "Listener is programmed".to_owned(), generation)
    } else {
        condition("Programmed", false, "Invalid", "Listener is not valid".to_owned(), generation)
    };
    ListenerStatus {
        name: l.name.clone(),
        supported_kinds: kinds
            .iter()
            .map(|k| RouteGroupKind { group: Some(GROUP.to_owned()), kind: k.name().to_owned() })
            .collect(),
        attached_routes,
        conditions: vec![accepted, resolved, programmed],
    }
}

/// The certificate of a terminating listener: a Secret of the Gateway's namespace (the
/// gateway proxy reads its own namespace's Secrets only) holding a certificate and key.
fn certificate(
    l: &Listener,
    namespace: &str,
    cluster: &dyn Cluster,
) -> Result<(), (&'static str, String)> {
    let Some(tls) = &l.tls else { return Ok(()) };
    if tls.mode.as_deref() == Some("Passthrough") {
        return Ok(());
    }
    let Some(secret) = tls.certificate_refs.first() else {
        return Err((
            "InvalidCertificateRef",
            "No certificateRefs to terminate TLS with".to_owned(),
        ));
    };
    if secret.kind.as_deref().is_some_and(|k| k != "Secret")
        || secret.group.as_deref().is_some_and(|g| !g.is_empty())
    {
        return Err(("InvalidCertificateRef", format!("{} is not a Secret", secret.name)));
    }
    if secret.namespace.as_deref().is_some_and(|n| n != namespace) {
        return Err((
            "RefNotPermitted",
            format!(
                "Secret {}/{}: the gateway reads certificates of its own namespace ({namespace}) only",
                secret.namespace.as_deref().unwrap_or_default(),
                secret.name
            ),
        ));
    }
    if !cluster.certificate_exists(namespace, &secret.name) {
        return Err((
            "InvalidCertificateRef",
            format!("No TLS Secret {namespace}/{} with tls.crt and tls.key", secret.name),
        ));
    }
    Ok(())
}

/// Whether every backend of the route can be used: a Service (`InvalidKind`), of the route's
/// namespace or granted by a ReferenceGrant (`RefNotPermitted`), that exists
/// (`BackendNotFound`).
fn resolve(
    route: &Route<'_>,
    grants: &[&mesh_api::gateway_api::ReferenceGrant],
    cluster: &dyn Cluster,
    domain: &str,
) -> Result<(), (&'static str, String)> {
    for b in &route.backends {
        let BackendRef { group, kind, name, namespace, .. } = b;
        if kind.as_deref().is_some_and(|k| k != "Service")
            || group.as_deref().is_some_and(|g| !g.is_empty())
        {
            return Err((
                "InvalidKind",
                format!(
                    "Backend {name} is a {}, not a Service",
                    kind.as_deref().unwrap_or("Service")
                ),
            ));
        }
        let ns = namespace.clone().unwrap_or_else(|| route.namespace.clone());
        if ns != route.namespace && !granted(grants, route.kind, &route.namespace, &ns, name) {
            return Err((
                "RefNotPermitted",
                format!(
                    "Service {ns}/{name}: no ReferenceGrant in {ns} lets {}s of {} refer to it",
                    route.kind.name(),
                    route.namespace
                ),
            ));
        }
        let host = format!("{name}.{ns}.svc.{domain}");
        if !cluster.service_exists(&host) {
            return Err(("BackendNotFound", format!("No Service {ns}/{name}")));
        }
    }
    Ok(())
}

fn route_ref(route: &Route<'_>) -> ObjectRef {
    ObjectRef::new(route.kind.name(), Some(&route.namespace), &route.name)
}

fn route_status<'a>(route: &Route<'a>) -> Option<&'a RouteStatus> {
    match route.object {
        attach::RouteObject::Http(r) => r.status.as_ref(),
        attach::RouteObject::Grpc(r) => r.status.as_ref(),
        attach::RouteObject::Tls(r) => r.status.as_ref(),
    }
}

fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        condition_type: kind.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: String::new(),
    }
}

fn is_true(conditions: &[Condition], kind: &str) -> bool {
    conditions.iter().any(|c| c.condition_type == kind && c.status == "True")
}

/// Conditions with their transition times: the old one's when the status did not change,
/// `now` otherwise.
fn settle(mut conditions: Vec<Condition>, old: &[Condition], now: &str) -> Vec<Condition> {
    for c in &mut conditions {
        c.last_transition_time = old
            .iter()
            .find(|o| o.condition_type == c.condition_type && o.status == c.status)
            .map_or_else(|| now.to_owned(), |o| o.last_transition_time.clone());
    }
    conditions
}
