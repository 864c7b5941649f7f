//! The Live view: the requests one proxy sees, newest first, from its admin's tap stream
//! (open only while this view shows); under them, the selected request's details, or its
//! trace's tree when `t` opened it.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::{Block, Paragraph, Row, Wrap};

use super::super::app::{App, View};
use super::super::tap::TapLine;
use super::{or_dash, selection, table};

const HEADER: [&str; 10] =
    ["TIME", "DIR", "METHOD", "PATH", "STATUS", "LATENCY", "UPSTREAM", "FLAGS", "MTLS", "TRACE"];

/// How many characters of a trace id the table shows (the details show it whole).
const SHORT_TRACE: usize = 8;

/// `03:04:05.678` of an RFC 3339 time; other text as it is.
fn clock(time: Option<&str>) -> String {
    match time.and_then(|t| t.split_once('T')) {
        Some((_, clock)) => clock.trim_end_matches('Z').chars().take(12).collect(),
        None => or_dash(time).to_owned(),
    }
}

fn direction(d: Option<&str>) -> &str {
    match d {
        Some("inbound") => "in",
        Some("outbound") => "out",
        other => or_dash(other),
    }
}

fn row(l: &TapLine) -> Row<'static> {
    let latency = l.duration_ms.as_deref().map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"));
    Row::new(vec![
        clock(l.time.as_deref()),
        direction(l.direction.as_deref()).to_owned(),
        // A connection has no method: say what it is instead.
        or_dash(l.method.as_deref().or(l.protocol.as_deref().filter(|p| *p == "TCP"))).to_owned(),
        or_dash(l.path.as_deref()).to_owned(),
        or_dash(l.status.as_deref()).to_owned(),
        latency,
        or_dash(l.upstream_host.as_deref()).to_owned(),
        or_dash(l.response_flags.as_deref()).to_owned(),
        or_dash(l.mtls.as_deref()).to_owned(),
        l.trace_id
            .as_deref()
            .map_or_else(|| "-".to_owned(), |t| t.chars().take(SHORT_TRACE).collect()),
    ])
}

/// The details of one request, a line each.
pub fn details(l: &TapLine) -> Vec<String> {
    let target =
        format!("{}{}", l.authority.as_deref().unwrap_or(""), l.path.as_deref().unwrap_or(""));
    let request: Vec<&str> = [l.method.as_deref(), Some(target.as_str()), l.protocol.as_deref()]
        .into_iter()
        .flatten()
        .filter(|part| !part.is_empty())
        .collect();
    vec![
        if request.is_empty() { "-".to_owned() } else { request.join(" ") },
        format!(
            "{} ──▶ {}",
            or_dash(l.source_workload.as_deref()),
            or_dash(l.destination_workload.as_deref())
        ),
        format!(
            "upstream: {} {}",
            or_dash(l.upstream_cluster.as_deref()),
            or_dash(l.upstream_host.as_deref())
        ),
        match l.trace_id.as_deref() {
            Some(id) => format!("trace: {id} (t shows it)"),
            None if l.protocol.as_deref() == Some("TCP") => {
                "trace: - (connections are not traced)".to_owned()
            }
            None => "trace: none (tracing off or not sampled; t says how to turn it on)".to_owned(),
        },
    ]
}

/// Draws the view.
pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let Some(proxy) = &app.live else {
        let text = "No proxy watched: select one in Proxies (or a service in Services) and press l or Enter.";
        frame.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(" Live ")),
            area,
        );
        return;
    };
    let lines = app.live_lines();
    let pane_height = match &app.trace {
        Some(_) => Constraint::Percentage(60),
        None => Constraint::Length(6),
    };
    let [list, pane] = Layout::vertical([Constraint::Min(3), pane_height]).areas(area);
    let mut title = format!(" Live: {}.{} · {} requests", proxy.pod, proxy.namespace, lines.len());
    if app.tap.dropped > 0 {
        title.push_str(&format!(", {} dropped", app.tap.dropped));
    }
    if app.tap.invalid > 0 {
        title.push_str(&format!(", {} unreadable", app.tap.invalid));
    }
    if let Some(ended) = &app.tap.ended {
        title.push_str(&format!(" · stream ended: {ended}"));
    }
    title.push(' ');
    let widths = vec![
        Constraint::Length(12),
        Constraint::Length(3),
        Constraint::Length(6),
        Constraint::Fill(1),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(18),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(SHORT_TRACE as u16),
    ];
    let selected = app.selected(View::Live);
    let table = table(
        &HEADER,
        lines.iter().map(|l| row(l)).collect(),
        widths,
        Block::bordered().title(title),
    );
    frame.render_stateful_widget(table, list, &mut selection(selected, lines.len()));
    if let Some(panel) = &app.trace {
        let title = match &panel.trace_id {
            Some(id) => format!(" Trace {id} · t on another request shows its own · Esc closes "),
            None => " Trace · Esc closes ".to_owned(),
        };
        // The tree's lines are wide: cut at the right, never wrapped into each other.
        frame.render_widget(
            Paragraph::new(panel.lines.join("\n")).block(Block::bordered().title(title)),
            pane,
        );
        return;
    }
    let text = lines.get(selected).map(|l| details(l).join("\n")).unwrap_or_default();
    frame.render_widget(Paragraph::new(text).block(Block::bordered()), pane);
}
