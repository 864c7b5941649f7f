//! What a workload (and the pilot, as a workload of the mesh) needs from identity: its
//! certificate and key ([`store`]), obtained and rotated from mesh-ca ([`client`], over the
//! wire API in [`pb`]), SPIFFE peer verification ([`verify`]), the mesh's rustls
//! configurations ([`tls`]), TLS originated to servers outside the mesh ([`origination`]), a bounded TLS accept loop ([`accept`]), gRPC over TLS
//! ([`grpc`]), the flags that reach the CA ([`flags`]), and SDS, which hands the certificate to a stock Envoy next to the workload
//! ([`sds`], the agent's job).
//!
//! It holds no signing authority and no server side of the CA: mesh-ca owns those. A
//! workload's private key is made here and leaves the process only to its own Envoy, over
//! loopback SDS.

pub mod accept;
pub mod client;
pub mod flags;
pub mod grpc;
pub mod origination;
pub mod sds;
pub mod store;
pub mod tls;
pub mod verify;

pub use store::CertStore;
pub use tls::TlsError;
pub use verify::peer_identity;

/// The CA's gRPC API (Istio's `IstioCertificateService`), generated from
/// `proto/istio/v1/auth/ca.proto`: the client here, the server in mesh-ca.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("istio.v1.auth");
}
