//! Columns aligned as `kubectl` and `istioctl` print them (Go's tabwriter with three spaces of
//! padding): each column as wide as its widest cell, the last one never padded.

/// A table of text cells under a header.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Space between two columns.
const GAP: usize = 3;

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    /// Adds a row (missing cells are empty, extra cells are kept as extra columns).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// How many rows there are (the header not counted).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines of text, each ending in a newline, without trailing spaces.
    pub fn render(&self) -> String {
        let columns = std::iter::once(&self.header).chain(&self.rows).map(Vec::len).max();
        let mut widths = vec![0; columns.unwrap_or(0)];
        for line in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map_or("", String::as_str);
                text.push_str(cell);
                if i + 1 < widths.len() {
                    let pad = width - cell.chars().count() + GAP;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut table = Table::new(&["NAME", "PORT", "TYPE"]);
        table.row(["reviews.default.svc.cluster.local", "9080", "EDS"]);
        table.row(["BlackHoleCluster", "-", ""]);
        assert_eq!(
            table.render(),
            "NAME                                PORT   TYPE\n\
             reviews.default.svc.cluster.local   9080   EDS\n\
             BlackHoleCluster                    -\n"
        );
    }
}
