//! `meshctl`, the command line of the mesh. Today it runs the mesh on one Linux machine
//! ([`local`]), installs it on a cluster ([`install`]) and injects sidecars into manifests
//! offline ([`kube_inject`]); analysis, proxy status and the dashboard arrive with their issues.
//!
//! It talks to the other components only through their public wire APIs and starts their
//! binaries as they are; it never links their servers. It may use `mesh-api` (the config types,
//! loading and validation), `mesh-trace` (trace ids, and the in-memory receiver the local mesh's
//! collector runs) and, for identity, `mesh-identity`.

#![forbid(unsafe_code)]

pub mod access;
pub mod analyze;
pub mod dashboard;
pub mod forward;
pub mod install;
pub mod kube_inject;
pub mod local;
pub mod proxy_config;
pub mod proxy_status;
pub mod trace;
pub mod version;
