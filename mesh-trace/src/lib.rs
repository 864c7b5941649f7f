//! Distributed tracing as every binary of the mesh does it: the trace-context headers (W3C and
//! B3) and the sampling decision ([`context`], pure), the one OTLP exporter (gRPC, or HTTP
//! for the providers that say so) with its bounded queue and the control plane's `tracing`
//! layer ([`export`]), and a small in-memory OTLP collector for tests and `meshctl local`
//! ([`receiver`]).
//!
//! It knows nothing of xDS, routes or traffic policy: callers bring the endpoint, the sampling
//! percentage and the attributes.

pub mod context;
pub mod export;
pub mod receiver;
