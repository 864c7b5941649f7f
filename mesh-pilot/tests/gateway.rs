//! A gateway proxy's configuration: listeners from the Gateway servers that select it (a
//! Service's port 80 served on its target port 8080), routes from the VirtualServices bound to
//! the Gateway, kept apart from the mesh's routes, hosts matched with namespaces and wildcards.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action};
use mesh_pilot::model::{Proxy, Snapshot};
use mesh_pilot::source::local;
use mesh_pilot::translate;
use prost::Message;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: bookinfo}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 9080}], selector: {app: productpage}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 9080}], selector: {app: reviews}}
---
apiVersion: v1
kind: Service
metadata: {name: mesh-ingressgateway, namespace: mesh-system}
spec: {clusterIP: 10.96.0.2, ports: [{name: http2, port: 80, targetPort: 8080}], selector: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingress, namespace: mesh-system}
spec: {address: 10.77.0.20, labels: {istio: ingressgateway}, serviceAccount: mesh-ingressgateway}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["other/*.shop.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {exact: /productpage}}, {uri: {prefix: /static}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
  - match: [{uri: {prefix: /reviews}, gateways: [mesh]}]
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-mesh, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: bookinfo}
spec:
  hosts: [cart.shop.example.com]
  gateways: [bookinfo/shop]
  http:
  - route: [{destination: {host: productpage}}]
"#;

/// The model of `yaml`, as the local source builds it; every object must load and be admitted.
fn build(yaml: &str) -> Snapshot {
    let mut report = mesh_api::load::load_str("gateway.yaml", yaml);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    local::in_default_namespace(&mut report.objects);
    let objects: Vec<Arc<mesh_api::load::Loaded>> =
        report.objects.into_iter().map(Arc::new).collect();
    let (snapshot, rejected) = local::build(&objects);
    assert!(rejected.is_empty(), "{rejected:?}");
    snapshot
}

fn snapshot() -> Snapshot {
    build(MESH)
}

fn gateway_proxy() -> Proxy {
    Proxy {
        id: "router~10.77.0.20~ingress.mesh-system~mesh-system.svc.cluster.local".into(),
        namespace: "mesh-system".into(),
        labels: [("istio".to_owned(), "ingressgateway".to_owned())].into(),
        ips: vec!["10.77.0.20".parse().unwrap()],
        router: true,
        ..Proxy::default()
    }
}

fn decode<T: Message + Default>(
    resources: &[(String, envoy_types::pb::google::protobuf::Any)],
) -> Vec<T> {
    resources.iter().map(|(_, any)| T::decode(any.value.as_slice()).unwrap()).collect()
}

#[test]
fn a_gateway_listens_on_the_target_port_of_its_gateway_port_and_routes_bound_virtual_services() {
    let snapshot = snapshot();
    let proxy = gateway_proxy();
    let listeners: Vec<Listener> =
        decode(&translate::generate(mesh_api::xds::LISTENER_TYPE, &snapshot, &proxy).unwrap());
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["0.0.0.0_8080"], "port 80 of the Service is 8080 on the gateway");
    assert!(listeners[0].use_original_dst.is_none(), "a gateway captures nothing");

    let routes: Vec<RouteConfiguration> =
        decode(&translate::generate(mesh_api::xds::ROUTE_TYPE, &snapshot, &proxy).unwrap());
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].name, "http.80");
    let hosts: Vec<(&str, &[String])> =
        routes[0].virtual_hosts.iter().map(|v| (v.name.as_str(), v.domains.as_slice())).collect();
    // `shop` admits only hosts of namespace `other`: its VirtualService (in bookinfo) is not served.
    assert_eq!(hosts, [("*:80", &["*".to_owned()][..])]);
    let star = &routes[0].virtual_hosts[0];
    // The rule bound to `mesh` only is left out of the gateway's routes.
    assert_eq!(star.routes.len(), 2, "{:?}", star.routes);
    let Some(route::Action::Route(action)) = &star.routes[0].action else { panic!() };
    assert_eq!(
        action.cluster_specifier,
        Some(route_action::ClusterSpecifier::Cluster(
            "outbound|9080||productpage.bookinfo.svc.cluster.local".to_owned()
        ))
    );
}

#[test]
fn sidecars_keep_their_own_routes_and_never_see_gateway_bound_ones() {
    let snapshot = snapshot();
    let sidecar = Proxy {
        id: "sidecar~10.77.0.30~sleep.bookinfo~bookinfo.svc.cluster.local".into(),
        namespace: "bookinfo".into(),
        ..Proxy::default()
    };
    let routes: Vec<RouteConfiguration> =
        decode(&translate::generate(mesh_api::xds::ROUTE_TYPE, &snapshot, &sidecar).unwrap());
    let port = routes.iter().find(|r| r.name == "9080").unwrap();
    let productpage =
        port.virtual_hosts.iter().find(|v| v.name.starts_with("productpage")).unwrap();
    assert_eq!(
        productpage.routes.len(),
        1,
        "the default route: the gateway's VirtualService is not the mesh's"
    );
    let reviews = port.virtual_hosts.iter().find(|v| v.name.starts_with("reviews")).unwrap();
    let Some(route::Action::Route(action)) = &reviews.routes[0].action else { panic!() };
    assert_eq!(
        action.cluster_specifier,
        Some(route_action::ClusterSpecifier::Cluster(
            "outbound|9080|v1|reviews.bookinfo.svc.cluster.local".to_owned()
        ))
    );
    let listeners: Vec<Listener> =
        decode(&translate::generate(mesh_api::xds::LISTENER_TYPE, &snapshot, &sidecar).unwrap());
    assert!(listeners.iter().any(|l| l.name == "virtualOutbound"));
}

#[test]
fn server_hosts_admit_virtual_services_by_namespace_and_wildcard() {
    let mut snapshot = snapshot();
    // The shop Gateway now admits bookinfo's hosts under *.shop.example.com.
    let gateway =
        snapshot.gateways.iter_mut().find(|g| g.metadata.name.as_deref() == Some("shop")).unwrap();
    gateway.spec.servers[0].hosts = vec!["./*.shop.example.com".to_owned()];
    let routes: Vec<RouteConfiguration> = decode(
        &translate::generate(mesh_api::xds::ROUTE_TYPE, &snapshot, &gateway_proxy()).unwrap(),
    );
    let names: Vec<&str> = routes[0].virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["*:80", "cart.shop.example.com:80"]);
    let cart = &routes[0].virtual_hosts[1];
    assert_eq!(cart.domains, ["cart.shop.example.com", "cart.shop.example.com:*"]);

    // A proxy the Gateways do not select gets no listener.
    let other = Proxy {
        labels: [("istio".to_owned(), "egressgateway".to_owned())].into(),
        ..gateway_proxy()
    };
    let listeners = translate::generate(mesh_api::xds::LISTENER_TYPE, &snapshot, &other).unwrap();
    assert!(listeners.is_empty());
}

const TLS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: bookinfo-cred, namespace: mesh-system}
type: kubernetes.io/tls
stringData: {tls.crt: "CERT", tls.key: "KEY", ca.crt: "CA"}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-cred}
  - port: {number: 8443, name: https-mutual, protocol: HTTPS}
    hosts: [partners.example.com]
    tls: {mode: MUTUAL, credentialName: bookinfo-cred}
  - port: {number: 8443, name: https-missing, protocol: HTTPS}
    hosts: [missing.example.com]
    tls: {mode: SIMPLE, credentialName: nowhere}
  - port: {number: 8444, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 8081, name: http, protocol: HTTP}
    hosts: [bookinfo.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 8445, name: https-mesh, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: bookinfo}
spec:
  hosts: [bookinfo.example.com, partners.example.com]
  gateways: [secure]
  http:
  - route: [{destination: {host: productpage}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: passthrough, namespace: bookinfo}
spec:
  hosts: [db.example.com]
  gateways: [secure]
  tls:
  - match: [{sniHosts: [db.example.com], port: 8444}]
    route: [{destination: {host: reviews, port: {number: 9080}}}]
"#;

fn with_tls() -> Snapshot {
    build(&format!("{MESH}\n---\n{TLS}"))
}

#[test]
fn tls_servers_terminate_with_their_credentials_pass_through_by_sni_and_redirect_plain_http() {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        DownstreamTlsContext, Secret, secret,
    };
    let snapshot = with_tls();
    let proxy = gateway_proxy();
    let listeners: Vec<Listener> =
        decode(&translate::generate(mesh_api::xds::LISTENER_TYPE, &snapshot, &proxy).unwrap());
    let https = listeners.iter().find(|l| l.name == "0.0.0.0_8443").unwrap();
    assert_eq!(https.listener_filters[0].name, "envoy.filters.listener.tls_inspector");
    let chains: Vec<(Vec<String>, Option<bool>)> = https
        .filter_chains
        .iter()
        .map(|c| {
            let Some(ConfigType::TypedConfig(any)) =
                c.transport_socket.as_ref().unwrap().config_type.as_ref()
            else {
                panic!()
            };
            let tls = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
            let common = tls.common_tls_context.unwrap();
            assert_eq!(
                common.tls_certificate_sds_secret_configs[0].name,
                "kubernetes://bookinfo-cred"
            );
            (
                c.filter_chain_match.clone().unwrap().server_names,
                tls.require_client_certificate.map(|b| b.value),
            )
        })
        .collect();
    // The server whose Secret does not exist is not served.
    assert_eq!(
        chains,
        [
            (vec!["bookinfo.example.com".to_owned()], None),
            (vec!["partners.example.com".to_owned()], Some(true))
        ]
    );
    // ISTIO_MUTUAL: mesh mTLS with the gateway's own certificate (no credential).
    let mesh_tls = listeners.iter().find(|l| l.name == "0.0.0.0_8445").unwrap();
    let socket = mesh_tls.filter_chains[0].transport_socket.as_ref().unwrap();
    let Some(ConfigType::TypedConfig(any)) = socket.config_type.as_ref() else { panic!() };
    let context = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
    assert_eq!(context.require_client_certificate.map(|b| b.value), Some(true));
    let names: Vec<String> = context
        .common_tls_context
        .unwrap()
        .tls_certificate_sds_secret_configs
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(names, ["default"], "the workload certificate, not a Secret");
    let passthrough = listeners.iter().find(|l| l.name == "0.0.0.0_8444").unwrap();
    assert_eq!(passthrough.filter_chains.len(), 1);
    assert_eq!(
        passthrough.filter_chains[0].filter_chain_match.as_ref().unwrap().server_names,
        ["db.example.com"]
    );
    assert!(passthrough.filter_chains[0].transport_socket.is_none(), "not terminated");

    let secrets: Vec<Secret> =
        decode(&translate::generate(mesh_api::xds::SECRET_TYPE, &snapshot, &proxy).unwrap());
    let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["kubernetes://bookinfo-cred", "kubernetes://bookinfo-cred-cacert"]);
    assert!(matches!(secrets[0].r#type, Some(secret::Type::TlsCertificate(_))));
    let sidecar = Proxy { router: false, ..gateway_proxy() };
    assert!(
        translate::generate(mesh_api::xds::SECRET_TYPE, &snapshot, &sidecar).unwrap().is_empty(),
        "a sidecar gets no gateway credential"
    );

    let routes: Vec<RouteConfiguration> =
        decode(&translate::generate(mesh_api::xds::ROUTE_TYPE, &snapshot, &proxy).unwrap());
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "http.80",
            "http.8081",
            "https.8443.bookinfo.secure.0",
            "https.8443.bookinfo.secure.1",
            "https.8445.bookinfo.secure.5"
        ]
    );
    let redirect = &routes[1].virtual_hosts[0];
    assert_eq!(redirect.domains[0], "bookinfo.example.com");
    assert!(matches!(&redirect.routes[0].action, Some(route::Action::Redirect(_))));
    let secure = &routes[2].virtual_hosts;
    assert_eq!(secure.len(), 1, "only the host the server admits: {secure:?}");
    assert_eq!(secure[0].domains[0], "bookinfo.example.com");
}

const GATEWAY_API: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: bookinfo}
spec:
  gatewayClassName: mesh
  listeners:
  - {name: http, port: 8080, protocol: HTTP, hostname: bookinfo.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other-class, namespace: bookinfo}
spec:
  gatewayClassName: somebody-else
  listeners: [{name: http, port: 9999, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookinfo, namespace: bookinfo}
spec:
  parentRefs: [{name: web}]
  hostnames: [bookinfo.example.com]
  rules:
  - matches: [{path: {type: Exact, value: /productpage}}, {path: {type: PathPrefix, value: /static}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-edge, value: gateway-api}]}
    backendRefs: [{name: productpage, port: 9080}]
  - matches: [{path: {value: /elsewhere}}]
    backendRefs: [{name: ratings, namespace: other, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: productpage-split, namespace: bookinfo}
spec:
  parentRefs: [{group: "", kind: Service, name: productpage, port: 9080}]
  rules:
  - backendRefs: [{name: productpage, port: 9080, weight: 90}, {name: reviews, port: 9080, weight: 10}]
"#;

#[test]
fn gateway_api_routes_become_the_same_listeners_and_routes_as_istio_ones() {
    let snapshot = build(&format!("{MESH}\n---\n{GATEWAY_API}"));
    let proxy = Proxy {
        labels: [("gateway.networking.k8s.io/gateway-name".to_owned(), "web".to_owned())].into(),
        namespace: "bookinfo".into(),
        ..gateway_proxy()
    };
    let listeners: Vec<Listener> =
        decode(&translate::generate(mesh_api::xds::LISTENER_TYPE, &snapshot, &proxy).unwrap());
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["0.0.0.0_8080"], "only the Gateway of the mesh's class");
    let routes: Vec<RouteConfiguration> =
        decode(&translate::generate(mesh_api::xds::ROUTE_TYPE, &snapshot, &proxy).unwrap());
    assert_eq!(routes[0].name, "http.8080");
    let vhosts: Vec<&str> = routes[0].virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(vhosts, ["bookinfo.example.com:8080"]);
    let rules = &routes[0].virtual_hosts[0].routes;
    assert_eq!(rules.len(), 3, "two matches of the first rule, one of the second");
    let Some(route::Action::Route(action)) = &rules[0].action else { panic!() };
    assert_eq!(
        action.cluster_specifier,
        Some(route_action::ClusterSpecifier::Cluster(
            "outbound|9080||productpage.bookinfo.svc.cluster.local".to_owned()
        ))
    );
    assert_eq!(rules[0].request_headers_to_add[0].header.as_ref().unwrap().key, "x-edge");
    // Another namespace's Service without a ReferenceGrant: 500, not a route there.
    assert!(
        matches!(&rules[2].action, Some(route::Action::DirectResponse(d)) if d.status == 500),
        "{:?}",
        rules[2].action
    );

    // GAMMA: the route whose parent is the productpage Service is the mesh's route for it.
    let sidecar = Proxy {
        id: "sidecar~10.77.0.30~sleep.bookinfo~bookinfo.svc.cluster.local".into(),
        namespace: "bookinfo".into(),
        ..Proxy::default()
    };
    let routes: Vec<RouteConfiguration> =
        decode(&translate::generate(mesh_api::xds::ROUTE_TYPE, &snapshot, &sidecar).unwrap());
    let port = routes.iter().find(|r| r.name == "9080").unwrap();
    let productpage =
        port.virtual_hosts.iter().find(|v| v.name.starts_with("productpage")).unwrap();
    let Some(route::Action::Route(action)) = &productpage.routes[0].action else { panic!() };
    let Some(route_action::ClusterSpecifier::WeightedClusters(split)) = &action.cluster_specifier
    else {
        panic!("{action:?}")
    };
    let weights: Vec<(&str, u32)> = split
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(
        weights,
        [
            ("outbound|9080||productpage.bookinfo.svc.cluster.local", 90),
            ("outbound|9080||reviews.bookinfo.svc.cluster.local", 10)
        ]
    );
}

#[test]
fn a_sidecar_applied_without_a_namespace_is_in_default() {
    let text = format!(
        "{MESH}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: ro}}\nspec:\n  workloadSelector: {{labels: {{app: client}}}}\n  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}\n"
    );
    let snapshot = build(&text);
    let client = Proxy {
        namespace: "default".into(),
        labels: [("app".to_owned(), "client".to_owned())].into(),
        ..Proxy::default()
    };
    assert!(mesh_pilot::translate::scope::registry_only(&snapshot, &client));
}
