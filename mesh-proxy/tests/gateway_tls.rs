//! mesh-proxy as an ingress gateway terminating TLS with certificates the control plane serves
//! over SDS on the ADS stream, as Envoy consumes what Istio's pilot sends for a Gateway's
//! `tls.mode` SIMPLE, MUTUAL and PASSTHROUGH servers. The proxy runs whole (its app, as `main`
//! starts it, `--proxy-type router`), its certificate from a real mesh-ca, its configuration
//! from an ADS server of the test's own (Istio's resource shapes: `kubernetes://<credential>`
//! and `...-cacert` secrets, `tls_inspector`, filter chains by server name); clients are real
//! TLS clients (tokio-rustls) on the gateway's ports. Checked: the certificate chosen by SNI
//! (two hosts, two secrets, HTTP/1.1 and HTTP/2 by ALPN), a rotated secret served on the next
//! handshake without a restart, a bad rotation NACKed by name with the last good one still
//! served, MUTUAL refusing clients without a certificate or with one of another CA (and counting
//! why), PASSTHROUGH carrying the client's TLS to the backend's own certificate by SNI, and a
//! config dump that shows the secrets without their keys.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser as _;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ConfigSource, DataSource, TransportSocket,
    config_source::ConfigSourceSpecifier, data_source::Specifier, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, common_tls_context::CombinedCertificateValidationContext,
    common_tls_context::ValidationContextType, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use envoy_types::util::pack_any;
use http_body_util::{BodyExt as _, Full};
use mesh_api::xds::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// ---------------------------------------------------------------------------------------------
// Certificates

/// A certificate authority for the test: its certificate and what it signs.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pem: String,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
struct Pair {
    chain: String,
    key: String,
}

impl Pair {
    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.chain.as_bytes()).unwrap()
    }
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let pem = issuer.pem();
        Self { issuer, pem }
    }

    fn leaf(&self, name: &str) -> Pair {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        Pair { chain: cert.pem(), key: key.serialize_pem() }
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap()).unwrap();
        Arc::new(roots)
    }
}

// ---------------------------------------------------------------------------------------------
// What the control plane sends a router (Istio's shapes)

fn inline(pem: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..DataSource::default()
    })
}

/// `kubernetes://<credential>`: the server certificate and key.
fn certificate_secret(credential: &str, pair: &Pair) -> Any {
    pack_any(Secret {
        name: format!("kubernetes://{credential}"),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(&pair.chain),
            private_key: inline(&pair.key),
            ..TlsCertificate::default()
        })),
    })
}

/// `kubernetes://<credential>-cacert`: the CA clients must verify to.
fn ca_secret(credential: &str, ca: &Ca) -> Any {
    pack_any(Secret {
        name: format!("kubernetes://{credential}-cacert"),
        r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(&ca.pem),
            ..CertificateValidationContext::default()
        })),
    })
}

fn ads(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ConfigSource {
            resource_api_version: 2,
            config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
            ..ConfigSource::default()
        }),
    }
}

/// The DownstreamTlsContext of a SIMPLE server with `credential`, or of a MUTUAL one.
fn terminate(credential: &str, mutual: bool) -> TransportSocket {
    let mut common = CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![ads(format!("kubernetes://{credential}"))],
        alpn_protocols: vec!["h2".to_owned(), "http/1.1".to_owned()],
        ..CommonTlsContext::default()
    };
    if mutual {
        common.validation_context_type = Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext::default()),
                validation_context_sds_secret_config: Some(ads(format!(
                    "kubernetes://{credential}-cacert"
                ))),
                ..CombinedCertificateValidationContext::default()
            },
        ));
    }
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
            DownstreamTlsContext {
                common_tls_context: Some(common),
                require_client_certificate: Some(BoolValue { value: mutual }),
                ..DownstreamTlsContext::default()
            },
        ))),
    }
}

fn by_server_name(host: &str) -> Option<FilterChainMatch> {
    Some(FilterChainMatch { server_names: vec![host.to_owned()], ..FilterChainMatch::default() })
}

fn http_filter(routes: &str) -> Filter {
    let hcm = HttpConnectionManager {
        stat_prefix: "outbound_0.0.0.0_8443".to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: routes.to_owned(),
            ..Rds::default()
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            ..HttpFilter::default()
        }],
        ..HttpConnectionManager::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
    }
}

fn listener(port: u16, chains: Vec<FilterChain>) -> Listener {
    use envoy_types::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address::PortSpecifier,
    };
    Listener {
        name: format!("0.0.0.0_{port}"),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".to_owned(),
                port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
                ..SocketAddress::default()
            })),
        }),
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".to_owned(),
            ..ListenerFilter::default()
        }],
        filter_chains: chains,
        ..Listener::default()
    }
}

/// The HTTPS server on `port`: `a.example.com` and `b.example.com` SIMPLE with their own
/// credentials, `mtls.example.com` MUTUAL, all routed to the web backend.
fn https_listener(port: u16) -> Listener {
    let routes = format!("https.{port}.https.gateway.istio-system");
    let chain = |host: &str, credential: &str, mutual: bool| FilterChain {
        filter_chain_match: by_server_name(host),
        transport_socket: Some(terminate(credential, mutual)),
        filters: vec![http_filter(&routes)],
        ..FilterChain::default()
    };
    listener(
        port,
        vec![
            chain("a.example.com", "a-cred", false),
            chain("b.example.com", "b-cred", false),
            chain("mtls.example.com", "m-cred", true),
        ],
    )
}

/// The PASSTHROUGH server on `port`: `secure.example.com` to the TLS backend, untouched.
fn passthrough_listener(port: u16) -> Listener {
    let proxy = TcpProxy {
        stat_prefix: "outbound|443||secure.demo.svc.cluster.local".to_owned(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(
            "outbound|443||secure.demo.svc.cluster.local".to_owned(),
        )),
        ..TcpProxy::default()
    };
    listener(
        port,
        vec![FilterChain {
            filter_chain_match: by_server_name("secure.example.com"),
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(proxy))),
            }],
            ..FilterChain::default()
        }],
    )
}

// ---------------------------------------------------------------------------------------------
// A control plane: state of the world over ADS, named subscriptions answered by name

/// Resources by type URL, each with its name.
type Resources = BTreeMap<&'static str, Vec<(String, Any)>>;

struct Control {
    resources: tokio::sync::watch::Sender<(u64, Resources)>,
    requests: tokio::sync::mpsc::UnboundedSender<DiscoveryRequest>,
}

type Stream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

fn answer(
    type_url: &str,
    names: &[String],
    (version, resources): &(u64, Resources),
    nonce: u64,
) -> DiscoveryResponse {
    let wildcard = type_url == LISTENER_TYPE || type_url == CLUSTER_TYPE;
    DiscoveryResponse {
        version_info: version.to_string(),
        type_url: type_url.to_owned(),
        nonce: nonce.to_string(),
        resources: resources
            .get(type_url)
            .into_iter()
            .flatten()
            .filter(|(name, _)| wildcard || names.contains(name))
            .map(|(_, any)| any.clone())
            .collect(),
        ..DiscoveryResponse::default()
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Control {
    type StreamAggregatedResourcesStream = Stream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Stream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        use futures::StreamExt as _;
        let mut requests = request.into_inner();
        let mut resources = self.resources.subscribe();
        let seen = self.requests.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut subscribed: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut nonce = 0;
            loop {
                tokio::select! {
                    request = requests.next() => {
                        let Some(Ok(request)) = request else { return };
                        let _ = seen.send(request.clone());
                        let changed =
                            subscribed.get(&request.type_url) != Some(&request.resource_names);
                        subscribed.insert(request.type_url.clone(), request.resource_names.clone());
                        if request.response_nonce.is_empty() || changed {
                            nonce += 1;
                            let response = answer(
                                &request.type_url,
                                &request.resource_names,
                                &resources.borrow(),
                                nonce,
                            );
                            if tx.send(Ok(response)).await.is_err() {
                                return;
                            }
                        }
                    }
                    changed = resources.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let now = resources.borrow_and_update().clone();
                        for (type_url, names) in &subscribed {
                            nonce += 1;
                            if tx.send(Ok(answer(type_url, names, &now, nonce))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("state of the world only"))
    }
}

/// Serves `control` on loopback; returns its address.
fn serve(control: Control) -> SocketAddr {
    let (listener, address) = mesh_testing::net::tokio_listener();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(control))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    address
}

// ---------------------------------------------------------------------------------------------
// Backends, the proxy, clients

/// A TLS server with `pair` answering `pong from <name>` to a line.
fn tls_backend(pair: &Pair) -> SocketAddr {
    let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(mesh_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pair.der()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (listener, address) = mesh_testing::net::tokio_listener();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let name = tls.get_ref().1.server_name().unwrap_or("no SNI").to_owned();
                let mut line = [0u8; 5];
                if tls.read_exact(&mut line).await.is_ok() {
                    let _ = tls.write_all(format!("pong from {name}\n").as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    address
}

/// The gateway's workload certificate comes from a real mesh-ca (in-process), as a proxy's
/// does; returns the CA (kept running while held) and the flags that reach it.
async fn mesh_ca(dir: &std::path::Path) -> (mesh_testing::ca::RunningCa, Vec<String>) {
    let mesh = mesh_testing::ca::TestCa::new();
    let ca = mesh.serve(dir, "t-gateway istio-system/istio-ingressgateway\n").await;
    std::fs::write(dir.join("token"), "t-gateway").unwrap();
    let flags = vec![
        format!("--ca-address={}", ca.bound.grpc),
        format!("--root-cert={}", ca.root_cert.display()),
        format!("--token-path={}", dir.join("token").display()),
    ];
    (ca, flags)
}

/// A TLS client trusting `roots`, offering `alpn`, presenting `certificate` if given.
fn client(
    roots: Arc<rustls::RootCertStore>,
    alpn: &[&str],
    certificate: Option<&Pair>,
) -> tokio_rustls::TlsConnector {
    let builder = rustls::ClientConfig::builder_with_provider(mesh_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match certificate {
        Some(pair) => builder
            .with_client_auth_cert(
                vec![pair.der()],
                PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    sni: &str,
) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// `GET /` for `host` over an established TLS stream, HTTP/2 if ALPN chose it: the status and
/// body, or why it failed.
async fn get(tls: Tls, host: &str) -> Result<(u16, String), String> {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = hyper_util::rt::TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request =
            http::Request::get(format!("https://{host}/")).body(Full::new(Bytes::new())).unwrap();
        sender.send_request(request).await.map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request =
            http::Request::get("/").header("host", host).body(Full::new(Bytes::new())).unwrap();
        sender.send_request(request).await.map_err(|e| e.to_string())?
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status.as_u16(), String::from_utf8_lossy(&body).into_owned()))
}

/// Connects with `sni` and GETs `/`; any failure (handshake, a refused client certificate
/// seen at the first read under TLS 1.3) is the error.
async fn request(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    sni: &str,
) -> Result<(u16, String), String> {
    let tls = connect(connector, port, sni).await.map_err(|e| e.to_string())?;
    get(tls, sni).await
}

/// The certificate the gateway presents for `sni` (verified against `roots` for that name).
async fn presented(
    roots: &Arc<rustls::RootCertStore>,
    port: u16,
    sni: &str,
) -> CertificateDer<'static> {
    let tls = connect(&client(roots.clone(), &["http/1.1"], None), port, sni).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_terminates_tls_with_the_secrets_the_control_plane_serves() {
    let gateway_ca = Ca::new("gateway certificates");
    let clients_ca = Ca::new("client certificates");
    let backend_ca = Ca::new("backend certificates");
    let (a, b, m) = (
        gateway_ca.leaf("a.example.com"),
        gateway_ca.leaf("b.example.com"),
        gateway_ca.leaf("mtls.example.com"),
    );
    let web = common::backend(Arc::new(|_, _| (200, Duration::ZERO, Vec::new()))).await;
    let secure_pair = backend_ca.leaf("secure.example.com");
    let secure = tls_backend(&secure_pair);
    let (https, pass) = (mesh_testing::net::free_port(), mesh_testing::net::free_port());

    let mut routes = common::route_config(common::route(
        "outbound|80||web.demo.svc.cluster.local",
        |_| {},
        Vec::new(),
    ));
    routes.name = format!("https.{https}.https.gateway.istio-system");
    let everything = |a: &Pair| -> Resources {
        let named = |name: &str, any: Any| (name.to_owned(), any);
        BTreeMap::from([
            (
                CLUSTER_TYPE,
                vec![
                    ("outbound|80||web.demo.svc.cluster.local", web.address),
                    ("outbound|443||secure.demo.svc.cluster.local", secure),
                ]
                .into_iter()
                .map(|(name, at)| named(name, pack_any(common::static_cluster(name, &[at], None))))
                .collect(),
            ),
            (
                LISTENER_TYPE,
                vec![
                    named(&format!("0.0.0.0_{https}"), pack_any(https_listener(https))),
                    named(&format!("0.0.0.0_{pass}"), pack_any(passthrough_listener(pass))),
                ],
            ),
            (ROUTE_TYPE, vec![named(&routes.name, pack_any(routes.clone()))]),
            (SECRET_TYPE, secrets(a, &b, &m, &clients_ca)),
        ])
    };
    let (publish, _) = tokio::sync::watch::channel((1, everything(&a)));
    let (seen, mut requests) = tokio::sync::mpsc::unbounded_channel();
    let pilot = serve(Control { resources: publish.clone(), requests: seen });

    let dir = tempfile::tempdir().unwrap();
    let (_ca, ca_flags) = mesh_ca(dir.path()).await;
    let (admin, metrics) = (mesh_testing::net::free_port(), mesh_testing::net::free_port());
    let mut args = vec![
        "mesh-proxy".to_owned(),
        "--proxy-type=router".to_owned(),
        "--concurrency=1".to_owned(),
        format!("--pilot-address=http://{pilot}"),
        "--pod-name=istio-ingressgateway-1".to_owned(),
        "--pod-namespace=istio-system".to_owned(),
        "--service-account=istio-ingressgateway".to_owned(),
        "--pod-ip=127.0.0.1".to_owned(),
        "--labels-file=/nonexistent".to_owned(),
        format!("--admin-port={admin}"),
        format!("--metrics-port={metrics}"),
        format!("--health-port={}", mesh_testing::net::free_port()),
        format!("--status-port={}", mesh_testing::net::free_port()),
        "--access-log=off".to_owned(),
    ];
    args.extend(ca_flags);
    let bound =
        mesh_proxy::app::build(mesh_proxy::app::Config::try_parse_from(args).unwrap(), None)
            .await
            .unwrap();
    let ready = bound.ready.clone();
    let shutdown = bound.shutdown.clone();
    tokio::spawn(bound.run());
    if tokio::time::timeout(Duration::from_secs(30), ready.wait()).await.is_err() {
        panic!("the gateway is not ready: waiting for {:?}", ready.pending());
    }
    // It asked for the secrets its listeners name, by name, and accepted them.
    let mut secret_names = Vec::new();
    while let Ok(request) = requests.try_recv() {
        if request.type_url == SECRET_TYPE && !request.resource_names.is_empty() {
            secret_names.clone_from(&request.resource_names);
        }
        assert!(request.error_detail.is_none(), "{:?}", request.error_detail);
    }
    assert_eq!(
        secret_names,
        [
            "kubernetes://a-cred",
            "kubernetes://b-cred",
            "kubernetes://m-cred",
            "kubernetes://m-cred-cacert"
        ]
    );

    // SIMPLE: each host's own certificate by SNI, over HTTP/1.1 and HTTP/2 by ALPN.
    let roots = gateway_ca.roots();
    assert_eq!(presented(&roots, https, "a.example.com").await, a.der());
    assert_eq!(presented(&roots, https, "b.example.com").await, b.der());
    for alpn in [&["http/1.1"][..], &["h2", "http/1.1"]] {
        for host in ["a.example.com", "b.example.com"] {
            let (status, body) =
                request(&client(roots.clone(), alpn, None), https, host).await.unwrap();
            assert_eq!((status, body.starts_with("attempt")), (200, true), "{host} {alpn:?}");
        }
    }
    let tls = connect(&client(roots.clone(), &["h2", "http/1.1"], None), https, "a.example.com")
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "h2 negotiated");
    // A client whose ALPN offer the gateway does not speak still gets through, without
    // ALPN (as with Envoy).
    let (status, _) =
        request(&client(roots.clone(), &["acme-tls/1"], None), https, "a.example.com")
            .await
            .unwrap();
    assert_eq!(status, 200);
    // A host no server has: no chain, the connection is closed.
    assert!(request(&client(roots.clone(), &[], None), https, "c.example.com").await.is_err());

    // A rotated secret is served on the next handshake, the other host's untouched.
    let rotated = gateway_ca.leaf("a.example.com");
    publish.send_modify(|(version, resources)| {
        *version += 1;
        resources.insert(SECRET_TYPE, secrets(&rotated, &b, &m, &clients_ca));
    });
    until("the rotated certificate is presented", || {
        let roots = roots.clone();
        let expected = rotated.der();
        async move { presented(&roots, https, "a.example.com").await == expected }
    })
    .await;
    assert_eq!(presented(&roots, https, "b.example.com").await, b.der());

    // A rotation to a key that does not fit the certificate is NACKed by name, and the
    // last good certificate stays.
    let broken =
        Pair { chain: gateway_ca.leaf("a.example.com").chain, key: gateway_ca.leaf("z").key };
    publish.send_modify(|(version, resources)| {
        *version += 1;
        resources.insert(SECRET_TYPE, secrets(&broken, &b, &m, &clients_ca));
    });
    let nack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let request = requests.recv().await.unwrap();
            if let Some(status) = request.error_detail {
                return (request.type_url, status.message);
            }
        }
    })
    .await
    .expect("a NACK");
    assert_eq!(nack.0, SECRET_TYPE);
    assert!(
        nack.1.starts_with(
            "Secret \"kubernetes://a-cred\": tls_certificate: the key and certificate cannot serve"
        ),
        "{}",
        nack.1
    );
    assert_eq!(presented(&roots, https, "a.example.com").await, rotated.der());

    // MUTUAL: a client without a certificate, or with one of another CA, is refused; one
    // signed by the credential's CA gets through.
    let no_cert = client(roots.clone(), &["http/1.1"], None);
    let refused = request(&no_cert, https, "mtls.example.com").await;
    assert!(refused.is_err(), "a client without a certificate is refused: {refused:?}");
    let stranger = gateway_ca.leaf("client.example.com");
    let wrong = client(roots.clone(), &["http/1.1"], Some(&stranger));
    let refused = request(&wrong, https, "mtls.example.com").await;
    assert!(refused.is_err(), "a certificate of another CA is refused: {refused:?}");
    let member = clients_ca.leaf("client.example.com");
    let (status, _) =
        request(&client(roots.clone(), &["h2"], Some(&member)), https, "mtls.example.com")
            .await
            .unwrap();
    assert_eq!(status, 200);
    let stats = mesh_testing::http::get(([127, 0, 0, 1], metrics).into(), "/stats/prometheus")
        .await
        .unwrap();
    let count = |stat: &str| {
        let key = format!(
            "mesh_proxy_listener_ssl_total{{listener=\"0.0.0.0_{https}\",stat=\"{stat}\"}} "
        );
        stats
            .lines()
            .find_map(|line| line.strip_prefix(key.as_str()))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("fail_verify_no_cert"), 1, "{stats}");
    assert_eq!(count("fail_verify_error"), 1, "{stats}");
    // A host with no chain is closed before any handshake (Envoy's no_filter_chain_match).
    assert_eq!(count("connection_error"), 2, "the two refusals: {stats}");
    assert!(count("handshake") >= 6, "{stats}");

    // PASSTHROUGH: the client's own TLS reaches the backend by SNI; what it sees is the
    // backend's certificate.
    let backend = client(backend_ca.roots(), &[], None);
    let mut tls = connect(&backend, pass, "secure.example.com").await.unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], secure_pair.der());
    tls.write_all(b"ping\n").await.unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "pong from secure.example.com\n");
    // Another name has no chain there.
    assert!(connect(&backend, pass, "other.example.com").await.is_err());

    // The config dump shows the secrets, their keys redacted: the gateway's own certificate
    // (`default`, as Envoy shows istio-agent's), each SDS secret, and the refused rotation in
    // the error state of the secret it was for.
    let dump =
        mesh_testing::http::get(([127, 0, 0, 1], admin).into(), "/config_dump").await.unwrap();
    let json: serde_json::Value =
        serde_json::from_str(mesh_testing::http::status_and_body(&dump).1).unwrap();
    let secrets = json["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.SecretsConfigDump")
        .unwrap()["dynamic_active_secrets"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<&str> = secrets.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "default",
            "ROOTCA",
            "kubernetes://a-cred",
            "kubernetes://b-cred",
            "kubernetes://m-cred",
            "kubernetes://m-cred-cacert"
        ]
    );
    use base64::Engine as _;
    let redacted = base64::engine::general_purpose::STANDARD.encode(b"[redacted]");
    let key_of = |secret: &serde_json::Value| {
        secret["tls_certificate"]["private_key"]["inline_bytes"].as_str().map(str::to_owned)
    };
    let keys: Vec<Option<String>> = secrets.iter().map(|s| key_of(&s["secret"])).collect();
    let hidden = Some(redacted.clone());
    assert_eq!(keys, [hidden.clone(), None, hidden.clone(), hidden.clone(), hidden.clone(), None]);
    let refused = &secrets[2]["error_state"];
    assert_eq!(key_of(&refused["failed_configuration"]), hidden, "{refused}");
    assert!(
        refused["details"].as_str().unwrap().starts_with("Secret \"kubernetes://a-cred\""),
        "{refused}"
    );
    for pair in [&rotated, &b, &m, &broken] {
        let key = base64::engine::general_purpose::STANDARD.encode(pair.key.as_bytes());
        assert!(!dump.contains(&key[..40]) && !dump.contains("PRIVATE KEY"));
    }
    shutdown.request();
}

/// The secrets of the test, `a` the certificate of `a-cred`.
fn secrets(a: &Pair, b: &Pair, m: &Pair, clients: &Ca) -> Vec<(String, Any)> {
    vec![
        ("kubernetes://a-cred".to_owned(), certificate_secret("a-cred", a)),
        ("kubernetes://b-cred".to_owned(), certificate_secret("b-cred", b)),
        ("kubernetes://m-cred".to_owned(), certificate_secret("m-cred", m)),
        ("kubernetes://m-cred-cacert".to_owned(), ca_secret("m-cred", clients)),
    ]
}
