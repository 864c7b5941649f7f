//! The `mesh-pilot` binary in local mode: it serves what the directory says, pushes when a file
//! changes, and reports an invalid file without disturbing the rest. In Kubernetes mode: no
//! plaintext xDS unless asked for, and `/debug/*` only with the token.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ads_stream, cds_request};
use mesh_testing::http::get;
use mesh_testing::net::free_port;

#[tokio::test]
async fn local_directory_changes_reach_connected_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("pilot.log");
    let data = common::mesh_dir();
    for file in ["services.yaml", "routing.yaml"] {
        std::fs::copy(data.join(file), dir.path().join(file)).unwrap();
    }
    let (xds, monitoring) = (free_port(), free_port());
    let monitoring = SocketAddr::from(([127, 0, 0, 1], monitoring));
    let mut pilot = Command::new(env!("CARGO_BIN_EXE_mesh-pilot"))
        .arg("--config-dir")
        .arg(dir.path())
        .args([
            "--xds-listen",
            &format!("127.0.0.1:{xds}"),
            "--monitoring-listen",
            &monitoring.to_string(),
        ])
        .args(["--poll-interval", "100ms", "--debounce-after", "50ms"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(monitoring, "/ready").await.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "mesh-pilot did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (requests, mut responses) = ads_stream(&format!("http://127.0.0.1:{xds}")).await;
    requests.send(cds_request("", "")).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("a first CDS response")
        .unwrap()
        .unwrap();
    assert_eq!(first.resources.len(), 7);
    requests.send(cds_request(&first.version_info, &first.nonce)).await.unwrap();

    // A new Service file: the connected client gets its cluster.
    std::fs::write(
        dir.path().join("cache.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: cache, namespace: demo}\nspec:\n  clusterIP: 10.96.0.30\n  ports: [{name: tcp-redis, port: 6379}]\n",
    )
    .unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("a push after the edit")
        .unwrap()
        .unwrap();
    assert_eq!(pushed.resources.len(), 8);
    assert_ne!(pushed.version_info, first.version_info);
    requests.send(cds_request(&pushed.version_info, &pushed.nonce)).await.unwrap();

    // An invalid file is reported and changes nothing for the proxies.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad, namespace: demo}\nspec:\n  host: cache\n  subsets:\n  - name: a\n  - name: a\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), responses.message()).await.is_err(),
        "no push for an invalid file"
    );
    let syncz = get(monitoring, "/debug/syncz").await.unwrap();
    assert!(syncz.contains("\"state\": \"SYNCED\""), "{syncz}");
    let metrics = get(monitoring, "/metrics").await.unwrap();
    for line in [
        "pilot_xds_pushes_total{type=\"cds\"} 2",
        "pilot_config_rejected 1",
        "pilot_xds 1",
        "pilot_proxy_convergence_time_count 2",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    let registry = get(monitoring, "/debug/registry").await.unwrap();
    assert!(registry.contains("cache.demo.svc.cluster.local"), "{registry}");

    // What the connected proxy is served, as Envoy's config dump.
    let dump = get(
        monitoring,
        "/debug/config_dump?proxyID=sidecar%7E10.0.0.9%7Ec.demo%7Edemo.svc.cluster.local",
    )
    .await
    .unwrap();
    let (head, body) = dump.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{dump}");
    let dump: serde_json::Value = serde_json::from_str(body).unwrap();
    let types: Vec<&str> =
        dump["configs"].as_array().unwrap().iter().map(|c| c["@type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["ClustersConfigDump", "EndpointsConfigDump", "ListenersConfigDump", "RoutesConfigDump"]
            .map(|t| format!("type.googleapis.com/envoy.admin.v3.{t}"))
    );
    let clusters = &dump["configs"][0]["dynamicActiveClusters"];
    assert!(
        clusters
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["cluster"]["name"] == "outbound|6379||cache.demo.svc.cluster.local"
                && c["cluster"]["@type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster"),
        "{clusters:#}"
    );
    let listeners = &dump["configs"][2]["dynamicListeners"];
    assert_eq!(listeners[0]["activeState"]["listener"]["name"], "virtualOutbound");
    let missing = get(monitoring, "/debug/config_dump").await.unwrap();
    assert!(missing.starts_with("HTTP/1.1 400"), "{missing}");
    let unknown = get(monitoring, "/debug/config_dump?proxyID=nobody").await.unwrap();
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");

    let _ = Command::new("kill").args(["-TERM", &pilot.id().to_string()]).status();
    let exit = tokio::task::spawn_blocking(move || pilot.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "mesh-pilot exited with {exit}");
    let out = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        out.contains("bad.yaml")
            && out.contains("subset name \"a\" is already used by an earlier subset"),
        "the invalid file is reported with its place and reason:\n{out}"
    );
}

/// A kubeconfig naming an API server where nothing listens: the pilot starts in Kubernetes mode
/// (and waits for its first configuration).
fn unreachable_cluster(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let server = format!("https://127.0.0.1:{}", free_port());
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\nclusters:\n- name: nowhere\n  cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}\ncontexts:\n- name: nowhere\n  context: {{cluster: nowhere, user: nobody}}\nusers:\n- name: nobody\n  user: {{token: none}}\n"
    );
    std::fs::write(&path, config).unwrap();
    path
}

/// `GET path` with `authorization` if given; the status code and body.
async fn get_with(address: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let header = authorization.map(|a| format!("authorization: {a}\r\n")).unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: pilot\r\n{header}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (status, body) = mesh_testing::http::status_and_body(&response);
    (status, body.to_owned())
}

/// The pilot binary in Kubernetes mode (against `kubeconfig`) with `args`, logging to a file
/// beside it; stopped on drop.
struct KubePilot(std::process::Child, std::path::PathBuf);

impl KubePilot {
    async fn start(kubeconfig: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let monitoring = args
            .windows(2)
            .find(|w| w[0] == "--monitoring-listen")
            .map(|w| w[1].parse::<SocketAddr>().unwrap())
            .unwrap();
        let log = kubeconfig.with_file_name(format!("pilot-{}.log", monitoring.port()));
        let child = Command::new(env!("CARGO_BIN_EXE_mesh-pilot"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let pilot = Self(child, log);
        // Listening once /metrics answers (the listeners are all bound before it).
        let metrics = SocketAddr::from(([127, 0, 0, 1], monitoring.port()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !get(metrics, "/metrics").await.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            assert!(Instant::now() < deadline, "mesh-pilot does not serve /metrics");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pilot
    }
}

impl KubePilot {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for KubePilot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn kubernetes_mode_serves_plaintext_xds_only_when_asked_and_debug_only_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = unreachable_cluster(dir.path());
    let token = dir.path().join("debug-token");
    std::fs::write(&token, "s3cret-debug-token\n").unwrap();
    let token = token.display().to_string();

    // Monitoring on every address (as in a pod), plaintext xDS not asked for.
    let (xds, monitoring) = (free_port(), free_port());
    let (xds_listen, monitoring_listen) =
        (format!("127.0.0.1:{xds}"), format!("0.0.0.0:{monitoring}"));
    let pilot = KubePilot::start(
        &kubeconfig,
        &[
            "--xds-listen",
            &xds_listen,
            "--monitoring-listen",
            &monitoring_listen,
            "--debug-token-file",
            &token,
        ],
        &[],
    )
    .await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", xds)).await.is_err(),
        "nothing serves plaintext xDS on {xds_listen}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pilot.log().contains("plaintext xDS is off: Kubernetes mode without --xds-plaintext") {
        assert!(Instant::now() < deadline, "one line says why:\n{}", pilot.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let monitoring = SocketAddr::from(([127, 0, 0, 1], monitoring));
    let (status, _) = get_with(monitoring, "/metrics", None).await;
    assert_eq!(status, 200, "/metrics is open");
    let (status, body) = get_with(monitoring, "/ready", None).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: first configuration\n"),
        "/ready is open"
    );
    for path in
        ["/debug/syncz", "/debug/registry", "/debug/config_dump?proxyID=x", "/debug/nothing"]
    {
        let (status, body) = get_with(monitoring, path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            body.contains("Authorization: Bearer <token>") && body.contains("--debug-token-file"),
            "{body}"
        );
        let (status, body) = get_with(monitoring, path, Some("Bearer s3cret-debug-tokeN")).await;
        assert_eq!(status, 401, "{path} with another token: {body}");
    }
    let (status, body) =
        get_with(monitoring, "/debug/syncz", Some("Bearer s3cret-debug-token")).await;
    assert_eq!((status, body.as_str()), (200, "[]\n"), "with the token");
    drop(pilot);

    // Asked for by the environment, as the chart asks: served, on loopback.
    let (xds, monitoring) = (free_port(), free_port());
    let (xds_listen, monitoring_listen) =
        (format!("127.0.0.1:{xds}"), format!("0.0.0.0:{monitoring}"));
    let _pilot = KubePilot::start(
        &kubeconfig,
        &["--xds-listen", &xds_listen, "--monitoring-listen", &monitoring_listen],
        &[("MESH_PILOT_XDS_PLAINTEXT", "true")],
    )
    .await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", xds)).await.is_ok(),
        "plaintext xDS on {xds_listen}"
    );
    // No token configured and not on loopback: /debug/* is closed to everyone, and says why.
    let monitoring = SocketAddr::from(([127, 0, 0, 1], monitoring));
    let (status, body) = get_with(monitoring, "/debug/syncz", Some("Bearer anything")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("--monitoring-listen 127.0.0.1:15014"), "{body}");
}
