//! What crosses a pod's network interface, recorded as `tcpdump -i eth0` inside the pod would:
//! the demo and the tests show from it that sidecars speak TLS to each other.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::local::enter;

/// A TCP segment with payload, as seen on a pod's interface.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Source address and port.
    pub from: SocketAddr,
    /// Destination address and port.
    pub to: SocketAddr,
    /// The bytes it carried.
    pub payload: Vec<u8>,
}

impl Segment {
    /// Whether it starts a TLS record (content type 20 to 23, version 3.x).
    pub fn is_tls_record(&self) -> bool {
        matches!(self.payload.as_slice(), [20..=23, 3, 0..=4, ..])
    }

    /// Whether it carries HTTP/1 in clear text (a request line or a status line).
    pub fn has_clear_http(&self) -> bool {
        self.payload.windows(5).any(|w| w == b"GET /" || w == b"HTTP/")
    }
}

/// Records what crosses a pod's network interface on a TCP port, between pods, as `tcpdump -i
/// eth0` run inside the pod would show it: the proof of what travels on the wire.
pub struct Sniffer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<Segment>>>,
}

impl Sniffer {
    /// Starts recording in namespace `ns` the segments to or from `port` whose both ends are
    /// pod addresses (loopback traffic inside the pod is left out). Returns once recording.
    pub fn start(ns: &str, port: u16) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (ready, started) = std::sync::mpsc::channel();
        let name = ns.to_owned();
        let (ns, flag) = (ns.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || -> anyhow::Result<Vec<Segment>> {
            let opened = enter(&ns).and_then(|()| {
                // ETH_P_ALL in network byte order: every protocol, both directions.
                let all = socket2::Protocol::from(i32::from(0x0003u16.to_be()));
                let socket =
                    socket2::Socket::new(socket2::Domain::PACKET, socket2::Type::RAW, Some(all))
                        .context("a packet socket")?;
                socket.set_read_timeout(Some(Duration::from_millis(50)))?;
                Ok(socket)
            });
            let _ = ready.send(opened.as_ref().err().map(|e| format!("{e:#}")));
            let socket = opened?;
            let mut segments = Vec::new();
            let mut frame = vec![0u8; 65_536];
            while !flag.load(Ordering::Relaxed) {
                let n = match (&socket).read(&mut frame) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                if let Some(segment) = tcp_segment(&frame[..n]).filter(|s| {
                    (s.from.port() == port || s.to.port() == port)
                        && in_pod_network(s.from)
                        && in_pod_network(s.to)
                }) {
                    segments.push(segment);
                }
            }
            Ok(segments)
        });
        match started.recv() {
            Ok(None) => Ok(Self { stop, thread }),
            Ok(Some(error)) => bail!("cannot record in {name}: {error}"),
            Err(_) => bail!("the recording thread ended"),
        }
    }

    /// Stops recording; what was seen.
    pub fn finish(self) -> anyhow::Result<Vec<Segment>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow::anyhow!("the recording thread panicked"))?
    }
}

fn in_pod_network(address: SocketAddr) -> bool {
    matches!(address.ip(), std::net::IpAddr::V4(ip) if ip.octets()[..2] == [10, 77])
}

/// The TCP segment in an Ethernet frame carrying IPv4, if it has a payload.
fn tcp_segment(frame: &[u8]) -> Option<Segment> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let header = usize::from(ip.first()? & 0x0f) * 4;
    if *ip.get(9)? != 6 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let source = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let destination = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let tcp = ip.get(header..total.min(ip.len()))?;
    let ports = (
        u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]),
        u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]),
    );
    let offset = usize::from(tcp.get(12)? >> 4) * 4;
    let payload = tcp.get(offset..)?.to_vec();
    if payload.is_empty() {
        return None;
    }
    Some(Segment {
        from: SocketAddr::from((source, ports.0)),
        to: SocketAddr::from((destination, ports.1)),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payload: &[u8]) -> Segment {
        let at = SocketAddr::from(([10, 77, 0, 10], 9080));
        Segment { from: at, to: at, payload: payload.to_vec() }
    }

    #[test]
    fn tls_records_are_told_from_clear_http() {
        assert!(segment(&[0x17, 3, 3, 0, 5, 1, 2]).is_tls_record());
        assert!(segment(&[0x16, 3, 1, 0, 5]).is_tls_record());
        assert!(!segment(b"GET /reviews/0 HTTP/1.1").is_tls_record());
        assert!(segment(b"GET /reviews/0 HTTP/1.1").has_clear_http());
        assert!(segment(b"HTTP/1.1 200 OK").has_clear_http());
        assert!(!segment(&[0x17, 3, 3, 0, 5, 1, 2]).has_clear_http());
    }
}
