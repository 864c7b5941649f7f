//! `mesh-pilot`: the control plane. Local mode reads a directory of Kubernetes and Istio YAML,
//! watches it, and serves Envoy v3 xDS (state-of-the-world ADS) on port 15010.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use mesh_api::ports;
use mesh_pilot::model::Snapshot;
use mesh_pilot::{debug, source, xds};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

/// The mesh's control plane.
#[derive(Debug, Parser)]
#[command(name = "mesh-pilot", version, about)]
struct Flags {
    /// Local mode: a directory of Services, WorkloadEntries, ServiceEntries and Istio routing
    /// config, read again when it changes. Without it the pilot watches the Kubernetes API.
    #[arg(long, env = "MESH_PILOT_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Address of the plaintext xDS server.
    #[arg(long, env = "MESH_PILOT_XDS_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::PILOT_XDS_PLAINTEXT)))]
    xds_listen: SocketAddr,
    /// Address of `/ready` and `/debug/*`.
    #[arg(long, env = "MESH_PILOT_MONITORING_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::CONTROL_PLANE_MONITORING)))]
    monitoring_listen: SocketAddr,
    /// A push waits for this much quiet after a change.
    #[arg(long, env = "MESH_PILOT_DEBOUNCE_AFTER", default_value = "100ms", value_parser = duration)]
    debounce_after: Duration,
    /// ...but never longer than this under continuous changes.
    #[arg(long, env = "MESH_PILOT_DEBOUNCE_MAX", default_value = "1s", value_parser = duration)]
    debounce_max: Duration,
    /// How often the config directory is checked for changes.
    #[arg(long, env = "MESH_PILOT_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    poll_interval: Duration,
}

fn duration(text: &str) -> Result<Duration, String> {
    mesh_api::duration::parse(text).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Flags::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            error!("{err:#}");
            eprintln!("mesh-pilot: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    if let Some(dir) = &flags.config_dir
        && !dir.is_dir()
    {
        anyhow::bail!("--config-dir {} is not a directory", dir.display());
    }
    let (publish, snapshots) = watch::channel(Arc::new(Snapshot::default()));
    let (changes_tx, changes_rx) = mpsc::channel(16);
    tokio::spawn(xds::debounce(changes_rx, publish, flags.debounce_after, flags.debounce_max));
    let discovery = xds::Discovery::new(snapshots.clone());
    let metrics = discovery.metrics.clone();
    let on_change = move |snapshot: Snapshot, rejected: Vec<source::Rejected>| {
        metrics.config_rejected.set(i64::try_from(rejected.len()).unwrap_or(i64::MAX));
        for problem in &rejected {
            warn!("config left out: {problem}");
        }
        info!(services = snapshot.services.len(), rejected = rejected.len(), "configuration read");
        if changes_tx.try_send(snapshot).is_err() {
            warn!(
                "configuration changes are arriving faster than they are pushed; the next read will catch up"
            );
        }
    };
    let source = match &flags.config_dir {
        Some(dir) => {
            tokio::spawn(source::local::watch(dir.clone(), flags.poll_interval, on_change));
            format!("directory {}", dir.display())
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .context("no --config-dir and cannot reach the Kubernetes API")?;
            tokio::spawn(source::kube::run(client, on_change));
            "the Kubernetes API".to_owned()
        }
    };

    let state = Arc::new(debug::State {
        discovery: discovery.clone(),
        snapshots: snapshots.clone(),
        ready: AtomicBool::new(false),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let monitoring = TcpListener::bind(flags.monitoring_listen)
        .await
        .with_context(|| format!("cannot listen on {} for monitoring", flags.monitoring_listen))?;
    tokio::spawn(debug::serve(monitoring, state.clone(), stopped(stop_rx.clone())));

    // Ready once the first snapshot is published.
    let mut first = snapshots.clone();
    let ready_state = state.clone();
    tokio::spawn(async move {
        if first.wait_for(|s| s.version > 0).await.is_ok() {
            ready_state.ready.store(true, Ordering::Release);
        }
    });

    let listener = TcpListener::bind(flags.xds_listen)
        .await
        .with_context(|| format!("cannot listen on {}", flags.xds_listen))?;
    info!(address = %flags.xds_listen, %source, "mesh-pilot serving xDS");
    let server = tonic::transport::Server::builder()
        .add_service(discovery.service())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stopped(stop_rx),
        );
    let mut server = tokio::spawn(server);
    tokio::select! {
        served = &mut server => return served.context("xDS server task")?.context("xDS server"),
        () = shutdown_signal() => {}
    }
    info!("shutting down: closing xDS streams");
    state.ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    // ADS streams never end on their own: give proxies a moment, then stop regardless (they
    // keep their configuration and reconnect to another pilot).
    match tokio::time::timeout(DRAIN, server).await {
        Ok(served) => served.context("xDS server task")?.context("xDS server"),
        Err(_) => Ok(()),
    }
}

/// How long a stopping pilot waits for xDS streams to close.
const DRAIN: Duration = Duration::from_secs(2);

async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(err) => {
            warn!("cannot watch SIGTERM ({err}); only Ctrl-C stops the pilot");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
