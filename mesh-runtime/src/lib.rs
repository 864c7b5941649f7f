//! What every long-running binary of the mesh shares, so each does it the same way: draining
//! with a hard deadline ([`drain`]), readiness from named guards ([`readiness`]), the signals
//! that stop a process ([`signal`]) and the one shutdown sequence ([`shutdown`]), one small
//! HTTP server for admin, monitoring and debug endpoints ([`admin`]), and log setup with a
//! reload handle ([`log`]).
//!
//! It knows nothing of xDS, certificates or traffic, and must not: the binaries bring those.

pub mod admin;
pub mod drain;
pub mod log;
pub mod readiness;
pub mod shutdown;
pub mod signal;
