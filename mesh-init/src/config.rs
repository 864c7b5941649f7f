//! What to capture: the flags (each also an environment variable) and the validated
//! [`Config`] the rule plan is built from.

use std::fmt;
use std::net::IpAddr;

use clap::Parser;
use mesh_api::ports;

/// Command-line flags. Every flag can also be set with the environment variable named after it
/// (`--proxy-port` is `MESH_PROXY_PORT`); the short names are istio-iptables' own.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "mesh-init",
    version,
    about = "Sends a pod's TCP traffic through its sidecar proxy with iptables (REDIRECT mode)",
    long_about = None
)]
pub struct Flags {
    /// Port the outbound traffic of the app is redirected to.
    #[arg(short = 'p', long, env = "MESH_PROXY_PORT", default_value_t = ports::PROXY_OUTBOUND, alias = "envoy-port")]
    pub proxy_port: u16,

    /// Port the inbound traffic of the pod is redirected to.
    #[arg(short = 'z', long, env = "MESH_INBOUND_CAPTURE_PORT", default_value_t = ports::PROXY_INBOUND)]
    pub inbound_capture_port: u16,

    /// Tunnel port, never captured in either direction.
    #[arg(short = 'e', long, env = "MESH_INBOUND_TUNNEL_PORT", default_value_t = ports::PROXY_TUNNEL)]
    pub inbound_tunnel_port: u16,

    /// User ids whose traffic is never captured (the proxy's), comma-separated.
    #[arg(short = 'u', long, env = "MESH_PROXY_UID", default_value = "1337")]
    pub proxy_uid: String,

    /// Group ids whose traffic is never captured; the proxy uids when empty.
    #[arg(short = 'g', long, env = "MESH_PROXY_GID", default_value = "")]
    pub proxy_gid: String,

    /// How inbound traffic is intercepted. Only REDIRECT is supported.
    #[arg(short = 'm', long, env = "MESH_INBOUND_INTERCEPTION_MODE", default_value = "REDIRECT")]
    pub inbound_interception_mode: String,

    /// Inbound ports to capture: `*` for all, empty for none, or a comma-separated list.
    #[arg(short = 'b', long, env = "MESH_INBOUND_PORTS", default_value = "*")]
    pub inbound_ports: String,

    /// Inbound ports never captured when capturing all (`*`), comma-separated.
    #[arg(
        short = 'd',
        long,
        env = "MESH_INBOUND_EXCLUDE_PORTS",
        default_value = "15090,15021,15020"
    )]
    pub inbound_exclude_ports: String,

    /// Outbound destinations to capture: `*` for all, empty for none, or comma-separated CIDRs.
    #[arg(short = 'i', long, env = "MESH_OUTBOUND_IP_RANGES", default_value = "*")]
    pub outbound_ip_ranges: String,

    /// Outbound destinations never captured, comma-separated CIDRs.
    #[arg(short = 'x', long, env = "MESH_OUTBOUND_EXCLUDE_IP_RANGES", default_value = "")]
    pub outbound_exclude_ip_ranges: String,

    /// Outbound ports always captured, whatever the destination, comma-separated.
    #[arg(short = 'q', long, env = "MESH_OUTBOUND_PORTS", default_value = "")]
    pub outbound_ports: String,

    /// Outbound ports never captured, comma-separated.
    #[arg(short = 'o', long, env = "MESH_OUTBOUND_EXCLUDE_PORTS", default_value = "")]
    pub outbound_exclude_ports: String,

    /// Interfaces whose traffic is never captured in either direction, comma-separated.
    #[arg(short = 'c', long, env = "MESH_EXCLUDE_INTERFACES", default_value = "")]
    pub exclude_interfaces: String,

    /// Also redirect outbound DNS (UDP and TCP port 53) to the proxy's DNS port.
    #[arg(long, env = "MESH_REDIRECT_DNS")]
    pub redirect_dns: bool,

    /// Port outbound DNS is redirected to with `--redirect-dns` (the proxy's DNS listener).
    #[arg(long, env = "MESH_DNS_PORT", default_value_t = ports::PROXY_DNS)]
    pub dns_port: u16,

    /// IPv6 rules: `auto` (when the pod has a global IPv6 address), `on` or `off`.
    #[arg(long, env = "MESH_IPV6", default_value = "auto")]
    pub ipv6: String,

    /// Which iptables to use: `auto` (the backend that already holds rules, else the default),
    /// `nft` or `legacy`.
    #[arg(long, env = "MESH_IPTABLES_BACKEND", default_value = "auto")]
    pub iptables_backend: String,

    /// Print the rules that would be applied and change nothing.
    #[arg(short = 'n', long, env = "MESH_DRY_RUN")]
    pub dry_run: bool,

    /// Remove the mesh's chains and jumps (and nothing else) instead of installing them.
    #[arg(long, env = "MESH_CLEANUP")]
    pub cleanup: bool,

    /// Apply the rules inside this named network namespace (`ip netns`), for local mode.
    #[arg(long, env = "MESH_NETWORK_NAMESPACE")]
    pub network_namespace: Option<String>,

    /// Logging (`--log-level`, `--log-format`), as every binary of the mesh takes it.
    #[command(flatten)]
    pub log: mesh_runtime::log::LogFlags,
}

/// A flag value that was refused, naming the flag and the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid --{flag} value {value:?}: {reason}")]
pub struct ConfigError {
    /// The long flag name.
    pub flag: &'static str,
    /// The value given (the whole flag, or the list item at fault).
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

/// Inbound ports to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundPorts {
    /// Every port but these.
    All {
        /// Ports left alone.
        except: Vec<u16>,
    },
    /// Only these ports.
    Only(Vec<u16>),
    /// No inbound capture.
    Disabled,
}

/// Outbound destinations to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboundRanges {
    /// Every destination.
    All,
    /// Only these blocks.
    Only(Vec<Cidr>),
    /// No outbound capture by destination (ports in `outbound_ports` are still captured).
    Disabled,
}

/// An IPv4 or IPv6 address block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address as written.
    pub addr: IpAddr,
    /// Prefix length in bits; the full length (32 or 128) when none was written.
    pub prefix: u8,
}

impl Cidr {
    /// Whether the block is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr =
            addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("prefix length {p:?} must be 0 to {max}")),
            },
        };
        Ok(Self { addr, prefix })
    }
}

/// Whether to write IPv6 rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Mode {
    /// When the pod has a global IPv6 address.
    Auto,
    /// Always, even without a global IPv6 address on the pod.
    On,
    /// Never: IPv6 traffic is left uncaptured.
    Off,
}

/// Which iptables binaries to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The one that already holds rules, else the system default.
    Auto,
    /// `iptables-nft-*`.
    Nft,
    /// `iptables-legacy-*`.
    Legacy,
}

/// The validated capture settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Port the app's outbound TCP is redirected to (`--proxy-port`).
    pub proxy_port: u16,
    /// Port inbound TCP is redirected to (`--inbound-capture-port`).
    pub inbound_capture_port: u16,
    /// Inbound port never redirected, kept for the proxy's tunnel (`--inbound-tunnel-port`).
    pub tunnel_port: u16,
    /// Uids whose traffic is never captured.
    pub proxy_uids: Vec<u32>,
    /// Gids whose traffic is never captured.
    pub proxy_gids: Vec<u32>,
    /// Which inbound TCP ports are redirected (`--inbound-ports`, `--inbound-exclude-ports`).
    pub inbound: InboundPorts,
    /// Which outbound destinations are redirected (`--outbound-ip-ranges`).
    pub outbound_ranges: OutboundRanges,
    /// Outbound destinations never captured.
    pub outbound_exclude_ranges: Vec<Cidr>,
    /// Outbound TCP ports redirected whatever `outbound_ranges` says; excluded ports and ranges
    /// still win (`--outbound-ports`).
    pub outbound_ports: Vec<u16>,
    /// Outbound ports never captured.
    pub outbound_exclude_ports: Vec<u16>,
    /// Interfaces never captured.
    pub exclude_interfaces: Vec<String>,
    /// DNS redirection to this port, when enabled.
    pub dns_port: Option<u16>,
    /// Whether `ip6tables` rules are written too (`--ipv6`).
    pub ipv6: Ipv6Mode,
    /// Which iptables binaries install the rules (`--iptables-backend`).
    pub backend: Backend,
}

impl Default for Config {
    fn default() -> Self {
        // The defaults of the flags; parsing them cannot fail.
        match Config::from_flags(&Flags::parse_from(["mesh-init"])) {
            Ok(config) => config,
            Err(err) => unreachable!("the default flags are valid: {err}"),
        }
    }
}

fn err(flag: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { flag, value: value.to_owned(), reason: reason.into() }
}

fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|item| !item.is_empty())
}

fn port_list(flag: &'static str, value: &str) -> Result<Vec<u16>, ConfigError> {
    let mut ports = Vec::new();
    for item in items(value) {
        ports.push(port(flag, item)?);
    }
    Ok(ports)
}

fn port(flag: &'static str, item: &str) -> Result<u16, ConfigError> {
    match item.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        Ok(_) => Err(err(flag, item, "port is out of range: must be 1 to 65535")),
        Err(_) => Err(err(flag, item, "not a port number")),
    }
}

fn cidr_list(flag: &'static str, value: &str) -> Result<Vec<Cidr>, ConfigError> {
    items(value)
        .map(|item| item.parse().map_err(|reason: String| err(flag, item, reason)))
        .collect()
}

fn id_list(flag: &'static str, value: &str) -> Result<Vec<u32>, ConfigError> {
    items(value)
        .map(|item| item.parse().map_err(|_| err(flag, item, "not a numeric user or group id")))
        .collect()
}

fn nonzero(flag: &'static str, port: u16) -> Result<u16, ConfigError> {
    if port == 0 {
        Err(err(flag, "0", "port is out of range: must be 1 to 65535"))
    } else {
        Ok(port)
    }
}

impl Config {
    /// Validates the flags; the error names the flag and the value at fault.
    pub fn from_flags(flags: &Flags) -> Result<Self, ConfigError> {
        match flags.inbound_interception_mode.as_str() {
            "REDIRECT" => {}
            "TPROXY" => {
                return Err(err(
                    "inbound-interception-mode",
                    "TPROXY",
                    "TPROXY is not supported by mesh-init; use REDIRECT",
                ));
            }
            other => {
                return Err(err("inbound-interception-mode", other, "unknown mode: use REDIRECT"));
            }
        }
        let proxy_uids = id_list("proxy-uid", &flags.proxy_uid)?;
        if proxy_uids.is_empty() {
            return Err(err("proxy-uid", &flags.proxy_uid, "at least one uid is required"));
        }
        let proxy_gids = match id_list("proxy-gid", &flags.proxy_gid)? {
            gids if gids.is_empty() => proxy_uids.clone(),
            gids => gids,
        };
        let inbound = match flags.inbound_ports.trim() {
            "*" => InboundPorts::All {
                except: port_list("inbound-exclude-ports", &flags.inbound_exclude_ports)?,
            },
            "" => InboundPorts::Disabled,
            list => InboundPorts::Only(port_list("inbound-ports", list)?),
        };
        let outbound_ranges = match flags.outbound_ip_ranges.trim() {
            "*" => OutboundRanges::All,
            "" => OutboundRanges::Disabled,
            list => OutboundRanges::Only(cidr_list("outbound-ip-ranges", list)?),
        };
        let exclude_interfaces: Vec<String> =
            items(&flags.exclude_interfaces).map(str::to_owned).collect();
        for name in &exclude_interfaces {
            let ok = name.len() <= 15
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@:+".contains(&b));
            if !ok {
                return Err(err("exclude-interfaces", name, "not an interface name"));
            }
        }
        let ipv6 = match flags.ipv6.as_str() {
            "auto" => Ipv6Mode::Auto,
            "on" | "true" => Ipv6Mode::On,
            "off" | "false" => Ipv6Mode::Off,
            other => return Err(err("ipv6", other, "must be auto, on or off")),
        };
        let backend = match flags.iptables_backend.as_str() {
            "auto" => Backend::Auto,
            "nft" => Backend::Nft,
            "legacy" => Backend::Legacy,
            other => return Err(err("iptables-backend", other, "must be auto, nft or legacy")),
        };
        if let Some(ns) = &flags.network_namespace
            && (ns.is_empty() || ns.contains('/') || ns.starts_with('.'))
        {
            return Err(err("network-namespace", ns, "not a network namespace name"));
        }
        Ok(Self {
            proxy_port: nonzero("proxy-port", flags.proxy_port)?,
            inbound_capture_port: nonzero("inbound-capture-port", flags.inbound_capture_port)?,
            tunnel_port: nonzero("inbound-tunnel-port", flags.inbound_tunnel_port)?,
            proxy_uids,
            proxy_gids,
            inbound,
            outbound_ranges,
            outbound_exclude_ranges: cidr_list(
                "outbound-exclude-ip-ranges",
                &flags.outbound_exclude_ip_ranges,
            )?,
            outbound_ports: port_list("outbound-ports", &flags.outbound_ports)?,
            outbound_exclude_ports: port_list(
                "outbound-exclude-ports",
                &flags.outbound_exclude_ports,
            )?,
            exclude_interfaces,
            dns_port: if flags.redirect_dns {
                Some(nonzero("dns-port", flags.dns_port)?)
            } else {
                None
            },
            ipv6,
            backend,
        })
    }

    /// Whether any configured block is IPv6 (a reason to write IPv6 rules in `auto` mode).
    pub fn mentions_ipv6(&self) -> bool {
        let only = match &self.outbound_ranges {
            OutboundRanges::Only(ranges) => ranges.as_slice(),
            _ => &[],
        };
        only.iter().chain(&self.outbound_exclude_ranges).any(Cidr::is_ipv6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["mesh-init"];
        all.extend_from_slice(args);
        Config::from_flags(&Flags::try_parse_from(all).unwrap())
    }

    #[test]
    fn defaults_match_istio() {
        let config = Config::default();
        assert_eq!(
            (config.proxy_port, config.inbound_capture_port, config.tunnel_port),
            (15001, 15006, 15008)
        );
        assert_eq!(config.proxy_uids, [1337]);
        assert_eq!(config.proxy_gids, [1337]);
        assert_eq!(config.inbound, InboundPorts::All { except: vec![15090, 15021, 15020] });
        assert_eq!(config.outbound_ranges, OutboundRanges::All);
        assert_eq!(config.dns_port, None);
    }

    #[test]
    fn errors_name_flag_and_value() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["-i", "10.0.0.0/33"],
                "invalid --outbound-ip-ranges value \"10.0.0.0/33\": prefix length \"33\" must be 0 to 32",
            ),
            (
                &["-x", "10.0.0.0/8,nope"],
                "invalid --outbound-exclude-ip-ranges value \"nope\": \"nope\" is not an IPv4 or IPv6 address",
            ),
            (&["-b", "80,http"], "invalid --inbound-ports value \"http\": not a port number"),
            (
                &["-o", "70000"],
                "invalid --outbound-exclude-ports value \"70000\": port is out of range: must be 1 to 65535",
            ),
            (
                &["-p", "0"],
                "invalid --proxy-port value \"0\": port is out of range: must be 1 to 65535",
            ),
            (
                &["-m", "TPROXY"],
                "invalid --inbound-interception-mode value \"TPROXY\": TPROXY is not supported by mesh-init; use REDIRECT",
            ),
            (
                &["-m", "MAGIC"],
                "invalid --inbound-interception-mode value \"MAGIC\": unknown mode: use REDIRECT",
            ),
            (
                &["-u", "istio-proxy"],
                "invalid --proxy-uid value \"istio-proxy\": not a numeric user or group id",
            ),
            (
                &["-c", "eth0/1"],
                "invalid --exclude-interfaces value \"eth0/1\": not an interface name",
            ),
            (&["--ipv6", "maybe"], "invalid --ipv6 value \"maybe\": must be auto, on or off"),
        ];
        for (args, expected) in cases {
            assert_eq!(parse(args).unwrap_err().to_string(), *expected, "{args:?}");
        }
    }

    #[test]
    fn empty_lists_disable_capture() {
        let config = parse(&["-b", "", "-i", ""]).unwrap();
        assert_eq!(config.inbound, InboundPorts::Disabled);
        assert_eq!(config.outbound_ranges, OutboundRanges::Disabled);
    }

    #[test]
    fn gids_default_to_uids() {
        let config = parse(&["-u", "1337,1338"]).unwrap();
        assert_eq!(config.proxy_gids, [1337, 1338]);
        let config = parse(&["-u", "1337", "-g", "2000"]).unwrap();
        assert_eq!(config.proxy_gids, [2000]);
    }
}
