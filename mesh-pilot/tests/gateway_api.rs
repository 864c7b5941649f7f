//! The Gateway API: GRPCRoute and TLSRoute give the same gateway configuration as the
//! equivalent Istio VirtualServices; routes attach to the listeners the Gateway API's rules
//! say (section, port, protocol, namespaces, hostnames); and the statuses written back say
//! the same decisions (Accepted, ResolvedRefs, Programmed, attachedRoutes).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use mesh_api::Resource;
use mesh_api::gateway_api::status::{Condition, GatewayAddress};
use mesh_pilot::model::{Proxy, Snapshot};
use mesh_pilot::source::gateway_api::status::{Cluster, Statuses, statuses};
use mesh_pilot::source::gateway_api::{Inputs, RouteKind};
use mesh_pilot::source::local;
use mesh_pilot::translate;
use prost::Message;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: apps}
spec: {clusterIP: 10.96.0.10, ports: [{name: grpc, port: 50051}], selector: {app: greeter}}
---
apiVersion: v1
kind: Service
metadata: {name: greeter-v2, namespace: apps}
spec: {clusterIP: 10.96.0.11, ports: [{name: grpc, port: 50051}], selector: {app: greeter, version: v2}}
---
apiVersion: v1
kind: Service
metadata: {name: tls-backend, namespace: apps}
spec: {clusterIP: 10.96.0.12, ports: [{name: tls, port: 8443}], selector: {app: tls-backend}}
"#;

/// Istio's way: a Gateway selecting the proxy, VirtualServices bound to it.
const ISTIO: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: apps}
spec:
  selector: {gateway.networking.k8s.io/gateway-name: edge}
  servers:
  - port: {number: 8080, name: grpc, protocol: HTTP}
    hosts: ["*/grpc.example.com"]
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: ["*/*.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter, namespace: apps}
spec:
  hosts: [grpc.example.com]
  gateways: [edge]
  http:
  - match: [{uri: {exact: /helloworld.Greeter/SayHello}, headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: greeter-v2.apps.svc.cluster.local, port: {number: 50051}}, weight: 1}]
  - match: [{uri: {prefix: /helloworld.Greeter/}}]
    route:
    - {destination: {host: greeter.apps.svc.cluster.local, port: {number: 50051}}, weight: 3}
    - {destination: {host: greeter-v2.apps.svc.cluster.local, port: {number: 50051}}, weight: 1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: apps}
spec:
  hosts: [backend.example.com]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [backend.example.com]}]
    route: [{destination: {host: tls-backend.apps.svc.cluster.local, port: {number: 8443}}}]
"#;

/// The same with the Gateway API.
const GATEWAY_API: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: apps}
spec:
  gatewayClassName: mesh
  listeners:
  - {name: grpc, port: 8080, protocol: HTTP, hostname: grpc.example.com}
  - name: tls
    port: 8443
    protocol: TLS
    hostname: "*.example.com"
    tls: {mode: Passthrough}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: apps}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{method: {service: helloworld.Greeter, method: SayHello}, headers: [{name: X-Canary, value: "yes"}]}]
    backendRefs: [{name: greeter-v2, port: 50051}]
  - matches: [{method: {service: helloworld.Greeter}}]
    backendRefs: [{name: greeter, port: 50051, weight: 3}, {name: greeter-v2, port: 50051, weight: 1}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: backend, namespace: apps}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [backend.example.com]
  rules: [{backendRefs: [{name: tls-backend, port: 8443}]}]
"#;

fn load(yaml: &str) -> Vec<Arc<mesh_api::load::Loaded>> {
    let mut report = mesh_api::load::load_str("gateway-api.yaml", yaml);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    local::in_default_namespace(&mut report.objects);
    report.objects.into_iter().map(Arc::new).collect()
}

fn build(yaml: &str) -> Snapshot {
    let (snapshot, rejected) = local::build(&load(yaml));
    assert!(rejected.is_empty(), "{rejected:?}");
    snapshot
}

fn proxy() -> Proxy {
    Proxy {
        id: "router~10.77.0.20~edge-1.apps~apps.svc.cluster.local".into(),
        namespace: "apps".into(),
        labels: [("gateway.networking.k8s.io/gateway-name".to_owned(), "edge".to_owned())].into(),
        ips: vec!["10.77.0.20".parse().unwrap()],
        router: true,
        ..Proxy::default()
    }
}

fn decode<T: Message + Default>(snapshot: &Snapshot, type_url: &str) -> Vec<T> {
    let resources = translate::generate(type_url, snapshot, &proxy()).unwrap();
    resources.iter().map(|(_, any)| T::decode(any.value.as_slice()).unwrap()).collect()
}

/// A gateway's configuration with what names only the objects it came from taken out:
/// listeners (ports, chain matches, filters' clusters) and routes (matches and actions).
fn behaviour(snapshot: &Snapshot) -> (Vec<String>, Vec<String>) {
    let listeners: Vec<Listener> = decode(snapshot, mesh_api::xds::LISTENER_TYPE);
    let chains = listeners
        .iter()
        .flat_map(|l| {
            l.filter_chains.iter().map(move |c| {
                format!(
                    "{} {:?} {:?}",
                    l.name,
                    c.filter_chain_match.as_ref().map(|m| &m.server_names),
                    c.filters.iter().map(|f| &f.config_type).collect::<Vec<_>>()
                )
            })
        })
        .collect();
    let routes: Vec<RouteConfiguration> = decode(snapshot, mesh_api::xds::ROUTE_TYPE);
    let rules = routes
        .iter()
        .flat_map(|r| &r.virtual_hosts)
        .flat_map(|v| {
            v.routes.iter().map(move |r| format!("{:?} {:?} {:?}", v.domains, r.r#match, r.action))
        })
        .collect();
    (chains, rules)
}

#[test]
fn grpc_and_tls_routes_configure_the_gateway_as_the_equivalent_virtual_services_do() {
    let istio = behaviour(&build(&format!("{SERVICES}\n---\n{ISTIO}")));
    let gateway_api = behaviour(&build(&format!("{SERVICES}\n---\n{GATEWAY_API}")));
    assert_eq!(istio.0.len(), 2, "a gRPC chain and a passthrough chain: {:?}", istio.0);
    assert_eq!(istio.1.len(), 2, "two gRPC rules: {:?}", istio.1);
    assert!(istio.0[1].contains("backend.example.com"), "{}", istio.0[1]);
    assert_eq!(gateway_api, istio);
}

#[test]
fn a_grpc_method_match_is_a_path_match() {
    let yaml = format!(
        "{SERVICES}\n---\n{}",
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: apps}
spec:
  gatewayClassName: mesh
  listeners: [{name: grpc, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: methods, namespace: apps}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{method: {method: Check}}]
    backendRefs: [{name: greeter, port: 50051}]
  - matches: [{method: {type: RegularExpression, service: "grpc\\.health\\..*", method: "Watch|Check"}}]
    backendRefs: [{name: greeter, port: 50051}]
  - matches: [{method: {service: a.b.C+D}}]
    backendRefs: [{name: greeter, port: 50051}]
"#
    );
    let routes: Vec<RouteConfiguration> = decode(&build(&yaml), mesh_api::xds::ROUTE_TYPE);
    let paths: Vec<String> = routes[0].virtual_hosts[0]
        .routes
        .iter()
        .map(|r| format!("{:?}", r.r#match.as_ref().unwrap().path_specifier))
        .collect();
    assert!(paths[0].contains(r#""/[^/]+/Check""#), "{}", paths[0]);
    assert!(paths[1].contains(r#""/grpc\\.health\\..*/Watch|Check""#), "{}", paths[1]);
    assert!(paths[2].contains(r#"Prefix("/a.b.C+D/")"#), "{}", paths[2]);
}

/// What the status tests know of the cluster.
#[derive(Default)]
struct FakeCluster {
    services: BTreeSet<String>,
    certificates: BTreeSet<(String, String)>,
    proxies: HashMap<(String, String), usize>,
}

impl Cluster for FakeCluster {
    fn service_exists(&self, host: &str) -> bool {
        self.services.contains(host)
    }
    fn certificate_exists(&self, namespace: &str, name: &str) -> bool {
        self.certificates.contains(&(namespace.to_owned(), name.to_owned()))
    }
    fn ready_proxies(&self, namespace: &str, gateway: &str) -> usize {
        self.proxies.get(&(namespace.to_owned(), gateway.to_owned())).copied().unwrap_or(0)
    }
    fn addresses(&self, _: &str, _: &str) -> Vec<GatewayAddress> {
        vec![GatewayAddress { address_type: Some("IPAddress".into()), value: "10.96.0.2".into() }]
    }
}

fn compute(
    objects: &[Arc<mesh_api::load::Loaded>],
    cluster: &FakeCluster,
    invalid: &[(&str, &str, &str)],
) -> Statuses {
    let mut inputs = Inputs::default();
    for o in objects {
        match &o.resource {
            Resource::GatewayClass(c) => inputs.classes.push(c),
            Resource::KubeGateway(g) => inputs.gateways.push(g),
            Resource::HttpRoute(r) => inputs.http_routes.push(r),
            Resource::GrpcRoute(r) => inputs.grpc_routes.push(r),
            Resource::TlsRoute(r) => inputs.tls_routes.push(r),
            Resource::ReferenceGrant(g) => inputs.grants.push(g),
            _ => {}
        }
    }
    let invalid = invalid
        .iter()
        .map(|(kind, name, reason)| {
            (mesh_api::ObjectRef::new(kind, Some("apps"), name), (*reason).to_owned())
        })
        .collect();
    statuses(&inputs, cluster, &invalid, "cluster.local", "2026-11-30T16:00:00Z")
}

/// `type status reason` of each condition.
fn brief(conditions: &[Condition]) -> Vec<String> {
    conditions.iter().map(|c| format!("{} {} {}", c.condition_type, c.status, c.reason)).collect()
}

const ATTACHING: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: mesh, generation: 1}
spec: {controllerName: mesh.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/another-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: apps, generation: 3}
spec:
  gatewayClassName: mesh
  listeners:
  - {name: http, port: 8080, protocol: HTTP, hostname: "*.example.com"}
  - name: https
    port: 8443
    protocol: HTTPS
    hostname: secure.example.com
    tls: {certificateRefs: [{name: missing-cred}]}
    allowedRoutes: {namespaces: {from: All}}
  - {name: tcp, port: 9000, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: apps}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: apps, generation: 2}
spec:
  parentRefs: [{name: edge, sectionName: http}, {name: foreign}]
  hostnames: [shop.example.com]
  rules: [{backendRefs: [{name: greeter, port: 50051}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: elsewhere, namespace: apps}
spec:
  parentRefs: [{name: edge}]
  hostnames: [www.elsewhere.org]
  rules: [{backendRefs: [{name: greeter, port: 50051}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: from-other-ns, namespace: team}
spec:
  parentRefs: [{name: edge, namespace: apps}]
  rules: [{backendRefs: [{name: reviews, namespace: apps, port: 9080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: missing-section, namespace: apps}
spec:
  parentRefs: [{name: edge, sectionName: nope}]
  rules: [{backendRefs: [{name: gone, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: tls-on-http, namespace: apps}
spec:
  parentRefs: [{name: edge, port: 8080}]
  rules: [{backendRefs: [{name: tls-backend, port: 8443}]}]
"#;

fn cluster() -> FakeCluster {
    FakeCluster {
        services: ["greeter.apps.svc.cluster.local", "tls-backend.apps.svc.cluster.local"]
            .map(str::to_owned)
            .into(),
        ..FakeCluster::default()
    }
}

#[test]
fn route_statuses_say_where_each_parent_took_the_route_or_why_not() {
    let out = compute(&load(ATTACHING), &cluster(), &[]);
    let route = |kind: RouteKind, ns: &str, name: &str| {
        out.routes
            .get(&(kind, ns.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("{name}: {:?}", out.routes.keys()))
    };

    // Attached to its section; the parent of another controller is not ours to speak for.
    let shop = route(RouteKind::Http, "apps", "shop");
    assert_eq!(shop.parents.len(), 1, "{shop:?}");
    assert_eq!(shop.parents[0].controller_name, "mesh.io/gateway-controller");
    assert_eq!(shop.parents[0].parent_ref.section_name.as_deref(), Some("http"));
    assert_eq!(
        brief(&shop.parents[0].conditions),
        ["Accepted True Accepted", "ResolvedRefs True ResolvedRefs"]
    );
    assert_eq!(shop.parents[0].conditions[0].observed_generation, Some(2));
    assert_eq!(shop.parents[0].conditions[0].last_transition_time, "2026-11-30T16:00:00Z");

    let elsewhere = route(RouteKind::Http, "apps", "elsewhere");
    assert_eq!(
        brief(&elsewhere.parents[0].conditions)[0],
        "Accepted False NoMatchingListenerHostname"
    );

    // Only the HTTPS listener takes routes of other namespaces; the backend in apps needs a
    // ReferenceGrant, and does not exist either.
    let team = route(RouteKind::Http, "team", "from-other-ns");
    assert_eq!(
        brief(&team.parents[0].conditions),
        ["Accepted True Accepted", "ResolvedRefs False RefNotPermitted"]
    );
    assert!(team.parents[0].conditions[0].message.contains("https"), "{:?}", team.parents[0]);

    let missing = route(RouteKind::Http, "apps", "missing-section");
    assert_eq!(
        brief(&missing.parents[0].conditions),
        ["Accepted False NoMatchingParent", "ResolvedRefs False BackendNotFound"]
    );
    assert!(missing.parents[0].conditions[0].message.contains("\"nope\""));

    let tls = route(RouteKind::Tls, "apps", "tls-on-http");
    assert_eq!(brief(&tls.parents[0].conditions)[0], "Accepted False NotAllowedByListeners");
}

#[test]
fn gateway_statuses_count_attached_routes_and_say_what_is_missing() {
    let mut cluster = cluster();
    let out = compute(&load(ATTACHING), &cluster, &[]);
    assert_eq!(out.classes.keys().collect::<Vec<_>>(), ["mesh"], "only the mesh's classes");
    assert_eq!(brief(&out.classes["mesh"].conditions), ["Accepted True Accepted"]);
    assert!(!out.gateways.contains_key(&("apps".to_owned(), "foreign".to_owned())));

    let edge = &out.gateways[&("apps".to_owned(), "edge".to_owned())];
    assert_eq!(brief(&edge.conditions), ["Accepted True Accepted", "Programmed False NoResources"]);
    assert!(edge.conditions[1].message.contains("gateway.networking.k8s.io/gateway-name=edge"));
    assert_eq!(edge.addresses[0].value, "10.96.0.2");
    let listeners: Vec<(&str, i32, Vec<String>)> = edge
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.attached_routes, brief(&l.conditions)))
        .collect();
    assert_eq!(
        listeners,
        [
            (
                "http",
                1,
                vec![
                    "Accepted True Accepted".into(),
                    "ResolvedRefs True ResolvedRefs".into(),
                    "Programmed True Programmed".into()
                ]
            ),
            (
                "https",
                1,
                vec![
                    "Accepted True Accepted".into(),
                    "ResolvedRefs False InvalidCertificateRef".into(),
                    "Programmed False Invalid".into()
                ]
            ),
            (
                "tcp",
                0,
                vec![
                    "Accepted False UnsupportedProtocol".into(),
                    "ResolvedRefs True ResolvedRefs".into(),
                    "Programmed False Invalid".into()
                ]
            ),
        ]
    );
    let kinds: Vec<&str> =
        edge.listeners[0].supported_kinds.iter().map(|k| k.kind.as_str()).collect();
    assert_eq!(kinds, ["HTTPRoute", "GRPCRoute"]);

    // The certificate and a ready proxy arrive.
    cluster.certificates.insert(("apps".into(), "missing-cred".into()));
    cluster.proxies.insert(("apps".into(), "edge".into()), 2);
    let out = compute(&load(ATTACHING), &cluster, &[]);
    let edge = &out.gateways[&("apps".to_owned(), "edge".to_owned())];
    assert_eq!(brief(&edge.conditions)[1], "Programmed True Programmed");
    assert_eq!(brief(&edge.listeners[1].conditions)[2], "Programmed True Programmed");
}

#[test]
fn an_invalid_route_is_not_accepted_and_not_counted() {
    let out = compute(&load(ATTACHING), &cluster(), &[("HTTPRoute", "shop", "spec.rules[0]: bad")]);
    let shop = &out.routes[&(RouteKind::Http, "apps".to_owned(), "shop".to_owned())];
    assert_eq!(brief(&shop.parents[0].conditions)[0], "Accepted False UnsupportedValue");
    assert_eq!(shop.parents[0].conditions[0].message, "spec.rules[0]: bad");
    let edge = &out.gateways[&("apps".to_owned(), "edge".to_owned())];
    assert_eq!(edge.listeners[0].attached_routes, 0);
}

#[test]
fn statuses_keep_other_controllers_entries_and_unchanged_transition_times() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: apps}
spec:
  gatewayClassName: mesh
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: apps}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: greeter, port: 50051}]}]
status:
  parents:
  - parentRef: {name: elsewhere}
    controllerName: example.com/another-controller
    conditions: [{type: Accepted, status: "True", reason: Accepted, message: theirs, lastTransitionTime: "2026-01-01T00:00:00Z"}]
  - parentRef: {name: edge}
    controllerName: mesh.io/gateway-controller
    conditions:
    - {type: Accepted, status: "True", reason: Accepted, message: old words, lastTransitionTime: "2026-11-01T00:00:00Z"}
    - {type: ResolvedRefs, status: "False", reason: BackendNotFound, message: gone, lastTransitionTime: "2026-11-01T00:00:00Z"}
"#;
    let out = compute(&load(yaml), &cluster(), &[]);
    let shop = &out.routes[&(RouteKind::Http, "apps".to_owned(), "shop".to_owned())];
    assert_eq!(shop.parents.len(), 2);
    assert_eq!(shop.parents[0].controller_name, "example.com/another-controller");
    assert_eq!(shop.parents[0].conditions[0].message, "theirs");
    let ours = &shop.parents[1].conditions;
    assert_eq!(ours[0].last_transition_time, "2026-11-01T00:00:00Z", "still True: the time stays");
    assert_eq!(ours[1].status, "True");
    assert_eq!(ours[1].last_transition_time, "2026-11-30T16:00:00Z", "now True: the time moves");
}
