//! `meshctl kube-inject`: sidecar injection without a cluster, for manifests on disk. Every pod
//! template in a multi-document file (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
//! Jobs, CronJobs, and Lists of them) goes through `mesh_api::inject`, the function the webhook
//! calls, so both give the same pods; other kinds pass through unchanged.

use std::io::Read as _;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use mesh_api::inject::{self, Config, Outcome};
use serde_json::Value;

/// Flags of `meshctl kube-inject`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  meshctl kube-inject -f deployment.yaml | kubectl apply -f -\n  meshctl kube-inject -f app.yaml -o app-injected.yaml --native-sidecar false"
)]
pub struct KubeInjectArgs {
    /// The manifests: a YAML file, or `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: String,
    /// Where to write the result (standard output when absent).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// The mesh-proxy image.
    #[arg(long, default_value_t = Config::default().proxy_image)]
    pub proxy_image: String,
    /// The mesh-init image.
    #[arg(long, default_value_t = Config::default().init_image)]
    pub init_image: String,
    /// Inject the proxy as a native sidecar (Kubernetes 1.29+); a pod's
    /// `sidecar.mesh.io/nativeSidecar` annotation overrides it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub native_sidecar: bool,
}

/// What went wrong, naming the document and line.
#[derive(Debug, thiserror::Error)]
pub enum KubeInjectError {
    /// The input or output could not be read or written.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A document is not valid YAML, or a pod template is not a pod template.
    #[error("{file}: document {document} (line {line}): {reason}")]
    Document {
        /// The input's name.
        file: String,
        /// The document's index, from 1.
        document: usize,
        /// The line it starts on.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Runs `meshctl kube-inject`.
pub fn run(args: &KubeInjectArgs) -> Result<(), KubeInjectError> {
    let text = if args.file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| KubeInjectError::Io("standard input".into(), e))?;
        text
    } else {
        std::fs::read_to_string(&args.file)
            .map_err(|e| KubeInjectError::Io(args.file.clone(), e))?
    };
    let config = Config {
        proxy_image: args.proxy_image.clone(),
        init_image: args.init_image.clone(),
        native_sidecar: args.native_sidecar,
        ..Config::default()
    };
    let name = if args.file == "-" { "<stdin>" } else { args.file.as_str() };
    let out = inject_manifests(name, &text, &config)?;
    match &args.output {
        Some(path) => std::fs::write(path, out)
            .map_err(|e| KubeInjectError::Io(path.display().to_string(), e)),
        None => {
            print!("{out}");
            Ok(())
        }
    }
}

/// Injects every pod template of a multi-document YAML text; the documents come back in order,
/// separated by `---`.
pub fn inject_manifests(
    file: &str,
    text: &str,
    config: &Config,
) -> Result<String, KubeInjectError> {
    let mut out = Vec::new();
    for (document, line, body) in mesh_api::load::yaml_documents(text) {
        let at = |reason: String| KubeInjectError::Document {
            file: file.to_owned(),
            document,
            line,
            reason,
        };
        let mut value: Value = serde_saphyr::from_str(body).map_err(|e| at(e.to_string()))?;
        inject_object(&mut value, config).map_err(at)?;
        out.push(serde_saphyr::to_string(&value).map_err(|e| at(e.to_string()))?);
    }
    Ok(out.join("---\n"))
}

/// Injects the pod template of one object (or of each item of a List), in place.
fn inject_object(object: &mut Value, config: &Config) -> Result<(), String> {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let name = object["metadata"]["name"].as_str().map(str::to_owned);
    match kind.as_str() {
        "List" => {
            for item in object["items"].as_array_mut().into_iter().flatten() {
                inject_object(item, config)?;
            }
            Ok(())
        }
        "Pod" => {
            let template =
                serde_json::json!({"metadata": object["metadata"], "spec": object["spec"]});
            let injected = inject_template(template, name.as_deref(), config)?;
            object["metadata"] = injected["metadata"].clone();
            object["spec"] = injected["spec"].clone();
            Ok(())
        }
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            let template = object["spec"]["template"].take();
            object["spec"]["template"] = inject_template(template, name.as_deref(), config)?;
            Ok(())
        }
        "CronJob" => {
            let template = object["spec"]["jobTemplate"]["spec"]["template"].take();
            object["spec"]["jobTemplate"]["spec"]["template"] =
                inject_template(template, name.as_deref(), config)?;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn inject_template(
    template: Value,
    workload: Option<&str>,
    config: &Config,
) -> Result<Value, String> {
    let pod: PodTemplateSpec =
        serde_json::from_value(template.clone()).map_err(|e| format!("the pod template: {e}"))?;
    match inject::inject(&pod, workload, config).map_err(|e| e.to_string())? {
        Outcome::Injected(pod) => serde_json::to_value(*pod).map_err(|e| e.to_string()),
        // Left as written: not even re-serialized through the typed form.
        Outcome::Skipped(_) => Ok(template),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const MANIFESTS: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, labels: {app: reviews}}
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      serviceAccountName: bookinfo-reviews
      containers: [{name: reviews, image: reviews:1}]
---
# A Service passes through untouched.
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080}], selector: {app: reviews}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: '0 3 * * *'
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: Never, containers: [{name: job, image: job:1}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: lone, annotations: {sidecar.mesh.io/inject: 'false'}}
  spec: {containers: [{name: lone, image: lone:1}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: sleep}
  spec: {containers: [{name: sleep, image: sleep:1}]}
";

    fn docs(text: &str) -> Vec<Value> {
        mesh_api::load::yaml_documents(text)
            .into_iter()
            .map(|(_, _, body)| serde_saphyr::from_str(body).unwrap())
            .collect()
    }

    #[test]
    fn every_pod_template_is_injected_as_the_webhook_would_and_the_rest_passes_through() {
        let config = Config::default();
        let out = inject_manifests("app.yaml", MANIFESTS, &config).unwrap();
        let (before, after) = (docs(MANIFESTS), docs(&out));
        assert_eq!(after.len(), 4);
        // The Deployment's template is exactly what the shared function makes of it.
        let template: PodTemplateSpec =
            serde_json::from_value(before[0]["spec"]["template"].clone()).unwrap();
        let Outcome::Injected(want) =
            inject::inject(&template, Some("reviews-v1"), &config).unwrap()
        else {
            panic!("not injected")
        };
        assert_eq!(after[0]["spec"]["template"], serde_json::to_value(*want).unwrap());
        assert_eq!(after[1], before[1], "the Service is unchanged");
        let cron = &after[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(cron["initContainers"][1]["name"], "mesh-proxy");
        let items = after[3]["items"].as_array().unwrap();
        assert_eq!(items[0], before[3]["items"][0], "an opted-out pod is left as written");
        assert_eq!(items[1]["spec"]["initContainers"][0]["name"], "mesh-init");
        // Injecting the output again changes nothing.
        assert_eq!(inject_manifests("app.yaml", &out, &config).unwrap(), out);
    }

    #[test]
    fn a_broken_document_is_named_by_index_and_line() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: []}\n---\nkind: Deployment\nspec:\n  template:\n    spec: {containers: 3}\n";
        let err = inject_manifests("app.yaml", text, &Config::default()).unwrap_err().to_string();
        assert!(err.starts_with("app.yaml: document 2 (line 6): the pod template"), "{err}");
    }
}
