//! The control plane: watches services, workloads and Istio routing config (a local directory
//! today; Kubernetes next), keeps one immutable model snapshot, and serves each proxy Envoy v3
//! xDS over ADS, state of the world and delta (mTLS serving is not built yet).
//!
//! Translation is pure ([`translate`]); only the config sources and the ADS server do I/O.

pub mod debug;
mod delta;
pub mod metrics;
pub mod model;
pub mod source;
pub mod translate;
pub mod xds;
