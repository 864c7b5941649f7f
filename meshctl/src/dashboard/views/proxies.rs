//! The Proxies view: per proxy its xDS state per type, the config version it accepted, when
//! its certificate expires and how long it has run; under it, the selected proxy's details
//! (node id, workload, rejections, what could not be read).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::{Block, Paragraph, Row, Wrap};

use super::super::app::{App, View};
use super::super::status::{ProxyRow, short_duration};
use super::{or_dash, selection, table};

const HEADER: [&str; 9] =
    ["NAME", "NAMESPACE", "CDS", "LDS", "EDS", "RDS", "VERSION", "CERT EXPIRY", "UPTIME"];

fn row(p: &ProxyRow) -> Row<'static> {
    let mut cells = vec![p.id.pod.clone(), p.id.namespace.clone()];
    for i in 0..4 {
        let state = p.sync.as_ref().and_then(|s| s.states[i].as_deref());
        cells.push(or_dash(state).to_owned());
    }
    cells.push(or_dash(p.sync.as_ref().and_then(|s| s.acked_version.as_deref())).to_owned());
    cells.push(p.cert_expiry.as_ref().map_or_else(
        |_| "-".to_owned(),
        |d| {
            if d.is_zero() { "EXPIRED".to_owned() } else { short_duration(*d) }
        },
    ));
    cells.push(p.uptime.as_ref().map_or_else(|_| "-".to_owned(), |d| short_duration(*d)));
    Row::new(cells)
}

/// The details of one proxy, a line each.
pub fn details(p: &ProxyRow, workload: Option<&(String, String)>) -> Vec<String> {
    let mut lines = vec![format!(
        "node: {}",
        p.id.node_id.as_deref().unwrap_or("- (no xDS stream to the pilot)")
    )];
    if let Some((name, ns)) = workload {
        lines.push(format!("workload: {name}.{ns}"));
    }
    if let Some(sync) = &p.sync {
        lines.extend(sync.nacks.iter().map(|n| format!("rejected {n}")));
    }
    if let Some(err) = &p.metrics_error {
        lines.push(format!("metrics: {err}"));
    }
    if let Err(err) = &p.uptime {
        lines.push(format!("server_info: {err}"));
    }
    if let Err(err) = &p.cert_expiry {
        lines.push(format!("certs: {err}"));
    }
    lines
}

/// Draws the view.
pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let rows = app.proxy_rows();
    let [list, pane] = Layout::vertical([Constraint::Min(3), Constraint::Length(7)]).areas(area);
    let widths = vec![
        Constraint::Fill(1),
        Constraint::Length(12),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(11),
        Constraint::Length(6),
    ];
    let title = format!(" Proxies ({}) · Enter or l: live requests ", rows.len());
    let selected = app.selected(View::Proxies);
    let table = table(
        &HEADER,
        rows.iter().map(|p| row(p)).collect(),
        widths,
        Block::bordered().title(title),
    );
    frame.render_stateful_widget(table, list, &mut selection(selected, rows.len()));
    let text = match rows.get(selected) {
        Some(p) => {
            let key = (p.id.pod.clone(), p.id.namespace.clone());
            details(p, app.traffic.proxy_workloads.get(&key)).join("\n")
        }
        None => String::new(),
    };
    let title =
        rows.get(selected).map_or(String::new(), |p| format!(" {}.{} ", p.id.pod, p.id.namespace));
    frame.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: false }).block(Block::bordered().title(title)),
        pane,
    );
}
