//! The pilot drives a real Envoy sidecar in a network-namespace pod whose traffic mesh-init
//! captures: an app (another user) calls a Service VIP, and the routing the VirtualService asks
//! for happens on real requests: a 75/25 split between subsets (within a statistical
//! tolerance), a header match that pins testers to v2, and an injected 418 abort.
//!
//! Envoy stands in for mesh-proxy until the proxy exists; it is also the oracle the proxy will
//! be compared with. Needs root, iproute2, iptables, setpriv, python3 and envoy; outside CI a
//! missing piece is reported loudly and the test passes, under `CI=true` it fails.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use e2e::netns::{self, PodAndPeer};
use e2e::sidecar;

const CLIENT: &str = r#"
import json, urllib.request, urllib.error
def call(path, headers={}):
    req = urllib.request.Request("http://10.96.0.10" + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        return str(e.code)
split = {}
for _ in range(200):
    body = call("/")
    split[body] = split.get(body, 0) + 1
testers = {}
for _ in range(20):
    body = call("/", {"x-tester": "yes"})
    testers[body] = testers.get(body, 0) + 1
print(json.dumps({"split": split, "testers": testers, "broken": call("/broken")}))
"#;

/// An HTTP/1.1 backend answering every request with `body`.
fn backend(listener: TcpListener, body: &'static str) {
    netns::http_app(listener, move |_, _| body.to_owned());
}

const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hello-v1, namespace: demo}
spec: {address: 10.99.0.1, ports: {http: 18081}, labels: {app: hello, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hello-v2, namespace: demo}
spec: {address: 10.99.0.1, ports: {http: 18082}, labels: {app: hello, version: v2}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_routes_real_requests_as_the_virtual_service_says() {
    if !netns::can_run(&["envoy", "python3"]) {
        return;
    }
    let net = PodAndPeer::new("er");
    backend(netns::listen(&net.peer, "10.99.0.1:18081".parse().unwrap()), "v1");
    backend(netns::listen(&net.peer, "10.99.0.1:18082".parse().unwrap()), "v2");

    // The pilot, reading a directory, serving xDS inside the pod (as a node-local agent would).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("services.yaml"), CONFIG).unwrap();
    let routing = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mesh-pilot/tests/data/mesh/routing.yaml");
    std::fs::copy(routing, config.join("routing.yaml")).unwrap();
    let pilot = sidecar::serve_pilot(&net.pod, &config).await;
    assert_eq!(pilot.discovery.metrics.config_rejected.get(), 0, "the config is valid");

    // The workload's certificate over SDS, as the agent next to an Envoy sidecar serves it.
    let ca = mesh_testing::ca::TestCa::new();
    sidecar::serve_sds(&net.pod, ca.issue("demo", "client"));

    // Capture: the proxy here runs as root (uid 0), the app as uid 1000.
    sidecar::capture(&net.pod, &["-u", "0", "-g", "0", "--ipv6", "off"]);
    let envoy = sidecar::Envoy::start(
        &net.pod,
        dir.path(),
        &sidecar::bootstrap(
            "sidecar~10.99.0.2~client-1.demo~demo.svc.cluster.local",
            "demo",
            "10.99.0.2",
            "client",
        ),
    );

    if let Err(why) = pilot
        .discovery
        .wait_until_synced(&mesh_api::xds::SIDECAR_TYPES, Duration::from_secs(30))
        .await
    {
        panic!("envoy did not sync: {why}\n{}", envoy.stop());
    }
    // Listeners go live right after the ACK; give the workers a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pod = net.pod.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &pod,
                "setpriv",
                "--reuid=1000",
                "--regid=1000",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                CLIENT,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let envoy_log = envoy.stop();
    assert!(
        out.status.success(),
        "client failed: {}\nenvoy: {envoy_log}",
        String::from_utf8_lossy(&out.stderr),
    );
    let report = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let count = |key: &str, body: &str| -> u32 {
        let section = report.split(&format!("\"{key}\": {{")).nth(1).unwrap_or_default();
        let section = section.split('}').next().unwrap_or_default();
        section
            .split(&format!("\"{body}\": "))
            .nth(1)
            .and_then(|n| n.split([',', '}']).next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    eprintln!("client report: {report}");
    let (v1, v2) = (count("split", "v1"), count("split", "v2"));
    assert_eq!(v1 + v2, 200, "every request answered by a backend: {report}");
    // 75% of 200 is 150; four standard deviations (about 6 each) either side.
    assert!((125..=175).contains(&v1), "v1 got {v1} of 200, expected about 150: {report}");
    assert_eq!(count("testers", "v2"), 20, "the header match pins testers to v2: {report}");
    assert!(report.ends_with("\"broken\": \"418\"}"), "the abort fault answers 418: {report}");
}
