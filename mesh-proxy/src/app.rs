//! How `mesh-proxy` is put together, for its `main` and for tests alike: [`Config`] is what
//! it is started with, [`build`] binds its ports and starts its runtimes, and [`Bound`] says
//! where it listens, whether it is ready, and runs it until it is told to stop.
//!
//! Traffic runs on workers, one thread each with a runtime of its own (as Envoy's workers): a
//! connection, its requests and the upstream connections they use stay on one thread, so
//! nothing on the request path waits for another thread to wake up. Control work (xDS,
//! compiling updates, admin and metrics) has its own thread, so a config dump or a big update
//! never delays a request.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_api::identity::SpiffeId;
use mesh_identity::client::{CaClient, ClientMetrics, ClientSettings, TokenSource};
use mesh_runtime::admin::{self, Server};
use mesh_runtime::drain;
use mesh_runtime::log::LogHandle;
use mesh_runtime::readiness::{Guard, Ready};
use mesh_runtime::shutdown::{self, Shutdown};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::admin::{Admin, Surface};
use crate::proxy::listen::{self, Side};
use crate::proxy::{MeshTls, Shared, Tuning, set_worker};
use crate::runtime::Runtime;
use crate::settings::{Flags, Settings};
use crate::telemetry::{AccessLog, Metrics, Workload};
use crate::xds::client::ClientState;
use crate::xds::store::Store;

/// What `mesh-proxy` is started with: its flags, each also an environment variable.
pub type Config = Flags;

/// What readiness waits for first (and `/server_info` calls `PRE_INITIALIZING`).
pub const CERTIFICATE_STEP: &str = "workload certificate";

/// A started proxy: where its own endpoints listen, its readiness, and how to stop it.
#[derive(Debug)]
pub struct Bound {
    /// Admin (`/config_dump`, `/clusters`, `/logging`, ...), on loopback.
    pub admin: SocketAddr,
    /// Readiness (`/healthz/ready`).
    pub health: SocketAddr,
    /// The app's probes (`/app-health/...`).
    pub status: SocketAddr,
    /// Prometheus (`/stats/prometheus`).
    pub metrics: SocketAddr,
    /// Ready once the proxy has its certificate, a complete configuration and its listeners.
    pub ready: Ready,
    /// Stops the proxy as SIGTERM would.
    pub shutdown: Shutdown,
    drain: drain::Trigger,
    drain_duration: Duration,
    /// The admin endpoints' drain, after the data path's: readiness must say DRAINING
    /// for as long as connections drain.
    admin_drain: drain::Trigger,
    /// Stops the span exporters, which send what they hold first.
    exporters: crate::trace::exporters::StopExporters,
    startup: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Reads the settings, binds the proxy's own ports and starts its runtimes; the certificate,
/// the configuration and the traffic listeners follow in the background (see
/// [`Bound::ready`]). `log` is what `/logging` changes.
pub async fn build(config: Config, log: Option<LogHandle>) -> anyhow::Result<Bound> {
    let settings = Settings::from_flags(&config)?;
    let root_pem = std::fs::read_to_string(&config.ca.root_cert).with_context(|| {
        format!("--root-cert (or MESH_ROOT_CERT) {}: cannot read", config.ca.root_cert.display())
    })?;
    let any = Ipv4Addr::UNSPECIFIED;
    // Bound now, so a port in use fails the start; served on the control runtime later.
    let health = admin::bind_std((any, config.health_port).into(), "readiness")?;
    let stats = admin::bind_std((any, config.metrics_port).into(), "metrics")?;
    let own = admin::bind_std((Ipv4Addr::LOCALHOST, config.admin_port).into(), "admin")?;
    let status = admin::bind_std((any, config.status_port).into(), "app probes")?;
    let addresses = (health.local_addr()?, stats.local_addr()?, own.local_addr()?);
    let status_address = status.local_addr()?;

    let workers = match config.concurrency {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let workers = (0..workers)
        .map(|index| runtime_thread(format!("worker-{index}"), move || set_worker(index)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot start the worker runtimes")?;
    let control =
        runtime_thread("control".into(), || {}).context("cannot start the control runtime")?;

    let ready = Ready::new();
    let steps = Steps {
        certificate: ready.register(CERTIFICATE_STEP),
        configuration: ready.register("complete configuration"),
        listeners: ready.register("traffic listeners"),
    };
    // Watchers are made where servers start (`Trigger::watch`): start-up itself must not hold
    // one, or a stop while it waits for the certificate would wait out the drain deadline.
    let (trigger, _) = drain::channel();
    let (admin_drain, _) = drain::channel();
    let shutdown = Shutdown::default();
    let (exporters, exporters_stopped) = crate::trace::stop_channel();
    let started = Started {
        config: config.clone(),
        settings,
        root_pem,
        log,
        ready: ready.clone(),
        drain: trigger.clone(),
        admin_drain: admin_drain.clone(),
        shutdown: shutdown.clone(),
        control,
        workers,
        exporters: exporters_stopped,
    };
    let startup = tokio::spawn(started.start((health, stats, own, status), steps));
    Ok(Bound {
        status: status_address,
        health: addresses.0,
        metrics: addresses.1,
        admin: addresses.2,
        ready,
        shutdown,
        drain: trigger,
        drain_duration: config.drain_duration,
        admin_drain,
        exporters,
        startup,
    })
}

impl Bound {
    /// Runs until SIGTERM, SIGINT, `/quitquitquit` or [`Bound::shutdown`], then drains:
    /// not ready, no new connections, requests in flight get the drain period to finish.
    /// Returns early with the error if the proxy cannot start.
    pub async fn run(self) -> anyhow::Result<()> {
        let Bound {
            ready,
            shutdown,
            drain,
            drain_duration,
            admin_drain,
            exporters,
            mut startup,
            ..
        } = self;
        let stopping = shutdown::run(&shutdown, &ready, &drain, drain_duration);
        tokio::pin!(stopping);
        let ended = tokio::select! {
            started = &mut startup => match started {
                Ok(Ok(())) => stopping.await,
                Ok(Err(err)) => return Err(err),
                Err(err) => return Err(err).context("the start-up task"),
            },
            ended = &mut stopping => ended,
        };
        if let Err(err) = ended {
            warn!("closing connections still open: {err}");
        }
        // The spans of the last requests go out before the process does.
        exporters.stop(EXPORT_DEADLINE).await;
        if let Err(err) = admin_drain.drain(ADMIN_DRAIN).await {
            warn!("admin endpoints: {err}");
        }
        Ok(())
    }
}

/// How long admin requests in flight get once the data path has drained.
const ADMIN_DRAIN: Duration = Duration::from_secs(1);
/// How long the span exporters get to send what they hold when the proxy stops.
const EXPORT_DEADLINE: Duration = Duration::from_secs(1);

/// What readiness waits for, released in order as start-up gets there.
struct Steps {
    certificate: Guard,
    configuration: Guard,
    listeners: Guard,
}

/// What the start-up task needs.
struct Started {
    config: Config,
    settings: Settings,
    root_pem: String,
    log: Option<LogHandle>,
    ready: Ready,
    drain: drain::Trigger,
    admin_drain: drain::Trigger,
    shutdown: Shutdown,
    control: tokio::runtime::Handle,
    workers: Vec<tokio::runtime::Handle>,
    exporters: crate::trace::exporters::ExportersStopped,
}

impl Started {
    /// Certificate, admin endpoints, xDS, then the traffic listeners once the configuration
    /// is complete.
    async fn start(
        self,
        (health, stats, admin_listener, status): (
            std::net::TcpListener,
            std::net::TcpListener,
            std::net::TcpListener,
            std::net::TcpListener,
        ),
        steps: Steps,
    ) -> anyhow::Result<()> {
        let Started {
            config,
            settings,
            root_pem,
            log,
            ready,
            drain,
            admin_drain,
            shutdown,
            control,
            workers,
            exporters,
        } = self;
        let started = (std::time::Instant::now(), std::time::SystemTime::now());
        let trust_domain = settings.identity.trust_domain().to_owned();
        let roots = mesh_identity::tls::roots(std::slice::from_ref(&root_pem))
            .with_context(|| format!("--root-cert {}", config.ca.root_cert.display()))?;
        let mut registry = prometheus_client::registry::Registry::default();
        let cert_metrics = ClientMetrics::register(&mut registry);
        let metrics = Metrics::register(&mut registry);
        let store = Arc::new(Store::default());
        let xds_state = Arc::new(ClientState::default());
        // Readiness answers from the first moment (not ready, naming what start-up waits
        // for); the other endpoints need the data path's state and follow the certificate.
        {
            let _entered = control.enter();
            let (ready, drain, xds) = (ready.clone(), drain.clone(), xds_state.clone());
            Server::from_std(health, "readiness")?.spawn(admin_drain.watch(), move |_request| {
                let response = crate::admin::readiness(&ready, &drain, &xds);
                async move { response }
            });
            // The app's probes answer from the start too: the app may be up before the proxy.
            let probers = Arc::new(settings.app_probers.clone());
            let pod_ip = settings.node_id.ip;
            Server::from_std(status, "app probes")?.spawn(admin_drain.watch(), move |request| {
                let probers = probers.clone();
                async move { crate::app_health::respond(&request, &probers, pod_ip).await }
            });
        }

        info!(identity = %settings.identity, ca = %settings.ca_address, "getting the workload certificate");
        let ca = CaClient::new(ClientSettings {
            ca_address: settings.ca_address.clone(),
            ca_server_name: config.ca.ca_server_name.clone(),
            root_pems: vec![root_pem.clone()],
            token: TokenSource::File(settings.token_path.clone()),
            identity: settings.identity.clone(),
            ttl: config.cert_ttl,
            dns_names: Vec::new(),
        })
        .context("CA client")?;
        let (cert_store, _rotation) = mesh_identity::client::start(ca, cert_metrics).await;
        steps.certificate.release();
        let tls = Arc::new(MeshTls::new(cert_store.clone(), roots.clone(), &trust_domain)?);

        let labels = &settings.labels;
        let me = Workload::from_labels(
            &settings.workload_name,
            &settings.node_id.namespace,
            &settings.identity.to_string(),
            &settings.cluster_id,
            labels,
        );
        let log_entries = AccessLog::start(config.access_log, &metrics);
        let tuning = Tuning {
            detection_timeout: config.protocol_detection_timeout,
            workers: workers.len(),
            ..Tuning::default()
        };
        let empty = Runtime::build(store.current()).map_err(anyhow::Error::msg)?;
        let shared = Arc::new(Shared::new(
            empty,
            tls,
            metrics.clone(),
            log_entries,
            me,
            settings.identity.clone(),
            tuning,
        ));
        shared.spans.set_node_id(settings.node_id.to_string());
        registry.register_collector(Box::new(shared.spans.metrics()));
        let identity = crate::trace::Identity {
            service_name: format!("{}.{}", settings.workload_name, settings.node_id.namespace),
            resource: vec![
                ("k8s.namespace.name".to_owned(), settings.node_id.namespace.clone()),
                ("k8s.pod.name".to_owned(), settings.node_id.pod.clone()),
            ],
        };
        let admin = Arc::new(Admin {
            shared: shared.clone(),
            store: store.clone(),
            xds: xds_state.clone(),
            registry,
            ready: ready.clone(),
            drain: drain.clone(),
            log,
            shutdown,
            about: crate::admin::About {
                node: settings.node(),
                started,
                options: crate::admin::server_info::Options {
                    concurrency: workers.len(),
                    drain_time: config.drain_duration,
                },
                certificate: cert_store.clone(),
                root_pem,
            },
        });
        // Everything below until the traffic listeners is control work: entering the control
        // runtime makes it the home of these listeners, the xDS channel and their tasks. The
        // admin endpoints answer until the process exits (readiness says DRAINING meanwhile).
        let entered = control.enter();
        for (listener, surface, purpose) in
            [(stats, Surface::Metrics, "metrics"), (admin_listener, Surface::Admin, "admin")]
        {
            let admin = admin.clone();
            Server::from_std(listener, purpose)?.spawn(admin_drain.watch(), move |request| {
                let response = admin.handle(surface, &request);
                async move { response }
            });
        }

        let channel = xds_channel(&config, &settings, &trust_domain, cert_store, roots)?;
        tokio::spawn(crate::xds::client::run(channel, settings.node(), store.clone(), xds_state));
        let mut complete = shared.clone().follow(store);
        // The `OTEL_*` variables, read once: the exporters' settings besides the collector.
        let env = std::env::vars().collect();
        let exporters_task = crate::trace::Exporters::new(env, identity);
        tokio::spawn(crate::trace::follow(shared.clone(), exporters_task, exporters));
        drop(entered);
        info!("waiting for a complete configuration from the pilot");
        let _ = complete.wait_for(|c| *c).await;
        steps.configuration.release();

        if config.proxy_type == crate::settings::Role::Router {
            let bound = gateway_listeners(&shared, &workers, &drain);
            control.spawn(keep_gateway_listeners(shared, workers, drain, bound));
            steps.listeners.release();
            info!(workers = config.concurrency, "gateway ready");
            return Ok(());
        }
        let any = Ipv4Addr::UNSPECIFIED;
        for worker in &workers {
            let outbound =
                bind_worker((any, config.outbound_port).into(), "outbound traffic", worker)?;
            let inbound =
                bind_worker((any, config.inbound_port).into(), "inbound traffic", worker)?;
            worker.spawn(listen::serve(outbound, shared.clone(), Side::Outbound, drain.watch()));
            worker.spawn(listen::serve(inbound, shared.clone(), Side::Inbound, drain.watch()));
        }
        steps.listeners.release();
        info!(
            outbound = config.outbound_port,
            inbound = config.inbound_port,
            workers = workers.len(),
            "proxy ready"
        );
        Ok(())
    }
}

/// A gateway's bound listeners: per port, the trigger that stops accepting on it.
type GatewayPorts = std::collections::BTreeMap<u16, drain::Trigger>;

/// Binds, on every worker, each listener port of the configuration in force that is not bound
/// yet, and stops accepting on the ports it no longer has (their connections carry on);
/// returns the ports bound. A port that cannot be bound is logged and tried again later.
fn sync_gateway_listeners(
    shared: &Arc<Shared>,
    workers: &[tokio::runtime::Handle],
    drain: &drain::Trigger,
    mut bound: GatewayPorts,
) -> GatewayPorts {
    let wanted: std::collections::BTreeSet<u16> =
        shared.runtime.load().listeners.keys().copied().collect();
    bound.retain(|port, stop| {
        let keep = wanted.contains(port);
        if !keep {
            info!(port, "gateway listener removed");
            stop.start();
        }
        keep
    });
    let new: Vec<u16> = wanted.into_iter().filter(|p| !bound.contains_key(p)).collect();
    for port in new {
        let address = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let listeners: anyhow::Result<Vec<TcpListener>> =
            workers.iter().map(|w| bind_worker(address, "a gateway listener", w)).collect();
        match listeners {
            Ok(listeners) => {
                let (stop, _) = drain::channel();
                for (worker, listener) in workers.iter().zip(listeners) {
                    let mut stopped = stop.watch();
                    let serving = listen::serve_until(
                        listener,
                        shared.clone(),
                        Side::Gateway,
                        drain.watch(),
                        async move { stopped.signaled().await },
                    );
                    worker.spawn(serving);
                }
                info!(port, "gateway listening");
                bound.insert(port, stop);
            }
            Err(err) => warn!("{err:#}"),
        }
    }
    bound
}

fn gateway_listeners(
    shared: &Arc<Shared>,
    workers: &[tokio::runtime::Handle],
    drain: &drain::Trigger,
) -> GatewayPorts {
    sync_gateway_listeners(shared, workers, drain, GatewayPorts::new())
}

/// Follows the configuration: every half second the gateway's ports are made to match its
/// listeners, until the proxy drains.
async fn keep_gateway_listeners(
    shared: Arc<Shared>,
    workers: Vec<tokio::runtime::Handle>,
    drain: drain::Trigger,
    mut bound: GatewayPorts,
) {
    let mut draining = drain.watch();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = draining.signaled() => return,
        }
        bound = sync_gateway_listeners(&shared, &workers, &drain, bound);
    }
}

/// The channel to the pilot: mTLS with the workload certificate to 15012, or plaintext with
/// `http://`.
fn xds_channel(
    config: &Config,
    settings: &Settings,
    trust_domain: &str,
    cert_store: Arc<mesh_identity::CertStore>,
    roots: Arc<rustls::RootCertStore>,
) -> anyhow::Result<tonic::transport::Channel> {
    if let Some(address) = settings.pilot_address.strip_prefix("http://") {
        warn!(%address, "xDS in plaintext: for local runs only");
        return Ok(tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .context("--pilot-address")?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy());
    }
    let pilot: SpiffeId = match &config.pilot_identity {
        Some(text) => text.parse().map_err(|e| {
            anyhow::anyhow!("--pilot-identity (or MESH_PILOT_IDENTITY) {text:?}: {e}")
        })?,
        None => SpiffeId::new(trust_domain, "mesh-system", "mesh-pilot")?,
    };
    let tls = mesh_identity::tls::mesh_client_config(cert_store, roots, vec![pilot])?;
    let host =
        settings.pilot_address.rsplit_once(':').map_or(settings.pilot_address.as_str(), |(h, _)| h);
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .with_context(|| format!("--pilot-address {}", settings.pilot_address))?;
    Ok(mesh_identity::grpc::grpc_channel(&settings.pilot_address, name, tls)
        .context("--pilot-address")?
        .connect_lazy())
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
