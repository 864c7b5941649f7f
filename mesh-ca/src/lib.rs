//! The mesh's certificate authority: a gRPC server compatible with Istio's
//! `IstioCertificateService` that signs short-lived SPIFFE certificates ([`authority`],
//! [`server`]), keeps its root ([`root`]) and distributes it ([`distribute`]). The material it
//! issues is in the form SDS serves ([`sds`], mesh-identity's).
//!
//! The CA never trusts the identity a CSR asks for, only the authenticated caller ([`auth`]).
//! Private keys never leave the process that made them, except the CA's own root key, which is
//! kept where [`root`] says. What a workload needs to obtain and use certificates lives in
//! mesh-identity, not here.

pub mod app;
pub mod auth;
pub mod authority;
pub mod distribute;
pub mod metrics;
pub mod root;
pub use mesh_identity::sds;
pub mod server;
