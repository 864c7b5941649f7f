//! The Live view's trace panel (`t` on a request): the request's trace as `meshctl trace`
//! prints it, fetched again while the panel is open (a sidecar sends its spans in batches,
//! seconds after the request), or, for a request without a trace, how to turn tracing on.

use mesh_trace::receiver::TraceView;

/// What the panel says when the request carries no trace id.
pub const HOW_TO_TRACE: [&str; 5] = [
    "This request was not traced: tracing is off, or the request was not sampled.",
    "",
    "Local mesh: `meshctl local down`, then `meshctl local up --tracing` (a collector, named in the mesh config).",
    "A cluster: name an OpenTelemetry collector in MeshConfig's extensionProviders and defaultProviders.tracing,",
    "and raise the sampling with a Telemetry's tracing.randomSamplingPercentage (or send `x-b3-sampled: 1`).",
];

/// The panel's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TracePanel {
    /// The trace shown; `None` when the request had none.
    pub trace_id: Option<String>,
    /// The text shown: the tree, or why there is none (yet).
    pub lines: Vec<String>,
    /// How many answers came in for this trace.
    pub fetched: u64,
}

impl TracePanel {
    /// The panel of a request with `trace_id` (or without one).
    pub fn open(trace_id: Option<String>) -> Self {
        let lines = match &trace_id {
            Some(id) => vec![format!("Fetching trace {id} from the collector…")],
            None => HOW_TO_TRACE.iter().map(|l| (*l).to_owned()).collect(),
        };
        Self { trace_id, lines, fetched: 0 }
    }

    /// Takes in the collector's answer for `trace_id` (its JSON, or why there is none); an
    /// answer for another trace than the one shown is ignored.
    pub fn loaded(&mut self, trace_id: &str, answer: Result<String, String>) {
        if self.trace_id.as_deref() != Some(trace_id) {
            return;
        }
        self.fetched += 1;
        self.lines = match answer {
            Ok(json) => match serde_json::from_str::<TraceView>(&json) {
                Ok(view) => crate::trace::render::render(&view).lines().map(str::to_owned).collect(),
                Err(e) => vec![format!("The collector's answer is not a trace: {e}")],
            },
            // Not received yet: the spans are on their way.
            Err(why) if why.contains("answered 404") => vec![
                format!("Trace {trace_id}: no spans received yet."),
                "Sidecars send spans in batches a few seconds after the request; this panel asks again every refresh.".to_owned(),
            ],
            Err(why) => vec![format!("Cannot read trace {trace_id}: {why}")],
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0af7651916cd43dd8448eb211c80319c";

    #[test]
    fn the_panel_shows_the_tree_once_it_comes() {
        let mut panel = TracePanel::open(Some(ID.to_owned()));
        assert!(panel.lines[0].starts_with("Fetching trace"));
        panel.loaded(ID, Err("the trace receiver :16686/api/traces/x: answered 404: no".into()));
        assert!(panel.lines[0].contains("no spans received yet"), "{:?}", panel.lines);
        let json = format!(
            r#"{{"trace_id": "{ID}", "spans": [{{"trace_id": "{ID}", "span_id": "b000000000000001",
            "name": "n", "kind": "SERVER", "service": "reviews.default", "start_unix_nanos": 0,
            "duration_nanos": 2000000, "attributes": {{"http.method": "GET",
            "url.path": "/reviews/0", "http.status_code": 200}}, "status": "UNSET"}}]}}"#
        );
        // An answer for another trace (the user moved on) changes nothing.
        panel.loaded("1", Ok(json.clone()));
        assert_eq!(panel.fetched, 1);
        panel.loaded(ID, Ok(json));
        assert!(panel.lines[0].starts_with(&format!("Trace {ID}")), "{:?}", panel.lines);
        assert!(panel.lines[1].starts_with("reviews.default  GET /reviews/0  server  200"));
        panel.loaded(ID, Err("connection refused".into()));
        assert_eq!(panel.lines, [format!("Cannot read trace {ID}: connection refused")]);
    }

    #[test]
    fn a_request_without_a_trace_says_how_to_trace() {
        let panel = TracePanel::open(None);
        assert!(panel.lines.iter().any(|l| l.contains("meshctl local up --tracing")));
    }
}
