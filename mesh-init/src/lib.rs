//! Transparent traffic capture for a pod's network namespace (the init container of every meshed
//! pod): a pure iptables rule plan built from flags, applied atomically with `iptables-restore`.
//!
//! This crate may touch the network namespace it is pointed at and nothing else. Its planner and
//! binary arrive with issue 3; until then it holds no code.
