//! The Graph view: who calls whom. Workloads in columns by how many hops they are from the
//! entry points (callers nobody calls), when that fits the width, and under it every edge
//! with its rate and error share.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row};

use super::super::app::{App, View};
use super::super::model::{Edge, columns};
use super::{percent, rate, selection, table};

const GAP: &str = " ──▶ ";

/// The columns as text lines (a header per column, then its nodes), or `None` when they do
/// not fit `width`.
pub fn drawing(edges: &[Edge], home: &str, width: usize) -> Option<Vec<String>> {
    let columns = columns(edges);
    if columns.is_empty() {
        return Some(Vec::new());
    }
    let headers: Vec<String> = (0..columns.len())
        .map(|d| match d {
            0 => "entry".to_owned(),
            1 => "1 hop".to_owned(),
            d => format!("{d} hops"),
        })
        .collect();
    let labels: Vec<Vec<String>> = columns
        .iter()
        .map(|c| c.iter().map(|n| format!("[{}]", n.label(home))).collect())
        .collect();
    let widths: Vec<usize> = labels
        .iter()
        .zip(&headers)
        .map(|(c, h)| {
            c.iter().map(|l| l.chars().count()).chain([h.chars().count()]).max().unwrap_or(0)
        })
        .collect();
    let gap = GAP.chars().count();
    let total = widths.iter().sum::<usize>() + gap * (widths.len() - 1);
    if total > width {
        return None;
    }
    let height = labels.iter().map(Vec::len).max().unwrap_or(0);
    let mut lines = Vec::with_capacity(height + 1);
    let line = |cells: Vec<&str>, sep: &str| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join(sep).trim_end().to_owned()
    };
    lines.push(line(headers.iter().map(String::as_str).collect(), GAP));
    for row in 0..height {
        let cells = labels.iter().map(|c| c.get(row).map_or("", String::as_str)).collect();
        lines.push(line(cells, &" ".repeat(gap)));
    }
    Some(lines)
}

/// Draws the view.
pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let edges = app.edges();
    let home = app.home();
    let owned: Vec<Edge> = edges.iter().map(|e| (*e).clone()).collect();
    let inner_width = usize::from(area.width.saturating_sub(2));
    let drawn = drawing(&owned, home, inner_width);
    let picture =
        drawn.clone().unwrap_or_else(|| vec!["(too wide to draw: see the edges)".to_owned()]);
    // The picture takes at most half the height; the edges list gets the rest.
    let wanted = u16::try_from(picture.len()).unwrap_or(u16::MAX).saturating_add(2);
    let height = wanted.min(area.height / 2).max(3);
    let [top, bottom] =
        Layout::vertical([Constraint::Length(height), Constraint::Min(0)]).areas(area);
    let text: Vec<Line> = picture.into_iter().map(Line::from).collect();
    frame.render_widget(Paragraph::new(text).block(Block::bordered().title(" Graph ")), top);
    let rows = edges
        .iter()
        .map(|e| {
            let (unit, errors) = if e.tcp {
                ("conn/s", "-".to_owned())
            } else {
                (
                    "rps",
                    e.errors
                        .map_or_else(|| "-".to_owned(), |_| format!("{} err", percent(e.errors))),
                )
            };
            Row::new(vec![
                e.from.label(home),
                "──▶".to_owned(),
                e.to.label(home),
                format!("{} {unit}", rate(e.rate)),
                errors,
            ])
        })
        .collect();
    let widths = vec![
        Constraint::Fill(1),
        Constraint::Length(3),
        Constraint::Fill(1),
        Constraint::Length(12),
        Constraint::Length(10),
    ];
    let title = format!(" Edges ({}) · Enter: the called service ", edges.len());
    let table =
        table(&["FROM", "", "TO", "RATE", "ERRORS"], rows, widths, Block::bordered().title(title));
    frame.render_stateful_widget(
        table,
        bottom,
        &mut selection(app.selected(View::Graph), edges.len()),
    );
}
