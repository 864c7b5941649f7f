//! What keeps the metrics' label sets bounded whatever the network sends: the destination
//! service inbound is the one the pilot named, never the request's Host; values from outside
//! the proxy are checked against what they can be (gRPC statuses are 0–16, peer metadata is
//! short printable ASCII); and every family fed by traffic holds at most [`MAX_SERIES`] series,
//! the observations of further label sets counted per family in
//! `mesh_proxy_metric_series_overflow_total` instead. A client sending random headers must not
//! grow the sidecar's memory without end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};

use super::Reporter;

/// Series one metric family may hold. A sidecar's legitimate label sets are its peers'
/// workloads times a few codes and flags: hundreds, rarely thousands. Ten thousand leaves room
/// for a large mesh and still bounds a family's memory (a request series is four metrics of
/// 25 labels, a few kilobytes).
pub const MAX_SERIES: usize = 10_000;

/// Longest label value taken from outside the proxy, in bytes; longer ones are cut.
/// Kubernetes names and versions fit; a value made up to be long does not grow a series.
pub const MAX_LABEL_BYTES: usize = 128;

/// A label value taken from outside the proxy (a peer's metadata, an authority): cut to
/// [`MAX_LABEL_BYTES`], and `unknown` when a byte is not printable ASCII (a value a scraper
/// would mangle, or one made to look like another).
pub fn label_value(value: &str) -> String {
    if !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return "unknown".to_owned();
    }
    // Printable ASCII: every byte is a character boundary.
    value[..value.len().min(MAX_LABEL_BYTES)].to_owned()
}

/// gRPC's status codes, as label values.
const GRPC_CODES: [&str; 17] =
    ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16"];

/// A `grpc-status` header or trailer as a label: one of gRPC's codes (`0`–`16`), else
/// `unknown`.
pub fn grpc_status_label(value: &[u8]) -> &'static str {
    let digits = !value.is_empty() && value.len() <= 2 && value.iter().all(u8::is_ascii_digit);
    let code = digits.then(|| value.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')));
    code.map_or("unknown", grpc_code_label)
}

/// A gRPC status code as a label: `0`–`16`, else `unknown`.
pub fn grpc_code_label(code: usize) -> &'static str {
    GRPC_CODES.get(code).copied().unwrap_or("unknown")
}

/// The destination service a request or connection is reported under: the one the cluster's
/// metadata names (`named`: the pilot names it on inbound clusters), else the host of an
/// outbound cluster's name (`outbound|80||reviews.default.svc.cluster.local`); past that,
/// outbound only, where the app sent it (`fallback`: the authority, or the original
/// destination), checked as a label. Inbound never takes it from the request: a client names
/// any host it likes there. Empty (reported `unknown`) when nothing names it.
pub fn destination_service(
    reporter: Reporter,
    cluster: &str,
    named: Option<&str>,
    fallback: &str,
) -> String {
    if let Some(named) = named {
        return named.to_owned();
    }
    if let Some(host) = crate::proxy::service_host(cluster) {
        return host;
    }
    match reporter {
        Reporter::Source if !fallback.is_empty() => label_value(fallback),
        _ => String::new(),
    }
}

/// A metric family holding at most a fixed number of series. Lookups of existing series take
/// the family's read lock only; a new label set first reserves a slot, so concurrent misses
/// never pass the bound (two threads making the same series at once reserve two slots: the
/// bound is then reached a series early, never exceeded).
pub struct Bounded<S, M, C = fn() -> M> {
    family: Family<S, M, C>,
    series: Arc<AtomicUsize>,
    max: usize,
    /// Observations of label sets that found the family full.
    overflow: Counter,
}

impl<S, M, C: Clone> Clone for Bounded<S, M, C> {
    fn clone(&self) -> Self {
        Self {
            family: self.family.clone(),
            series: self.series.clone(),
            max: self.max,
            overflow: self.overflow.clone(),
        }
    }
}

impl<S, M, C> std::fmt::Debug for Bounded<S, M, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounded")
            .field("series", &self.series.load(Ordering::Relaxed))
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<S, M, C> Bounded<S, M, C>
where
    S: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    /// `family`, holding at most `max` series; observations past it count in `overflow`.
    pub fn new(family: Family<S, M, C>, max: usize, overflow: Counter) -> Self {
        Self { family, series: Arc::default(), max, overflow }
    }

    /// The series of `labels`, made if the family has room for it; `None` when it has not
    /// (the observation is then counted as overflow).
    pub fn get_or_create(&self, labels: &S) -> Option<M> {
        if let Some(metric) = self.family.get(labels) {
            return Some(metric.clone());
        }
        let reserved = self
            .series
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1));
        if reserved.is_err() {
            self.overflow.inc();
            return None;
        }
        Some(self.family.get_or_create_owned(labels))
    }

    /// The family itself, to register.
    pub fn family(&self) -> &Family<S, M, C> {
        &self.family
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::telemetry::metrics::cached_handles;
    use crate::telemetry::{Metrics, Report, RequestProtocol, Workload};

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    /// A pseudo-random sequence (xorshift), so runs repeat.
    fn randoms() -> impl Iterator<Item = u64> {
        std::iter::successors(Some(0x9e37_79b9_7f4a_7c15_u64), |x| {
            let mut x = *x;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some(x)
        })
    }

    #[test]
    fn random_hosts_and_peer_metadata_leave_the_series_bounded_and_count_the_overflow() {
        // A small bound, so a scrape of the full families stays small.
        const MAX: usize = 300;
        const REQUESTS: usize = 50_000;
        let mut registry = Registry::default();
        let metrics = Metrics::register_bounded(&mut registry, MAX);
        let me = Arc::new(Workload {
            name: "hello".into(),
            namespace: "demo".into(),
            ..Workload::default()
        });
        for (i, r) in randoms().take(REQUESTS).enumerate() {
            // What an attacker controls inbound: the Host, and (with a mesh certificate) the
            // peer metadata it claims.
            let host = format!("h{r:x}.attacker.example:{}", r % 65_536);
            let metadata = format!(
                "name=w{r:x};namespace=n{};app=\u{e9}{i};version={}",
                r % 97,
                "v".repeat(1000)
            );
            let peer = Workload::from_header(&metadata, "spiffe://cluster.local/ns/a/sa/b");
            let mut report =
                Report::new(RequestProtocol::Http, Reporter::Destination, &me, Some(peer));
            report.service =
                destination_service(Reporter::Destination, "inbound|8080||", None, &host);
            report.status = 200;
            report.grpc_status = Some(grpc_status_label(format!("{r}").as_bytes()));
            metrics.request(Reporter::Destination, &report, 1.0, 10, 20);
        }
        let text = scrape(&registry);
        let series = text.lines().filter(|l| l.starts_with("istio_requests_total{")).count();
        assert_eq!(series, MAX, "the family stops at its bound");
        let overflow = |family: &str| {
            let prefix = format!("mesh_proxy_metric_series_overflow_total{{family=\"{family}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_owned)
        };
        let expected = (REQUESTS - MAX).to_string();
        for family in [
            "istio_requests_total",
            "istio_request_duration_milliseconds",
            "istio_request_bytes",
            "istio_response_bytes",
        ] {
            assert_eq!(overflow(family).as_deref(), Some(expected.as_str()), "{family}");
        }
        assert_eq!(overflow("istio_tcp_connections_opened_total").as_deref(), Some("0"));
        assert!(!text.contains("attacker"), "no Host reaches a label inbound");
        assert!(text.contains("destination_service=\"unknown\""));
        assert!(text.contains("source_app=\"unknown\""), "non-ASCII metadata is unknown");
        assert!(text.contains(&format!("source_version=\"{}\"", "v".repeat(MAX_LABEL_BYTES))));
        let (cached, keys) = cached_handles();
        assert!(cached <= MAX, "the per-thread handle cache is bounded too: {cached}");
        assert!(keys <= MAX, "and so are its keys: {keys}");
    }

    #[test]
    fn a_full_family_still_counts_the_series_it_holds() {
        let overflow = Counter::default();
        let family = Bounded::new(Family::<u32, Counter>::default(), 2, overflow.clone());
        for labels in [1, 2, 3, 1, 2, 4] {
            if let Some(counter) = family.get_or_create(&labels) {
                counter.inc();
            }
        }
        assert_eq!(family.family().get(&1).map(|c| c.get()), Some(2));
        assert_eq!(family.family().get(&2).map(|c| c.get()), Some(2));
        assert!(family.family().get(&3).is_none());
        assert_eq!(overflow.get(), 2, "3 and 4 found it full");
    }

    #[test]
    fn label_values_from_outside_are_checked() {
        assert_eq!(label_value("reviews-v1"), "reviews-v1");
        assert_eq!(label_value("a b"), "a b");
        assert_eq!(label_value("caf\u{e9}"), "unknown");
        assert_eq!(label_value("a\nb"), "unknown");
        assert_eq!(label_value("a\"b"), "a\"b", "escaped by the encoder, not made unknown");
        assert_eq!(label_value(&"x".repeat(300)).len(), MAX_LABEL_BYTES);
        let peer = Workload::from_header("name=w\u{1};app=a;version=1.0", "spiffe://p");
        assert_eq!((peer.name.as_str(), peer.app.as_str()), ("unknown", "a"));
        assert_eq!(peer.version, "1.0");
    }

    #[test]
    fn grpc_statuses_are_grpcs_codes_or_unknown() {
        for code in 0..=16 {
            assert_eq!(grpc_status_label(code.to_string().as_bytes()), code.to_string());
        }
        for odd in ["17", "99", "-1", "+1", "", "ok", "1 ", "007", "18446744073709551616"] {
            assert_eq!(grpc_status_label(odd.as_bytes()), "unknown", "{odd:?}");
        }
        assert_eq!(grpc_code_label(16), "16");
        assert_eq!(grpc_code_label(17), "unknown");
    }

    #[test]
    fn the_destination_service_inbound_comes_from_the_cluster_never_the_request() {
        let inbound = |named, fallback| {
            destination_service(Reporter::Destination, "inbound|8080||", named, fallback)
        };
        assert_eq!(
            inbound(Some("hello.demo.svc.cluster.local"), "evil"),
            "hello.demo.svc.cluster.local"
        );
        assert_eq!(inbound(None, "evil.example"), "", "reported as unknown");
        let outbound =
            |cluster, fallback| destination_service(Reporter::Source, cluster, None, fallback);
        let reviews = "outbound|9080||reviews.default.svc.cluster.local";
        assert_eq!(outbound(reviews, "other"), "reviews.default.svc.cluster.local");
        assert_eq!(outbound("PassthroughCluster", "api.example.com"), "api.example.com");
        assert_eq!(outbound("PassthroughCluster", "caf\u{e9}.example"), "unknown");
        assert_eq!(outbound("PassthroughCluster", &"a".repeat(500)).len(), MAX_LABEL_BYTES);
    }
}
