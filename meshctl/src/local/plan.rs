//! What the local mesh is made of, as pure functions of its recorded state: names and addresses,
//! the hosts file of a pod, the Service and WorkloadEntry the pilot reads, and the service VIP
//! rules of the hub (the part of kube-proxy a mesh without a cluster still needs: a pod without a
//! sidecar reaches services by VIP). Nothing here touches the system; `net` and `process` do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::state::{Pod, Service, State};

/// The pod network: every pod, and the control plane, has an address in it.
pub const POD_NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 0, 0), 16);
/// The hub's address on the bridge: the pods' gateway to the service VIPs.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// mesh-pilot's address in the control-plane namespace.
pub const PILOT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// mesh-ca's address in the control-plane namespace.
pub const CA_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// The service VIP range (Kubernetes' default service CIDR is 10.96.0.0/12).
pub const VIP_NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 16);
/// The first host number handed to a pod, after the control plane's.
pub const FIRST_POD_HOST: u32 = 10;
/// The first host number handed to a service VIP.
pub const FIRST_VIP_HOST: u32 = 10;
/// The bridge in the hub namespace.
pub const BRIDGE: &str = "br0";
/// The pod's end of its veth, inside the pod namespace.
pub const POD_INTERFACE: &str = "eth0";
/// The DNS name of the pilot in the pods' hosts files.
pub const PILOT_NAME: &str = "mesh-pilot.mesh-system.svc";
/// The DNS name of the CA, also the name in its serving certificate.
pub const CA_NAME: &str = "mesh-ca.mesh-system.svc";
/// The cluster DNS domain services are named in.
pub const DOMAIN: &str = "cluster.local";

/// `10.77.0.0/16` as text.
pub fn cidr((ip, prefix): (Ipv4Addr, u8)) -> String {
    format!("{ip}/{prefix}")
}

/// The address with host number `host` in `network` (`None` past its end).
pub fn host_address((ip, prefix): (Ipv4Addr, u8), host: u32) -> Option<Ipv4Addr> {
    let size = 1u32.checked_shl(32 - u32::from(prefix))?;
    // The last address is the broadcast one; host 0 is the network.
    if host == 0 || host >= size - 1 {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(ip) + host))
}

/// Network namespace names of a mesh called `mesh`.
pub fn hub_namespace(mesh: &str) -> String {
    format!("{mesh}-hub")
}

/// The control plane's namespace.
pub fn control_plane_namespace(mesh: &str) -> String {
    format!("{mesh}-cp")
}

/// A pod's namespace.
pub fn pod_namespace(mesh: &str, pod: &str) -> String {
    format!("{mesh}-pod-{pod}")
}

/// The hub's end of veth number `n` (short: interface names have at most 15 bytes).
pub fn hub_veth(n: u32) -> String {
    format!("veth{n}")
}

/// Whether `name` can name a pod or service: a DNS label of at most 40 characters, so that its
/// namespace, hosts entries and WorkloadEntry name are valid too.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name {name:?} must be 1-40 lowercase letters, digits or '-', starting and ending with a letter or digit"
        ))
    }
}

/// Parses `k=v,k2=v2` labels; keys and values as Kubernetes allows them (checked loosely:
/// no spaces, quotes or commas).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) =
            pair.split_once('=').ok_or_else(|| format!("label {pair:?} is not key=value"))?;
        let bad = |s: &str| s.chars().any(|c| c.is_whitespace() || c == '"' || c == '\'');
        if key.is_empty() || bad(key) || bad(value) {
            return Err(format!("label {pair:?}: keys and values take no spaces or quotes"));
        }
        labels.insert(key.to_owned(), value.to_owned());
    }
    Ok(labels)
}

/// The hosts file of every pod: the control plane, and each service under its three names
/// (`reviews`, `reviews.default`, `reviews.default.svc.cluster.local`) plus `.svc`. A pod in
/// another namespace reaches a service by its longer names, as in Kubernetes; the short name of
/// a service is only written for the namespace `for_namespace`.
pub fn hosts_file(state: &State, for_namespace: &str) -> String {
    let mut out = String::from("# Written by meshctl local: the mesh's services by name.\n");
    out.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let _ = writeln!(out, "{PILOT_IP}\t{PILOT_NAME} {PILOT_NAME}.{DOMAIN}");
    let _ = writeln!(out, "{CA_IP}\t{CA_NAME} {CA_NAME}.{DOMAIN}");
    for service in state.services.values() {
        let (name, ns) = (&service.name, &service.namespace);
        let mut names = Vec::new();
        if ns == for_namespace {
            names.push(name.clone());
        }
        names.push(format!("{name}.{ns}"));
        names.push(format!("{name}.{ns}.svc"));
        names.push(format!("{name}.{ns}.svc.{DOMAIN}"));
        let _ = writeln!(out, "{}\t{}", service.vip, names.join(" "));
    }
    out
}

/// Labels the mesh adds to a pod with a sidecar, as Istio's injector does: `tlsMode`, so the
/// pilot knows to speak mTLS to it, and its canonical service and revision, which telemetry
/// names it by. A gateway has none: its listeners are what its Gateways say (plain HTTP
/// unless a server says TLS), as Istio's gateway pods carry no such label.
pub fn workload_labels(pod: &Pod) -> BTreeMap<String, String> {
    let mut labels = pod.labels.clone();
    if pod.sidecar.is_some() && !pod.gateway {
        let canonical = mesh_api::inject::canonical_labels(&labels, Some(&pod.name));
        labels.insert("security.istio.io/tlsMode".to_owned(), "istio".to_owned());
        labels.extend(canonical);
    }
    labels
}

/// Quotes a string for YAML (a JSON string is a YAML string).
pub(super) fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// The WorkloadEntry the pilot reads for a pod.
pub fn workload_entry(pod: &Pod) -> String {
    let mut out = format!(
        "# Written by meshctl local for pod {name}; removed with it.\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  address: {ip}\n  serviceAccount: {sa}\n",
        name = pod.name,
        ns = pod.namespace,
        ip = pod.ip,
        sa = quoted(&pod.service_account),
    );
    let labels = workload_labels(pod);
    if !labels.is_empty() {
        out.push_str("  labels:\n");
        for (key, value) in &labels {
            let _ = writeln!(out, "    {}: {}", quoted(key), quoted(value));
        }
    }
    out
}

/// The labels file of a pod, in the downward API's format the proxy reads.
pub fn labels_file(pod: &Pod) -> String {
    workload_labels(pod).iter().map(|(k, v)| format!("{k}={}\n", quoted(v))).collect()
}

/// The addresses behind a service: the pods it selects, and the collector when tracing is on
/// and the service selects it.
pub fn backends(state: &State, service: &Service) -> Vec<Ipv4Addr> {
    let mut backends: Vec<Ipv4Addr> = selected(state, service).map(|pod| pod.ip).collect();
    let collector = super::collector::labels();
    if state.tracing
        && service.namespace == mesh_api::ports::CONTROL_PLANE_NAMESPACE
        && !service.selector.is_empty()
        && service.selector.iter().all(|(k, v)| collector.get(k) == Some(v))
    {
        backends.push(super::collector::IP);
    }
    backends
}

/// The Service the pilot reads: its VIP, ports and selector.
pub fn service_object(service: &Service) -> String {
    let mut out = format!(
        "# Written by meshctl local; removed with the mesh.\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  clusterIP: {vip}\n  ports:\n",
        name = service.name,
        ns = service.namespace,
        vip = service.vip,
    );
    for port in &service.ports {
        let _ = writeln!(
            out,
            "  - {{name: {}, port: {}, targetPort: {}}}",
            quoted(&port.name),
            port.port,
            port.target_port
        );
    }
    if !service.selector.is_empty() {
        out.push_str("  selector:\n");
        for (key, value) in &service.selector {
            let _ = writeln!(out, "    {}: {}", quoted(key), quoted(value));
        }
    }
    out
}

/// The pods a service selects: same namespace, every selector label.
pub fn selected<'a>(state: &'a State, service: &'a Service) -> impl Iterator<Item = &'a Pod> {
    state.pods.values().filter(move |pod| {
        pod.namespace == service.namespace
            && !service.selector.is_empty()
            && service.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
    })
}

/// The hub's NAT table for `iptables-restore`: each service port's VIP spread over the pods it
/// selects (random choice with kube-proxy's probabilities), and the answers brought back
/// through the hub (masquerade), since client and server share the bridge.
pub fn vip_rules(state: &State) -> String {
    let mut out = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:MESH-SERVICES - [0:0]\n",
    );
    let mut chains = String::new();
    let mut rules = String::from("-A PREROUTING -j MESH-SERVICES\n");
    for (n, service) in state.services.values().enumerate() {
        let backends = backends(state, service);
        for port in &service.ports {
            let chain = format!("MESH-SVC-{n}-{}", port.port);
            let _ = writeln!(chains, ":{chain} - [0:0]");
            let _ = writeln!(
                rules,
                "-A MESH-SERVICES -d {}/32 -p tcp -m tcp --dport {} -j {chain}",
                service.vip, port.port
            );
            for (i, ip) in backends.iter().enumerate() {
                let left = backends.len() - i;
                let pick = if left > 1 {
                    format!("-m statistic --mode random --probability {:.5} ", 1.0 / left as f64)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    rules,
                    "-A {chain} -p tcp {pick}-j DNAT --to-destination {ip}:{}",
                    port.target_port
                );
            }
        }
    }
    out.push_str(&chains);
    out.push_str(&rules);
    let _ = writeln!(
        out,
        "-A POSTROUTING -s {} -m conntrack --ctstate DNAT -j MASQUERADE\nCOMMIT",
        cidr(POD_NETWORK)
    );
    out
}

/// Where a pod's Envoy finds its agent's SDS server.
pub const AGENT_SDS: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 15030);

/// Istio's bootstrap `stats_tags` (tag, regex), in its order.
const ISTIO_STATS_TAGS: [(&str, &str); 7] = [
    ("cluster_name", r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"),
    ("tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
    ("response_code", r"_rq(_(\d{3}))$"),
    ("response_code_class", r"_rq(_(\dxx))$"),
    (
        "http_conn_manager_listener_prefix",
        r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
    ),
    ("http_conn_manager_prefix", r"^http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
    ("listener_address", r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
];

/// The cluster behind Istio's 15090 listener: the admin's own stats page.
const PROMETHEUS_STATS: &str = "prometheus_stats";

/// A plain static cluster of one address.
fn static_cluster(name: &str, ip: Ipv4Addr, port: u16) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": ip.to_string(), "port_value": port
            }}}}]}]
        }
    })
}

/// Istio's `prometheus_stats` listener: `/stats/prometheus` on 15090 of every address, served
/// by the admin (which itself stays on loopback), so scrapers reach an Envoy sidecar where
/// they reach mesh-proxy.
fn prometheus_listener() -> serde_json::Value {
    use mesh_api::ports;
    serde_json::json!({
        "name": "prometheus_stats",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": ports::PROXY_PROMETHEUS}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "codec_type": "AUTO",
                "stat_prefix": "stats",
                "route_config": {"virtual_hosts": [{
                    "name": "backend",
                    "domains": ["*"],
                    "routes": [{
                        "match": {"prefix": "/stats/prometheus"},
                        "route": {"cluster": PROMETHEUS_STATS}
                    }]
                }]},
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                }]
            }
        }]}]
    })
}

/// The bootstrap of an Envoy sidecar: the node the pilot knows it by (id and the metadata
/// Istio's agent sends), ADS to the pilot, SDS to the pod's agent, admin on loopback.
pub fn envoy_bootstrap(pod: &Pod) -> String {
    use mesh_api::ports;
    use mesh_api::xds::{NodeId, ProxyType, metadata, mtls};
    let node = NodeId {
        proxy_type: if pod.gateway { ProxyType::Router } else { ProxyType::Sidecar },
        ip: pod.ip.into(),
        pod: pod.name.clone(),
        namespace: pod.namespace.clone(),
        dns_domain: DOMAIN.to_owned(),
    };
    let grpc_cluster = |name: &str, ip: Ipv4Addr, port: u16| {
        serde_json::json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            },
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": ip.to_string(), "port_value": port
                }}}}]}]
            }
        })
    };
    let node_metadata: serde_json::Map<String, serde_json::Value> = [
        (metadata::NAMESPACE, serde_json::json!(pod.namespace)),
        (metadata::INSTANCE_IPS, serde_json::json!(pod.ip.to_string())),
        (metadata::SERVICE_ACCOUNT, serde_json::json!(pod.service_account)),
        (metadata::WORKLOAD_NAME, serde_json::json!(pod.name)),
        (metadata::LABELS, serde_json::json!(workload_labels(pod))),
        (metadata::INTERCEPTION_MODE, serde_json::json!("REDIRECT")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let bootstrap = serde_json::json!({
        "node": {
            "id": node.to_string(),
            "cluster": format!("{}.{}", pod.name, pod.namespace),
            "metadata": node_metadata
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        // Istio's stats tags: cluster names like `outbound|9080||reviews.default.svc.cluster.local`
        // stay whole (Envoy's defaults would cut them at the first dot), as the dashboard and
        // Prometheus users read them.
        "stats_config": {"use_all_default_tags": false, "stats_tags": ISTIO_STATS_TAGS
            .iter()
            .map(|(name, regex)| serde_json::json!({"tag_name": name, "regex": regex}))
            .collect::<Vec<_>>()},
        "static_resources": {
            "clusters": [
                grpc_cluster("xds-grpc", PILOT_IP, ports::PILOT_XDS_PLAINTEXT),
                grpc_cluster(mtls::SDS_CLUSTER, AGENT_SDS.0, AGENT_SDS.1),
                static_cluster(PROMETHEUS_STATS, Ipv4Addr::LOCALHOST, ports::PROXY_ADMIN),
            ],
            "listeners": [prometheus_listener()],
        },
        "admin": {"address": {"socket_address": {
            "address": "127.0.0.1", "port_value": ports::PROXY_ADMIN
        }}}
    });
    serde_json::to_string_pretty(&bootstrap).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::local::state::{Pod, ServicePort, Sidecar};

    fn state() -> State {
        let mut state = State::new("m".into(), "config".into(), "bin".into());
        for (name, version, ip) in [("reviews-v1", "v1", 10), ("reviews-v2", "v2", 11)] {
            state.pods.insert(
                name.into(),
                Pod {
                    name: name.into(),
                    namespace: "default".into(),
                    ip: host_address(POD_NETWORK, ip).unwrap(),
                    veth: ip,
                    labels: parse_labels(&format!("app=reviews,version={version}")).unwrap(),
                    service_account: "bookinfo-reviews".into(),
                    port: Some(9080),
                    sidecar: Some(Sidecar::MeshProxy),
                    command: vec!["reviews".into()],
                    gateway: false,
                    forwards: Vec::new(),
                },
            );
        }
        state.services.insert(
            "default/reviews".into(),
            Service {
                name: "reviews".into(),
                namespace: "default".into(),
                vip: host_address(VIP_NETWORK, 10).unwrap(),
                ports: vec![ServicePort { name: "http".into(), port: 9080, target_port: 9080 }],
                selector: parse_labels("app=reviews").unwrap(),
            },
        );
        state
    }

    #[test]
    fn addresses_stay_inside_their_network() {
        assert_eq!(host_address(POD_NETWORK, 10), Some(Ipv4Addr::new(10, 77, 0, 10)));
        assert_eq!(host_address(POD_NETWORK, 300), Some(Ipv4Addr::new(10, 77, 1, 44)));
        assert_eq!(host_address(POD_NETWORK, 65535), None);
        assert_eq!(host_address(POD_NETWORK, 0), None);
        assert_eq!(cidr(VIP_NETWORK), "10.96.0.0/16");
    }

    #[test]
    fn names_are_dns_labels() {
        assert!(check_name("pod", "reviews-v1").is_ok());
        for bad in ["", "Reviews", "a_b", "-a", "a-", &"x".repeat(41)] {
            assert!(check_name("pod", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_parse_and_refuse_junk() {
        let labels = parse_labels("app=reviews, version=v1").unwrap();
        assert_eq!(labels.get("version").map(String::as_str), Some("v1"));
        assert!(parse_labels("app").is_err());
        assert!(parse_labels("app=a b").is_err());
        assert!(parse_labels("").unwrap().is_empty());
    }

    #[test]
    fn hosts_name_services_the_kubernetes_way() {
        let hosts = hosts_file(&state(), "default");
        assert!(hosts.contains(
            "10.96.0.10\treviews reviews.default reviews.default.svc reviews.default.svc.cluster.local\n"
        ));
        assert!(hosts.contains("10.77.0.2\tmesh-pilot.mesh-system.svc"));
        let elsewhere = hosts_file(&state(), "other");
        assert!(elsewhere.contains("10.96.0.10\treviews.default "));
    }

    #[test]
    fn objects_are_what_the_pilot_reads() {
        let state = state();
        let pod = &state.pods["reviews-v2"];
        let text = format!(
            "{}---\n{}",
            workload_entry(pod),
            service_object(&state.services["default/reviews"])
        );
        let report = mesh_api::load::load_str("local", &text);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.objects.len(), 2);
        for loaded in &report.objects {
            assert!(mesh_api::validate::resource(&loaded.resource).is_empty());
        }
        let mesh_api::Resource::WorkloadEntry(we) = &report.objects[0].resource else {
            panic!("not a WorkloadEntry")
        };
        assert_eq!(we.spec.address, "10.77.0.11");
        assert_eq!(we.spec.labels["security.istio.io/tlsMode"], "istio");
        assert_eq!(we.spec.service_account.as_deref(), Some("bookinfo-reviews"));
        assert_eq!(
            labels_file(pod),
            "app=\"reviews\"\nsecurity.istio.io/tlsMode=\"istio\"\n\
             service.istio.io/canonical-name=\"reviews\"\n\
             service.istio.io/canonical-revision=\"v2\"\nversion=\"v2\"\n",
            "the labels Istio's injector gives a pod"
        );
    }

    #[test]
    fn an_envoy_sidecar_is_known_to_the_pilot_as_the_pod() {
        let state = state();
        let bootstrap: serde_json::Value =
            serde_json::from_str(&envoy_bootstrap(&state.pods["reviews-v2"])).unwrap();
        let node = &bootstrap["node"];
        assert_eq!(node["id"], "sidecar~10.77.0.11~reviews-v2.default~default.svc.cluster.local");
        assert_eq!(node["metadata"]["LABELS"]["version"], "v2");
        assert_eq!(node["metadata"]["SERVICE_ACCOUNT"], "bookinfo-reviews");
        let clusters = bootstrap["static_resources"]["clusters"].as_array().unwrap();
        let address = |i: usize| {
            let socket = &clusters[i]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                ["address"]["socket_address"];
            format!("{}:{}", socket["address"].as_str().unwrap(), socket["port_value"])
        };
        assert_eq!(
            (address(0).as_str(), address(1).as_str()),
            ("10.77.0.2:15010", "127.0.0.1:15030")
        );
        assert_eq!(clusters[1]["name"], "sds-grpc");
        // Metrics where scrapers look for them (15090), served by the loopback admin, with
        // Istio's tags so a cluster's name stays whole.
        assert_eq!(
            (clusters[2]["name"].as_str(), address(2).as_str()),
            (Some("prometheus_stats"), "127.0.0.1:15000")
        );
        let listener = &bootstrap["static_resources"]["listeners"][0];
        assert_eq!(listener["address"]["socket_address"]["port_value"], 15090);
        let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        let route = &hcm["route_config"]["virtual_hosts"][0]["routes"][0];
        assert_eq!(route["match"]["prefix"], "/stats/prometheus");
        assert_eq!(route["route"]["cluster"], "prometheus_stats");
        assert_eq!(bootstrap["stats_config"]["use_all_default_tags"], false);
        assert_eq!(bootstrap["stats_config"]["stats_tags"][0]["tag_name"], "cluster_name");
    }

    #[test]
    fn vips_spread_over_the_selected_pods() {
        let rules = vip_rules(&state());
        assert!(rules.contains(
            "-A MESH-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 9080 -j MESH-SVC-0-9080\n"
        ));
        assert!(rules.contains("-A MESH-SVC-0-9080 -p tcp -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 10.77.0.10:9080\n"));
        assert!(
            rules.contains("-A MESH-SVC-0-9080 -p tcp -j DNAT --to-destination 10.77.0.11:9080\n")
        );
        assert!(rules.ends_with("COMMIT\n"));
    }
}
