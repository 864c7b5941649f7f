//! The rule plan: a pure function from [`Config`] to `iptables-restore` input for the nat table.
//!
//! All of the mesh's rules live in its own chains; the built-in chains only get one jump each
//! (`PREROUTING -> MESH_INBOUND`, `OUTPUT -> MESH_OUTPUT`), so cleanup can find and remove
//! exactly what is ours.

use std::fmt::Write as _;

use crate::config::{Cidr, Config, InboundPorts, OutboundRanges};

/// Inbound entry chain, jumped to from PREROUTING.
pub const INBOUND: &str = "MESH_INBOUND";
/// Redirects to the inbound capture port.
pub const IN_REDIRECT: &str = "MESH_IN_REDIRECT";
/// Outbound entry chain, jumped to from OUTPUT.
pub const OUTPUT: &str = "MESH_OUTPUT";
/// Redirects to the outbound capture port.
pub const REDIRECT: &str = "MESH_REDIRECT";
/// Every chain the mesh owns; anything named `MESH_*` is treated as ours.
pub const CHAINS: [&str; 4] = [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT];
/// The prefix of the mesh's chains.
pub const CHAIN_PREFIX: &str = "MESH_";

/// IPv4 or IPv6 rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `iptables`.
    V4,
    /// `ip6tables`.
    V6,
}

impl Family {
    /// The inbound passthrough source address (the proxy's source towards the app).
    fn passthrough_source(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        }
    }

    /// The loopback address apps use for themselves.
    fn localhost(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    fn holds(self, cidr: &Cidr) -> bool {
        cidr.is_ipv6() == (self == Family::V6)
    }
}

/// The nat-table rules for one address family, as `iptables-restore` input.
pub fn render(config: &Config, family: Family) -> String {
    let mut out = String::from("*nat\n");
    for chain in CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for rule in rules(config, family) {
        out.push_str(&rule);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

/// The `-A` rules for one address family, in order.
pub fn rules(config: &Config, family: Family) -> Vec<String> {
    let mut r = Rules(Vec::new());
    r.add(IN_REDIRECT, &format!("-p tcp -j REDIRECT --to-ports {}", config.inbound_capture_port));
    r.add(REDIRECT, &format!("-p tcp -j REDIRECT --to-ports {}", config.proxy_port));
    inbound(&mut r, config);
    outbound(&mut r, config, family);
    r.0
}

struct Rules(Vec<String>);

impl Rules {
    fn add(&mut self, chain: &str, spec: &str) {
        self.0.push(format!("-A {chain} {spec}"));
    }
}

fn inbound(r: &mut Rules, config: &Config) {
    if config.inbound == InboundPorts::Disabled {
        return;
    }
    r.add("PREROUTING", &format!("-p tcp -j {INBOUND}"));
    for interface in &config.exclude_interfaces {
        r.add(INBOUND, &format!("-i {interface} -j RETURN"));
    }
    r.add(INBOUND, &format!("-p tcp --dport {} -j RETURN", config.tunnel_port));
    match &config.inbound {
        InboundPorts::All { except } => {
            for port in except {
                r.add(INBOUND, &format!("-p tcp --dport {port} -j RETURN"));
            }
            r.add(INBOUND, &format!("-p tcp -j {IN_REDIRECT}"));
        }
        InboundPorts::Only(ports) => {
            for port in ports {
                r.add(INBOUND, &format!("-p tcp --dport {port} -j {IN_REDIRECT}"));
            }
        }
        InboundPorts::Disabled => {}
    }
}

fn outbound(r: &mut Rules, config: &Config, family: Family) {
    let localhost = family.localhost();
    // All protocols, so that UDP DNS can be redirected too; every capture rule names tcp.
    r.add("OUTPUT", &format!("-j {OUTPUT}"));
    for interface in &config.exclude_interfaces {
        r.add(OUTPUT, &format!("-o {interface} -j RETURN"));
    }
    for port in &config.outbound_exclude_ports {
        for protocol in ["tcp", "udp"] {
            r.add(OUTPUT, &format!("-p {protocol} --dport {port} -j RETURN"));
        }
    }
    // The proxy's own connections to the app come from this address: never capture them.
    r.add(OUTPUT, &format!("-o lo -s {} -j RETURN", family.passthrough_source()));
    let inbound_on = config.inbound != InboundPorts::Disabled;
    // With DNS capture, DNS over lo (a local resolver) is not "the app talking to itself" and
    // the proxy's own DNS is not a call to its pod: port 53 is kept out of those rules.
    let (never_inbound, app_on_lo) = match config.dns_port {
        Some(_) => {
            (format!("-m multiport ! --dports 53,{}", config.tunnel_port), "-p tcp ! --dport 53 ")
        }
        None => (format!("! --dport {}", config.tunnel_port), ""),
    };
    for (owner, ids) in [("uid", &config.proxy_uids), ("gid", &config.proxy_gids)] {
        for id in ids.iter() {
            if inbound_on {
                // The proxy calling a VIP of its own pod over lo: send it through the inbound
                // path, as a call from another pod would go.
                r.add(
                    OUTPUT,
                    &format!(
                        "-o lo ! -d {localhost} -p tcp {never_inbound} -m owner --{owner}-owner {id} -j {IN_REDIRECT}"
                    ),
                );
            }
            // The app talking to itself over lo is not mesh traffic.
            r.add(OUTPUT, &format!("-o lo {app_on_lo}-m owner ! --{owner}-owner {id} -j RETURN"));
            // The proxy's own traffic: capturing it would loop.
            r.add(OUTPUT, &format!("-m owner --{owner}-owner {id} -j RETURN"));
        }
    }
    if let Some(dns_port) = config.dns_port {
        for protocol in ["udp", "tcp"] {
            r.add(OUTPUT, &format!("-p {protocol} --dport 53 -j REDIRECT --to-ports {dns_port}"));
        }
    }
    r.add(OUTPUT, &format!("-d {localhost} -j RETURN"));
    for cidr in config.outbound_exclude_ranges.iter().filter(|c| family.holds(c)) {
        r.add(OUTPUT, &format!("-d {cidr} -j RETURN"));
    }
    for port in &config.outbound_ports {
        r.add(OUTPUT, &format!("-p tcp --dport {port} -j {REDIRECT}"));
    }
    match &config.outbound_ranges {
        OutboundRanges::All => r.add(OUTPUT, &format!("-p tcp -j {REDIRECT}")),
        OutboundRanges::Only(ranges) => {
            for cidr in ranges.iter().filter(|c| family.holds(c)) {
                r.add(OUTPUT, &format!("-d {cidr} -p tcp -j {REDIRECT}"));
            }
        }
        OutboundRanges::Disabled => {}
    }
}
