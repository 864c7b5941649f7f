//! Proxyless gRPC: gRPC's own xDS client (PyPI `grpcio`, `xds:///` targets) asks the pilot for
//! an API listener by name (`host:port`), follows it to routes, clusters and endpoints, accepts
//! them all, and routes real calls as the VirtualService says (a header match to v2, the rest
//! to v1). Outside CI a missing grpcio is reported loudly and the test passes; under `CI=true`
//! it fails.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::process::Command;

use mesh_testing::net::free_port;
use mesh_testing::pilot::TestPilot;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: hello}
  ports: [{name: grpc, port: 9090}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hello-v1, namespace: demo}
spec: {address: 127.0.0.1, ports: {grpc: V1_PORT}, labels: {app: hello, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hello-v2, namespace: demo}
spec: {address: 127.0.0.1, ports: {grpc: V2_PORT}, labels: {app: hello, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hello, namespace: demo}
spec:
  hosts: [hello]
  http:
  - match: [{headers: {x-tester: {exact: "yes"}}}]
    route: [{destination: {host: hello, subset: v2}}]
  - route: [{destination: {host: hello, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hello, namespace: demo}
spec:
  host: hello
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

/// Two gRPC servers answering with their version, and a client on `xds:///`.
const SCRIPT: &str = r#"
import json, sys, grpc
from concurrent import futures
def serve(port, name):
    server = grpc.server(futures.ThreadPoolExecutor(2))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(lambda req, ctx: name.encode())})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("127.0.0.1:%s" % port)
    server.start()
    return server
servers = [serve(sys.argv[1], "v1"), serve(sys.argv[2], "v2")]
channel = grpc.insecure_channel("xds:///hello.demo.svc.cluster.local:9090")
say = channel.unary_unary("/test.Echo/Say")
plain = [say(b"", timeout=30).decode() for _ in range(5)]
testers = [say(b"", metadata=[("x-tester", "yes")], timeout=30).decode() for _ in range(5)]
print(json.dumps({"plain": plain, "testers": testers}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_xds_client_routes_by_the_virtual_service() {
    if !mesh_testing::require::grpcio("proxyless gRPC test") {
        return;
    }
    let (v1, v2) = (free_port(), free_port());
    let mesh = MESH.replace("V1_PORT", &v1.to_string()).replace("V2_PORT", &v2.to_string());
    let pilot = TestPilot::from_yaml(&mesh).await;
    assert_eq!(pilot.discovery.metrics.config_rejected.get(), 0, "the mesh is valid");
    let xds = pilot.xds.port();
    let dir = tempfile::tempdir().unwrap();

    let bootstrap = serde_json::json!({
        "xds_servers": [{
            "server_uri": format!("127.0.0.1:{xds}"),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": "sidecar~127.0.0.9~client-1.demo~demo.svc.cluster.local",
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "demo"},
        },
    });
    let bootstrap_path = dir.path().join("bootstrap.json");
    std::fs::write(&bootstrap_path, bootstrap.to_string()).unwrap();
    let (v1, v2, path) = (v1.to_string(), v2.to_string(), bootstrap_path.clone());
    let client = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["90", "python3", "-c", SCRIPT, &v1, &v2])
            .env("GRPC_XDS_BOOTSTRAP", &path)
            .output()
            .unwrap()
    });
    let output = client.await.unwrap();
    assert!(
        output.status.success(),
        "the gRPC client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["plain"], serde_json::json!(vec!["v1"; 5]), "{result}");
    assert_eq!(result["testers"], serde_json::json!(vec!["v2"; 5]), "{result}");
    // gRPC was sent every type and rejected none (its stream is gone with the process, the
    // counters stay).
    for type_url in mesh_api::xds::SIDECAR_TYPES {
        let label = mesh_pilot::metrics::TypeLabel::of(type_url);
        assert!(
            pilot.discovery.metrics.pushes.get_or_create(&label).get() > 0,
            "{type_url} not sent"
        );
        assert_eq!(
            pilot.discovery.metrics.rejects.get_or_create(&label).get(),
            0,
            "{type_url} NACKed"
        );
    }
}
