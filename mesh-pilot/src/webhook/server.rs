//! The webhooks over HTTPS: `POST /inject` and `POST /validate` answer AdmissionReviews with
//! [`super::review`]; anything else is 404 (405 for another method). The certificate is the
//! pilot's own from mesh-ca (with the DNS names of its Service), read from the store on every
//! handshake, so a rotated certificate is served without a restart.
//!
//! A review that cannot be read gets 400 with the reason; a namespace whose labels are not
//! known yet gets 503, so the API server retries (or refuses, as the configuration's
//! `failurePolicy` says) rather than admitting a pod without the sidecar it should have.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt as _;
use kube::runtime::reflector::{ObjectRef, Store};
use mesh_api::inject;
use mesh_identity::CertStore;
use mesh_runtime::admin::{self, Body};
use mesh_runtime::drain;
use serde_json::Value;

use super::review::{self, ReviewError};

/// Largest AdmissionReview read: a pod and its old version, with room to spare (the API server
/// keeps objects under 1.5 MiB).
pub const MAX_REVIEW: usize = 4 << 20;

/// Where the labels of a pod's namespace come from.
#[derive(Clone)]
pub enum Namespaces {
    /// A fixed map, namespace to labels (local mode: no namespaces are labelled; tests).
    Fixed(Arc<BTreeMap<String, BTreeMap<String, String>>>),
    /// A reflector over the cluster's Namespaces.
    Watched(Store<Namespace>),
}

impl Namespaces {
    /// The labels of `namespace`; `None` while the reflector has not listed the Namespaces yet.
    /// A namespace the reflector does not know has no labels.
    pub fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        match self {
            Namespaces::Fixed(map) => Some(map.get(namespace).cloned().unwrap_or_default()),
            Namespaces::Watched(store) => {
                // An empty store has not listed yet: every cluster has namespaces.
                if store.is_empty() {
                    return None;
                }
                let found = store.get(&ObjectRef::new(namespace));
                Some(found.map(|ns| ns.labels().clone()).unwrap_or_default())
            }
        }
    }
}

impl std::fmt::Debug for Namespaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Namespaces::Fixed(map) => f.debug_tuple("Fixed").field(map).finish(),
            Namespaces::Watched(store) => f.debug_tuple("Watched").field(&store.len()).finish(),
        }
    }
}

/// What the webhooks answer with: the injection settings and the namespaces' labels.
#[derive(Clone, Debug)]
pub struct Webhooks {
    /// The sidecar the injector puts in (the same settings `meshctl kube-inject` takes).
    pub config: inject::Config,
    /// The labels of the namespaces pods are created in.
    pub namespaces: Namespaces,
}

/// Serves the webhooks over TLS with the certificate in `store` until `drain` signals.
pub fn spawn(
    listener: tokio::net::TcpListener,
    store: Arc<CertStore>,
    webhooks: Arc<Webhooks>,
    drain: drain::Watch,
) -> Result<tokio::task::JoinHandle<()>, mesh_identity::tls::TlsError> {
    let tls = mesh_identity::tls::server_config(store, &[b"http/1.1"])?;
    let incoming = mesh_identity::accept::incoming(listener, Arc::new(tls));
    Ok(admin::spawn_incoming(incoming, "webhooks", drain, move |request| {
        let webhooks = webhooks.clone();
        async move { respond(request, &webhooks).await }
    }))
}

/// The answer to one HTTP request to the webhook server.
pub async fn respond(request: Request<Incoming>, webhooks: &Webhooks) -> Response<Body> {
    let path = request.uri().path().to_owned();
    if path != "/inject" && path != "/validate" {
        return admin::text(StatusCode::NOT_FOUND, "the webhooks are /inject and /validate\n");
    }
    if request.method() != Method::POST {
        return admin::text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
    }
    let body = match Limited::new(request.into_body(), MAX_REVIEW).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            return admin::text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the AdmissionReview (at most {MAX_REVIEW} bytes): {err}\n"),
            );
        }
    };
    let answered = if path == "/inject" {
        inject(&body, webhooks)
    } else {
        review::review_validate(&body).map_err(Refusal::Review)
    };
    match answered {
        Ok(answer) => admin::typed(StatusCode::OK, "application/json", answer.to_string()),
        Err(Refusal::Review(err)) => {
            tracing::warn!(webhook = %path, "{err}");
            admin::text(StatusCode::BAD_REQUEST, format!("{err}\n"))
        }
        Err(Refusal::NotSynced) => admin::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pilot has not listed the cluster's namespaces yet; retry\n",
        ),
    }
}

/// Why a review gets no AdmissionReview back.
enum Refusal {
    Review(ReviewError),
    NotSynced,
}

fn inject(body: &Bytes, webhooks: &Webhooks) -> Result<Value, Refusal> {
    // The namespace is read first so that a review for a namespace not yet known is retried.
    let namespace = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|review| review["request"]["namespace"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let labels = webhooks.namespaces.labels(&namespace).ok_or(Refusal::NotSynced)?;
    review::review_inject(body, &labels, &webhooks.config).map_err(Refusal::Review)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn labels_come_from_the_map_or_the_reflector_and_are_unknown_before_it_lists() {
        let labels: BTreeMap<String, String> =
            [("mesh-injection".to_owned(), "enabled".to_owned())].into();
        let fixed = Namespaces::Fixed(Arc::new([("bookinfo".to_owned(), labels.clone())].into()));
        assert_eq!(fixed.labels("bookinfo"), Some(labels.clone()));
        assert_eq!(fixed.labels("other"), Some(BTreeMap::new()));

        let (store, mut writer) = kube::runtime::reflector::store::<Namespace>();
        let watched = Namespaces::Watched(store);
        assert_eq!(watched.labels("bookinfo"), None, "not listed yet: retry");
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some("bookinfo".to_owned());
        namespace.metadata.labels = Some(labels.clone());
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(namespace));
        assert_eq!(watched.labels("bookinfo"), Some(labels));
        assert_eq!(watched.labels("other"), Some(BTreeMap::new()));
    }
}
