//! One source of truth for Helm and meshctl users: `meshctl install --dry-run` (the binary, as a
//! person runs it) prints exactly the objects the charts render for Helm with the same profile
//! (the CRDs of `charts/base`, the control plane of `charts/mesh`, the gateways the profile
//! enables), plus the namespace Helm's `--create-namespace` would make, in apply order.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeMap;
use std::process::Command;

use mesh_charts::{Capabilities, Overrides, Profile};
use serde_json::Value;

/// Objects by `kind namespace/name`.
type Objects = BTreeMap<String, Value>;

fn key(object: &Value) -> String {
    let meta = &object["metadata"];
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap(),
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().unwrap()
    )
}

fn documents(text: &str) -> Vec<Value> {
    mesh_api::load::yaml_documents(text)
        .into_iter()
        .map(|(_, _, body)| serde_saphyr::from_str::<Value>(body).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// What Helm installs for `profile` into `namespace`: each release's CRDs and manifests, with
/// the release namespace on namespaced objects that name none (as Helm applies them).
fn helm(profile: Profile, namespace: &str) -> Objects {
    let overrides = Overrides { profile: Some(profile), ..Overrides::default() };
    let mut objects = Objects::new();
    for release in mesh_charts::plan(&overrides, namespace).unwrap() {
        for file in release.crds().unwrap() {
            for crd in documents(file.contents) {
                assert!(objects.insert(key(&crd), crd).is_none());
            }
        }
        for manifest in release.render(&Capabilities::default()).unwrap() {
            let mut object = manifest.object;
            let cluster_scoped = [
                "ClusterRole",
                "ClusterRoleBinding",
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration",
            ];
            let kind = object["kind"].as_str().unwrap().to_owned();
            if object["metadata"]["namespace"].is_null() && !cluster_scoped.contains(&kind.as_str())
            {
                object["metadata"]["namespace"] = Value::from(namespace);
            }
            assert!(objects.insert(key(&object), object).is_none(), "one object per name");
        }
    }
    objects
}

#[test]
fn install_dry_run_prints_what_the_charts_render_for_helm_for_every_profile() {
    for profile in Profile::ALL {
        let output = Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(["install", "--dry-run", "--profile", profile.name(), "-n", "mesh"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let printed = documents(&String::from_utf8(output.stdout).unwrap());
        assert_eq!(printed[0]["kind"], "Namespace", "the namespace first");
        assert_eq!(printed[0]["metadata"]["name"], "mesh");
        let kinds: Vec<&str> = printed.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        let first_deployment = kinds.iter().position(|k| *k == "Deployment").unwrap();
        let last_crd = kinds.iter().rposition(|k| *k == "CustomResourceDefinition").unwrap();
        let first_webhook = kinds.iter().position(|k| k.ends_with("WebhookConfiguration")).unwrap();
        assert!(last_crd < first_deployment && first_deployment < first_webhook, "{kinds:?}");

        let dry_run: Objects = printed[1..].iter().map(|o| (key(o), o.clone())).collect();
        assert_eq!(dry_run.len(), printed.len() - 1, "no object printed twice");
        let helm = helm(profile, "mesh");
        assert_eq!(
            dry_run.keys().collect::<Vec<_>>(),
            helm.keys().collect::<Vec<_>>(),
            "{profile}"
        );
        for (name, object) in &helm {
            pretty_assertions::assert_eq!(&dry_run[name], object, "{profile}: {name}");
        }
    }
}

#[test]
fn a_bad_value_or_profile_is_a_one_line_error() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_meshctl")).args(args).output().unwrap();
        (output.status.success(), String::from_utf8(output.stderr).unwrap())
    };
    let (ok, err) = run(&["install", "--dry-run", "--profile", "huge"]);
    assert!(!ok);
    assert!(err.starts_with("error: rendering the charts:") && err.contains("huge"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let (ok, err) = run(&["install", "--dry-run", "--set", "global.hub"]);
    assert!(!ok && err.contains("global.hub"), "{err}");
}
