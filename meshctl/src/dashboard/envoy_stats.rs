//! A stock Envoy sidecar's own cluster stats, read as Istio's request metrics, so the model
//! counts its traffic by the same rules as a mesh-proxy's. Only for a proxy whose scrape has
//! no `istio_requests_total` at all (a mesh-proxy always has it; Envoy without Istio's stats
//! filter never): its `envoy_cluster_*` families, tagged as Istio's bootstrap tags them
//! (`cluster_name` whole, `response_code`), become series of `istio_requests_total` and
//! `istio_request_duration_milliseconds_bucket`:
//!
//! - `inbound|PORT||` (the requests the sidecar passed to its own app) is the server's own
//!   report (`reporter="destination"`), of the service, version and workload the pod is
//!   ([`Pods::identity`]); its caller is not known.
//! - `outbound|PORT|SUBSET|HOST` is the caller's report (`reporter="source"`) from the pod's
//!   workload to the service `HOST` names. The callee is the workload of that service (and
//!   subset, taken as a version: Bookinfo's `v1` selects `version: v1`) when exactly one
//!   workload of the listed pods serves it, else only the service is known.
//! - Requests: the per-code counters `envoy_cluster_upstream_rq{response_code=...}` (Envoy
//!   charges the 503 or 504 it answers for a reset, a timeout or no healthy host there too,
//!   which `upstream_rq_total` misses; the same-named `response_code_class` series are
//!   skipped, or every request would count twice). They count upstream attempts: a caller's
//!   retries are requests of their own.
//! - Latency: `envoy_cluster_upstream_rq_time` buckets, of clusters that observed something.
//!   Envoy merges histograms at its stats flush (every 5 s by default), so they trail the
//!   counters by up to that much.
//! - mTLS is not known from cluster stats: no series says it, and the row shows `-`.
//!
//! Requests Envoy refuses before routing (an authorization policy's 403, no route) and TCP
//! proxying are not in these families: they do not show. Each translated series carries
//! [`ENVOY_CLUSTER`], which tells the model its server-side report does not name callers.
//! Pure functions.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::metrics::Sample;
use super::model::{DURATION_BUCKETS, ENVOY_CLUSTER, ProxySamples, REQUESTS, ServiceKey, known};
use super::pods::{Identity, Pods};

/// Envoy's per-cluster request counters, per `response_code` (and per `response_code_class`).
pub const UPSTREAM_RQ: &str = "envoy_cluster_upstream_rq";
/// Envoy's per-cluster request time histogram's buckets (milliseconds).
pub const UPSTREAM_RQ_TIME: &str = "envoy_cluster_upstream_rq_time_bucket";
/// The tag holding a cluster's whole name, as Istio's bootstrap extracts it.
pub const CLUSTER_NAME: &str = "cluster_name";

/// Whether the dashboard keeps a metric of this name for the translation.
pub fn keep(name: &str) -> bool {
    name == UPSTREAM_RQ || name == UPSTREAM_RQ_TIME
}

/// One of the mesh's cluster names, as the pilot names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cluster<'a> {
    /// `inbound|PORT||` (or Istio's older `inbound|PORT|NAME|HOST`): to the pod's own app.
    Inbound {
        /// The service host, when the name carries one.
        host: Option<&'a str>,
    },
    /// `outbound|PORT|SUBSET|HOST`: to a service (and a subset of its endpoints).
    Outbound {
        /// The subset, if any.
        subset: Option<&'a str>,
        /// The service host.
        host: &'a str,
    },
}

/// Reads a cluster name; `None` for clusters that are not the mesh's services (`xds-grpc`,
/// `PassthroughCluster`, ...).
pub fn parse_cluster(name: &str) -> Option<Cluster<'_>> {
    let mut parts = name.split('|');
    let (direction, port, subset, host) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || port.parse::<u16>().is_err() {
        return None;
    }
    let some = |s: &str| !s.is_empty();
    match direction {
        "inbound" => Some(Cluster::Inbound { host: Some(host).filter(|h| some(h)) }),
        "outbound" if some(host) => {
            Some(Cluster::Outbound { subset: Some(subset).filter(|s| some(s)), host })
        }
        _ => None,
    }
}

/// The service a host names: `reviews.default.svc.cluster.local` is `reviews` of `default`;
/// any other host (a ServiceEntry's `api.example.com`) is itself, of no namespace, as
/// Istio's metrics name it.
pub fn host_service(host: &str) -> ServiceKey {
    let parts: Vec<&str> = host.splitn(4, '.').collect();
    match parts.as_slice() {
        [name, namespace, "svc", ..] if !name.is_empty() && !namespace.is_empty() => {
            ServiceKey { name: (*name).to_owned(), namespace: (*namespace).to_owned() }
        }
        _ => ServiceKey { name: host.to_owned(), namespace: "unknown".into() },
    }
}

/// Whether a proxy's samples are to be read from Envoy's stats: it has no Istio request
/// series at all, and has Envoy's.
pub fn is_envoy(samples: &[Sample]) -> bool {
    !samples.iter().any(|s| s.name == REQUESTS) && samples.iter().any(|s| keep(&s.name))
}

/// Each proxy's samples as the model reads them: borrowed as scraped, or translated.
pub type Translated<'a> = BTreeMap<(String, String), Cow<'a, [Sample]>>;

/// Every proxy's samples with those of the Envoy proxies ([`is_envoy`] in `current`)
/// replaced by their translation, for `previous` (when there is one) and `current` alike:
/// one mapping for both, so a pod that appears between them (and turns a service's one
/// workload into two) cannot make a series new and its whole count a window's. `listed` are
/// the pods of the scrape (reachable or not), which with the config's pods are the
/// workloads a caller's cluster can resolve to. Istio's samples are borrowed, not copied.
pub fn translate<'a>(
    previous: Option<&'a ProxySamples>,
    current: &'a ProxySamples,
    listed: &[(String, String)],
    pods: &Pods,
) -> (Option<Translated<'a>>, Translated<'a>) {
    let borrow = |samples: &'a ProxySamples| -> Translated<'a> {
        samples.iter().map(|(key, s)| (key.clone(), Cow::Borrowed(s.as_slice()))).collect()
    };
    let mut translated = (previous.map(borrow), borrow(current));
    let envoys: Vec<&(String, String)> =
        current.iter().filter(|(_, samples)| is_envoy(samples)).map(|(key, _)| key).collect();
    if envoys.is_empty() {
        return translated;
    }
    let services = known_services(current, &envoys, pods);
    let mut identities: BTreeMap<(String, String), Identity> = BTreeMap::new();
    for (pod, namespace) in listed.iter().chain(pods.listed()).chain(envoys.iter().copied()) {
        identities
            .entry((pod.clone(), namespace.clone()))
            .or_insert_with(|| pods.identity(pod, namespace, &services));
    }
    let mut workloads: BTreeMap<&ServiceKey, BTreeSet<&Identity>> = BTreeMap::new();
    for identity in identities.values() {
        workloads.entry(&identity.service).or_default().insert(identity);
    }
    let callee = |service: &ServiceKey, subset: Option<&str>| callee(&workloads, service, subset);
    for key in envoys {
        // Every Envoy proxy is in `identities` (added above).
        let Some(own) = identities.get(key) else { continue };
        if let Some(samples) = current.get(key) {
            translated.1.insert(key.clone(), Cow::Owned(translate_proxy(samples, own, &callee)));
        }
        if let (Some(out), Some(samples)) =
            (translated.0.as_mut(), previous.and_then(|p| p.get(key)))
        {
            out.insert(key.clone(), Cow::Owned(translate_proxy(samples, own, &callee)));
        }
    }
    translated
}

/// The services known to exist: the hosts Envoy's clusters name, the services Istio's
/// series name, the config's Services.
fn known_services(
    current: &ProxySamples,
    envoys: &[&(String, String)],
    pods: &Pods,
) -> BTreeSet<ServiceKey> {
    let mut services: BTreeSet<ServiceKey> = pods.services().cloned().collect();
    for (key, samples) in current {
        let envoy = envoys.contains(&key);
        for s in samples {
            if envoy {
                if let Some(Cluster::Outbound { host, .. }) =
                    s.label(CLUSTER_NAME).and_then(parse_cluster)
                {
                    services.insert(host_service(host));
                }
            } else if s.name == REQUESTS
                && let (Some(name), Some(namespace)) =
                    (s.label("destination_service_name"), s.label("destination_service_namespace"))
                && known(name)
                && known(namespace)
            {
                services
                    .insert(ServiceKey { name: name.to_owned(), namespace: namespace.to_owned() });
            }
        }
    }
    services
}

/// The one workload serving `service` (and `subset`, taken as its version), if exactly one
/// does among the known pods.
fn callee<'a>(
    workloads: &BTreeMap<&ServiceKey, BTreeSet<&'a Identity>>,
    service: &ServiceKey,
    subset: Option<&str>,
) -> Option<&'a Identity> {
    let serving = workloads.get(service)?;
    let mut matching = serving.iter().filter(|i| subset.is_none_or(|s| i.version == s));
    let first = *matching.next()?;
    // Replicas of one workload are one callee.
    matching
        .all(|i| (&i.workload, &i.namespace) == (&first.workload, &first.namespace))
        .then_some(first)
}

/// One Envoy proxy's samples as Istio's series (see the module's doc).
fn translate_proxy<'a>(
    samples: &[Sample],
    own: &Identity,
    callee: &impl Fn(&ServiceKey, Option<&str>) -> Option<&'a Identity>,
) -> Vec<Sample> {
    // A histogram with no observation in this scrape adds nothing but rows of no traffic.
    let observed: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == UPSTREAM_RQ_TIME && s.label("le") == Some("+Inf") && s.value > 0.0)
        .filter_map(|s| s.label(CLUSTER_NAME))
        .collect();
    let mut out = Vec::new();
    for s in samples {
        let Some(name) = s.label(CLUSTER_NAME) else { continue };
        let Some(cluster) = parse_cluster(name) else { continue };
        let (metric, extra) = match s.name.as_str() {
            // A counter still at zero is a cluster never used: Istio has no series for it.
            UPSTREAM_RQ if s.value != 0.0 => match s.label("response_code") {
                Some(code) => (REQUESTS, ("response_code", code)),
                None => continue,
            },
            UPSTREAM_RQ_TIME if observed.contains(name) => match s.label("le") {
                Some(le) => (DURATION_BUCKETS, ("le", le)),
                None => continue,
            },
            _ => continue,
        };
        let mut labels = ends(cluster, own, callee);
        labels.push((extra.0.to_owned(), extra.1.to_owned()));
        labels.push((ENVOY_CLUSTER.to_owned(), name.to_owned()));
        labels.sort();
        out.push(Sample { name: metric.to_owned(), labels, value: s.value });
    }
    out
}

/// Istio's labels for who reported, who called and who was called.
fn ends<'a>(
    cluster: Cluster<'_>,
    own: &Identity,
    callee: &impl Fn(&ServiceKey, Option<&str>) -> Option<&'a Identity>,
) -> Vec<(String, String)> {
    let unknown = || "unknown".to_owned();
    let (reporter, source, service, destination) = match cluster {
        Cluster::Inbound { host } => {
            let service = host.map_or_else(|| own.service.clone(), host_service);
            let source = (unknown(), unknown());
            let destination = (own.workload.clone(), own.namespace.clone(), own.version.clone());
            ("destination", source, service, destination)
        }
        Cluster::Outbound { subset, host } => {
            let service = host_service(host);
            let destination = match callee(&service, subset) {
                Some(i) => (i.workload.clone(), i.namespace.clone(), i.version.clone()),
                None => (unknown(), unknown(), unknown()),
            };
            let source = (own.workload.clone(), own.namespace.clone());
            ("source", source, service, destination)
        }
    };
    [
        ("reporter", reporter.to_owned()),
        ("source_workload", source.0),
        ("source_workload_namespace", source.1),
        ("destination_service_name", service.name),
        ("destination_service_namespace", service.namespace),
        ("destination_workload", destination.0),
        ("destination_workload_namespace", destination.1),
        ("destination_version", destination.2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[cfg(test)]
mod tests;
