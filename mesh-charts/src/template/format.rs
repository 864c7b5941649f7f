//! Values as Go prints them: `%v` (what an action prints), `fmt.Sprintf`'s verbs, `strconv.Quote`
//! and `encoding/json`, so that a chart renders the same text here as under Helm.

use std::fmt::Write as _;

use serde_json::{Number, Value};

/// What an action prints: Go's `%v`, except that nothing is printed for a missing value (Go
/// prints `<no value>`, which Helm then removes from its output).
pub(crate) fn print(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        other => go_v(other),
    }
}

/// Go's `%v`.
pub(crate) fn go_v(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_v).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map.iter().map(|(k, v)| format!("{k}:{}", go_v(v))).collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

/// Go's type name of a value, for messages (`float64` for numbers from values files, as Helm
/// reads them).
pub(crate) fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// A number as `%v` prints it.
pub(crate) fn go_number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        go_float_g(n.as_f64().unwrap_or_default())
    }
}

/// `strconv.FormatFloat(f, 'g', -1, 64)`: the shortest digits, in exponent form when the
/// exponent is below -4 or at least 6 (so 1000000.0 prints as `1e+06`, as it does in Helm).
pub(crate) fn go_float_g(f: f64) -> String {
    if let Some(special) = special_float(f) {
        return special;
    }
    let (_, exp) = shortest_digits(f);
    if !(-4..6).contains(&exp) { go_float_e(f, None) } else { format!("{f}") }
}

/// `%e`: `d.ddde+XX`, with `precision` digits after the point (the shortest when `None`).
pub(crate) fn go_float_e(f: f64, precision: Option<usize>) -> String {
    if let Some(special) = special_float(f) {
        return special;
    }
    let text = match precision {
        Some(p) => format!("{f:.p$e}"),
        None => format!("{f:e}"),
    };
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or_default();
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// `%f` with `precision` digits (the shortest when `None`).
pub(crate) fn go_float_f(f: f64, precision: Option<usize>) -> String {
    if let Some(special) = special_float(f) {
        return special;
    }
    match precision {
        Some(p) => format!("{f:.p$}"),
        None => format!("{f}"),
    }
}

fn special_float(f: f64) -> Option<String> {
    if f.is_nan() {
        Some("NaN".to_owned())
    } else if f.is_infinite() {
        Some(if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned())
    } else {
        None
    }
}

/// The decimal exponent of `f`'s shortest representation (`d.ddd × 10^exp`).
fn shortest_digits(f: f64) -> (String, i32) {
    let text = format!("{f:e}");
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    (mantissa.replace(['.', '-'], ""), exp.parse().unwrap_or_default())
}

/// `strconv.Quote`: double quotes, with Go's escapes for what is not printable.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `fmt.Sprint`: operands side by side, a space between two when neither is a string.
pub(crate) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 && !arg.is_string() && !args[i - 1].is_string() {
            out.push(' ');
        }
        out.push_str(&go_v(arg));
    }
    out
}

/// `fmt.Sprintln`: operands with spaces between, and a newline.
pub(crate) fn sprintln(args: &[Value]) -> String {
    let items: Vec<String> = args.iter().map(go_v).collect();
    format!("{}\n", items.join(" "))
}

/// One `%` directive: flags, width, precision.
#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    sharp: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// `fmt.Sprintf` for the verbs charts use (`v s d q t f F e g x X o b c %`), with flags, width
/// and precision; wrong types, missing and extra operands are reported in the output as Go
/// reports them (`%!d(string=x)`, `%!s(MISSING)`, `%!(EXTRA ...)`).
pub(crate) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        spec.width = digits(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(digits(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        out.push_str(&directive(verb, &spec, arg));
    }
    if next < args.len() {
        let extra: Vec<String> =
            args[next..].iter().map(|a| format!("{}={}", go_type(a), go_v(a))).collect();
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut value: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        value = Some(value.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
        chars.next();
    }
    value
}

fn bad_verb(verb: char, arg: &Value) -> String {
    match arg {
        Value::Null => format!("%!{verb}(<nil>)"),
        other => format!("%!{verb}({}={})", go_type(other), go_v(other)),
    }
}

fn directive(verb: char, spec: &Spec, arg: &Value) -> String {
    let int = match arg {
        Value::Number(n) if !n.is_f64() => {
            n.as_i64().map(i128::from).or(n.as_u64().map(i128::from))
        }
        _ => None,
    };
    let float = match arg {
        Value::Number(n) if n.is_f64() => n.as_f64(),
        _ => None,
    };
    let (body, numeric) = match verb {
        'v' => (go_v(arg), arg.is_number()),
        's' => match arg {
            Value::String(s) => (s.clone(), false),
            Value::Array(_) | Value::Object(_) => (go_v(arg), false),
            _ => return bad_verb(verb, arg),
        },
        'q' => match (arg, int) {
            (Value::String(s), _) => (go_quote(s), false),
            (_, Some(i)) => {
                let c = u32::try_from(i).ok().and_then(char::from_u32).unwrap_or('\u{fffd}');
                (format!("'{c}'"), false)
            }
            _ => return bad_verb(verb, arg),
        },
        't' => match arg {
            Value::Bool(b) => (b.to_string(), false),
            _ => return bad_verb(verb, arg),
        },
        'd' | 'o' | 'b' | 'x' | 'X' | 'c' if int.is_some() => {
            let i = int.unwrap_or_default();
            let magnitude = i.unsigned_abs();
            let digits = match verb {
                'd' => magnitude.to_string(),
                'o' => format!("{}{magnitude:o}", if spec.sharp { "0" } else { "" }),
                'b' => format!("{magnitude:b}"),
                'x' => format!("{}{magnitude:x}", if spec.sharp { "0x" } else { "" }),
                'X' => format!("{}{magnitude:X}", if spec.sharp { "0X" } else { "" }),
                _ => {
                    let c = u32::try_from(i).ok().and_then(char::from_u32).unwrap_or('\u{fffd}');
                    return pad(c.to_string(), spec, false);
                }
            };
            (if i < 0 { format!("-{digits}") } else { digits }, true)
        }
        'x' | 'X' if arg.is_string() => {
            let s = arg.as_str().unwrap_or_default();
            let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
            (if verb == 'X' { hex.to_uppercase() } else { hex }, false)
        }
        'f' | 'F' | 'e' | 'E' | 'g' | 'G' if float.is_some() => {
            let f = float.unwrap_or_default();
            let text = match verb {
                'f' | 'F' => go_float_f(f, Some(spec.precision.unwrap_or(6))),
                'e' => go_float_e(f, Some(spec.precision.unwrap_or(6))),
                'E' => go_float_e(f, Some(spec.precision.unwrap_or(6))).to_uppercase(),
                'g' => go_float_g(f),
                _ => go_float_g(f).to_uppercase(),
            };
            (text, true)
        }
        _ => return bad_verb(verb, arg),
    };
    let body = match (spec.precision, verb) {
        (Some(p), 's' | 'v') if !numeric => body.chars().take(p).collect(),
        _ => body,
    };
    pad(body, spec, numeric)
}

/// Applies sign flags and the width.
fn pad(body: String, spec: &Spec, numeric: bool) -> String {
    let mut body = body;
    if numeric && !body.starts_with('-') {
        if spec.plus {
            body.insert(0, '+');
        } else if spec.space {
            body.insert(0, ' ');
        }
    }
    let Some(width) = spec.width else { return body };
    let len = body.chars().count();
    if len >= width {
        return body;
    }
    let fill = width - len;
    if spec.minus {
        body + &" ".repeat(fill)
    } else if spec.zero && numeric {
        let sign_len = usize::from(body.starts_with(['-', '+', ' ']));
        let (sign, digits) = body.split_at(sign_len);
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else {
        " ".repeat(fill) + &body
    }
}

/// `encoding/json`'s `Marshal`: keys sorted, no spaces, `<`, `>` and `&` escaped as Go escapes
/// them, numbers as Go writes float64s.
pub(crate) fn to_json(value: &Value) -> String {
    let mut out = String::new();
    write_json(value, &mut out);
    out
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&json_number(n)),
        Value::String(s) => json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(key, out);
                out.push(':');
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

fn json_number(n: &Number) -> String {
    let Some(f) = n.as_f64().filter(|_| n.is_f64()) else { return n.to_string() };
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Go writes 1e-07 as 1e-7.
        let text = format!("{f:e}");
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let exp: i32 = exp.parse().unwrap_or_default();
        format!("{mantissa}e{}{}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        format!("{f}")
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prints_as_go_does() {
        assert_eq!(go_v(&json!(1.0)), "1");
        assert_eq!(go_v(&json!(1.5)), "1.5");
        assert_eq!(go_v(&json!(1_000_000.0)), "1e+06");
        assert_eq!(go_v(&json!(123_456.0)), "123456");
        assert_eq!(go_v(&json!(0.0001)), "0.0001");
        assert_eq!(go_v(&json!(0.00001)), "1e-05");
        assert_eq!(go_v(&json!(1_000_000)), "1000000");
        assert_eq!(go_v(&json!(["a", 1, null])), "[a 1 <nil>]");
        assert_eq!(go_v(&json!({"b": true, "a": {"c": "d"}})), "map[a:map[c:d] b:true]");
        assert_eq!(print(&Value::Null), "");
    }

    #[test]
    fn sprintf_verbs() {
        let cases = [
            ("%s-%s", json!(["a", "b"]), "a-b"),
            ("%d", json!([42]), "42"),
            ("%05d|%-4d|%+d", json!([42, 7, 3]), "00042|7   |+3"),
            ("%q", json!(["a\"b\n"]), "\"a\\\"b\\n\""),
            ("%v %v", json!([true, [1, 2]]), "true [1 2]"),
            ("%.2f", json!([1.234]), "1.23"),
            ("%x", json!([255]), "ff"),
            ("%d", json!([1.0]), "%!d(float64=1)"),
            ("%s", json!([3]), "%!s(int=3)"),
            ("%s %s", json!(["a"]), "a %!s(MISSING)"),
            ("%s", json!(["a", "b"]), "a%!(EXTRA string=b)"),
            ("100%%", json!([]), "100%"),
            ("%.3s", json!(["abcdef"]), "abc"),
            ("%6.2f", json!([1.23456]), "  1.23"),
        ];
        for (format, args, expected) in cases {
            let args = args.as_array().cloned().unwrap_or_default();
            assert_eq!(sprintf(format, &args), expected, "{format}");
        }
    }

    #[test]
    fn sprint_spacing() {
        assert_eq!(sprint(&[json!("a"), json!(1), json!(2), json!("b")]), "a1 2b");
        assert_eq!(sprintln(&[json!("a"), json!(1)]), "a 1\n");
    }

    #[test]
    fn json_as_go_writes_it() {
        assert_eq!(
            to_json(&json!({"b": [1, 2.5, 3.0], "a": "<x&y>"})),
            r#"{"a":"\u003cx\u0026y\u003e","b":[1,2.5,3]}"#
        );
        assert_eq!(to_json(&json!(1e-7)), "1e-7");
    }

    #[test]
    fn quote() {
        assert_eq!(go_quote("a\tb\u{1}é"), "\"a\\tb\\x01é\"");
    }
}
