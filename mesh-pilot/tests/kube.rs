//! The Kubernetes source against a mocked API server (kube-rs with tower-test): it lists
//! Services, EndpointSlices, Pods and VirtualServices and produces the model, endpoints
//! carrying their Pods' labels and service accounts, not-ready endpoints left out; an invalid
//! VirtualService is left out and gets a Warning Event.

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
            }, {
                "metadata": {"name": "broken", "namespace": "bookinfo", "resourceVersion": "1", "uid": "u-broken"},
                "spec": {"hosts": ["ratings"], "http": [{"route": [
                    {"destination": {"host": "ratings"}, "weight": 10},
                    {"destination": {"host": "ratings"}, "weight": 10}
                ]}]}
            }]),
        ),
        // A kind the mesh does not implement, in a cluster that has its CRD: read, and said.
        "/apis/networking.istio.io/v1" => json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "networking.istio.io/v1",
            "resources": [{"name": "workloadgroups", "singularName": "workloadgroup", "namespaced": true, "kind": "WorkloadGroup", "verbs": ["list", "watch"]}]
        }),
        "/apis/networking.istio.io/v1/workloadgroups" => list(
            "WorkloadGroup",
            "networking.istio.io/v1",
            json!([{"metadata": {"name": "vms", "namespace": "bookinfo", "resourceVersion": "1", "uid": "u-vms"}, "spec": {"template": {}}}]),
        ),
        other if other.starts_with("/apis/networking.istio.io/v1/") => {
            let kind = match other.rsplit('/').next().unwrap() {
                "destinationrules" => "DestinationRule",
                "serviceentries" => "ServiceEntry",
                "sidecars" => "Sidecar",
                _ => "WorkloadEntry",
            };
            list(kind, "networking.istio.io/v1", json!([]))
        }
        "/apis/security.istio.io/v1/peerauthentications" => {
            list("PeerAuthentication", "security.istio.io/v1", json!([]))
        }
        "/apis/security.istio.io/v1/authorizationpolicies" => {
            list("AuthorizationPolicy", "security.istio.io/v1", json!([]))
        }
        "/apis/security.istio.io/v1/requestauthentications" => {
            list("RequestAuthentication", "security.istio.io/v1", json!([]))
        }
        // The cluster has the Telemetry CRD: Telemetries are read (and sorted oldest first).
        "/apis/telemetry.istio.io/v1" => json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "telemetry.istio.io/v1",
            "resources": [{"name": "telemetries", "singularName": "telemetry", "namespaced": true, "kind": "Telemetry", "verbs": ["list", "watch"]}]
        }),
        "/apis/telemetry.istio.io/v1/telemetries" => list(
            "Telemetry",
            "telemetry.istio.io/v1",
            json!([{
                "metadata": {"name": "newer", "namespace": "bookinfo", "resourceVersion": "1", "creationTimestamp": "2025-02-01T00:00:00Z"},
                "spec": {"accessLogging": [{"providers": [{"name": "envoy"}]}]}
            }, {
                "metadata": {"name": "older", "namespace": "bookinfo", "resourceVersion": "1", "creationTimestamp": "2025-01-01T00:00:00Z"},
                "spec": {"tracing": [{"randomSamplingPercentage": 10}], "metrics": [{"providers": [{"name": "prometheus"}]}]}
            }]),
        ),
        // The cluster serves the Gateway API: its kinds are watched too.
        "/apis/gateway.networking.k8s.io/v1" => json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "gateway.networking.k8s.io/v1",
            "resources": [{"name": "gateways", "singularName": "gateway", "namespaced": true, "kind": "Gateway", "verbs": ["list", "watch"]},
                          {"name": "gatewayclasses", "singularName": "gatewayclass", "namespaced": false, "kind": "GatewayClass", "verbs": ["list", "watch"]},
                          {"name": "grpcroutes", "singularName": "grpcroute", "namespaced": true, "kind": "GRPCRoute", "verbs": ["list", "watch"]},
                          {"name": "httproutes", "singularName": "httproute", "namespaced": true, "kind": "HTTPRoute", "verbs": ["list", "watch"]}]
        }),
        "/apis/gateway.networking.k8s.io/v1/gateways" => list(
            "Gateway",
            "gateway.networking.k8s.io/v1",
            json!([{
                "metadata": {"name": "web", "namespace": "bookinfo", "resourceVersion": "1", "generation": 4},
                "spec": {"gatewayClassName": "mesh", "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]}
            }]),
        ),
        "/apis/gateway.networking.k8s.io/v1/httproutes" => list(
            "HTTPRoute",
            "gateway.networking.k8s.io/v1",
            json!([{
                "metadata": {"name": "reviews", "namespace": "bookinfo", "resourceVersion": "7"},
                "spec": {"parentRefs": [{"name": "web"}], "rules": [{"backendRefs": [{"name": "reviews", "port": 9080}]}]}
            }]),
        ),
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses" => list(
            "GatewayClass",
            "gateway.networking.k8s.io/v1",
            json!([{
                "metadata": {"name": "mesh", "resourceVersion": "1", "generation": 1},
                "spec": {"controllerName": "mesh.io/gateway-controller"}
            }]),
        ),
        "/apis/gateway.networking.k8s.io/v1/grpcroutes" => {
            list("GRPCRoute", "gateway.networking.k8s.io/v1", json!([]))
        }
        "/apis/gateway.networking.k8s.io/v1beta1/referencegrants" => {
            list("ReferenceGrant", "gateway.networking.k8s.io/v1beta1", json!([]))
        }
        // Only TLS Secrets are asked for (a field selector on the type): a gateway's credential.
        "/api/v1/secrets" => list(
            "Secret",
            "v1",
            json!([{
                "metadata": {"name": "web-cred", "namespace": "istio-ingress", "resourceVersion": "1"},
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ"}
            }]),
        ),
        other => panic!("unexpected request for {other}"),
    }
}

/// Requests the API server received: path (with the query) and body.
type Received = tokio::sync::mpsc::UnboundedReceiver<(String, Value)>;

fn not_found() -> Response<Body> {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "the server could not find the requested resource"});
    Response::builder().status(404).body(Body::from(serde_json::to_vec(&status).unwrap())).unwrap()
}

/// The API server: answers LISTs with the cluster above (without the Gateway API when
/// `gateway_api` is false: its group is not found), holds WATCHes open, records the Events
/// posted.
fn api_server(gateway_api: bool) -> (kube::Client, Received, Received) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (events_tx, events) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
    let (patches_tx, patches) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
    tokio::spawn(async move {
        let mut watches = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let query = request.uri().query().unwrap_or_default().to_owned();
            if query.contains("watch=true") {
                watches.push(send);
                continue;
            }
            if request.method() == http::Method::POST {
                let path = request.uri().path().to_owned();
                let body = http_body_util::BodyExt::collect(request.into_body()).await.unwrap();
                let event: Value = serde_json::from_slice(&body.to_bytes()).unwrap();
                let _ = events_tx.send((path, event.clone()));
                send.send_response(
                    Response::builder()
                        .status(201)
                        .body(Body::from(serde_json::to_vec(&event).unwrap()))
                        .unwrap(),
                );
                continue;
            }
            let path = request.uri().path().to_owned();
            if request.method() == http::Method::PATCH {
                // Statuses and GatewayClasses: recorded, and answered with the object the
                // patch was for (or the applied object).
                let target = format!("{path}?{query}");
                let body = http_body_util::BodyExt::collect(request.into_body()).await.unwrap();
                let patch: Value = serde_json::from_slice(&body.to_bytes()).unwrap();
                let _ = patches_tx.send((target, patch.clone()));
                let object = stored(&path).unwrap_or(patch);
                let body = serde_json::to_vec(&object).unwrap();
                send.send_response(Response::builder().status(200).body(Body::from(body)).unwrap());
                continue;
            }
            let served =
                gateway_api && !path.starts_with("/apis/gateway.networking.k8s.io/v1alpha2");
            let unserved_istio = [
                "/apis/networking.istio.io/v1alpha3",
                "/apis/networking.istio.io/v1beta1",
                "/apis/extensions.istio.io",
                "/apis/telemetry.istio.io/v1alpha1",
            ]
            .iter()
            .any(|p| path.starts_with(p));
            if unserved_istio || (!served && path.starts_with("/apis/gateway.networking.k8s.io")) {
                send.send_response(not_found());
                continue;
            }
            if path.starts_with("/apis/gateway.networking.k8s.io/v1/gatewayclasses/") {
                // The pilot asks for its classes: `mesh` exists, `istio` does not.
                match stored(&path) {
                    Some(class) => send.send_response(
                        Response::builder()
                            .status(200)
                            .body(Body::from(serde_json::to_vec(&class).unwrap()))
                            .unwrap(),
                    ),
                    None => send.send_response(not_found()),
                }
                continue;
            }
            let body = serde_json::to_vec(&cluster(&path)).unwrap();
            send.send_response(Response::builder().status(200).body(Body::from(body)).unwrap());
        }
    });
    (client, events, patches)
}

/// The object at `path` (`.../namespaces/NS/KIND/NAME[/status]` or `.../KIND/NAME`), from the
/// list the cluster holds.
fn stored(path: &str) -> Option<Value> {
    let path = path.strip_suffix("/status").unwrap_or(path);
    let (collection, name) = path.rsplit_once('/')?;
    let (list_path, namespace) = match collection.split_once("/namespaces/") {
        Some((group, rest)) => {
            let (namespace, kind) = rest.split_once('/')?;
            (format!("{group}/{kind}"), Some(namespace))
        }
        None => (collection.to_owned(), None),
    };
    let list = cluster(&list_path);
    list["items"]
        .as_array()?
        .iter()
        .find(|o| {
            o["metadata"]["name"] == name
                && namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns)
        })
        .cloned()
}

#[tokio::test]
async fn a_cluster_without_the_gateway_api_still_makes_the_mesh() {
    let (client, _events, mut patches) = api_server(false);
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(mesh_pilot::source::kube::run(client, move |snapshot, rejected| {
        let _ = tx.try_send((snapshot, rejected));
    }));
    let (snapshot, _) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a snapshot without the Gateway API")
        .unwrap();
    assert!(snapshot.services.contains_key("reviews.bookinfo.svc.cluster.local"));
    assert!(snapshot.gateways.is_empty());
    assert!(patches.try_recv().is_err(), "no Gateway API, no GatewayClass and no status written");
}

#[tokio::test]
async fn gateway_api_statuses_are_written_back_and_the_missing_class_is_made() {
    let (client, _events, mut patches) = api_server(true);
    tokio::spawn(mesh_pilot::source::kube::run(client, |_, _| {}));
    let mut received = std::collections::BTreeMap::new();
    while received.len() < 4 {
        let (target, body) = tokio::time::timeout(Duration::from_secs(10), patches.recv())
            .await
            .unwrap_or_else(|_| panic!("patches so far: {received:#?}"))
            .unwrap();
        let path = target.split('?').next().unwrap().to_owned();
        assert!(received.insert(path, (target, body)).is_none(), "each object written once");
    }
    let base = "/apis/gateway.networking.k8s.io/v1";
    let paths: Vec<&str> = received.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            format!("{base}/gatewayclasses/istio"),
            format!("{base}/gatewayclasses/mesh/status"),
            format!("{base}/namespaces/bookinfo/gateways/web/status"),
            format!("{base}/namespaces/bookinfo/httproutes/reviews/status"),
        ]
    );
    // `istio` did not exist: applied, owned by the pilot, not forced over anybody's.
    let (target, class) = &received[&format!("{base}/gatewayclasses/istio")];
    assert!(
        target.contains("fieldManager=mesh-pilot") && !target.contains("force=true"),
        "{target}"
    );
    assert_eq!(class["spec"]["controllerName"], "mesh.io/gateway-controller");
    let (_, class) = &received[&format!("{base}/gatewayclasses/mesh/status")];
    assert_eq!(class["status"]["conditions"][0]["type"], "Accepted");
    assert_eq!(class["status"]["conditions"][0]["status"], "True");

    let (_, gateway) = &received[&format!("{base}/namespaces/bookinfo/gateways/web/status")];
    let conditions = &gateway["status"]["conditions"];
    assert_eq!(conditions[0]["type"], "Accepted");
    assert_eq!(conditions[0]["status"], "True");
    assert_eq!(conditions[0]["observedGeneration"], 4);
    // No Pod carries the Gateway's label: nothing serves it yet, and the status says so.
    assert_eq!(conditions[1]["type"], "Programmed");
    assert_eq!(conditions[1]["status"], "False");
    assert_eq!(conditions[1]["reason"], "NoResources");
    assert_eq!(gateway["status"]["listeners"][0]["attachedRoutes"], 1);

    let (_, route) = &received[&format!("{base}/namespaces/bookinfo/httproutes/reviews/status")];
    assert_eq!(route["metadata"]["resourceVersion"], "7", "written over the version read only");
    let parent = &route["status"]["parents"][0];
    assert_eq!(parent["controllerName"], "mesh.io/gateway-controller");
    assert_eq!(parent["parentRef"]["name"], "web");
    let conditions: Vec<(&str, &str)> = parent["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(conditions, [("Accepted", "True"), ("ResolvedRefs", "True")]);
}

#[tokio::test]
async fn lists_become_the_model() {
    let (client, mut events, _patches) = api_server(true);
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(mesh_pilot::source::kube::run(client, move |snapshot, rejected| {
        let _ = tx.try_send((snapshot, rejected));
    }));
    let (snapshot, rejected) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a snapshot once every kind is listed")
        .unwrap();
    // The invalid VirtualService is left out, reported, and gets a Warning Event.
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].to_string().contains("VirtualService bookinfo/broken"), "{}", rejected[0]);
    assert!(rejected[0].reason.contains("weight"), "{}", rejected[0].reason);
    let (path, event) =
        tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
    assert_eq!(path, "/apis/events.k8s.io/v1/namespaces/bookinfo/events");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "InvalidConfiguration");
    assert_eq!(event["regarding"]["name"], "broken");
    assert_eq!(event["regarding"]["uid"], "u-broken");
    assert!(event["note"].as_str().unwrap().contains("weight"), "{event}");
    // The WorkloadGroup is not enforced, and the pilot says so on it.
    let (_, event) =
        tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
    assert_eq!(event["reason"], "NotEnforced");
    assert_eq!(event["regarding"]["kind"], "WorkloadGroup");
    assert_eq!(event["regarding"]["uid"], "u-vms");
    assert_eq!(
        event["note"],
        "WorkloadGroup bookinfo/vms is read but not enforced: the mesh does not implement WorkloadGroup"
    );

    let credential = &snapshot.credentials[&("istio-ingress".to_owned(), "web-cred".to_owned())];
    assert_eq!(credential.certificate_chain.as_deref(), Some("CERT"));
    assert_eq!(credential.private_key.as_deref(), Some("KEY"));

    // The Gateway API's objects, as the Istio kinds the translation serves.
    assert!(
        snapshot
            .gateways
            .iter()
            .any(|g| g.metadata.name.as_deref() == Some("web-k8s-gateway-http"))
    );
    assert!(
        snapshot
            .virtual_services
            .iter()
            .any(|vs| vs.metadata.name.as_deref() == Some("reviews-httproute")
                && vs.spec.gateways == ["bookinfo/web-k8s-gateway-http"])
    );

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
    // The valid VirtualService and the HTTPRoute's (the broken one is left out).
    assert_eq!(snapshot.virtual_services.len(), 2);
    // Telemetries, oldest first: Istio's order, in which the first of two that select a
    // workload applies.
    let telemetries: Vec<&str> =
        snapshot.telemetries.iter().filter_map(|t| t.metadata.name.as_deref()).collect();
    assert_eq!(telemetries, ["older", "newer"]);
}
