//! PeerAuthentication: which mTLS a workload's inbound ports accept, with Istio's precedence
//! (workload over namespace over mesh, the oldest policy winning at a level, `UNSET`
//! inheriting, port-level settings over the workload's). Pure: the inbound chains
//! (`listener.rs`) and the client side (`endpoint.rs`: no mTLS to a port that refuses it)
//! both ask [`mode`].

use std::collections::BTreeMap;

use mesh_api::security::{MtlsMode, PeerAuthentication};

use crate::model::Snapshot;

/// What a port accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// mTLS only: no plaintext chain.
    Strict,
    /// mTLS or plaintext.
    Permissive,
    /// Plaintext only: clients send no mTLS.
    Disable,
}

impl Mode {
    fn of(mode: Option<&MtlsMode>) -> Option<Mode> {
        match mode? {
            MtlsMode::Strict => Some(Mode::Strict),
            MtlsMode::Permissive => Some(Mode::Permissive),
            MtlsMode::Disable => Some(Mode::Disable),
            MtlsMode::Unset | MtlsMode::Unknown(_) => None,
        }
    }

    /// Whether plaintext is taken.
    pub fn plaintext(self) -> bool {
        self != Mode::Strict
    }

    /// Whether mTLS is taken.
    pub fn mtls(self) -> bool {
        self != Mode::Disable
    }
}

/// The policies that apply to one workload, one per level.
pub struct Policies<'a> {
    mesh: Option<&'a PeerAuthentication>,
    namespace: Option<&'a PeerAuthentication>,
    workload: Option<&'a PeerAuthentication>,
}

/// The policy of a level: the oldest (by creation time, then name), as Istio picks.
fn oldest<'a>(
    candidates: impl Iterator<Item = &'a PeerAuthentication>,
) -> Option<&'a PeerAuthentication> {
    candidates.min_by(|a, b| {
        let key = |p: &'a PeerAuthentication| {
            (p.metadata.creation_timestamp.as_ref().map(|t| t.0), p.metadata.name.clone())
        };
        // No timestamp (local files): after any dated policy, by name.
        match (key(a), key(b)) {
            ((Some(x), n), (Some(y), m)) => (x, n).cmp(&(y, m)),
            ((Some(_), _), (None, _)) => std::cmp::Ordering::Less,
            ((None, _), (Some(_), _)) => std::cmp::Ordering::Greater,
            ((None, n), (None, m)) => n.cmp(&m),
        }
    })
}

fn selects(pa: &PeerAuthentication, labels: &BTreeMap<String, String>) -> Option<bool> {
    let selector = pa.spec.selector.as_ref().filter(|s| !s.match_labels.is_empty())?;
    Some(selector.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The policies that apply to a workload of `namespace` with `labels`.
pub fn policies<'a>(
    snapshot: &'a Snapshot,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Policies<'a> {
    fn in_ns<'s>(snapshot: &'s Snapshot, ns: &str) -> Vec<&'s PeerAuthentication> {
        snapshot
            .peer_authentications
            .iter()
            .filter(|p| p.metadata.namespace.as_deref().unwrap_or("default") == ns)
            .collect()
    }
    Policies {
        // A root-namespace policy with a selector is a workload policy of the root namespace
        // only, never mesh-wide.
        mesh: oldest(
            in_ns(snapshot, &snapshot.root_namespace)
                .into_iter()
                .filter(|p| selects(p, labels).is_none()),
        ),
        namespace: oldest(
            in_ns(snapshot, namespace).into_iter().filter(|p| selects(p, labels).is_none()),
        ),
        workload: oldest(
            in_ns(snapshot, namespace).into_iter().filter(|p| selects(p, labels) == Some(true)),
        ),
    }
}

impl Policies<'_> {
    /// The mode of `port` (a workload port), or of the workload as a whole (`None`).
    pub fn mode(&self, port: Option<u16>) -> Mode {
        let level = |p: Option<&PeerAuthentication>| {
            p.and_then(|p| Mode::of(p.spec.mtls.as_ref().and_then(|m| m.mode.as_ref())))
        };
        let mut mode = Mode::Permissive;
        for at in [self.mesh, self.namespace, self.workload] {
            if let Some(m) = level(at) {
                mode = m;
            }
        }
        let port_level = port.and_then(|port| {
            self.workload?
                .spec
                .port_level_mtls
                .get(&port.to_string())
                .and_then(|m| Mode::of(m.mode.as_ref()))
        });
        port_level.unwrap_or(mode)
    }

    /// The workload ports with a port-level setting, and their modes.
    pub fn port_levels(&self) -> Vec<(u16, Mode)> {
        let Some(workload) = self.workload else { return Vec::new() };
        workload
            .spec
            .port_level_mtls
            .keys()
            .filter_map(|p| p.parse::<u16>().ok())
            .map(|p| (p, self.mode(Some(p))))
            .collect()
    }
}

/// The mode of one workload port (`None`: the workload as a whole).
pub fn mode(
    snapshot: &Snapshot,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    port: Option<u16>,
) -> Mode {
    policies(snapshot, namespace, labels).mode(port)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn snapshot(yaml: &str) -> Snapshot {
        let report = mesh_api::load::load_str("pa.yaml", yaml);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let mut snapshot = Snapshot::default();
        for o in report.objects {
            if let mesh_api::Resource::PeerAuthentication(pa) = o.resource {
                snapshot.peer_authentications.push(pa);
            }
        }
        snapshot
    }

    fn labels(app: &str) -> BTreeMap<String, String> {
        [("app".to_owned(), app.to_owned())].into()
    }

    const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: mesh-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: root-selector, namespace: mesh-system}
spec: {selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: legacy}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: legacy}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: UNSET}
  portLevelMtls: {"8080": {mode: DISABLE}, "9090": {mode: STRICT}, "7070": {mode: UNSET}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: a-older, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: b-newer, namespace: shop, creationTimestamp: "2026-06-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
"#;

    #[test]
    fn workload_over_namespace_over_mesh_with_unset_inheriting() {
        let s = snapshot(POLICIES);
        // Mesh-wide STRICT; a root-namespace policy with a selector is not mesh-wide.
        assert_eq!(mode(&s, "default", &labels("web"), None), Mode::Strict);
        assert_eq!(mode(&s, "default", &labels("web"), Some(8080)), Mode::Strict);
        // The namespace's PERMISSIVE over the mesh's STRICT; the workload's UNSET inherits it.
        assert_eq!(mode(&s, "legacy", &labels("api"), None), Mode::Permissive);
        assert_eq!(mode(&s, "legacy", &labels("web"), None), Mode::Permissive);
        // Port-level settings of the workload policy; a port-level UNSET takes the workload's.
        assert_eq!(mode(&s, "legacy", &labels("web"), Some(8080)), Mode::Disable);
        assert_eq!(mode(&s, "legacy", &labels("web"), Some(9090)), Mode::Strict);
        assert_eq!(mode(&s, "legacy", &labels("web"), Some(7070)), Mode::Permissive);
        // Two namespace policies: the oldest wins.
        assert_eq!(mode(&s, "shop", &labels("web"), None), Mode::Disable);
        let ports = policies(&s, "legacy", &labels("web")).port_levels();
        assert_eq!(ports, [(7070, Mode::Permissive), (8080, Mode::Disable), (9090, Mode::Strict)]);
    }

    #[test]
    fn no_policy_is_permissive() {
        let s = Snapshot::default();
        assert_eq!(mode(&s, "default", &labels("web"), Some(80)), Mode::Permissive);
    }
}
