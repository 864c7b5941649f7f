//! Distributed tracing as every binary of the mesh does it: the trace-context headers (W3C and
//! B3) and the sampling decision ([`context`], pure).
//!
//! It knows nothing of xDS, routes or traffic policy: callers bring their own configuration.

pub mod context;
