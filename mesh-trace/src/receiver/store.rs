//! The traces a receiver keeps: the last ones to receive a span, bounded in traces, in spans
//! per trace and in spans overall; the least recently updated trace goes first.

use std::collections::{BTreeMap, HashMap};

use super::view::{SpanView, TraceView};
use crate::context::{TraceId, to_hex};

/// How much a receiver keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most traces kept.
    pub max_traces: usize,
    /// The most spans kept of one trace (later ones are counted, not kept).
    pub max_spans_per_trace: usize,
    /// The most spans kept over all traces.
    pub max_spans: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_traces: 200, max_spans_per_trace: 1_000, max_spans: 20_000 }
    }
}

#[derive(Debug)]
struct Entry {
    spans: Vec<SpanView>,
    dropped: u64,
    /// When it last received a span (the store's counter).
    touched: u64,
}

/// The traces kept.
#[derive(Debug, Default)]
pub struct Store {
    limits: Limits,
    traces: HashMap<TraceId, Entry>,
    /// Each trace by when it last received a span.
    recency: BTreeMap<u64, TraceId>,
    clock: u64,
    spans: usize,
}

impl Store {
    /// An empty store keeping at most what `limits` say (each at least 1).
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            max_traces: limits.max_traces.max(1),
            max_spans_per_trace: limits.max_spans_per_trace.max(1),
            max_spans: limits.max_spans.max(1),
        };
        Self { limits, ..Self::default() }
    }

    /// Keeps `span` of `trace_id`; returns whether it was kept (not over the trace's limit).
    pub fn insert(&mut self, trace_id: TraceId, span: SpanView) -> bool {
        self.clock += 1;
        let touched = self.clock;
        if !self.traces.contains_key(&trace_id) {
            while self.traces.len() >= self.limits.max_traces {
                self.evict_oldest();
            }
        }
        let entry = self.traces.entry(trace_id).or_insert_with(|| Entry {
            spans: Vec::new(),
            dropped: 0,
            touched,
        });
        self.recency.remove(&entry.touched);
        entry.touched = touched;
        self.recency.insert(touched, trace_id);
        let kept = entry.spans.len() < self.limits.max_spans_per_trace;
        if kept {
            entry.spans.push(span);
            self.spans += 1;
        } else {
            entry.dropped += 1;
        }
        // Older traces make room; the one just updated is the newest, so it stays.
        while self.spans > self.limits.max_spans && self.traces.len() > 1 {
            self.evict_oldest();
        }
        kept
    }

    fn evict_oldest(&mut self) {
        if let Some((_, trace_id)) = self.recency.pop_first()
            && let Some(entry) = self.traces.remove(&trace_id)
        {
            self.spans -= entry.spans.len();
        }
    }

    fn view(trace_id: &TraceId, entry: &Entry) -> TraceView {
        let mut spans = entry.spans.clone();
        spans.sort_by(|a, b| {
            (a.start_unix_nanos, &a.span_id).cmp(&(b.start_unix_nanos, &b.span_id))
        });
        TraceView { trace_id: to_hex(trace_id), spans, dropped_spans: entry.dropped }
    }

    /// The spans of `trace_id`, by start time.
    pub fn get(&self, trace_id: &TraceId) -> Option<TraceView> {
        self.traces.get(trace_id).map(|entry| Self::view(trace_id, entry))
    }

    /// The `n` traces that received a span last, the latest first.
    pub fn latest(&self, n: usize) -> Vec<TraceView> {
        self.recency
            .values()
            .rev()
            .take(n)
            .filter_map(|id| self.traces.get(id).map(|entry| Self::view(id, entry)))
            .collect()
    }

    /// The first kept span, in no particular order, for which `predicate` holds.
    pub fn find_span(&self, mut predicate: impl FnMut(&SpanView) -> bool) -> Option<SpanView> {
        self.traces.values().flat_map(|e| e.spans.iter()).find(|s| predicate(s)).cloned()
    }

    /// How many traces are kept.
    pub fn traces(&self) -> usize {
        self.traces.len()
    }

    /// How many spans are kept.
    pub fn spans(&self) -> usize {
        self.spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn span(trace: u8, id: u8, start: u64) -> SpanView {
        SpanView {
            trace_id: to_hex(&[trace; 16]),
            span_id: to_hex(&[id; 8]),
            parent_span_id: None,
            name: format!("span-{id}"),
            kind: "SERVER".to_owned(),
            service: "svc".to_owned(),
            start_unix_nanos: start,
            duration_nanos: 1,
            attributes: BTreeMap::new(),
            status: "UNSET".to_owned(),
            status_message: String::new(),
        }
    }

    fn names(view: &TraceView) -> Vec<&str> {
        view.spans.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn spans_come_back_by_start_time() {
        let mut store = Store::new(Limits::default());
        store.insert([1; 16], span(1, 2, 20));
        store.insert([1; 16], span(1, 1, 10));
        store.insert([1; 16], span(1, 3, 30));
        let view = store.get(&[1; 16]).unwrap();
        assert_eq!(names(&view), ["span-1", "span-2", "span-3"]);
        assert_eq!(view.trace_id, "01010101010101010101010101010101");
        assert_eq!(store.get(&[2; 16]), None);
    }

    #[test]
    fn latest_is_by_the_last_span_received() {
        let mut store = Store::new(Limits::default());
        store.insert([1; 16], span(1, 1, 0));
        store.insert([2; 16], span(2, 1, 0));
        store.insert([1; 16], span(1, 2, 0));
        let ids: Vec<String> = store.latest(5).into_iter().map(|t| t.trace_id).collect();
        assert_eq!(ids, [to_hex(&[1; 16]), to_hex(&[2; 16])]);
        assert_eq!(store.latest(1).len(), 1);
    }

    #[test]
    fn the_least_recently_updated_trace_is_evicted_first() {
        let limits = Limits { max_traces: 2, ..Limits::default() };
        let mut store = Store::new(limits);
        store.insert([1; 16], span(1, 1, 0));
        store.insert([2; 16], span(2, 1, 0));
        store.insert([1; 16], span(1, 2, 0));
        store.insert([3; 16], span(3, 1, 0));
        assert_eq!(store.traces(), 2);
        assert!(store.get(&[2; 16]).is_none());
        assert_eq!(store.get(&[1; 16]).unwrap().spans.len(), 2);
        assert_eq!(store.spans(), 3);
    }

    #[test]
    fn a_trace_keeps_at_most_its_limit_and_counts_the_rest() {
        let limits = Limits { max_spans_per_trace: 2, ..Limits::default() };
        let mut store = Store::new(limits);
        assert!(store.insert([1; 16], span(1, 1, 0)));
        assert!(store.insert([1; 16], span(1, 2, 0)));
        assert!(!store.insert([1; 16], span(1, 3, 0)));
        let view = store.get(&[1; 16]).unwrap();
        assert_eq!((view.spans.len(), view.dropped_spans), (2, 1));
    }

    #[test]
    fn the_total_of_spans_is_bounded_by_evicting_older_traces() {
        let limits = Limits { max_spans: 3, ..Limits::default() };
        let mut store = Store::new(limits);
        store.insert([1; 16], span(1, 1, 0));
        store.insert([1; 16], span(1, 2, 0));
        store.insert([2; 16], span(2, 1, 0));
        store.insert([2; 16], span(2, 2, 0));
        assert_eq!(store.spans(), 2);
        assert!(store.get(&[1; 16]).is_none());
        // One trace alone may exceed it only up to its own limit.
        store.insert([2; 16], span(2, 3, 0));
        store.insert([2; 16], span(2, 4, 0));
        assert_eq!(store.traces(), 1);
    }

    #[test]
    fn find_span_looks_through_every_trace() {
        let mut store = Store::new(Limits::default());
        store.insert([1; 16], span(1, 1, 0));
        store.insert([2; 16], span(2, 7, 0));
        assert_eq!(store.find_span(|s| s.name == "span-7").unwrap().trace_id, to_hex(&[2; 16]));
        assert!(store.find_span(|s| s.name == "nope").is_none());
    }
}
