//! `mesh-ca`: the mesh's certificate authority. Signs SPIFFE workload certificates over
//! Istio's gRPC API (TLS, port 8060), distributes the root, and reports on port 15014.
//!
//! Local mode keeps its root in `--state-dir` and authenticates with `--tokens-file`;
//! Kubernetes mode keeps its root in the Secret `mesh-ca-secret` and asks TokenReview.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use mesh_api::ports;
use mesh_ca::auth::{self, Authenticator, TokenFile, TokenReviewer};
use mesh_ca::authority::{Authority, Policy};
use mesh_ca::metrics::{self, Metrics};
use mesh_ca::{distribute, root, server};
use mesh_identity::{CertStore, tls};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// A directory for the root, a tokens file for callers.
    Local,
    /// A Secret for the root, TokenReview for callers, ConfigMaps for the root.
    Kubernetes,
}

/// The mesh's certificate authority.
#[derive(Debug, Parser)]
#[command(name = "mesh-ca", version, about)]
struct Flags {
    /// Where the CA runs; by default Kubernetes inside a pod, local elsewhere.
    #[arg(long, env = "MESH_CA_MODE")]
    mode: Option<Mode>,
    /// Trust domain of the identities signed.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_api::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Address of the gRPC server (TLS).
    #[arg(long, env = "MESH_CA_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::CA_GRPC)))]
    listen: SocketAddr,
    /// Address of `/metrics`, `/ready` and `/healthz`.
    #[arg(long, env = "MESH_CA_MONITORING_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::CONTROL_PLANE_MONITORING)))]
    monitoring_listen: SocketAddr,
    /// A plugged-in intermediate CA (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
    /// `cert-chain.pem`); used instead of a self-signed root when it holds `ca-cert.pem`.
    #[arg(long, env = "MESH_CA_PLUGIN_DIR", default_value = "/etc/cacerts")]
    plugin_dir: PathBuf,
    /// Local mode: where the self-signed root is kept (made at first start).
    #[arg(long, env = "MESH_CA_STATE_DIR", default_value = "/var/lib/mesh-ca")]
    state_dir: PathBuf,
    /// Local mode: the tokens file (`<token> <namespace>/<service-account>` lines).
    #[arg(long, env = "MESH_CA_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Local mode: where to write `root-cert.pem` for workloads (the state dir by default).
    #[arg(long, env = "MESH_CA_ROOT_CERT_DIR")]
    root_cert_dir: Option<PathBuf>,
    /// Kubernetes mode: the namespace of the CA and of its Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = ports::CONTROL_PLANE_NAMESPACE)]
    namespace: String,
    /// Extra DNS names for the CA's serving certificate.
    #[arg(long = "server-name", env = "MESH_CA_SERVER_NAMES", value_delimiter = ',')]
    server_names: Vec<String>,
    /// Audience the callers' tokens must be issued for (Kubernetes mode).
    #[arg(long, env = "MESH_CA_TOKEN_AUDIENCE", default_value = auth::AUDIENCE)]
    token_audience: String,
    /// Lifetime of certificates when the caller asks for none.
    #[arg(long, env = "MESH_CA_DEFAULT_TTL", default_value = "24h", value_parser = duration)]
    default_ttl: Duration,
    /// The longest lifetime a caller may ask for.
    #[arg(long, env = "MESH_CA_MAX_TTL", default_value = "2160h", value_parser = duration)]
    max_ttl: Duration,
}

fn duration(text: &str) -> Result<Duration, String> {
    mesh_api::duration::parse(text).map_err(|e| e.to_string())
}

/// How long a stopping CA waits for open connections (a signing call takes milliseconds).
const DRAIN: Duration = Duration::from_secs(5);

/// Lifetime of the CA's own serving certificate; renewed at half of it.
const SERVING_TTL: Duration = Duration::from_secs(24 * 3600);

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
            eprintln!("mesh-ca: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
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
    let policy = Policy { default_ttl: flags.default_ttl, max_ttl: flags.max_ttl };
    let authority = Arc::new(
        Authority::new(&material, &flags.trust_domain, policy)
            .context("cannot use the CA key material")?,
    );

    let metrics = Arc::new(Metrics::default());
    metrics.root_expiry.set(authority.root_not_after().unix_timestamp());

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

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let ready = Arc::new(AtomicBool::new(false));
    let monitoring = TcpListener::bind(flags.monitoring_listen)
        .await
        .with_context(|| format!("cannot listen on {} for monitoring", flags.monitoring_listen))?;
    tokio::spawn(metrics::serve(
        monitoring,
        metrics.clone(),
        ready.clone(),
        stopped(stop_rx.clone()),
    ));

    match &kube {
        Some(client) => {
            tokio::spawn(distribute::run(
                client.clone(),
                authority.root_pem().to_owned(),
                stopped(stop_rx.clone()),
            ));
        }
        None => {
            let dir = flags.root_cert_dir.clone().unwrap_or_else(|| flags.state_dir.clone());
            distribute::write_root_file(&dir, authority.root_pem())
                .with_context(|| format!("cannot write root-cert.pem into {}", dir.display()))?;
            info!(dir = %dir.display(), "root certificate written");
        }
    }

    let listener = TcpListener::bind(flags.listen)
        .await
        .with_context(|| format!("cannot listen on {}", flags.listen))?;
    info!(address = %flags.listen, ?mode, trust_domain = %flags.trust_domain, "mesh-ca serving");
    let service = server::CaService::new(authority, authenticator, metrics);
    let tls_config = Arc::new(tls::ca_server_config(serving).context("TLS configuration")?);
    let grpc = tokio::spawn(server::serve_tls(listener, service, tls_config, stopped(stop_rx)));
    ready.store(true, Ordering::Release);

    shutdown_signal().await;
    info!("shutting down: finishing requests in flight");
    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN, grpc).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(err))) => Err(err).context("gRPC server"),
        Ok(Err(err)) => Err(err).context("gRPC server task"),
        Err(_) => {
            warn!(drain = ?DRAIN, "connections still open after the drain period; stopping anyway");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            warn!("cannot watch SIGTERM ({err}); only Ctrl-C stops the CA");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
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
