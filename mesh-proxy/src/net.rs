//! Sockets: where a redirected connection was going (`SO_ORIGINAL_DST`), connecting to an
//! upstream from a chosen source address, and what the first bytes of a connection say about
//! its protocol, read without consuming them.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Where a connection redirected by iptables (`REDIRECT`) was originally going.
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    let original = if stream.local_addr()?.is_ipv4() {
        socket.original_dst_v4()?
    } else {
        socket.original_dst_v6()?
    };
    original.as_socket().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "the original destination is not an IP address")
    })
}

/// Connects to `target` (from `bind`, when set), within `timeout`, with Nagle off.
pub async fn connect(
    target: SocketAddr,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(source) = bind.filter(|b| b.is_ipv4() == target.is_ipv4()) {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(target)).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("connect to {target} timed out"))
    })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What the first bytes of a plaintext connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP/1.x request line: a known method and a space (`GET `).
    Http1,
    /// The HTTP/2 connection preface (prior knowledge).
    Http2,
    /// A TLS handshake record (first byte 0x16).
    Tls,
    /// Anything else, or nothing within the detection timeout.
    Opaque,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Classifies the bytes seen so far; `None` while they could still be more than one thing.
pub fn classify(bytes: &[u8]) -> Option<Sniffed> {
    if bytes.is_empty() {
        return None;
    }
    if bytes[0] == 0x16 {
        return Some(Sniffed::Tls);
    }
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Sniffed::Http2);
    }
    let mut undecided = false;
    for method in METHODS {
        let n = bytes.len().min(method.len());
        if bytes[..n] == method[..n] {
            if n == method.len() {
                return Some(Sniffed::Http1);
            }
            undecided = true;
        }
    }
    if undecided { None } else { Some(Sniffed::Opaque) }
}

/// When protocol detection gives up on a client that has not spoken: `timeout` from now, or,
/// for zero, never (Istio's default since 1.12: a detection timeout sends slow clients of HTTP
/// ports around routing and policy, as opaque TCP).
pub fn detection_deadline(timeout: Duration) -> tokio::time::Instant {
    const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
    tokio::time::Instant::now() + if timeout.is_zero() { NEVER } else { timeout }
}

/// Peeks at a connection until its protocol is known or `timeout` passes (then it is
/// [`Sniffed::Opaque`]; zero waits for as long as the client takes). Nothing is consumed.
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> io::Result<Sniffed> {
    let mut buf = [0u8; 32];
    let deadline = detection_deadline(timeout);
    let mut seen = 0;
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        let n = match peeked {
            Err(_) => return Ok(Sniffed::Opaque),
            Ok(result) => result?,
        };
        if n == 0 {
            return Ok(Sniffed::Opaque);
        }
        if let Some(kind) = classify(&buf[..n]) {
            return Ok(kind);
        }
        if n == seen {
            // Peek returns what is queued without waiting for more: wait a little.
            if tokio::time::Instant::now() >= deadline {
                return Ok(Sniffed::Opaque);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen = n;
    }
}

/// SNI and ALPN of a TLS ClientHello.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The SNI host name, if the client sent one.
    pub server_name: Option<String>,
    /// ALPN protocol ids the client offers, in its order; empty when it offers none.
    pub alpn: Vec<String>,
}

/// Most bytes of a ClientHello waited for (a few records; post-quantum key shares are large).
const MAX_HELLO: usize = 16 * 1024;

/// Reads a TLS ClientHello without consuming it, so that the connection can still be
/// terminated here or passed through untouched. `None` if it is not a well-formed
/// ClientHello within `timeout`.
pub async fn peek_client_hello(stream: &TcpStream, timeout: Duration) -> Option<ClientHello> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_HELLO];
    let mut seen = 0;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        if n != seen {
            let mut acceptor = rustls::server::Acceptor::default();
            let mut bytes = &buf[..n];
            while !bytes.is_empty() {
                if acceptor.read_tls(&mut bytes).is_err() {
                    return None;
                }
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let hello = accepted.client_hello();
                    return Some(ClientHello {
                        server_name: hello.server_name().map(str::to_owned),
                        alpn: hello
                            .alpn()
                            .map(|protocols| {
                                protocols.map(|p| String::from_utf8_lossy(p).into_owned()).collect()
                            })
                            .unwrap_or_default(),
                    });
                }
                Ok(None) if n < MAX_HELLO => {}
                _ => return None,
            }
        } else if tokio::time::Instant::now() >= deadline {
            return None;
        }
        seen = n;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// A connection whose client waits `quiet` before sending an HTTP/1.1 request head.
    async fn slow_client(quiet: Duration) -> TcpStream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut client = TcpStream::connect(address).await.unwrap();
            tokio::time::sleep(quiet).await;
            client.write_all(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        listener.accept().await.unwrap().0
    }

    #[tokio::test]
    async fn a_slow_http_client_is_still_http_unless_a_timeout_is_set() {
        // No timeout (the default): a client busy for a while is still routed as HTTP, never
        // passed around routing and policy as opaque TCP.
        let stream = slow_client(Duration::from_millis(300)).await;
        assert_eq!(sniff(&stream, Duration::ZERO).await.unwrap(), Sniffed::Http1);
        // With a timeout, what has not spoken by then is opaque.
        let stream = slow_client(Duration::from_millis(300)).await;
        assert_eq!(sniff(&stream, Duration::from_millis(50)).await.unwrap(), Sniffed::Opaque);
    }
}
