//! Who a pod is, for a proxy whose metrics do not say (a stock Envoy's cluster stats name
//! clusters, not workloads): its workload, the service it serves and that service's version.
//! From the pod's labels when the mesh's config lists it (a cluster's Pods, the local mesh's
//! WorkloadEntries, and the Services whose selectors pick it), else from its name as
//! Bookinfo's are made (`<app>-<version>`, a Deployment's `-<hash>-<id>` taken off). Pure.

use std::collections::{BTreeMap, BTreeSet};

use mesh_api::Resource;
use mesh_api::load::{KubeObject, load_str_mixed};

use super::model::{ServiceKey, known};
use super::source::ConfigDoc;

type Labels = BTreeMap<String, String>;

/// The labels naming a pod's service, the first present wins (Istio's canonical service).
const APP_LABELS: [&str; 3] = ["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"];
/// The labels naming its version (Istio's canonical revision).
const VERSION_LABELS: [&str; 3] =
    ["service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"];
/// The characters of the suffixes Kubernetes generates (pod-template hashes, pod ids).
const GENERATED: &str = "bcdfghjklmnpqrstvwxz2456789";

/// What the mesh's config says of its pods: the labels of each pod (or WorkloadEntry), by
/// name and namespace, and each Service's selector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pods {
    labels: BTreeMap<(String, String), Labels>,
    selectors: BTreeMap<ServiceKey, Labels>,
}

/// Who a pod is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Identity {
    /// Its workload (`reviews-v2`).
    pub workload: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The service it serves.
    pub service: ServiceKey,
    /// The version it serves (`unknown` when neither labels nor name say).
    pub version: String,
}

impl Pods {
    /// Reads the pods, WorkloadEntries and Services of the mesh's config; documents that do
    /// not load are the Config view's to report, and are skipped here.
    pub fn read(docs: &Result<Vec<ConfigDoc>, String>) -> Self {
        let mut pods = Self::default();
        for (origin, text) in docs.iter().flatten() {
            let report = load_str_mixed(origin, text);
            for loaded in &report.objects {
                match &loaded.resource {
                    Resource::WorkloadEntry(we) => {
                        let key = key(&we.metadata.name, &we.metadata.namespace);
                        pods.labels.insert(key, we.spec.labels.clone());
                    }
                    Resource::Service(service) => {
                        let selector = service.spec.as_ref().and_then(|s| s.selector.clone());
                        let (name, namespace) =
                            key(&service.metadata.name, &service.metadata.namespace);
                        // A Service without a selector picks no pod by labels.
                        if let Some(selector) = selector.filter(|s| !s.is_empty()) {
                            pods.selectors.insert(ServiceKey { name, namespace }, selector);
                        }
                    }
                    _ => {}
                }
            }
            for loaded in &report.kubernetes {
                if let KubeObject::Pod(pod) = &loaded.object {
                    let labels = pod.metadata.labels.clone().unwrap_or_default();
                    pods.labels.insert(key(&pod.metadata.name, &pod.metadata.namespace), labels);
                }
            }
        }
        pods
    }

    /// The Services of the config.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.selectors.keys()
    }

    /// The pods (and WorkloadEntries) of the config, by name and namespace.
    pub fn listed(&self) -> impl Iterator<Item = &(String, String)> {
        self.labels.keys()
    }

    /// Who pod `pod` of `namespace` is; `services` are the services known to exist (the
    /// hosts the proxies' clusters name, the config's Services), which its name is matched
    /// against when its labels do not say.
    ///
    /// - Workload: the Deployment (the pod's name less `-<pod-template-hash>-<id>` when its
    ///   `pod-template-hash` label says so, or when the name ends in two such generated
    ///   suffixes), else the pod's name (the local mesh's pods are their workloads).
    /// - Service: the Service of its namespace whose selector picks its labels (of several,
    ///   the one named as its `app` label, else the first by name); else its `app` label;
    ///   else the longest known service its workload is named after (`reviews` for
    ///   `reviews-v2`); else its workload less a trailing `-v<digit>...` version.
    /// - Version: its `version` label; else what follows the service's name in the
    ///   workload's (`v2`); else `unknown`.
    pub fn identity(
        &self,
        pod: &str,
        namespace: &str,
        services: &BTreeSet<ServiceKey>,
    ) -> Identity {
        let labels = self.labels.get(&(pod.to_owned(), namespace.to_owned()));
        let label = |names: &[&str]| {
            let labels = labels?;
            names.iter().find_map(|n| labels.get(*n)).filter(|v| !v.is_empty()).cloned()
        };
        let workload = labels
            .and_then(|l| l.get("pod-template-hash"))
            .and_then(|hash| deployment(pod, hash))
            .unwrap_or_else(|| workload_of_name(pod));
        let app = label(&APP_LABELS);
        let selected: Vec<&ServiceKey> = match labels {
            Some(labels) => self
                .selectors
                .iter()
                .filter(|(service, selector)| {
                    service.namespace == namespace
                        && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
                .map(|(service, _)| service)
                .collect(),
            None => Vec::new(),
        };
        let fallback = || {
            let (name, version) = split_version(&workload);
            (ServiceKey { name, namespace: namespace.to_owned() }, version)
        };
        let (service, name_version) = if let Some(first) = selected.first() {
            let chosen = selected.iter().find(|s| Some(&s.name) == app.as_ref()).unwrap_or(first);
            ((*chosen).clone(), None)
        } else if let Some(app) = app {
            (ServiceKey { name: app, namespace: namespace.to_owned() }, None)
        } else if let Some((service, version)) = named_after(&workload, namespace, services) {
            (service, version)
        } else {
            fallback()
        };
        // The name's version counts where the name was what matched (or matches the service
        // the labels chose).
        let name_version = name_version.or_else(|| {
            named_after(&workload, namespace, &BTreeSet::from([service.clone()]))
                .and_then(|(_, version)| version)
        });
        Identity {
            workload,
            namespace: namespace.to_owned(),
            service,
            version: label(&VERSION_LABELS).or(name_version).unwrap_or_else(|| "unknown".into()),
        }
    }
}

fn key(name: &Option<String>, namespace: &Option<String>) -> (String, String) {
    (
        name.clone().unwrap_or_default(),
        namespace.clone().filter(|ns| known(ns)).unwrap_or_else(|| "default".into()),
    )
}

fn generated(segment: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&segment.len()) && segment.chars().all(|c| GENERATED.contains(c))
}

/// The Deployment of a pod whose `pod-template-hash` is `hash`: `<deployment>-<hash>-<id>`.
fn deployment(pod: &str, hash: &str) -> Option<String> {
    let (rest, id) = pod.rsplit_once('-')?;
    let base = rest.strip_suffix(hash)?.strip_suffix('-')?;
    (!base.is_empty() && !id.is_empty()).then(|| base.to_owned())
}

/// The workload a pod's name says: less a Deployment's `-<hash of 6-10>-<id of 5>` (both
/// in the characters Kubernetes generates them from), else the name as it is.
fn workload_of_name(pod: &str) -> String {
    let stripped = pod.rsplit_once('-').and_then(|(rest, id)| {
        let (base, hash) = rest.rsplit_once('-')?;
        (generated(id, 5..=5) && generated(hash, 6..=10) && !base.is_empty())
            .then(|| base.to_owned())
    });
    stripped.unwrap_or_else(|| pod.to_owned())
}

/// The longest of `services` in `namespace` that `workload` is or is named after
/// (`<service>-<version>`), with that version.
fn named_after(
    workload: &str,
    namespace: &str,
    services: &BTreeSet<ServiceKey>,
) -> Option<(ServiceKey, Option<String>)> {
    services
        .iter()
        .filter(|s| s.namespace == namespace)
        .filter_map(|s| {
            if workload == s.name {
                return Some((s.clone(), None));
            }
            let version = workload.strip_prefix(&s.name)?.strip_prefix('-')?;
            (!version.is_empty()).then(|| (s.clone(), Some(version.to_owned())))
        })
        .max_by_key(|(s, _)| s.name.len())
}

/// `foo-v2` into `foo` and `v2`; a name without a trailing `-v<digit>...` as it is.
fn split_version(workload: &str) -> (String, Option<String>) {
    match workload.rsplit_once('-') {
        Some((app, version))
            if !app.is_empty()
                && version.len() >= 2
                && version.starts_with('v')
                && version[1..].starts_with(|c: char| c.is_ascii_digit()) =>
        {
            (app.to_owned(), Some(version.to_owned()))
        }
        _ => (workload.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, namespace: &str) -> ServiceKey {
        ServiceKey { name: name.into(), namespace: namespace.into() }
    }

    fn identity(workload: &str, service_name: &str, version: &str) -> Identity {
        Identity {
            workload: workload.into(),
            namespace: "default".into(),
            service: service(service_name, "default"),
            version: version.into(),
        }
    }

    #[test]
    fn names_as_bookinfo_makes_them() {
        let pods = Pods::default();
        let known = BTreeSet::from([
            service("reviews", "default"),
            service("productpage", "default"),
            service("reviews", "other"),
        ]);
        // The local mesh's pods are their workloads.
        assert_eq!(
            pods.identity("reviews-v2", "default", &known),
            identity("reviews-v2", "reviews", "v2")
        );
        // A Deployment's pod: `-<pod-template-hash>-<id>` taken off.
        assert_eq!(
            pods.identity("productpage-v1-6b746f74dc-9stvs", "default", &known),
            identity("productpage-v1", "productpage", "v1")
        );
        // A workload named as the service has no version in its name.
        assert_eq!(
            pods.identity("productpage", "default", &known),
            identity("productpage", "productpage", "unknown")
        );
        // No known service: the name less a trailing version, else the name.
        assert_eq!(
            pods.identity("ratings-v1", "default", &known),
            identity("ratings-v1", "ratings", "v1")
        );
        assert_eq!(
            pods.identity("client", "default", &known),
            identity("client", "client", "unknown")
        );
        // Services of other namespaces do not count: `reviews.other` is not known here.
        let mut other = identity("reviews-v1", "reviews", "v1");
        other.namespace = "else".into();
        other.service.namespace = "else".into();
        assert_eq!(pods.identity("reviews-v1", "else", &known), other);
        // Short or vowel-bearing suffixes are not generated ones: kept.
        assert_eq!(workload_of_name("details-v1-5c9b"), "details-v1-5c9b");
        assert_eq!(workload_of_name("web-server-abcde"), "web-server-abcde");
    }

    #[test]
    fn the_longest_service_a_name_starts_with_wins() {
        let known =
            BTreeSet::from([service("reviews", "default"), service("reviews-db", "default")]);
        let pods = Pods::default();
        assert_eq!(
            pods.identity("reviews-db-v1", "default", &known),
            identity("reviews-db-v1", "reviews-db", "v1")
        );
        assert_eq!(
            pods.identity("reviews-v1", "default", &known),
            identity("reviews-v1", "reviews", "v1")
        );
    }

    const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: rev-two, namespace: default}
spec:
  address: 10.77.0.13
  labels: {app: reviews, version: v2}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-svc, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: ratings-v1-7d9c8b5f4d-x2x7z
  namespace: default
  labels: {app: ratings, version: v1, pod-template-hash: 7d9c8b5f4d}
spec:
  containers: [{name: ratings, image: ratings}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default}
spec:
  ports: [{name: http, port: 80}]
"#;

    #[test]
    fn labels_and_selectors_say_better_than_names() {
        let pods = Pods::read(&Ok(vec![("mesh.yaml".into(), CONFIG.into())]));
        // A Service without a selector is not one pods are matched to.
        assert_eq!(pods.services().collect::<Vec<_>>(), [&service("reviews-svc", "default")]);
        assert_eq!(pods.listed().count(), 2);
        let known = BTreeSet::new();
        // The Service whose selector picks the labels, whatever the names say.
        assert_eq!(
            pods.identity("rev-two", "default", &known),
            identity("rev-two", "reviews-svc", "v2")
        );
        // A Deployment's pod: the workload by its pod-template-hash, the service by `app`
        // (no Service selects it).
        assert_eq!(
            pods.identity("ratings-v1-7d9c8b5f4d-x2x7z", "default", &known),
            identity("ratings-v1", "ratings", "v1")
        );
        // Documents that do not load are skipped; no config at all is no labels.
        let broken = Pods::read(&Ok(vec![("x.yaml".into(), "kind: [".into())]));
        assert_eq!(broken, Pods::default());
        assert_eq!(Pods::read(&Err("forbidden".into())), Pods::default());
    }
}
