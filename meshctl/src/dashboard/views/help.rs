//! The lines around every view: the tabs at the top, the status line (filter, problems) and
//! the help line at the bottom, always visible.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, View};

/// The help line's keys, shown whatever the view.
pub const KEYS: &str = "Tab view  ↑↓/jk move  Enter drill in  / filter  q quit";

/// The tabs, the current one in brackets, and the namespace watched.
pub fn tabs(frame: &mut Frame, area: Rect, app: &App) {
    let mut spans = Vec::new();
    for view in View::ALL {
        if view == app.view {
            spans.push(Span::styled(
                format!("[{}]", view.title()),
                Style::new().add_modifier(Modifier::BOLD),
            ));
        } else {
            spans.push(Span::raw(format!(" {} ", view.title())));
        }
        spans.push(Span::raw(" "));
    }
    let scope = app
        .namespace
        .as_ref()
        .map_or_else(|| "all namespaces".to_owned(), |ns| format!("namespace {ns}"));
    spans.push(Span::raw(format!("  {scope}")));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The filter being typed or applied, and what went wrong in the last scrape.
pub fn status(frame: &mut Frame, area: Rect, app: &App) {
    let mut parts = Vec::new();
    if app.editing {
        parts.push(format!("/{}█", app.filter()));
    } else if !app.filter().is_empty() {
        parts.push(format!("filter: {} (/ edits, Esc clears)", app.filter()));
    }
    if app.scrapes == 0 {
        parts.push("waiting for the first scrape".to_owned());
    }
    parts.extend(app.problems.iter().cloned());
    frame.render_widget(Paragraph::new(parts.join(" · ")), area);
}

/// The help line: the keys, and what `l` and Esc do where they do something.
pub fn keys(frame: &mut Frame, area: Rect, app: &App) {
    let extra = match app.view {
        View::Services if app.drill.is_some() => "  l live  Esc back",
        View::Services | View::Proxies => "  l live",
        View::Live if app.trace.is_some() => "  t trace  Esc close",
        View::Live => "  t trace  Esc back",
        View::Config if app.drill.is_some() => "  Esc back",
        _ => "",
    };
    let line = Line::from(vec![Span::raw(KEYS), Span::raw(extra)]);
    frame.render_widget(Paragraph::new(line).style(Style::new().add_modifier(Modifier::DIM)), area);
}
