//! The CA end to end: issuing, key storage, refusals over gRPC, rotation and mesh mTLS.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_api::identity::SpiffeId;
use mesh_ca::auth::{Authenticator, TokenFile};
use mesh_ca::authority::{Authority, Policy, SignError};
use mesh_ca::metrics::Metrics;
use mesh_ca::root::{self, RootMaterial};
use mesh_ca::server::{self, CaService};
use mesh_identity::client::{self, CaClient, ClientMetrics, ClientSettings, TokenSource};
use mesh_identity::{CertStore, tls};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;
use x509_parser::extensions::{GeneralName, ParsedExtension};

const TD: &str = "cluster.local";
const CA_NAME: &str = "mesh-ca.mesh-system.svc";

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).unwrap()
}

fn authority(material: &RootMaterial, policy: Policy) -> Authority {
    Authority::new(material, TD, policy).unwrap()
}

fn der(pem: &str) -> CertificateDer<'static> {
    tls::certs_from_pem(&[pem.to_owned()]).unwrap().remove(0)
}

/// Verifies a chain with webpki against `root_pem` for client and server use.
fn verify(chain: &[String], root_pem: &str) {
    let ders = tls::certs_from_pem(chain).unwrap();
    let root = der(root_pem);
    let anchors = [webpki::anchor_from_trusted_cert(&root).unwrap()];
    let leaf = webpki::EndEntityCert::try_from(&ders[0]).unwrap();
    for usage in [webpki::KeyUsage::client_auth(), webpki::KeyUsage::server_auth()] {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &ders[1..],
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .unwrap();
    }
}

#[test]
fn issued_certificate_verifies_with_spiffe_san_ttl_usages_and_chain_order() {
    let material = RootMaterial::generate(TD, root::ROOT_VALIDITY).unwrap();
    let ca = authority(&material, Policy::default());
    let who = id("bookinfo", "reviews");
    let (_key, csr) = client::new_csr(&who, &[]).unwrap();
    let chain = ca.sign(&csr, &who, 3600).unwrap();

    assert_eq!(chain.len(), 2, "leaf then root");
    assert_eq!(der(&chain[1]), der(&material.root_pem), "the root comes last");
    verify(&chain, &material.root_pem);

    let leaf_der = der(&chain[0]);
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(uri) => (*uri).to_owned(),
            other => format!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(sans, ["spiffe://cluster.local/ns/bookinfo/sa/reviews"]);
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(lifetime, 3600 + 60, "requested TTL plus one minute of clock slack");
    assert!(!leaf.is_ca());
    let mut key_usage = None;
    let mut eku = None;
    for ext in leaf.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::KeyUsage(ku) => {
                key_usage =
                    Some((ku.digital_signature(), ku.key_encipherment(), ku.key_cert_sign()))
            }
            ParsedExtension::ExtendedKeyUsage(e) => eku = Some((e.server_auth, e.client_auth)),
            _ => {}
        }
    }
    assert_eq!(key_usage, Some((true, true, false)));
    assert_eq!(eku, Some((true, true)));
}

#[test]
fn default_ttl_is_24_hours() {
    let material = RootMaterial::generate(TD, root::ROOT_VALIDITY).unwrap();
    let ca = authority(&material, Policy::default());
    let who = id("default", "sleep");
    let (_key, csr) = client::new_csr(&who, &[]).unwrap();
    let chain = ca.sign(&csr, &who, 0).unwrap();
    let leaf_der = der(&chain[0]);
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
    assert_eq!(
        leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp(),
        24 * 3600 + 60
    );
}

/// The DNS names of a certificate.
fn dns_names(pem: &str) -> Vec<String> {
    let leaf_der = der(pem);
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_control_plane_gets_the_dns_names_of_its_service_and_nobody_else_gets_any() {
    let material = RootMaterial::generate(TD, root::ROOT_VALIDITY).unwrap();
    let ca = authority(&material, Policy::default());
    let pilot = id("mesh-system", "mesh-pilot");
    let names = ["mesh-pilot.mesh-system.svc".to_owned()];
    let (_key, csr) = client::new_csr(&pilot, &names).unwrap();
    let chain = ca.sign(&csr, &pilot, 0).unwrap();
    assert_eq!(dns_names(&chain[0]), names);
    verify(&chain, &material.root_pem);

    // Another Service's name, even in the control-plane namespace, is refused.
    let (_key, csr) = client::new_csr(&pilot, &["mesh-ca.mesh-system.svc".to_owned()]).unwrap();
    let err = ca.sign(&csr, &pilot, 0).unwrap_err().to_string();
    assert!(err.contains("DNS name mesh-ca.mesh-system.svc"), "{err}");

    // A workload asking for its own Service's name gets nothing but a refusal.
    let reviews = id("bookinfo", "reviews");
    let (_key, csr) = client::new_csr(&reviews, &["reviews.bookinfo.svc".to_owned()]).unwrap();
    assert!(matches!(ca.sign(&csr, &reviews, 0), Err(SignError::IdentityMismatch { .. })));

    // Without DNS names asked for, none are given, even to the control plane.
    let (_key, csr) = client::new_csr(&pilot, &[]).unwrap();
    assert!(dns_names(&ca.sign(&csr, &pilot, 0).unwrap()[0]).is_empty());
}

#[test]
fn restart_with_the_same_state_dir_keeps_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ca");
    let first = root::load_or_create_dir(&state, TD).unwrap();
    let second = root::load_or_create_dir(&state, TD).unwrap();
    assert_eq!(first, second);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("root-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the root key is private");
    // A certificate issued before the restart still verifies with the root after it.
    let who = id("default", "sleep");
    let (_key, csr) = client::new_csr(&who, &[]).unwrap();
    let chain = authority(&first, Policy::default()).sign(&csr, &who, 60).unwrap();
    verify(&chain, &second.root_pem);
}

/// A root and an intermediate in Istio's `cacerts` layout.
fn write_cacerts(dir: &std::path::Path) -> RootMaterial {
    let root = RootMaterial::generate(TD, root::ROOT_VALIDITY).unwrap();
    let root_issuer = rcgen::Issuer::from_ca_cert_pem(
        &root.root_pem,
        KeyPair::from_pem(&root.signing_key_pem).unwrap(),
    )
    .unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "cluster-1 intermediate");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    let intermediate = params.signed_by(&key, &root_issuer).unwrap().pem();
    std::fs::write(dir.join("ca-cert.pem"), &intermediate).unwrap();
    std::fs::write(dir.join("ca-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("root-cert.pem"), &root.root_pem).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), format!("{intermediate}{}", root.root_pem)).unwrap();
    root
}

#[test]
fn a_plugged_in_intermediate_from_another_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_cacerts(dir.path());
    let stranger = RootMaterial::generate(TD, root::ROOT_VALIDITY).unwrap();
    std::fs::write(dir.path().join("root-cert.pem"), &stranger.root_pem).unwrap();
    std::fs::write(dir.path().join("cert-chain.pem"), "").unwrap();
    let err = root::load_plugin(dir.path()).unwrap_err().to_string();
    assert!(err.contains("is not signed by"), "{err}");
}

#[test]
fn plugged_in_intermediate_returns_a_three_certificate_chain() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_cacerts(dir.path());
    let material = root::load_plugin(dir.path()).unwrap();
    assert!(!material.is_self_signed());
    let ca = authority(&material, Policy::default());
    let who = id("bookinfo", "ratings");
    let (_key, csr) = client::new_csr(&who, &[]).unwrap();
    let chain = ca.sign(&csr, &who, 600).unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(der(&chain[1]), der(&material.signing_cert_pem));
    assert_eq!(der(&chain[2]), der(&root.root_pem));
    verify(&chain, &root.root_pem);
}

/// A CA serving on loopback with a tokens file.
struct Running {
    addr: SocketAddr,
    root_pem: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_ca(policy: Policy, tokens: &[(&str, &str)]) -> (Running, Arc<Metrics>) {
    let dir = tempfile::tempdir().unwrap();
    let material = RootMaterial::generate(TD, root::ROOT_VALIDITY).unwrap();
    let ca = Arc::new(authority(&material, policy));
    let token_path = dir.path().join("tokens");
    let lines: String = tokens.iter().map(|(token, who)| format!("{token} {who}\n")).collect();
    std::fs::write(&token_path, lines).unwrap();
    let auth = Arc::new(Authenticator::TokenFile(TokenFile::new(&token_path)));
    let metrics = Arc::new(Metrics::default());
    let (chain, key) =
        ca.issue_server_cert(&[CA_NAME.to_owned()], Duration::from_secs(3600)).unwrap();
    let store = Arc::new(CertStore::new(&chain, &key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = CaService::new(ca, auth, metrics.clone());
    let tls = Arc::new(tls::ca_server_config(store).unwrap());
    tokio::spawn(server::serve_tls(listener, service, tls, async move {
        let _ = stopped.await;
    }));
    (Running { addr, root_pem: material.root_pem, _dir: dir, stop: Some(stop) }, metrics)
}

fn ca_client(running: &Running, token: &str, who: SpiffeId, ttl: Duration) -> CaClient {
    CaClient::new(ClientSettings {
        ca_address: running.addr.to_string(),
        ca_server_name: CA_NAME.to_owned(),
        root_pems: vec![running.root_pem.clone()],
        token: TokenSource::Value(token.to_owned()),
        identity: who,
        ttl,
        dns_names: Vec::new(),
    })
    .unwrap()
}

#[tokio::test]
async fn client_obtains_a_certificate_over_grpc_and_tls() {
    let (ca, metrics) = start_ca(Policy::default(), &[("t-sleep", "default/sleep")]).await;
    let client = ca_client(&ca, "t-sleep", id("default", "sleep"), Duration::from_secs(3600));
    let issued = client.fetch().await.unwrap();
    verify(&issued.chain, &ca.root_pem);
    assert!(issued.not_after > SystemTime::now() + Duration::from_secs(3500));
    assert!(
        metrics.encode().contains("mesh_ca_certificates_signed_total 1"),
        "{}",
        metrics.encode()
    );
}

#[tokio::test]
async fn refusals_carry_the_right_grpc_status() {
    let policy = Policy {
        default_ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(7200),
        ..Policy::default()
    };
    let (ca, metrics) =
        start_ca(policy, &[("t-a", "default/sa-a"), ("t-rsa", "default/legacy")]).await;
    let client = ca_client(&ca, "t-a", id("default", "sa-a"), Duration::from_secs(600));
    let (_, csr_a) = client::new_csr(&id("default", "sa-a"), &[]).unwrap();
    let (_, csr_b) = client::new_csr(&id("default", "sa-b"), &[]).unwrap();
    let data = |name: &str| {
        std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
    };

    let status = |r: Result<Vec<String>, tonic::Status>| {
        r.map(|_| ()).map_err(|s| (s.code(), s.message().to_owned()))
    };

    assert_eq!(
        status(client.request(csr_a.clone(), 600, None).await).unwrap_err().0,
        Code::Unauthenticated
    );
    let unknown = status(client.request(csr_a.clone(), 600, Some("nope")).await).unwrap_err();
    assert_eq!(
        unknown,
        (Code::Unauthenticated, "the token is not valid: unknown token".to_owned())
    );

    // A token for sa-a with a CSR asking for sa-b is refused, not signed for either.
    let other = status(client.request(csr_b, 600, Some("t-a")).await).unwrap_err();
    assert_eq!(
        other,
        (
            Code::PermissionDenied,
            "the CSR asks for spiffe://cluster.local/ns/default/sa/sa-b but the caller is spiffe://cluster.local/ns/default/sa/sa-a".to_owned()
        )
    );

    // A CSR asking for a CA certificate.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_csr = params.serialize_request(&key).unwrap().pem().unwrap();
    assert_eq!(
        status(client.request(ca_csr, 600, Some("t-a")).await).unwrap_err().0,
        Code::PermissionDenied
    );

    let rsa1024 =
        status(client.request(data("rsa1024.csr"), 600, Some("t-rsa")).await).unwrap_err();
    assert_eq!(
        rsa1024,
        (
            Code::InvalidArgument,
            "the CSR key is RSA 1024 bits: use ECDSA P-256 or RSA of at least 2048 bits".to_owned()
        )
    );
    let p384 = status(client.request(data("p384.csr"), 600, Some("t-rsa")).await).unwrap_err();
    assert_eq!(p384.0, Code::InvalidArgument, "{p384:?}");
    let garbage = status(client.request("not a csr \u{1}\u{2}".to_owned(), 600, Some("t-a")).await)
        .unwrap_err();
    assert_eq!(garbage.0, Code::InvalidArgument, "{garbage:?}");
    let long = status(client.request(csr_a.clone(), 7201, Some("t-a")).await).unwrap_err();
    assert_eq!(
        long,
        (
            Code::InvalidArgument,
            "requested certificate lifetime 7201s is not allowed: the maximum is 7200s".to_owned()
        )
    );
    assert_eq!(
        status(client.request(csr_a.clone(), -5, Some("t-a")).await).unwrap_err().0,
        Code::InvalidArgument
    );

    // RSA 2048 is accepted, and without a SAN the certificate is for the caller.
    let chain = client.request(data("rsa2048.csr"), 600, Some("t-rsa")).await.unwrap();
    let leaf_der = der(&chain[0]);
    assert_eq!(mesh_identity::peer_identity(&[leaf_der]), Some(id("default", "legacy")));
    verify(&chain, &ca.root_pem);

    let text = metrics.encode();
    for line in [
        "mesh_ca_errors_total{reason=\"unauthenticated\"} 2",
        "mesh_ca_errors_total{reason=\"permission_denied\"} 2",
        "mesh_ca_errors_total{reason=\"invalid_argument\"} 5",
        "mesh_ca_certificates_signed_total 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

/// A TLS echo server for workload mTLS: answers each connection with the client's identity.
async fn start_mtls_server(store: Arc<CertStore>, root_pem: &str) -> SocketAddr {
    let roots = tls::roots(&[root_pem.to_owned()]).unwrap();
    let config = Arc::new(tls::mesh_server_config(store, roots, TD).unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let peer = mesh_identity::peer_identity(
                        tls.get_ref().1.peer_certificates().unwrap_or_default(),
                    );
                    let _ = tls
                        .write_all(peer.map(|p| p.to_string()).unwrap_or_default().as_bytes())
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Connects with mTLS; returns what the server saw as our identity and the server's leaf.
async fn mtls_connect(
    addr: SocketAddr,
    store: Arc<CertStore>,
    root_pem: &str,
    expect: Vec<SpiffeId>,
) -> Result<(String, CertificateDer<'static>), std::io::Error> {
    let roots = tls::roots(&[root_pem.to_owned()]).unwrap();
    let config = Arc::new(tls::mesh_client_config(store, roots, expect).unwrap());
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
    let server_leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    let mut seen = String::new();
    tls.read_to_string(&mut seen).await?;
    Ok((seen, server_leaf))
}

fn store_for(ca: &Authority, who: &SpiffeId) -> Arc<CertStore> {
    let (key, csr) = client::new_csr(who, &[]).unwrap();
    let chain = ca.sign(&csr, who, 600).unwrap();
    Arc::new(CertStore::new(&chain, &key.serialize_pem()).unwrap())
}

#[tokio::test]
async fn mtls_checks_identities_both_ways_and_refuses_other_roots() {
    let material = RootMaterial::generate(TD, root::ROOT_VALIDITY).unwrap();
    let ca = authority(&material, Policy::default());
    let (x, y) = (id("bookinfo", "reviews"), id("bookinfo", "ratings"));
    let server = start_mtls_server(store_for(&ca, &x), &material.root_pem).await;
    let client = store_for(&ca, &id("bookinfo", "productpage"));

    let (seen, _) =
        mtls_connect(server, client.clone(), &material.root_pem, vec![x.clone()]).await.unwrap();
    assert_eq!(
        seen, "spiffe://cluster.local/ns/bookinfo/sa/productpage",
        "the server sees the client's identity"
    );
    let wrong =
        mtls_connect(server, client.clone(), &material.root_pem, vec![y]).await.unwrap_err();
    assert!(wrong.to_string().contains("is not the expected"), "{wrong}");

    // A workload of another mesh (another root) gets no connection.
    let other = RootMaterial::generate(TD, root::ROOT_VALIDITY).unwrap();
    let stranger = store_for(&authority(&other, Policy::default()), &id("bookinfo", "productpage"));
    let refused = mtls_connect(server, stranger, &material.root_pem, vec![x.clone()]).await;
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|(seen, _)| seen.is_empty()),
        "{refused:?}"
    );

    // And a server of another mesh is refused by our client, whatever identity it shows.
    let impostor =
        start_mtls_server(store_for(&authority(&other, Policy::default()), &x), &other.root_pem)
            .await;
    let err = mtls_connect(impostor, client.clone(), &material.root_pem, vec![x.clone()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid peer certificate"), "{err}");

    // A workload of another trust domain, even under our root, is refused by the server.
    let foreign = SpiffeId::new("other.domain", "bookinfo", "productpage").unwrap();
    let foreign_ca = Authority::new(&material, "other.domain", Policy::default()).unwrap();
    let refused =
        mtls_connect(server, store_for(&foreign_ca, &foreign), &material.root_pem, vec![x]).await;
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|(seen, _)| seen.is_empty()),
        "a peer of another trust domain got through: {refused:?}"
    );
}

#[tokio::test]
async fn client_rotates_before_expiry_and_servers_keep_accepting() {
    let (ca, _) = start_ca(
        Policy::default(),
        &[("t-r", "bookinfo/reviews"), ("t-p", "bookinfo/productpage")],
    )
    .await;
    let reviews = id("bookinfo", "reviews");
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ClientMetrics::register(&mut registry);
    let (store, _task) = client::start(
        ca_client(&ca, "t-r", reviews.clone(), Duration::from_secs(4)),
        metrics.clone(),
    )
    .await;
    let server = start_mtls_server(store.clone(), &ca.root_pem).await;
    let caller = client::start(
        ca_client(&ca, "t-p", id("bookinfo", "productpage"), Duration::from_secs(3600)),
        ClientMetrics::default(),
    )
    .await
    .0;

    let started = std::time::Instant::now();
    let (_, first) =
        mtls_connect(server, caller.clone(), &ca.root_pem, vec![reviews.clone()]).await.unwrap();
    // The 4 s certificate is replaced at about 2 s; the same server, never restarted, presents
    // the new one to new connections.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let rotated = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, leaf) = mtls_connect(server, caller.clone(), &ca.root_pem, vec![reviews.clone()])
            .await
            .unwrap();
        if leaf != first {
            break leaf;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rotation within 8 s of a 4 s certificate"
        );
    };
    let after = started.elapsed();
    assert!(
        after > Duration::from_secs(1),
        "rotated after {after:?}: far too early for a 4 s certificate"
    );
    assert!(after < Duration::from_secs(4), "rotated after {after:?}: not before expiry");
    assert!(
        metrics.issued.get() <= 3,
        "{} certificates: rotation is looping",
        metrics.issued.get()
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(&rotated).unwrap();
    assert!(
        parsed.validity().not_after.timestamp()
            > x509_parser::parse_x509_certificate(&first)
                .unwrap()
                .1
                .validity()
                .not_after
                .timestamp()
    );
    assert!(metrics.issued.get() >= 2);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("workload_cert_expiry_timestamp_seconds"), "{text}");
}

#[test]
fn a_csr_whose_signature_does_not_verify_is_refused() {
    let material = RootMaterial::generate(TD, root::ROOT_VALIDITY).unwrap();
    let ca = authority(&material, Policy::default());
    let who = id("default", "sleep");
    let (_key, csr) = client::new_csr(&who, &[]).unwrap();
    // Flip a bit near the end of the DER: inside the signature.
    use rustls_pki_types::pem::PemObject;
    let der =
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
    let mut bytes = der.as_ref().to_vec();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    let b64 = {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                out.push(if i <= c.len() {
                    T[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        out
    };
    let tampered =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n");
    let err = ca.sign(&tampered, &who, 60).unwrap_err();
    assert_eq!(err.to_string(), "the CSR signature does not verify");
}
