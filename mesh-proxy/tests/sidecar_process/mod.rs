//! A sidecar as a process of its pod's network namespace, for the namespaced tests that run the
//! real binary (as uid 1337, captured by mesh-init's rules): starting it, asking its own ports,
//! reading its logs and access log. Killed when dropped.

#![allow(dead_code)] // Each test crate uses a part.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use e2e::netns;
use e2e::sidecar;

use crate::relay::Relay;

/// A plain HTTP/1.1 request from inside `ns` (as root: captured by its sidecar when it goes
/// out, answered by the sidecar's own ports on loopback): the status and the body (status 0
/// when nothing answered).
pub fn request(ns: &str, to: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (to, path) = (to.to_owned(), path.to_owned());
    let headers: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    netns::in_netns(ns, move || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(&to) else { return (0, String::new()) };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let host = to.split(':').next().unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
    })
}

/// A sidecar process in a pod namespace, as uid 1337.
pub struct Sidecar {
    /// The process (`ip netns exec` running the proxy as uid 1337).
    pub child: Child,
    ns: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How a test starts a sidecar beyond its pod's identity.
pub struct Options<'a> {
    /// The mesh's root certificate file.
    pub root: &'a Path,
    /// `--drain-duration`.
    pub drain: &'a str,
    /// Extra environment (`RUST_LOG` is `info` unless given here).
    pub env: &'a [(&'a str, &'a str)],
}

impl Sidecar {
    /// Starts the sidecar of pod `pod` (address `ip`, service account `sa`, namespace `demo`)
    /// inside `ns`, with its token (`t-<sa>`, as the test CA's tokens file names it), labels
    /// and output files in `dir`.
    pub fn start(ns: &str, dir: &Path, pod: &str, ip: &str, sa: &str, options: &Options) -> Self {
        let (token, labels) = (dir.join(format!("{sa}.token")), dir.join(format!("{sa}.labels")));
        std::fs::write(&token, format!("t-{sa}")).unwrap();
        std::fs::write(&labels, format!("app=\"{sa}\"\nversion=\"v1\"\n")).unwrap();
        let (stdout, stderr) = (dir.join(format!("{sa}.out")), dir.join(format!("{sa}.err")));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "setpriv", "--reuid=1337", "--regid=1337"])
            .arg("--clear-groups")
            .arg(env!("CARGO_BIN_EXE_mesh-proxy"))
            .args(["--pilot-address", &format!("http://{}", sidecar::XDS)])
            .args(["--ca-address", sidecar::CA, "--ca-server-name", sidecar::CA_NAME])
            .arg("--root-cert")
            .arg(options.root)
            .arg("--token-path")
            .arg(&token)
            .arg("--labels-file")
            .arg(&labels)
            .args(["--pod-name", pod, "--pod-namespace", "demo", "--service-account", sa])
            .args(["--pod-ip", ip, "--access-log", "json", "--drain-duration", options.drain])
            .env("RUST_LOG", "info")
            .envs(options.env.iter().copied())
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .unwrap();
        Self { child, ns: ns.to_owned(), stdout, stderr }
    }

    /// Whether its readiness port says it is ready.
    pub fn ready(&mut self) -> bool {
        request(&self.ns, "127.0.0.1:15021", "/healthz/ready", &[]).0 == 200
    }

    /// What it printed, for a failure's report.
    pub fn logs(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Its access log so far (JSON lines of its stdout).
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The value of an unlabelled metric of its `/stats/prometheus`.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let (_, stats) = request(&self.ns, "127.0.0.1:15090", "/stats/prometheus", &[]);
        let line = stats.lines().find(|l| l.split(' ').next() == Some(name))?;
        line.rsplit(' ').next()?.parse().ok()
    }
}

/// Serves the pilot's ADS on loopback of the test's own namespace (where a relay reaches it);
/// its URL.
pub async fn serve_pilot_here(discovery: &Arc<mesh_pilot::ads::Discovery>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(discovery.service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    url
}

/// Serves `relay` inside `ns` where the sidecar looks for the pilot.
pub fn serve_relay(ns: &str, relay: Relay) {
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
    let listener = netns::listen(ns, sidecar::XDS.parse().unwrap());
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(relay))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
