//! `mesh-api`: the one typed configuration crate every binary of the mesh shares.
//!
//! It holds the Istio-compatible resource kinds (`networking.istio.io/v1`, `security.istio.io/v1`,
//! `telemetry.istio.io/v1`), their semantic [`validate`]ion, the multi-document [`load`]er, the
//! generated CRDs, the mesh-wide [`mesh::MeshConfig`] and the wire constants ([`ports`],
//! [`identity`], [`xds`]) that the pilot, the proxy, the CA and `meshctl` must agree on. With the
//! `envoy-json` feature, [`envoy`] writes Envoy v3 resources as JSON (config dumps, golden files).
//!
//! It is pure: no network, no Kubernetes client, no async runtime, and it imports no other crate of
//! the workspace. File and stdin reading in [`load`] is its only I/O.

#[macro_use]
pub mod string_enum;

pub mod crds;
pub mod duration;
#[cfg(feature = "envoy-json")]
pub mod envoy;
pub mod gateway_api;
pub mod identity;
pub mod inject;
pub mod load;
pub mod mesh;
pub mod networking;
pub mod ports;
mod resource;
pub mod security;
pub mod telemetry;
pub mod validate;
pub mod xds;

pub use duration::Duration;
pub use resource::{ObjectRef, Resource};
