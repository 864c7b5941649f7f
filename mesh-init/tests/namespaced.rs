//! mesh-init in real network namespaces, proven with real sockets rather than by reading rules
//! back. Each test builds a "pod" namespace and a "peer" namespace joined by a veth pair, runs
//! the mesh-init binary against the pod, and connects as different users (through `setpriv`
//! and a tiny Python client) to see where connections land.
//!
//! Needs root, iproute2, iptables, util-linux (`setpriv`) and python3. Outside CI a test that
//! cannot run says so loudly and passes; under `CI=true` it fails.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, SockRef, Socket, Type};

const APP_UID: u32 = 1000;
const PROXY_UID: u32 = 1337;
const PYTHON: &str = "/usr/bin/python3";
const CLIENT: &str = r#"
import socket, sys
dst, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(3)
if len(sys.argv) > 4:
    s.bind((sys.argv[4], 0))
s.connect((dst, port))
s.sendall(token.encode())
s.close()
"#;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether this machine can run the test; under CI=true it must.
fn can_run() -> bool {
    mesh_testing::require::namespaces("namespaced mesh-init test", &[PYTHON])
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A pod namespace and a peer namespace joined by a veth pair, deleted on drop.
struct Pod {
    ns: String,
    peer_ns: String,
    ip: Ipv4Addr,
    peer_ip: Ipv4Addr,
    ip6: Ipv6Addr,
    peer_ip6: Ipv6Addr,
}

impl Pod {
    fn new() -> Self {
        let id =
            format!("{}{}", std::process::id() % 1_000_000, NEXT.fetch_add(1, Ordering::Relaxed));
        let pod = Pod {
            ns: format!("mip{id}"),
            peer_ns: format!("miq{id}"),
            ip: Ipv4Addr::new(10, 99, 0, 2),
            peer_ip: Ipv4Addr::new(10, 99, 0, 1),
            ip6: "fd00:99::2".parse().unwrap(),
            peer_ip6: "fd00:99::1".parse().unwrap(),
        };
        let (veth, peer_veth) = (format!("vp{id}"), format!("vq{id}"));
        run(&["ip", "netns", "add", &pod.ns]);
        run(&["ip", "netns", "add", &pod.peer_ns]);
        run(&[
            "ip",
            "link",
            "add",
            &veth,
            "netns",
            &pod.ns,
            "type",
            "veth",
            "peer",
            "name",
            &peer_veth,
            "netns",
            &pod.peer_ns,
        ]);
        for (ns, dev, ip, ip6) in [
            (&pod.ns, &veth, pod.ip, pod.ip6),
            (&pod.peer_ns, &peer_veth, pod.peer_ip, pod.peer_ip6),
        ] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev]);
            run(&["ip", "-n", ns, "-6", "addr", "add", &format!("{ip6}/64"), "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // Arbitrary destinations leave the pod through the peer, as through a node.
        run(&["ip", "-n", &pod.ns, "route", "add", "default", "via", &pod.peer_ip.to_string()]);
        pod
    }

    /// Runs mesh-init against the pod; returns its output, whatever the exit status.
    fn mesh_init(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mesh-init"))
            .args(["--network-namespace", &self.ns])
            .args(args)
            .output()
            .unwrap()
    }

    fn install(&self, args: &[&str]) {
        let out = self.mesh_init(args);
        assert!(
            out.status.success(),
            "mesh-init {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A listener inside a namespace (bound by a thread that entered it).
    fn listen(ns: &str, addr: SocketAddr) -> TcpListener {
        let ns = ns.to_owned();
        std::thread::spawn(move || {
            let file = File::open(format!("/run/netns/{ns}")).unwrap();
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
            if addr.is_ipv6() {
                socket.set_only_v6(true).unwrap();
            }
            socket.set_reuse_address(true).unwrap();
            socket.bind(&addr.into()).unwrap();
            socket.listen(16).unwrap();
            let listener: TcpListener = socket.into();
            listener.set_nonblocking(true).unwrap();
            listener
        })
        .join()
        .unwrap()
    }

    /// Connects from a namespace as a user (root when `None`), optionally from a source
    /// address, and sends `token`. Returns whether the connection was made.
    fn connect(
        ns: &str,
        uid: Option<u32>,
        dst: SocketAddr,
        src: Option<IpAddr>,
        token: &str,
    ) -> bool {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]);
        if let Some(uid) = uid {
            command.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ]);
        }
        command.args([PYTHON, "-c", CLIENT, &dst.ip().to_string(), &dst.port().to_string(), token]);
        if let Some(src) = src {
            command.arg(src.to_string());
        }
        command.status().unwrap().success()
    }

    fn nat_rules(&self, tool: &str) -> Vec<String> {
        let out = run(&["ip", "netns", "exec", &self.ns, tool, "-t", "nat"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A ") || l.starts_with(':'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_owned())
            .collect()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Deleting the namespaces deletes the veth pair and every rule in them.
        for ns in [&self.ns, &self.peer_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A connection accepted within a short wait (the client has already connected or failed),
/// with the token it sent and the original destination when the listener is a capture port.
struct Arrival {
    token: String,
    peer: SocketAddr,
    original_dst: Option<SocketAddr>,
}

fn arrival(listener: &TcpListener) -> Option<Arrival> {
    let deadline = Instant::now() + Duration::from_millis(500);
    let (mut stream, peer): (TcpStream, SocketAddr) = loop {
        match listener.accept() {
            Ok(accepted) => break accepted,
            Err(err) if err.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => return None,
            Err(err) => panic!("accept failed: {err}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut token = String::new();
    stream.read_to_string(&mut token).unwrap();
    let sock = SockRef::from(&stream);
    let original_dst = if peer.is_ipv6() { sock.original_dst_v6() } else { sock.original_dst_v4() }
        .ok()
        .and_then(|addr| addr.as_socket());
    Some(Arrival { token, peer, original_dst })
}

fn v4(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn any4(port: u16) -> SocketAddr {
    v4(Ipv4Addr::UNSPECIFIED, port)
}

#[test]
fn outbound_capture_sees_the_original_destination_and_spares_the_proxy() {
    if !can_run() {
        return;
    }
    let pod = Pod::new();
    pod.install(&["--ipv6", "off"]);
    let outbound = Pod::listen(&pod.ns, any4(15001));
    let peer = Pod::listen(&pod.peer_ns, any4(8080));

    // The app dials an arbitrary address: the proxy gets it, with that address as the
    // original destination.
    let arbitrary = v4(Ipv4Addr::new(203, 0, 113, 7), 4242);
    assert!(Pod::connect(&pod.ns, Some(APP_UID), arbitrary, None, "app"), "app connect");
    let got = arrival(&outbound).expect("the app's connection reaches 15001");
    assert_eq!((got.token.as_str(), got.original_dst), ("app", Some(arbitrary)));

    // The app dialling the peer is captured too, and the peer sees nothing.
    let peer_addr = v4(pod.peer_ip, 8080);
    assert!(Pod::connect(&pod.ns, Some(APP_UID), peer_addr, None, "app-to-peer"));
    let got = arrival(&outbound).expect("captured");
    assert_eq!(got.original_dst, Some(peer_addr));
    assert!(arrival(&peer).is_none(), "a captured connection must not reach the peer");

    // The proxy's own connection (uid 1337) goes straight out.
    assert!(Pod::connect(&pod.ns, Some(PROXY_UID), peer_addr, None, "proxy"), "proxy connect");
    let got = arrival(&peer).expect("the proxy's connection reaches the peer directly");
    assert_eq!((got.token.as_str(), got.peer.ip()), ("proxy", IpAddr::V4(pod.ip)));
    assert!(arrival(&outbound).is_none(), "the proxy's own traffic must not be captured");
}

#[test]
fn inbound_capture_keeps_the_port_and_excluded_ports_reach_the_app() {
    if !can_run() {
        return;
    }
    let pod = Pod::new();
    pod.install(&["--ipv6", "off"]);
    let inbound = Pod::listen(&pod.ns, any4(15006));
    let app = Pod::listen(&pod.ns, any4(9080));
    let health = Pod::listen(&pod.ns, any4(15021));

    let app_port = v4(pod.ip, 9080);
    assert!(Pod::connect(&pod.peer_ns, None, app_port, None, "inbound"));
    let got = arrival(&inbound).expect("inbound traffic reaches 15006");
    assert_eq!((got.token.as_str(), got.original_dst), ("inbound", Some(app_port)));
    assert!(arrival(&app).is_none(), "captured inbound traffic must not reach the app directly");

    // 15021 is excluded by default: the health check reaches its listener directly.
    assert!(Pod::connect(&pod.peer_ns, None, v4(pod.ip, 15021), None, "health"));
    assert_eq!(arrival(&health).expect("health port not captured").token, "health");
    assert!(arrival(&inbound).is_none());
}

#[test]
fn proxy_traffic_from_127_0_0_6_is_not_captured_but_its_own_vip_calls_are() {
    if !can_run() {
        return;
    }
    let pod = Pod::new();
    pod.install(&["--ipv6", "off"]);
    let inbound = Pod::listen(&pod.ns, any4(15006));
    let app = Pod::listen(&pod.ns, any4(9080));
    let app_port = v4(pod.ip, 9080);

    // The proxy forwarding to the app from 127.0.0.6: straight to the app.
    let passthrough = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
    assert!(Pod::connect(&pod.ns, Some(PROXY_UID), app_port, Some(passthrough), "forwarded"));
    let got = arrival(&app).expect("traffic from 127.0.0.6 reaches the app");
    assert_eq!((got.token.as_str(), got.peer.ip()), ("forwarded", passthrough));
    assert!(arrival(&inbound).is_none(), "traffic from 127.0.0.6 must not be captured");

    // The proxy calling its own pod's address over lo goes through the inbound path.
    assert!(Pod::connect(&pod.ns, Some(PROXY_UID), app_port, None, "self"));
    let got = arrival(&inbound).expect("the proxy's call to its own pod goes through 15006");
    assert_eq!((got.token.as_str(), got.original_dst), ("self", Some(app_port)));

    // The app calling itself over lo is not mesh traffic.
    assert!(Pod::connect(&pod.ns, Some(APP_UID), app_port, None, "app-self"));
    assert_eq!(arrival(&app).expect("app to itself is direct").token, "app-self");
}

#[test]
fn reapply_is_idempotent_replaces_stale_rules_and_cleanup_restores_direct_traffic() {
    if !can_run() {
        return;
    }
    let pod = Pod::new();
    pod.install(&["--ipv6", "off", "--redirect-dns"]);
    let with_dns = pod.nat_rules("iptables-save");
    assert!(with_dns.iter().any(|r| r.contains("--dport 53")), "{with_dns:#?}");

    pod.install(&["--ipv6", "off"]);
    let first = pod.nat_rules("iptables-save");
    assert!(!first.iter().any(|r| r.contains("--dport 53")), "stale DNS rules remain: {first:#?}");
    pod.install(&["--ipv6", "off"]);
    assert_eq!(pod.nat_rules("iptables-save"), first, "a second apply changed the rules");
    let jumps = first
        .iter()
        .filter(|r| r.starts_with("-A OUTPUT") || r.starts_with("-A PREROUTING"))
        .count();
    assert_eq!(jumps, 2, "one jump per built-in chain: {first:#?}");

    // Someone else's rule survives our cleanup.
    run(&["ip", "netns", "exec", &pod.ns, "iptables", "-t", "nat", "-N", "THEIRS"]);
    run(&[
        "ip", "netns", "exec", &pod.ns, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j",
        "THEIRS",
    ]);
    let out = pod.mesh_init(&["--cleanup"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = pod.nat_rules("iptables-save");
    assert!(!after.iter().any(|r| r.contains("MESH_")), "{after:#?}");
    assert!(after.iter().any(|r| r == "-A OUTPUT -p udp -j THEIRS"), "{after:#?}");

    // And traffic flows directly again.
    let outbound = Pod::listen(&pod.ns, any4(15001));
    let peer = Pod::listen(&pod.peer_ns, any4(8080));
    assert!(Pod::connect(&pod.ns, Some(APP_UID), v4(pod.peer_ip, 8080), None, "direct"));
    assert_eq!(arrival(&peer).expect("direct after cleanup").token, "direct");
    assert!(arrival(&outbound).is_none());
}

#[test]
fn ipv6_rules_are_applied_when_the_pod_has_an_ipv6_address() {
    if !can_run() {
        return;
    }
    let pod = Pod::new();
    pod.install(&[]); // --ipv6 auto: the pod has fd00:99::2
    let v6_rules = pod.nat_rules("ip6tables-save");
    assert!(v6_rules.iter().any(|r| r.contains("::6/128")), "{v6_rules:#?}");

    let outbound = Pod::listen(&pod.ns, SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 15001));
    let dst = SocketAddr::new(IpAddr::V6(pod.peer_ip6), 8080);
    assert!(Pod::connect(&pod.ns, Some(APP_UID), dst, None, "v6"));
    let got = arrival(&outbound).expect("IPv6 traffic reaches 15001");
    assert_eq!((got.token.as_str(), got.original_dst), ("v6", Some(dst)));
}

#[test]
fn failures_name_what_failed() {
    if !can_run() {
        return;
    }
    let pod = Pod::new();
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-init"))
        .args(["--network-namespace", "mesh-init-no-such-namespace"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("network namespace mesh-init-no-such-namespace"), "{stderr}");
    assert!(stderr.contains("check `ip netns list`"), "{stderr}");

    // All or none: when the IPv6 rules fail after the IPv4 ones went in, the IPv4 ones are
    // taken out again. A stand-in ip6tables-restore that always fails plays the broken kernel.
    let fake = std::env::temp_dir().join(format!("mesh-init-fake-{}", std::process::id()));
    std::fs::create_dir_all(&fake).unwrap();
    let script = fake.join("ip6tables-restore");
    std::fs::write(&script, "#!/bin/sh\necho 'ip6tables-restore: line 2 failed' >&2\nexit 1\n")
        .unwrap();
    run(&["chmod", "+x", script.to_str().unwrap()]);
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-init"))
        .env("PATH", path)
        .args(["--network-namespace", &pod.ns, "--ipv6", "on", "--iptables-backend", "auto"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "ip6tables-restore --noflush failed (exit 1): ip6tables-restore: line 2 failed"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("were removed again"), "{stderr}");
    let v4 = pod.nat_rules("iptables-save");
    assert!(!v4.iter().any(|r| r.contains("MESH_")), "IPv4 rules left behind: {v4:#?}");
}

#[test]
fn dns_to_a_local_resolver_is_captured_when_asked() {
    if !can_run() {
        return;
    }
    let pod = Pod::new();
    pod.install(&["--ipv6", "off", "--redirect-dns"]);
    let dns = Pod::listen(&pod.ns, any4(15053));
    let resolver = Pod::listen(&pod.ns, v4(Ipv4Addr::new(127, 0, 0, 53), 53));
    // The app asking a resolver on loopback (as systemd-resolved or Docker set it up) reaches
    // the proxy's DNS port; the proxy asking the same resolver reaches it.
    let stub = v4(Ipv4Addr::new(127, 0, 0, 53), 53);
    assert!(Pod::connect(&pod.ns, Some(APP_UID), stub, None, "app-dns"));
    assert_eq!(arrival(&dns).expect("app DNS captured").token, "app-dns");
    assert!(Pod::connect(&pod.ns, Some(PROXY_UID), stub, None, "proxy-dns"));
    assert_eq!(arrival(&resolver).expect("proxy DNS goes out").token, "proxy-dns");
    assert!(arrival(&dns).is_none());
}
