//! A trace as people read it: an indented tree of its spans, children by start time, each line
//! with the service, what was asked (method and path, or the span's name), the status, the
//! duration and a bar placing the span within the whole trace. Pure: a function of the
//! receiver's JSON ([`TraceView`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use mesh_trace::receiver::{SpanView, TraceView};
use serde_json::Value;

/// Cells of the timeline bar.
pub const BAR_WIDTH: usize = 30;
/// The widest the left column (tree, service and span) grows; longer text is cut with `…`.
const MAX_LEFT: usize = 88;
/// Deeper spans are drawn at this depth (the line says how deep they really are).
const MAX_INDENT: usize = 12;

/// Milliseconds as people read them: `0.42 ms`, `12.3 ms`, `1.25 s`.
pub fn duration(nanos: u64) -> String {
    let ms = nanos as f64 / 1e6;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// A Unix time in nanoseconds as RFC 3339 in UTC with milliseconds.
pub fn timestamp(unix_nanos: u64) -> String {
    let seconds = i64::try_from(unix_nanos / 1_000_000_000).unwrap_or(i64::MAX);
    let millis = unix_nanos % 1_000_000_000 / 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix_nanos.to_string(),
    }
}

/// The first of `keys` among the span's attributes, as text (numbers and booleans written out).
fn attribute(span: &SpanView, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| match span.attributes.get(*key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// `http://details:9080/details/0` without its scheme.
fn without_scheme(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

/// What the span did, in a few words: `GET /productpage` (a server's path),
/// `GET details:9080/details/0` (a client says whom it called), else the span's name.
pub fn label(span: &SpanView) -> String {
    let method = attribute(span, &["http.request.method", "http.method"]);
    let url = attribute(span, &["url.full", "http.url"]);
    let path = attribute(span, &["url.path", "http.target"]);
    let target = match (span.kind.as_str(), url, path) {
        ("CLIENT", Some(url), _) => Some(without_scheme(&url).to_owned()),
        (_, _, Some(path)) => Some(path),
        (_, Some(url), None) => {
            let rest = without_scheme(&url);
            Some(rest.find('/').map_or(rest, |i| &rest[i..]).to_owned())
        }
        _ => None,
    };
    match (method, target) {
        (Some(method), Some(target)) => format!("{method} {target}"),
        _ if span.name.is_empty() => "(no name)".to_owned(),
        _ => span.name.clone(),
    }
}

/// The span's outcome: the HTTP (or gRPC) status with Envoy's response flags when there are
/// any (`503 UF`), else `ERROR` for a span that says it failed, else `-`.
pub fn status(span: &SpanView) -> String {
    let code = attribute(
        span,
        &[
            "http.response.status_code",
            "http.status_code",
            "rpc.grpc.status_code",
            "grpc.status_code",
        ],
    );
    let flags = attribute(span, &["response_flags"]).filter(|f| f != "-");
    match (code, flags) {
        (Some(code), Some(flags)) => format!("{code} {flags}"),
        (Some(code), None) => code,
        (None, Some(flags)) => flags,
        (None, None) if span.status == "ERROR" => "ERROR".to_owned(),
        (None, None) => "-".to_owned(),
    }
}

/// `server`, `client`, ... (OTLP's kind, lowercase; empty when unspecified).
fn kind(span: &SpanView) -> String {
    match span.kind.as_str() {
        "UNSPECIFIED" | "" => String::new(),
        other => other.to_lowercase(),
    }
}

/// `[   ████      ]`: where `[start, start + duration)` lies within `[first, last)`.
pub fn bar(first: u64, last: u64, start: u64, duration: u64, width: usize) -> String {
    let total = last.saturating_sub(first);
    let cell = |at: u64, up: bool| -> usize {
        if total == 0 {
            return if up { width } else { 0 };
        }
        let offset = u128::from(at.saturating_sub(first).min(total));
        let scaled = offset * width as u128;
        let total = u128::from(total);
        let cells = if up { scaled.div_ceil(total) } else { scaled / total };
        usize::try_from(cells).unwrap_or(width).min(width)
    };
    let from = cell(start, false).min(width.saturating_sub(1));
    let to = cell(start.saturating_add(duration), true).max(from + 1).min(width);
    format!("[{}{}{}]", " ".repeat(from), "█".repeat(to - from), " ".repeat(width - to))
}

/// How a top-level span came to be at the top.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Top {
    /// It has no parent: the trace began there.
    Root,
    /// Its parent was not received (not sampled there, lost, still to come, or kept out by
    /// the receiver's limit).
    Orphan,
    /// Its parents lead round in a circle (a broken sender); shown so it is not lost.
    Cycle,
}

/// One line of the tree before layout.
struct Line {
    prefix: String,
    left: String,
    kind: String,
    status: String,
    duration: String,
    bar: String,
}

/// Cuts `text` to `width` characters, ending in `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The trace as an indented tree with a header line; the text ends with a newline.
pub fn render(trace: &TraceView) -> String {
    let spans = &trace.spans;
    let mut out = String::new();
    if spans.is_empty() {
        let _ = writeln!(out, "Trace {}: no spans received.", trace.trace_id);
        return out;
    }
    let first = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
    let last = spans
        .iter()
        .map(|s| s.start_unix_nanos.saturating_add(s.duration_nanos))
        .max()
        .unwrap_or(first);
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    // Children of each span by start time (the receiver sorts; sorted again so any input
    // reads the same).
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by(|&a, &b| {
        (spans[a].start_unix_nanos, &spans[a].span_id)
            .cmp(&(spans[b].start_unix_nanos, &spans[b].span_id))
    });
    let mut children: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut tops: Vec<(usize, Top)> = Vec::new();
    for &i in &order {
        match spans[i].parent_span_id.as_deref() {
            Some(parent) if parent == spans[i].span_id => tops.push((i, Top::Cycle)),
            Some(parent) if ids.contains(parent) => children.entry(parent).or_default().push(i),
            Some(_) => tops.push((i, Top::Orphan)),
            None => tops.push((i, Top::Root)),
        }
    }
    let orphans = tops.iter().filter(|(_, how)| *how == Top::Orphan).count();
    let mut lines = Vec::new();
    let mut shown = vec![false; spans.len()];
    let walk = |top: usize, how: Top, lines: &mut Vec<Line>, shown: &mut [bool]| {
        // (span, depth, the tree drawing before it, whether it is its parent's last child)
        let mut stack = vec![(top, 0usize, String::new(), true)];
        while let Some((i, depth, above, is_last)) = stack.pop() {
            if shown[i] {
                continue;
            }
            shown[i] = true;
            let span = &spans[i];
            let prefix = match depth {
                0 => String::new(),
                _ => format!("{above}{}", if is_last { "└─ " } else { "├─ " }),
            };
            let mut left = match depth {
                d if d > MAX_INDENT => format!("[depth {d}] "),
                _ => String::new(),
            };
            let _ = write!(left, "{}  {}", or_unknown(&span.service), label(span));
            match (depth, how) {
                (0, Top::Orphan) => {
                    let parent = span.parent_span_id.as_deref().unwrap_or_default();
                    let _ = write!(left, "  (parent {parent} not received)");
                }
                (0, Top::Cycle) => left.push_str("  (its parents form a cycle)"),
                _ => {}
            }
            lines.push(Line {
                prefix,
                left,
                kind: kind(span),
                status: status(span),
                duration: duration(span.duration_nanos),
                bar: bar(first, last, span.start_unix_nanos, span.duration_nanos, BAR_WIDTH),
            });
            let below = match depth {
                0 => String::new(),
                d if d > MAX_INDENT => above.clone(),
                _ => format!("{above}{}", if is_last { "   " } else { "│  " }),
            };
            let kids = children.get(span.span_id.as_str()).map(Vec::as_slice).unwrap_or_default();
            // Pushed in reverse so the earliest child comes off the stack first.
            for (n, &child) in kids.iter().enumerate().rev() {
                stack.push((child, depth + 1, below.clone(), n + 1 == kids.len()));
            }
        }
    };
    for (top, how) in tops {
        walk(top, how, &mut lines, &mut shown);
    }
    for &i in &order {
        if !shown[i] {
            walk(i, Top::Cycle, &mut lines, &mut shown);
        }
    }

    let mut header = format!(
        "Trace {} · {} · {} · {} span{}",
        trace.trace_id,
        timestamp(first),
        duration(last - first),
        spans.len(),
        if spans.len() == 1 { "" } else { "s" }
    );
    if trace.dropped_spans > 0 {
        let _ = write!(header, " ({} more not kept by the receiver)", trace.dropped_spans);
    }
    if orphans > 0 {
        let _ = write!(
            header,
            " · {orphans} whose parent was not received (not sampled there, or not sent yet)"
        );
    }
    let _ = writeln!(out, "{header}");
    let width = |f: fn(&Line) -> usize| lines.iter().map(f).max().unwrap_or(0);
    let left_width =
        width(|l| l.prefix.chars().count() + l.left.chars().count()).clamp(20, MAX_LEFT);
    let kind_width = width(|l| l.kind.chars().count());
    let status_width = width(|l| l.status.chars().count());
    let duration_width = width(|l| l.duration.chars().count());
    for line in &lines {
        let room = left_width.saturating_sub(line.prefix.chars().count());
        let left = format!("{}{}", line.prefix, fit(&line.left, room));
        let _ = writeln!(
            out,
            "{left:<left_width$}  {:<kind_width$}  {:<status_width$}  {:>duration_width$}  {}",
            line.kind, line.status, line.duration, line.bar
        );
    }
    out
}

fn or_unknown(service: &str) -> &str {
    if service.is_empty() { "unknown" } else { service }
}

/// Several traces, the latest first, a blank line between them.
pub fn render_all(traces: &[TraceView]) -> String {
    traces.iter().map(render).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn span(id: &str, parent: Option<&str>, start: u64, duration: u64) -> SpanView {
        SpanView {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            name: format!("span {id}"),
            kind: "SERVER".into(),
            service: "svc.default".into(),
            start_unix_nanos: start,
            duration_nanos: duration,
            attributes: BTreeMap::new(),
            status: "UNSET".into(),
            status_message: String::new(),
        }
    }

    fn trace(spans: Vec<SpanView>) -> TraceView {
        TraceView { trace_id: "0af7651916cd43dd8448eb211c80319c".into(), spans, dropped_spans: 0 }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(420_000), "0.42 ms");
        assert_eq!(duration(12_340_000), "12.3 ms");
        assert_eq!(duration(1_250_000_000), "1.25 s");
        assert_eq!(timestamp(1_714_557_600_123_456_789), "2024-05-01T10:00:00.123Z");
    }

    #[test]
    fn bars_place_a_span_in_the_trace() {
        assert_eq!(bar(0, 100, 0, 100, 10), "[██████████]");
        assert_eq!(bar(0, 100, 50, 10, 10), "[     █    ]");
        // However short, a span shows; at the very end it takes the last cell.
        assert_eq!(bar(0, 100, 0, 0, 10), "[█         ]");
        assert_eq!(bar(0, 100, 100, 0, 10), "[         █]");
        // A trace of one instant fills the bar.
        assert_eq!(bar(5, 5, 5, 0, 4), "[████]");
    }

    #[test]
    fn labels_say_what_was_asked() {
        let mut server = span("a", None, 0, 1);
        assert_eq!(label(&server), "span a");
        server.attributes.insert("http.method".into(), "GET".into());
        server.attributes.insert("http.url".into(), "http://details:9080/details/0?x=1".into());
        assert_eq!(label(&server), "GET /details/0?x=1");
        let mut client = server.clone();
        client.kind = "CLIENT".into();
        assert_eq!(label(&client), "GET details:9080/details/0?x=1");
        server.attributes.insert("url.path".into(), "/details/0".into());
        assert_eq!(label(&server), "GET /details/0");
        server.attributes.insert("http.status_code".into(), 503.into());
        server.attributes.insert("response_flags".into(), "UF".into());
        assert_eq!(status(&server), "503 UF");
        let mut failed = span("b", None, 0, 1);
        failed.status = "ERROR".into();
        assert_eq!(status(&failed), "ERROR");
        assert_eq!(status(&span("c", None, 0, 1)), "-");
    }

    #[test]
    fn a_cycle_and_a_self_parent_are_shown_not_lost() {
        let text = render(&trace(vec![
            span("a", Some("b"), 0, 10),
            span("b", Some("a"), 1, 5),
            span("c", Some("c"), 2, 1),
        ]));
        assert!(text.contains("span a  (its parents form a cycle)"), "{text}");
        assert!(text.contains("└─ svc.default  span b"), "{text}");
        assert!(text.contains("span c  (its parents form a cycle)"), "{text}");
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    #[test]
    fn a_deep_chain_stops_indenting() {
        let mut spans = vec![span("0", None, 0, 100)];
        for i in 1..60u64 {
            spans.push(span(&i.to_string(), Some(&(i - 1).to_string()), i, 1));
        }
        let text = render(&trace(spans));
        assert_eq!(text.lines().count(), 61);
        assert!(text.contains("└─ [depth 59] svc.default  span 59"), "{text}");
        let widest = text.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(widest < 200, "{widest}");
    }

    #[test]
    fn an_empty_trace_says_so() {
        assert_eq!(
            render(&trace(Vec::new())),
            "Trace 0af7651916cd43dd8448eb211c80319c: no spans received.\n"
        );
    }
}
