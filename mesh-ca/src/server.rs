//! The gRPC server: Istio's `IstioCertificateService/CreateCertificate` over TLS.

use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, debug, info};

use crate::auth::{AuthError, Authenticator};
use crate::authority::{Authority, SignError};
use crate::metrics::{Metrics, Reason};
use mesh_identity::pb::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use mesh_identity::pb::{IstioCertificateRequest, IstioCertificateResponse};

/// Signs certificates for authenticated callers.
pub struct CaService {
    authority: Arc<Authority>,
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
}

impl CaService {
    /// The service over a CA and an authenticator.
    pub fn new(
        authority: Arc<Authority>,
        authenticator: Arc<Authenticator>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { authority, authenticator, metrics }
    }

    /// The service as a tonic server.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }

    fn refuse(&self, reason: Reason, status: Status) -> Status {
        self.metrics.refused(reason);
        debug!(?reason, "certificate request refused: {}", status.message());
        status
    }
}

/// The bearer token of a request (`authorization: Bearer <token>`).
fn bearer(request: &Request<IstioCertificateRequest>) -> Option<&str> {
    let value = request.metadata().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        // One span per signing (exported when the CA traces, see `--otlp-endpoint`); the log
        // lines inside carry its ids.
        let span = tracing::info_span!(
            "sign",
            identity = tracing::field::Empty,
            ttl = request.get_ref().validity_duration,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        mesh_trace::export::record_ids(&span);
        let signed = self.sign(request).instrument(span.clone()).await;
        if let Err(status) = &signed {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", status.message());
        }
        signed
    }
}

impl CaService {
    /// Authenticates the caller and signs its CSR for the identity its token proves.
    async fn sign(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let Some(token) = bearer(&request) else {
            return Err(self.refuse(
                Reason::unauthenticated,
                Status::unauthenticated(AuthError::Missing.to_string()),
            ));
        };
        let caller = match self.authenticator.authenticate(token).await {
            Ok(caller) => caller,
            Err(err @ AuthError::Unavailable(_)) => {
                return Err(self.refuse(Reason::unavailable, Status::unavailable(err.to_string())));
            }
            Err(err) => {
                return Err(
                    self.refuse(Reason::unauthenticated, Status::unauthenticated(err.to_string()))
                );
            }
        };
        let identity = caller.identity(self.authority.trust_domain()).map_err(|e| {
            self.refuse(Reason::unauthenticated, Status::unauthenticated(e.to_string()))
        })?;
        tracing::Span::current().record("identity", tracing::field::display(&identity));
        let request = request.into_inner();
        let chain =
            self.authority.sign(&request.csr, &identity, request.validity_duration).map_err(
                |err| {
                    let message = err.to_string();
                    match err {
                        SignError::CaRequested | SignError::IdentityMismatch { .. } => self
                            .refuse(Reason::permission_denied, Status::permission_denied(message)),
                        SignError::Internal(_) => {
                            self.refuse(Reason::internal, Status::internal(message))
                        }
                        SignError::Malformed(_)
                        | SignError::BadSignature
                        | SignError::UnsupportedKey(_)
                        | SignError::BadTtl { .. } => {
                            self.refuse(Reason::invalid_argument, Status::invalid_argument(message))
                        }
                    }
                },
            )?;
        self.metrics.signed.inc();
        info!(%identity, ttl = request.validity_duration, "certificate signed");
        Ok(Response::new(IstioCertificateResponse { cert_chain: chain }))
    }
}

/// Serves the CA over TLS on `listener` until `shutdown`.
pub async fn serve_tls(
    listener: TcpListener,
    service: CaService,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(mesh_identity::accept::incoming(listener, tls), shutdown)
        .await
}
