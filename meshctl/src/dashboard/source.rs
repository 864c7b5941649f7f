//! Where the dashboard's data comes from: one trait between the screens and the network. The
//! lead's access code implements it for the local mesh and for clusters; tests implement it
//! with recorded data.

use std::io::BufRead;
use std::time::SystemTime;

/// One proxy of the mesh, as the pilot lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProxyId {
    /// Pod name (`reviews-v2-7d6f`).
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// The pilot's node id for it (`sidecar~10.77.0.11~reviews-v2-7d6f.default~default.svc.cluster.local`),
    /// when known; otherwise the dashboard matches `/debug/syncz` entries by pod and namespace.
    pub node_id: Option<String>,
}

/// What one round of scraping got from one proxy. Each part is the body the proxy answered or
/// why there is none (unreachable, an error status, an endpoint this data plane does not
/// serve): the dashboard shows the reason and goes on.
#[derive(Clone, Debug)]
pub struct ProxyScrape {
    /// Which proxy.
    pub id: ProxyId,
    /// `:15090/stats/prometheus` (Prometheus or OpenMetrics text).
    pub metrics: Result<String, String>,
    /// The admin's `/server_info` (Envoy's JSON).
    pub server_info: Result<String, String>,
    /// The admin's `/certs` (Envoy's JSON).
    pub certs: Result<String, String>,
}

/// A config document for the Config view: where it was read (a file, `kube:<kind>/<ns>/<name>`,
/// whatever tells a user where to fix it) and its YAML or JSON text.
pub type ConfigDoc = (String, String);

/// One round of raw data, as fetched: the dashboard parses everything itself.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// When the round was taken; rates divide by the time between two rounds.
    pub at: SystemTime,
    /// The pilot's `/debug/syncz` JSON.
    pub syncz: Result<String, String>,
    /// Every proxy the pilot knows of, in any order.
    pub proxies: Vec<ProxyScrape>,
    /// The mesh's Istio objects (VirtualServices, DestinationRules, ...).
    pub config: Result<Vec<ConfigDoc>, String>,
}

/// Where the dashboard's data comes from (the lead implements it for the local mesh and
/// clusters; tests implement it with recorded data). Both methods are called from background
/// threads and may block; they should give up after a few seconds rather than hang.
pub trait Source: Send + Sync + 'static {
    /// One round of raw data: the pilot's `/debug/syncz`, the list of proxies and, per proxy,
    /// its metrics, `/server_info` and `/certs`, plus the mesh's config documents.
    fn scrape(&self) -> Scrape;

    /// Opens the live request stream (newline-delimited JSON) of one proxy's admin `/tap`.
    /// The dashboard reads it only while the Live view shows that proxy and drops it after;
    /// a read that never returns keeps a thread until the next line, so the stream should
    /// time out or send keep-alive lines.
    fn tap(&self, proxy: &ProxyId) -> Result<Box<dyn BufRead + Send>, String>;

    /// The JSON of trace `trace_id` (`meshctl trace --id ID -o json`), from the mesh's trace
    /// collector; an error says why there is none (an error naming `answered 404` when it was
    /// not received yet). Called from a background thread while the Live view's trace panel
    /// shows it.
    fn trace(&self, trace_id: &str) -> Result<String, String> {
        Err(format!("this dashboard reads no traces (trace {trace_id})"))
    }
}
