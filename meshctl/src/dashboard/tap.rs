//! The Live view's data: lines of a proxy's admin `/tap` stream (one JSON object per
//! request), read leniently (unknown fields ignored, missing ones shown as `-`) and kept
//! bounded (the last [`MAX_LINES`]).

use std::collections::VecDeque;
use std::io::BufRead;

use serde_json::Value;

/// How many requests the Live view keeps.
pub const MAX_LINES: usize = 500;
/// A stream line longer than this (bytes) is skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// One request seen by the tap. Every field is text as it will be shown; `None` when the
/// line did not have it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapLine {
    /// Start time.
    pub time: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    /// HTTP method.
    pub method: Option<String>,
    /// Host / `:authority`.
    pub authority: Option<String>,
    /// Path with query.
    pub path: Option<String>,
    /// Response status.
    pub status: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: Option<String>,
    /// Upstream cluster.
    pub upstream_cluster: Option<String>,
    /// Upstream address.
    pub upstream_host: Option<String>,
    /// Envoy's response flags.
    pub response_flags: Option<String>,
    /// Caller's workload.
    pub source_workload: Option<String>,
    /// Callee's workload.
    pub destination_workload: Option<String>,
    /// Whether the request came or went over mesh mTLS.
    pub mtls: Option<String>,
    /// `HTTP/1.1`, `HTTP/2`, `TCP`.
    pub protocol: Option<String>,
    /// The trace the request was recorded in (32 hex characters); `None` when it was not
    /// (tracing off, not sampled, a connection).
    pub trace_id: Option<String>,
}

/// What one stream line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapEvent {
    /// A request.
    Line(Box<TapLine>),
    /// The proxy lost this many lines (its buffer was full).
    Dropped(u64),
    /// A line that is not a JSON object.
    Invalid,
}

/// Reads one stream line.
pub fn parse_line(line: &str) -> TapEvent {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
        return TapEvent::Invalid;
    };
    if let Some(dropped) = map.get("dropped").and_then(Value::as_u64) {
        return TapEvent::Dropped(dropped);
    }
    let field = |key: &str| -> Option<String> {
        match map.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    };
    // A connection has no status; mesh-proxy writes 0 for it.
    let tcp =
        field("kind").as_deref() == Some("tcp") || field("protocol").as_deref() == Some("TCP");
    let status = field("status").filter(|s| !(tcp && s == "0"));
    TapEvent::Line(Box::new(TapLine {
        time: field("time"),
        direction: field("direction"),
        method: field("method"),
        authority: field("authority"),
        path: field("path"),
        status,
        duration_ms: field("duration_ms"),
        upstream_cluster: field("upstream_cluster"),
        upstream_host: field("upstream_host"),
        response_flags: field("response_flags"),
        source_workload: field("source_workload"),
        destination_workload: field("destination_workload"),
        mtls: field("mtls"),
        protocol: field("protocol"),
        trace_id: field("trace_id"),
    }))
}

/// The requests seen so far, newest last, at most [`MAX_LINES`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapLog {
    /// The requests kept.
    pub lines: VecDeque<TapLine>,
    /// Lines lost: by the proxy, by the dashboard falling behind, or too long.
    pub dropped: u64,
    /// Lines that could not be read.
    pub invalid: u64,
    /// Why the stream ended, once it has.
    pub ended: Option<String>,
}

impl TapLog {
    /// Takes one event in, forgetting the oldest request beyond the bound.
    pub fn push(&mut self, event: TapEvent) {
        match event {
            TapEvent::Line(line) => {
                if self.lines.len() == MAX_LINES {
                    self.lines.pop_front();
                }
                self.lines.push_back(*line);
            }
            TapEvent::Dropped(n) => self.dropped = self.dropped.saturating_add(n),
            TapEvent::Invalid => self.invalid += 1,
        }
    }
}

/// Reads the next line of `reader` into `buf` (without the newline), reading at most
/// [`MAX_LINE_BYTES`] of it; a longer line is consumed to its end and reported as `Ok(false)`.
/// `Ok(None)` at the end of the stream.
pub fn read_bounded_line(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(if buf.is_empty() && !too_long { None } else { Some(!too_long) });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long && buf.len() + chunk.len() <= MAX_LINE_BYTES {
            buf.extend_from_slice(chunk);
        } else {
            too_long = true;
            buf.clear();
        }
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(Some(!too_long));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_leniently() {
        let line = r#"{"time": "2024-01-02T03:04:05.678Z", "method": "GET", "path": "/x",
            "status": 200, "duration_ms": 12.5, "mtls": true, "new_field": [1], "path2": null}"#;
        let TapEvent::Line(parsed) = parse_line(&line.replace('\n', " ")) else { panic!() };
        assert_eq!(parsed.method.as_deref(), Some("GET"));
        assert_eq!(parsed.status.as_deref(), Some("200"));
        assert_eq!(parsed.duration_ms.as_deref(), Some("12.5"));
        assert_eq!(parsed.mtls.as_deref(), Some("true"));
        assert_eq!(parsed.upstream_host, None);
        assert_eq!(parsed.trace_id, None);
        let traced = r#"{"method": "GET", "trace_id": "0af7651916cd43dd8448eb211c80319c"}"#;
        let TapEvent::Line(parsed) = parse_line(traced) else { panic!() };
        assert_eq!(parsed.trace_id.as_deref(), Some("0af7651916cd43dd8448eb211c80319c"));
        let untraced = r#"{"method": "GET", "trace_id": ""}"#;
        let TapEvent::Line(parsed) = parse_line(untraced) else { panic!() };
        assert_eq!(parsed.trace_id, None);
        let tcp = r#"{"kind": "tcp", "protocol": "TCP", "method": "", "status": 0}"#;
        let TapEvent::Line(parsed) = parse_line(tcp) else { panic!() };
        assert_eq!((parsed.method, parsed.status), (None, None));
        let no_answer = r#"{"kind": "http", "status": 0, "response_flags": "UF"}"#;
        let TapEvent::Line(parsed) = parse_line(no_answer) else { panic!() };
        assert_eq!(parsed.status.as_deref(), Some("0"));
        assert_eq!(parse_line(r#"{"dropped": 7}"#), TapEvent::Dropped(7));
        assert_eq!(parse_line("[1]"), TapEvent::Invalid);
        assert_eq!(parse_line("{not json"), TapEvent::Invalid);
    }

    #[test]
    fn the_log_keeps_the_last_lines() {
        let mut log = TapLog::default();
        for i in 0..MAX_LINES + 2 {
            let line = TapLine { path: Some(format!("/{i}")), ..TapLine::default() };
            log.push(TapEvent::Line(Box::new(line)));
        }
        log.push(TapEvent::Dropped(3));
        log.push(TapEvent::Invalid);
        assert_eq!(log.lines.len(), MAX_LINES);
        assert_eq!(log.lines[0].path.as_deref(), Some("/2"));
        assert_eq!(log.dropped, 3);
        assert_eq!(log.invalid, 1);
    }

    #[test]
    fn long_lines_are_skipped_whole() {
        let text = format!("a\n{}\nb", "x".repeat(MAX_LINE_BYTES + 1));
        let mut reader = std::io::BufReader::with_capacity(16, text.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_bounded_line(&mut reader, &mut buf).unwrap(), Some(true));
        assert_eq!(buf, b"a");
        assert_eq!(read_bounded_line(&mut reader, &mut buf).unwrap(), Some(false));
        assert_eq!(read_bounded_line(&mut reader, &mut buf).unwrap(), Some(true));
        assert_eq!(buf, b"b");
        assert_eq!(read_bounded_line(&mut reader, &mut buf).unwrap(), None);
    }
}
