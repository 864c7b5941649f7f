//! The data-plane benchmark: the same requests through mesh-proxy, Envoy (same config, from
//! the same pilot), nginx and HAProxy (plain reverse proxies), and straight to the backend, in
//! one run on this machine. Each proxy runs in a network-namespace pod as the mesh runs it
//! (mesh-init's capture; the sidecars get config from mesh-pilot and certificates from
//! mesh-ca), one hop (client sidecar only) and two hops (client and server sidecars, mesh
//! mTLS), HTTP/1.1 and HTTP/2, 1 KiB responses. Measured with `oha`: latency at a fixed rate
//! with latency correction, and maximum throughput; plus each proxy's CPU time per 1000
//! requests and peak RSS, read from /proc. Writes a Markdown table with ratios to direct and
//! to Envoy. The cost of tracing: mesh-proxy again with a Telemetry sampling 0 %, 1 % and
//! 100 % of requests into an OTLP collector (`mesh-trace`'s receiver, in the peer's
//! namespace), reported as ratios to the same hops untraced.
//!
//! `make bench` builds mesh-proxy in release and runs this as root.

#![allow(clippy::unwrap_used)] // A benchmark driver: a panic is the report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use e2e::netns::{self, PodAndPeer};
use e2e::sidecar;

#[derive(Parser, Debug)]
#[command(about = "mesh-proxy against Envoy, nginx and HAProxy, side by side")]
struct Flags {
    /// The mesh-proxy binary (a release build).
    #[arg(long, default_value = "target/release/mesh-proxy")]
    mesh_proxy: PathBuf,
    /// Fixed request rate of the latency runs.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Length of each run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Connections of the throughput runs.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Where to write the results (Markdown).
    #[arg(long, default_value = "e2e/results/proxy-bench.md")]
    out: PathBuf,
    /// Only these proxies (comma separated: direct, mesh-proxy, envoy, nginx, haproxy, and
    /// traced: mesh-proxy with tracing at each of `--sampling`).
    #[arg(long, default_value = "direct,mesh-proxy,envoy,nginx,haproxy,traced")]
    only: String,
    /// The sampling percentages of the traced mesh-proxy runs (comma separated).
    #[arg(long, default_value = "0,1,100")]
    sampling: String,
    /// Only these protocols (comma separated: http1, http2).
    #[arg(long, default_value = "http1,http2")]
    protocols: String,
    /// Runs per case; each figure is the median of the runs (this machine is noisy).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

const BODY: usize = 1024;

/// Where the traced runs' collector listens: the peer's address (its sidecar, when it has one,
/// does not capture the port).
const COLLECTOR_PORT: u16 = 4317;

/// The mesh config of the traced runs: Istio's OpenTelemetry provider as the default.
const TRACING_MESH_CONFIG: &str = r#"
extensionProviders:
- name: otel
  opentelemetry: {service: otel-collector.mesh-system.svc.cluster.local, port: 4317}
defaultProviders: {tracing: [otel]}
"#;

/// The collector's Service and endpoint, and a Telemetry sampling `percentage` of requests.
fn tracing_yaml(percentage: f64) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: otel-collector, namespace: mesh-system}}
spec:
  clusterIP: 10.96.0.40
  selector: {{app: otel-collector}}
  ports: [{{name: grpc-otlp, port: {COLLECTOR_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: otel-collector-1, namespace: mesh-system}}
spec:
  address: 10.99.0.1
  labels: {{app: otel-collector}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: sampling, namespace: demo}}
spec:
  tracing: [{{randomSamplingPercentage: {percentage}}}]
"#
    )
}

fn mesh_yaml(two_hops: bool) -> String {
    let tls = if two_hops { ", security.istio.io/tlsMode: istio" } else { "" };
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: hello, namespace: demo}}
spec:
  clusterIP: 10.96.0.10
  selector: {{app: hello}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: hello-1, namespace: demo}}
spec:
  address: 10.99.0.1
  labels: {{app: hello{tls}}}
  serviceAccount: hello
"#
    )
}

/// The backend: 1 KiB to every request, HTTP/1.1 or HTTP/2 (prior knowledge).
fn backend(ns: &str, address: &str) {
    let listener = netns::listen(ns, address.parse().unwrap());
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let body = bytes::Bytes::from(vec![b'x'; BODY]);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(body),
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
            });
        }
    });
}

/// CPU seconds (user + system) and peak RSS (KiB) of a process and its descendants.
fn usage(root: u32) -> (f64, u64) {
    let mut tree = vec![root];
    let mut changed = true;
    let stats: Vec<(u32, u32, f64)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ppid = fields.get(1)?.parse().ok()?;
            let ticks: f64 =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some((pid, ppid, ticks / 100.0))
        })
        .collect();
    while changed {
        changed = false;
        for (pid, ppid, _) in &stats {
            if tree.contains(ppid) && !tree.contains(pid) {
                tree.push(*pid);
                changed = true;
            }
        }
    }
    let cpu = stats.iter().filter(|(p, _, _)| tree.contains(p)).map(|(_, _, c)| c).sum();
    let rss = tree
        .iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum();
    (cpu, rss)
}

struct Run {
    p50: f64,
    p90: f64,
    p99: f64,
    rps: f64,
    cpu_per_1000: f64,
    rss_mib: f64,
}

impl Run {
    /// Each figure's median over `runs`.
    fn median(runs: &[Run]) -> Run {
        let of = |f: fn(&Run) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        Run {
            p50: of(|r| r.p50),
            p90: of(|r| r.p90),
            p99: of(|r| r.p99),
            rps: of(|r| r.rps),
            cpu_per_1000: of(|r| r.cpu_per_1000),
            rss_mib: of(|r| r.rss_mib),
        }
    }
}

/// Runs oha in `ns` (as uid 1000, so the pod's capture applies) against `url`.
fn oha(oha: &Path, ns: &str, url: &str, h2: bool, args: &[String]) -> serde_json::Value {
    let mut command = Command::new("ip");
    command.args([
        "netns",
        "exec",
        ns,
        "setpriv",
        "--reuid=1000",
        "--regid=1000",
        "--clear-groups",
    ]);
    command.arg(oha).args(["--no-tui", "--output-format", "json"]).args(args);
    if h2 {
        command.arg("--http2");
    }
    let out = command.arg(url).output().unwrap();
    assert!(out.status.success(), "oha failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("oha output: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn measure(flags: &Flags, oha_bin: &Path, ns: &str, url: &str, h2: bool, pids: &[u32]) -> Run {
    let seconds = format!("{}s", flags.seconds);
    // Warm up (connections, pools, caches).
    oha(oha_bin, ns, url, h2, &["-z".into(), "2s".into(), "-c".into(), "4".into()]);
    let fixed = oha(
        oha_bin,
        ns,
        url,
        h2,
        &[
            "-z".into(),
            seconds.clone(),
            "-q".into(),
            flags.rate.to_string(),
            "--latency-correction".into(),
            "-c".into(),
            "16".into(),
        ],
    );
    let before: f64 = pids.iter().map(|p| usage(*p).0).sum();
    let max = oha(
        oha_bin,
        ns,
        url,
        h2,
        &["-z".into(), seconds, "-c".into(), flags.connections.to_string()],
    );
    let after: f64 = pids.iter().map(|p| usage(*p).0).sum();
    let rss: u64 = pids.iter().map(|p| usage(*p).1).sum();
    let pct = |json: &serde_json::Value, p: &str| {
        json["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1000.0
    };
    // Only successful requests count; a run with failures is reported as such.
    for (name, json) in [("fixed-rate", &fixed), ("throughput", &max)] {
        let success = json["summary"]["successRate"].as_f64().unwrap_or(0.0);
        if success < 0.999 {
            eprintln!("   WARNING: the {name} run to {url} had a success rate of {success:.4}");
        }
    }
    let rps = max["summary"]["requestsPerSec"].as_f64().unwrap_or(f64::NAN)
        * max["summary"]["successRate"].as_f64().unwrap_or(0.0);
    let requests = rps * f64::from(flags.seconds);
    let run = Run {
        p50: pct(&fixed, "p50"),
        p90: pct(&fixed, "p90"),
        p99: pct(&fixed, "p99"),
        rps,
        cpu_per_1000: if pids.is_empty() { 0.0 } else { (after - before) / requests * 1000.0 },
        rss_mib: rss as f64 / 1024.0,
    };
    eprintln!(
        "   run: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, {:.0} req/s, {:.3} CPU-s/1000",
        run.p50, run.p90, run.p99, run.rps, run.cpu_per_1000
    );
    run
}

struct Mesh {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ca: mesh_testing::ca::TestCa,
    discovery: Arc<mesh_pilot::ads::Discovery>,
    _publish: tokio::sync::watch::Sender<Arc<mesh_pilot::model::Snapshot>>,
}

/// The mesh of a run; with `sampling`, traced at that percentage.
fn mesh(two_hops: bool, sampling: Option<f64>) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let mut yaml = mesh_yaml(two_hops);
    if let Some(percentage) = sampling {
        yaml.push_str("---");
        yaml.push_str(&tracing_yaml(percentage));
    }
    std::fs::write(config.join("mesh.yaml"), yaml).unwrap();
    let (mut snapshot, rejected) = mesh_pilot::source::local::read(&config);
    assert!(rejected.is_empty(), "{rejected:?}");
    if sampling.is_some() {
        let mesh_config =
            mesh_api::mesh::MeshConfig::from_yaml("mesh config", TRACING_MESH_CONFIG).unwrap();
        snapshot.root_namespace.clone_from(&mesh_config.root_namespace);
        snapshot.mesh_config = Arc::new(mesh_config);
    }
    snapshot.version = 1;
    let (publish, snapshots) = tokio::sync::watch::channel(Arc::new(snapshot));
    let discovery = mesh_pilot::ads::Discovery::new(snapshots);
    let ca = mesh_testing::ca::TestCa::new();
    ca.write_state_dir(&dir.path().join("ca"));
    std::fs::write(dir.path().join("root-cert.pem"), &ca.root_pem).unwrap();
    std::fs::write(dir.path().join("tokens"), "t-client demo/client\nt-hello demo/hello\n")
        .unwrap();
    for sa in ["client", "hello"] {
        std::fs::write(dir.path().join(format!("{sa}.token")), format!("t-{sa}")).unwrap();
    }
    let path = dir.path().to_owned();
    Mesh { _dir: dir, dir: path, ca, discovery, _publish: publish }
}

/// A sidecar process: mesh-proxy or Envoy, in `ns`, as root (the capture spares uid 0).
fn start_sidecar(
    kind: &str,
    flags: &Flags,
    mesh: &Mesh,
    ns: &str,
    (pod, ip, sa): (&str, &str, &str),
) -> Child {
    sidecar::serve_xds(ns, &mesh.discovery);
    match kind {
        "mesh-proxy" => {
            sidecar::serve_ca(ns, &mesh.dir.join("ca"), &mesh.dir.join("tokens"));
            Command::new("ip")
                .args(["netns", "exec", ns])
                .arg(&flags.mesh_proxy)
                .args(["--pilot-address", &format!("http://{}", sidecar::XDS)])
                .args(["--ca-address", sidecar::CA, "--ca-server-name", sidecar::CA_NAME])
                .arg("--root-cert")
                .arg(mesh.dir.join("root-cert.pem"))
                .arg("--token-path")
                .arg(mesh.dir.join(format!("{sa}.token")))
                .args(["--labels-file", "/nonexistent"])
                .args(["--pod-name", pod, "--pod-namespace", "demo", "--service-account", sa])
                .args(["--pod-ip", ip, "--access-log", "off"])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        }
        _ => {
            sidecar::serve_sds(ns, mesh.ca.issue("demo", sa));
            let node = format!("sidecar~{ip}~{pod}.demo~demo.svc.cluster.local");
            let path = mesh.dir.join(format!("envoy-{ns}.yaml"));
            std::fs::write(&path, sidecar::bootstrap(&node, "demo", ip, sa)).unwrap();
            Command::new("ip")
                .args(["netns", "exec", ns, "envoy", "--use-dynamic-base-id"])
                .args(["--concurrency", "2", "--log-level", "error", "-c"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        }
    }
}

/// Waits until a request through the pod's capture gets the backend's answer.
fn wait_through(ns: &str, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"])
            .args(["/usr/bin/python3", "-c"])
            .arg(format!(
                "import urllib.request;print(len(urllib.request.urlopen({url:?}, timeout=2).read()))"
            ))
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == BODY.to_string() {
            return;
        }
        assert!(Instant::now() < deadline, "no answer through {url} in {ns}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn nginx_conf(dir: &Path) -> String {
    format!(
        r#"
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream backend {{ server 10.99.0.1:8080; keepalive 64; }}
  server {{
    listen 127.0.0.1:18080;
    listen 127.0.0.1:18081 http2;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"#,
        dir = dir.display()
    )
}

fn haproxy_conf() -> &'static str {
    r#"
global
  nbthread 2
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend h1
  bind 127.0.0.1:18090
  default_backend b
frontend h2
  bind 127.0.0.1:18091 proto h2
  default_backend b
backend b
  http-reuse always
  server s1 10.99.0.1:8080
"#
}

struct Row {
    proxy: String,
    hops: u8,
    protocol: &'static str,
    /// The sampling percentage of a traced mesh-proxy run.
    sampling: Option<f64>,
    run: Run,
}

/// Serves an OTLP collector (`mesh-trace`'s receiver, which keeps the last traces in memory,
/// bounded) in `ns` on every address.
fn collector(ns: &str) -> tokio::sync::oneshot::Sender<()> {
    let listener = netns::listen(ns, ([0, 0, 0, 0], COLLECTOR_PORT).into());
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let receiver = mesh_trace::receiver::Receiver::default();
    tokio::spawn(receiver.serve(listener, async move {
        let _ = stopped.await;
    }));
    stop
}

/// Spans a sidecar in `ns` exported and dropped, from its metrics.
fn span_counts(ns: &str) -> (u64, u64) {
    let stats = netns::in_netns(ns, || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", 15090)) else {
            return String::new();
        };
        let _ = write!(s, "GET /stats/prometheus HTTP/1.0\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    });
    let metric = |name: &str| {
        stats
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    (metric("mesh_proxy_spans_exported_total"), metric("mesh_proxy_spans_dropped_total"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let flags = Flags::parse();
    let oha_bin = std::env::var("OHA")
        .map(PathBuf::from)
        .ok()
        .or_else(|| {
            let out = Command::new("sh").args(["-c", "command -v oha"]).output().ok()?;
            Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .filter(|p| p.exists())
        .expect("oha is not installed (cargo install oha)");
    // oha runs as uid 1000: give it a copy it can execute.
    let oha_copy = std::env::temp_dir().join("proxy-bench-oha");
    std::fs::copy(&oha_bin, &oha_copy).unwrap();
    let only: Vec<&str> = flags.only.split(',').collect();
    let mut cases: Vec<(&str, Option<f64>)> =
        ["direct", "mesh-proxy", "envoy", "nginx", "haproxy"].map(|p| (p, None)).to_vec();
    for percentage in flags.sampling.split(',').filter(|s| !s.trim().is_empty()) {
        let percentage: f64 = percentage.trim().parse().expect("--sampling: percentages");
        cases.push(("traced", Some(percentage)));
    }
    let mut rows: Vec<Row> = Vec::new();
    let protocols: Vec<&str> = flags.protocols.split(',').collect();
    for protocol in ["HTTP/1.1", "HTTP/2"] {
        let h2 = protocol == "HTTP/2";
        if !protocols.contains(&if h2 { "http2" } else { "http1" }) {
            continue;
        }
        for &(case, sampling) in &cases {
            if !only.contains(&case) {
                continue;
            }
            // A traced run is mesh-proxy's, with a collector.
            let proxy = if case == "traced" { "mesh-proxy" } else { case };
            let label = match sampling {
                Some(percentage) => format!("mesh-proxy, tracing {percentage}%"),
                None => proxy.to_owned(),
            };
            let hop_counts: &[u8] = match proxy {
                "mesh-proxy" | "envoy" => &[1, 2],
                "direct" => &[0],
                _ => &[1],
            };
            for &hops in hop_counts {
                eprintln!("== {label}, {hops} hop(s), {protocol}");
                let net = PodAndPeer::new("pb");
                let mesh = mesh(hops == 2, sampling);
                let _collector = sampling.map(|_| collector(&net.peer));
                let mut children: Vec<Child> = Vec::new();
                let url = match proxy {
                    "direct" => {
                        backend(&net.peer, "0.0.0.0:8080");
                        "http://10.99.0.1:8080/".to_owned()
                    }
                    "nginx" | "haproxy" => {
                        backend(&net.peer, "0.0.0.0:8080");
                        let dir = mesh.dir.clone();
                        let child = if proxy == "nginx" {
                            for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                                std::fs::create_dir_all(dir.join(d)).unwrap();
                            }
                            std::fs::write(dir.join("nginx.conf"), nginx_conf(&dir)).unwrap();
                            Command::new("ip")
                                .args([
                                    "netns",
                                    "exec",
                                    &net.pod,
                                    "nginx",
                                    "-g",
                                    "daemon off;",
                                    "-c",
                                ])
                                .arg(dir.join("nginx.conf"))
                                .spawn()
                                .unwrap()
                        } else {
                            std::fs::write(dir.join("haproxy.cfg"), haproxy_conf()).unwrap();
                            Command::new("ip")
                                .args(["netns", "exec", &net.pod, "haproxy", "-f"])
                                .arg(dir.join("haproxy.cfg"))
                                .spawn()
                                .unwrap()
                        };
                        children.push(child);
                        let port = match (proxy, h2) {
                            ("nginx", false) => 18080,
                            ("nginx", true) => 18081,
                            (_, false) => 18090,
                            (_, true) => 18091,
                        };
                        format!("http://127.0.0.1:{port}/")
                    }
                    _ => {
                        sidecar::capture(&net.pod, &["-u", "0", "-g", "0", "--ipv6", "off"]);
                        if hops == 2 {
                            // The server's sidecar calls its app on the pod's address, as
                            // Istio's does.
                            backend(&net.peer, "0.0.0.0:8080");
                            // The collector's port is not the app's: not captured.
                            let keep = "15090,15021,15020,4317";
                            let capture = ["-u", "0", "-g", "0", "--ipv6", "off", "-d", keep];
                            sidecar::capture(&net.peer, &capture);
                            children.push(start_sidecar(
                                proxy,
                                &flags,
                                &mesh,
                                &net.peer,
                                ("hello-1", "10.99.0.1", "hello"),
                            ));
                        } else {
                            backend(&net.peer, "0.0.0.0:8080");
                        }
                        children.push(start_sidecar(
                            proxy,
                            &flags,
                            &mesh,
                            &net.pod,
                            ("client-1", "10.99.0.2", "client"),
                        ));
                        "http://10.96.0.10/".to_owned()
                    }
                };
                // Ready when an HTTP/1.1 request gets through (the h2c-only ports of nginx
                // and HAProxy are probed on their HTTP/1.1 twins).
                let ns = net.pod.clone();
                let probe = url.replace(":18081/", ":18080/").replace(":18091/", ":18090/");
                tokio::task::spawn_blocking(move || wait_through(&ns, &probe)).await.unwrap();
                let pids: Vec<u32> = children.iter().map(Child::id).collect();
                let (ns, o) = (net.pod.clone(), oha_copy.clone());
                let repeat = flags.repeat.max(1);
                let run = tokio::task::spawn_blocking(move || {
                    let flags = Flags::parse();
                    let runs: Vec<Run> =
                        (0..repeat).map(|_| measure(&flags, &o, &ns, &url, h2, &pids)).collect();
                    Run::median(&runs)
                })
                .await
                .unwrap();
                eprintln!(
                    "   p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, {:.0} req/s, {:.3} CPU-s/1000, {:.1} MiB",
                    run.p50, run.p90, run.p99, run.rps, run.cpu_per_1000, run.rss_mib
                );
                if sampling.is_some() {
                    let namespaces: &[&str] =
                        if hops == 2 { &[&net.pod, &net.peer] } else { &[&net.pod] };
                    let (exported, dropped) = namespaces
                        .iter()
                        .map(|ns| span_counts(ns))
                        .fold((0, 0), |(e, d), (e2, d2)| (e + e2, d + d2));
                    eprintln!("   spans: {exported} exported, {dropped} dropped");
                }
                rows.push(Row { proxy: label.clone(), hops, protocol, sampling, run });
                for mut child in children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let _ = &mesh.ca;
            }
        }
    }
    let table = render(&rows, &flags);
    println!("{table}");
    if let Some(parent) = flags.out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&flags.out, table).unwrap();
}

fn render(rows: &[Row], flags: &Flags) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let _ = writeln!(out, "# Data-plane benchmark\n");
    let _ = writeln!(
        out,
        "Measured at commit {commit} with `make bench`. On a shared VM like this one, runs of \
         the same build differ by up to about 20% in throughput and p99; medians of several \
         runs are reported, and ratios within about 1.1 are best read as ties.\n"
    );
    let _ = writeln!(
        out,
        "Run on {date}, {cpus} vCPU (load generator, backend and proxies share them). Loopback \
         and veth between network namespaces. 1 KiB responses. Latency at a fixed {} req/s with \
         latency correction (oha, 16 connections, {} s); throughput with {} connections; CPU \
         seconds per 1000 requests and peak RSS of the proxy processes (both sidecars for two \
         hops). Each figure is the median of {} runs. Ratios: to direct (latency) and to \
         Envoy with the same hops and protocol.\n",
        flags.rate, flags.seconds, flags.connections, flags.repeat
    );
    let _ = writeln!(
        out,
        "| protocol | proxy | hops | p50 ms | p90 ms | p99 ms | req/s | CPU-s/1000 req | peak RSS MiB | p99 vs direct | p99 vs Envoy | req/s vs Envoy | CPU vs Envoy | RSS vs Envoy |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let direct = rows.iter().find(|r| r.protocol == row.protocol && r.proxy == "direct");
        // Proxies with one hop compare with Envoy's one hop; direct compares with nothing.
        let envoy = rows
            .iter()
            .filter(|_| row.proxy != "direct")
            .find(|r| r.protocol == row.protocol && r.proxy == "envoy" && r.hops == row.hops);
        let ratio = |a: f64, b: Option<f64>| {
            b.filter(|b| *b > 0.0).map_or("-".to_owned(), |b| format!("{:.2}", a / b))
        };
        let r = &row.run;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.0} | {:.3} | {:.1} | {} | {} | {} | {} | {} |",
            row.protocol,
            row.proxy,
            row.hops,
            r.p50,
            r.p90,
            r.p99,
            r.rps,
            r.cpu_per_1000,
            r.rss_mib,
            ratio(r.p99, direct.map(|d| d.run.p99)),
            ratio(r.p99, envoy.map(|e| e.run.p99)),
            ratio(r.rps, envoy.map(|e| e.run.rps)),
            ratio(r.cpu_per_1000, envoy.map(|e| e.run.cpu_per_1000)),
            ratio(r.rss_mib, envoy.map(|e| e.run.rss_mib)),
        );
    }
    let traced: Vec<&Row> = rows.iter().filter(|r| r.sampling.is_some()).collect();
    if !traced.is_empty() {
        let _ = writeln!(
            out,
            "\n## The cost of tracing\n\nmesh-proxy with a Telemetry sampling the given \
             percentage of requests into an OTLP collector, against mesh-proxy untraced with the \
             same hops and protocol (above 1: the traced run is slower, or uses more).\n"
        );
        let _ = writeln!(
            out,
            "| protocol | hops | sampling | p50 | p99 | req/s | CPU-s/1000 req | peak RSS |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for row in traced {
            let untraced = rows.iter().find(|r| {
                r.proxy == "mesh-proxy" && r.protocol == row.protocol && r.hops == row.hops
            });
            let ratio = |f: fn(&Run) -> f64| {
                untraced
                    .map(|u| f(&u.run))
                    .filter(|u| *u > 0.0)
                    .map_or("-".to_owned(), |u| format!("{:.2}", f(&row.run) / u))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {}% | {} | {} | {} | {} | {} |",
                row.protocol,
                row.hops,
                row.sampling.unwrap_or_default(),
                ratio(|r| r.p50),
                ratio(|r| r.p99),
                ratio(|r| r.rps),
                ratio(|r| r.cpu_per_1000),
                ratio(|r| r.rss_mib),
            );
        }
    }
    out
}
