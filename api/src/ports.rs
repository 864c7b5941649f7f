//! The ports, users and addresses every component agrees on. They are Istio's numbers, so what
//! operators know about Istio carries over.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Outbound capture: iptables redirects the app's outgoing TCP here (listener `virtualOutbound`).
pub const PROXY_OUTBOUND: u16 = 15001;
/// Inbound capture: iptables redirects incoming TCP here (listener `virtualInbound`).
pub const PROXY_INBOUND: u16 = 15006;
/// Tunnel port, never captured (kept free for an HBONE-style tunnel).
pub const PROXY_TUNNEL: u16 = 15008;
/// Proxy admin (config dump, log level, tap), bound to [`PROXY_ADMIN_ADDRESS`] only.
pub const PROXY_ADMIN: u16 = 15000;
/// The admin listener's address: never reachable from outside the pod.
pub const PROXY_ADMIN_ADDRESS: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Proxy health (`/healthz/ready`).
pub const PROXY_HEALTH: u16 = 15021;
/// Proxy Prometheus metrics (`/stats/prometheus`).
pub const PROXY_PROMETHEUS: u16 = 15090;
/// Merged app and proxy metrics.
pub const PROXY_MERGED_METRICS: u16 = 15020;
/// DNS capture (UDP and TCP port 53 redirected here when asked).
pub const PROXY_DNS: u16 = 15053;
/// The ports the sidecar keeps for itself (Istio's reserved 15000–15090: admin, capture,
/// tunnel, status, health, DNS, Prometheus). Never an app's inbound port, whatever a
/// Service's `targetPort` says: the pilot builds no inbound chain or cluster for them and the
/// proxy refuses them.
pub const PROXY_RESERVED: std::ops::RangeInclusive<u16> = PROXY_ADMIN..=PROXY_PROMETHEUS;

/// Whether `port` is one of the sidecar's own ([`PROXY_RESERVED`]).
pub fn is_proxy_port(port: u16) -> bool {
    PROXY_RESERVED.contains(&port)
}

/// Pilot xDS, plaintext.
pub const PILOT_XDS_PLAINTEXT: u16 = 15010;
/// Pilot xDS over mTLS.
pub const PILOT_XDS_TLS: u16 = 15012;
/// Certificate authority gRPC (TLS).
pub const CA_GRPC: u16 = 8060;
/// Pilot and CA monitoring (`/metrics`, readiness).
pub const CONTROL_PLANE_MONITORING: u16 = 15014;
/// Sidecar injection webhook (HTTPS); the Service exposes it on 443.
pub const INJECTION_WEBHOOK: u16 = 15017;

/// User id the proxy runs as; its own traffic is never captured.
pub const PROXY_UID: u32 = 1337;
/// Group id the proxy runs as.
pub const PROXY_GID: u32 = 1337;

/// Source address of inbound traffic the proxy forwards to the app, so iptables can tell it
/// apart from the app's own traffic and never capture it again.
pub const INBOUND_PASSTHROUGH_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// The IPv6 counterpart of [`INBOUND_PASSTHROUGH_SOURCE_V4`].
pub const INBOUND_PASSTHROUGH_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// Inbound ports iptables never captures by default: merged metrics, health, Prometheus, tunnel.
pub const DEFAULT_INBOUND_EXCLUDED: [u16; 4] =
    [PROXY_MERGED_METRICS, PROXY_HEALTH, PROXY_PROMETHEUS, PROXY_TUNNEL];

/// Namespace label that turns sidecar injection on.
pub const INJECTION_NAMESPACE_LABEL: (&str, &str) = ("mesh-injection", "enabled");
/// Pod annotation that opts a pod out of injection when set to `"false"`.
pub const INJECTION_POD_ANNOTATION: &str = "sidecar.mesh.io/inject";

/// Namespace of the control plane.
pub const CONTROL_PLANE_NAMESPACE: &str = "mesh-system";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sidecars_ports_are_reserved_and_apps_ports_are_not() {
        for port in [PROXY_ADMIN, PROXY_OUTBOUND, PROXY_INBOUND, PROXY_TUNNEL, PROXY_HEALTH] {
            assert!(is_proxy_port(port), "{port}");
        }
        for port in [PROXY_MERGED_METRICS, PROXY_DNS, PROXY_PROMETHEUS] {
            assert!(is_proxy_port(port), "{port}");
        }
        for port in [80, 8080, 9080, 14999, 15091, CA_GRPC] {
            assert!(!is_proxy_port(port), "{port}");
        }
    }
}
