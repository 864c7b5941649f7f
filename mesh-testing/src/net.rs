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
pub fn free_port() -> u16 {
    listener().1.port()
}
