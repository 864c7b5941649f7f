//! `pilot-load`: how long one endpoint change takes to reach every connected proxy.
//!
//! It writes a local mesh of M services (one endpoint each), starts `mesh-pilot` on it, opens N
//! ADS streams that subscribe to every cluster and endpoint (a sidecar without Sidecar scoping),
//! changes one endpoint's address, and reports when each stream received it (p50, p99, max)
//! and the pilot's memory. A benchmark, not a test: nothing here asserts a time.
//!
//! ```text
//! cargo build --release -p mesh-pilot -p e2e
//! target/release/pilot-load --clients 1000 --services 1000
//! ```

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_api::xds::{CLUSTER_TYPE, ENDPOINT_TYPE};
use mesh_testing::net::free_port;
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(about = "Time for one endpoint change to reach N proxies watching M services")]
struct Args {
    /// Simulated proxies.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Services in the mesh.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// The mesh-pilot binary (by default next to this one).
    #[arg(long)]
    pilot: Option<PathBuf>,
}

fn config(services: usize, changed: bool) -> String {
    let mut out = String::new();
    for i in 0..services {
        let (a, b) = (i / 250, i % 250 + 1);
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: load}}\nspec:\n  clusterIP: 10.100.{a}.{b}\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 8080}}]\n---\n"
        ));
        let address =
            if changed && i == 0 { "10.201.0.1".to_owned() } else { format!("10.200.{a}.{b}") };
        out.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: svc-{i}, namespace: load}}\nspec: {{address: {address}, labels: {{app: svc-{i}}}}}\n---\n"
        ));
    }
    out
}

fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// One simulated proxy: CDS wildcard, then EDS for every cluster, ACKing everything; reports
/// when an EDS response carries `needle`.
async fn proxy(
    id: usize,
    services: usize,
    address: String,
    needle: &'static [u8],
    synced: mpsc::Sender<()>,
    got: mpsc::Sender<Instant>,
) -> anyhow::Result<()> {
    let mut client = AggregatedDiscoveryServiceClient::connect(address)
        .await?
        .max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(8);
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let node = Some(Node {
        id: format!("sidecar~10.0.0.1~load-{id}.load~load.svc.cluster.local"),
        ..Node::default()
    });
    tx.send(DiscoveryRequest {
        node,
        type_url: CLUSTER_TYPE.into(),
        ..DiscoveryRequest::default()
    })
    .await?;
    let mut eds_names: Vec<String> = Vec::new();
    let mut announced = false;
    while let Some(response) = responses.message().await? {
        let ack = |names: Vec<String>| DiscoveryRequest {
            type_url: response.type_url.clone(),
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            resource_names: names,
            ..DiscoveryRequest::default()
        };
        if response.type_url == CLUSTER_TYPE {
            tx.send(ack(Vec::new())).await?;
            if eds_names.is_empty() {
                // The clusters' names are known from the mesh written: decoding thousands of
                // clusters in thousands of simulated proxies would measure the load generator.
                eds_names = (0..services)
                    .map(|i| format!("outbound|8080||svc-{i}.load.svc.cluster.local"))
                    .collect();
                if response.resources.len() < services {
                    bail!(
                        "stream {id}: {} clusters for {services} services",
                        response.resources.len()
                    );
                }
                tx.send(DiscoveryRequest {
                    type_url: ENDPOINT_TYPE.into(),
                    resource_names: eds_names.clone(),
                    ..DiscoveryRequest::default()
                })
                .await?;
            }
        } else if response.type_url == ENDPOINT_TYPE {
            tx.send(ack(eds_names.clone())).await?;
            if !announced {
                announced = true;
                synced.send(()).await?;
            }
            let found = response
                .resources
                .iter()
                .any(|any| any.value.windows(needle.len()).any(|w| w == needle));
            if found {
                got.send(Instant::now()).await?;
                return Ok(());
            }
        }
    }
    bail!("stream {id} ended before the change arrived")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pilot = match args.pilot {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("mesh-pilot"),
    };
    let dir = std::env::temp_dir().join(format!("pilot-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("mesh.yaml");
    std::fs::write(&file, config(args.services, false))?;
    let (xds, monitoring) = (free_port(), free_port());
    let mut child = Command::new(&pilot)
        .arg("--config-dir")
        .arg(&dir)
        .args([
            "--xds-listen",
            &format!("127.0.0.1:{xds}"),
            "--monitoring-listen",
            &format!("127.0.0.1:{monitoring}"),
        ])
        .args(["--poll-interval", "100ms", "--debounce-after", "100ms", "--debounce-max", "1s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", pilot.display()))?;
    let result = run(&args.clients, args.services, xds, monitoring, &file, child.id()).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The pilot's `pilot_proxy_convergence_time` buckets: (upper bound in seconds, count).
async fn convergence_buckets(monitoring: u16) -> anyhow::Result<Vec<(f64, u64)>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", monitoring)).await?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("pilot_proxy_convergence_time_bucket{le=\""))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect())
}

/// The bucket bound under which a share `p` of the pushes between two scrapes fell.
fn bucket_percentile(before: &[(f64, u64)], after: &[(f64, u64)], p: f64) -> f64 {
    let deltas: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, n)| (*le, n - before.iter().find(|b| b.0 == *le).map_or(0, |b| b.1)))
        .collect();
    let total = deltas.last().map_or(0, |d| d.1);
    deltas.iter().find(|(_, n)| *n as f64 >= p * total as f64).map_or(f64::INFINITY, |d| d.0)
}

async fn run(
    clients: &usize,
    services: usize,
    xds: u16,
    monitoring: u16,
    file: &std::path::Path,
    pid: u32,
) -> anyhow::Result<()> {
    let clients = *clients;
    // Wait for the xDS port.
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", xds)).await.is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("mesh-pilot did not open its xDS port");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (synced_tx, mut synced_rx) = mpsc::channel(clients);
    let (got_tx, mut got_rx) = mpsc::channel(clients);
    let connect_started = Instant::now();
    for id in 0..clients {
        let (synced, got) = (synced_tx.clone(), got_tx.clone());
        let address = format!("http://127.0.0.1:{xds}");
        tokio::spawn(async move {
            if let Err(err) = proxy(id, services, address, b"10.201.0.1", synced, got).await {
                eprintln!("client {id}: {err:#}");
            }
        });
    }
    for _ in 0..clients {
        tokio::time::timeout(Duration::from_secs(600), synced_rx.recv())
            .await
            .context("clients did not all sync")?;
    }
    let connect_time = connect_started.elapsed();
    let (rss_synced, _) = memory_kib(pid);

    let before = convergence_buckets(monitoring).await?;
    let changed_at = Instant::now();
    std::fs::write(file, config(services, true))?;
    let mut delays = Vec::with_capacity(clients);
    for _ in 0..clients {
        let at = tokio::time::timeout(Duration::from_secs(600), got_rx.recv())
            .await
            .context("the change did not reach every client")?;
        delays.push(at.context("a client stopped")?.duration_since(changed_at));
    }
    delays.sort();
    let after = convergence_buckets(monitoring).await?;
    let (rss, hwm) = memory_kib(pid);
    println!(
        "pilot-load: {clients} proxies x {services} services (every proxy subscribes to every cluster)"
    );
    println!("  all proxies connected and synced in {:.2} s", connect_time.as_secs_f64());
    println!(
        "  one endpoint change reached all proxies: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (includes up to 100 ms file polling and 100 ms debounce)",
        percentile(&delays, 0.5).as_secs_f64() * 1000.0,
        percentile(&delays, 0.99).as_secs_f64() * 1000.0,
        delays.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    println!(
        "  of which the pilot's push, from the new snapshot to each proxy (its convergence histogram): p50 <= {} s, p99 <= {} s",
        bucket_percentile(&before, &after, 0.5),
        bucket_percentile(&before, &after, 0.99)
    );
    println!(
        "  pilot memory: {} MiB after sync, {} MiB now, peak {} MiB",
        rss_synced / 1024,
        rss / 1024,
        hwm / 1024
    );
    Ok(())
}
