//! Listeners for tests: bound to port 0 on loopback and handed to the component, so the port
//! is known and held from the start (asking for a "free port" and binding it later races with
//! every other test).

use std::net::{SocketAddr, TcpListener};

/// A listener on `127.0.0.1` with a port the system chose, and its address.
pub fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    (listener, address)
}

/// The same, for tokio (call inside a runtime).
pub fn tokio_listener() -> (tokio::net::TcpListener, SocketAddr) {
    let (listener, address) = listener();
    listener.set_nonblocking(true).unwrap();
    (tokio::net::TcpListener::from_std(listener).unwrap(), address)
}

/// A port that was free a moment ago, for a peer that cannot be handed a listener (Envoy, a
/// Python client, a binary started as a process). Another process may take it meanwhile:
/// prefer [`listener`] wherever the component is in-process.
///
/// Taken below the kernel's ephemeral range, where no outgoing connection and no listener on
/// port 0 ever lands (a port from that range, released, was soon some connection's own and
/// the peer's bind failed), each at most once per process, from a start the process id
/// spreads so test processes running at once take different ones.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Above the mesh's own fixed ports (15000-15090, 8060, 9080...).
    const LOWEST: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral <= LOWEST + 1_000 {
        return listener().1.port();
    }
    let span = ephemeral - LOWEST;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(LOWEST + (start + n) % span) else { continue };
        let free = |ip: [u8; 4]| TcpListener::bind(SocketAddr::from((ip, port))).is_ok();
        if free([0, 0, 0, 0]) && free([127, 0, 0, 1]) {
            return port;
        }
    }
    listener().1.port()
}
