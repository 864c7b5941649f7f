//! What the mesh's tests share, in one place (as ztunnel's `test_helpers`): a test CA that
//! issues workload certificates ([`ca`]), a pilot serving a directory of YAML through its app
//! ([`pilot`]), "this test needs a tool, and under `CI=true` it must run" ([`require`]), a
//! plain HTTP GET ([`http`]) and listeners bound to port 0 and handed to the component under
//! test ([`net`]), so no test races another for a free port.
//!
//! Only tests, benchmarks and the e2e crate may depend on it; it panics freely, as test code
//! does, and must never reach a shipped binary.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // A panic is the failure report.

pub mod ca;
pub mod http;
pub mod net;
pub mod pilot;
pub mod require;
