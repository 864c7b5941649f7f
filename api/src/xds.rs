//! xDS names shared by the pilot, the proxy and `meshctl`: type URLs, Istio-style cluster,
//! listener and route names, the node id and the node metadata keys.
//!
//! The names follow Istio's conventions so that config dumps of this mesh read like Istio's.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Type URL of `envoy.config.listener.v3.Listener` (LDS).
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of `envoy.config.route.v3.RouteConfiguration` (RDS).
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Type URL of `envoy.config.cluster.v3.Cluster` (CDS).
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Type URL of `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The order in which a full push sends resource types, so that nothing refers to a resource the
/// proxy has not received yet: clusters, then their endpoints, then the secrets (a gateway's
/// certificates), then listeners, then routes.
pub const PUSH_ORDER: [&str; 5] =
    [CLUSTER_TYPE, ENDPOINT_TYPE, SECRET_TYPE, LISTENER_TYPE, ROUTE_TYPE];

/// The types a sidecar (or a proxyless gRPC client) subscribes to: all but the secrets, which
/// only gateways fetch from the pilot (a sidecar's certificates come from its own agent).
pub const SIDECAR_TYPES: [&str; 4] = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE];

/// The outbound capture listener (port 15001).
pub const VIRTUAL_OUTBOUND_LISTENER: &str = "virtualOutbound";
/// The inbound capture listener (port 15006).
pub const VIRTUAL_INBOUND_LISTENER: &str = "virtualInbound";
/// Cluster that forwards to the original destination (unknown hosts, ALLOW_ANY).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Cluster that forwards inbound traffic for undeclared ports to the app.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
/// Cluster that drops everything (REGISTRY_ONLY).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// Mesh mTLS as the pilot configures it and the proxy implements it (Istio's names, so that
/// an Envoy with an SDS agent reads the same config).
pub mod mtls {
    /// Bootstrap cluster that serves the workload's secrets over SDS.
    pub const SDS_CLUSTER: &str = "sds-grpc";
    /// SDS name of the workload's own certificate and key.
    pub const WORKLOAD_SECRET: &str = "default";
    /// SDS name of the mesh's trust bundle.
    pub const ROOT_SECRET: &str = "ROOTCA";
    /// ALPN a client proxy offers on mesh mTLS; the server proxy tells mesh mTLS from the
    /// app's own TLS by it.
    pub const ALPN: [&str; 2] = ["istio-peer-exchange", "istio"];
    /// Endpoint metadata namespace Envoy reads to pick a transport socket per endpoint.
    pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
    /// Key in that namespace; `istio` when the endpoint runs a sidecar.
    pub const TLS_MODE: &str = "tlsMode";
    /// Value of [`TLS_MODE`] for endpoints that take mesh mTLS.
    pub const TLS_MODE_ISTIO: &str = "istio";
    /// Typed endpoint metadata key: the SPIFFE identity (a `google.protobuf.StringValue`)
    /// the endpoint's sidecar must present.
    pub const IDENTITY_METADATA: &str = "mesh.identity";

    /// SNI of an outbound mTLS connection: `outbound_.9080_.v1_.reviews.default.svc.cluster.local`.
    pub fn sni(port: u16, subset: Option<&str>, host: &str) -> String {
        format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or_default())
    }
}

/// Cluster metadata naming the services an inbound cluster serves, where Istio writes it:
/// `filter_metadata["istio"]["services"]`, a list of `{host}` sorted by host (Istio adds
/// `name` and `namespace`; here they follow from the host, and a struct of one key encodes
/// the same every time, where envoy-types' `Struct` is a HashMap). The proxy reports requests
/// to the cluster under the first, never under the Host a client sent; Envoy ignores it.
pub mod services_metadata {
    /// The filter metadata namespace.
    pub const FILTER: &str = "istio";
    /// Key of the list of services in it.
    pub const SERVICES: &str = "services";
    /// A service's host name (`reviews.default.svc.cluster.local`).
    pub const HOST: &str = "host";
}

/// Node metadata keys, the ones Istio's agents send.
pub mod metadata {
    /// Namespace of the workload.
    pub const NAMESPACE: &str = "NAMESPACE";
    /// Labels of the workload (a map).
    pub const LABELS: &str = "LABELS";
    /// Service account of the workload.
    pub const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
    /// IP addresses of the workload (a list).
    pub const INSTANCE_IPS: &str = "INSTANCE_IPS";
    /// How iptables hands inbound traffic to the proxy: `REDIRECT` or `TPROXY`.
    pub const INTERCEPTION_MODE: &str = "INTERCEPTION_MODE";
    /// Cluster the workload runs in.
    pub const CLUSTER_ID: &str = "CLUSTER_ID";
    /// Name of the workload (Deployment or WorkloadEntry).
    pub const WORKLOAD_NAME: &str = "WORKLOAD_NAME";
    /// Mesh the workload belongs to.
    pub const MESH_ID: &str = "MESH_ID";
    /// `grpc` for proxyless gRPC clients (Istio's key), which get config gRPC understands.
    pub const GENERATOR: &str = "GENERATOR";
}

/// Name of the route configuration for a port (`"9080"`).
pub fn route_config_name(port: u16) -> String {
    port.to_string()
}

/// Direction of traffic a cluster carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the app to another service.
    Outbound,
    /// From another service to the app.
    Inbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// A service cluster name: `outbound|9080|v1|reviews.default.svc.cluster.local` or
/// `inbound|9080||`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterName {
    /// The first field: `outbound` (to a service) or `inbound` (to the local workload).
    pub direction: Direction,
    /// The second field: the service port for outbound clusters, the workload port for inbound
    /// ones.
    pub port: u16,
    /// DestinationRule subset, empty for none.
    pub subset: String,
    /// Service FQDN, empty for inbound clusters.
    pub host: String,
}

impl ClusterName {
    /// An outbound cluster for a service port and optional subset.
    pub fn outbound(port: u16, subset: Option<&str>, host: &str) -> Self {
        Self {
            direction: Direction::Outbound,
            port,
            subset: subset.unwrap_or_default().to_owned(),
            host: host.to_owned(),
        }
    }

    /// The inbound cluster for a workload port.
    pub fn inbound(port: u16) -> Self {
        Self { direction: Direction::Inbound, port, subset: String::new(), host: String::new() }
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}|{}|{}", self.direction.as_str(), self.port, self.subset, self.host)
    }
}

/// Why a name was not understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not `direction|port|subset|host`.
    #[error(
        "{0:?} is not a service cluster name: expected outbound|<port>|<subset>|<host> or inbound|<port>||"
    )]
    Cluster(String),
    /// Not `type~ip~pod.namespace~namespace.svc.domain`.
    #[error(
        "{0:?} is not a node id: expected sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.<domain> (or router~...)"
    )]
    Node(String),
}

impl FromStr for ClusterName {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || NameError::Cluster(text.to_owned());
        let mut parts = text.splitn(4, '|');
        let direction = match parts.next() {
            Some("outbound") => Direction::Outbound,
            Some("inbound") => Direction::Inbound,
            _ => return Err(bad()),
        };
        let port = parts.next().and_then(|p| p.parse::<u16>().ok()).ok_or_else(bad)?;
        let subset = parts.next().ok_or_else(bad)?.to_owned();
        let host = parts.next().ok_or_else(bad)?.to_owned();
        if port == 0 || (direction == Direction::Outbound && host.is_empty()) {
            return Err(bad());
        }
        Ok(Self { direction, port, subset, host })
    }
}

/// What kind of proxy a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyType {
    /// A sidecar next to an app (`sidecar` in the node id).
    Sidecar,
    /// A gateway proxy (`router` in the node id).
    Router,
}

/// The xDS node id: `sidecar~10.1.2.3~reviews-v1-6d8f.default~default.svc.cluster.local`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeId {
    /// The first field: `sidecar` or `router`.
    pub proxy_type: ProxyType,
    /// The second field: the pod IP.
    pub ip: IpAddr,
    /// The pod name: the third field up to its last `.`.
    pub pod: String,
    /// The pod namespace: the third field after its last `.`, repeated at the start of the fourth.
    pub namespace: String,
    /// The cluster DNS domain (`cluster.local`).
    pub dns_domain: String,
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.proxy_type {
            ProxyType::Sidecar => "sidecar",
            ProxyType::Router => "router",
        };
        write!(
            f,
            "{kind}~{}~{}.{}~{}.svc.{}",
            self.ip, self.pod, self.namespace, self.namespace, self.dns_domain
        )
    }
}

impl FromStr for NodeId {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || NameError::Node(text.to_owned());
        let parts: Vec<&str> = text.split('~').collect();
        let [kind, ip, pod_ns, domain] = parts.as_slice() else {
            return Err(bad());
        };
        let proxy_type = match *kind {
            "sidecar" => ProxyType::Sidecar,
            "router" => ProxyType::Router,
            _ => return Err(bad()),
        };
        let ip = ip.parse().map_err(|_| bad())?;
        let (pod, namespace) = pod_ns.rsplit_once('.').ok_or_else(bad)?;
        let dns_domain = domain
            .strip_prefix(namespace)
            .and_then(|rest| rest.strip_prefix(".svc."))
            .ok_or_else(bad)?;
        if pod.is_empty() || namespace.is_empty() || dns_domain.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            proxy_type,
            ip,
            pod: pod.to_owned(),
            namespace: namespace.to_owned(),
            dns_domain: dns_domain.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_read_like_istio() {
        let c = ClusterName::outbound(9080, Some("v1"), "reviews.default.svc.cluster.local");
        assert_eq!(c.to_string(), "outbound|9080|v1|reviews.default.svc.cluster.local");
        assert_eq!(c.to_string().parse::<ClusterName>().unwrap(), c);
        assert_eq!(ClusterName::inbound(9080).to_string(), "inbound|9080||");
        assert_eq!("inbound|9080||".parse::<ClusterName>().unwrap(), ClusterName::inbound(9080));
        assert!("outbound|x|v1|h".parse::<ClusterName>().is_err());
        assert!("outbound|80||".parse::<ClusterName>().is_err());
        assert!("sideways|80||h".parse::<ClusterName>().is_err());
    }

    #[test]
    fn node_ids_round_trip() {
        let text = "sidecar~10.1.2.3~reviews-v1-6d8f.default~default.svc.cluster.local";
        let node: NodeId = text.parse().unwrap();
        assert_eq!(node.pod, "reviews-v1-6d8f");
        assert_eq!(node.namespace, "default");
        assert_eq!(node.dns_domain, "cluster.local");
        assert_eq!(node.to_string(), text);
        assert!("sidecar~nope~a.b~b.svc.cluster.local".parse::<NodeId>().is_err());
        assert!("sidecar~10.0.0.1~a.b~c.svc.cluster.local".parse::<NodeId>().is_err());
    }
}
