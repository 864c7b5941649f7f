//! The data plane: one proxy per pod (uid 1337) that gets its identity from mesh-ca and its
//! configuration from mesh-pilot, and carries all of the app's TCP and HTTP traffic with mTLS
//! between sidecars.
//!
//! Built so far: its settings ([`settings`]) and its xDS client, which keeps the configuration
//! the pilot sends (accepting only what the proxy implements, naming what it refuses) and keeps
//! the last good one while the pilot is away ([`xds`]); and, for the data path, filter chain
//! selection ([`listener`]), HTTP routing ([`routing`]) and endpoint selection ([`balance`]),
//! compiled together per configuration version ([`runtime`]). The data path itself arrives next
//! (issue 6).
//! It may use `mesh-api` and the client side of `mesh-ca`; no panics on the data path.

pub mod admin;
pub mod balance;
pub mod listener;
pub mod net;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod settings;
pub mod telemetry;
pub mod xds;
