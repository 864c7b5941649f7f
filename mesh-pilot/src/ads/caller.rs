//! Caller authentication: who is on the other end of a stream, as the transport proves it, and
//! whether the node it claims to be is that workload.

use std::sync::Arc;

use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::model::Proxy;

/// Who is on the other end of a stream, as far as the transport can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The plaintext port: the node is taken at its word (local mode, tests, trusted networks).
    Plaintext,
    /// The mTLS port: the identity in the client certificate, if it carries a SPIFFE id.
    Mesh(Option<mesh_api::identity::SpiffeId>),
}

impl Caller {
    /// The caller of an HTTP request: on the mTLS port (`mtls`), the identity of its verified
    /// client certificate chain, which the TLS accept loop leaves in the request's extensions.
    pub(crate) fn of(mtls: bool, extensions: &http::Extensions) -> Self {
        if !mtls {
            return Caller::Plaintext;
        }
        let chain =
            extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(TlsConnectInfo::peer_certs);
        Self::from_certificates(chain)
    }

    /// The caller on the mTLS port, from its verified client certificate chain.
    fn from_certificates(
        chain: Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
    ) -> Self {
        Caller::Mesh(chain.and_then(|chain| mesh_identity::peer_identity(chain.as_slice())))
    }

    /// Refuses a node that claims another workload than the certificate proves.
    pub(crate) fn admit(&self, proxy: &Proxy) -> Result<(), Status> {
        match self {
            Caller::Plaintext => Ok(()),
            Caller::Mesh(None) => {
                Err(Status::unauthenticated("the client certificate carries no SPIFFE identity"))
            }
            Caller::Mesh(Some(identity)) => {
                if identity.namespace() == proxy.namespace
                    && identity.service_account() == proxy.service_account
                {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "node {} claims namespace {:?} and service account {:?}, but its certificate is {identity}",
                        proxy.id, proxy.namespace, proxy.service_account
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(namespace: &str, service_account: &str) -> Proxy {
        Proxy {
            id: "sidecar~10.0.0.9~hello-1.demo~demo.svc.cluster.local".into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
            ..Proxy::default()
        }
    }

    #[test]
    fn a_node_is_admitted_only_as_the_workload_its_certificate_names() {
        let id = mesh_api::identity::SpiffeId::new("cluster.local", "demo", "hello").ok();
        let mesh = Caller::Mesh(id);
        assert!(mesh.admit(&proxy("demo", "hello")).is_ok());
        assert_eq!(
            mesh.admit(&proxy("other", "hello")).map_err(|s| s.code()),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            Caller::Mesh(None).admit(&proxy("demo", "hello")).map_err(|s| s.code()),
            Err(tonic::Code::Unauthenticated)
        );
        assert!(Caller::Plaintext.admit(&proxy("any", "one")).is_ok());
        assert_eq!(Caller::of(true, &http::Extensions::new()), Caller::Mesh(None));
        assert_eq!(Caller::of(false, &http::Extensions::new()), Caller::Plaintext);
    }
}
