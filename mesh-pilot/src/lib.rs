//! The control plane: watches services, workloads and Istio routing config (Kubernetes, or a
//! local directory), keeps one immutable model snapshot, and serves each proxy Envoy v3 xDS
//! over ADS, state of the world and delta, in plaintext (15010) and over mesh mTLS (15012,
//! where a node is admitted only as the workload its certificate names).
//!
//! Translation is pure ([`translate`]), and so are the admission webhooks' answers
//! ([`webhook`]: sidecar injection and validation); only the config sources, the ADS server
//! ([`ads`]), the fetching of token issuers' keys ([`jwks`]), the reading of the mesh config
//! ([`mesh_config`]) and the debug endpoint do I/O; [`app`] puts them together for the binary
//! and for tests. The pilot never holds a workload's private key.

pub mod ads;
pub mod app;
pub mod changes;
pub mod debug;
pub mod jwks;
pub mod mesh_config;
pub mod metrics;
pub mod model;
pub mod source;
pub mod translate;
pub mod webhook;
