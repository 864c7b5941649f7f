//! SDS for a local Envoy (what `mesh-agent` runs next to one): serves the workload's certificate (`default`) and the mesh trust
//! bundle (`ROOTCA`) over Envoy's Secret Discovery Service, the job istio-agent does next to an
//! Envoy sidecar. With it a stock Envoy can take part in mesh mTLS with certificates from this
//! CA; mesh-proxy needs none of it (it reads its certificates in-process).
//!
//! Secrets are pushed again on every stream whenever new material is published (rotation).

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use futures::{Stream, StreamExt};
use mesh_api::xds::{SECRET_TYPE, mtls};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

/// What the secrets are made of, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// The workload certificate chain, leaf first.
    pub chain: Vec<String>,
    /// The workload's private key, served with `chain` as the `default` secret.
    pub key_pem: String,
    /// Root certificates the workload trusts, served together as the `ROOTCA` secret.
    pub roots: Vec<String>,
}

impl Material {
    /// The secret of this name, if it is one this service knows.
    fn secret(&self, name: &str) -> Option<Secret> {
        let inline = |text: String| DataSource {
            specifier: Some(data_source::Specifier::InlineString(text)),
            ..DataSource::default()
        };
        let r#type = match name {
            mtls::WORKLOAD_SECRET => secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(self.chain.concat())),
                private_key: Some(inline(self.key_pem.clone())),
                ..TlsCertificate::default()
            }),
            mtls::ROOT_SECRET => secret::Type::ValidationContext(CertificateValidationContext {
                trusted_ca: Some(inline(self.roots.concat())),
                ..CertificateValidationContext::default()
            }),
            _ => return None,
        };
        Some(Secret { name: name.to_owned(), r#type: Some(r#type) })
    }
}

/// The SDS gRPC service over published material.
pub struct SecretService {
    material: watch::Receiver<Arc<Material>>,
}

impl std::fmt::Debug for SecretService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a private key.
        f.debug_struct("SecretService").finish_non_exhaustive()
    }
}

impl SecretService {
    /// Serves whatever `material` holds, and pushes it again when it changes.
    pub fn new(material: watch::Receiver<Arc<Material>>) -> Self {
        Self { material }
    }

    /// The service as a tonic server, to add to a `tonic::transport::Server`.
    pub fn into_server(self) -> SecretDiscoveryServiceServer<Self> {
        SecretDiscoveryServiceServer::new(self)
    }
}

fn response(material: &Material, names: &BTreeSet<String>, version: u64) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.to_string(),
        nonce: version.to_string(),
        type_url: SECRET_TYPE.to_owned(),
        resources: names
            .iter()
            .filter_map(|n| material.secret(n))
            .map(envoy_types::util::pack_any)
            .collect(),
        ..DiscoveryResponse::default()
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for SecretService {
    type DeltaSecretsStream = ResponseStream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = ResponseStream<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("this SDS server speaks state of the world only"))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut requests = request.into_inner();
        let mut material = self.material.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut names = BTreeSet::new();
            let mut version = 0u64;
            loop {
                let send = tokio::select! {
                    request = requests.next() => match request {
                        Some(Ok(request)) => {
                            if request.error_detail.is_some() {
                                tracing::warn!(
                                    "the proxy rejected its secrets: {}",
                                    request.error_detail.map(|e| e.message).unwrap_or_default()
                                );
                                false
                            } else {
                                let asked: BTreeSet<String> =
                                    request.resource_names.into_iter().collect();
                                // A new subscription, or a first request; an ACK changes nothing.
                                let changed = asked != names || request.response_nonce.is_empty();
                                names = asked;
                                changed
                            }
                        }
                        Some(Err(_)) | None => return,
                    },
                    changed = material.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        true
                    }
                };
                if send {
                    version += 1;
                    let answer = response(&material.borrow_and_update(), &names, version);
                    if tx.send(Ok(answer)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let names = request.into_inner().resource_names.into_iter().collect();
        Ok(Response::new(response(&self.material.borrow(), &names, 1)))
    }
}
