//! `meshctl install` and `uninstall` against a recorded Kubernetes API (kube-rs over a mocked
//! service): the objects are applied in order with server-side apply, the readiness steps wait
//! until the API says ready, and uninstall removes what install recorded, newest first.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use meshctl::install::apply::{self, Waits};
use meshctl::install::plan::{self, Plan};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Every request the fake API server saw: `METHOD path?query`.
type Seen = Arc<Mutex<Vec<String>>>;

fn respond(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder().status(status).body(Body::from(serde_json::to_vec(body).unwrap())).unwrap()
}

fn status(code: u16, message: &str) -> Value {
    let failure = if code < 300 { "Success" } else { "Failure" };
    json!({"kind": "Status", "apiVersion": "v1", "status": failure, "code": code, "reason": "BadRequest", "message": message})
}

/// A fake API server: applies echo the object; a CRD is Established; a Deployment turns
/// available on its second read; the dry-run VirtualService is refused by the webhook; the
/// install record is served back as applied; deletes succeed.
fn api_server() -> (kube::Client, Seen) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut record = Value::Null;
        let mut deployment_reads = 0;
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let uri = request.uri().clone();
            let path = uri.path().to_owned();
            log.lock().await.push(format!("{method} {}", uri.path_and_query().unwrap()));
            let body = request.into_body().collect_bytes().await.unwrap();
            let name = path.rsplit('/').next().unwrap_or_default().to_owned();
            let answer = match method.as_str() {
                "PATCH" => {
                    let object: Value = serde_json::from_slice(&body).unwrap();
                    if path.ends_with("/configmaps/meshctl-install") {
                        record = object.clone();
                    }
                    respond(StatusCode::OK, &object)
                }
                "GET" if path.contains("/customresourcedefinitions/") => respond(
                    StatusCode::OK,
                    &json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                            "metadata": {"name": name},
                            "status": {"conditions": [{"type": "Established", "status": "True"}]}}),
                ),
                "GET" if path.contains("/deployments/") => {
                    deployment_reads += 1;
                    let available = i32::from(deployment_reads >= 2);
                    respond(
                        StatusCode::OK,
                        &json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                "metadata": {"name": name, "generation": 1},
                                "spec": {"replicas": 1},
                                "status": {"observedGeneration": 1, "updatedReplicas": available, "availableReplicas": available}}),
                    )
                }
                "POST" if path.ends_with("/virtualservices") => respond(
                    StatusCode::BAD_REQUEST,
                    &status(
                        400,
                        "admission webhook \"validation.mesh.io\" denied the request: spec.http[0].route: weight 150",
                    ),
                ),
                "GET" if path.ends_with("/configmaps/meshctl-install") && !record.is_null() => {
                    respond(StatusCode::OK, &record)
                }
                "DELETE" => respond(StatusCode::OK, &status(200, "deleted")),
                _ => respond(StatusCode::NOT_FOUND, &status(404, "not found")),
            };
            send.send_response(answer);
        }
    });
    (kube::Client::new(service, "default"), seen)
}

fn object(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}})
}

fn the_plan() -> Plan {
    plan::plan(
        "mesh-system",
        vec![object(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "virtualservices.networking.istio.io",
        )],
        vec![
            object(
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                "mesh-validator",
            ),
            object("apps/v1", "Deployment", "mesh-pilot"),
            object("v1", "ServiceAccount", "mesh-pilot"),
            object("v1", "Service", "mesh-pilot"),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn install_applies_in_order_waits_for_readiness_and_uninstall_removes_it_all() {
    let (client, seen) = api_server();
    let waits = Waits { timeout: Duration::from_secs(10), period: Duration::from_millis(10) };
    let mut out = Vec::new();
    apply::install(&client, &the_plan(), waits, &mut out).await.unwrap();
    let requests = std::mem::take(&mut *seen.lock().await);
    let apply = "?&force=true&fieldManager=meshctl";
    let crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/virtualservices.networking.istio.io";
    let deployment = "/apis/apps/v1/namespaces/mesh-system/deployments/mesh-pilot";
    assert_eq!(
        requests,
        [
            format!("PATCH /api/v1/namespaces/mesh-system{apply}"),
            format!("PATCH {crd}{apply}"),
            format!("GET {crd}"),
            format!("PATCH /api/v1/namespaces/mesh-system/serviceaccounts/mesh-pilot{apply}"),
            format!("PATCH /api/v1/namespaces/mesh-system/services/mesh-pilot{apply}"),
            format!("PATCH {deployment}{apply}"),
            format!(
                "PATCH /apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/mesh-validator{apply}"
            ),
            format!("PATCH /api/v1/namespaces/mesh-system/configmaps/meshctl-install{apply}"),
            // Not available at the first read: waited for.
            format!("GET {deployment}"),
            format!("GET {deployment}"),
            "POST /apis/networking.istio.io/v1/namespaces/mesh-system/virtualservices?&dryRun=All"
                .to_owned(),
            // Whether the cluster has the Gateway API (this one does not).
            "GET /apis/gateway.networking.k8s.io/v1".to_owned(),
        ]
    );
    let progress = String::from_utf8(out).unwrap();
    for line in [
        "deployment.apps/mesh-pilot -n mesh-system applied",
        "✔ 1 CRDs established",
        "✔ mesh-pilot ready",
        "✔ webhook answering",
        "note: this cluster has no Gateway API CRDs",
    ] {
        assert!(progress.contains(line), "{line:?} in {progress}");
    }

    let mut out = Vec::new();
    let removed = apply::uninstall(&client, "mesh-system", false, &mut out).await.unwrap();
    assert_eq!(removed, 5, "four objects and the record; the CRD and the namespace stay");
    let deletes: Vec<String> =
        seen.lock().await.iter().filter(|r| r.starts_with("DELETE")).cloned().collect();
    assert_eq!(
        deletes,
        [
            "DELETE /apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/mesh-validator?",
            "DELETE /apis/apps/v1/namespaces/mesh-system/deployments/mesh-pilot?",
            "DELETE /api/v1/namespaces/mesh-system/services/mesh-pilot?",
            "DELETE /api/v1/namespaces/mesh-system/serviceaccounts/mesh-pilot?",
            "DELETE /api/v1/namespaces/mesh-system/configmaps/meshctl-install?",
        ]
    );
}

#[tokio::test]
async fn a_deployment_that_never_gets_ready_fails_install_with_what_was_seen() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let body = request.into_body().collect_bytes().await.unwrap();
            let answer = if body.is_empty() {
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mesh-ca", "generation": 1},
                       "spec": {"replicas": 1}, "status": {"observedGeneration": 1, "availableReplicas": 0}})
            } else {
                serde_json::from_slice(&body).unwrap()
            };
            send.send_response(respond(StatusCode::OK, &answer));
        }
    });
    let client = kube::Client::new(service, "default");
    let plan = plan::plan("mesh-system", vec![], vec![object("apps/v1", "Deployment", "mesh-ca")])
        .unwrap();
    let waits = Waits { timeout: Duration::from_millis(200), period: Duration::from_millis(20) };
    let err = apply::install(&client, &plan, waits, &mut Vec::new()).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "deployment.apps/mesh-ca -n mesh-system is not ready after 0s: 0 of 1 replicas available"
    );
}
