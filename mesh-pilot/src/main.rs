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
use mesh_pilot::{ads, changes, debug, source};
use tokio::net::TcpListener;
use tokio::sync::watch;
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
    /// Address of the mTLS xDS server; served when `--ca-address` is set.
    #[arg(long, env = "MESH_PILOT_XDS_MTLS_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::PILOT_XDS_TLS)))]
    xds_mtls_listen: SocketAddr,
    /// `host:port` of mesh-ca. With it the pilot gets its own certificate and serves xDS over
    /// mTLS, admitting each proxy only as the workload its certificate names.
    #[arg(long, env = "MESH_CA_ADDRESS")]
    ca_address: Option<String>,
    /// The DNS name in the CA's serving certificate.
    #[arg(long, env = "MESH_CA_SERVER_NAME", default_value = "mesh-ca.mesh-system.svc")]
    ca_server_name: String,
    /// The mesh root certificate (PEM): verifies the CA and the proxies' certificates.
    #[arg(long, env = "MESH_ROOT_CERT", default_value = "/var/run/secrets/mesh/root-cert.pem")]
    root_cert: PathBuf,
    /// The pilot's token for the CA (a projected service-account token, or a local token).
    #[arg(long, env = "MESH_TOKEN_PATH", default_value = "/var/run/secrets/tokens/mesh-token")]
    token_path: PathBuf,
    /// The pilot's namespace (its identity is `ns/<namespace>/sa/<service account>`).
    #[arg(long, env = "POD_NAMESPACE", default_value = ports::CONTROL_PLANE_NAMESPACE)]
    namespace: String,
    /// The pilot's service account.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "mesh-pilot")]
    service_account: String,
    /// Address of `/ready` and `/debug/*`.
    #[arg(long, env = "MESH_PILOT_MONITORING_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::CONTROL_PLANE_MONITORING)))]
    monitoring_listen: SocketAddr,
    /// A push waits for this much quiet after a change.
    #[arg(long, env = "MESH_PILOT_DEBOUNCE_AFTER", default_value = "100ms", value_parser = duration)]
    debounce_after: Duration,
    /// ...but never longer than this under continuous changes.
    #[arg(long, env = "MESH_PILOT_DEBOUNCE_MAX", default_value = "1s", value_parser = duration)]
    debounce_max: Duration,
    /// Trust domain of workload identities (`spiffe://<trust domain>/ns/../sa/..`).
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_api::identity::DEFAULT_TRUST_DOMAIN, value_parser = trust_domain)]
    trust_domain: String,
    /// How often the config directory is checked for changes.
    #[arg(long, env = "MESH_PILOT_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    poll_interval: Duration,
}

fn trust_domain(text: &str) -> Result<String, String> {
    mesh_api::identity::validate_trust_domain(text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
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
    // Latest wins: a source never waits for the debouncer, and its last read is what is served.
    let changes = changes::Changes::default();
    tokio::spawn(changes::debounce(
        changes.clone(),
        publish,
        flags.debounce_after,
        flags.debounce_max,
    ));
    let discovery = ads::Discovery::new(snapshots.clone());
    let metrics = discovery.metrics.clone();
    let trust_domain = flags.trust_domain.clone();
    let on_change = move |mut snapshot: Snapshot, rejected: Vec<source::Rejected>| {
        snapshot.trust_domain.clone_from(&trust_domain);
        metrics.config_rejected.set(i64::try_from(rejected.len()).unwrap_or(i64::MAX));
        for problem in &rejected {
            warn!("config left out: {problem}");
        }
        info!(services = snapshot.services.len(), rejected = rejected.len(), "configuration read");
        changes.put(snapshot);
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
        certificate_pending: AtomicBool::new(flags.ca_address.is_some()),
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
            stopped(stop_rx.clone()),
        );
    let mut server = tokio::spawn(server);
    let mut mtls = match &flags.ca_address {
        Some(ca) => tokio::spawn(serve_mtls(
            flags_mtls(&flags, ca)?,
            discovery.clone(),
            state.clone(),
            stopped(stop_rx.clone()),
        )),
        None => {
            info!("no --ca-address: xDS over mTLS ({}) is off", flags.xds_mtls_listen);
            tokio::spawn(std::future::pending())
        }
    };
    tokio::select! {
        served = &mut server => return served.context("xDS server task")?.context("xDS server"),
        served = &mut mtls => return served.context("mTLS xDS server task")?,
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

/// What the mTLS xDS server needs, read from the flags.
struct MtlsSettings {
    listen: SocketAddr,
    client: mesh_identity::client::ClientSettings,
    trust_domain: String,
}

fn flags_mtls(flags: &Flags, ca: &str) -> anyhow::Result<MtlsSettings> {
    let root = std::fs::read_to_string(&flags.root_cert).with_context(|| {
        format!("cannot read the mesh root certificate {}", flags.root_cert.display())
    })?;
    let identity = mesh_api::identity::SpiffeId::new(
        &flags.trust_domain,
        &flags.namespace,
        &flags.service_account,
    )
    .context("the pilot's own identity")?;
    Ok(MtlsSettings {
        listen: flags.xds_mtls_listen,
        client: mesh_identity::client::ClientSettings {
            ca_address: ca.to_owned(),
            ca_server_name: flags.ca_server_name.clone(),
            root_pems: vec![root],
            token: mesh_identity::client::TokenSource::File(flags.token_path.clone()),
            identity,
            ttl: Duration::ZERO,
        },
        trust_domain: flags.trust_domain.clone(),
    })
}

/// Gets the pilot's certificate from the CA (retrying until it does, then keeping it fresh),
/// and serves xDS over mTLS with it. Readiness waits for the certificate.
async fn serve_mtls(
    settings: MtlsSettings,
    discovery: Arc<ads::Discovery>,
    state: Arc<debug::State>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let roots = mesh_identity::tls::roots(&settings.client.root_pems)
        .context("the mesh root certificate")?;
    let client = mesh_identity::client::CaClient::new(settings.client).context("the CA client")?;
    let metrics = discovery.metrics.certificate.clone();
    let (store, _rotation) = mesh_identity::client::start(client, metrics).await;
    state.certificate_pending.store(false, Ordering::Release);
    info!(address = %settings.listen, "mesh-pilot serving xDS over mTLS");
    ads::serve_mtls(discovery, listener, store, roots, &settings.trust_domain, shutdown)
        .await
        .context("mTLS xDS server")
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
