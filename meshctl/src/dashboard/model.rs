//! Two scrapes of the proxies' metrics into what the Services and Graph views show: per
//! service and version its request rate, success rate, latency percentiles and mTLS share,
//! and who calls whom. Pure; sorted, so the same input always draws the same screen.
//!
//! A request between two sidecars is reported twice, by the client's proxy
//! (`reporter="source"`) and by the server's (`reporter="destination"`). As Kiali does, the
//! server's report counts; the client's counts only where no server report exists: the
//! destination has no sidecar, or its proxy was not scraped. So nothing is counted twice.
//!
//! A stock Envoy's cluster stats, read as Istio's series ([`super::envoy_stats`]), follow the
//! same rule for rows; its server-side report does not know its callers, so for the graph
//! the callers' reports count where the server's report is such a one, and the server's
//! draws the hop to its workload that no caller's report did: from the service's node when
//! callers knew only the service, else from `unknown`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::metrics::{Bucket, Sample, counter_delta, histogram_quantile, parse_value};

/// The request counter.
pub const REQUESTS: &str = "istio_requests_total";
/// The request duration histogram's buckets.
pub const DURATION_BUCKETS: &str = "istio_request_duration_milliseconds_bucket";
/// The TCP connections counter.
pub const TCP_OPENED: &str = "istio_tcp_connections_opened_total";
/// The label of a series translated from a stock Envoy's cluster stats: the cluster's name.
/// Such a server-side series does not name its callers.
pub const ENVOY_CLUSTER: &str = "envoy_cluster_name";

/// A service, as the metrics name it (`destination_service_name`, `..._namespace`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// Short name (`reviews`), or the host for services outside the cluster.
    pub name: String,
    /// Namespace; `unknown` for hosts outside the cluster.
    pub namespace: String,
}

impl ServiceKey {
    /// `reviews.default`, or the bare host when there is no namespace.
    pub fn display(&self) -> String {
        if known(&self.namespace) {
            format!("{}.{}", self.name, self.namespace)
        } else {
            self.name.clone()
        }
    }
}

/// What a graph node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeKind {
    /// A workload with a sidecar (or known by its callers' peer metadata).
    Workload,
    /// A service whose workloads are not known (no sidecar): the node is the service.
    Service,
}

/// A workload or service in the graph; `unknown` is traffic whose caller is not known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    /// Workload (or service) name.
    pub name: String,
    /// Its namespace (`unknown` when not known).
    pub namespace: String,
    /// Workload or service.
    pub kind: NodeKind,
}

impl Node {
    /// The name, with `.namespace` unless it is `home` (the namespace being watched) or not
    /// known.
    pub fn label(&self, home: &str) -> String {
        if !known(&self.namespace) || self.namespace == home || !known(&self.name) {
            self.name.clone()
        } else {
            format!("{}.{}", self.name, self.namespace)
        }
    }
}

/// One row of the Services view.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRow {
    /// The service.
    pub service: ServiceKey,
    /// `destination_version` (`unknown` without one).
    pub version: String,
    /// Requests per second over the window; `None` before a second scrape.
    pub rps: Option<f64>,
    /// Share of requests answered without a 5xx (a request with no answer, code 0, failed).
    pub success: Option<f64>,
    /// Latency percentiles in milliseconds: p50, p90, p99.
    pub latency: [Option<f64>; 3],
    /// Share of requests that came over mesh mTLS, where the server's proxy says.
    pub mtls: Option<f64>,
    /// The workloads serving this version, sorted.
    pub workloads: Vec<(String, String)>,
}

/// One edge of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    /// The caller.
    pub from: Node,
    /// The callee.
    pub to: Node,
    /// The service called.
    pub service: ServiceKey,
    /// Requests (or, for TCP, connections) per second; `None` before a second scrape.
    pub rate: Option<f64>,
    /// Share of failed requests (see [`ServiceRow::success`]); always `None` for TCP.
    pub errors: Option<f64>,
    /// Whether the edge is TCP connections rather than requests.
    pub tcp: bool,
}

/// What one proxy's metrics say, by pod and namespace.
pub type ProxySamples = BTreeMap<(String, String), Vec<Sample>>;

/// The Services and Graph views' data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    /// Rows sorted by service and version.
    pub services: Vec<ServiceRow>,
    /// Edges sorted by caller, callee, then requests before TCP.
    pub edges: Vec<Edge>,
    /// Each scraped proxy's own workload, as its metrics name it.
    pub proxy_workloads: BTreeMap<(String, String), (String, String)>,
}

/// Whether a label value says something (`unknown` and empty do not).
pub fn known(value: &str) -> bool {
    !value.is_empty() && value != "unknown"
}

fn label<'a>(s: &'a Sample, name: &str) -> &'a str {
    s.label(name).unwrap_or("")
}

fn service_of(s: &Sample) -> ServiceKey {
    let name = label(s, "destination_service_name");
    let name = if known(name) { name } else { label(s, "destination_service") };
    ServiceKey {
        name: if name.is_empty() { "unknown".into() } else { name.to_owned() },
        namespace: label(s, "destination_service_namespace").to_owned(),
    }
}

fn destination_workload(s: &Sample) -> (String, String) {
    (
        label(s, "destination_workload").to_owned(),
        label(s, "destination_workload_namespace").to_owned(),
    )
}

/// The services (and service, workload pairs) some servers' proxies report on.
#[derive(Default)]
struct Coverage {
    services: BTreeSet<ServiceKey>,
    workloads: BTreeSet<(ServiceKey, (String, String))>,
}

impl Coverage {
    fn add(&mut self, s: &Sample) {
        self.services.insert(service_of(s));
        self.workloads.insert((service_of(s), destination_workload(s)));
    }

    /// Whether a caller's series is reported by its server too: the service is, and so is
    /// the workload called when the caller knows it.
    fn covers(&self, s: &Sample) -> bool {
        let service = service_of(s);
        let workload = destination_workload(s);
        self.services.contains(&service)
            && (!known(&workload.0) || self.workloads.contains(&(service, workload)))
    }
}

fn from_envoy(s: &Sample) -> bool {
    s.label(ENVOY_CLUSTER).is_some()
}

/// Who reports on what in one family, for deciding which series count (see the module's
/// doc).
#[derive(Default)]
struct Served {
    /// Every server-side report.
    all: Coverage,
    /// The server-side reports that name their callers (not Envoy's cluster stats).
    naming: Coverage,
    /// The (service, workload) pairs some counted caller's report draws an edge to.
    called_workloads: BTreeSet<(ServiceKey, (String, String))>,
    /// The services some counted caller's report draws an edge to, not knowing the workload.
    called_as_service: BTreeSet<ServiceKey>,
}

impl Served {
    fn of(family: &str, deltas: &[Delta]) -> Self {
        let mut served = Self::default();
        let series =
            || deltas.iter().map(|d| d.sample).filter(|s| family_of(&s.name) == Some(family));
        for s in series().filter(|s| s.label("reporter") == Some("destination")) {
            served.all.add(s);
            if !from_envoy(s) {
                served.naming.add(s);
            }
        }
        for s in series().filter(|s| s.name != DURATION_BUCKETS) {
            if s.label("reporter") == Some("source") && !served.naming.covers(s) {
                let workload = destination_workload(s);
                if known(&workload.0) {
                    served.called_workloads.insert((service_of(s), workload));
                } else {
                    served.called_as_service.insert(service_of(s));
                }
            }
        }
        served
    }

    /// Whether this series counts for its service's row.
    fn counts_for_row(&self, s: &Sample) -> bool {
        match s.label("reporter") {
            Some("destination") => true,
            Some("source") => !self.all.covers(s),
            _ => false,
        }
    }

    /// Where this series' edge starts, if it counts for the graph.
    fn edge_from(&self, s: &Sample, service: &ServiceKey) -> Option<Node> {
        match s.label("reporter") {
            Some("destination") if from_envoy(s) => {
                let pair = (service.clone(), destination_workload(s));
                if self.called_workloads.contains(&pair) {
                    None
                } else if self.called_as_service.contains(service) {
                    Some(Node {
                        name: service.name.clone(),
                        namespace: service.namespace.clone(),
                        kind: NodeKind::Service,
                    })
                } else {
                    Some(source_node(s))
                }
            }
            Some("destination") => Some(source_node(s)),
            Some("source") => (!self.naming.covers(s)).then(|| source_node(s)),
            _ => None,
        }
    }
}

/// The family a series name belongs to, for the three the dashboard reads.
fn family_of(name: &str) -> Option<&'static str> {
    match name {
        REQUESTS | DURATION_BUCKETS => Some(REQUESTS),
        TCP_OPENED => Some(TCP_OPENED),
        _ => None,
    }
}

/// A series of the current scrape with its growth since the previous one (`None` when the
/// proxy was not scraped then).
struct Delta<'a> {
    sample: &'a Sample,
    delta: Option<f64>,
}

/// A series by name and labels.
type SeriesKey<'a> = (&'a str, &'a [(String, String)]);

fn deltas<'a, S: AsRef<[Sample]>>(
    previous: Option<&BTreeMap<(String, String), S>>,
    current: &'a BTreeMap<(String, String), S>,
) -> Vec<Delta<'a>> {
    let mut out = Vec::new();
    for (proxy, samples) in current {
        let before: Option<HashMap<SeriesKey, f64>> =
            previous.and_then(|p| p.get(proxy)).map(|samples| {
                let samples = samples.as_ref();
                samples.iter().map(|s| ((s.name.as_str(), s.labels.as_slice()), s.value)).collect()
            });
        for sample in samples.as_ref().iter().filter(|s| family_of(&s.name).is_some()) {
            // A series the previous scrape of this proxy did not have started since: from 0.
            let delta = before.as_ref().map(|b| {
                let old = b.get(&(sample.name.as_str(), sample.labels.as_slice())).copied();
                counter_delta(old.unwrap_or(0.0), sample.value)
            });
            out.push(Delta { sample, delta });
        }
    }
    out
}

#[derive(Default)]
struct Acc {
    total: Option<f64>,
    errors: f64,
    mtls: f64,
    mtls_known: f64,
    buckets: Vec<Bucket>,
    workloads: BTreeSet<(String, String)>,
}

impl Acc {
    fn add_request(&mut self, s: &Sample, delta: Option<f64>) {
        let Some(d) = delta else { return };
        *self.total.get_or_insert(0.0) += d;
        let code = label(s, "response_code");
        if code.starts_with('5') || code == "0" {
            self.errors += d;
        }
        match label(s, "connection_security_policy") {
            "mutual_tls" => {
                self.mtls += d;
                self.mtls_known += d;
            }
            "none" => self.mtls_known += d,
            _ => {}
        }
    }

    fn add_bucket(&mut self, s: &Sample, delta: Option<f64>) {
        if let (Some(d), Some(le)) = (delta, s.label("le").and_then(parse_value)) {
            self.buckets.push(Bucket { le, count: d });
        }
    }

    fn rate(&self, seconds: f64) -> Option<f64> {
        self.total.map(|t| t / seconds)
    }

    fn error_share(&self) -> Option<f64> {
        self.total.filter(|&t| t > 0.0).map(|t| self.errors / t)
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        Some(histogram_quantile(q, &self.buckets)).filter(|v| v.is_finite())
    }
}

/// The traffic between `previous` and `current`, taken `seconds` apart. Without a previous
/// scrape (or a window that is not positive) rows and edges are there with no numbers yet.
/// Each proxy's samples are a [`ProxySamples`]' vectors, or the views of them
/// [`super::envoy_stats::translate`] gives.
pub fn traffic<S: AsRef<[Sample]>>(
    previous: Option<&BTreeMap<(String, String), S>>,
    current: &BTreeMap<(String, String), S>,
    seconds: f64,
) -> Traffic {
    let previous = previous.filter(|_| seconds > 0.0);
    let deltas = deltas(previous, current);
    let requests = Served::of(REQUESTS, &deltas);
    let tcp = Served::of(TCP_OPENED, &deltas);
    let mut rows: BTreeMap<(ServiceKey, String), Acc> = BTreeMap::new();
    let mut edges: BTreeMap<(Node, Node, bool, ServiceKey), Acc> = BTreeMap::new();
    for Delta { sample: s, delta } in &deltas {
        let tcp_series = s.name == TCP_OPENED;
        let served = if tcp_series { &tcp } else { &requests };
        let service = service_of(s);
        if s.name != DURATION_BUCKETS
            && let Some(from) = served.edge_from(s, &service)
        {
            let edge = (from, destination_node(s, &service), tcp_series, service.clone());
            edges.entry(edge).or_default().add_request(s, *delta);
        }
        if tcp_series || !served.counts_for_row(s) {
            continue;
        }
        let row = rows.entry((service, label(s, "destination_version").to_owned())).or_default();
        if s.name == REQUESTS {
            row.add_request(s, *delta);
            let workload = destination_workload(s);
            if known(&workload.0) {
                row.workloads.insert(workload);
            }
        } else {
            row.add_bucket(s, *delta);
        }
    }
    let services = rows
        .into_iter()
        .map(|((service, version), acc)| ServiceRow {
            service,
            version: if version.is_empty() { "unknown".into() } else { version },
            rps: acc.rate(seconds),
            success: acc.error_share().map(|e| 1.0 - e),
            latency: [acc.quantile(0.5), acc.quantile(0.9), acc.quantile(0.99)],
            mtls: (acc.mtls_known > 0.0).then(|| acc.mtls / acc.mtls_known),
            workloads: acc.workloads.iter().cloned().collect(),
        })
        .collect();
    let edges = edges
        .into_iter()
        .map(|((from, to, tcp, service), acc)| Edge {
            from,
            to,
            service,
            rate: acc.rate(seconds),
            errors: if tcp { None } else { acc.error_share() },
            tcp,
        })
        .collect();
    Traffic { services, edges, proxy_workloads: proxy_workloads(current) }
}

fn source_node(s: &Sample) -> Node {
    let name = label(s, "source_workload");
    Node {
        name: if known(name) { name.to_owned() } else { "unknown".into() },
        namespace: label(s, "source_workload_namespace").to_owned(),
        kind: NodeKind::Workload,
    }
}

fn destination_node(s: &Sample, service: &ServiceKey) -> Node {
    let (name, namespace) = destination_workload(s);
    if known(&name) {
        Node { name, namespace, kind: NodeKind::Workload }
    } else {
        Node {
            name: service.name.clone(),
            namespace: service.namespace.clone(),
            kind: NodeKind::Service,
        }
    }
}

/// Each proxy's own workload: the server side of what it reports as destination, or the
/// client side of what it reports as source.
fn proxy_workloads<S: AsRef<[Sample]>>(
    current: &BTreeMap<(String, String), S>,
) -> BTreeMap<(String, String), (String, String)> {
    let mut out = BTreeMap::new();
    for (proxy, samples) in current {
        let own = samples.as_ref().iter().find_map(|s| {
            let (name, ns) = match s.label("reporter")? {
                "destination" => ("destination_workload", "destination_workload_namespace"),
                "source" => ("source_workload", "source_workload_namespace"),
                _ => return None,
            };
            let name = s.label(name)?;
            known(name).then(|| (name.to_owned(), label(s, ns).to_owned()))
        });
        if let Some(own) = own {
            out.insert(proxy.clone(), own);
        }
    }
    out
}

/// The graph's columns: the nodes by depth from the entry points (nodes nobody calls first),
/// each column sorted. Nodes only reachable through a cycle start a column of their own
/// depth 0, so every node appears exactly once.
pub fn columns(edges: &[Edge]) -> Vec<Vec<Node>> {
    let mut callees: BTreeMap<&Node, BTreeSet<&Node>> = BTreeMap::new();
    let mut called: BTreeSet<&Node> = BTreeSet::new();
    for e in edges {
        callees.entry(&e.from).or_default();
        callees.entry(&e.to).or_default();
        if e.from != e.to {
            callees.entry(&e.from).or_default().insert(&e.to);
            called.insert(&e.to);
        }
    }
    let mut depth: BTreeMap<&Node, usize> = BTreeMap::new();
    let roots: Vec<&Node> = callees.keys().copied().filter(|n| !called.contains(n)).collect();
    let mut frontier = roots;
    loop {
        while !frontier.is_empty() {
            for node in &frontier {
                depth.entry(node).or_insert(0);
            }
            let mut next = Vec::new();
            for node in &frontier {
                let d = depth[node];
                for callee in &callees[node] {
                    if !depth.contains_key(callee) {
                        depth.insert(callee, d + 1);
                        next.push(*callee);
                    }
                }
            }
            frontier = next;
        }
        match callees.keys().find(|n| !depth.contains_key(*n)) {
            Some(rest) => frontier = vec![*rest],
            None => break,
        }
    }
    let mut columns: Vec<Vec<Node>> = Vec::new();
    for (node, d) in depth {
        if columns.len() <= d {
            columns.resize(d + 1, Vec::new());
        }
        columns[d].push(node.clone());
    }
    columns
}
