//! The admission webhooks over real HTTPS, as the API server calls them: the pilot started as
//! the binary runs with `--ca-address`, its certificate from mesh-ca naming its Service
//! (`mesh-pilot.mesh-system.svc`), verified against the mesh root as the API server verifies it
//! with the `caBundle`.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use mesh_testing::pilot::SecuredPilot;
use serde_json::{Value, json};

/// One HTTPS request to the webhook server, trusting only the mesh root and checking the
/// certificate names `server_name`; returns the status and the body.
async fn call(
    address: SocketAddr,
    root_pem: &str,
    server_name: &str,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Vec<u8>), String> {
    let roots = mesh_identity::tls::roots(&[root_pem.to_owned()]).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(mesh_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", server_name)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Ok((status, body))
}

fn review(uid: &str, namespace: &str, object: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": uid, "namespace": namespace, "operation": "CREATE", "object": object}
    }))
    .unwrap()
}

fn pod(mut labels: Value) -> Value {
    // Made by a Deployment's ReplicaSet, which labels its pods with its hash.
    labels["pod-template-hash"] = json!("5d9f8c7b6");
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "ratings-v1-5d9f8c7b6-",
            "namespace": "bookinfo",
            "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "ratings-v1-5d9f8c7b6", "uid": "x"}]
        },
        "spec": {
            "serviceAccountName": "bookinfo-ratings",
            "containers": [{"name": "ratings", "image": "bookinfo:1", "ports": [{"containerPort": 9080}]}]
        }
    })
}

/// The AdmissionReview answered, with the patch applied to `object` when there is one.
fn patched(answer: &[u8], uid: &str, object: &Value) -> (Value, Option<Value>) {
    let answer: Value = serde_json::from_slice(answer).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = answer["response"].clone();
    assert_eq!(response["uid"], uid, "the uid is echoed");
    let Some(patch) = response["patch"].as_str() else { return (response, None) };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut pod = object.clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    (response, Some(pod))
}

fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_webhooks_answer_admission_reviews_over_https_with_a_certificate_from_the_ca() {
    let secured = SecuredPilot::start(&common::mesh_dir()).await;
    let address = secured.pilot.bound().webhook.unwrap();
    let root = secured.root_pem.as_str();
    let service = "mesh-pilot.mesh-system.svc";
    let post =
        |path: &'static str, body: Vec<u8>| call(address, root, service, Method::POST, path, body);

    // A pod that asks for the sidecar gets it: mesh-init, then mesh-proxy as a native sidecar.
    let asking = pod(json!({"app": "ratings", "sidecar.mesh.io/inject": "true"}));
    let (status, body) = post("/inject", review("u-1", "bookinfo", &asking)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let (response, injected) = patched(&body, "u-1", &asking);
    assert_eq!(response["allowed"], true);
    let injected = injected.expect("a patch");
    assert_eq!(container_names(&injected, "initContainers"), ["mesh-init", "mesh-proxy"]);
    assert_eq!(container_names(&injected, "containers"), ["ratings"]);
    let proxy = &injected["spec"]["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    let env = proxy["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "MESH_WORKLOAD_NAME" && e["value"] == "ratings-v1"));
    assert!(
        env.iter().any(|e| e["name"] == "MESH_PILOT_ADDRESS"
            && e["value"] == "mesh-pilot.mesh-system.svc:15012"),
        "{env:?}"
    );

    // Injecting the injected pod again changes nothing.
    let (status, body) = post("/inject", review("u-2", "bookinfo", &injected)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let (response, again) = patched(&body, "u-2", &injected);
    assert_eq!((response["allowed"].as_bool(), again), (Some(true), None));

    // A pod that does not ask, in a namespace not labelled, is allowed as it is.
    let plain = pod(json!({"app": "ratings"}));
    let (status, body) = post("/inject", review("u-3", "bookinfo", &plain)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched(&body, "u-3", &plain), (json!({"uid": "u-3", "allowed": true}), None));

    // A malformed review gets 400 with the reason, and the server keeps serving.
    let (status, body) = post("/inject", b"{\"kind\":\"AdmissionReview\"".to_vec()).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("not an admission.k8s.io/v1 AdmissionReview"));

    // Validation: a bad VirtualService is refused with the field and the reason.
    let mut vs = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": 150}]}]}
    });
    let (status, body) = post("/validate", review("u-4", "bookinfo", &vs)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let (response, _) = patched(&body, "u-4", &vs);
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("spec.http[0].route"), "{message}");
    vs["spec"]["http"][0]["route"][0]["weight"] = json!(100);
    let (_, body) = post("/validate", review("u-5", "bookinfo", &vs)).await.unwrap();
    assert_eq!(patched(&body, "u-5", &vs).0["allowed"], true);

    // Only POST to the two paths.
    let get = call(address, root, service, Method::GET, "/inject", Vec::new()).await.unwrap();
    assert_eq!(get.0, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = post("/mutate", review("u-6", "bookinfo", &plain)).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The certificate names the Service (and its long form), nothing else.
    let long = "mesh-pilot.mesh-system.svc.cluster.local";
    assert!(call(address, root, long, Method::GET, "/", Vec::new()).await.is_ok());
    let wrong = call(address, root, "mesh-ca.mesh-system.svc", Method::GET, "/", Vec::new()).await;
    assert!(wrong.unwrap_err().contains("TLS"), "another name does not verify");
}
