//! The Kubernetes paths against a mocked API server (kube-rs with tower-test): TokenReview,
//! the root Secret, and the root ConfigMap.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Namespace;
use kube::client::Body;
use mesh_ca::auth::{AuthError, Authenticator, TokenReviewer};
use mesh_ca::distribute;
use mesh_ca::root;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// Takes the next request, checks method and path, answers `status` with `body`; returns the
/// request body as JSON.
async fn answer(
    handle: &mut Handle,
    method: &str,
    path: &str,
    status: StatusCode,
    body: Value,
) -> Value {
    let (request, send) = handle.next_request().await.expect("the client sends a request");
    assert_eq!(request.method().as_str(), method);
    assert_eq!(request.uri().path(), path);
    let sent = request.into_body().collect_bytes().await.unwrap();
    let sent = if sent.is_empty() { Value::Null } else { serde_json::from_slice(&sent).unwrap() };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
    sent
}

fn review(status: Value) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {}, "spec": {}, "status": status})
}

#[tokio::test]
async fn token_review_maps_service_accounts_and_refusals() {
    let (client, mut handle) = mock();
    let auth = Arc::new(Authenticator::TokenReview(TokenReviewer::new(client, "mesh-ca")));

    let call = tokio::spawn({
        let auth = auth.clone();
        async move { auth.authenticate("good-token").await }
    });
    let sent = answer(
        &mut handle,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        StatusCode::CREATED,
        review(json!({"authenticated": true, "audiences": ["mesh-ca"], "user": {"username": "system:serviceaccount:bookinfo:bookinfo-reviews", "groups": ["system:serviceaccounts", "system:serviceaccounts:bookinfo"]}})),
    )
    .await;
    assert_eq!(sent["spec"], json!({"token": "good-token", "audiences": ["mesh-ca"]}));
    let caller = call.await.unwrap().unwrap();
    assert_eq!(
        (caller.namespace.as_str(), caller.service_account.as_str()),
        ("bookinfo", "bookinfo-reviews")
    );

    let call = tokio::spawn({
        let auth = auth.clone();
        async move { auth.authenticate("expired").await }
    });
    answer(
        &mut handle,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        StatusCode::CREATED,
        review(json!({"authenticated": false, "error": "token has expired"})),
    )
    .await;
    match call.await.unwrap() {
        Err(AuthError::Invalid(why)) => assert_eq!(why, "token has expired"),
        other => panic!("expected an invalid token, got {other:?}"),
    }

    // Authenticated, but with no audience: good for the API server, not for the CA.
    let call = tokio::spawn({
        let auth = auth.clone();
        async move { auth.authenticate("api-server-token").await }
    });
    answer(
        &mut handle,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        StatusCode::CREATED,
        review(json!({"authenticated": true, "user": {"username": "system:serviceaccount:default:sleep", "groups": ["system:serviceaccounts"]}})),
    )
    .await;
    match call.await.unwrap() {
        Err(AuthError::Invalid(why)) => assert_eq!(why, "the token is not for audience mesh-ca"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A token of a user, not a service account.
    let call = tokio::spawn({
        let auth = auth.clone();
        async move { auth.authenticate("user").await }
    });
    answer(
        &mut handle,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        StatusCode::CREATED,
        review(json!({"authenticated": true, "audiences": ["mesh-ca"], "user": {"username": "alice@example.com"}})),
    )
    .await;
    assert!(matches!(call.await.unwrap(), Err(AuthError::Invalid(_))));

    // The API server failing is "unavailable", not "unauthenticated".
    let call = tokio::spawn({
        let auth = auth.clone();
        async move { auth.authenticate("any").await }
    });
    answer(
        &mut handle,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is down", "reason": "InternalError", "code": 500}),
    )
    .await;
    assert!(matches!(call.await.unwrap(), Err(AuthError::Unavailable(_))));
}

#[tokio::test]
async fn root_secret_is_created_once_and_read_after() {
    let (client, mut handle) = mock();
    let first = tokio::spawn(root::load_or_create_secret(
        client.clone(),
        "mesh-system",
        root::SECRET_NAME,
        "cluster.local",
    ));
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
    answer(
        &mut handle,
        "GET",
        "/api/v1/namespaces/mesh-system/secrets/mesh-ca-secret",
        StatusCode::NOT_FOUND,
        not_found,
    )
    .await;
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(
        (request.method().as_str(), request.uri().path()),
        ("POST", "/api/v1/namespaces/mesh-system/secrets")
    );
    let created: Value =
        serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
    send.send_response(
        Response::builder()
            .status(201)
            .body(Body::from(serde_json::to_vec(&created).unwrap()))
            .unwrap(),
    );
    let material = first.await.unwrap().unwrap();
    assert!(created["data"]["ca-key.pem"].is_string(), "the key is stored in the Secret");

    // The next start reads the same root back.
    let second = tokio::spawn(root::load_or_create_secret(
        client,
        "mesh-system",
        root::SECRET_NAME,
        "cluster.local",
    ));
    answer(
        &mut handle,
        "GET",
        "/api/v1/namespaces/mesh-system/secrets/mesh-ca-secret",
        StatusCode::OK,
        created,
    )
    .await;
    assert_eq!(second.await.unwrap().unwrap(), material);
}

#[tokio::test]
async fn root_configmap_is_applied_into_each_namespace() {
    let (client, mut handle) = mock();
    let ctx = Arc::new(distribute::Context {
        client,
        root_pem: "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n".to_owned(),
    });
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "bookinfo"}})).unwrap();
    let call = tokio::spawn(distribute::reconcile(Arc::new(namespace), ctx));
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request.method().as_str(), "PATCH");
    assert_eq!(request.uri().path(), "/api/v1/namespaces/bookinfo/configmaps/mesh-ca-root-cert");
    assert_eq!(request.uri().query(), Some("&force=true&fieldManager=mesh-ca"));
    let applied: Value =
        serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
    assert_eq!(
        applied["data"]["root-cert.pem"],
        "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n"
    );
    send.send_response(
        Response::builder()
            .status(200)
            .body(Body::from(serde_json::to_vec(&applied).unwrap()))
            .unwrap(),
    );
    call.await.unwrap().unwrap();
}
