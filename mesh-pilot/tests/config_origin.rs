//! Each cluster a DestinationRule configures and each route a VirtualService makes names that
//! object where istiod writes it (`metadata.filter_metadata.istio.config`,
//! `/apis/networking.istio.io/v1/namespaces/<ns>/<kind>/<name>`): `proxy-config clusters` and
//! `proxy-config routes` show it in their DESTINATION RULE and VIRTUAL SERVICE columns. The
//! ones no object made name nothing.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use mesh_pilot::model::{Proxy, Snapshot};
use mesh_pilot::source::local;
use mesh_pilot::translate::{self, origin::config_path};
use prost::Message;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: demo}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 9080}], selector: {app: reviews}}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: demo}
spec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 9080}], selector: {app: ratings}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews-rule, namespace: demo}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews-route, namespace: demo}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: site, namespace: demo}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: [web.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: demo}
spec:
  hosts: [web.example.com]
  gateways: [site]
  http: [{route: [{destination: {host: ratings}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: demo}
spec:
  gatewayClassName: mesh
  listeners: [{name: http, port: 8081, protocol: HTTP, hostname: shop.example.com}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: demo}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: ratings, port: 9080}]}]
"#;

fn mesh() -> Snapshot {
    let report = mesh_api::load::load_str("mesh.yaml", MESH);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let objects: Vec<Arc<mesh_api::load::Loaded>> =
        report.objects.into_iter().map(Arc::new).collect();
    let (snapshot, rejected) = local::build(&objects);
    assert!(rejected.is_empty(), "{rejected:?}");
    snapshot
}

fn sidecar() -> Proxy {
    Proxy {
        id: "sidecar~10.1.0.5~productpage-1.demo~demo.svc.cluster.local".into(),
        namespace: "demo".into(),
        ips: vec!["10.1.0.5".parse().unwrap()],
        ..Proxy::default()
    }
}

fn gateway(labels: &[(&str, &str)]) -> Proxy {
    Proxy {
        id: "router~10.1.0.7~gateway-1.demo~demo.svc.cluster.local".into(),
        namespace: "demo".into(),
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ips: vec!["10.1.0.7".parse().unwrap()],
        router: true,
        ..Proxy::default()
    }
}

fn decode<T: Message + Default>(snapshot: &Snapshot, proxy: &Proxy, type_url: &str) -> Vec<T> {
    let resources = translate::generate(type_url, snapshot, proxy).unwrap();
    resources.iter().map(|(_, any)| T::decode(any.value.as_slice()).unwrap()).collect()
}

/// `(virtual host, route, the object it names)` of every route a proxy gets.
fn route_origins(snapshot: &Snapshot, proxy: &Proxy) -> Vec<(String, String, Option<String>)> {
    let configs: Vec<RouteConfiguration> = decode(snapshot, proxy, mesh_api::xds::ROUTE_TYPE);
    configs
        .iter()
        .flat_map(|c| &c.virtual_hosts)
        .flat_map(|v| {
            v.routes.iter().map(|r| {
                let origin = config_path(r.metadata.as_ref()).map(str::to_owned);
                (v.name.clone(), r.name.clone(), origin)
            })
        })
        .collect()
}

const REVIEWS_RULE: &str =
    "/apis/networking.istio.io/v1/namespaces/demo/destination-rule/reviews-rule";
const REVIEWS_ROUTE: &str =
    "/apis/networking.istio.io/v1/namespaces/demo/virtual-service/reviews-route";

#[test]
fn the_clusters_of_a_destination_rule_name_it_and_no_other_does() {
    let clusters: Vec<Cluster> = decode(&mesh(), &sidecar(), mesh_api::xds::CLUSTER_TYPE);
    let origins: Vec<(&str, Option<&str>)> =
        clusters.iter().map(|c| (c.name.as_str(), config_path(c.metadata.as_ref()))).collect();
    assert_eq!(
        origins,
        [
            ("BlackHoleCluster", None),
            ("InboundPassthroughCluster", None),
            ("PassthroughCluster", None),
            ("outbound|9080|v1|reviews.demo.svc.cluster.local", Some(REVIEWS_RULE)),
            ("outbound|9080||ratings.demo.svc.cluster.local", None),
            ("outbound|9080||reviews.demo.svc.cluster.local", Some(REVIEWS_RULE)),
        ]
    );
}

#[test]
fn the_routes_of_a_virtual_service_name_it_and_default_routes_name_nothing() {
    let routes = route_origins(&mesh(), &sidecar());
    let reviews = Some(REVIEWS_ROUTE.to_owned());
    assert_eq!(
        routes,
        [
            ("ratings.demo.svc.cluster.local:9080".into(), "default".into(), None),
            (
                "reviews.demo.svc.cluster.local:9080".into(),
                "reviews-route.demo.0".into(),
                reviews.clone()
            ),
            ("reviews.demo.svc.cluster.local:9080".into(), "reviews-route.demo.1".into(), reviews),
            ("allow_any".into(), "allow_any".into(), None),
        ]
    );
}

#[test]
fn a_gateways_routes_name_the_virtual_service_bound_to_it() {
    let routes = route_origins(&mesh(), &gateway(&[("istio", "ingressgateway")]));
    let web = "/apis/networking.istio.io/v1/namespaces/demo/virtual-service/web";
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0].2.as_deref(), Some(web), "{routes:?}");
}

#[test]
fn a_gateway_api_route_names_the_virtual_service_made_of_it() {
    // As istiod's: the VirtualService the HTTPRoute became, under its generated name.
    let routes =
        route_origins(&mesh(), &gateway(&[("gateway.networking.k8s.io/gateway-name", "edge")]));
    let shop = "/apis/networking.istio.io/v1/namespaces/demo/virtual-service/shop-httproute";
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0].2.as_deref(), Some(shop), "{routes:?}");
}

#[test]
fn the_config_dump_shows_the_path_where_proxy_config_reads_it() {
    // The pilot's /debug/config_dump and mesh-proxy's /config_dump render resources this way.
    let resources = translate::generate(mesh_api::xds::ROUTE_TYPE, &mesh(), &sidecar()).unwrap();
    let (_, any) = resources.iter().find(|(name, _)| name == "9080").unwrap();
    let json = mesh_api::envoy::to_json(&any.type_url, &any.value).unwrap();
    let reviews = json["virtualHosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "reviews.demo.svc.cluster.local:9080")
        .unwrap();
    assert_eq!(
        reviews["routes"][0]["metadata"]["filterMetadata"]["istio"]["config"],
        REVIEWS_ROUTE
    );
}
