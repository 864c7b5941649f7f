//! `make demo`: the mesh on this machine, shown step by step. It brings up a local mesh
//! (`meshctl local`) with the Bookinfo apps, sends traffic, and walks through Istio's
//! traffic-management tasks (routing, shifting, fault injection), mTLS on the wire and the
//! proxies' metrics, printing what it applied and what the traffic showed. It ends by removing
//! everything, Ctrl-C included.
//!
//! `demo up` leaves the mesh running and prints commands to try; `demo down` removes it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use e2e::local::{self, Call, Mesh, percentile};
use e2e::traffic::{Bookinfo, Loads};
use e2e::wire::Sniffer;

#[derive(Debug, Parser)]
#[command(name = "demo", about = "The mesh on this machine: Bookinfo, routing, faults, mTLS")]
struct Cli {
    /// The local mesh's state directory (meshctl's default, so `meshctl local ...` finds it).
    #[arg(long, env = "MESH_LOCAL_STATE", default_value = "/run/mesh-local")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The walkthrough, then everything removed (the default).
    Run,
    /// The mesh with Bookinfo, left running.
    Up,
    /// Remove the mesh.
    Down,
}

const BOOKINFO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bookinfo");

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let missing = local::missing_binaries();
    anyhow::ensure!(
        missing.is_empty(),
        "{missing:?} are not built in {} (`make demo` builds them)",
        local::bin_dir().display()
    );
    match cli.command.unwrap_or(Command::Run) {
        Command::Down => {
            let status = std::process::Command::new(local::bin_dir().join("meshctl"))
                .args(["local", "down"])
                .env("MESH_LOCAL_STATE", &cli.state_dir)
                .status()?;
            anyhow::ensure!(status.success(), "meshctl local down failed");
            Ok(())
        }
        Command::Up => {
            let (mut mesh, ingress) = start(&cli.state_dir)?;
            // Left running on purpose: `make demo-down` removes it.
            mesh.keep();
            println!("\nThe mesh is up. Things to try:\n");
            for line in [
                "meshctl local status",
                &format!("curl -s http://{ingress}/productpage      # through the ingress gateway"),
                "meshctl local exec client -- curl -s http://productpage:9080/productpage",
                "meshctl local exec client -- curl -s 'http://productpage:9080/api/v1/products/0?user=jason'",
                &format!("meshctl local apply -f {BOOKINFO}/destination-rule-all.yaml"),
                &format!("meshctl local apply -f {BOOKINFO}/virtual-service-reviews-test-v2.yaml"),
                "meshctl local logs productpage-v1 --proxy      # the access log",
                "meshctl dashboard                              # services, graph, proxies, live requests (q quits)",
                "meshctl proxy-status                           # what each proxy got from the pilot",
                "meshctl proxy-config routes productpage-v1     # also clusters, listeners, endpoints, secret",
                "meshctl analyze -k                             # Istio's checks on the running config",
                "meshctl dashboard envoy productpage-v1         # the proxy's admin on 127.0.0.1:15000",
                "meshctl trace                                  # the last request through the sidecars, with timings",
                "make demo-down                                  # removes everything",
            ] {
                println!("  {line}");
            }
            println!("\n(meshctl is {})", local::bin_dir().join("meshctl").display());
            Ok(())
        }
        Command::Run => {
            let state_dir = cli.state_dir.clone();
            on_interrupt(state_dir);
            let (mut mesh, _) = start(&cli.state_dir)?;
            let result = walkthrough(&mut mesh);
            if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                // The interrupt handler removes the mesh and exits; what failed here failed
                // because of it.
                mesh.keep();
                loop {
                    std::thread::park();
                }
            }
            heading("Cleaning up");
            mesh.echo = true;
            mesh.down()?;
            result
        }
    }
}

/// Set when Ctrl-C was pressed: the handler owns the teardown from then on.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// On Ctrl-C, remove the mesh and exit.
fn on_interrupt(state_dir: PathBuf) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
            INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!("\nInterrupted: removing the mesh...");
            let _ = std::process::Command::new(local::bin_dir().join("meshctl"))
                .args(["local", "down"])
                .env("MESH_LOCAL_STATE", &state_dir)
                .status();
            std::process::exit(130);
        }
    });
}

fn heading(text: &str) {
    println!("\n\x1b[1m━━ {text} ━━\x1b[0m");
}

/// The mesh with Bookinfo, reachable from the host through the ingress gateway at the
/// address returned.
fn start(state_dir: &Path) -> anyhow::Result<(Mesh, SocketAddr)> {
    heading("A mesh on this machine");
    println!("The control plane (mesh-ca, mesh-pilot) runs in a network namespace of its own;");
    println!("every pod is a network namespace on a bridge, with mesh-init's iptables rules,");
    println!("mesh-proxy as uid 1337 and the app as nobody.\n");
    let mut mesh = Mesh::up_with(state_dir, "mesh", "mesh-proxy", true, &["--tracing"])?;
    heading("Bookinfo: productpage, details, reviews v1 v2 v3, ratings");
    mesh.deploy_bookinfo()?;
    println!();
    mesh.echo = true;
    let status = mesh.meshctl(&["status"]);
    status?;
    let app = Bookinfo::new(&mut mesh)?;
    // The first pages may come before every sidecar knows every pod.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.counts(None, 6).map(|c| c.contains_key("reviews unavailable")).unwrap_or(true) {
        anyhow::ensure!(std::time::Instant::now() < deadline, "Bookinfo never answered whole");
        std::thread::sleep(Duration::from_millis(300));
    }
    let ingress = ingress(&mut mesh)?;
    Ok((mesh, ingress))
}

/// The ingress gateway, with a port of the host forwarded to it (8080 when it is free), and
/// Istio's `bookinfo-gateway.yaml`: the product page from outside the mesh.
fn ingress(mesh: &mut Mesh) -> anyhow::Result<SocketAddr> {
    heading("The ingress gateway: Bookinfo from this machine, outside the mesh");
    let port = if std::net::TcpListener::bind(("127.0.0.1", 8080)).is_ok() {
        8080
    } else {
        mesh_testing::net::free_port()
    };
    mesh.meshctl(&["gateway", "ingressgateway", "--port", &format!("{port}:8080")])?;
    apply(mesh, "bookinfo-gateway.yaml")?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let call = Call::get("", address, &format!("127.0.0.1:{port}"), "/productpage");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        match call.send() {
            Ok(page) if page.status == 200 => break page,
            other => {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "the gateway never served the product page: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let title = page.body.lines().find(|l| l.contains("<h1>")).unwrap_or_default().trim();
    println!(
        "
GET http://{address}/productpage -> {} {title}",
        page.status
    );
    Ok(address)
}

fn apply(mesh: &mut Mesh, file: &str) -> anyhow::Result<()> {
    let path = Path::new(BOOKINFO).join(file);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    println!("\n{file}:");
    for line in text.lines() {
        println!("  \x1b[2m{line}\x1b[0m");
    }
    mesh.meshctl(&["apply", "-f", &path.display().to_string()])?;
    Ok(())
}

fn describe(shown: &str) -> String {
    match shown {
        "v1" => "reviews v1: no stars".to_owned(),
        "v2 black stars" => "reviews v2: black stars".to_owned(),
        "v3 red stars" => "reviews v3: red stars".to_owned(),
        "v2 ratings unavailable" => {
            "reviews v2: \"Ratings service is currently unavailable\"".to_owned()
        }
        "reviews unavailable" => "\"Sorry, product reviews are currently unavailable\"".to_owned(),
        other => other.to_owned(),
    }
}

fn show(who: &str, loads: &mut Loads) {
    let total: usize = loads.shown.values().sum();
    println!("\n{total} page loads{who}:");
    for (shown, count) in &loads.shown {
        let bar = "█".repeat(count * 40 / total.max(1));
        println!("  {:<58} {count:>4}  {bar}", describe(shown));
    }
    let statuses: Vec<String> = loads.statuses.iter().map(|(s, n)| format!("{s} x{n}")).collect();
    println!(
        "  HTTP status {}   latency p50 {:?}  p90 {:?}  p99 {:?}",
        statuses.join(", "),
        round(percentile(&mut loads.latencies, 50.0)),
        round(percentile(&mut loads.latencies, 90.0)),
        round(percentile(&mut loads.latencies, 99.0)),
    );
}

fn round(d: Duration) -> Duration {
    Duration::from_micros(d.as_micros() as u64 / 100 * 100)
}

fn walkthrough(mesh: &mut Mesh) -> anyhow::Result<()> {
    let app = Bookinfo::new(mesh)?;

    heading("1. No routing rules: round robin over v1, v2 and v3");
    show("", &mut app.loads(None, 60)?);

    heading("2. All traffic to v1");
    apply(mesh, "destination-rule-all.yaml")?;
    apply(mesh, "virtual-service-all-v1.yaml")?;
    app.settles_on(None, "v1", 5)?;
    show("", &mut app.loads(None, 30)?);

    heading("3. The user jason to v2, everyone else to v1 (a header match on end-user)");
    apply(mesh, "virtual-service-reviews-test-v2.yaml")?;
    app.settles_on(Some("jason"), "v2 black stars", 5)?;
    show(" as jason", &mut app.loads(Some("jason"), 20)?);
    show(" as anyone else", &mut app.loads(None, 20)?);

    heading("4. Traffic shifting: 50% to v1, 50% to v3");
    apply(mesh, "virtual-service-all-v1.yaml")?;
    apply(mesh, "virtual-service-reviews-50-v3.yaml")?;
    app.settles_within(20, |k| k == "v1" || k == "v3 red stars", "v3 red stars")?;
    show("", &mut app.loads(None, 100)?);

    heading("5. A fault: ratings 7 s late for jason");
    println!("reviews v2 would wait 10 s for ratings, but productpage gives reviews only 3 s");
    println!("and one retry: jason's page says reviews are unavailable after about 6 s.");
    apply(mesh, "virtual-service-reviews-test-v2.yaml")?;
    apply(mesh, "virtual-service-ratings-test-delay.yaml")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (shown, took) = app.page(Some("jason"))?;
        if shown == "reviews unavailable" || std::time::Instant::now() > deadline {
            println!("\njason's page: {} after {:.1} s", describe(&shown), took.as_secs_f64());
            break;
        }
    }
    show(" as anyone else", &mut app.loads(None, 10)?);

    heading("6. A fault: ratings answers 500 at once for jason");
    apply(mesh, "virtual-service-ratings-test-abort.yaml")?;
    app.settles_on(Some("jason"), "v2 ratings unavailable", 3)?;
    show(" as jason", &mut app.loads(Some("jason"), 10)?);
    show(" as anyone else", &mut app.loads(None, 10)?);

    heading("7. mTLS between the sidecars, seen on the wire");
    println!("Recording what crosses reviews-v1's network interface on port 9080...");
    let sniffer = Sniffer::start(&mesh.namespace_of("reviews-v1"), 9080)?;
    app.loads(None, 10)?;
    let segments = sniffer.finish()?;
    let bytes: usize = segments.iter().map(|s| s.payload.len()).sum();
    let tls = segments.iter().filter(|s| s.is_tls_record()).count();
    let clear = segments.iter().any(|s| s.has_clear_http());
    println!(
        "  {} TCP segments, {bytes} bytes; {tls} begin a TLS record; HTTP in clear text: {}",
        segments.len(),
        if clear { "YES" } else { "none" }
    );
    if let Some(first) = segments.first() {
        let hex: Vec<String> = first.payload.iter().take(16).map(|b| format!("{b:02x}")).collect();
        println!("  first segment {} -> {}: {} ...", first.from, first.to, hex.join(" "));
    }
    let metrics = local::metrics(&mesh.namespace_of("reviews-v1"))?;
    if let Some(line) = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"destination\""))
    {
        println!(
            "  reviews-v1's sidecar counts requests from {} with {}",
            label(line, "source_principal"),
            label(line, "connection_security_policy")
        );
    }

    heading("8. What each sidecar counted: istio_requests_total");
    let mut rows: BTreeMap<(String, String, String, String), f64> = BTreeMap::new();
    for pod in ["productpage-v1", "reviews-v1", "reviews-v2", "reviews-v3"] {
        let text = local::metrics(&mesh.namespace_of(pod))?;
        for line in text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"source\""))
        {
            let count: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let key = (
                label(line, "source_workload"),
                label(line, "destination_workload"),
                label(line, "response_code"),
                label(line, "response_flags"),
            );
            *rows.entry(key).or_default() += count;
        }
    }
    println!(
        "  {:<16} {:<16} {:<6} {:<6} {:>7}",
        "SOURCE", "DESTINATION", "CODE", "FLAGS", "COUNT"
    );
    for ((source, destination, code, flags), count) in rows {
        println!("  {source:<16} {destination:<16} {code:<6} {flags:<6} {count:>7}");
    }

    heading("9. Day two: what meshctl shows of the running mesh");
    for args in [
        &["proxy-status"][..],
        &["proxy-config", "routes", "reviews-v2"],
        &["proxy-config", "secret", "reviews-v2"],
        &["analyze", "-k"],
    ] {
        let (code, out, err) = mesh.ctl(args)?;
        println!("$ meshctl {}", args.join(" "));
        for line in out.lines().chain(err.lines()) {
            println!("  {line}");
        }
        anyhow::ensure!(
            code == 0,
            "meshctl {} ended with {code}: a walkthrough's config is sound",
            args.join(" ")
        );
    }
    println!("\n(`make demo-up` leaves the mesh running: then `meshctl dashboard` shows it live.)");
    Ok(())
}

/// The value of label `name` in a Prometheus line.
fn label(line: &str, name: &str) -> String {
    let key = format!("{name}=\"");
    line.split_once(&key)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(value, _)| value.to_owned())
        .unwrap_or_default()
}
