//! How `mesh-ca` is put together, for its `main` and for tests alike: [`Config`] is what it
//! is started with, [`build`] makes the root (or loads it), binds its listeners and starts
//! serving, and [`Bound`] says where it listens and runs it until it is told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use mesh_api::ports;
use mesh_identity::{CertStore, tls};
use mesh_runtime::log::LogFlags;
use mesh_runtime::readiness::Ready;
use mesh_runtime::shutdown::{self, Shutdown};
use mesh_runtime::{admin, drain};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::auth::{self, Authenticator, TokenFile, TokenReviewer};
use crate::authority::{Authority, Policy};
use crate::metrics::{self, Metrics};
use crate::{distribute, root, server};

/// Where the CA keeps its root and how it authenticates callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// A directory for the root, a tokens file for callers.
    Local,
    /// A Secret for the root, TokenReview for callers, ConfigMaps for the root.
    Kubernetes,
}

/// What `mesh-ca` is started with: its flags, each also an environment variable.
#[derive(Debug, Parser)]
#[command(name = "mesh-ca", version, about = "The mesh's certificate authority")]
pub struct Config {
    /// Where the CA runs; by default Kubernetes inside a pod, local elsewhere.
    #[arg(long, env = "MESH_CA_MODE")]
    pub mode: Option<Mode>,
    /// Trust domain of the identities signed.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_api::identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Address of the gRPC server (TLS).
    #[arg(long, env = "MESH_CA_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::CA_GRPC)))]
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/ready` and `/healthz`.
    #[arg(long, env = "MESH_CA_MONITORING_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::CONTROL_PLANE_MONITORING)))]
    pub monitoring_listen: SocketAddr,
    /// A plugged-in intermediate CA (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
    /// `cert-chain.pem`); used instead of a self-signed root when it holds `ca-cert.pem`.
    #[arg(long, env = "MESH_CA_PLUGIN_DIR", default_value = "/etc/cacerts")]
    pub plugin_dir: PathBuf,
    /// Local mode: where the self-signed root is kept (made at first start).
    #[arg(long, env = "MESH_CA_STATE_DIR", default_value = "/var/lib/mesh-ca")]
    pub state_dir: PathBuf,
    /// Local mode: the tokens file (`<token> <namespace>/<service-account>` lines).
    #[arg(long, env = "MESH_CA_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Local mode: where to write `root-cert.pem` for workloads (the state dir by default).
    #[arg(long, env = "MESH_CA_ROOT_CERT_DIR")]
    pub root_cert_dir: Option<PathBuf>,
    /// Kubernetes mode: the namespace of the CA and of its Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = ports::CONTROL_PLANE_NAMESPACE)]
    pub namespace: String,
    /// Extra DNS names for the CA's serving certificate.
    #[arg(long = "server-name", env = "MESH_CA_SERVER_NAMES", value_delimiter = ',')]
    pub server_names: Vec<String>,
    /// Audience the callers' tokens must be issued for (Kubernetes mode).
    #[arg(long, env = "MESH_CA_TOKEN_AUDIENCE", default_value = auth::AUDIENCE)]
    pub token_audience: String,
    /// Lifetime of certificates when the caller asks for none.
    #[arg(long, env = "MESH_CA_DEFAULT_TTL", default_value = "24h", value_parser = duration)]
    pub default_ttl: Duration,
    /// The longest lifetime a caller may ask for.
    #[arg(long, env = "MESH_CA_MAX_TTL", default_value = "2160h", value_parser = duration)]
    pub max_ttl: Duration,
    /// `--log-level` and `--log-format`.
    #[command(flatten)]
    pub log: LogFlags,
    /// Where the CA's own spans (signings) go.
    #[command(flatten)]
    pub trace: mesh_trace::export::TraceFlags,
    /// The exporter of the CA's spans, once `main` has started it: its dropped spans are
    /// served as `mesh_ca_spans_dropped_total`.
    #[arg(skip)]
    pub span_stats: Option<Arc<mesh_trace::export::Stats>>,
}

fn duration(text: &str) -> Result<Duration, String> {
    mesh_api::duration::parse(text).map_err(|e| e.to_string())
}

/// How long a stopping CA waits for open connections (a signing call takes milliseconds).
const DRAIN: Duration = Duration::from_secs(5);

/// Lifetime of the CA's own serving certificate; renewed at half of it.
const SERVING_TTL: Duration = Duration::from_secs(24 * 3600);

/// A running CA: where it listens, its readiness, and how to stop it. Dropping it stops the
/// CA's servers.
#[derive(Debug)]
pub struct Bound {
    /// Address the gRPC (TLS) server listens on (the actual port when port 0 was asked for).
    pub grpc: SocketAddr,
    /// The monitoring address (`/metrics`, `/ready`, `/healthz`).
    pub monitoring: SocketAddr,
    /// Ready once the signing key is loaded and the gRPC server listens.
    pub ready: Ready,
    /// Stops the CA as SIGTERM would.
    pub shutdown: Shutdown,
    drain: drain::Trigger,
    grpc_task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// The CA's listeners, bound before it starts (by [`build`] from the flags, or by a test that
/// binds port 0 or inside a network namespace).
#[derive(Debug)]
pub struct Listeners {
    /// For the gRPC (TLS) server.
    pub grpc: std::net::TcpListener,
    /// For `/metrics`, `/ready` and `/healthz`.
    pub monitoring: std::net::TcpListener,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub fn bind(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            grpc: admin::bind_std(config.listen, "certificate requests")?,
            monitoring: admin::bind_std(config.monitoring_listen, "monitoring")?,
        })
    }
}

/// Loads or makes the root, binds the gRPC and monitoring listeners and starts serving.
pub async fn build(config: Config) -> anyhow::Result<Bound> {
    let listeners = Listeners::bind(&config)?;
    build_with(config, listeners).await
}

/// Like [`build`], on listeners bound already.
pub async fn build_with(flags: Config, listeners: Listeners) -> anyhow::Result<Bound> {
    let ready = Ready::new();
    let starting = ready.register("signing key and gRPC server");
    // One crypto provider for the whole process: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    mesh_api::identity::validate_trust_domain(&flags.trust_domain).context("--trust-domain")?;
    if flags.default_ttl > flags.max_ttl {
        bail!("--default-ttl {:?} is longer than --max-ttl {:?}", flags.default_ttl, flags.max_ttl);
    }
    let mode = flags.mode.unwrap_or(if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        Mode::Kubernetes
    } else {
        Mode::Local
    });
    let kube = match mode {
        Mode::Kubernetes => {
            Some(kube::Client::try_default().await.context("cannot reach the Kubernetes API")?)
        }
        Mode::Local => None,
    };

    let material = if flags.plugin_dir.join("ca-cert.pem").exists() {
        info!(dir = %flags.plugin_dir.display(), "signing with a plugged-in intermediate CA");
        root::load_plugin(&flags.plugin_dir).context("cannot load the plugged-in CA")?
    } else if let Some(client) = &kube {
        root::load_or_create_secret(
            client.clone(),
            &flags.namespace,
            root::SECRET_NAME,
            &flags.trust_domain,
        )
        .await
        .context("cannot load or create the root")?
    } else {
        root::load_or_create_dir(&flags.state_dir, &flags.trust_domain)
            .context("cannot load or create the root")?
    };
    let policy = Policy {
        default_ttl: flags.default_ttl,
        max_ttl: flags.max_ttl,
        control_plane_namespace: flags.namespace.clone(),
    };
    let authority = Arc::new(
        Authority::new(&material, &flags.trust_domain, policy)
            .context("cannot use the CA key material")?,
    );

    let metrics = Arc::new(Metrics::default());
    metrics.root_expiry.set(authority.root_not_after().unix_timestamp());
    if let Some(stats) = &flags.span_stats {
        metrics.spans_dropped.follow(stats.clone());
    }

    let authenticator = Arc::new(match (&kube, &flags.tokens_file) {
        (Some(client), _) => Authenticator::TokenReview(TokenReviewer::new(
            client.clone(),
            flags.token_audience.clone(),
        )),
        (None, Some(path)) => Authenticator::TokenFile(TokenFile::new(path)),
        (None, None) => bail!("local mode needs --tokens-file to authenticate callers"),
    });

    let mut names = vec![
        format!("mesh-ca.{}.svc", flags.namespace),
        format!("mesh-ca.{}.svc.cluster.local", flags.namespace),
        "mesh-ca".to_owned(),
    ];
    names.extend(flags.server_names.iter().filter(|n| !n.is_empty()).cloned());
    let (chain, key) = authority
        .issue_server_cert(&names, SERVING_TTL)
        .context("cannot issue the serving certificate")?;
    let serving = Arc::new(CertStore::new(&chain, &key).context("serving certificate")?);
    tokio::spawn(renew_serving_cert(authority.clone(), serving.clone(), names));

    let (trigger, watch) = drain::channel();
    let monitoring = admin::Server::from_std(listeners.monitoring, "monitoring")?;
    let monitoring_address = monitoring.local_addr()?;
    monitoring.spawn(watch.clone(), {
        let (metrics, ready) = (metrics.clone(), ready.clone());
        move |request| {
            let response = metrics::respond(request.uri().path(), &metrics, &ready);
            async move { response }
        }
    });

    match &kube {
        Some(client) => {
            let mut stopping = watch.clone();
            tokio::spawn(distribute::run(
                client.clone(),
                authority.root_pem().to_owned(),
                async move {
                    stopping.signaled().await;
                },
            ));
        }
        None => {
            let dir = flags.root_cert_dir.clone().unwrap_or_else(|| flags.state_dir.clone());
            distribute::write_root_file(&dir, authority.root_pem())
                .with_context(|| format!("cannot write root-cert.pem into {}", dir.display()))?;
            info!(dir = %dir.display(), "root certificate written");
        }
    }

    listeners.grpc.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listeners.grpc)?;
    let grpc = listener.local_addr()?;
    info!(address = %grpc, ?mode, trust_domain = %flags.trust_domain, "mesh-ca serving");
    let service = server::CaService::new(authority, authenticator, metrics);
    let tls_config = Arc::new(tls::ca_server_config(serving).context("TLS configuration")?);
    let mut stopping = watch.clone();
    let grpc_task = tokio::spawn(async move {
        // Held until the server has finished the requests in flight: the drain waits for it.
        let _serving = watch;
        server::serve_tls(listener, service, tls_config, async move { stopping.signaled().await })
            .await
    });
    starting.release();
    Ok(Bound {
        grpc,
        monitoring: monitoring_address,
        ready,
        shutdown: Shutdown::default(),
        drain: trigger,
        grpc_task,
    })
}

impl Bound {
    /// Serves until SIGTERM, SIGINT or [`Bound::shutdown`], then finishes the requests in
    /// flight (a signing call takes milliseconds) and returns.
    pub async fn run(self) -> anyhow::Result<()> {
        let Bound { ready, shutdown, drain, grpc_task, .. } = self;
        tokio::select! {
            failed = shutdown::failure(grpc_task) => match failed {
                Ok(err) => Err(err).context("gRPC server"),
                Err(err) => Err(err).context("gRPC server task"),
            },
            ended = shutdown::run(&shutdown, &ready, &drain, DRAIN) => {
                if let Err(err) = ended {
                    warn!("stopping anyway: {err}");
                }
                Ok(())
            }
        }
    }
}

/// Re-issues the CA's own serving certificate at half its life, without a restart; retries
/// every minute after a failure.
async fn renew_serving_cert(authority: Arc<Authority>, store: Arc<CertStore>, names: Vec<String>) {
    let mut wait = SERVING_TTL / 2;
    loop {
        tokio::time::sleep(wait).await;
        let renewed = authority
            .issue_server_cert(&names, SERVING_TTL)
            .map_err(|e| e.to_string())
            .and_then(|(chain, key)| store.replace(&chain, &key).map_err(|e| e.to_string()));
        wait = match renewed {
            Ok(()) => {
                info!("serving certificate renewed");
                SERVING_TTL / 2
            }
            Err(err) => {
                warn!("cannot renew the serving certificate, retrying in a minute: {err}");
                Duration::from_secs(60)
            }
        };
    }
}
