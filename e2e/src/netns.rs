//! Network namespaces for tests: a "pod" joined to a "peer" (standing for the rest of the
//! cluster) by a veth pair, sockets bound inside them, commands run inside them.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether this machine can run namespaced tests (root, `ip`, `iptables-restore`, `setpriv`
/// and `extra_tools`). Outside CI it says loudly that it cannot and returns false; under
/// `CI=true` it panics, so a test that cannot run fails instead of passing silently.
pub fn can_run(extra_tools: &[&str]) -> bool {
    mesh_testing::require::namespaces("namespaced test", extra_tools)
}

/// Runs a command and fails loudly when it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A pod namespace and a peer namespace joined by a veth pair (pod 10.99.0.2, peer 10.99.0.1),
/// with the peer as the pod's default route. Deleted on drop.
pub struct PodAndPeer {
    /// The pod's namespace name.
    pub pod: String,
    /// The peer's namespace name.
    pub peer: String,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// The peer's address.
    pub peer_ip: Ipv4Addr,
}

impl PodAndPeer {
    /// Creates both namespaces and the link.
    pub fn new(prefix: &str) -> Self {
        let id =
            format!("{}{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed));
        let this = Self {
            pod: format!("{prefix}p{id}"),
            peer: format!("{prefix}q{id}"),
            pod_ip: Ipv4Addr::new(10, 99, 0, 2),
            peer_ip: Ipv4Addr::new(10, 99, 0, 1),
        };
        let (a, b) = (format!("{prefix}a{id}"), format!("{prefix}b{id}"));
        run(&["ip", "netns", "add", &this.pod]);
        run(&["ip", "netns", "add", &this.peer]);
        run(&[
            "ip", "link", "add", &a, "netns", &this.pod, "type", "veth", "peer", "name", &b,
            "netns", &this.peer,
        ]);
        for (ns, dev, ip) in [(&this.pod, &a, this.pod_ip), (&this.peer, &b, this.peer_ip)] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&["ip", "-n", &this.pod, "route", "add", "default", "via", &this.peer_ip.to_string()]);
        this
    }
}

impl Drop for PodAndPeer {
    fn drop(&mut self) {
        for ns in [&self.pod, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it creates live there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        let file = File::open(format!("/run/netns/{ns}"))
            .unwrap_or_else(|e| panic!("no namespace {ns}: {e}"));
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("cannot enter {ns}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|_| panic!("the thread in namespace failed"))
}

/// A TCP listener bound inside a namespace.
pub fn listen(ns: &str, addr: SocketAddr) -> TcpListener {
    in_netns(ns, move || {
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"))
    })
}

/// A minimal HTTP/1.1 app on `listener` (one thread per connection, one request each): it
/// answers 200 with the body `answer` makes from the request head and the caller's address.
pub fn http_app(
    listener: TcpListener,
    answer: impl Fn(&str, std::net::IpAddr) -> String + Send + Sync + 'static,
) {
    use std::io::{Read, Write};
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let Ok(peer) = stream.peer_addr() else { return };
                let mut buf = [0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let body = answer(&String::from_utf8_lossy(&seen), peer.ip());
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
}
