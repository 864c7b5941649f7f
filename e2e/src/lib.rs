//! End-to-end tests and benchmarks: the local cluster built from Linux network namespaces, and
//! scenarios that run the mesh's components (and Envoy, as the reference proxy) in it, driven
//! from outside as a user would.
//!
//! Everything here creates its own namespaces and removes them; nothing touches the host's
//! network.

pub mod bookinfo;
pub mod edge;
pub mod jwt;
pub mod local;
pub mod netns;
pub mod sidecar;
pub mod tmux;
pub mod traffic;
pub mod wire;
