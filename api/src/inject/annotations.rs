//! The annotations and labels that steer injection: ours (`sidecar.mesh.io/*`,
//! `traffic.sidecar.mesh.io/*`) and, so that Istio users keep their manifests, Istio's
//! (`sidecar.istio.io/*`, `traffic.sidecar.istio.io/*`). Ours win when both are set.

use std::collections::BTreeMap;

/// Our prefix and Istio's for per-pod proxy settings.
const SIDECAR: [&str; 2] = ["sidecar.mesh.io/", "sidecar.istio.io/"];
/// Our prefix and Istio's for capture settings.
const TRAFFIC: [&str; 2] = ["traffic.sidecar.mesh.io/", "traffic.sidecar.istio.io/"];

/// The annotation (or label) that records what was injected; its presence makes injection a
/// no-op.
pub const STATUS: &str = "sidecar.mesh.io/status";

/// The value of setting `name` under `prefixes`: ours first, then Istio's.
fn lookup<'a>(
    map: Option<&'a BTreeMap<String, String>>,
    prefixes: &[&str],
    name: &str,
) -> Option<&'a str> {
    let map = map?;
    prefixes.iter().find_map(|prefix| map.get(&format!("{prefix}{name}")).map(String::as_str))
}

/// A per-pod proxy setting (`sidecar.mesh.io/<name>`, or Istio's).
pub fn sidecar<'a>(
    annotations: Option<&'a BTreeMap<String, String>>,
    name: &str,
) -> Option<&'a str> {
    lookup(annotations, &SIDECAR, name)
}

/// A capture setting (`traffic.sidecar.mesh.io/<name>`, or Istio's).
pub fn traffic<'a>(
    annotations: Option<&'a BTreeMap<String, String>>,
    name: &str,
) -> Option<&'a str> {
    lookup(annotations, &TRAFFIC, name)
}

/// Whether the pod says not to inject it: `sidecar.mesh.io/inject: "false"` as a label (which
/// wins) or an annotation, ours or Istio's.
pub fn opted_out(
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
) -> bool {
    let said = sidecar(labels, "inject").or_else(|| sidecar(annotations, "inject"));
    said.is_some_and(|v| {
        matches!(v.trim().to_ascii_lowercase().as_str(), "false" | "n" | "no" | "off")
    })
}
