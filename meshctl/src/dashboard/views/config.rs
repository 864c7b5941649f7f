//! The Config view: the VirtualServices and DestinationRules that apply to the drilled (or
//! selected) service, as YAML, with the analyzer's findings; j/k scroll.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};

use super::super::app::{App, View};

/// Draws the view.
pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let lines = app.config_lines();
    let height = usize::from(area.height.saturating_sub(2));
    let scroll = app.selected(View::Config).min(lines.len().saturating_sub(height));
    let title = app
        .config_service()
        .map_or_else(|| " Config ".to_owned(), |s| format!(" Config: {} ", s.display()));
    let text: Vec<Line> = lines.into_iter().skip(scroll).take(height).map(Line::from).collect();
    frame.render_widget(Paragraph::new(text).block(Block::bordered().title(title)), area);
}
