//! The functions templates call: Go's builtins, Helm's (`include`, `tpl`, `required`, `toYaml`,
//! ...) and the part of Sprig charts use, each with the argument order and the result Sprig
//! gives it. Arguments are checked as Go checks them when it calls a function: a string
//! parameter refuses a number, an int parameter refuses a float64 (`int` converts).

use base64::Engine as _;
use serde_json::{Map, Value};

use super::exec::{Exec, truth};
use super::format::{self, go_type, go_v};
use super::{Error, semver, yaml};

/// Why a function failed.
pub(crate) enum FuncError {
    /// Reported as `error calling <function>: <message>`.
    Call(String),
    /// Reported as the message alone (`required`, `fail`: the chart's own words).
    Fail(String),
    /// An error inside a template the function ran (`include`, `tpl`).
    Nested(Error),
}

/// A function: the execution it runs in (for `include` and `tpl`), and its arguments (a piped
/// value last).
pub(crate) type Func = fn(&mut Exec<'_>, Vec<Value>) -> Result<Value>;

type Result<T> = std::result::Result<T, FuncError>;

/// Whether `name` is a function (for the parser's check).
pub(crate) fn is_function(name: &str) -> bool {
    matches!(name, "and" | "or") || lookup(name).is_some()
}

/// The function called `name` (`and` and `or` are run by the executor, which short-circuits).
pub(crate) fn lookup(name: &str) -> Option<Func> {
    let function: Func = match name {
        // Go's builtins.
        "not" => |_, a| Ok(Value::Bool(!truth(one(&a)?))),
        "len" => len,
        "index" => index,
        "print" => |_, a| Ok(Value::String(format::sprint(&a))),
        "println" => |_, a| Ok(Value::String(format::sprintln(&a))),
        "printf" => printf,
        "eq" => eq,
        "ne" => |_, a| {
            let [x, y] = two(a)?;
            Ok(Value::Bool(!equal(&x, &y)?))
        },
        "lt" => |_, a| compare(a, |o| o.is_lt()),
        "le" => |_, a| compare(a, |o| o.is_le()),
        "gt" => |_, a| compare(a, |o| o.is_gt()),
        "ge" => |_, a| compare(a, |o| o.is_ge()),
        // Helm's.
        "include" => include,
        "tpl" => tpl,
        "required" => required,
        "toYaml" => |_, a| {
            let text = yaml::to_yaml(one(&a)?);
            Ok(Value::String(text.strip_suffix('\n').unwrap_or(&text).to_owned()))
        },
        "fromYaml" => from_yaml,
        "toJson" => |_, a| Ok(Value::String(format::to_json(one(&a)?))),
        "fromJson" => from_json,
        // Sprig's: defaults and flow.
        "default" => default,
        "empty" => |_, a| Ok(Value::Bool(empty(one(&a)?))),
        "coalesce" => |_, a| Ok(a.into_iter().find(|v| !empty(v)).unwrap_or(Value::Null)),
        "ternary" => ternary,
        "fail" => |_, a| Err(FuncError::Fail(string(one(&a)?)?.to_owned())),
        // Strings.
        "quote" => |_, a| Ok(joined(&a, |s| format::go_quote(&s))),
        "squote" => |_, a| Ok(joined(&a, |s| format!("'{s}'"))),
        "indent" => |_, a| {
            let [n, s] = two(a)?;
            Ok(Value::String(indent(int(&n)?, string(&s)?)))
        },
        "nindent" => |_, a| {
            let [n, s] = two(a)?;
            Ok(Value::String(format!("\n{}", indent(int(&n)?, string(&s)?))))
        },
        "trim" => |_, a| str_fn(&a, |s| s.trim().to_owned()),
        "trimAll" => |_, a| {
            let [cut, s] = two(a)?;
            let cut = string(&cut)?;
            Ok(Value::String(string(&s)?.trim_matches(|c| cut.contains(c)).to_owned()))
        },
        "trimSuffix" => |_, a| {
            let [suffix, s] = two(a)?;
            let s = string(&s)?;
            Ok(Value::String(s.strip_suffix(string(&suffix)?).unwrap_or(s).to_owned()))
        },
        "trimPrefix" => |_, a| {
            let [prefix, s] = two(a)?;
            let s = string(&s)?;
            Ok(Value::String(s.strip_prefix(string(&prefix)?).unwrap_or(s).to_owned()))
        },
        "replace" => |_, a| {
            let [old, new, s] = three(a)?;
            Ok(Value::String(string(&s)?.replace(string(&old)?, string(&new)?)))
        },
        "lower" => |_, a| str_fn(&a, str::to_lowercase),
        "upper" => |_, a| str_fn(&a, str::to_uppercase),
        "title" => |_, a| str_fn(&a, title),
        "nospace" => |_, a| str_fn(&a, |s| s.chars().filter(|c| !c.is_whitespace()).collect()),
        "trunc" => trunc,
        "contains" => |_, a| {
            let [needle, s] = two(a)?;
            Ok(Value::Bool(string(&s)?.contains(string(&needle)?)))
        },
        "hasPrefix" => |_, a| {
            let [prefix, s] = two(a)?;
            Ok(Value::Bool(string(&s)?.starts_with(string(&prefix)?)))
        },
        "hasSuffix" => |_, a| {
            let [suffix, s] = two(a)?;
            Ok(Value::Bool(string(&s)?.ends_with(string(&suffix)?)))
        },
        "repeat" => |_, a| {
            let [n, s] = two(a)?;
            let n = usize::try_from(int(&n)?).unwrap_or(0);
            Ok(Value::String(string(&s)?.repeat(n)))
        },
        "cat" => |_, a| {
            let parts: Vec<String> = a.iter().filter(|v| !v.is_null()).map(strval).collect();
            Ok(Value::String(parts.join(" ")))
        },
        "b64enc" => |_, a| {
            Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(string(one(&a)?)?)))
        },
        "b64dec" => |_, a| {
            // Sprig answers a bad input with the error's text, not an error.
            let decoded = base64::engine::general_purpose::STANDARD.decode(string(one(&a)?)?);
            Ok(Value::String(match decoded {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(err) => err.to_string(),
            }))
        },
        "toString" => |_, a| Ok(Value::String(strval(one(&a)?))),
        "join" => |_, a| {
            let [sep, list] = two(a)?;
            Ok(Value::String(strslice(&list).join(string(&sep)?)))
        },
        "splitList" => |_, a| {
            let [sep, s] = two(a)?;
            let parts = string(&s)?.split(string(&sep)?).map(|p| Value::String(p.to_owned()));
            Ok(Value::Array(parts.collect()))
        },
        "semverCompare" => |_, a| {
            let [constraint, version] = two(a)?;
            semver::matches(string(&constraint)?, string(&version)?)
                .map(Value::Bool)
                .map_err(FuncError::Call)
        },
        // Conversions and arithmetic (Sprig converts as the `cast` package does).
        "int" | "int64" => |_, a| Ok(Value::from(to_int(one(&a)?))),
        "float64" => |_, a| {
            Ok(serde_json::Number::from_f64(to_float(one(&a)?)).map_or(Value::Null, Value::Number))
        },
        "atoi" => |_, a| Ok(Value::from(string(one(&a)?)?.parse::<i64>().unwrap_or(0))),
        "add" => |_, a| Ok(Value::from(a.iter().map(to_int).fold(0i64, i64::wrapping_add))),
        "add1" => |_, a| Ok(Value::from(to_int(one(&a)?).wrapping_add(1))),
        "sub" => |_, a| arithmetic(a, |x, y| Some(x.wrapping_sub(y))),
        "mul" => |_, a| Ok(Value::from(a.iter().map(to_int).fold(1i64, i64::wrapping_mul))),
        "div" => |_, a| arithmetic(a, i64::checked_div),
        "mod" => |_, a| arithmetic(a, i64::checked_rem),
        "max" => |_, a| Ok(Value::from(a.iter().map(to_int).max().unwrap_or(0))),
        "min" => |_, a| Ok(Value::from(a.iter().map(to_int).min().unwrap_or(0))),
        "until" => |_, a| Ok(Value::Array((0..int(one(&a)?)?.max(0)).map(Value::from).collect())),
        // Types.
        "kindOf" => |_, a| Ok(Value::String(kind(one(&a)?).to_owned())),
        "kindIs" => |_, a| {
            let [k, v] = two(a)?;
            Ok(Value::Bool(string(&k)? == kind(&v)))
        },
        "typeOf" => |_, a| Ok(Value::String(go_type(one(&a)?).to_owned())),
        // Lists.
        "list" => |_, a| Ok(Value::Array(a)),
        "append" | "push" => |_, a| {
            let [list, item] = two(a)?;
            let mut items = array(&list, "append")?;
            items.push(item);
            Ok(Value::Array(items))
        },
        "prepend" => |_, a| {
            let [list, item] = two(a)?;
            let mut items = array(&list, "prepend")?;
            items.insert(0, item);
            Ok(Value::Array(items))
        },
        "first" => |_, a| Ok(array(one(&a)?, "first")?.first().cloned().unwrap_or(Value::Null)),
        "last" => |_, a| Ok(array(one(&a)?, "last")?.last().cloned().unwrap_or(Value::Null)),
        "has" => |_, a| {
            let [needle, haystack] = two(a)?;
            Ok(Value::Bool(match haystack {
                Value::Null => false,
                other => array(&other, "has")?.contains(&needle),
            }))
        },
        "uniq" => |_, a| {
            let mut out: Vec<Value> = Vec::new();
            for item in array(one(&a)?, "uniq")? {
                if !out.contains(&item) {
                    out.push(item);
                }
            }
            Ok(Value::Array(out))
        },
        "compact" => |_, a| {
            Ok(Value::Array(
                array(one(&a)?, "compact")?.into_iter().filter(|v| !empty(v)).collect(),
            ))
        },
        "sortAlpha" => |_, a| {
            let mut items = strslice(one(&a)?);
            items.sort();
            Ok(Value::Array(items.into_iter().map(Value::String).collect()))
        },
        "toStrings" => {
            |_, a| Ok(Value::Array(strslice(one(&a)?).into_iter().map(Value::String).collect()))
        }
        // Dictionaries.
        "dict" => dict,
        "hasKey" => |_, a| {
            let [d, key] = two(a)?;
            Ok(Value::Bool(map(&d, "hasKey")?.contains_key(string(&key)?)))
        },
        "get" => |_, a| {
            let [d, key] = two(a)?;
            Ok(map(&d, "get")?
                .get(string(&key)?)
                .cloned()
                .unwrap_or_else(|| Value::String(String::new())))
        },
        "set" => |_, a| {
            let [d, key, value] = three(a)?;
            let mut d = map(&d, "set")?.clone();
            d.insert(string(&key)?.to_owned(), value);
            Ok(Value::Object(d))
        },
        "unset" => |_, a| {
            let [d, key] = two(a)?;
            let mut d = map(&d, "unset")?.clone();
            d.remove(string(&key)?);
            Ok(Value::Object(d))
        },
        "keys" => |_, a| {
            let mut keys = Vec::new();
            for d in &a {
                keys.extend(map(d, "keys")?.keys().cloned().map(Value::String));
            }
            Ok(Value::Array(keys))
        },
        "values" => |_, a| Ok(Value::Array(map(one(&a)?, "values")?.values().cloned().collect())),
        "merge" => |_, a| merge(a, false),
        "mergeOverwrite" => |_, a| merge(a, true),
        "deepCopy" => |_, a| Ok(one(&a)?.clone()),
        _ => return None,
    };
    Some(function)
}

fn call_error(message: impl Into<String>) -> FuncError {
    FuncError::Call(message.into())
}

fn arity_error(want: usize, got: usize) -> FuncError {
    call_error(format!("wrong number of args: want {want} got {got}"))
}

fn one(args: &[Value]) -> Result<&Value> {
    match args {
        [v] => Ok(v),
        _ => Err(arity_error(1, args.len())),
    }
}

fn two(args: Vec<Value>) -> Result<[Value; 2]> {
    let got = args.len();
    args.try_into().map_err(|_| arity_error(2, got))
}

fn three(args: Vec<Value>) -> Result<[Value; 3]> {
    let got = args.len();
    args.try_into().map_err(|_| arity_error(3, got))
}

fn wrong_type(want: &str, got: &Value) -> FuncError {
    call_error(format!("wrong type for value; expected {want}; got {}", go_type(got)))
}

fn string(v: &Value) -> Result<&str> {
    v.as_str().ok_or_else(|| wrong_type("string", v))
}

/// An int parameter: an integer; a float64 is refused as Go refuses it.
fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Number(n) if !n.is_f64() => n.as_i64().ok_or_else(|| wrong_type("int", v)),
        _ => Err(wrong_type("int", v)),
    }
}

fn map<'v>(v: &'v Value, function: &str) -> Result<&'v Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| call_error(format!("{function}: expected a map, got {}", go_type(v))))
}

fn array(v: &Value, function: &str) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items.clone()),
        _ => Err(call_error(format!("{function}: expected a list, got {}", go_type(v)))),
    }
}

fn str_fn(args: &[Value], f: impl Fn(&str) -> String) -> Result<Value> {
    Ok(Value::String(f(string(one(args)?)?)))
}

/// Sprig's `strval`: a string as it is, anything else as `%v` prints it.
fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => go_v(other),
    }
}

/// Sprig's `strslice`: a list's non-nil elements as strings; anything else a list of one.
fn strslice(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter(|i| !i.is_null()).map(strval).collect(),
        Value::Null => Vec::new(),
        other => vec![strval(other)],
    }
}

/// The non-nil arguments, each as a string through `quote`, joined by spaces.
fn joined(args: &[Value], quote: impl Fn(String) -> String) -> Value {
    let parts: Vec<String> =
        args.iter().filter(|v| !v.is_null()).map(|v| quote(strval(v))).collect();
    Value::String(parts.join(" "))
}

/// Sprig's `empty`: nil, false, 0, and empty strings, lists and maps.
pub(crate) fn empty(v: &Value) -> bool {
    !truth(v)
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    out
}

fn indent(spaces: i64, text: &str) -> String {
    let pad = " ".repeat(usize::try_from(spaces).unwrap_or(0));
    format!("{pad}{}", text.replace('\n', &format!("\n{pad}")))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "invalid",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// `cast.ToInt64`: floats truncated, strings parsed (0 when they do not parse), booleans 1 or 0.
fn to_int(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or_else(|| n.as_f64().unwrap_or_default() as i64),
        Value::String(s) => {
            let s = s.trim();
            let (negative, digits) = match s.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, s.strip_prefix('+').unwrap_or(s)),
            };
            let parsed = if let Some(hex) = digits.strip_prefix("0x").or(digits.strip_prefix("0X"))
            {
                i64::from_str_radix(hex, 16).ok()
            } else if digits.len() > 1 && digits.starts_with('0') {
                i64::from_str_radix(&digits[1..], 8).ok()
            } else {
                digits.parse::<i64>().ok()
            };
            parsed.map_or(0, |n| if negative { -n } else { n })
        }
        Value::Bool(b) => i64::from(*b),
        _ => 0,
    }
}

fn to_float(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or_default(),
        Value::String(s) => s.trim().parse().unwrap_or(0.0),
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => 0.0,
    }
}

fn arithmetic(args: Vec<Value>, op: fn(i64, i64) -> Option<i64>) -> Result<Value> {
    let [a, b] = two(args)?;
    op(to_int(&a), to_int(&b)).map(Value::from).ok_or_else(|| call_error("integer divide by zero"))
}

fn len(_: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let n = match one(&args)? {
        Value::String(s) => s.len(),
        Value::Array(items) => items.len(),
        Value::Object(map) => map.len(),
        Value::Null => return Err(call_error("len of nil pointer")),
        other => return Err(call_error(format!("len of type {}", go_type(other)))),
    };
    Ok(Value::from(n))
}

fn index(_: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let mut args = args.into_iter();
    let Some(mut item) = args.next() else { return Err(arity_error(1, 0)) };
    for key in args {
        item = match (&item, &key) {
            (Value::Array(items), _) => {
                let i = int(&key).map_err(|_| {
                    call_error(format!("cannot index slice/array with type {}", go_type(&key)))
                })?;
                usize::try_from(i)
                    .ok()
                    .and_then(|i| items.get(i))
                    .cloned()
                    .ok_or_else(|| call_error(format!("index out of range: {i}")))?
            }
            (Value::Object(map), Value::String(k)) => map.get(k).cloned().unwrap_or(Value::Null),
            (Value::Object(_), _) => {
                return Err(call_error(format!(
                    "value has type {}; should be string",
                    go_type(&key)
                )));
            }
            (Value::Null, _) => return Err(call_error("index of untyped nil")),
            (other, _) => {
                return Err(call_error(format!("can't index item of type {}", go_type(other))));
            }
        };
    }
    Ok(item)
}

fn printf(_: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let Some((format, rest)) = args.split_first() else { return Err(arity_error(1, 0)) };
    Ok(Value::String(format::sprintf(string(format)?, rest)))
}

/// The kinds Go's comparison functions tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Basic {
    Nil,
    Bool,
    Int,
    Float,
    String,
    Other,
}

fn basic(v: &Value) -> Basic {
    match v {
        Value::Null => Basic::Nil,
        Value::Bool(_) => Basic::Bool,
        Value::Number(n) if n.is_f64() => Basic::Float,
        Value::Number(_) => Basic::Int,
        Value::String(_) => Basic::String,
        Value::Array(_) | Value::Object(_) => Basic::Other,
    }
}

/// Go's `eq` on two values: an integer and a float64 are incompatible (as in Helm, where values
/// are float64s), nil equals only nil.
fn equal(a: &Value, b: &Value) -> Result<bool> {
    match (basic(a), basic(b)) {
        (Basic::Nil, _) | (_, Basic::Nil) => Ok(a.is_null() && b.is_null()),
        (Basic::Other, _) | (_, Basic::Other) => {
            Err(call_error(format!("non-comparable types {}, {}", go_type(a), go_type(b))))
        }
        (x, y) if x != y => Err(call_error("incompatible types for comparison")),
        (Basic::Int, _) => Ok(a.as_i64().map(i128::from).or(a.as_u64().map(i128::from))
            == b.as_i64().map(i128::from).or(b.as_u64().map(i128::from))),
        (Basic::Float, _) => Ok(a.as_f64() == b.as_f64()),
        _ => Ok(a == b),
    }
}

fn eq(_: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let Some((first, rest)) = args.split_first() else { return Err(arity_error(2, 0)) };
    if rest.is_empty() {
        return Err(call_error("missing argument for comparison"));
    }
    for other in rest {
        if equal(first, other)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn compare(args: Vec<Value>, test: fn(std::cmp::Ordering) -> bool) -> Result<Value> {
    let [a, b] = two(args)?;
    let ordering = match (basic(&a), basic(&b)) {
        (Basic::Int, Basic::Int) => {
            let n = |v: &Value| v.as_i64().map(i128::from).or(v.as_u64().map(i128::from));
            n(&a).cmp(&n(&b))
        }
        (Basic::Float, Basic::Float) => a
            .as_f64()
            .partial_cmp(&b.as_f64())
            .ok_or_else(|| call_error("incompatible types for comparison"))?,
        (Basic::String, Basic::String) => a.as_str().cmp(&b.as_str()),
        (Basic::Int | Basic::Float | Basic::String, Basic::Int | Basic::Float | Basic::String) => {
            return Err(call_error("incompatible types for comparison"));
        }
        _ => return Err(call_error("invalid type for comparison")),
    };
    Ok(Value::Bool(test(ordering)))
}

fn include(exec: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let [name, data] = two(args)?;
    exec.call_template(string(&name)?, &data).map(Value::String).map_err(FuncError::Nested)
}

fn tpl(exec: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let [text, data] = two(args)?;
    exec.run_text(string(&text)?, &data).map(Value::String).map_err(FuncError::Nested)
}

/// Helm's `required`: the value, unless it is nil or an empty string.
fn required(_: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let [message, value] = two(args)?;
    match &value {
        Value::Null => Err(FuncError::Fail(string(&message)?.to_owned())),
        Value::String(s) if s.is_empty() => Err(FuncError::Fail(string(&message)?.to_owned())),
        _ => Ok(value),
    }
}

/// Helm's `fromYaml`: a map, or `{"Error": why}` when the text is not one.
fn from_yaml(_: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let text = string(one(&args)?)?;
    Ok(match serde_saphyr::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(Value::Null) => Value::Object(Map::new()),
        Ok(other) => error_map(format!("cannot unmarshal {} into a map", go_type(&other))),
        Err(err) => error_map(err.to_string()),
    })
}

fn from_json(_: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let text = string(one(&args)?)?;
    Ok(match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(other) => error_map(format!("cannot unmarshal {} into a map", go_type(&other))),
        Err(err) => error_map(err.to_string()),
    })
}

fn error_map(message: String) -> Value {
    let mut map = Map::new();
    map.insert("Error".to_owned(), Value::String(message));
    Value::Object(map)
}

/// Sprig's `default DEFAULT VALUE`: the value unless it is empty.
fn default(_: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let mut args = args.into_iter();
    let Some(fallback) = args.next() else { return Err(arity_error(2, 0)) };
    Ok(match args.next() {
        Some(given) if !empty(&given) => given,
        _ => fallback,
    })
}

fn ternary(_: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let [yes, no, condition] = three(args)?;
    match condition {
        Value::Bool(true) => Ok(yes),
        Value::Bool(false) => Ok(no),
        other => Err(wrong_type("bool", &other)),
    }
}

/// Sprig's `trunc`: the first `n` bytes, or the last `-n`.
fn trunc(_: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let [n, s] = two(args)?;
    let (n, s) = (int(&n)?, string(&s)?);
    let len = i64::try_from(s.len()).unwrap_or(i64::MAX);
    let cut = if n < 0 && len + n > 0 {
        s.get(usize::try_from(len + n).unwrap_or(0)..)
    } else if n >= 0 && len > n {
        s.get(..usize::try_from(n).unwrap_or(0))
    } else {
        Some(s)
    };
    Ok(Value::String(cut.unwrap_or(s).to_owned()))
}

/// Sprig's `dict`: key and value pairs; a key without a value gets "".
fn dict(_: &mut Exec<'_>, args: Vec<Value>) -> Result<Value> {
    let mut map = Map::new();
    let mut args = args.into_iter();
    while let Some(key) = args.next() {
        let value = args.next().unwrap_or_else(|| Value::String(String::new()));
        map.insert(strval(&key), value);
    }
    Ok(Value::Object(map))
}

/// Sprig's `merge` and `mergeOverwrite` (mergo): the first map with the others merged in.
fn merge(args: Vec<Value>, overwrite: bool) -> Result<Value> {
    let mut args = args.into_iter();
    let Some(first) = args.next() else { return Err(arity_error(1, 0)) };
    let mut dst = map(&first, "merge")?.clone();
    for src in args {
        mergo(&mut dst, map(&src, "merge")?, overwrite);
    }
    Ok(Value::Object(dst))
}

/// mergo's map merge (as Sprig calls it): maps merge key by key; a list replaces the
/// destination's when it is not empty and the destination's is (or with `overwrite`); any other
/// value is set when the destination lacks the key or has an empty value, or always with
/// `overwrite`, except that a map never replaces a non-empty non-map; a nil source value is
/// copied only with `overwrite`.
fn mergo(dst: &mut Map<String, Value>, src: &Map<String, Value>, overwrite: bool) {
    for (key, value) in src {
        if value.is_null() {
            if overwrite {
                dst.insert(key.clone(), Value::Null);
            }
            continue;
        }
        if let (Some(Value::Object(d)), Value::Object(s)) = (dst.get_mut(key), value) {
            mergo(d, s, overwrite);
            continue;
        }
        let existing = dst.get(key);
        if let Value::Array(items) = value {
            let replace = !items.is_empty() && (overwrite || existing.is_none_or(empty));
            if replace || existing.is_none() {
                dst.insert(key.clone(), value.clone());
            }
            continue;
        }
        if existing.is_some_and(|d| !empty(d)) && value.is_object() {
            continue;
        }
        if overwrite || existing.is_none_or(empty) {
            dst.insert(key.clone(), value.clone());
        }
    }
}
