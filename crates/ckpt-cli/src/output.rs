//! Shared output helpers: stdout that tolerates a closed pipe, aligned tables, byte sizes,
//! JSON forms of checkpoint paths.

use std::io::Write;

use ckpt::walk::Step;
use ckpt::Key;
use serde::Serialize;

use crate::error::CliError;

/// Writes `text` to stdout; a reader that went away (`| head`) ends the command quietly.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => CliError::BrokenPipe,
            _ => CliError::new(format!("cannot write to stdout: {e}")),
        })
}

/// A JSON object laid out for both scripts and `grep`: one field per line, and one compact
/// element per line in list fields (a checkpoint's entries stay one line each).
#[derive(Default)]
pub struct JsonLines {
    fields: Vec<String>,
}

impl JsonLines {
    pub fn new() -> JsonLines {
        JsonLines::default()
    }

    /// A field whose value is written compactly on the field's line.
    pub fn field<T: Serialize + ?Sized>(mut self, name: &str, value: &T) -> Result<Self, CliError> {
        self.fields
            .push(format!("  {}: {}", compact(name)?, compact(value)?));
        Ok(self)
    }

    /// A list field, one element per line.
    pub fn rows<T: Serialize>(mut self, name: &str, rows: &[T]) -> Result<Self, CliError> {
        let mut text = format!("  {}: [", compact(name)?);
        for (i, row) in rows.iter().enumerate() {
            text.push_str(if i == 0 { "\n    " } else { ",\n    " });
            text.push_str(&compact(row)?);
        }
        text.push_str(if rows.is_empty() { "]" } else { "\n  ]" });
        self.fields.push(text);
        Ok(self)
    }

    /// The object, ending in a newline.
    pub fn render(&self) -> String {
        format!("{{\n{}\n}}\n", self.fields.join(",\n"))
    }
}

fn compact<T: Serialize + ?Sized>(value: &T) -> Result<String, CliError> {
    serde_json::to_string(value).map_err(|e| CliError::new(format!("cannot encode JSON: {e}")))
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Text from a file made safe for a terminal: control characters are escaped.
pub fn printable(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect()
    } else {
        text.to_string()
    }
}

/// `a, b, c and 7 more` (at most `max` items named).
pub fn abbreviate(items: &[String], max: usize) -> String {
    let shown = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        format!("{shown} and {} more", items.len() - max)
    } else {
        shown
    }
}

/// A path element as JSON: strings for str keys, numbers for int keys and indices, and
/// the natural JSON form of other keys (`null`, booleans, arrays for tuples; a repr string
/// for keys JSON cannot hold exactly, such as big ints, NaN or bytes). The parts of an opaque
/// object are objects: `{"attr": name}`, `{"arg": i}`, `{"state": true}`.
pub fn step_json(step: &Step<'_>) -> serde_json::Value {
    match step {
        Step::Index(i) => serde_json::Value::from(*i),
        Step::Key(key) => key_json(key),
        Step::Attr(name) => serde_json::json!({ "attr": name }),
        Step::Arg(i) => serde_json::json!({ "arg": i }),
        Step::State => serde_json::json!({ "state": true }),
    }
}

fn key_json(key: &Key) -> serde_json::Value {
    use serde_json::Value as J;
    match key {
        Key::Str(s) => J::from(s.as_str()),
        Key::Int(i) => J::from(*i),
        Key::Bool(b) => J::from(*b),
        Key::None => J::Null,
        Key::Float(bits) => serde_json::Number::from_f64(f64::from_bits(*bits))
            .map(J::Number)
            .unwrap_or_else(|| J::from(key.to_value().short_repr(80))),
        Key::Tuple(items) => J::Array(items.iter().map(key_json).collect()),
        // Big ints, bytes, dtypes and any later kind of key: as Python shows them.
        _ => J::from(key.to_value().short_repr(80)),
    }
}

/// Column alignment in a [`Table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain-text table: a header row and aligned columns separated by two spaces.
pub struct Table {
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str], align: &[Align]) -> Table {
        Table {
            align: align.to_vec(),
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether only the header is there.
    pub fn is_empty(&self) -> bool {
        self.rows.len() <= 1
    }

    /// The rendered table, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                // Format widths count chars, as the widths above do.
                let width = widths[i];
                if self.align.get(i) == Some(&Align::Right) {
                    line.push_str(&format!("{cell:>width$}"));
                } else {
                    line.push_str(&format!("{cell:<width$}"));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_is_valid_json_with_one_row_per_line() {
        let text = JsonLines::new()
            .field("format", "torch-zip")
            .unwrap()
            .rows(
                "entries",
                &[serde_json::json!({"a": 1}), serde_json::json!([2])],
            )
            .unwrap()
            .rows::<u8>("none", &[])
            .unwrap()
            .render();
        assert_eq!(
            text,
            "{\n  \"format\": \"torch-zip\",\n  \"entries\": [\n    {\"a\":1},\n    [2]\n  ],\n  \"none\": []\n}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["entries"][1][0], 2);
    }

    #[test]
    fn byte_sizes_use_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["NAME", "SIZE"], &[Align::Left, Align::Right]);
        t.row(vec!["a".into(), "10".into()]);
        t.row(vec!["long name".into(), "2".into()]);
        assert_eq!(
            t.render(),
            "NAME       SIZE\na            10\nlong name     2\n"
        );
    }

    #[test]
    fn long_lists_are_abbreviated() {
        let items: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        assert_eq!(abbreviate(&items, 3), "0, 1, 2 and 2 more");
        assert_eq!(abbreviate(&items[..2], 3), "0, 1");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable("é"), "é");
    }
}
