//! `/config_dump`: the configuration in force as Envoy's admin writes it
//! (`envoy.admin.v3.ConfigDump` JSON), so istioctl and meshctl read a mesh-proxy's dump as
//! they read Envoy's. In Envoy's order: the bootstrap (the node sent to the pilot), clusters
//! (active, and warming: received, not yet in force), endpoints (only with `?include_eds`, as
//! Envoy), listeners (active and warming states), routes, secrets (the workload certificate as
//! `default` and `ROOTCA`, then the SDS secrets; keys redacted).
//!
//! Each resource carries the version and time of the update that last changed it; a type's
//! `version_info` is that of the last update of the type accepted (in force or warming). The last
//! refused update of a type shows as Envoy's `error_state` on the resource it names (an entry
//! of its own when the resource is not held). A refusal that names no resource (a resource
//! that does not decode, a type the proxy does not use) has no place in Envoy's shape: it is
//! listed in a field of mesh-proxy's own at the top, `rejected_updates`
//! (`[{"type_url", "version_info", "details", "last_update_attempt"}]`, only when there is
//! one). `?resource=` and `?mask=` are not implemented: the whole dump is always returned.

use std::collections::BTreeMap;
use std::time::SystemTime;

use envoy_types::pb::envoy::admin::v3::{
    BootstrapConfigDump, ClientResourceStatus, UpdateFailureState,
    clusters_config_dump::DynamicCluster,
    endpoints_config_dump::DynamicEndpointConfig,
    listeners_config_dump::{DynamicListener, DynamicListenerState},
    routes_config_dump::DynamicRouteConfig,
    secrets_config_dump::DynamicSecret,
};
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use mesh_api::xds::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE};
use serde_json::{Value, json};

use super::envoy_json::{timestamp, to_json};
use crate::xds::history::{Rejection, Rejections, Stamp};
use crate::xds::store::Config;

/// What a dump is made of.
pub struct Dump<'a> {
    /// The configuration in force.
    pub current: &'a Config,
    /// Everything received (what differs from `current` is warming).
    pub received: &'a Config,
    /// The last refused update of each type.
    pub rejections: &'a Rejections,
    /// The node the proxy sends to the pilot.
    pub node: &'a Node,
    /// When the proxy started (the bootstrap's `last_updated`).
    pub started: SystemTime,
    /// The workload certificate's secrets, their version and time
    /// ([`super::certs::workload_secrets`]).
    pub workload: (String, SystemTime, [Secret; 2]),
    /// Whether endpoints are dumped (`?include_eds`).
    pub include_eds: bool,
}

/// The `@type` of an admin dump.
fn dump_type(name: &str) -> String {
    format!("type.googleapis.com/envoy.admin.v3.{name}")
}

/// An entry as JSON; an entry that cannot be written (a type the descriptors lack) says so in
/// its place rather than failing the dump.
fn entry<M: prost::Message + prost::Name>(message: &M) -> Value {
    to_json(message).unwrap_or_else(|error| json!({ "error": error }))
}

/// A dump of `kind` with its lists, leaving out what is empty as Envoy does.
fn section(kind: &str, fields: Vec<(&str, Value)>) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("@type".to_owned(), Value::String(dump_type(kind)));
    for (name, value) in fields {
        let empty = match &value {
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        if !empty {
            out.insert(name.to_owned(), value);
        }
    }
    Value::Object(out)
}

fn failure(rejection: &Rejection) -> UpdateFailureState {
    UpdateFailureState {
        failed_configuration: rejection.resource.as_ref().map(|(_, any)| any.clone()),
        last_update_attempt: Some(timestamp(rejection.at)),
        details: rejection.details.clone(),
        version_info: rejection.version.clone(),
    }
}

/// Per type, what one entry needs of the store.
struct Resources<'a> {
    config: &'a Config,
    kind: &'static str,
}

impl Resources<'_> {
    fn stamp(&self, name: &str) -> Option<&Stamp> {
        self.config.stamps.get(self.kind)?.get(name)
    }

    fn version(&self, name: &str) -> String {
        self.stamp(name).map(|s| s.version.to_string()).unwrap_or_default()
    }

    fn updated(&self, name: &str) -> Option<envoy_types::pb::google::protobuf::Timestamp> {
        self.stamp(name).map(|s| timestamp(s.at))
    }
}

impl Dump<'_> {
    /// The dump as JSON.
    pub fn to_json(&self) -> Value {
        let mut configs = vec![self.bootstrap(), self.clusters()];
        if self.include_eds {
            configs.push(self.endpoints());
        }
        configs.extend([self.listeners(), self.routes(), self.secrets()]);
        let mut dump = json!({ "configs": configs });
        let unattributed: Vec<Value> = self
            .rejections
            .iter()
            .filter(|(_, r)| r.resource.is_none())
            .map(|(type_url, r)| {
                json!({
                    "type_url": type_url,
                    "version_info": r.version,
                    "details": r.details,
                    "last_update_attempt": crate::telemetry::rfc3339(r.at),
                })
            })
            .collect();
        if !unattributed.is_empty() {
            dump["rejected_updates"] = Value::Array(unattributed);
        }
        dump
    }

    /// The refused resource of `kind`, if the last refusal of the type names one.
    fn refused(&self, kind: &str) -> Option<(&str, &Rejection)> {
        let rejection = self.rejections.get(kind)?;
        rejection.resource.as_ref().map(|(name, _)| (name.as_str(), rejection))
    }

    fn error_state(&self, kind: &str, name: &str) -> (Option<UpdateFailureState>, i32) {
        match self.refused(kind) {
            Some((refused, rejection)) if refused == name => {
                (Some(failure(rejection)), ClientResourceStatus::Nacked as i32)
            }
            _ => (None, 0),
        }
    }

    /// The refused resource of `kind` when no entry holds it (a new resource refused).
    fn refused_alone(
        &self,
        kind: &str,
        held: &BTreeMap<String, impl Sized>,
    ) -> Option<(String, UpdateFailureState)> {
        let (name, rejection) = self.refused(kind)?;
        (!held.contains_key(name)).then(|| (name.to_owned(), failure(rejection)))
    }

    fn bootstrap(&self) -> Value {
        let dump = BootstrapConfigDump {
            bootstrap: Some(Bootstrap { node: Some(self.node.clone()), ..Bootstrap::default() }),
            last_updated: Some(timestamp(self.started)),
        };
        let mut json = entry(&dump);
        if let Value::Object(fields) = &mut json {
            fields.insert("@type".to_owned(), Value::String(dump_type("BootstrapConfigDump")));
        }
        json
    }

    fn clusters(&self) -> Value {
        let (current, received) = (self.current, self.received);
        let active = Resources { config: current, kind: CLUSTER_TYPE };
        let warming = Resources { config: received, kind: CLUSTER_TYPE };
        let mut entries: Vec<Value> = current
            .clusters
            .iter()
            .map(|(name, cluster)| {
                let (error_state, client_status) = self.error_state(CLUSTER_TYPE, name);
                entry(&DynamicCluster {
                    version_info: active.version(name),
                    cluster: Some(pack_any(cluster.clone())),
                    last_updated: active.updated(name),
                    error_state,
                    client_status,
                })
            })
            .collect();
        if let Some((_, error_state)) = self.refused_alone(CLUSTER_TYPE, &current.clusters) {
            entries.push(entry(&DynamicCluster {
                error_state: Some(error_state),
                client_status: ClientResourceStatus::Nacked as i32,
                ..DynamicCluster::default()
            }));
        }
        let warming_entries: Vec<Value> = received
            .clusters
            .iter()
            .filter(|(name, _)| warming.stamp(name) != active.stamp(name))
            .map(|(name, cluster)| {
                entry(&DynamicCluster {
                    version_info: warming.version(name),
                    cluster: Some(pack_any(cluster.clone())),
                    last_updated: warming.updated(name),
                    ..DynamicCluster::default()
                })
            })
            .collect();
        section(
            "ClustersConfigDump",
            vec![
                (
                    "version_info",
                    json!(received.versions.get(CLUSTER_TYPE).cloned().unwrap_or_default()),
                ),
                ("dynamic_active_clusters", Value::Array(entries)),
                ("dynamic_warming_clusters", Value::Array(warming_entries)),
            ],
        )
    }

    fn endpoints(&self) -> Value {
        let active = Resources { config: self.current, kind: ENDPOINT_TYPE };
        let mut entries: Vec<Value> = self
            .current
            .endpoints
            .iter()
            .map(|(name, assignment)| {
                let (error_state, client_status) = self.error_state(ENDPOINT_TYPE, name);
                entry(&DynamicEndpointConfig {
                    version_info: active.version(name),
                    endpoint_config: Some(pack_any(assignment.clone())),
                    last_updated: active.updated(name),
                    error_state,
                    client_status,
                })
            })
            .collect();
        if let Some((_, error_state)) = self.refused_alone(ENDPOINT_TYPE, &self.current.endpoints) {
            entries.push(entry(&DynamicEndpointConfig {
                error_state: Some(error_state),
                client_status: ClientResourceStatus::Nacked as i32,
                ..DynamicEndpointConfig::default()
            }));
        }
        section("EndpointsConfigDump", vec![("dynamic_endpoint_configs", Value::Array(entries))])
    }

    fn listeners(&self) -> Value {
        let (current, received) = (self.current, self.received);
        let active = Resources { config: current, kind: LISTENER_TYPE };
        let warming = Resources { config: received, kind: LISTENER_TYPE };
        let state = |resources: &Resources<'_>, name: &str, listener: &Any| DynamicListenerState {
            version_info: resources.version(name),
            listener: Some(listener.clone()),
            last_updated: resources.updated(name),
        };
        let names: std::collections::BTreeSet<&String> =
            current.listeners.keys().chain(received.listeners.keys()).collect();
        let mut entries: Vec<Value> = names
            .into_iter()
            .map(|name| {
                let active_state =
                    current.listeners.get(name).map(|l| state(&active, name, &pack_any(l.clone())));
                let warming_state = received
                    .listeners
                    .get(name)
                    .filter(|_| warming.stamp(name) != active.stamp(name))
                    .map(|l| state(&warming, name, &pack_any(l.clone())));
                let (error_state, client_status) = self.error_state(LISTENER_TYPE, name);
                entry(&DynamicListener {
                    name: name.clone(),
                    active_state,
                    warming_state,
                    draining_state: None,
                    error_state,
                    client_status,
                })
            })
            .collect();
        let held: BTreeMap<String, ()> = current
            .listeners
            .keys()
            .chain(received.listeners.keys())
            .map(|n| (n.clone(), ()))
            .collect();
        if let Some((name, error_state)) = self.refused_alone(LISTENER_TYPE, &held) {
            entries.push(entry(&DynamicListener {
                name,
                error_state: Some(error_state),
                client_status: ClientResourceStatus::Nacked as i32,
                ..DynamicListener::default()
            }));
        }
        section(
            "ListenersConfigDump",
            vec![
                (
                    "version_info",
                    json!(received.versions.get(LISTENER_TYPE).cloned().unwrap_or_default()),
                ),
                ("dynamic_listeners", Value::Array(entries)),
            ],
        )
    }

    fn routes(&self) -> Value {
        let active = Resources { config: self.current, kind: ROUTE_TYPE };
        let mut entries: Vec<Value> = self
            .current
            .routes
            .iter()
            .map(|(name, routes)| {
                let (error_state, client_status) = self.error_state(ROUTE_TYPE, name);
                entry(&DynamicRouteConfig {
                    version_info: active.version(name),
                    route_config: Some(pack_any(routes.clone())),
                    last_updated: active.updated(name),
                    error_state,
                    client_status,
                })
            })
            .collect();
        if let Some((_, error_state)) = self.refused_alone(ROUTE_TYPE, &self.current.routes) {
            entries.push(entry(&DynamicRouteConfig {
                error_state: Some(error_state),
                client_status: ClientResourceStatus::Nacked as i32,
                ..DynamicRouteConfig::default()
            }));
        }
        section("RoutesConfigDump", vec![("dynamic_route_configs", Value::Array(entries))])
    }

    fn secrets(&self) -> Value {
        let active = Resources { config: self.current, kind: SECRET_TYPE };
        let (version, issued, workload) = &self.workload;
        let mut entries: Vec<Value> = workload
            .iter()
            .map(|secret| {
                entry(&DynamicSecret {
                    name: secret.name.clone(),
                    version_info: version.clone(),
                    last_updated: Some(timestamp(*issued)),
                    secret: Some(pack_any(secret.clone())),
                    ..DynamicSecret::default()
                })
            })
            .collect();
        entries.extend(self.current.secrets.iter().map(|(name, secret)| {
            let (error_state, client_status) = self.error_state(SECRET_TYPE, name);
            entry(&DynamicSecret {
                name: name.clone(),
                version_info: active.version(name),
                last_updated: active.updated(name),
                secret: Some(pack_any(crate::tls::redact(secret))),
                error_state,
                client_status,
            })
        }));
        if let Some((name, error_state)) = self.refused_alone(SECRET_TYPE, &self.current.secrets) {
            entries.push(entry(&DynamicSecret {
                name,
                error_state: Some(error_state),
                client_status: ClientResourceStatus::Nacked as i32,
                ..DynamicSecret::default()
            }));
        }
        section("SecretsConfigDump", vec![("dynamic_active_secrets", Value::Array(entries))])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
    use prost_reflect::DynamicMessage;

    use super::*;
    use crate::tls::testing::*;
    use crate::xds::store::Store;

    fn eds(name: &str) -> Any {
        pack_any(Cluster {
            name: name.to_owned(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig::default()),
            ..Cluster::default()
        })
    }

    fn endpoints(name: &str) -> Any {
        pack_any(ClusterLoadAssignment { cluster_name: name.to_owned(), ..Default::default() })
    }

    /// A gateway in force (a cluster and its endpoints, a listener with SIMPLE and MUTUAL
    /// chains, its routes and secrets), a new cluster warming, a refused route update and a
    /// refused cluster update that does not decode.
    fn store() -> Store {
        let store = Store::default();
        let ca = Ca::new("test");
        store.apply(CLUSTER_TYPE, "c1", &[eds("web")]).unwrap();
        store.apply(ENDPOINT_TYPE, "e1", &[endpoints("web")]).unwrap();
        let listener = https_listener(
            8443,
            vec![
                ("a.example.com", gateway_socket("kubernetes://a", false)),
                ("m.example.com", gateway_socket("kubernetes://m", true)),
            ],
        );
        store.apply(LISTENER_TYPE, "l1", &[pack_any(listener)]).unwrap();
        let routes = RouteConfiguration { name: "https.8443".to_owned(), ..Default::default() };
        store.apply(ROUTE_TYPE, "r1", &[pack_any(routes)]).unwrap();
        let secrets = [
            certificate("kubernetes://a", &ca.leaf(&["a.example.com"])),
            certificate("kubernetes://m", &ca.leaf(&["m.example.com"])),
            client_ca("kubernetes://m-cacert", &ca.pem),
        ];
        store.apply(SECRET_TYPE, "s1", &secrets.map(pack_any)).unwrap();
        assert!(store.current().complete());

        store.apply(CLUSTER_TYPE, "c2", &[eds("web"), eds("new")]).unwrap();
        let broken = RouteConfiguration {
            name: "https.8443".to_owned(),
            virtual_hosts: vec![VirtualHost {
                name: "all".to_owned(),
                domains: vec!["*".to_owned()],
                routes: vec![Route::default()],
                ..Default::default()
            }],
            ..Default::default()
        };
        store.apply(ROUTE_TYPE, "r2", &[pack_any(broken)]).unwrap_err();
        let garbage = Any { type_url: CLUSTER_TYPE.to_owned(), value: vec![0xff] };
        store.apply(CLUSTER_TYPE, "c3", &[garbage]).unwrap_err();
        store
    }

    fn dump(store: &Store, include_eds: bool) -> Value {
        let workload = [WORKLOAD_SECRET_FOR_TEST, ROOT_SECRET_FOR_TEST]
            .map(|name| Secret { name: name.to_owned(), ..Secret::default() });
        Dump {
            current: &store.current(),
            received: &store.received(),
            rejections: &store.rejections(),
            node: &Node { id: "router~10.0.0.9~gw.istio-system~x".to_owned(), ..Node::default() },
            started: SystemTime::UNIX_EPOCH,
            workload: ("w1".to_owned(), SystemTime::UNIX_EPOCH, workload),
            include_eds,
        }
        .to_json()
    }

    const WORKLOAD_SECRET_FOR_TEST: &str = mesh_api::xds::mtls::WORKLOAD_SECRET;
    const ROOT_SECRET_FOR_TEST: &str = mesh_api::xds::mtls::ROOT_SECRET;

    #[test]
    fn the_dump_reads_as_envoys_config_dump() {
        let store = store();
        let mut dump = dump(&store, true);
        let types: Vec<&str> = dump["configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["@type"].as_str().unwrap())
            .collect();
        let admin = |name: &str| format!("type.googleapis.com/envoy.admin.v3.{name}");
        assert_eq!(
            types,
            [
                "BootstrapConfigDump",
                "ClustersConfigDump",
                "EndpointsConfigDump",
                "ListenersConfigDump",
                "RoutesConfigDump",
                "SecretsConfigDump"
            ]
            .map(admin)
        );
        let [bootstrap, clusters, endpoints, listeners, routes, secrets] =
            [0, 1, 2, 3, 4, 5].map(|i| dump["configs"][i].clone());
        assert_eq!(bootstrap["bootstrap"]["node"]["id"], "router~10.0.0.9~gw.istio-system~x");
        assert_eq!(bootstrap["last_updated"], "1970-01-01T00:00:00Z");

        assert_eq!(clusters["version_info"], "c2", "the refused c3 changed nothing");
        let active = &clusters["dynamic_active_clusters"][0];
        assert_eq!(active["version_info"], "c1", "web is as c1 made it");
        assert_eq!(
            active["cluster"]["@type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(active["cluster"]["name"], "web");
        assert!(active["last_updated"].as_str().unwrap().ends_with('Z'));
        let warming = clusters["dynamic_warming_clusters"].as_array().unwrap();
        assert_eq!(warming.len(), 1, "{clusters:#}");
        assert_eq!(
            (&warming[0]["cluster"]["name"], &warming[0]["version_info"]),
            (&"new".into(), &"c2".into())
        );

        assert_eq!(
            endpoints["dynamic_endpoint_configs"][0]["endpoint_config"]["cluster_name"],
            "web"
        );
        assert_eq!(endpoints["dynamic_endpoint_configs"][0]["version_info"], "e1");

        let listener = &listeners["dynamic_listeners"][0];
        assert_eq!(listener["name"], "0.0.0.0_8443");
        assert_eq!(listener["active_state"]["version_info"], "l1");
        assert_eq!(listener["active_state"]["listener"]["name"], "0.0.0.0_8443");

        let route = &routes["dynamic_route_configs"][0];
        assert_eq!(route["version_info"], "r1", "the routes in force stay");
        let error = &route["error_state"];
        assert_eq!(error["version_info"], "r2");
        assert_eq!(error["failed_configuration"]["name"], "https.8443");
        assert!(error["details"].as_str().unwrap().contains("routes[0] has no action"), "{error}");
        assert!(error["last_update_attempt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(route["client_status"], "NACKED");

        let names: Vec<&str> = secrets["dynamic_active_secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["default", "ROOTCA", "kubernetes://a", "kubernetes://m", "kubernetes://m-cacert"]
        );
        let a = &secrets["dynamic_active_secrets"][2];
        assert_eq!(a["version_info"], "s1");
        assert_eq!(
            a["secret"]["tls_certificate"]["private_key"]["inline_bytes"],
            "W3JlZGFjdGVkXQ=="
        );
        assert!(!dump.to_string().contains("PRIVATE KEY"));

        let rejected = dump["rejected_updates"].as_array().unwrap();
        assert_eq!(rejected.len(), 1, "only the refusal that names no resource");
        assert_eq!(rejected[0]["type_url"], CLUSTER_TYPE);
        assert_eq!(rejected[0]["version_info"], "c3");
        assert!(rejected[0]["details"].as_str().unwrap().contains("does not decode"));

        // Without mesh-proxy's own field, it is an envoy.admin.v3.ConfigDump to the letter: the
        // descriptors read it back (they refuse an unknown field).
        dump.as_object_mut().unwrap().remove("rejected_updates");
        let pool = mesh_api::envoy::pool().unwrap();
        let descriptor = pool.get_message_by_name("envoy.admin.v3.ConfigDump").unwrap();
        DynamicMessage::deserialize(descriptor, dump).unwrap();
    }

    #[test]
    fn endpoints_are_dumped_only_when_asked_for() {
        let dump = dump(&store(), false);
        assert!(!dump.to_string().contains("EndpointsConfigDump"));
    }

    #[test]
    fn a_refused_new_listener_has_an_entry_of_its_own() {
        let store = Store::default();
        let mut listener = https_listener(9443, Vec::new());
        listener.listener_filters[0].name = "envoy.filters.listener.unknown".to_owned();
        store.apply(LISTENER_TYPE, "l7", &[pack_any(listener)]).unwrap_err();
        let dump = dump(&store, false);
        let entry = &dump["configs"][2]["dynamic_listeners"][0];
        assert_eq!(entry["name"], "0.0.0.0_9443");
        assert!(entry.get("active_state").is_none());
        assert_eq!(entry["error_state"]["version_info"], "l7");
        assert!(dump.get("rejected_updates").is_none());
    }
}
