//! The control plane: watches services, workloads and Istio routing config (Kubernetes or a local
//! directory), keeps one immutable model snapshot, and serves each proxy Envoy v3 xDS over ADS.
//!
//! Translation is pure; only the config sources and the ADS server do I/O. It arrives with issue 5;
//! until then it holds no code.
