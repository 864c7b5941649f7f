//! Translation of a small mesh (two versions of a service, a TCP service, a VirtualService with
//! a header match, a fault and a weighted split, a DestinationRule with subsets and limits) into
//! Envoy resources, checked field by field.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;
use common::mesh;

use std::path::Path;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::route::v3::{header_matcher, route, route_action, route_match};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use mesh_pilot::model::{Proxy, Snapshot};
use mesh_pilot::source::local;
use mesh_pilot::translate::{self, cluster, endpoint, listener, route as routes};
use prost::Message;

fn client() -> Proxy {
    Proxy {
        id: "sidecar~10.0.0.9~client-1.demo~demo.svc.cluster.local".into(),
        namespace: "demo".into(),
        ..Proxy::default()
    }
}

fn find<'a>(clusters: &'a [Cluster], name: &str) -> &'a Cluster {
    clusters.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no cluster {name}"))
}

#[test]
fn clusters_follow_istio_names_and_destination_rules() {
    let clusters = cluster::clusters(&mesh(), &client());
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "BlackHoleCluster",
            "InboundPassthroughCluster",
            "PassthroughCluster",
            "outbound|5432||db.demo.svc.cluster.local",
            "outbound|80|v1|hello.demo.svc.cluster.local",
            "outbound|80|v2|hello.demo.svc.cluster.local",
            "outbound|80||hello.demo.svc.cluster.local",
        ]
    );
    let hello = find(&clusters, "outbound|80||hello.demo.svc.cluster.local");
    let thresholds = &hello.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(thresholds.max_connections.as_ref().unwrap().value, 100);
    assert_eq!(thresholds.max_pending_requests.as_ref().unwrap().value, 10);
    let outlier = hello.outlier_detection.as_ref().unwrap();
    assert_eq!(outlier.consecutive_5xx.as_ref().unwrap().value, 3);
    assert_eq!(outlier.base_ejection_time.as_ref().unwrap().seconds, 30);
    assert_eq!(outlier.max_ejection_percent.as_ref().unwrap().value, 50);
    assert_eq!(hello.lb_policy, LbPolicy::LeastRequest as i32);
    // The subset's own load balancer overrides; the rule's limits still apply.
    let v2 = find(&clusters, "outbound|80|v2|hello.demo.svc.cluster.local");
    assert_eq!(v2.lb_policy, LbPolicy::RoundRobin as i32);
    assert!(v2.circuit_breakers.is_some());
}

#[test]
fn endpoints_are_split_by_subset_with_mtls_metadata() {
    let assignments = endpoint::load_assignments(&mesh(), &client());
    let addresses = |name: &str| -> Vec<String> {
        let cla = assignments.iter().find(|a| a.cluster_name == name).unwrap();
        cla.endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .map(|e| match &e.host_identifier {
                Some(HostIdentifier::Endpoint(ep)) => {
                    format!("{:?}", ep.address.as_ref().unwrap().address)
                }
                other => format!("{other:?}"),
            })
            .collect()
    };
    let all = addresses("outbound|80||hello.demo.svc.cluster.local");
    assert_eq!(all.len(), 2);
    let v1 = addresses("outbound|80|v1|hello.demo.svc.cluster.local");
    assert_eq!(v1.len(), 1);
    assert!(v1[0].contains("127.0.0.1") && v1[0].contains("18081"), "{v1:?}");
    let v2 = assignments
        .iter()
        .find(|a| a.cluster_name == "outbound|80|v2|hello.demo.svc.cluster.local")
        .unwrap();
    let locality = v2.endpoints[0].locality.as_ref().unwrap();
    assert_eq!((locality.region.as_str(), locality.zone.as_str()), ("eu-west", "zone-a"));
    let meta = v2.endpoints[0].lb_endpoints[0].metadata.as_ref().unwrap();
    let identity = &meta.typed_filter_metadata[mesh_api::xds::mtls::IDENTITY_METADATA];
    assert_eq!(
        mesh_api::envoy::to_json(&identity.type_url, &identity.value).unwrap(),
        "spiffe://cluster.local/ns/demo/sa/hello"
    );
    let tls = &meta.filter_metadata[mesh_api::xds::mtls::TRANSPORT_SOCKET_MATCH];
    assert_eq!(format!("{:?}", tls.fields["tlsMode"].kind), "Some(StringValue(\"istio\"))");
}

#[test]
fn routes_carry_matches_faults_retries_and_weights() {
    let configs = routes::route_configs(&mesh(), &client());
    assert_eq!(configs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["80"]);
    let vhost = configs[0]
        .virtual_hosts
        .iter()
        .find(|v| v.name == "hello.demo.svc.cluster.local:80")
        .unwrap();
    for domain in [
        "hello",
        "hello:80",
        "hello.demo",
        "hello.demo.svc",
        "hello.demo.svc.cluster.local",
        "10.96.0.10",
        "10.96.0.10:80",
    ] {
        assert!(
            vhost.domains.iter().any(|d| d == domain),
            "missing domain {domain}: {:?}",
            vhost.domains
        );
    }
    let names: Vec<&str> = vhost.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["testers", "broken", "split"]);

    let testers = &vhost.routes[0];
    let m = testers.r#match.as_ref().unwrap();
    assert_eq!(m.headers[0].name, "x-tester");
    assert!(matches!(
        m.headers[0].header_match_specifier,
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(_))
    ));
    let Some(route::Action::Route(action)) = &testers.action else { panic!("not a route") };
    assert_eq!(
        action.cluster_specifier,
        Some(route_action::ClusterSpecifier::Cluster(
            "outbound|80|v2|hello.demo.svc.cluster.local".into()
        ))
    );
    assert_eq!(action.timeout.as_ref().unwrap().seconds, 2);
    let retry = action.retry_policy.as_ref().unwrap();
    assert_eq!(
        (retry.retry_on.as_str(), retry.num_retries.as_ref().unwrap().value),
        ("5xx,retriable-status-codes", 3)
    );
    assert_eq!(retry.retriable_status_codes, [503]);
    assert_eq!(retry.per_try_timeout.as_ref().unwrap().nanos, 500_000_000);

    let broken = &vhost.routes[1];
    assert_eq!(
        broken.r#match.as_ref().unwrap().path_specifier,
        Some(route_match::PathSpecifier::Prefix("/broken".into()))
    );
    let fault =
        HttpFault::decode(broken.typed_per_filter_config[listener::FAULT_FILTER].value.as_slice())
            .unwrap();
    let abort = fault.abort.unwrap();
    assert_eq!(abort.error_type, Some(fault_abort::ErrorType::HttpStatus(418)));
    assert_eq!(abort.percentage.unwrap().numerator, 1_000_000);

    let Some(route::Action::Route(split)) = &vhost.routes[2].action else { panic!("not a route") };
    let Some(route_action::ClusterSpecifier::WeightedClusters(weighted)) = &split.cluster_specifier
    else {
        panic!("not weighted")
    };
    let shares: Vec<(&str, u32)> = weighted
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(
        shares,
        [
            ("outbound|80|v1|hello.demo.svc.cluster.local", 75),
            ("outbound|80|v2|hello.demo.svc.cluster.local", 25)
        ]
    );
    // No timeout asked: disabled, as Istio; the mesh's default retries.
    assert_eq!(split.timeout.as_ref().unwrap().seconds, 0);
    assert_eq!(split.retry_policy.as_ref().unwrap().num_retries.as_ref().unwrap().value, 2);
}

#[test]
fn listeners_capture_outbound_by_port_and_vip_and_inbound_for_own_ports() {
    let snapshot = mesh();
    let outbound = &listener::listeners(&snapshot, &client())[0];
    assert_eq!(outbound.name, "virtualOutbound");
    let chains: Vec<&str> = outbound.filter_chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(chains, ["0.0.0.0_80", "10.96.0.20_5432"]);
    assert_eq!(outbound.default_filter_chain.as_ref().unwrap().name, "PassthroughCluster");

    // The proxy of hello-v1 (127.0.0.1) serves 18081: an inbound chain and cluster for it.
    let server = Proxy {
        ips: vec!["127.0.0.1".parse().unwrap()],
        namespace: "demo".into(),
        ..Proxy::default()
    };
    let inbound = &listener::listeners(&snapshot, &server)[1];
    assert_eq!(inbound.name, "virtualInbound");
    // Mesh mTLS (TLS with the mesh's ALPN) is terminated; anything else reaches the app as it
    // came (PERMISSIVE); mTLS to an undeclared port is terminated and passed through.
    assert_eq!(
        inbound.filter_chains.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["inbound|18081||mtls", "inbound|18081||", "InboundPassthroughClustermtls"]
    );
    let mtls = inbound.filter_chains[0].filter_chain_match.as_ref().unwrap();
    assert_eq!(mtls.transport_protocol, "tls");
    assert_eq!(mtls.application_protocols, ["istio-peer-exchange", "istio"]);
    assert!(inbound.filter_chains[0].transport_socket.is_some());
    assert!(inbound.filter_chains[1].transport_socket.is_none());
    assert_eq!(inbound.listener_filters[0].name, "envoy.filters.listener.tls_inspector");
    let clusters = cluster::clusters(&snapshot, &server);
    let own = find(&clusters, "inbound|18081||");
    assert!(own.upstream_bind_config.is_some(), "inbound traffic leaves from 127.0.0.6");
}

#[test]
fn an_object_that_becomes_invalid_keeps_its_last_valid_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mesh");
    for file in ["services.yaml", "routing.yaml"] {
        std::fs::copy(data.join(file), dir.path().join(file)).unwrap();
    }
    let mut reader = local::Reader::default();
    let (first, rejected) = reader.read(dir.path());
    assert!(rejected.is_empty(), "{rejected:?}");
    let weights = |s: &Snapshot| {
        s.virtual_services[0].spec.http[2].route.iter().map(|d| d.weight).collect::<Vec<_>>()
    };
    assert_eq!(weights(&first), [Some(75), Some(25)]);

    // A typo in the weights: refused, and the 75/25 split stays in force.
    let routing = std::fs::read_to_string(data.join("routing.yaml")).unwrap();
    std::fs::write(dir.path().join("routing.yaml"), routing.replace("weight: 25", "weight: 35"))
        .unwrap();
    let (second, rejected) = reader.read(dir.path());
    assert_eq!(weights(&second), [Some(75), Some(25)]);
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].reason.ends_with(
            "weights add up to 110: they must sum to 100 (its last valid version stays in force)"
        ),
        "{}",
        rejected[0]
    );

    // A file that no longer parses keeps all its objects.
    std::fs::write(dir.path().join("routing.yaml"), "apiVersion: [broken\n").unwrap();
    let (third, rejected) = reader.read(dir.path());
    assert_eq!((third.virtual_services.len(), third.destination_rules.len()), (1, 1));
    assert_eq!(rejected.len(), 1);

    // Deleting the file deletes its objects.
    std::fs::remove_file(dir.path().join("routing.yaml")).unwrap();
    let (fourth, _) = reader.read(dir.path());
    assert!(fourth.virtual_services.is_empty());
}

#[test]
fn sidecar_scopes_what_a_proxy_sees_and_registry_only_blocks_the_rest() {
    let mut snapshot = mesh();
    let sidecar: mesh_api::networking::Sidecar = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "demo"},
        "spec": {"egress": [{"hosts": ["./hello.demo.svc.cluster.local"]}], "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}
    }))
    .unwrap();
    snapshot.sidecars.push(sidecar);
    let proxy = client();

    let clusters = translate::generate(mesh_api::xds::CLUSTER_TYPE, &snapshot, &proxy).unwrap();
    let names: Vec<&str> = clusters.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        !names.iter().any(|n| n.contains("db.demo")),
        "db is outside the Sidecar's egress: {names:?}"
    );
    assert!(names.contains(&"outbound|80|v1|hello.demo.svc.cluster.local"));

    let listeners = translate::generate(mesh_api::xds::LISTENER_TYPE, &snapshot, &proxy).unwrap();
    let outbound = envoy_types::pb::envoy::config::listener::v3::Listener::decode(
        listeners[0].1.value.as_slice(),
    )
    .unwrap();
    assert_eq!(outbound.default_filter_chain.unwrap().name, "BlackHoleCluster");
    assert!(
        outbound.filter_chains.iter().all(|c| !c.name.contains("5432")),
        "no chain for the hidden TCP service"
    );

    let routes = translate::generate(mesh_api::xds::ROUTE_TYPE, &snapshot, &proxy).unwrap();
    let config = envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(
        routes[0].1.value.as_slice(),
    )
    .unwrap();
    let last = config.virtual_hosts.last().unwrap();
    assert_eq!(last.name, "block_all");
    assert!(
        matches!(&last.routes[0].action, Some(route::Action::DirectResponse(d)) if d.status == 502)
    );

    // A proxy of another namespace is not scoped by demo's Sidecar.
    let other = Proxy { namespace: "elsewhere".into(), ..Proxy::default() };
    let clusters = translate::generate(mesh_api::xds::CLUSTER_TYPE, &snapshot, &other).unwrap();
    assert!(clusters.iter().any(|(n, _)| n.contains("db.demo")));
}

#[test]
fn consistent_hash_becomes_a_route_hash_policy_and_export_to_hides_config() {
    use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
    let mut snapshot = mesh();
    let rule = &mut snapshot.destination_rules[0];
    let subset = rule.spec.subsets.iter_mut().find(|s| s.name == "v2").unwrap();
    subset.traffic_policy = Some(
        serde_json::from_value(
            serde_json::json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}),
        )
        .unwrap(),
    );
    snapshot.virtual_services[0].spec.export_to = vec![".".into()];

    let configs = routes::route_configs(&snapshot, &client());
    let vhost = configs[0]
        .virtual_hosts
        .iter()
        .find(|v| v.name == "hello.demo.svc.cluster.local:80")
        .unwrap();
    let Some(route::Action::Route(testers)) = &vhost.routes[0].action else {
        panic!("not a route")
    };
    assert!(
        matches!(&testers.hash_policy[0].policy_specifier, Some(PolicySpecifier::Header(h)) if h.header_name == "x-user"),
        "{:?}",
        testers.hash_policy
    );

    // Exported to its own namespace only: a proxy elsewhere gets the default route.
    let other = Proxy { namespace: "elsewhere".into(), ..Proxy::default() };
    let resources = translate::generate(mesh_api::xds::ROUTE_TYPE, &snapshot, &other).unwrap();
    let config = envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(
        resources[0].1.value.as_slice(),
    )
    .unwrap();
    let vhost =
        config.virtual_hosts.iter().find(|v| v.name == "hello.demo.svc.cluster.local:80").unwrap();
    assert_eq!(vhost.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["default"]);
}

#[test]
fn export_to_hides_services_from_other_namespaces() {
    // The golden mesh's db (namespace data) exported to its own namespace only, reviews to
    // demo and data.
    let mut snapshot = common::golden_mesh();
    snapshot.services.get_mut("db.data.svc.cluster.local").unwrap().export_to = vec![".".into()];
    snapshot.services.get_mut("reviews.demo.svc.cluster.local").unwrap().export_to =
        vec!["demo".into(), "data".into()];
    let clusters = |namespace: &str| -> Vec<String> {
        let proxy = Proxy { namespace: namespace.into(), ..Proxy::default() };
        translate::generate(mesh_api::xds::CLUSTER_TYPE, &snapshot, &proxy)
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with("outbound|") && !name.contains("|v"))
            .collect()
    };
    assert_eq!(
        clusters("demo"),
        [
            "outbound|443||api.payments.example",
            "outbound|7000||frontend.demo.svc.cluster.local",
            "outbound|80||frontend.demo.svc.cluster.local",
            "outbound|9080||ratings.demo.svc.cluster.local",
            "outbound|9080||reviews.demo.svc.cluster.local",
            "outbound|9090||reviews.demo.svc.cluster.local",
        ]
    );
    assert!(clusters("data").contains(&"outbound|5432||db.data.svc.cluster.local".to_owned()));
    assert!(clusters("data").contains(&"outbound|9080||reviews.demo.svc.cluster.local".to_owned()));
    assert!(!clusters("web").iter().any(|c| c.contains("reviews") || c.contains("db.data")));

    // The annotation on a Kubernetes Service, as written by users.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: secret\n  namespace: ops\n  annotations: {networking.istio.io/exportTo: \". , monitoring\"}\nspec:\n  clusterIP: 10.96.9.9\n  ports: [{name: http, port: 80}]\n",
    )
    .unwrap();
    let (snapshot, rejected) = mesh_pilot::source::local::read(dir.path());
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(snapshot.services["secret.ops.svc.cluster.local"].export_to, [".", "monitoring"]);
}

#[test]
fn proxyless_grpc_clients_get_api_listeners_by_name_and_config_grpc_understands() {
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    let snapshot = common::golden_mesh();
    let grpc = Proxy { namespace: "demo".into(), proxyless: true, ..Proxy::default() };
    let lds = mesh_api::xds::LISTENER_TYPE;
    let (name, any) =
        translate::on_demand(lds, &snapshot, &grpc, "reviews.demo.svc.cluster.local:9090").unwrap();
    assert_eq!(name, "reviews.demo.svc.cluster.local:9090");
    let listener = Listener::decode(any.value.as_slice()).unwrap();
    assert!(listener.api_listener.is_some() && listener.address.is_none());
    // Short names resolve as they do in a Host header; unknown hosts, TCP ports and other
    // types are not made up.
    assert!(translate::on_demand(lds, &snapshot, &grpc, "reviews:9080").is_some());
    for missing in ["nope.demo.svc.cluster.local:9090", "frontend:7000", "reviews", "reviews:x"] {
        assert!(translate::on_demand(lds, &snapshot, &grpc, missing).is_none(), "{missing}");
    }
    assert!(
        translate::on_demand(mesh_api::xds::CLUSTER_TYPE, &snapshot, &grpc, "reviews:9090")
            .is_none()
    );

    // Clusters: round robin or ring hash only, no per-endpoint transport sockets, mesh mTLS
    // from certificate providers instead of SDS.
    let clusters = cluster::clusters(&snapshot, &grpc);
    for c in clusters.iter().filter(|c| c.name.starts_with("outbound|")) {
        assert!(
            [LbPolicy::RoundRobin as i32, LbPolicy::RingHash as i32].contains(&c.lb_policy),
            "{}: {:?}",
            c.name,
            c.lb_policy
        );
        assert!(c.transport_socket_matches.is_empty(), "{}", c.name);
    }
    let v2 = find(&clusters, "outbound|9080|v2|reviews.demo.svc.cluster.local");
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    let Some(ConfigType::TypedConfig(tls)) = &v2.transport_socket.as_ref().unwrap().config_type
    else {
        panic!("no TLS config")
    };
    let tls = mesh_api::envoy::to_json(&tls.type_url, &tls.value).unwrap();
    let common = &tls["commonTlsContext"];
    assert_eq!(common["tlsCertificateProviderInstance"]["instanceName"], "default");
    assert_eq!(
        common["validationContext"]["caCertificateProviderInstance"]["certificateName"],
        "ROOTCA"
    );
    // No CORS for gRPC; the fault stays.
    let rds = routes::route_configs(&snapshot, &grpc);
    let filters: Vec<&String> = rds
        .iter()
        .flat_map(|r| &r.virtual_hosts)
        .flat_map(|v| &v.routes)
        .flat_map(|r| r.typed_per_filter_config.keys())
        .collect();
    assert!(filters.iter().all(|f| *f != "envoy.filters.http.cors"), "{filters:?}");
    assert!(filters.iter().any(|f| *f == "envoy.filters.http.fault"), "{filters:?}");
}
