//! `meshctl kube-inject` (the binary, as a user runs it) and the pilot's injection webhook give
//! the same pod: for every workload kind of a multi-document file, the pod the API server would
//! create from the injected template equals the pod the webhook's patch makes of the template
//! as written. The injected file is also a golden (`UPDATE_GOLDEN=1` rewrites it; read the diff).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use mesh_api::inject::Config;
use serde_json::{Value, json};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kube-inject").join(name)
}

fn documents(text: &str) -> Vec<Value> {
    mesh_api::load::yaml_documents(text)
        .into_iter()
        .map(|(_, _, body)| serde_saphyr::from_str(body).unwrap())
        .collect()
}

/// The pod templates of a document (each item of a List), with the owner the API server would
/// give the pods made from them.
fn templates(document: &Value) -> Vec<(Value, Value)> {
    let name = document["metadata"]["name"].as_str().unwrap_or_default();
    let owner = |kind: &str, name: String| json!([{"apiVersion": "v1", "kind": kind, "name": name, "uid": "u"}]);
    match document["kind"].as_str().unwrap_or_default() {
        "List" => document["items"].as_array().unwrap().iter().flat_map(templates).collect(),
        "Pod" => {
            vec![(json!({"metadata": document["metadata"], "spec": document["spec"]}), Value::Null)]
        }
        "Deployment" => {
            // Its ReplicaSet is named with the pod-template hash, which labels the pods too.
            let mut template = document["spec"]["template"].clone();
            template["metadata"]["labels"]["pod-template-hash"] = json!("7d9f8c6b5");
            vec![(template, owner("ReplicaSet", format!("{name}-7d9f8c6b5")))]
        }
        "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            let kind = document["kind"].as_str().unwrap();
            vec![(document["spec"]["template"].clone(), owner(kind, name.to_owned()))]
        }
        "CronJob" => vec![(
            document["spec"]["jobTemplate"]["spec"]["template"].clone(),
            owner("Job", format!("{name}-29420580")),
        )],
        _ => Vec::new(),
    }
}

/// What the webhook makes of the pod created from `template` by `owner`, in a namespace
/// labelled for injection: the pod with the patch applied (unchanged when no patch).
fn through_the_webhook(template: &Value, owner: &Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]});
    if pod["metadata"].is_null() {
        pod["metadata"] = json!({});
    }
    if !owner.is_null() {
        pod["metadata"]["ownerReferences"] = owner.clone();
    }
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "namespace": "bookinfo", "operation": "CREATE", "object": pod}
    });
    let labels: BTreeMap<String, String> =
        [("mesh-injection".to_owned(), "enabled".to_owned())].into();
    let answer = mesh_pilot::webhook::review_inject(
        review.to_string().as_bytes(),
        &labels,
        &Config::default(),
    )
    .unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    if let Some(patch) = answer["response"]["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    if !owner.is_null() {
        pod["metadata"].as_object_mut().unwrap().remove("ownerReferences");
    }
    json!({"metadata": pod["metadata"], "spec": pod["spec"]})
}

#[test]
fn kube_inject_gives_every_workload_kind_the_pod_the_webhook_gives_it() {
    let meshctl = e2e::local::bin_dir().join("meshctl");
    assert!(meshctl.is_file(), "{} is missing: `cargo build --bins` first", meshctl.display());
    let input = data("workloads.yaml");
    let output = Command::new(&meshctl).args(["kube-inject", "-f"]).arg(&input).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let injected = String::from_utf8(output.stdout).unwrap();

    let golden = data("workloads.injected.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &injected).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    pretty_assertions::assert_eq!(injected, want, "UPDATE_GOLDEN=1 rewrites {}", golden.display());

    let (before, after) =
        (documents(&std::fs::read_to_string(&input).unwrap()), documents(&injected));
    assert_eq!(before.len(), after.len(), "one document out for each in");
    let mut compared = 0;
    for (written, injected) in before.iter().zip(&after) {
        let kind = written["kind"].as_str().unwrap_or_default();
        if templates(written).is_empty() {
            assert_eq!(written, injected, "a {kind} passes through unchanged");
        }
        for ((template, owner), (out, _)) in templates(written).iter().zip(templates(injected)) {
            let webhook = through_the_webhook(template, owner);
            let normalise = |t: &Value| json!({"metadata": if t["metadata"].is_null() { json!({}) } else { t["metadata"].clone() }, "spec": t["spec"]});
            pretty_assertions::assert_eq!(
                normalise(&out),
                webhook,
                "{kind} {}",
                written["metadata"]["name"]
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 8, "every pod template of the file was compared");
    // A file injected already comes back the same.
    let again = Command::new(&meshctl).args(["kube-inject", "-f"]).arg(&golden).output().unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), injected);
}
