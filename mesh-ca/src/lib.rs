//! The mesh's certificate authority: a gRPC server compatible with Istio's
//! `IstioCertificateService` that signs short-lived SPIFFE certificates ([`authority`],
//! [`server`]), and the client library the proxy uses to obtain, rotate and use them
//! ([`client`], [`tls`]), and an SDS server that hands them to a stock Envoy ([`sds`]).
//!
//! The CA never trusts the identity a CSR asks for, only the authenticated caller ([`auth`]).
//! Private keys never leave the process that made them, except the CA's own root key, which is
//! kept where [`root`] says, and a workload key given to its own Envoy over local SDS.

pub mod auth;
pub mod authority;
pub mod client;
pub mod distribute;
pub mod metrics;
pub mod root;
pub mod sds;
pub mod server;
pub mod tls;

/// The gRPC API, generated from `proto/istio/v1/auth/ca.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("istio.v1.auth");
}
