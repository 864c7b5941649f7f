//! The Kubernetes Gateway API, served through the same model as Istio's own kinds (as Istio
//! does it): each listener of a Gateway of one of the mesh's classes becomes an Istio Gateway
//! selecting the proxies labelled `gateway.networking.k8s.io/gateway-name: <name>`; HTTPRoutes
//! and GRPCRoutes become VirtualServices with `http` rules, TLSRoutes ones with `tls` rules,
//! bound to the listeners they attach to ([`attach`]), or to the mesh when the parent is a
//! Service (GAMMA). [`status`] says the same decisions back to the user as the Gateway API's
//! conditions. Pure: objects in, Istio objects and statuses out.

use kube::ResourceExt as _;
use mesh_api::gateway_api::{
    CONTROLLER_NAME, GATEWAY_CLASSES, GATEWAY_NAME_LABEL, GRPCRoute, Gateway as KubeGateway,
    GatewayClass, HTTPRoute, Listener, ReferenceGrant, TLSRoute,
};
use mesh_api::networking::{
    Gateway, GatewaySpec, Port, Server, ServerTlsMode, ServerTlsSettings, VirtualService,
};

pub mod attach;
mod routes;
pub mod status;

pub use attach::{Attachment, Route, RouteKind};

/// The Gateway API objects of the mesh, as one source read them.
#[derive(Default)]
pub struct Inputs<'a> {
    /// GatewayClasses (none in local mode: the mesh's classes are then implied).
    pub classes: Vec<&'a GatewayClass>,
    /// Gateways of every class.
    pub gateways: Vec<&'a KubeGateway>,
    /// HTTPRoutes.
    pub http_routes: Vec<&'a HTTPRoute>,
    /// GRPCRoutes.
    pub grpc_routes: Vec<&'a GRPCRoute>,
    /// TLSRoutes.
    pub tls_routes: Vec<&'a TLSRoute>,
    /// ReferenceGrants.
    pub grants: Vec<&'a ReferenceGrant>,
}

impl<'a> Inputs<'a> {
    /// Whether Gateways of class `name` are the mesh's: a GatewayClass of that name names the
    /// mesh's controller, or there is none and the name is one the pilot creates.
    pub fn is_ours(&self, class: &str) -> bool {
        match self.classes.iter().find(|c| c.name_any() == class) {
            Some(c) => c.spec.controller_name == CONTROLLER_NAME,
            None => GATEWAY_CLASSES.contains(&class),
        }
    }

    /// The Gateways of the mesh's classes.
    pub fn our_gateways(&self) -> Vec<&'a KubeGateway> {
        self.gateways.iter().copied().filter(|g| self.is_ours(&g.spec.gateway_class_name)).collect()
    }

    /// Every route, of every kind.
    pub fn routes(&self) -> Vec<Route<'a>> {
        let http = self.http_routes.iter().map(|r| Route::http(r));
        let grpc = self.grpc_routes.iter().map(|r| Route::grpc(r));
        let tls = self.tls_routes.iter().map(|r| Route::tls(r));
        http.chain(grpc).chain(tls).collect()
    }
}

/// The name of the Istio Gateway one listener of a Gateway API Gateway becomes (kept apart
/// from an Istio Gateway of the Gateway's name).
pub fn listener_gateway_name(gateway: &str, listener: &str) -> String {
    format!("{gateway}-k8s-gateway-{listener}")
}

/// The Gateway API objects as Istio Gateways and VirtualServices.
pub fn convert(inputs: &Inputs<'_>, domain: &str) -> (Vec<Gateway>, Vec<VirtualService>) {
    let gateways = inputs.our_gateways();
    let istio_gateways = gateways.iter().flat_map(|g| listener_gateways(g)).collect();
    let mut services = Vec::new();
    for route in inputs.routes() {
        let attachments: Vec<Attachment> = route
            .parent_refs
            .iter()
            .map(|p| attach::attach(&gateways, &route, p, domain))
            .collect();
        services.extend(routes::virtual_services(&route, &attachments, &inputs.grants, domain));
    }
    (istio_gateways, services)
}

/// One Istio Gateway per listener: routes attach to listeners, and a VirtualService binds to
/// Gateways, so each listener is one. Which routes may attach is decided by [`attach`], so
/// the servers admit VirtualServices of any namespace.
fn listener_gateways(g: &KubeGateway) -> Vec<Gateway> {
    let name = g.name_any();
    g.spec
        .listeners
        .iter()
        .map(|l| {
            let mut gateway = Gateway::new(
                &listener_gateway_name(&name, &l.name),
                GatewaySpec {
                    selector: [(GATEWAY_NAME_LABEL.to_owned(), name.clone())].into(),
                    servers: vec![server(l)],
                },
            );
            gateway.metadata.namespace = g.namespace();
            gateway
        })
        .collect()
}

fn server(l: &Listener) -> Server {
    let host = l.hostname.clone().unwrap_or_else(|| "*".to_owned());
    let tls = l.tls.as_ref().map(|t| {
        let passthrough = t.mode.as_deref() == Some("Passthrough");
        ServerTlsSettings {
            mode: Some(if passthrough {
                ServerTlsMode::Passthrough
            } else {
                ServerTlsMode::Simple
            }),
            credential_name: t.certificate_refs.first().map(|c| c.name.clone()),
            ..ServerTlsSettings::default()
        }
    });
    Server {
        port: Port {
            number: u32::from(l.port),
            protocol: l.protocol.clone(),
            name: l.name.clone(),
            target_port: None,
        },
        hosts: vec![format!("*/{host}")],
        tls,
        name: Some(l.name.clone()),
        ..Server::default()
    }
}
