//! The Services view: per service and version, the request rate, success rate, latency
//! percentiles and mTLS share; drilled into a service, its versions and the pods serving them.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::{Block, Row};

use super::super::app::{App, View};
use super::super::model::ServiceRow;
use super::{millis, percent, rate, selection, table};

const HEADER: [&str; 8] = ["SERVICE", "VERSION", "RPS", "SUCCESS", "P50", "P90", "P99", "MTLS"];

fn widths() -> Vec<Constraint> {
    let mut widths = vec![Constraint::Fill(1), Constraint::Length(10)];
    widths.extend([Constraint::Length(8); 6]);
    widths
}

fn row(r: &ServiceRow) -> Row<'static> {
    Row::new(vec![
        r.service.display(),
        r.version.clone(),
        rate(r.rps),
        percent(r.success),
        millis(r.latency[0]),
        millis(r.latency[1]),
        millis(r.latency[2]),
        percent(r.mtls),
    ])
}

/// Draws the view.
pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let rows = app.services();
    let Some(service) = &app.drill else {
        let title = match app.scrapes {
            0 => " Services ".to_owned(),
            1 => format!(" Services ({}) · rates after the next refresh ", rows.len()),
            _ => format!(" Services ({}) ", rows.len()),
        };
        let mut state = selection(app.selected(View::Services), rows.len());
        let table = table(
            &HEADER,
            rows.iter().map(|r| row(r)).collect(),
            widths(),
            Block::bordered().title(title),
        );
        frame.render_stateful_widget(table, area, &mut state);
        return;
    };
    let height = u16::try_from(rows.len()).unwrap_or(u16::MAX).saturating_add(3);
    let [versions, pods] =
        Layout::vertical([Constraint::Length(height), Constraint::Min(0)]).areas(area);
    let title = format!(" {} (Esc: all services, Tab: its config) ", service.display());
    let versions_table = table(
        &HEADER,
        rows.iter().map(|r| row(r)).collect(),
        widths(),
        Block::bordered().title(title),
    );
    frame.render_stateful_widget(versions_table, versions, &mut selection(0, 0));
    let list = app.drilled_pods();
    let pod_rows = list
        .iter()
        .map(|(p, workload)| {
            Row::new(vec![p.id.pod.clone(), p.id.namespace.clone(), workload.clone()])
        })
        .collect();
    let widths = vec![Constraint::Fill(1), Constraint::Length(16), Constraint::Fill(1)];
    let title = format!(" Pods ({}) · Enter or l: live requests ", list.len());
    let pods_table =
        table(&["POD", "NAMESPACE", "WORKLOAD"], pod_rows, widths, Block::bordered().title(title));
    frame.render_stateful_widget(
        pods_table,
        pods,
        &mut selection(app.selected(View::Services), list.len()),
    );
}
