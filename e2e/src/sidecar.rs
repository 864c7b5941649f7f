//! A stock Envoy as the sidecar of a network-namespace pod, the way the mesh runs it: xDS from
//! the pilot and secrets over SDS (both served inside the pod's namespace, as a node agent
//! would), traffic captured by mesh-init's real rules. Envoy is the reference the mesh's own
//! proxy is measured against.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use mesh_testing::pilot::TestPilot;

use crate::netns;

/// Where a pod's Envoy finds the pilot, inside its namespace.
pub const XDS: &str = "127.0.0.1:15010";
/// Where a pod's Envoy finds its secrets, inside its namespace.
pub const SDS: &str = "127.0.0.1:15030";

/// A listener bound inside namespace `ns`.
fn bind(ns: &str, address: &str) -> std::net::TcpListener {
    let address: SocketAddr = address.parse().unwrap_or_else(|e| panic!("{address}: {e}"));
    netns::listen(ns, address)
}

/// A tokio listener bound inside namespace `ns`.
fn listen(ns: &str, address: &str) -> tokio::net::TcpListener {
    let listener = bind(ns, address);
    listener.set_nonblocking(true).unwrap_or_else(|e| panic!("nonblocking: {e}"));
    tokio::net::TcpListener::from_std(listener).unwrap_or_else(|e| panic!("tokio listener: {e}"))
}

/// Runs the pilot (its app, as `main` builds it) inside `ns`, reading `config_dir` (a test
/// pilot's flags: polled often, pushed soon), serving xDS on [`XDS`] there and monitoring on
/// a loopback port the system chooses. Returns once it is ready; it serves until dropped.
pub async fn serve_pilot(ns: &str, config_dir: &Path) -> TestPilot {
    let listeners = mesh_pilot::app::Listeners {
        xds: Some(bind(ns, XDS)),
        xds_mtls: None,
        monitoring: bind(ns, "127.0.0.1:0"),
        webhook: None,
    };
    TestPilot::start(TestPilot::config(config_dir), listeners).await
}

/// Serves ADS from `discovery` inside `ns` on [`XDS`], for a test that publishes snapshots
/// itself (see [`serve_pilot`] for the whole pilot).
pub fn serve_xds(ns: &str, discovery: &Arc<mesh_pilot::ads::Discovery>) {
    let listener = listen(ns, XDS);
    let service = discovery.service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
}

/// Serves a workload's certificate over SDS inside `ns` on [`SDS`], as istio-agent would.
pub fn serve_sds(ns: &str, material: mesh_ca::sds::Material) {
    mesh_testing::ca::serve_sds(listen(ns, SDS), material);
}

/// Where a pod's sidecar finds mesh-ca, inside its namespace.
pub const CA: &str = "127.0.0.1:15013";
/// The DNS name in that CA's serving certificate.
pub const CA_NAME: &str = "mesh-ca.mesh-system.svc";

/// Runs mesh-ca (its app, as `main` builds it) inside `ns` on [`CA`], with monitoring on
/// 127.0.0.1:15014 there, signing with the root kept in `state_dir` (see
/// `TestCa::write_state_dir`) for callers whose tokens are in the file `tokens`
/// (`<token> <namespace>/<service account>` lines). The listeners are bound before this
/// returns; the CA serves until the runtime ends.
pub fn serve_ca(ns: &str, state_dir: &Path, tokens: &Path) {
    use clap::Parser as _;
    let args = [
        "mesh-ca".to_owned(),
        "--mode=local".to_owned(),
        format!("--server-name={CA_NAME}"),
        format!("--state-dir={}", state_dir.display()),
        format!("--plugin-dir={}", state_dir.join("no-plugin").display()),
        format!("--tokens-file={}", tokens.display()),
    ];
    let config = mesh_ca::app::Config::try_parse_from(args).unwrap_or_else(|e| panic!("{e}"));
    let listeners =
        mesh_ca::app::Listeners { grpc: bind(ns, CA), monitoring: bind(ns, "127.0.0.1:15014") };
    let ns = ns.to_owned();
    tokio::spawn(async move {
        let _ca = mesh_ca::app::build_with(config, listeners)
            .await
            .unwrap_or_else(|e| panic!("mesh-ca in {ns}: {e:#}"));
        std::future::pending::<()>().await;
    });
}

/// Applies mesh-init's capture in `ns` with its command-line flags, as its `main` does (the
/// proxy runs as root here, so `-u 0 -g 0` keeps its own traffic out of the capture).
pub fn capture(ns: &str, flags: &[&str]) {
    use clap::Parser;
    let mut all = vec!["mesh-init", "--network-namespace", ns];
    all.extend_from_slice(flags);
    let config = mesh_init::app::Config::try_parse_from(all).unwrap_or_else(|e| panic!("{e}"));
    if let Err(failure) = mesh_init::app::run(&config) {
        panic!("mesh-init in {ns}: {failure:?}");
    }
}

/// The bootstrap of a sidecar Envoy: ADS to the pilot, SDS to the agent (both in its
/// namespace), admin on `admin_port`.
pub fn bootstrap(node_id: &str, namespace: &str, ip: &str, service_account: &str) -> String {
    let cluster = |name: &str, address: &str| {
        let (host, port) = address.split_once(':').unwrap_or((address, "0"));
        format!(
            r#"  - name: {name}
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: {name}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}}}]}}]
"#
        )
    };
    format!(
        r#"node:
  id: "{node_id}"
  cluster: {namespace}
  metadata: {{NAMESPACE: {namespace}, INSTANCE_IPS: "{ip}", SERVICE_ACCOUNT: {service_account}}}
dynamic_resources:
  ads_config: {{api_type: GRPC, transport_api_version: V3, grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]}}
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
{}{}admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 15000}}}}
"#,
        cluster("xds-grpc", XDS),
        cluster(mesh_api::xds::mtls::SDS_CLUSTER, SDS)
    )
}

/// An Envoy running in a namespace; killed on drop.
pub struct Envoy {
    child: Option<Child>,
}

impl Envoy {
    /// Starts Envoy in `ns` with `bootstrap` (written into `dir`).
    pub fn start(ns: &str, dir: &Path, bootstrap: &str) -> Self {
        let path = dir.join(format!("envoy-{ns}.yaml"));
        std::fs::write(&path, bootstrap).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "envoy", "--use-dynamic-base-id"])
            .args(["--concurrency", "1", "--log-level", "warn", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start envoy: {e}"));
        Self { child: Some(child) }
    }

    /// Stops Envoy and returns what it logged.
    pub fn stop(mut self) -> String {
        let Some(mut child) = self.child.take() else { return String::new() };
        let _ = child.kill();
        child
            .wait_with_output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
