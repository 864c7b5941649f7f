//! What the admission webhooks answer, as pure functions of the AdmissionReview (the HTTPS
//! server around them is I/O): `/inject` decides whether a pod gets the sidecar and answers with
//! the JSON patch `mesh_api::inject` implies; `/validate` refuses mesh objects that
//! `mesh_api::validate` finds wrong, with the field and the reason. A review that cannot be read
//! is an error for the server to answer with 400, never a panic.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use mesh_api::inject::{self, Config, Outcome};
use serde_json::{Value, json};

/// Namespaces never injected (the cluster's own).
const IGNORED_NAMESPACES: [&str; 4] =
    ["kube-system", "kube-public", "kube-node-lease", "local-path-storage"];

/// Why a review cannot be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    /// Not JSON, or not an `admission.k8s.io/v1` AdmissionReview with a request and a uid.
    #[error("not an admission.k8s.io/v1 AdmissionReview: {0}")]
    Malformed(String),
}

/// The parts of a review the webhooks read.
struct Request {
    uid: String,
    namespace: String,
    object: Value,
}

fn request(body: &[u8]) -> Result<Request, ReviewError> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    if review["kind"] != "AdmissionReview" {
        return Err(ReviewError::Malformed(format!("kind is {}", review["kind"])));
    }
    let request = &review["request"];
    let uid = request["uid"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ReviewError::Malformed("request.uid is missing".into()))?;
    Ok(Request {
        uid: uid.to_owned(),
        namespace: request["namespace"].as_str().unwrap_or("default").to_owned(),
        object: request["object"].clone(),
    })
}

fn answer(uid: &str, response: Value) -> Value {
    let mut response = response;
    response["uid"] = json!(uid);
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// Whether a pod in a namespace with `namespace_labels` gets the sidecar: the namespace is
/// labelled `mesh-injection=enabled` (or Istio's `istio-injection=enabled`) and the pod does not
/// opt out, or the pod itself is labelled `sidecar.mesh.io/inject: "true"` (or Istio's).
pub fn wanted(
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    pod_labels: Option<&BTreeMap<String, String>>,
) -> bool {
    if IGNORED_NAMESPACES.contains(&namespace) {
        return false;
    }
    let (key, value) = mesh_api::ports::INJECTION_NAMESPACE_LABEL;
    let namespace_on = namespace_labels.get(key).is_some_and(|v| v == value)
        || namespace_labels.get("istio-injection").is_some_and(|v| v == "enabled");
    let pod_says = inject::annotations::sidecar(pod_labels, "inject");
    match pod_says.map(|v| v.trim().eq_ignore_ascii_case("true")) {
        Some(true) => true,
        Some(false) => false,
        None => namespace_on,
    }
}

/// The workload a pod belongs to, for metrics, named as `meshctl kube-inject` names it from the
/// manifest: its ReplicaSet's Deployment (the name without the pod-template hash, when the pod
/// carries that hash), a Job's
/// CronJob (the name without the schedule's timestamp), else its owner, else its generate-name
/// stem, else its name.
fn workload(pod: &Value) -> Option<String> {
    let meta = &pod["metadata"];
    let owner = &meta["ownerReferences"][0];
    if let Some(name) = owner["name"].as_str() {
        let stem = name.rsplit_once('-');
        let from_cronjob =
            |suffix: &str| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit());
        // A Deployment's ReplicaSet is named `<deployment>-<pod-template-hash>`, and its pods
        // carry the hash as a label; a ReplicaSet of its own keeps its name.
        let hash = meta["labels"]["pod-template-hash"].as_str();
        return Some(match (owner["kind"].as_str(), stem) {
            (Some("ReplicaSet"), Some((stem, suffix))) if hash == Some(suffix) => stem.to_owned(),
            (Some("Job"), Some((stem, suffix))) if from_cronjob(suffix) => stem.to_owned(),
            _ => name.to_owned(),
        });
    }
    meta["generateName"]
        .as_str()
        .map(|g| g.trim_end_matches('-').to_owned())
        .or_else(|| meta["name"].as_str().map(str::to_owned))
}

/// `/inject`: the answer to a pod's review, given the labels of its namespace.
pub fn review_inject(
    body: &[u8],
    namespace_labels: &BTreeMap<String, String>,
    config: &Config,
) -> Result<Value, ReviewError> {
    let request = request(body)?;
    let allow = || answer(&request.uid, json!({"allowed": true}));
    let template = json!({"metadata": request.object["metadata"], "spec": request.object["spec"]});
    let pod: PodTemplateSpec = match serde_json::from_value(template.clone()) {
        Ok(pod) => pod,
        Err(e) => return Err(ReviewError::Malformed(format!("request.object is not a pod: {e}"))),
    };
    let labels = pod.metadata.as_ref().and_then(|m| m.labels.as_ref());
    if !wanted(&request.namespace, namespace_labels, labels) {
        return Ok(allow());
    }
    let injected = match inject::inject(&pod, workload(&request.object).as_deref(), config) {
        Ok(Outcome::Injected(pod)) => pod,
        Ok(Outcome::Skipped(_)) => return Ok(allow()),
        // A pod with a bad annotation is refused with the reason, rather than run unmeshed.
        Err(e) => {
            return Ok(answer(
                &request.uid,
                json!({"allowed": false, "status": {"code": 400, "message": format!("sidecar injection: {e}")}}),
            ));
        }
    };
    let after =
        serde_json::to_value(*injected).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    let mut patch = Vec::new();
    for part in ["metadata", "spec"] {
        let diff = json_patch::diff(&template[part], &after[part]);
        for mut operation in
            serde_json::to_value(diff).unwrap_or_default().as_array().cloned().unwrap_or_default()
        {
            if let Some(path) = operation["path"].as_str() {
                operation["path"] = json!(format!("/{part}{path}"));
            }
            patch.push(operation);
        }
    }
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&patch).unwrap_or_default());
    Ok(answer(&request.uid, json!({"allowed": true, "patchType": "JSONPatch", "patch": encoded})))
}

/// `/validate`: refuses a mesh object `mesh_api::validate` finds wrong, naming each field and
/// reason; anything else (deletions, kinds the mesh does not type) is allowed.
pub fn review_validate(body: &[u8]) -> Result<Value, ReviewError> {
    let request = request(body)?;
    if request.object.is_null() {
        return Ok(answer(&request.uid, json!({"allowed": true})));
    }
    let mut object = request.object.clone();
    if object["metadata"]["namespace"].is_null() && object.get("metadata").is_some() {
        object["metadata"]["namespace"] = json!(request.namespace);
    }
    let report = mesh_api::load::load_str("admission", &object.to_string());
    let mut problems: Vec<String> = report.errors.iter().map(|e| e.kind.to_string()).collect();
    for loaded in &report.objects {
        problems
            .extend(mesh_api::validate::resource(&loaded.resource).iter().map(|e| e.to_string()));
    }
    if problems.is_empty() {
        return Ok(answer(&request.uid, json!({"allowed": true})));
    }
    Ok(answer(
        &request.uid,
        json!({"allowed": false, "status": {"code": 400, "reason": "Invalid", "message": problems.join("; ")}}),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn review(object: Value, namespace: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u-1", "namespace": namespace, "operation": "CREATE", "object": object}
        }))
        .unwrap()
    }

    /// `labels` with the pod-template hash a Deployment's ReplicaSet puts on its pods.
    fn with_hash(mut labels: Value) -> Value {
        labels["pod-template-hash"] = json!("7d9f8c");
        labels
    }

    fn pod(labels: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": "reviews-v1-7d9f8c-",
                "labels": with_hash(labels),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-7d9f8c", "uid": "x"}]
            },
            "spec": {"serviceAccountName": "bookinfo-reviews", "containers": [{"name": "reviews", "image": "reviews:1"}]}
        })
    }

    fn enabled() -> BTreeMap<String, String> {
        [("mesh-injection".to_owned(), "enabled".to_owned())].into()
    }

    #[test]
    fn a_pod_in_a_labelled_namespace_gets_the_patch_the_injector_implies() {
        let object = pod(json!({"app": "reviews"}));
        let answer =
            review_inject(&review(object.clone(), "default"), &enabled(), &Config::default())
                .unwrap();
        let response = &answer["response"];
        assert_eq!(
            (response["uid"].as_str(), response["allowed"].as_bool()),
            (Some("u-1"), Some(true))
        );
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        // The patched pod is what the injector makes of it, named after its Deployment.
        let template: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": object["metadata"], "spec": object["spec"]}))
                .unwrap();
        let Outcome::Injected(want) =
            inject::inject(&template, Some("reviews-v1"), &Config::default()).unwrap()
        else {
            panic!("not injected")
        };
        let want = serde_json::to_value(*want).unwrap();
        assert_eq!((&patched["metadata"], &patched["spec"]), (&want["metadata"], &want["spec"]));
        let env = patched["spec"]["initContainers"][1]["env"].as_array().unwrap();
        assert!(
            env.iter().any(|e| e["name"] == "MESH_WORKLOAD_NAME" && e["value"] == "reviews-v1")
        );
    }

    #[test]
    fn who_gets_a_sidecar() {
        let none = BTreeMap::new();
        let on = |v: &str| Some([("sidecar.mesh.io/inject".to_owned(), v.to_owned())].into());
        assert!(wanted("default", &enabled(), None));
        assert!(!wanted("default", &none, None));
        assert!(wanted("default", &none, on("true").as_ref()), "the pod label alone");
        assert!(!wanted("default", &enabled(), on("false").as_ref()), "the pod opts out");
        assert!(!wanted("kube-system", &enabled(), None));
        let istio: BTreeMap<String, String> =
            [("istio-injection".to_owned(), "enabled".to_owned())].into();
        assert!(wanted("default", &istio, None), "Istio's namespace label carries over");
    }

    #[test]
    fn others_are_allowed_unpatched_and_a_malformed_review_is_an_error() {
        let answer =
            review_inject(&review(pod(json!({})), "default"), &BTreeMap::new(), &Config::default())
                .unwrap();
        assert_eq!(answer["response"], json!({"uid": "u-1", "allowed": true}));
        for bad in
            [&b"not json"[..], br#"{"kind":"AdmissionReview","request":{}}"#, br#"{"kind":"Pod"}"#]
        {
            assert!(matches!(
                review_inject(bad, &enabled(), &Config::default()),
                Err(ReviewError::Malformed(_))
            ));
        }
    }

    #[test]
    fn a_bad_virtual_service_is_refused_with_the_field_and_reason() {
        let vs = json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": 150}]}]}
        });
        let answer = review_validate(&review(vs.clone(), "default")).unwrap();
        assert_eq!(answer["response"]["allowed"], false);
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("VirtualService default/reviews")
                && message.contains("spec.http[0].route"),
            "{message}"
        );
        let mut fixed = vs;
        fixed["spec"]["http"][0]["route"][0]["weight"] = json!(100);
        assert_eq!(
            review_validate(&review(fixed, "default")).unwrap()["response"]["allowed"],
            true
        );
    }

    #[test]
    fn a_telemetry_filter_the_mesh_cannot_compile_is_refused() {
        let telemetry = json!({
            "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": "logs"},
            "spec": {
                "accessLogging": [{"providers": [{"name": "envoy"}], "filter": {"expression": "connection.mtls"}}],
                "metrics": [{"providers": [{"name": "prometheus"}]}]
            }
        });
        let answer = review_validate(&review(telemetry.clone(), "shop")).unwrap();
        assert_eq!(answer["response"]["allowed"], false);
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "Telemetry shop/logs: spec.accessLogging[0].filter.expression: unsupported attribute or function `connection`"
            ),
            "{message}"
        );
        // Metrics are not enforced, which is no reason to refuse the object.
        let mut fixed = telemetry;
        fixed["spec"]["accessLogging"][0]["filter"]["expression"] = json!("response.code >= 400");
        assert_eq!(review_validate(&review(fixed, "shop")).unwrap()["response"]["allowed"], true);
    }
}
