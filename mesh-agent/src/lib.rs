//! `mesh-agent`, what istio-agent does for an Envoy sidecar: it obtains the workload's
//! certificate from mesh-ca with the pod's token, keeps it fresh, and serves it (and the mesh
//! root) over SDS on loopback, so that a stock Envoy takes part in mesh mTLS. mesh-proxy needs
//! none of it: it does the same in-process.
//!
//! It may use `mesh-identity` (the CA client, SDS) and `mesh-runtime` (logs, signals); it holds
//! no signing authority and serves nothing beyond the pod's loopback.

#![forbid(unsafe_code)]

pub mod app;
