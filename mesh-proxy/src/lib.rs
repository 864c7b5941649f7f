//! The data plane: one proxy per pod (uid 1337) that gets its identity from mesh-ca and its
//! configuration from mesh-pilot, and carries all of the app's TCP and HTTP traffic with mTLS
//! between sidecars.
//!
//! Configuration: [`settings`], the xDS client and store ([`xds`]), compiled per update into
//! a [`runtime`] of route tables ([`routing`]), balancers ([`balance`]) and filter chains
//! ([`listener`]), with each route's traffic policy ([`policy`]) and each endpoint's outlier
//! record ([`outlier`]); the TLS a gateway terminates with the pilot's SDS secrets ([`tls`]);
//! what a chain's filters check first ([`filters`]): Envoy's JWT authentication ([`jwt`]),
//! RBAC ([`authz`]) and the connection manager's path normalization ([`path`]).
//! Traffic: [`proxy`] (listeners, HTTP, TCP, upstream pools and mesh mTLS) on top of [`net`]
//! (original destination, protocol sniffing). Operability: [`telemetry`] (Istio's metrics,
//! access log), [`trace`] (spans over OTLP), [`admin`] (15000, 15021, 15090) and
//! [`app_health`] (the app's probes on 15020). [`app`] puts it together for `main` and tests.
//! It may use `mesh-api`, `mesh-identity`, `mesh-runtime` and `mesh-trace`; no panics on the
//! data path.

pub mod admin;
pub mod app;
pub mod app_health;
pub mod authz;
pub mod balance;
pub mod filters;
pub mod jwt;
pub mod listener;
pub mod net;
pub mod outlier;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod settings;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod xds;
