//! How `mesh-pilot` is put together, for its `main` and for tests alike: [`Config`] is what it
//! is started with, [`build`] binds its listeners, starts its config source and serves xDS,
//! and [`Bound`] says where it listens and runs it until it is told to stop.
//!
//! Everything the binary does happens here (the config source, the debounce, the trust domain
//! stamped on every snapshot, the count of rejected config), so a test that builds the pilot
//! gets exactly what the binary serves.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use mesh_api::{inject, ports};
use mesh_identity::client::{CaClient, ClientSettings, TokenSource};
use mesh_runtime::log::LogFlags;
use mesh_runtime::readiness::{Guard, Ready};
use mesh_runtime::shutdown::{self, Shutdown};
use mesh_runtime::{admin, drain};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::ads::{self, Discovery};
use crate::model::Snapshot;
use crate::{changes, debug, source};

/// What `mesh-pilot` is started with: its flags, each also an environment variable.
#[derive(Debug, Parser)]
#[command(name = "mesh-pilot", version, about = "The mesh's control plane")]
pub struct Config {
    /// Local mode: a directory of Services, WorkloadEntries, ServiceEntries and Istio routing
    /// config, read again when it changes. Without it the pilot watches the Kubernetes API.
    #[arg(long, env = "MESH_PILOT_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Address of the plaintext xDS server, served in local mode or with `--xds-plaintext`
    /// only: it admits anyone as any proxy, so it stays on loopback unless named otherwise.
    #[arg(long, env = "MESH_PILOT_XDS_LISTEN", default_value_t = SocketAddr::from(([127, 0, 0, 1], ports::PILOT_XDS_PLAINTEXT)))]
    pub xds_listen: SocketAddr,
    /// Serve plaintext xDS in Kubernetes mode too (for debugging: proxies use mTLS on 15012).
    #[arg(long, env = "MESH_PILOT_XDS_PLAINTEXT")]
    pub xds_plaintext: bool,
    /// Address of the mTLS xDS server; served when `--ca-address` is set.
    #[arg(long, env = "MESH_PILOT_XDS_MTLS_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::PILOT_XDS_TLS)))]
    pub xds_mtls_listen: SocketAddr,
    /// `host:port` of mesh-ca. With it the pilot gets its own certificate and serves xDS over
    /// mTLS, admitting each proxy only as the workload its certificate names.
    #[arg(long, env = "MESH_CA_ADDRESS")]
    pub ca_address: Option<String>,
    /// The DNS name in the CA's serving certificate.
    #[arg(long, env = "MESH_CA_SERVER_NAME", default_value = "mesh-ca.mesh-system.svc")]
    pub ca_server_name: String,
    /// The mesh root certificate (PEM): verifies the CA and the proxies' certificates.
    #[arg(long, env = "MESH_ROOT_CERT", default_value = "/var/run/secrets/mesh/root-cert.pem")]
    pub root_cert: PathBuf,
    /// The pilot's token for the CA (a projected service-account token, or a local token).
    #[arg(long, env = "MESH_TOKEN_PATH", default_value = "/var/run/secrets/tokens/mesh-token")]
    pub token_path: PathBuf,
    /// The pilot's namespace (its identity is `ns/<namespace>/sa/<service account>`).
    #[arg(long, env = "POD_NAMESPACE", default_value = ports::CONTROL_PLANE_NAMESPACE)]
    pub namespace: String,
    /// The pilot's service account.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "mesh-pilot")]
    pub service_account: String,
    /// Address of `/metrics`, `/ready` and `/debug/*`. `/debug/*` is answered on a loopback
    /// address, or elsewhere to requests with the token of `--debug-token-file`.
    #[arg(long, env = "MESH_PILOT_MONITORING_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::CONTROL_PLANE_MONITORING)))]
    pub monitoring_listen: SocketAddr,
    /// A file holding the token (trimmed) that `/debug/*` requests must carry as
    /// `Authorization: Bearer <token>` when monitoring is not on loopback.
    #[arg(long, env = "MESH_PILOT_DEBUG_TOKEN_FILE")]
    pub debug_token_file: Option<PathBuf>,
    /// A push waits for this much quiet after a change.
    #[arg(long, env = "MESH_PILOT_DEBOUNCE_AFTER", default_value = "100ms", value_parser = duration)]
    pub debounce_after: Duration,
    /// ...but never longer than this under continuous changes.
    #[arg(long, env = "MESH_PILOT_DEBOUNCE_MAX", default_value = "1s", value_parser = duration)]
    pub debounce_max: Duration,
    /// Trust domain of workload identities (`spiffe://<trust domain>/ns/../sa/..`).
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_api::identity::DEFAULT_TRUST_DOMAIN, value_parser = trust_domain)]
    pub trust_domain: String,
    /// How often the config directory (and the mesh config file) is checked for changes.
    #[arg(long, env = "MESH_PILOT_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    pub poll_interval: Duration,
    /// The mesh config (Istio's MeshConfig YAML: `extensionProviders`, `defaultProviders`,
    /// tracing and access log defaults, the root namespace), read again when it changes. In
    /// Kubernetes mode the chart's mount (`/etc/mesh/config/mesh`) when it exists; without
    /// one, Istio's defaults.
    #[arg(long, env = "MESH_PILOT_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// Address of the admission webhooks (`/inject`, `/validate`) over HTTPS; served when
    /// `--ca-address` is set, with the pilot's certificate (which then also names its Service).
    #[arg(long, env = "MESH_PILOT_WEBHOOK_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::INJECTION_WEBHOOK)))]
    pub webhook_listen: SocketAddr,
    /// What the injection webhook puts into pods.
    #[command(flatten)]
    pub inject: InjectFlags,
    /// Logging.
    #[command(flatten)]
    pub log: LogFlags,
    /// Where the pilot's own spans (pushes) go.
    #[command(flatten)]
    pub trace: mesh_trace::export::TraceFlags,
}

/// The sidecar the injection webhook puts into pods (`meshctl kube-inject` takes the same).
#[derive(Debug, clap::Args)]
pub struct InjectFlags {
    /// The mesh-proxy image.
    #[arg(long = "inject-proxy-image", env = "MESH_INJECT_PROXY_IMAGE", default_value_t = inject::Config::default().proxy_image)]
    pub proxy_image: String,
    /// The mesh-init image.
    #[arg(long = "inject-init-image", env = "MESH_INJECT_INIT_IMAGE", default_value_t = inject::Config::default().init_image)]
    pub init_image: String,
    /// Inject the proxy as a native sidecar (Kubernetes 1.29+) unless a pod says otherwise.
    #[arg(long = "inject-native-sidecar", env = "MESH_INJECT_NATIVE_SIDECAR", default_value_t = true, action = clap::ArgAction::Set)]
    pub native_sidecar: bool,
}

impl Config {
    /// The injection settings: the images and the addresses of this control plane.
    pub fn injection(&self) -> inject::Config {
        let namespace = &self.namespace;
        inject::Config {
            proxy_image: self.inject.proxy_image.clone(),
            init_image: self.inject.init_image.clone(),
            native_sidecar: self.inject.native_sidecar,
            pilot_address: format!("mesh-pilot.{namespace}.svc:{}", ports::PILOT_XDS_TLS),
            ca_address: format!("mesh-ca.{namespace}.svc:{}", ports::CA_GRPC),
            trust_domain: self.trust_domain.clone(),
            ..inject::Config::default()
        }
    }

    /// Where plaintext xDS is served: `--xds-listen` in local mode or with `--xds-plaintext`;
    /// nowhere in Kubernetes mode without it (it would admit anyone as any proxy).
    pub fn plaintext_xds(&self) -> Option<SocketAddr> {
        (self.config_dir.is_some() || self.xds_plaintext).then_some(self.xds_listen)
    }

    /// The DNS names of the pilot's Service, which the API server calls the webhooks by.
    pub fn service_dns_names(&self) -> Vec<String> {
        let service = format!("{}.{}.svc", self.service_account, self.namespace);
        vec![service.clone(), format!("{service}.cluster.local")]
    }
}

fn trust_domain(text: &str) -> Result<String, String> {
    mesh_api::identity::validate_trust_domain(text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

fn duration(text: &str) -> Result<Duration, String> {
    mesh_api::duration::parse(text).map_err(|e| e.to_string())
}

/// How long a stopping pilot waits for xDS streams to close. Proxies keep their configuration
/// and reconnect to another pilot, so nothing waits longer.
const DRAIN: Duration = Duration::from_secs(2);

/// The pilot's listeners, bound before it starts (by [`build`] from the flags, or by a test
/// that binds port 0 or inside a network namespace).
#[derive(Debug)]
pub struct Listeners {
    /// For plaintext xDS: served when there is one (see [`Config::plaintext_xds`]).
    pub xds: Option<std::net::TcpListener>,
    /// For xDS over mTLS: needed with `--ca-address`, unused without.
    pub xds_mtls: Option<std::net::TcpListener>,
    /// For `/metrics`, `/ready` and `/debug/*`.
    pub monitoring: std::net::TcpListener,
    /// For the admission webhooks: served with `--ca-address`, unused without.
    pub webhook: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config` (the mTLS one only with `--ca-address`, the plaintext
    /// one only where [`Config::plaintext_xds`] says).
    pub fn bind(config: &Config) -> anyhow::Result<Self> {
        let (xds_mtls, webhook) = match config.ca_address {
            Some(_) => (
                Some(admin::bind_std(config.xds_mtls_listen, "xDS over mTLS")?),
                Some(admin::bind_std(config.webhook_listen, "admission webhooks")?),
            ),
            None => (None, None),
        };
        Ok(Self {
            xds: config.plaintext_xds().map(|a| admin::bind_std(a, "plaintext xDS")).transpose()?,
            xds_mtls,
            monitoring: admin::bind_std(config.monitoring_listen, "monitoring")?,
            webhook,
        })
    }
}

/// A running pilot: where it listens, its readiness, what it serves, and how to stop it.
/// Dropping it stops its servers and its config source (xDS streams end, as on SIGTERM).
pub struct Bound {
    /// The plaintext xDS address, when it is served.
    pub xds: Option<SocketAddr>,
    /// The mTLS xDS address, with `--ca-address`.
    pub xds_mtls: Option<SocketAddr>,
    /// The monitoring address (`/metrics`, `/ready`, `/debug/*`).
    pub monitoring: SocketAddr,
    /// The admission webhooks' address (HTTPS), with `--ca-address`.
    pub webhook: Option<SocketAddr>,
    /// Ready once the first configuration is published and, with `--ca-address`, the pilot
    /// has its certificate.
    pub ready: Ready,
    /// Stops the pilot as SIGTERM would.
    pub shutdown: Shutdown,
    /// The xDS server state: its streams' sync status and its metrics.
    pub discovery: Arc<Discovery>,
    /// The published snapshots (numbered from 1; 0 is the empty one before the first read).
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    drain: drain::Trigger,
    xds_task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    mtls_task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("xds", &self.xds)
            .field("xds_mtls", &self.xds_mtls)
            .field("monitoring", &self.monitoring)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

/// Binds the listeners of `config`, starts the config source and serves xDS.
pub async fn build(config: Config) -> anyhow::Result<Bound> {
    let listeners = Listeners::bind(&config)?;
    build_with(config, listeners).await
}

/// Like [`build`], on listeners bound already.
pub async fn build_with(config: Config, listeners: Listeners) -> anyhow::Result<Bound> {
    if let Some(dir) = &config.config_dir
        && !dir.is_dir()
    {
        bail!("--config-dir {} is not a directory", dir.display());
    }
    let debug_token = config.debug_token_file.as_deref().map(debug::access::Token::read);
    let debug_token = debug_token.transpose()?;
    let ready = Ready::new();
    let first_configuration = ready.register("first configuration");
    let (trigger, watch) = drain::channel();
    // Kubernetes mode: the config source, the webhooks' namespace labels and their caBundle.
    let client = match &config.config_dir {
        Some(_) => None,
        None => Some(
            kube::Client::try_default()
                .await
                .context("no --config-dir and cannot reach the Kubernetes API")?,
        ),
    };
    let webhook = match listeners.webhook {
        Some(listener) if config.ca_address.is_some() => {
            let webhooks = Arc::new(webhooks(&config, client.as_ref(), &watch));
            Some((tokio_listener(listener)?, webhooks))
        }
        _ => None,
    };
    let webhook_address = match &webhook {
        Some((listener, _)) => Some(listener.local_addr()?),
        None => None,
    };
    let mtls = match (&config.ca_address, listeners.xds_mtls) {
        (Some(ca), Some(listener)) => {
            let certificate = ready.register("pilot certificate");
            Some((mtls_settings(&config, ca, webhook.is_some())?, listener, certificate))
        }
        (Some(_), None) => bail!("--ca-address is set but no listener for xDS over mTLS"),
        (None, _) => {
            info!("no --ca-address: xDS over mTLS ({}) is off", config.xds_mtls_listen);
            None
        }
    };

    let (publish, snapshots) = watch::channel(Arc::new(Snapshot::default()));
    let discovery = Discovery::new(snapshots.clone());
    let source = start_config(&config, client.clone(), publish, &discovery, &watch)?;
    if let (Some(client), Some(_)) = (&client, &webhook) {
        let keeping = crate::webhook::ca_bundle::run(client.clone(), config.root_cert.clone());
        tokio::spawn(until_drained(watch.clone(), keeping));
    }
    let mut first = snapshots.clone();
    tokio::spawn(async move {
        if first.wait_for(|s| s.version > 0).await.is_ok() {
            first_configuration.release();
        }
    });

    let monitoring = admin::Server::from_std(listeners.monitoring, "monitoring")?;
    let monitoring_address = monitoring.local_addr()?;
    let access = debug::DebugAccess::new(monitoring_address, debug_token);
    info!(address = %monitoring_address, "/debug/* answered {}", access.describe());
    let state = Arc::new(debug::State {
        discovery: discovery.clone(),
        snapshots: snapshots.clone(),
        ready: ready.clone(),
        access,
    });
    monitoring.spawn(watch.clone(), move |request| {
        let (parts, _) = request.into_parts();
        let state = state.clone();
        async move { debug::respond(&parts, &state).await }
    });

    let (xds, xds_task) = match listeners.xds {
        Some(listener) => {
            let listener = tokio_listener(listener)?;
            let address = listener.local_addr()?;
            info!(%address, %source, "mesh-pilot serving plaintext xDS");
            let serving = serve_plaintext(discovery.clone(), listener, watch.clone());
            (Some(address), Some(tokio::spawn(serving)))
        }
        None => {
            let why = match config.plaintext_xds() {
                Some(_) => "no listener for it",
                None => "Kubernetes mode without --xds-plaintext (proxies use xDS over mTLS)",
            };
            info!(%source, "plaintext xDS is off: {why}");
            (None, None)
        }
    };
    if xds.is_none() && mtls.is_none() {
        warn!("no xDS is served: neither --ca-address (mTLS) nor --xds-plaintext is set");
    }
    let (xds_mtls, mtls_task) = match mtls {
        Some((settings, listener, certificate)) => {
            let listener = tokio_listener(listener)?;
            let address = listener.local_addr()?;
            let serving =
                serve_mtls(settings, listener, webhook, discovery.clone(), certificate, watch);
            (Some(address), Some(tokio::spawn(serving)))
        }
        None => (None, None),
    };
    Ok(Bound {
        xds,
        xds_mtls,
        monitoring: monitoring_address,
        webhook: webhook_address,
        ready,
        shutdown: Shutdown::default(),
        discovery,
        snapshots,
        drain: trigger,
        xds_task,
        mtls_task,
    })
}

impl Bound {
    /// Serves until SIGTERM, SIGINT or [`Bound::shutdown`], then drains: not ready, no new
    /// connections, the config source stopped, which ends every xDS stream (proxies keep their
    /// configuration and reconnect to another pilot); gives up waiting after 2 s. Returns
    /// early with the error if an xDS server fails.
    pub async fn run(self) -> anyhow::Result<()> {
        let Bound { ready, shutdown, drain, xds_task, mtls_task, .. } = self;
        let failed = |task: Option<_>, what| async move {
            match task {
                Some(task) => failure(task, what).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            err = failed(xds_task, "xDS server task") => Err(err),
            err = failed(mtls_task, "mTLS xDS server task") => Err(err),
            ended = shutdown::run(&shutdown, &ready, &drain, DRAIN) => {
                if let Err(err) = ended {
                    warn!("stopping anyway: {err}");
                }
                Ok(())
            }
        }
    }
}

/// Serves plaintext xDS on `listener` until draining starts (the drain waits for it).
async fn serve_plaintext(
    discovery: Arc<Discovery>,
    listener: TcpListener,
    watch: drain::Watch,
) -> anyhow::Result<()> {
    let (mut stopping, _serving) = (watch.clone(), watch);
    tonic::transport::Server::builder()
        .add_service(discovery.service())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move { stopping.signaled().await },
        )
        .await
        .context("xDS server")
}

/// Why a server task failed; never returns if it ended well (see [`shutdown::failure`]).
async fn failure(
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    what: &'static str,
) -> anyhow::Error {
    match shutdown::failure(task).await {
        Ok(err) => err,
        Err(err) => anyhow::Error::new(err).context(what),
    }
}

/// Starts the config source (the directory of `--config-dir`, or the Kubernetes API) and the
/// debounce that publishes what it reads into `publish`; both stop when draining starts,
/// which ends every xDS stream. Says what the source is.
fn start_config(
    config: &Config,
    client: Option<kube::Client>,
    publish: watch::Sender<Arc<Snapshot>>,
    discovery: &Discovery,
    watch: &drain::Watch,
) -> anyhow::Result<String> {
    // Latest wins: a source never waits for the debouncer, and its last read is what is served.
    let (read, changes) = (changes::Changes::default(), changes::Changes::default());
    let (after, max) = (config.debounce_after, config.debounce_max);
    // Between the source and the debouncer: the keys of token issuers, fetched here.
    let fetcher = crate::jwks::HttpFetch::new();
    tokio::spawn(until_drained(
        watch.clone(),
        crate::jwks::resolve(read.clone(), changes.clone(), fetcher),
    ));
    // The mesh config, stamped on each snapshot as it is published (a change of it alone
    // publishes the last snapshot again).
    let mesh_path =
        crate::mesh_config::path(config.mesh_config.as_deref(), config.config_dir.is_some());
    let mesh = crate::mesh_config::read(mesh_path.as_deref())
        .with_context(|| "the mesh config".to_owned())?;
    match &mesh_path {
        Some(path) => info!(path = %path.display(), "mesh config read"),
        None => info!("no mesh config file: Istio's defaults"),
    }
    let (mesh_tx, mesh_rx) = watch::channel(Arc::new(mesh));
    if let Some(path) = mesh_path {
        let watching = crate::mesh_config::watch(path, config.poll_interval, mesh_tx);
        tokio::spawn(until_drained(watch.clone(), watching));
    }
    let metrics = discovery.metrics.clone();
    let trust_domain = config.trust_domain.clone();
    let on_change = move |mut snapshot: Snapshot, rejected: Vec<source::Rejected>| {
        snapshot.trust_domain.clone_from(&trust_domain);
        metrics.config_rejected.set(i64::try_from(rejected.len()).unwrap_or(i64::MAX));
        for problem in &rejected {
            warn!("config left out: {problem}");
        }
        for target in crate::translate::cluster::own_port_targets(&snapshot) {
            warn!("not served inbound: {target}");
        }
        info!(services = snapshot.services.len(), rejected = rejected.len(), "configuration read");
        read.put(snapshot);
    };
    let source = match (&config.config_dir, client) {
        (Some(dir), _) => {
            let watching = source::local::watch(dir.clone(), config.poll_interval, on_change);
            tokio::spawn(until_drained(watch.clone(), watching));
            format!("directory {}", dir.display())
        }
        (None, Some(client)) => {
            tokio::spawn(until_drained(watch.clone(), source::kube::run(client, on_change)));
            "the Kubernetes API".to_owned()
        }
        (None, None) => bail!("neither --config-dir nor a Kubernetes client"),
    };
    let debounce = changes::debounce_with_mesh(changes.clone(), publish, after, max, mesh_rx);
    tokio::spawn(until_drained(watch.clone(), debounce));
    Ok(source)
}

/// What the webhooks answer with. In Kubernetes mode the namespaces' labels come from a
/// reflector started here; in local mode no namespace is labelled (pods ask for the sidecar
/// with the `sidecar.mesh.io/inject` label).
fn webhooks(
    config: &Config,
    client: Option<&kube::Client>,
    watch: &drain::Watch,
) -> crate::webhook::server::Webhooks {
    use crate::webhook::server::{Namespaces, Webhooks};
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, reflector, watcher};
    let namespaces = match client {
        Some(client) => {
            let api = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
            let (store, writer) = reflector::store();
            let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff()
                .for_each(|event| async move {
                    if let Err(err) = event {
                        warn!("watching namespaces for injection: {err}");
                    }
                });
            tokio::spawn(until_drained(watch.clone(), stream));
            Namespaces::Watched(store)
        }
        None => Namespaces::Fixed(Arc::default()),
    };
    Webhooks { config: config.injection(), namespaces }
}

/// Runs `work` until it ends or draining starts.
async fn until_drained(mut watch: drain::Watch, work: impl Future<Output = ()>) {
    tokio::select! {
        () = work => {}
        () = watch.signaled() => {}
    }
}

fn tokio_listener(listener: std::net::TcpListener) -> anyhow::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener)?)
}

/// What the mTLS xDS server needs, read from the flags.
struct MtlsSettings {
    client: CaClient,
    roots: Arc<rustls::RootCertStore>,
    trust_domain: String,
}

fn mtls_settings(config: &Config, ca: &str, webhook: bool) -> anyhow::Result<MtlsSettings> {
    let root = std::fs::read_to_string(&config.root_cert).with_context(|| {
        format!("cannot read the mesh root certificate {}", config.root_cert.display())
    })?;
    let roots = mesh_identity::tls::roots(std::slice::from_ref(&root))
        .with_context(|| format!("the mesh root certificate {}", config.root_cert.display()))?;
    let identity = mesh_api::identity::SpiffeId::new(
        &config.trust_domain,
        &config.namespace,
        &config.service_account,
    )
    .context("the pilot's own identity")?;
    let client = CaClient::new(ClientSettings {
        ca_address: ca.to_owned(),
        ca_server_name: config.ca_server_name.clone(),
        root_pems: vec![root],
        token: TokenSource::File(config.token_path.clone()),
        identity,
        ttl: Duration::ZERO,
        // The webhooks are called by the Service's name; the xDS clients check the identity.
        dns_names: if webhook { config.service_dns_names() } else { Vec::new() },
    })
    .context("the CA client")?;
    Ok(MtlsSettings { client, roots, trust_domain: config.trust_domain.clone() })
}

/// Gets the pilot's certificate from the CA (retrying until it does, then keeping it fresh),
/// releases `certificate`, and serves xDS over mTLS and the webhooks with it until draining
/// starts.
async fn serve_mtls(
    settings: MtlsSettings,
    listener: TcpListener,
    webhook: Option<(TcpListener, Arc<crate::webhook::server::Webhooks>)>,
    discovery: Arc<Discovery>,
    certificate: Guard,
    watch: drain::Watch,
) -> anyhow::Result<()> {
    let MtlsSettings { client, roots, trust_domain } = settings;
    let metrics = discovery.metrics.certificate.clone();
    let mut stopping = watch.clone();
    let (store, rotation) = tokio::select! {
        started = mesh_identity::client::start(client, metrics) => started,
        () = stopping.signaled() => return Ok(()),
    };
    if let Some((listener, webhooks)) = webhook {
        let address = listener.local_addr()?;
        crate::webhook::server::spawn(listener, store.clone(), webhooks, watch.clone())
            .context("the webhooks' TLS settings")?;
        info!(%address, "mesh-pilot serving the admission webhooks");
    }
    certificate.release();
    info!(address = %listener.local_addr()?, "mesh-pilot serving xDS over mTLS");
    let served = ads::serve_mtls(discovery, listener, store, roots, &trust_domain, async move {
        stopping.signaled().await;
    })
    .await;
    rotation.abort();
    // Held until the server has stopped: the drain waits for it.
    drop(watch);
    served.context("mTLS xDS server")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("mesh-pilot").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn plaintext_xds_only_in_local_mode_or_when_asked_and_on_loopback_by_default() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], ports::PILOT_XDS_PLAINTEXT));
        assert_eq!(parse(&[]).plaintext_xds(), None, "Kubernetes mode");
        assert_eq!(parse(&["--xds-listen", "0.0.0.0:15010"]).plaintext_xds(), None);
        assert_eq!(parse(&["--xds-plaintext"]).plaintext_xds(), Some(loopback));
        assert_eq!(parse(&["--config-dir", "/etc/mesh"]).plaintext_xds(), Some(loopback));
        let bridge = ["--config-dir", "/etc/mesh", "--xds-listen", "10.77.0.2:15010"];
        assert_eq!(parse(&bridge).plaintext_xds(), Some("10.77.0.2:15010".parse().unwrap()));
    }
}
