//! The exporter's dropped spans as a Prometheus counter, read from its [`Stats`] at each scrape
//! (registered before the exporter exists: the binaries build their registries first).

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;

use super::Stats;

/// A counter of the spans an exporter dropped (`<name>_total`); 0 until [`Self::follow`] names
/// the exporter. Clones share it: register one, keep one.
#[derive(Clone, Debug)]
pub struct DroppedSpans {
    name: &'static str,
    stats: Arc<OnceLock<Arc<Stats>>>,
}

impl DroppedSpans {
    /// A counter named `name` (Prometheus adds `_total`).
    pub fn new(name: &'static str) -> Self {
        Self { name, stats: Arc::default() }
    }

    /// Counts the spans `stats` drops from now on (the first exporter named wins).
    pub fn follow(&self, stats: Arc<Stats>) {
        let _ = self.stats.set(stats);
    }
}

impl Collector for DroppedSpans {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(self.stats.get().map_or(0, |s| s.dropped()));
        let metric = encoder.encode_descriptor(
            self.name,
            "Spans that never reached the OTLP collector (queue full, export failed or timed out)",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn the_counter_reads_the_exporters_count_at_each_scrape() {
        let metric = DroppedSpans::new("pilot_spans_dropped");
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(metric.clone()));
        let scrape = || {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        assert!(scrape().contains("\npilot_spans_dropped_total 0\n"), "{}", scrape());
        let stats = Arc::new(Stats::default());
        metric.follow(stats.clone());
        stats.dropped.fetch_add(7, Ordering::Relaxed);
        assert!(scrape().contains("\npilot_spans_dropped_total 7\n"), "{}", scrape());
    }
}
