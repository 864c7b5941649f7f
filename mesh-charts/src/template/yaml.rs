//! `toYaml`: values written as Helm writes them (sigs.k8s.io/yaml over go-yaml v2): keys sorted,
//! two-space indentation, lists at their key's indentation, multi-line strings as literal blocks,
//! strings quoted only where they would read back as something else.

use serde_json::{Map, Value};

/// The YAML text of `value`, ending with a newline (Helm's `toYaml` trims it).
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => write_list(items, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn write_map(map: &Map<String, Value>, indent: usize, out: &mut String) {
    for (key, value) in map {
        pad(out, indent);
        out.push_str(&string(key));
        out.push(':');
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                write_map(inner, indent + 2, out);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_list(items, indent, out);
            }
            Value::String(s) if literal(s).is_some() => write_literal(s, indent + 2, out),
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn write_list(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        pad(out, indent);
        out.push('-');
        match item {
            Value::Object(_) | Value::Array(_) if !is_empty_collection(item) => {
                // The first line of the nested block goes on the dash's line.
                let mut nested = String::new();
                match item {
                    Value::Object(map) => write_map(map, indent + 2, &mut nested),
                    Value::Array(list) => write_list(list, indent + 2, &mut nested),
                    _ => {}
                }
                out.push(' ');
                out.push_str(&nested[indent + 2..]);
            }
            Value::String(s) if literal(s).is_some() => write_literal(s, indent + 2, out),
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn is_empty_collection(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// The chomping indicator for a multi-line string that can be a literal block: `|-` without a
/// final newline, `|` with one; `None` for strings that need quotes.
fn literal(s: &str) -> Option<&'static str> {
    if !s.contains('\n')
        || s.contains('\r')
        || s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return None;
    }
    let first_line = s.lines().find(|l| !l.is_empty())?;
    if first_line.starts_with([' ', '\t']) {
        return None;
    }
    let body = s.trim_end_matches('\n');
    match s.len() - body.len() {
        0 => Some("|-"),
        1 => Some("|"),
        _ => None,
    }
}

fn write_literal(s: &str, indent: usize, out: &mut String) {
    out.push(' ');
    out.push_str(literal(s).unwrap_or("|-"));
    out.push('\n');
    for line in s.trim_end_matches('\n').split('\n') {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            Some(f) => super::format::go_float_g(f),
            None => n.to_string(),
        },
        Value::String(s) => string(s),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
    }
}

/// A string plain when it reads back as the same string, else double-quoted.
fn string(s: &str) -> String {
    if plain(s) { s.to_owned() } else { quoted(s) }
}

fn plain(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if s.trim() != s || ",[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    // `-`, `?` and `:` start a plain scalar only when a non-space follows (`--flag`).
    if "-?:".contains(first) && s[1..].chars().next().is_none_or(char::is_whitespace) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.chars().any(char::is_control) {
        return false;
    }
    !reads_as_other_type(s)
}

/// Whether YAML (1.1, as go-yaml reads it, or 1.2) reads `s` as a bool, null, number or date.
fn reads_as_other_type(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "=" | "<<"
    ) {
        return true;
    }
    let unsigned = lower.trim_start_matches(['-', '+']);
    if unsigned.starts_with(|c: char| c.is_ascii_digit()) && (s.contains(':') || looks_like_date(s))
    {
        return true;
    }
    if matches!(unsigned, ".inf" | ".nan") {
        return true;
    }
    let clean = lower.replace('_', "");
    let digits = clean.trim_start_matches(['-', '+']);
    if ["0x", "0o", "0b"].iter().any(|p| digits.starts_with(p))
        && digits.len() > 2
        && digits[2..].chars().all(|c| c.is_ascii_hexdigit())
    {
        return true;
    }
    (digits.starts_with(|c: char| c.is_ascii_digit() || c == '.') && clean.parse::<f64>().is_ok())
        || clean.parse::<i64>().is_ok()
}

fn looks_like_date(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() >= 10
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5..7].iter().all(u8::is_ascii_digit)
        && bytes[7] == b'-'
}

fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_as_helm_does() {
        let value = json!({
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "ports": [{"name": "http", "port": 80.0}, {"name": "https", "port": 443}],
            "args": ["--a", "true", "", "1.5", "plain words"],
            "empty": {},
            "none": [],
            "nested": [["a", "b"], []],
            "text": "line one\nline two\n",
            "key: colon": null,
        });
        let expected = "\
args:
- --a
- \"true\"
- \"\"
- \"1.5\"
- plain words
empty: {}
\"key: colon\": null
nested:
- - a
  - b
- []
none: []
ports:
- name: http
  port: 80
- name: https
  port: 443
resources:
  requests:
    cpu: 100m
    memory: 128Mi
text: |
  line one
  line two
";
        assert_eq!(to_yaml(&value), expected);
    }

    #[test]
    fn reads_back_the_same() {
        let value = json!({
            "a": ["yes", "No", "0x1F", "1e3", "2024-01-02", "1:20", "~", "-x", "#c", "a #b", "é", " lead"],
            "b": "no newline\nat end",
            "c": "  indented\nfirst line",
            "d": [{"x": {"y": [1, {"z": "w"}]}}],
            "e": 1.5,
        });
        let text = to_yaml(&value);
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, value, "{text}");
    }
}
