//! Looks into the mesh from the host: an HTTP GET made from inside a pod's (or the control
//! plane's) network namespace, where readiness and admin ports listen on addresses the host
//! cannot reach.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// The largest answer read (metrics of a busy proxy fit; a runaway one is cut).
const MAX_BODY: u64 = 16 << 20;

/// Whether a TCP connection to `address` opens from inside namespace `ns`.
pub fn connect(ns: &str, address: SocketAddr, timeout: Duration) -> Result<(), String> {
    in_namespace(ns, move || {
        TcpStream::connect_timeout(&address, timeout)
            .map(drop)
            .map_err(|e| format!("{address}: {e}"))
    })
}

/// Runs `f` on a thread that entered network namespace `ns` (entering one changes the calling
/// thread only).
fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| "the probe thread failed".to_owned())?
}

/// Moves the calling thread into network namespace `ns` (sockets it makes then live there,
/// and keep working from any thread).
pub fn enter(ns: &str) -> Result<(), String> {
    let file =
        File::open(format!("/run/netns/{ns}")).map_err(|e| format!("namespace {ns}: {e}"))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("cannot enter {ns}: {e}"))
}

/// `GET path` on `address` from inside namespace `ns`: the status and body, or why not.
pub fn get(
    ns: &str,
    address: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let path = path.to_owned();
    in_namespace(ns, move || {
        let mut stream =
            TcpStream::connect_timeout(&address, timeout).map_err(|e| format!("{address}: {e}"))?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: meshctl\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("{address}: {e}"))?;
        let mut out = Vec::new();
        stream.take(MAX_BODY).read_to_end(&mut out).map_err(|e| format!("{address}: {e}"))?;
        let text = String::from_utf8_lossy(&out);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{address}: not an HTTP answer"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, body))
    })
}
