//! Where the data path's spans go: one `mesh-trace` exporter per collector the configuration
//! names (the OpenTelemetry tracer's cluster, resolved to one of its endpoints), kept by the
//! control thread and replaced when an update moves the collector. The data path finds the
//! queue of its connection manager's collector in a snapshot ([`Spans`]) and hands spans over
//! without waiting: a full queue, a collector that cannot be reached or one that is not
//! configured drops them, counted in `mesh_proxy_spans_dropped_total`. Stopping flushes within
//! a deadline.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use mesh_trace::export::{ExportSettings, Exporter, Queue, SpanRecord, Stats};
use prometheus_client::collector::Collector as PromCollector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use tokio::sync::oneshot;

use super::config::{Collector, ExportSpec};
use crate::runtime::{Runtime, Upstream};

/// The most collectors exported to at once (distinct [`ExportSpec`]s); the configuration
/// comes from the pilot, and each exporter holds a queue and a connection.
pub const MAX_EXPORTERS: usize = 16;
/// How long a replaced exporter may take to send what it holds.
const RETIRE_DEADLINE: Duration = Duration::from_secs(2);
/// How much longer than its deadline stopping may take (the task's own bookkeeping).
const STOP_GRACE: Duration = Duration::from_millis(200);

/// What the data path reads: the queue of each collector in force, and the counters.
#[derive(Debug, Default)]
pub struct Spans {
    queues: ArcSwap<HashMap<Arc<ExportSpec>, Queue>>,
    counts: Arc<Counts>,
    node_id: OnceLock<String>,
}

/// Spans dropped and exported over the proxy's life, across its exporters.
#[derive(Debug, Default)]
struct Counts {
    /// Recorded spans with no exporter to take them.
    unrouted: AtomicU64,
    /// Dropped and exported by exporters that were replaced and have finished.
    retired_dropped: AtomicU64,
    retired_exported: AtomicU64,
    /// The counters of the exporters still running (or finishing).
    live: ArcSwap<Vec<Arc<Stats>>>,
}

impl Counts {
    fn dropped(&self) -> u64 {
        let live: u64 = self.live.load().iter().map(|s| s.dropped()).sum();
        self.unrouted.load(Ordering::Relaxed) + self.retired_dropped.load(Ordering::Relaxed) + live
    }

    fn exported(&self) -> u64 {
        let live: u64 = self.live.load().iter().map(|s| s.exported()).sum();
        self.retired_exported.load(Ordering::Relaxed) + live
    }

    fn retire(&self, stats: &Arc<Stats>, dropped: u64, exported: u64) {
        self.retired_dropped.fetch_add(dropped, Ordering::Relaxed);
        self.retired_exported.fetch_add(exported, Ordering::Relaxed);
        self.live.rcu(|live| {
            live.iter().filter(|s| !Arc::ptr_eq(s, stats)).cloned().collect::<Vec<_>>()
        });
    }
}

impl Spans {
    /// Hands a request's spans to the exporter of `spec`, never waiting; without one they are
    /// dropped and counted.
    pub fn send(&self, spec: &ExportSpec, spans: Vec<SpanRecord>) {
        let queues = self.queues.load();
        match queues.get(spec) {
            Some(queue) => {
                for span in spans {
                    queue.send(span);
                }
            }
            None => {
                let n = u64::try_from(spans.len()).unwrap_or(u64::MAX);
                self.counts.unrouted.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Spans that never reached a collector, so far.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped()
    }

    /// Spans a collector accepted, so far.
    pub fn exported(&self) -> u64 {
        self.counts.exported()
    }

    /// The metrics of the spans (`mesh_proxy_spans_dropped_total`,
    /// `mesh_proxy_spans_exported_total`), to register once.
    pub fn metrics(&self) -> SpanMetrics {
        SpanMetrics(self.counts.clone())
    }

    /// Names the proxy in its spans' `node_id` tag (the first name given stays).
    pub fn set_node_id(&self, node_id: String) {
        let _ = self.node_id.set(node_id);
    }

    /// The proxy's node id, empty when not named.
    pub fn node_id(&self) -> &str {
        self.node_id.get().map_or("", String::as_str)
    }

    /// Whether a collector is exported to for `spec` now.
    pub fn exports(&self, spec: &ExportSpec) -> bool {
        self.queues.load().contains_key(spec)
    }
}

/// The span counters as Prometheus counters, read at each scrape.
#[derive(Clone, Debug)]
pub struct SpanMetrics(Arc<Counts>);

impl PromCollector for SpanMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in [
            (
                "mesh_proxy_spans_dropped",
                "Spans that never reached the OTLP collector (queue full, export failed or timed out, no collector)",
                self.0.dropped(),
            ),
            ("mesh_proxy_spans_exported", "Spans the OTLP collector accepted", self.0.exported()),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// The collectors `runtime`'s connection managers name, each once (at most
/// [`MAX_EXPORTERS`]; more are left without an exporter, and their spans counted as dropped),
/// those the proxy cannot export to included (so that it says why, once).
pub fn specs(runtime: &Runtime) -> Vec<Arc<ExportSpec>> {
    let mut seen = HashSet::new();
    let mut specs = Vec::new();
    let mut ports: Vec<_> = runtime.listeners.keys().copied().collect();
    ports.sort_unstable();
    for port in ports {
        for chain in runtime.listeners[&port].chains() {
            if let Some(config) = &chain.filters.http.trace
                && seen.insert(config.export.clone())
            {
                specs.push(config.export.clone());
            }
        }
    }
    specs.truncate(MAX_EXPORTERS);
    specs
}

/// Where the collector of `spec` is now: `http://ip:port` of an endpoint of its cluster
/// (`current`, the one exported to, kept while the cluster still has it), its target, or the
/// standard variables' endpoint in `env`; the error says why there is none.
pub async fn resolve(
    runtime: &Runtime,
    spec: &ExportSpec,
    current: Option<&str>,
    env: &BTreeMap<String, String>,
) -> Result<String, String> {
    let address = match &spec.collector {
        Collector::Cluster(cluster) => match runtime.upstreams.get(cluster).map(Arc::as_ref) {
            Some(Upstream::Balanced(balancer)) => {
                let hosts = balancer.hosts();
                let kept = hosts
                    .iter()
                    .map(|h| format!("http://{}", h.address))
                    .find(|a| Some(a.as_str()) == current);
                match kept {
                    Some(address) => return Ok(address),
                    None => hosts
                        .first()
                        .map(|h| h.address)
                        .ok_or_else(|| format!("cluster {cluster:?} has no endpoint"))?,
                }
            }
            Some(Upstream::Dns(_)) => match runtime.dns.get(cluster) {
                Some(cache) => {
                    cache.address().await.map_err(|why| format!("cluster {cluster:?}: {why}"))?
                }
                None => return Err(format!("cluster {cluster:?} is not resolved")),
            },
            Some(Upstream::OriginalDestination) => {
                return Err(format!(
                    "cluster {cluster:?} has no endpoints of its own (ORIGINAL_DST)"
                ));
            }
            None => return Err(format!("cluster {cluster:?} is not configured")),
        },
        Collector::Target(target) => {
            return mesh_trace::export::normalize_endpoint(target).map_err(|e| e.to_string());
        }
        Collector::Environment => {
            return ExportSettings::from_env(None, "", env)
                .map_err(|e| e.to_string())?
                .map(|s| s.endpoint)
                .ok_or_else(|| {
                    "tracing names no provider and no OTEL_EXPORTER_OTLP_ENDPOINT is set".to_owned()
                });
        }
        Collector::Unsupported(why) => return Err(why.clone()),
    };
    Ok(format!("http://{address}"))
}

/// Who the proxy is, for its spans' resource.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// `service.name` when the tracer names none: Istio's `<app>.<namespace>`.
    pub service_name: String,
    /// Resource attributes (`k8s.namespace.name`, `k8s.pod.name`).
    pub resource: Vec<(String, String)>,
}

struct Live {
    endpoint: String,
    exporter: Exporter,
}

/// The exporters, owned by the control thread.
pub struct Exporters {
    env: BTreeMap<String, String>,
    identity: Identity,
    live: HashMap<Arc<ExportSpec>, Live>,
    /// The last problem said of each collector (said again only when it changes).
    problems: HashMap<Arc<ExportSpec>, String>,
}

impl Exporters {
    /// No exporter yet; `env` is the process's environment (the `OTEL_*` variables), read once.
    pub fn new(env: BTreeMap<String, String>, identity: Identity) -> Self {
        Self { env, identity, live: HashMap::new(), problems: HashMap::new() }
    }

    /// The settings of an exporter of `spec` to `endpoint`.
    fn settings(&self, spec: &ExportSpec, endpoint: &str) -> Result<ExportSettings, String> {
        let service = if spec.service_name.is_empty() {
            &self.identity.service_name
        } else {
            &spec.service_name
        };
        let mut settings = ExportSettings::from_env(Some(endpoint), service, &self.env)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no endpoint in {endpoint:?}"))?;
        if let Some(timeout) = spec.timeout {
            settings.timeout = timeout;
        }
        if let Some(path) = &spec.http_path {
            settings.transport = mesh_trace::export::Transport::Http { path: path.clone() };
        }
        for (key, value) in &spec.headers {
            settings.headers.retain(|(k, _)| k != key);
            settings.headers.push((key.clone(), value.clone()));
        }
        for (key, value) in &self.identity.resource {
            if !settings.resource.iter().any(|(k, _)| k == key) {
                settings.resource.push((key.clone(), value.clone()));
            }
        }
        Ok(settings)
    }

    fn problem(&mut self, spec: &Arc<ExportSpec>, why: String) {
        if self.problems.get(spec) != Some(&why) {
            tracing::warn!(collector = ?spec.collector, "spans are not exported: {why}");
            self.problems.insert(spec.clone(), why);
        }
    }

    /// Makes the exporters match the collectors `runtime` names: new ones started (on the
    /// current tokio runtime), moved ones restarted, unnamed ones stopped after sending what
    /// they hold; `spans` sees the result at once.
    pub async fn sync(&mut self, runtime: &Runtime, spans: &Spans) {
        self.sync_specs(runtime, specs(runtime), spans).await;
    }

    /// As [`Exporters::sync`], for the collectors of `wanted` (those of connection managers
    /// not in `runtime`'s listeners, as tests serve them).
    pub async fn sync_specs(
        &mut self,
        runtime: &Runtime,
        wanted: Vec<Arc<ExportSpec>>,
        spans: &Spans,
    ) {
        // What is said of collectors no longer named is forgotten: the map stays bounded.
        self.problems.retain(|spec, _| wanted.contains(spec));
        let mut queues = HashMap::new();
        let mut kept = HashMap::new();
        for spec in wanted {
            let current = self.live.get(&spec).map(|l| l.endpoint.clone());
            let endpoint = match resolve(runtime, &spec, current.as_deref(), &self.env).await {
                Ok(endpoint) => endpoint,
                Err(why) => {
                    self.problem(&spec, why);
                    continue;
                }
            };
            if let Some(live) = self.live.remove(&spec).filter(|l| l.endpoint == endpoint) {
                queues.insert(spec.clone(), live.exporter.queue());
                kept.insert(spec, live);
                continue;
            }
            let started = self
                .settings(&spec, &endpoint)
                .and_then(|settings| Exporter::start(&settings).map_err(|e| e.to_string()));
            match started {
                Ok(exporter) => {
                    tracing::info!(collector = ?spec.collector, %endpoint, "exporting spans");
                    self.problems.remove(&spec);
                    spans.counts.live.rcu(|live| {
                        let mut live = (**live).clone();
                        live.push(exporter.stats());
                        live
                    });
                    queues.insert(spec.clone(), exporter.queue());
                    kept.insert(spec, Live { endpoint, exporter });
                }
                Err(why) => self.problem(&spec, why),
            }
        }
        spans.queues.store(Arc::new(queues));
        let gone = std::mem::replace(&mut self.live, kept);
        for (_, live) in gone {
            let counts = spans.counts.clone();
            tokio::spawn(async move {
                let stats = live.exporter.stats();
                let report = live.exporter.shutdown(RETIRE_DEADLINE).await;
                counts.retire(&stats, report.dropped, report.exported);
            });
        }
    }

    /// Stops every exporter, sending what they hold within `deadline`.
    pub async fn shutdown(self, spans: &Spans, deadline: Duration) {
        spans.queues.store(Arc::default());
        let stopping = self.live.into_values().map(|live| {
            let counts = spans.counts.clone();
            async move {
                let stats = live.exporter.stats();
                let report = live.exporter.shutdown(deadline).await;
                counts.retire(&stats, report.dropped, report.exported);
                report.flushed
            }
        });
        let flushed = futures::future::join_all(stopping).await;
        if flushed.iter().any(|f| !f) {
            tracing::warn!("spans still queued at shutdown were dropped");
        }
    }
}

/// Asks the exporters' task to stop (see [`follow`]).
#[derive(Debug)]
pub struct StopExporters(Option<oneshot::Sender<(Duration, oneshot::Sender<()>)>>);

/// What [`follow`] waits on to stop.
#[derive(Debug)]
pub struct ExportersStopped(oneshot::Receiver<(Duration, oneshot::Sender<()>)>);

/// A pair to stop the exporters' task with.
pub fn stop_channel() -> (StopExporters, ExportersStopped) {
    let (tx, rx) = oneshot::channel();
    (StopExporters(Some(tx)), ExportersStopped(rx))
}

impl StopExporters {
    /// Stops the exporters, which send what they hold within `deadline`; returns when they
    /// have, at once when the task is gone, and by `deadline` (and a little) when it has not
    /// started yet (start-up still waits for the certificate).
    pub async fn stop(mut self, deadline: Duration) {
        let Some(tx) = self.0.take() else { return };
        let (done, finished) = oneshot::channel();
        if tx.send((deadline, done)).is_ok() {
            let _ = tokio::time::timeout(deadline + STOP_GRACE, finished).await;
        }
    }
}

/// Keeps `exporters` matching the configuration in force in `shared`, re-resolving the
/// collectors at each update, until `stop` says to stop (then they send what they hold).
pub async fn follow(
    shared: Arc<crate::proxy::Shared>,
    mut exporters: Exporters,
    stop: ExportersStopped,
) {
    enum Event {
        Changed(bool),
        Stop(Option<(Duration, oneshot::Sender<()>)>),
    }
    let mut updates = shared.updates.subscribe();
    let mut stop = Some(stop.0);
    loop {
        updates.borrow_and_update();
        let runtime = shared.runtime.load_full();
        exporters.sync(&runtime, &shared.spans).await;
        let asked = async {
            match stop.as_mut() {
                Some(rx) => rx.await.ok(),
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            changed = updates.changed() => Event::Changed(changed.is_ok()),
            asked = asked => Event::Stop(asked),
        };
        match event {
            Event::Changed(true) => {}
            Event::Changed(false) => break,
            Event::Stop(Some((deadline, done))) => {
                exporters.shutdown(&shared.spans, deadline).await;
                let _ = done.send(());
                return;
            }
            // Nobody will ask: follow updates until they end.
            Event::Stop(None) => stop = None,
        }
    }
    exporters.shutdown(&shared.spans, RETIRE_DEADLINE).await;
}
