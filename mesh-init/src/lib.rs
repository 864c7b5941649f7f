//! Transparent traffic capture for a pod's network namespace (the init container of every meshed
//! pod): a pure iptables rule plan built from flags ([`plan`]), applied atomically with
//! `iptables-restore --noflush` ([`capture`]), with Istio's ports, uid 1337 and 127.0.0.6 rule.
//!
//! This crate may touch the nat table of the network namespace it is pointed at, and only the
//! `MESH_*` chains and the jumps to them; other rules are never changed.

pub mod app;
pub mod capture;
pub mod cleanup;
pub mod config;
pub mod iptables;
pub mod plan;
