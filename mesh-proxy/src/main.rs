//! `mesh-proxy`: the sidecar. Gets the workload certificate from mesh-ca, the configuration
//! from the pilot over ADS, then takes the app's traffic on 15001 (outbound) and 15006
//! (inbound); admin on 127.0.0.1:15000, readiness on 15021, metrics on 15090. On SIGTERM it
//! drains: not ready, no new connections, in-flight requests finish within the drain period.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use clap::Parser as _;
use mesh_api::identity::SpiffeId;
use mesh_identity::client::{CaClient, ClientMetrics, ClientSettings, TokenSource};
use mesh_proxy::admin::{self, Admin, Surface};
use mesh_proxy::proxy::listen::{self, Drain, Side};
use mesh_proxy::proxy::{MeshTls, Shared, Tuning, set_worker};
use mesh_proxy::runtime::Runtime;
use mesh_proxy::settings::{Flags, Settings};
use mesh_proxy::telemetry::{AccessLog, Metrics, Workload};
use mesh_proxy::xds::client::ClientState;
use mesh_proxy::xds::store::Store;
use tokio::net::TcpListener;
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    let set_level: admin::SetLevel = Box::new(move |level: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| format!("bad log filter {level:?}: {e}"))?;
        reload.reload(filter).map_err(|e| e.to_string())
    });
    let flags = Flags::parse();
    // Traffic runs on workers, one thread each with a runtime of its own (as Envoy's
    // workers): a connection, its requests and the upstream connections they use stay on one
    // thread, so nothing on the request path waits for another thread to wake up. Control
    // work (xDS, compiling updates, admin and metrics) has its own thread, so a config dump
    // or a big update never delays a request; the main thread starts things and waits for
    // the end.
    let workers = match flags.concurrency {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let started = (0..workers)
        .map(|index| runtime_thread(format!("worker-{index}"), move || set_worker(index)))
        .collect::<std::io::Result<Vec<_>>>()
        .and_then(|workers| Ok((workers, runtime_thread("control".into(), || {})?)));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let (runtime, workers, control) = match (runtime, started) {
        (Ok(runtime), Ok((workers, control))) => (runtime, workers, control),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("mesh-proxy: cannot start the async runtimes: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags, set_level, control, workers)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            error!("{err:#}");
            eprintln!("mesh-proxy: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A single-threaded runtime on a thread of its own (`on_start` runs first on the thread).
fn runtime_thread(
    name: String,
    on_start: impl FnOnce() + Send + 'static,
) -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new().name(name).spawn(move || {
        on_start();
        runtime.block_on(std::future::pending::<()>());
    })?;
    Ok(handle)
}

/// A worker's listener on `address`: every worker binds the port with `SO_REUSEPORT`, and
/// the kernel spreads new connections over them.
fn bind_worker(
    address: SocketAddr,
    what: &str,
    worker: &tokio::runtime::Handle,
) -> anyhow::Result<TcpListener> {
    let _entered = worker.enter();
    let bound = || -> std::io::Result<TcpListener> {
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(address)?;
        socket.listen(1024)
    };
    bound().with_context(|| format!("cannot listen on {address} for {what}"))
}

/// A listener for the control runtime, bound now (so a port in use fails the start).
fn bind_control(address: SocketAddr, what: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("cannot listen on {address} for {what}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

async fn run(
    flags: Flags,
    set_level: admin::SetLevel,
    control: tokio::runtime::Handle,
    workers: Vec<tokio::runtime::Handle>,
) -> anyhow::Result<()> {
    let settings = Settings::from_flags(&flags)?;
    let trust_domain = settings.identity.trust_domain().to_owned();
    let root_pem = std::fs::read_to_string(&flags.root_cert).with_context(|| {
        format!("--root-cert (or MESH_ROOT_CERT) {}: cannot read", flags.root_cert.display())
    })?;
    let roots = mesh_identity::tls::roots(std::slice::from_ref(&root_pem))
        .with_context(|| format!("--root-cert {}", flags.root_cert.display()))?;

    let mut registry = prometheus_client::registry::Registry::default();
    let cert_metrics = ClientMetrics::register(&mut registry);
    let metrics = Metrics::register(&mut registry);

    // Readiness and metrics answer from the start (not ready until everything is in).
    let store = Arc::new(Store::default());
    let xds_state = Arc::new(ClientState::default());
    let drain = Drain::default();
    let any = Ipv4Addr::UNSPECIFIED;
    let health = bind_control((any, flags.health_port).into(), "readiness")?;
    let stats = bind_control((any, flags.metrics_port).into(), "metrics")?;
    let admin_listener = bind_control((Ipv4Addr::LOCALHOST, flags.admin_port).into(), "admin")?;

    info!(identity = %settings.identity, ca = %settings.ca_address, "getting the workload certificate");
    let ca = CaClient::new(ClientSettings {
        ca_address: settings.ca_address.clone(),
        ca_server_name: flags.ca_server_name.clone(),
        root_pems: vec![root_pem],
        token: TokenSource::File(settings.token_path.clone()),
        identity: settings.identity.clone(),
        ttl: flags.cert_ttl,
    })
    .context("CA client")?;
    let (cert_store, _rotation) = mesh_identity::client::start(ca, cert_metrics).await;
    let tls = Arc::new(MeshTls::new(cert_store.clone(), roots.clone(), &trust_domain)?);

    let labels = &settings.labels;
    let workload = labels.get("app").cloned().unwrap_or_else(|| settings.node_id.pod.clone());
    let me = Workload::from_labels(
        &workload,
        &settings.node_id.namespace,
        &settings.identity.to_string(),
        &settings.cluster_id,
        labels,
    );
    let log = AccessLog::start(flags.access_log, metrics.log_dropped.clone());
    let tuning = Tuning {
        detection_timeout: flags.protocol_detection_timeout,
        workers: workers.len(),
        ..Tuning::default()
    };
    let empty = Runtime::build(store.current()).map_err(anyhow::Error::msg)?;
    let shared = Arc::new(Shared::new(
        empty,
        tls,
        metrics.clone(),
        log,
        me,
        settings.identity.clone(),
        tuning,
    ));
    let admin = Arc::new(Admin {
        shared: shared.clone(),
        store: store.clone(),
        xds: xds_state.clone(),
        registry,
        ready: Default::default(),
        drain: drain.clone(),
        set_level,
        quit: tokio::sync::Notify::new(),
    });
    // Everything below until the data listeners is control work: entering the control runtime
    // makes it the home of these listeners, the xDS channel and the tasks spawned here.
    let entered = control.enter();
    for (listener, surface) in
        [(health, Surface::Health), (stats, Surface::Metrics), (admin_listener, Surface::Admin)]
    {
        let listener = TcpListener::from_std(listener)?;
        tokio::spawn(admin::serve(listener, admin.clone(), surface));
    }

    // xDS: mTLS with the workload certificate to 15012, or plaintext with `http://`.
    let channel = match settings.pilot_address.strip_prefix("http://") {
        Some(address) => {
            warn!(%address, "xDS in plaintext: for local runs only");
            tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                .context("--pilot-address")?
                .connect_timeout(std::time::Duration::from_secs(5))
                .connect_lazy()
        }
        None => {
            let pilot: SpiffeId = match &flags.pilot_identity {
                Some(text) => text.parse().map_err(|e| {
                    anyhow::anyhow!("--pilot-identity (or MESH_PILOT_IDENTITY) {text:?}: {e}")
                })?,
                None => SpiffeId::new(&trust_domain, "mesh-system", "mesh-pilot")?,
            };
            let config = mesh_identity::tls::mesh_client_config(cert_store, roots, vec![pilot])?;
            let host = settings
                .pilot_address
                .rsplit_once(':')
                .map_or(settings.pilot_address.as_str(), |(h, _)| h);
            let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                .with_context(|| format!("--pilot-address {}", settings.pilot_address))?;
            mesh_identity::grpc::grpc_channel(&settings.pilot_address, name, config)
                .context("--pilot-address")?
                .connect_lazy()
        }
    };
    tokio::spawn(mesh_proxy::xds::client::run(
        channel,
        settings.node(),
        store.clone(),
        xds_state.clone(),
    ));

    let mut complete = shared.clone().follow(store.clone());
    drop(entered);
    info!("waiting for a complete configuration from the pilot");
    let _ = complete.wait_for(|c| *c).await;

    for worker in &workers {
        let outbound = bind_worker((any, flags.outbound_port).into(), "outbound traffic", worker)?;
        let inbound = bind_worker((any, flags.inbound_port).into(), "inbound traffic", worker)?;
        worker.spawn(listen::serve(outbound, shared.clone(), Side::Outbound, drain.clone()));
        worker.spawn(listen::serve(inbound, shared.clone(), Side::Inbound, drain.clone()));
    }
    admin.ready.store(true, Ordering::Release);
    info!(
        outbound = flags.outbound_port,
        inbound = flags.inbound_port,
        workers = workers.len(),
        "proxy ready"
    );

    tokio::select! {
        () = shutdown_signal() => info!("SIGTERM: draining"),
        () = admin.quit.notified() => info!("/quitquitquit: draining"),
    }
    drain.start();
    if tokio::time::timeout(flags.drain_duration, drain.closed()).await.is_err() {
        warn!(open = drain.open(), period = ?flags.drain_duration, "connections still open after the drain period; closing them");
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            warn!("cannot watch SIGTERM ({err}); only Ctrl-C stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
