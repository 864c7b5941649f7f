//! The local mesh's network, made with iproute2 and iptables: namespaces, the bridge in the hub
//! namespace, a veth per pod, routes to the VIP range and the hub's VIP rules. Nothing is made
//! in the host's own namespace: deleting the mesh's namespaces removes every link and rule.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::LocalError;
use super::plan::{self, BRIDGE, GATEWAY, POD_INTERFACE, POD_NETWORK, VIP_NETWORK};

/// Runs a command, returning its output or an error that names it and what it printed.
pub fn run(args: &[&str]) -> Result<String, LocalError> {
    run_with_input(args, None)
}

/// The same, with `input` on its standard input.
pub fn run_with_input(args: &[&str], input: Option<&str>) -> Result<String, LocalError> {
    let command = args.join(" ");
    let (program, rest) = args.split_first().ok_or_else(|| LocalError::Command {
        command: String::new(),
        reason: "empty command".into(),
    })?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LocalError::Command { command: command.clone(), reason: e.to_string() })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| LocalError::Command { command: command.clone(), reason: e.to_string() })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LocalError::Command { command: command.clone(), reason: e.to_string() })?;
    if !out.status.success() {
        return Err(LocalError::Command {
            command,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether network namespace `ns` exists.
pub fn namespace_exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

/// Creates network namespace `ns` with its loopback up.
pub fn add_namespace(ns: &str) -> Result<(), LocalError> {
    run(&["ip", "netns", "add", ns])?;
    run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// The pids of the processes in namespace `ns`.
pub fn namespace_pids(ns: &str) -> Vec<i32> {
    run(&["ip", "netns", "pids", ns])
        .map(|out| out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Deletes namespace `ns` (and so its links and rules) if it exists.
pub fn delete_namespace(ns: &str) -> Result<(), LocalError> {
    if !namespace_exists(ns) {
        return Ok(());
    }
    run(&["ip", "netns", "del", ns]).map(drop)
}

/// Makes the hub: the bridge with the pods' gateway address, forwarding on, no VIP rules yet.
pub fn make_hub(hub: &str) -> Result<(), LocalError> {
    run(&["ip", "-n", hub, "link", "add", BRIDGE, "type", "bridge"])?;
    let gateway = format!("{GATEWAY}/{}", POD_NETWORK.1);
    run(&["ip", "-n", hub, "addr", "add", &gateway, "dev", BRIDGE])?;
    run(&["ip", "-n", hub, "link", "set", BRIDGE, "up"])?;
    // Forwarding is a setting of each namespace; this one routes pods to VIPs, nothing else.
    run(&["ip", "netns", "exec", hub, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
    Ok(())
}

/// Plugs namespace `ns` into the hub's bridge with veth number `veth`, giving it `addresses`
/// (the first is its own) and a route to the VIP range through the hub.
pub fn attach(hub: &str, ns: &str, veth: u32, addresses: &[Ipv4Addr]) -> Result<(), LocalError> {
    let outside = plan::hub_veth(veth);
    run(&[
        "ip",
        "link",
        "add",
        POD_INTERFACE,
        "netns",
        ns,
        "type",
        "veth",
        "peer",
        "name",
        &outside,
        "netns",
        hub,
    ])?;
    run(&["ip", "-n", hub, "link", "set", &outside, "master", BRIDGE])?;
    run(&["ip", "-n", hub, "link", "set", &outside, "up"])?;
    for address in addresses {
        let address = format!("{address}/{}", POD_NETWORK.1);
        run(&["ip", "-n", ns, "addr", "add", &address, "dev", POD_INTERFACE])?;
    }
    run(&["ip", "-n", ns, "link", "set", POD_INTERFACE, "up"])?;
    let vips = plan::cidr(VIP_NETWORK);
    run(&["ip", "-n", ns, "route", "add", &vips, "via", &GATEWAY.to_string()])?;
    Ok(())
}

/// Replaces the hub's NAT table with `rules` (from [`plan::vip_rules`]).
pub fn set_vip_rules(hub: &str, rules: &str) -> Result<(), LocalError> {
    run_with_input(&["ip", "netns", "exec", hub, "iptables-restore"], Some(rules)).map(drop)
}

/// The hosts file `ip netns exec` puts in place of `/etc/hosts` for the processes of `ns`.
pub fn hosts_path(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns).join("hosts")
}

/// Writes a pod's hosts file in place: the file is bind-mounted into running processes, and a
/// new file (a rename) would not reach them.
pub fn write_hosts(ns: &str, text: &str) -> Result<(), LocalError> {
    let path = hosts_path(ns);
    let io = |e| LocalError::Io(format!("cannot write {}", path.display()), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}
