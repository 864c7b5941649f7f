//! [`Resource`]: any object the mesh reads, typed.

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::ResourceExt;

use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::telemetry::Telemetry;

/// Declares [`Resource`] and the methods that treat every kind alike.
macro_rules! resources {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty), )+) => {
        /// One object of a kind the mesh understands.
        #[derive(Clone, Debug, PartialEq)]
        #[allow(clippy::large_enum_variant)] // Loaded once per file; boxing would only add noise.
        pub enum Resource {
            $( $(#[$doc])* $variant($ty), )+
        }

        impl Resource {
            /// Kind, namespace and name of the object.
            pub fn object_ref(&self) -> ObjectRef {
                match self {
                    $( Resource::$variant(o) => ObjectRef::of(o), )+
                }
            }

            /// Puts a namespaced object without a namespace in `namespace`, as `kubectl
            /// apply` does with the context's namespace. Cluster-scoped kinds are left alone.
            pub fn default_namespace(&mut self, namespace: &str) {
                use kube::Resource as _;
                match self {
                    $( Resource::$variant(o) => {
                        if namespaced::<$ty>() && o.meta().namespace.is_none() {
                            o.meta_mut().namespace = Some(namespace.to_owned());
                        }
                    } )+
                }
            }

            /// The object as JSON, with `apiVersion` and `kind`.
            pub fn to_json(&self) -> serde_json::Result<serde_json::Value> {
                match self {
                    $( Resource::$variant(o) => serde_json::to_value(o), )+
                }
            }

            /// The object as YAML, with `apiVersion` and `kind`.
            pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
                match self {
                    $( Resource::$variant(o) => serde_saphyr::to_string(o), )+
                }
            }
        }
    };
}

/// Whether objects of kind `K` live in a namespace.
fn namespaced<K: kube::Resource>() -> bool
where
    K::Scope: 'static,
{
    std::any::TypeId::of::<K::Scope>()
        == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>()
}

resources! {
    /// `networking.istio.io` VirtualService.
    VirtualService(VirtualService),
    /// `networking.istio.io` DestinationRule.
    DestinationRule(DestinationRule),
    /// `networking.istio.io` Gateway.
    Gateway(Gateway),
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry(ServiceEntry),
    /// `networking.istio.io` WorkloadEntry.
    WorkloadEntry(WorkloadEntry),
    /// `networking.istio.io` Sidecar.
    Sidecar(Sidecar),
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication(PeerAuthentication),
    /// `security.istio.io` AuthorizationPolicy.
    AuthorizationPolicy(AuthorizationPolicy),
    /// `security.istio.io` RequestAuthentication.
    RequestAuthentication(RequestAuthentication),
    /// `telemetry.istio.io` Telemetry.
    Telemetry(Telemetry),
    /// Core `v1` Service (local mode reads them from files).
    Service(Service),
    /// Core `v1` Namespace (local mode reads them from files).
    Namespace(Namespace),
    /// Core `v1` Secret: a gateway's certificate and key (`credentialName`), and the CA its
    /// clients' certificates must verify to.
    Secret(Secret),
    /// Gateway API Gateway (`gateway.networking.k8s.io`).
    KubeGateway(crate::gateway_api::Gateway),
    /// Gateway API HTTPRoute.
    HttpRoute(crate::gateway_api::HTTPRoute),
    /// Gateway API GRPCRoute.
    GrpcRoute(crate::gateway_api::GRPCRoute),
    /// Gateway API TLSRoute.
    TlsRoute(crate::gateway_api::TLSRoute),
    /// Gateway API ReferenceGrant.
    ReferenceGrant(crate::gateway_api::ReferenceGrant),
    /// Gateway API GatewayClass.
    GatewayClass(crate::gateway_api::GatewayClass),
}

/// Kind, namespace and name of an object, as errors print it (`VirtualService default/hello`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The kind (`VirtualService`).
    pub kind: String,
    /// The namespace, if the object has one.
    pub namespace: Option<String>,
    /// The name (empty when the object has none).
    pub name: String,
}

impl ObjectRef {
    /// A reference to a kind/namespace/name.
    pub fn new(kind: &str, namespace: Option<&str>, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// The reference of a Kubernetes object.
    pub fn of<K: kube::Resource<DynamicType = ()>>(object: &K) -> Self {
        let kind = K::kind(&());
        // Two groups have a Gateway: the Gateway API's is named as kubectl names it.
        let kind = if kind == "Gateway" && K::group(&()) == crate::gateway_api::GROUP {
            format!("Gateway.{}", crate::gateway_api::GROUP)
        } else {
            kind.into_owned()
        };
        Self { kind, namespace: object.namespace(), name: object.name_any() }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.name.is_empty() { "<unnamed>" } else { &self.name };
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{name}", self.kind),
            None => write!(f, "{} {name}", self.kind),
        }
    }
}
