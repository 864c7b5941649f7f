//! The Kubernetes source against a mocked API server (kube-rs with tower-test): it lists
//! Services, EndpointSlices, Pods and a VirtualService and produces the model, endpoints
//! carrying their Pods' labels and service accounts, not-ready endpoints left out.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

fn list(kind: &str, api_version: &str, items: Value) -> Value {
    json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
}

/// What the API server holds, by the path a LIST goes to.
fn cluster(path: &str) -> Value {
    match path {
        "/api/v1/services" => list(
            "Service",
            "v1",
            json!([{
                "metadata": {"name": "reviews", "namespace": "bookinfo", "resourceVersion": "1"},
                "spec": {"clusterIP": "10.96.0.50", "selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]}
            }]),
        ),
        "/apis/discovery.k8s.io/v1/endpointslices" => list(
            "EndpointSlice",
            "discovery.k8s.io/v1",
            json!([{
                "metadata": {"name": "reviews-abc", "namespace": "bookinfo", "resourceVersion": "1", "labels": {"kubernetes.io/service-name": "reviews"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.1.0.11"], "conditions": {"ready": true}, "zone": "zone-a",
                     "targetRef": {"kind": "Pod", "name": "reviews-v1-x", "namespace": "bookinfo"}},
                    {"addresses": ["10.1.0.12"], "conditions": {"ready": true},
                     "targetRef": {"kind": "Pod", "name": "reviews-v2-y", "namespace": "bookinfo"}},
                    {"addresses": ["10.1.0.13"], "conditions": {"ready": false},
                     "targetRef": {"kind": "Pod", "name": "reviews-v2-z", "namespace": "bookinfo"}}
                ]
            }]),
        ),
        "/api/v1/pods" => list(
            "Pod",
            "v1",
            json!([
                {"metadata": {"name": "reviews-v1-x", "namespace": "bookinfo", "resourceVersion": "1", "labels": {"app": "reviews", "version": "v1", "security.istio.io/tlsMode": "istio"}},
                 "spec": {"serviceAccountName": "bookinfo-reviews", "containers": [{"name": "app"}]}},
                {"metadata": {"name": "reviews-v2-y", "namespace": "bookinfo", "resourceVersion": "1", "labels": {"app": "reviews", "version": "v2"}},
                 "spec": {"serviceAccountName": "bookinfo-reviews", "containers": [{"name": "app"}]}}
            ]),
        ),
        "/apis/networking.istio.io/v1/virtualservices" => list(
            "VirtualService",
            "networking.istio.io/v1",
            json!([{
                "metadata": {"name": "reviews", "namespace": "bookinfo", "resourceVersion": "1"},
                "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}
            }]),
        ),
        other if other.starts_with("/apis/networking.istio.io/v1/") => {
            let kind = match other.rsplit('/').next().unwrap() {
                "destinationrules" => "DestinationRule",
                "serviceentries" => "ServiceEntry",
                _ => "WorkloadEntry",
            };
            list(kind, "networking.istio.io/v1", json!([]))
        }
        other => panic!("unexpected request for {other}"),
    }
}

#[tokio::test]
async fn lists_become_the_model() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    // The API server: answers LISTs with the cluster above, holds WATCHes open.
    tokio::spawn(async move {
        let mut watches = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let query = request.uri().query().unwrap_or_default().to_owned();
            if query.contains("watch=true") {
                watches.push(send);
                continue;
            }
            let body = serde_json::to_vec(&cluster(request.uri().path())).unwrap();
            send.send_response(Response::builder().status(200).body(Body::from(body)).unwrap());
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(mesh_pilot::source::kube::run(client, move |snapshot, rejected| {
        let _ = tx.try_send((snapshot, rejected));
    }));
    let (snapshot, rejected) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a snapshot once every kind is listed")
        .unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");

    let service = &snapshot.services["reviews.bookinfo.svc.cluster.local"];
    assert_eq!(service.vip, Some("10.96.0.50".parse().unwrap()));
    let endpoints = &snapshot.endpoints[&("reviews.bookinfo.svc.cluster.local".to_owned(), 9080)];
    let seen: Vec<(String, &str, &str, bool)> = endpoints
        .iter()
        .map(|e| {
            (
                e.address.to_string(),
                e.labels["version"].as_str(),
                e.service_account.as_str(),
                e.sidecar,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("10.1.0.11".to_owned(), "v1", "bookinfo-reviews", true),
            ("10.1.0.12".to_owned(), "v2", "bookinfo-reviews", false)
        ],
        "ready endpoints with their pods' labels; the not-ready one is left out"
    );
    assert_eq!(endpoints[0].locality, "zone-a");
    assert_eq!(snapshot.virtual_services.len(), 1);
}
