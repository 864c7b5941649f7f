//! How `mesh-agent` runs, for its `main` and for tests alike.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use mesh_api::identity::SpiffeId;
use mesh_identity::client::{CaClient, ClientMetrics, ClientSettings, TokenSource};
use tracing::info;

/// The agent's flags, each also an environment variable (the same names as mesh-proxy's).
#[derive(Debug, clap::Parser)]
#[command(
    name = "mesh-agent",
    version,
    about = "Serves a stock Envoy its mesh certificate over SDS"
)]
pub struct Config {
    /// mesh-ca's address and name, the mesh root (also served as `ROOTCA`), the pod's token.
    #[command(flatten)]
    pub ca: mesh_identity::flags::CaFlags,
    /// The pod's namespace: part of the workload identity.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: String,
    /// The pod's service account: the certificate is issued for it.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: String,
    /// Trust domain of workload identities.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_api::identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Lifetime asked of the CA.
    #[arg(long, env = "MESH_CERT_TTL", default_value = "24h", value_parser = duration)]
    pub cert_ttl: Duration,
    /// Where Envoy finds SDS (loopback: the key must not leave the pod).
    #[arg(long, env = "MESH_SDS_LISTEN", default_value = "127.0.0.1:15030")]
    pub sds_listen: SocketAddr,
    /// `--log-level` and `--log-format`.
    #[command(flatten)]
    pub log: mesh_runtime::log::LogFlags,
}

fn duration(text: &str) -> Result<Duration, String> {
    mesh_api::duration::parse(text).map_err(|e| e.to_string())
}

/// Obtains the certificate, then serves it over SDS until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.sds_listen.ip().is_loopback(),
        "--sds-listen {}: SDS hands out the workload's private key, so it listens on loopback only",
        config.sds_listen
    );
    let root = std::fs::read_to_string(&config.ca.root_cert)
        .with_context(|| format!("--root-cert {}", config.ca.root_cert.display()))?;
    let identity =
        SpiffeId::new(&config.trust_domain, &config.pod_namespace, &config.service_account)
            .context("--trust-domain/--pod-namespace/--service-account")?;
    let listener = tokio::net::TcpListener::bind(config.sds_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.sds_listen))?;
    let client = CaClient::new(ClientSettings {
        ca_address: config.ca.ca_address.clone(),
        ca_server_name: config.ca.ca_server_name.clone(),
        root_pems: vec![root.clone()],
        token: TokenSource::File(config.ca.token_path.clone()),
        identity: identity.clone(),
        ttl: config.cert_ttl,
        dns_names: Vec::new(),
    })
    .context("CA client")?;
    let metrics = ClientMetrics::register(&mut prometheus_client::registry::Registry::default());
    let (material, _rotation) = mesh_identity::client::start_sds(client, metrics, vec![root]).await;
    info!(%identity, address = %config.sds_listen, "serving the workload certificate over SDS");
    tonic::transport::Server::builder()
        .add_service(mesh_identity::sds::SecretService::new(material).into_server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                mesh_runtime::signal::shutdown().await;
            },
        )
        .await
        .context("SDS server")?;
    Ok(())
}
