//! The service model: what the translation reads. One immutable [`Snapshot`] per change of
//! the config sources; proxies and pushes share it through an `Arc`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_api::networking::{DestinationRule, Gateway, VirtualService};

/// The cluster DNS domain services live under.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// An application protocol, as far as routing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.1 (and h2c): routed by RDS.
    Http,
    /// HTTP/2 or gRPC: routed by RDS, HTTP/2 upstream.
    Http2,
    /// Anything else: forwarded as TCP.
    Tcp,
}

impl Protocol {
    /// Istio's rule: the port's protocol field, else its name prefix (`http-web`, `grpc`).
    pub fn detect(protocol: Option<&str>, name: &str) -> Self {
        let declared = protocol.filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("TCP"));
        let word = declared.unwrap_or_else(|| name.split('-').next().unwrap_or_default());
        match word.to_ascii_lowercase().as_str() {
            "http" | "http1" | "http/1.1" | "kubernetes.io/h2c" => Protocol::Http,
            "http2" | "grpc" | "grpc-web" | "h2c" => Protocol::Http2,
            _ => Protocol::Tcp,
        }
    }

    /// Whether the port is routed as HTTP.
    pub fn is_http(self) -> bool {
        self != Protocol::Tcp
    }
}

/// A port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// Port name from the Service or ServiceEntry (`http-web`); its prefix may give the protocol.
    pub name: String,
    /// Port number clients call the service on.
    pub port: u16,
    /// The port on the endpoints, when the endpoint does not say.
    pub target_port: u16,
    /// How traffic on the port is routed (HTTP with routes, or TCP), from [`Protocol::detect`].
    pub protocol: Protocol,
}

/// How a proxy finds the endpoints of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// The pilot sends them (EDS): Kubernetes Services, ServiceEntries with STATIC resolution.
    Endpoints,
    /// The proxy resolves the host name itself (ServiceEntry DNS resolution).
    Dns,
    /// The caller's original destination is used (ServiceEntry resolution NONE).
    Passthrough,
}

/// A service: a host name, an optional virtual IP, ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    /// Fully qualified host name (`reviews.bookinfo.svc.cluster.local`).
    pub hostname: String,
    /// Namespace of the object that declared it.
    pub namespace: String,
    /// Short name (`reviews`), empty for ServiceEntry hosts.
    pub name: String,
    /// Virtual IP: a Service's ClusterIP or a ServiceEntry's first address, if any; requests may
    /// also name the service by it.
    pub vip: Option<IpAddr>,
    /// Ports the service exposes; each gets its own outbound clusters
    /// (`outbound|<port>|<subset>|<host>`).
    pub ports: Vec<ServicePort>,
    /// Whether the endpoints are inside the mesh.
    pub mesh_internal: bool,
    /// How its endpoints are found.
    pub resolution: Resolution,
    /// Namespaces it is visible from (`.` its own, `*` all); empty means all.
    pub export_to: Vec<String>,
}

impl Service {
    /// The names a request may use for this service (virtual host domains, without ports).
    pub fn short_names(&self, domain: &str) -> Vec<String> {
        let mut names = vec![self.hostname.clone()];
        if !self.name.is_empty() {
            let svc = format!("{}.{}.svc", self.name, self.namespace);
            names.push(self.name.clone());
            names.push(format!("{}.{}", self.name, self.namespace));
            names.push(svc.clone());
            let _ = domain;
        }
        if let Some(vip) = self.vip {
            names.push(vip.to_string());
        }
        names.dedup();
        names
    }

    /// The port with this number.
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// An endpoint of a service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// IP address of the workload: a pod, a WorkloadEntry or a ServiceEntry endpoint.
    pub address: IpAddr,
    /// Port the workload receives this service port's traffic on (the target port).
    pub port: u16,
    /// Labels of the workload (subsets select on them).
    pub labels: BTreeMap<String, String>,
    /// Namespace of the workload.
    pub namespace: String,
    /// Service account of the workload.
    pub service_account: String,
    /// Whether the workload runs a sidecar (and so takes mTLS).
    pub sidecar: bool,
    /// `region/zone/subzone`.
    pub locality: String,
    /// Load-balancing weight among the service's endpoints, at least 1 (a WorkloadEntry's `weight`;
    /// 1 for pods).
    pub weight: u32,
}

/// A gateway's TLS material from a Secret (`credentialName`): Kubernetes' TLS keys
/// (`tls.crt`, `tls.key`, `ca.crt`) or Istio's generic ones (`cert`, `key`, `cacert`), PEM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Credential {
    /// The certificate chain, leaf first.
    pub certificate_chain: Option<String>,
    /// The private key.
    pub private_key: Option<String>,
    /// The CA that clients' certificates must verify to (MUTUAL).
    pub ca_certificates: Option<String>,
}

impl Credential {
    /// The material of a Secret, if it holds any.
    pub fn from_secret(secret: &k8s_openapi::api::core::v1::Secret) -> Option<Self> {
        let data = secret.data.as_ref();
        let field = |keys: [&str; 2]| {
            keys.iter().find_map(|k| {
                let bytes = data.and_then(|d| d.get(*k)).map(|b| b.0.clone()).or_else(|| {
                    secret.string_data.as_ref()?.get(*k).map(|s| s.clone().into_bytes())
                })?;
                String::from_utf8(bytes).ok()
            })
        };
        let credential = Self {
            certificate_chain: field(["tls.crt", "cert"]),
            private_key: field(["tls.key", "key"]),
            ca_certificates: field(["ca.crt", "cacert"]),
        };
        (credential != Self::default()).then_some(credential)
    }
}

/// Everything the translation needs, at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Monotonic version of the snapshot.
    pub version: u64,
    /// The cluster DNS domain (`cluster.local`): short host names resolve to
    /// `<name>.<namespace>.svc.<domain>`.
    pub domain: String,
    /// The trust domain of workload identities.
    pub trust_domain: String,
    /// Services by host name.
    pub services: BTreeMap<String, Service>,
    /// Endpoints by (host name, service port).
    pub endpoints: BTreeMap<(String, u16), Vec<Endpoint>>,
    /// VirtualServices of every namespace; a proxy's scoped snapshot keeps those exported to its
    /// namespace.
    pub virtual_services: Vec<VirtualService>,
    /// DestinationRules of every namespace; [`Snapshot::destination_rule`] picks the one a proxy
    /// uses for a host.
    pub destination_rules: Vec<DestinationRule>,
    /// Sidecars (egress scoping and outbound traffic policy).
    pub sidecars: Vec<mesh_api::networking::Sidecar>,
    /// Gateways: the listeners of the gateway proxies they select.
    pub gateways: Vec<Gateway>,
    /// TLS material of Secrets, by (namespace, name): what gateways' `credentialName`s name.
    pub credentials: BTreeMap<(String, String), Credential>,
    /// PeerAuthentications: which inbound ports take plaintext, mTLS or both.
    pub peer_authentications: Vec<mesh_api::security::PeerAuthentication>,
    /// AuthorizationPolicies, enforced on the inbound side of sidecars and on gateways.
    pub authorization_policies: Vec<mesh_api::security::AuthorizationPolicy>,
    /// RequestAuthentications: the end-user tokens sidecars and gateways check.
    pub request_authentications: Vec<mesh_api::security::RequestAuthentication>,
    /// The key sets of the RequestAuthentications' `jwksUri`s, by URI, as the pilot fetched
    /// them (a key set no token matches while a fetch has not succeeded: [`crate::jwks`]).
    pub jwks: BTreeMap<String, String>,
    /// Telemetries (tracing and access logging of the HCMs), in Istio's order: oldest first
    /// (creation time, then namespace and name), so that the first of two that select a
    /// workload is the one that applies.
    pub telemetries: Vec<mesh_api::telemetry::Telemetry>,
    /// The mesh config: its providers, tracing and access log defaults (the rest is the
    /// proxies' own settings).
    pub mesh_config: std::sync::Arc<mesh_api::mesh::MeshConfig>,
    /// The namespace whose selector-less Sidecar is the mesh-wide default.
    pub root_namespace: String,
    /// When the change that made this snapshot was published (for convergence time).
    pub published: Option<std::time::Instant>,
}

impl Default for Snapshot {
    /// An empty mesh with Istio's defaults: `cluster.local` for names and identities, the
    /// control plane's namespace as root namespace.
    fn default() -> Self {
        Self {
            version: 0,
            domain: DEFAULT_DOMAIN.to_owned(),
            trust_domain: mesh_api::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            services: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            virtual_services: Vec::new(),
            destination_rules: Vec::new(),
            sidecars: Vec::new(),
            gateways: Vec::new(),
            credentials: BTreeMap::new(),
            peer_authentications: Vec::new(),
            authorization_policies: Vec::new(),
            request_authentications: Vec::new(),
            jwks: BTreeMap::new(),
            telemetries: Vec::new(),
            mesh_config: std::sync::Arc::default(),
            root_namespace: mesh_api::ports::CONTROL_PLANE_NAMESPACE.to_owned(),
            published: None,
        }
    }
}

impl Snapshot {
    /// Resolves a host written in config of `namespace` to a full host name: short names are
    /// relative to that namespace, names with a dot are taken as they are (Istio's rule).
    pub fn resolve(&self, host: &str, namespace: &str) -> String {
        if host.contains('.') || host.contains('*') {
            host.to_owned()
        } else {
            format!("{host}.{namespace}.svc.{}", self.domain)
        }
    }

    /// The SPIFFE identity of an endpoint's workload.
    pub fn identity(&self, endpoint: &Endpoint) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, endpoint.namespace, endpoint.service_account
        )
    }

    /// The DestinationRule for a host, as seen from a proxy namespace: the proxy's own
    /// namespace first, then any other, as Istio picks.
    pub fn destination_rule(
        &self,
        hostname: &str,
        proxy_namespace: &str,
    ) -> Option<&DestinationRule> {
        let applies = |dr: &&DestinationRule| {
            let ns = dr.metadata.namespace.as_deref().unwrap_or("default");
            self.resolve(&dr.spec.host, ns) == hostname
        };
        let mut candidates: Vec<&DestinationRule> =
            self.destination_rules.iter().filter(applies).collect();
        candidates.sort_by_key(|dr| {
            dr.metadata.namespace.as_deref().unwrap_or("default") != proxy_namespace
        });
        candidates.into_iter().next()
    }
}

/// What the pilot knows of a connected proxy, from its node id and metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxy {
    /// The xDS node id as the proxy sent it (`sidecar~10.1.2.3~pod.ns~ns.svc.cluster.local`).
    pub id: String,
    /// Namespace of the workload: node metadata `NAMESPACE`, else the node id's, else `default`.
    pub namespace: String,
    /// Workload labels from node metadata `LABELS`; Sidecar selectors and `sourceLabels` matches
    /// use them.
    pub labels: BTreeMap<String, String>,
    /// Workload IPs from node metadata `INSTANCE_IPS`, else the node id's IP; they identify the
    /// proxy's own endpoints.
    pub ips: Vec<IpAddr>,
    /// Service account of the workload: node metadata `SERVICE_ACCOUNT`, else `default`.
    pub service_account: String,
    /// A proxyless gRPC client (metadata `GENERATOR: grpc`): gRPC's xDS subset only.
    pub proxyless: bool,
    /// A gateway (`router~...` node id): listeners from the Gateways that select it, no
    /// capture.
    pub router: bool,
    /// What the proxy says it is (`mesh-proxy/0.1.0`, `envoy/1.34.1`), from the node's user
    /// agent; empty when it does not say.
    pub version: String,
}

/// `name/version` of a node's user agent (`envoy/1.34.1`); the name alone, or nothing, when
/// the node says less.
fn user_agent(node: &envoy_types::pb::envoy::config::core::v3::Node) -> String {
    use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    let version = match &node.user_agent_version_type {
        Some(UserAgentVersionType::UserAgentVersion(v)) => v.clone(),
        Some(UserAgentVersionType::UserAgentBuildVersion(build)) => build
            .version
            .as_ref()
            .map(|v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
            .unwrap_or_default(),
        None => String::new(),
    };
    match (node.user_agent_name.as_str(), version.as_str()) {
        ("", _) => String::new(),
        (name, "") => name.to_owned(),
        (name, version) => format!("{name}/{version}"),
    }
}

impl Proxy {
    /// Reads a proxy from an Envoy node: metadata first, the node id for what it leaves out.
    pub fn from_node(node: &envoy_types::pb::envoy::config::core::v3::Node) -> Self {
        use envoy_types::pb::google::protobuf::value::Kind;
        let meta = node.metadata.as_ref().map(|m| &m.fields);
        let text = |key: &str| -> Option<String> {
            match meta?.get(key)?.kind.as_ref()? {
                Kind::StringValue(s) => Some(s.clone()),
                _ => None,
            }
        };
        let parsed: Option<mesh_api::xds::NodeId> = node.id.parse().ok();
        let labels = meta
            .and_then(|m| m.get(mesh_api::xds::metadata::LABELS))
            .and_then(|v| match v.kind.as_ref()? {
                Kind::StructValue(s) => Some(
                    s.fields
                        .iter()
                        .filter_map(|(k, v)| match v.kind.as_ref()? {
                            Kind::StringValue(s) => Some((k.clone(), s.clone())),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default();
        let ips = text(mesh_api::xds::metadata::INSTANCE_IPS)
            .map(|list| list.split(',').filter_map(|ip| ip.trim().parse().ok()).collect())
            .or_else(|| parsed.as_ref().map(|n| vec![n.ip]))
            .unwrap_or_default();
        Proxy {
            id: node.id.clone(),
            namespace: text(mesh_api::xds::metadata::NAMESPACE)
                .or_else(|| parsed.as_ref().map(|n| n.namespace.clone()))
                .unwrap_or_else(|| "default".to_owned()),
            labels,
            ips,
            service_account: text(mesh_api::xds::metadata::SERVICE_ACCOUNT)
                .unwrap_or_else(|| "default".to_owned()),
            proxyless: text(mesh_api::xds::metadata::GENERATOR).as_deref() == Some("grpc"),
            router: parsed
                .as_ref()
                .is_some_and(|n| n.proxy_type == mesh_api::xds::ProxyType::Router),
            version: user_agent(node),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_follow_istio_naming() {
        assert_eq!(Protocol::detect(None, "http-web"), Protocol::Http);
        assert_eq!(Protocol::detect(None, "grpc"), Protocol::Http2);
        assert_eq!(Protocol::detect(Some("HTTP2"), "x"), Protocol::Http2);
        assert_eq!(Protocol::detect(Some("TCP"), "http"), Protocol::Http);
        assert_eq!(Protocol::detect(None, "mongo"), Protocol::Tcp);
        assert_eq!(Protocol::detect(Some("kubernetes.io/h2c"), "web"), Protocol::Http);
    }

    #[test]
    fn a_destination_rule_without_a_namespace_is_in_default() {
        // `kubectl apply` of a file without `metadata.namespace` puts the object in `default`;
        // a short host then means the service of that namespace.
        let dr: DestinationRule = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "reviews"},
            "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let snapshot = Snapshot { destination_rules: vec![dr], ..Snapshot::default() };
        let host = "reviews.default.svc.cluster.local";
        assert!(snapshot.destination_rule(host, "default").is_some());
        assert!(snapshot.destination_rule(host, "other").is_some());
    }
}
