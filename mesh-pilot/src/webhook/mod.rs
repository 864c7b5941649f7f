//! The admission webhooks: sidecar injection (`/inject`) and validation of the mesh's kinds
//! (`/validate`), served over HTTPS on 15017 with a certificate from mesh-ca.
//!
//! [`review`] holds the answers, pure functions of the AdmissionReview; [`server`] is the HTTPS
//! server around them; [`ca_bundle`] keeps the `caBundle` of the webhook configurations equal to
//! the mesh root, so the API server trusts the pilot's certificate.

pub mod ca_bundle;
pub mod review;
pub mod server;

pub use review::{ReviewError, review_inject, review_validate, wanted};

/// Name of the MutatingWebhookConfiguration that sends pods to `/inject`.
pub const INJECTOR_CONFIGURATION: &str = "mesh-sidecar-injector";
/// Name of the ValidatingWebhookConfiguration that sends the mesh's kinds to `/validate`.
pub const VALIDATOR_CONFIGURATION: &str = "mesh-validator";
