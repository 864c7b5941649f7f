//! Drives a local mesh (`meshctl local`) the way a person would, for the demo and the
//! end-to-end tests alike: every change goes through the real `meshctl` binary, and traffic is
//! sent from inside a pod, so it passes through that pod's sidecar like the app's own calls.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::bookinfo;

/// Where the mesh's binaries are: next to the running program (a test's binary lives one level
/// down, in `deps`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    if dir.ends_with("deps") { dir.parent().map(Path::to_owned).unwrap_or(dir) } else { dir }
}

/// The binaries a local mesh with the demo apps needs.
pub const BINARIES: [&str; 7] =
    ["meshctl", "mesh-ca", "mesh-pilot", "mesh-proxy", "mesh-init", "mesh-agent", "bookinfo"];

/// The binaries missing from [`bin_dir`].
pub fn missing_binaries() -> Vec<&'static str> {
    let dir = bin_dir();
    BINARIES.into_iter().filter(|b| !dir.join(b).is_file()).collect()
}

/// A local mesh brought up through `meshctl local up`; brought down when dropped.
pub struct Mesh {
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Its name (the prefix of its network namespaces).
    pub name: String,
    /// Its pods' sidecar: `mesh-proxy` or `envoy`.
    pub proxy: String,
    /// Echo each `meshctl` command line before running it (the demo shows what it does).
    pub echo: bool,
    bin_dir: PathBuf,
    down: bool,
}

impl Mesh {
    /// Brings a mesh up with `meshctl local up --name NAME --proxy PROXY`.
    pub fn up(state_dir: &Path, name: &str, proxy: &str, echo: bool) -> anyhow::Result<Self> {
        Self::up_with(state_dir, name, proxy, echo, &[])
    }

    /// The same, with more flags of `meshctl local up` (`--tracing`).
    pub fn up_with(
        state_dir: &Path,
        name: &str,
        proxy: &str,
        echo: bool,
        flags: &[&str],
    ) -> anyhow::Result<Self> {
        let mut mesh = Self {
            state_dir: state_dir.to_owned(),
            name: name.to_owned(),
            proxy: proxy.to_owned(),
            echo,
            bin_dir: bin_dir(),
            down: false,
        };
        let mut args = vec!["up", "--name", name, "--proxy", proxy];
        args.extend_from_slice(flags);
        mesh.meshctl(&args)?;
        Ok(mesh)
    }

    /// Runs `meshctl local ARGS...` against this mesh; its output, or an error with what it
    /// printed.
    pub fn meshctl(&mut self, args: &[&str]) -> anyhow::Result<String> {
        self.meshctl_with_input(args, None)
    }

    /// The same, with `input` on its standard input.
    pub fn meshctl_with_input(
        &mut self,
        args: &[&str],
        input: Option<&str>,
    ) -> anyhow::Result<String> {
        if self.echo {
            println!("  $ meshctl local {}", args.join(" "));
        }
        let mut child = Command::new(self.bin_dir.join("meshctl"))
            .arg("local")
            .args(args)
            .env("MESH_LOCAL_STATE", &self.state_dir)
            .env("MESH_BIN_DIR", &self.bin_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("cannot run meshctl")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.unwrap_or_default().as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "meshctl local {} failed:\n{stdout}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if self.echo {
            for line in stdout.lines() {
                println!("    {line}");
            }
        }
        Ok(stdout)
    }

    /// `meshctl ARGS...`, a command of the top level (`proxy-status`, `analyze`, `version`)
    /// against this mesh: its exit code, standard output and standard error.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let out = self
            .ctl_command(args)
            .stdin(std::process::Stdio::null())
            .output()
            .context("cannot run meshctl")?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// The command line of `meshctl ARGS...` against this mesh, to run as the caller needs.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin_dir.join("meshctl"));
        command
            .args(args)
            .env("MESH_LOCAL_STATE", &self.state_dir)
            .env("MESH_BIN_DIR", &self.bin_dir);
        command
    }

    /// `meshctl local apply -f -` with `yaml`.
    pub fn apply(&mut self, yaml: &str) -> anyhow::Result<String> {
        self.meshctl_with_input(&["apply", "-f", "-"], Some(yaml))
    }

    /// `meshctl local delete -f -` with `yaml` (missing objects are fine).
    pub fn delete(&mut self, yaml: &str) -> anyhow::Result<String> {
        self.meshctl_with_input(&["delete", "--ignore-not-found", "-f", "-"], Some(yaml))
    }

    /// `meshctl local status -o json`.
    pub fn status(&mut self) -> anyhow::Result<Value> {
        let echo = std::mem::replace(&mut self.echo, false);
        let out = self.meshctl(&["status", "-o", "json"]);
        self.echo = echo;
        Ok(serde_json::from_str(&out?)?)
    }

    /// The network namespace of pod `pod`.
    pub fn namespace_of(&self, pod: &str) -> String {
        format!("{}-pod-{pod}", self.name)
    }

    /// The VIP of service `name` (namespace `default`).
    pub fn vip(&mut self, name: &str) -> anyhow::Result<Ipv4Addr> {
        let status = self.status()?;
        let vip = status["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name)
            .and_then(|s| s["vip"].as_str())
            .with_context(|| format!("no service {name}"))?;
        Ok(vip.parse()?)
    }

    /// A binary of the mesh or the demo, by name.
    pub fn binary(&self, name: &str) -> String {
        self.bin_dir.join(name).display().to_string()
    }

    /// Deploys the Bookinfo apps (productpage v1, details v1, reviews v1 v2 v3, ratings v1)
    /// with their services, and a `client` pod to send traffic from.
    pub fn deploy_bookinfo(&mut self) -> anyhow::Result<()> {
        let port = bookinfo::PORT.to_string();
        for app in bookinfo::APPS {
            self.meshctl(&["service", app, "--port", &port])?;
        }
        let pods = [
            ("details", "v1"),
            ("ratings", "v1"),
            ("reviews", "v1"),
            ("reviews", "v2"),
            ("reviews", "v3"),
            ("productpage", "v1"),
        ];
        let bin = self.binary("bookinfo");
        for (app, version) in pods {
            let name = format!("{app}-{version}");
            let labels = format!("app={app},version={version}");
            let account = format!("bookinfo-{app}");
            self.meshctl(&[
                "deploy",
                &name,
                "--labels",
                &labels,
                "--service-account",
                &account,
                "--port",
                &port,
                "--",
                &bin,
                app,
                "--version",
                version,
            ])?;
        }
        self.meshctl(&["deploy", "client", "--labels", "app=client", "--", "sleep", "infinity"])?;
        Ok(())
    }

    /// Leaves the mesh running when this value is dropped.
    pub fn keep(&mut self) {
        self.down = true;
    }

    /// Brings the mesh down (`meshctl local down`).
    pub fn down(&mut self) -> anyhow::Result<String> {
        self.down = true;
        self.meshctl(&["down"])
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if !self.down {
            self.echo = false;
            if let Err(e) = self.down() {
                eprintln!("{e:#}");
            }
        }
    }
}

/// An HTTP answer as a client in a pod got it.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// From connecting to the last byte.
    pub elapsed: Duration,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A request made from inside a pod.
#[derive(Clone, Debug)]
pub struct Call {
    /// The method (`GET` unless said).
    pub method: String,
    /// The pod's network namespace (empty: the host's, as a person outside the mesh calls).
    pub namespace: String,
    /// Where to connect (a VIP and port, like the app's own calls).
    pub address: SocketAddr,
    /// The `Host` header (`productpage:9080`).
    pub host: String,
    /// The path and query.
    pub path: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

impl Call {
    /// `GET path` of `host` at `address`, from `namespace`.
    pub fn get(namespace: &str, address: SocketAddr, host: &str, path: &str) -> Self {
        Self {
            method: "GET".to_owned(),
            namespace: namespace.to_owned(),
            address,
            host: host.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            timeout: Duration::from_secs(20),
        }
    }

    /// Another method than GET.
    pub fn method(mut self, method: &str) -> Self {
        method.clone_into(&mut self.method);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends it (on a thread that enters the pod's namespace; the connection is captured by
    /// the pod's sidecar as the app's would be).
    pub fn send(&self) -> anyhow::Result<Answer> {
        let call = self.clone();
        std::thread::spawn(move || call.send_here())
            .join()
            .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
    }

    /// Sends `count` copies, `concurrency` at a time, each thread entering the namespace once.
    pub fn send_many(&self, count: usize, concurrency: usize) -> Vec<anyhow::Result<Answer>> {
        let concurrency = concurrency.clamp(1, count.max(1));
        let threads: Vec<_> = (0..concurrency)
            .map(|i| {
                let call = self.clone();
                let share = count / concurrency + usize::from(i < count % concurrency);
                std::thread::spawn(move || {
                    if let Err(e) = enter(&call.namespace) {
                        return vec![Err(e)];
                    }
                    (0..share).map(|_| call.request()).collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_else(|_| vec![Err(anyhow::anyhow!("panicked"))]))
            .collect()
    }

    fn send_here(&self) -> anyhow::Result<Answer> {
        enter(&self.namespace)?;
        self.request()
    }

    /// One HTTP/1.1 request on a new connection, from the current thread's namespace.
    fn request(&self) -> anyhow::Result<Answer> {
        let start = Instant::now();
        let mut stream = TcpStream::connect_timeout(&self.address, self.timeout)
            .with_context(|| format!("connect {}", self.address))?;
        stream.set_read_timeout(Some(self.timeout))?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mesh-e2e\r\nConnection: close\r\n",
            self.method, self.path, self.host
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        let mut raw = Vec::new();
        stream
            .take(16 << 20)
            .read_to_end(&mut raw)
            .with_context(|| format!("read from {}", self.address))?;
        let mut answer = parse(&raw).with_context(|| format!("answer from {}", self.address))?;
        answer.elapsed = start.elapsed();
        Ok(answer)
    }
}

/// Moves the calling thread into network namespace `ns` (the empty name is the host's own:
/// the thread stays where it is).
pub fn enter(ns: &str) -> anyhow::Result<()> {
    if ns.is_empty() {
        return Ok(());
    }
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("namespace {ns}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter namespace {ns}"))
}

/// Parses an HTTP/1.1 response read to the end of the connection.
fn parse(raw: &[u8]) -> anyhow::Result<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of head")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        elapsed: Duration::ZERO,
    })
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || rest.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&rest[end + 2..end + 2 + size]);
        rest = rest.get(end + 2 + size + 2..).unwrap_or_default();
    }
    out
}

/// The Prometheus text of a pod's sidecar (`:15090/stats/prometheus`).
pub fn metrics(namespace: &str) -> anyhow::Result<String> {
    let call = Call::get(
        namespace,
        SocketAddr::from(([127, 0, 0, 1], 15090)),
        "localhost",
        "/stats/prometheus",
    );
    Ok(call.send()?.body)
}

/// Percentile `p` (0..=100) of `values` (sorted here).
pub fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn answers_parse_with_and_without_chunks() {
        let plain = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi").unwrap();
        assert_eq!((plain.status, plain.body.as_str()), (200, "hi"));
        assert!(plain.headers.contains(&("x-a".into(), "b".into())));
        let chunked = parse(
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((chunked.status, chunked.body.as_str()), (503, "abcde"));
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn percentiles_pick_by_rank() {
        let mut values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut values, 50.0), Duration::from_millis(51));
        assert_eq!(percentile(&mut values, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&mut [], 50.0), Duration::ZERO);
    }
}
