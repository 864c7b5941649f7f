//! The CA client the proxy uses: makes a key in memory, asks the CA to sign it with the
//! workload's token, checks what comes back, and keeps it fresh — rotating at half the
//! lifetime, retrying with backoff while the CA is down, and serving the current certificate
//! meanwhile through a [`CertStore`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_api::identity::SpiffeId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::grpc::grpc_channel;
use crate::pb::IstioCertificateRequest;
use crate::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use crate::sds::Material;
use crate::store::CertStore;
use crate::tls::{self, TlsError};
use crate::verify::peer_identity;
use tokio::sync::watch;

/// Where the workload's token comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// A file, read again for every request (projected tokens are refreshed on disk).
    File(PathBuf),
    /// A token held in memory, sent as is with every request (tests, local tools).
    Value(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
            // Never print a bearer token.
            TokenSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// How to reach the CA and what to ask for.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// `host:port` of the CA.
    pub ca_address: String,
    /// The DNS name in the CA's serving certificate (`mesh-ca.mesh-system.svc`).
    pub ca_server_name: String,
    /// Roots the CA's certificate and the issued certificates must verify to (PEM).
    pub root_pems: Vec<String>,
    /// Bearer token that authenticates the workload to the CA (a service account token).
    pub token: TokenSource,
    /// The identity the workload expects (the CA decides; a mismatch is an error).
    pub identity: SpiffeId,
    /// Certificate lifetime asked of the CA, sent in whole seconds (0: the CA's default); the CA
    /// refuses more than its maximum.
    pub ttl: Duration,
    /// DNS names asked for besides the identity: only the control plane gets them (the pilot's
    /// webhook is called by its Service's name); the CA refuses them to anyone else.
    pub dns_names: Vec<String>,
}

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA address or the CA server name cannot be used.
    #[error("CA client settings: {0}")]
    Settings(String),
    /// The token could not be read.
    #[error("cannot read the token {path}: {source}")]
    Token {
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA answered with an error.
    #[error("the CA refused: {code:?}: {message}")]
    Refused {
        /// The gRPC status code.
        code: tonic::Code,
        /// The CA's message.
        message: String,
    },
    /// What the CA returned is not usable.
    #[error("the CA returned an unusable certificate: {0}")]
    BadCertificate(String),
    /// Key or CSR generation failed.
    #[error("cannot make a key or CSR: {0}")]
    Key(String),
    /// The roots, the CA's TLS configuration or the issued chain and key do not make a usable
    /// rustls configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A certificate issued to this workload.
pub struct Issued {
    /// The chain, leaf first, PEM.
    pub chain: Vec<String>,
    key_pem: String,
    /// Start of validity (backdated by the CA for clock skew).
    pub not_before: SystemTime,
    /// When this client received it.
    pub received: SystemTime,
    /// End of validity (the leaf's `notAfter`); rotation is due half-way from `received`.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

impl Issued {
    /// When to replace it: half-way through its life from when it was received (the CA
    /// backdates the start for clock skew, which must not count), give or take 1% so that a
    /// fleet started together does not come back together.
    pub fn rotate_at(&self, jitter: f64) -> SystemTime {
        let life = self.not_after.duration_since(self.received).unwrap_or_default();
        let fraction = (0.5 + jitter.clamp(-0.01, 0.01)).max(0.0);
        self.received + life.mul_f64(fraction)
    }
}

/// A new key pair (in memory only) and a CSR for it, asking for `identity` and `dns_names`.
pub fn new_csr(
    identity: &SpiffeId,
    dns_names: &[String],
) -> Result<(KeyPair, String), ClientError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ClientError::Key(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let uri = identity
        .to_string()
        .try_into()
        .map_err(|e: rcgen::Error| ClientError::Key(e.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    for name in dns_names {
        let name =
            name.clone().try_into().map_err(|e: rcgen::Error| ClientError::Key(e.to_string()))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    let csr = params.serialize_request(&key).map_err(|e| ClientError::Key(e.to_string()))?;
    let pem = csr.pem().map_err(|e| ClientError::Key(e.to_string()))?;
    Ok((key, pem))
}

/// A client of the CA's `IstioCertificateService`: obtains certificates for the workload's identity
/// and checks them against the mesh roots.
#[derive(Clone)]
pub struct CaClient {
    settings: ClientSettings,
    grpc: IstioCertificateServiceClient<Channel>,
    anchors: Vec<CertificateDer<'static>>,
}

impl CaClient {
    /// A client; the connection is made on first use and re-made after failures.
    pub fn new(settings: ClientSettings) -> Result<Self, ClientError> {
        let roots = tls::roots(&settings.root_pems)?;
        let anchors = tls::certs_from_pem(&settings.root_pems)?;
        let server_name = ServerName::try_from(settings.ca_server_name.clone()).map_err(|e| {
            ClientError::Settings(format!("CA server name {:?}: {e}", settings.ca_server_name))
        })?;
        let address = settings.ca_address.clone();
        let channel = grpc_channel(&address, server_name, tls::ca_client_config(roots)?)
            .map_err(|e| ClientError::Settings(format!("CA address {address:?}: {e}")))?
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        Ok(Self { settings, grpc: IstioCertificateServiceClient::new(channel), anchors })
    }

    /// Obtains a new certificate: a fresh key and CSR, sent with the workload's token, and the
    /// answer checked against the roots, the identity and the key.
    pub async fn fetch(&self) -> Result<Issued, ClientError> {
        let token = match &self.settings.token {
            TokenSource::Value(token) => token.clone(),
            TokenSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|source| ClientError::Token { path: path.clone(), source })?
                .trim()
                .to_owned(),
        };
        let (key, csr) = new_csr(&self.settings.identity, &self.settings.dns_names)?;
        let ttl = i64::try_from(self.settings.ttl.as_secs()).unwrap_or(i64::MAX);
        let chain = self.request(csr, ttl, Some(&token)).await.map_err(|s| {
            ClientError::Refused { code: s.code(), message: s.message().to_owned() }
        })?;
        self.check(chain, key.serialize_pem())
    }

    /// Sends one `CreateCertificate` call as given (a CSR in PEM, a lifetime in seconds, an
    /// optional bearer token) and returns the chain unchecked, or the CA's status.
    pub async fn request(
        &self,
        csr: String,
        ttl_secs: i64,
        token: Option<&str>,
    ) -> Result<Vec<String>, tonic::Status> {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: ttl_secs,
            metadata: None,
        });
        if let Some(token) = token {
            let header = format!("Bearer {token}").parse().map_err(|_| {
                tonic::Status::invalid_argument("the token is not a valid header value")
            })?;
            request.metadata_mut().insert("authorization", header);
        }
        Ok(self.grpc.clone().create_certificate(request).await?.into_inner().cert_chain)
    }

    /// The chain must verify to our roots, be for our identity, and carry our key.
    fn check(&self, chain: Vec<String>, key_pem: String) -> Result<Issued, ClientError> {
        let bad = |why: String| ClientError::BadCertificate(why);
        let ders = tls::certs_from_pem(&chain).map_err(|e| bad(e.to_string()))?;
        let leaf = ders.first().ok_or_else(|| bad("the chain is empty".to_owned()))?;
        let anchors = self
            .anchors
            .iter()
            .map(|der| webpki::anchor_from_trusted_cert(der).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("root: {e:?}")))?;
        let end_entity =
            webpki::EndEntityCert::try_from(leaf).map_err(|e| bad(format!("leaf: {e:?}")))?;
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &ders[1..],
                UnixTime::now(),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| bad(format!("does not verify to the mesh root: {e:?}")))?;
        match peer_identity(&ders) {
            Some(id) if id == self.settings.identity => {}
            Some(id) => return Err(bad(format!("it is for {id}, not {}", self.settings.identity))),
            None => return Err(bad("it has no SPIFFE identity".to_owned())),
        }
        let (_, parsed) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(e.to_string()))?;
        let validity = parsed.validity();
        let to_system = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
        };
        // Checks the key matches the certificate.
        CertStore::new(&chain, &key_pem)?;
        Ok(Issued {
            not_before: to_system(validity.not_before),
            not_after: to_system(validity.not_after),
            received: SystemTime::now(),
            chain,
            key_pem,
        })
    }
}

/// Prometheus metrics of obtaining workload certificates (`workload_cert_*`).
#[derive(Clone, Default)]
pub struct ClientMetrics {
    /// When the current certificate expires, seconds since the epoch.
    pub expiry: Gauge,
    /// Certificates obtained and installed (`workload_cert_issued`).
    pub issued: Counter,
    /// Failed attempts to obtain one, each followed by a backoff (`workload_cert_failures`).
    pub failures: Counter,
}

impl ClientMetrics {
    /// Metrics registered under `registry` (`workload_cert_*`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "workload_cert_expiry_timestamp_seconds",
            "When the workload certificate expires, in seconds since the Unix epoch",
            metrics.expiry.clone(),
        );
        registry.register(
            "workload_cert_issued",
            "Workload certificates obtained",
            metrics.issued.clone(),
        );
        registry.register(
            "workload_cert_failures",
            "Failed attempts to obtain a workload certificate",
            metrics.failures.clone(),
        );
        metrics
    }

    fn record(&self, issued: &Issued) {
        self.issued.inc();
        let secs =
            issued.not_after.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        self.expiry.set(i64::try_from(secs).unwrap_or(i64::MAX));
    }
}

/// Longest wait between attempts while the CA is down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Obtains the first certificate (retrying with backoff until it succeeds), then keeps it
/// fresh in the background. Returns the store TLS configs read from, and the rotation task.
pub async fn start(
    client: CaClient,
    metrics: ClientMetrics,
) -> (Arc<CertStore>, tokio::task::JoinHandle<()>) {
    let (issued, store) = loop_until_issued(&client, &metrics, None).await;
    let store = match store {
        Some(store) => store,
        None => unreachable!("the first certificate always builds a store"),
    };
    let task = tokio::spawn(rotate(client, metrics, store.clone(), issued));
    (store, task)
}

/// Tries until a certificate is obtained; with a store, also installs it there.
async fn loop_until_issued(
    client: &CaClient,
    metrics: &ClientMetrics,
    store: Option<&Arc<CertStore>>,
) -> (Issued, Option<Arc<CertStore>>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let attempt = client.fetch().await.and_then(|issued| {
            let store = match store {
                Some(store) => {
                    store.replace(&issued.chain, &issued.key_pem)?;
                    store.clone()
                }
                None => Arc::new(CertStore::new(&issued.chain, &issued.key_pem)?),
            };
            Ok((issued, store))
        });
        match attempt {
            Ok((issued, store)) => {
                metrics.record(&issued);
                info!(identity = %client.settings.identity, not_after = ?issued.not_after, "workload certificate installed");
                return (issued, Some(store));
            }
            Err(err) => {
                metrics.failures.inc();
                warn!(retry_in = ?backoff, "cannot obtain a workload certificate: {err}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn rotate(
    client: CaClient,
    metrics: ClientMetrics,
    store: Arc<CertStore>,
    mut issued: Issued,
) {
    let rng = SystemRandom::new();
    loop {
        tokio::time::sleep(until_rotation(&issued, &rng)).await;
        // Until a new one is in, the current certificate keeps being served.
        issued = loop_until_issued(&client, &metrics, Some(&store)).await.0;
    }
}

/// How long until `issued` is due for replacement, with a jitter of ±1% of its life so that
/// workloads started together do not all call the CA at once.
fn until_rotation(issued: &Issued, rng: &SystemRandom) -> Duration {
    let mut bytes = [0u8; 2];
    let jitter = match rng.fill(&mut bytes) {
        Ok(()) => (f64::from(u16::from_be_bytes(bytes)) / f64::from(u16::MAX) - 0.5) * 0.02,
        Err(_) => 0.0,
    };
    issued.rotate_at(jitter).duration_since(SystemTime::now()).unwrap_or_default()
}

/// What an agent next to a stock Envoy runs: obtains the first certificate (retrying until it
/// succeeds), then keeps it fresh, publishing each one with `roots` as SDS material on the
/// returned channel. The key leaves this process only through that channel, to the SDS server
/// of the workload's own Envoy.
pub async fn start_sds(
    client: CaClient,
    metrics: ClientMetrics,
    roots: Vec<String>,
) -> (watch::Receiver<Arc<Material>>, tokio::task::JoinHandle<()>) {
    let material = move |issued: &Issued| {
        Arc::new(Material {
            chain: issued.chain.clone(),
            key_pem: issued.key_pem.clone(),
            roots: roots.clone(),
        })
    };
    let mut issued = loop_until_issued(&client, &metrics, None).await.0;
    let (publish, current) = watch::channel(material(&issued));
    let task = tokio::spawn(async move {
        let rng = SystemRandom::new();
        loop {
            tokio::time::sleep(until_rotation(&issued, &rng)).await;
            issued = loop_until_issued(&client, &metrics, None).await.0;
            if publish.send(material(&issued)).is_err() {
                return;
            }
        }
    });
    (current, task)
}
