//! Drawing: one module per view, each a function of the [`App`] and the area it gets. Nothing
//! here decides anything; the views only lay out what the app holds.

pub mod config;
pub mod graph;
pub mod help;
pub mod live;
pub mod proxies;
pub mod services;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, HighlightSpacing, Row, Table, TableState};

use super::app::{App, View};

/// Draws the whole screen: tabs, the current view, the status line and the help line.
pub fn render(frame: &mut Frame, app: &App) {
    let [tabs, body, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    help::tabs(frame, tabs, app);
    match app.view {
        View::Services => services::render(frame, body, app),
        View::Graph => graph::render(frame, body, app),
        View::Proxies => proxies::render(frame, body, app),
        View::Live => live::render(frame, body, app),
        View::Config => config::render(frame, body, app),
    }
    help::status(frame, status, app);
    help::keys(frame, keys, app);
}

/// A table with a header and a visible selection marker (so it shows in plain text too).
fn table<'a>(
    header: &[&'a str],
    rows: Vec<Row<'a>>,
    widths: Vec<Constraint>,
    block: Block<'a>,
) -> Table<'a> {
    Table::new(rows, widths)
        .header(Row::new(header.to_vec()).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ")
        .highlight_spacing(HighlightSpacing::Always)
}

/// A table state selecting `selected` when there are rows.
fn selection(selected: usize, len: usize) -> TableState {
    TableState::default().with_selected(len.checked_sub(1).map(|last| selected.min(last)))
}

/// `12.3` (requests or connections per second), `-` when unknown.
pub fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// A share as a percentage: `98.0%`, `-` when unknown.
pub fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

/// Milliseconds: `0.75ms`, `16.3ms`, `250ms`, `1.50s`; `-` when unknown.
pub fn millis(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if v < 10.0 => format!("{v:.2}ms"),
        Some(v) if v < 100.0 => format!("{v:.1}ms"),
        Some(v) if v < 1000.0 => format!("{v:.0}ms"),
        Some(v) => format!("{:.2}s", v / 1000.0),
    }
}

/// An optional text, `-` when absent.
pub fn or_dash(value: Option<&str>) -> &str {
    value.filter(|v| !v.is_empty()).unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_shown() {
        assert_eq!(rate(Some(10.25)), "10.2");
        assert_eq!(rate(None), "-");
        assert_eq!(percent(Some(100.0 / 102.0)), "98.0%");
        assert_eq!(millis(Some(0.75)), "0.75ms");
        assert_eq!(millis(Some(16.3)), "16.3ms");
        assert_eq!(millis(Some(250.0)), "250ms");
        assert_eq!(millis(Some(1500.0)), "1.50s");
    }
}
