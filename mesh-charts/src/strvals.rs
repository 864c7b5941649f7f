//! `--set` as Helm parses it (its `strvals` package): `a.b.c=v` paths, `a[0]=v` list indices,
//! `a={x,y}` lists, several pairs separated by commas, `\` escaping the next character, and
//! values typed as Helm types them (`true`/`false`, integers without a leading zero, `null`;
//! everything else a string, floats included). `--set-string` keeps every value a string.

use serde_json::{Map, Value};

/// The most a list index may be (Helm's limit).
const MAX_INDEX: usize = 65_536;

/// The most levels of `a.b.c` (Helm's limit).
const MAX_NESTING: usize = 30;

/// Parses `expression` into `data`, as Helm's `strvals.ParseInto` (typed) or
/// `ParseIntoString` (`strings`).
pub(crate) fn parse_into(
    expression: &str,
    data: &mut Map<String, Value>,
    strings: bool,
) -> Result<(), String> {
    let mut parser = Parser { chars: expression.chars().collect(), pos: 0, strings };
    loop {
        match parser.key(data, 0) {
            Ok(()) => {}
            Err(Stop::Eof) => return Ok(()),
            Err(Stop::Error(message)) => return Err(message),
        }
    }
}

/// Why parsing stopped: the end of the input (after a complete pair), or an error.
enum Stop {
    Eof,
    Error(String),
}

type Step<T> = Result<T, Stop>;

fn fail<T>(message: impl Into<String>) -> Step<T> {
    Err(Stop::Error(message.into()))
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    strings: bool,
}

impl Parser {
    /// Reads up to one of `stop` (consumed, and returned), or to the end (`None`); a backslash
    /// takes the next character as it is.
    fn until(&mut self, stop: &[char]) -> (String, Option<char>) {
        let mut text = String::new();
        while let Some(&c) = self.chars.get(self.pos) {
            self.pos += 1;
            if c == '\\' {
                if let Some(&next) = self.chars.get(self.pos) {
                    self.pos += 1;
                    text.push(next);
                }
                continue;
            }
            if stop.contains(&c) {
                return (text, Some(c));
            }
            text.push(c);
        }
        (text, None)
    }

    fn key(&mut self, data: &mut Map<String, Value>, nesting: usize) -> Step<()> {
        let (key, last) = self.until(&['=', '[', ',', '.']);
        match last {
            None if key.is_empty() => Err(Stop::Eof),
            None => fail(format!("key {key:?} has no value")),
            Some('[') => {
                let index = self.index()?;
                let list = match data.remove(&key) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                let (list, result) = self.list_item(list, index, nesting);
                set(data, &key, Value::Array(list));
                result
            }
            Some('=') => match self.value_list()? {
                Some(list) => {
                    set(data, &key, list);
                    Ok(())
                }
                None => {
                    let (text, end) = self.until(&[',']);
                    set(data, &key, self.typed(&text));
                    if end.is_none() { Err(Stop::Eof) } else { Ok(()) }
                }
            },
            Some(',') => {
                set(data, &key, Value::String(String::new()));
                fail(format!("key {key:?} has no value (cannot end with ,)"))
            }
            _ => {
                if nesting + 1 > MAX_NESTING {
                    return fail(format!(
                        "value name nested level is greater than maximum supported nested level of {MAX_NESTING}"
                    ));
                }
                let mut inner = match data.remove(&key) {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                let result = self.key(&mut inner, nesting + 1);
                let empty = inner.is_empty();
                if !empty {
                    set(data, &key, Value::Object(inner));
                }
                match result {
                    Ok(()) if empty => fail(format!("key map {key:?} has no value")),
                    other => other,
                }
            }
        }
    }

    /// The index inside `[...]` (the `[` read already).
    fn index(&mut self) -> Step<usize> {
        let (text, last) = self.until(&[']']);
        if last.is_none() {
            return fail(format!("error parsing index: unterminated index {text:?}"));
        }
        let index: i64 = text
            .trim()
            .parse()
            .map_err(|_| Stop::Error(format!("error parsing index: {text:?} is not a number")))?;
        if index < 0 {
            return fail(format!("negative {index} index not allowed"));
        }
        usize::try_from(index).ok().filter(|i| *i <= MAX_INDEX).ok_or_else(|| {
            Stop::Error(format!(
                "index of {index} is greater than maximum supported index value of {MAX_INDEX}"
            ))
        })
    }

    /// What follows `list[index]`: `=value`, `[i]...` or `.key...`; returns the list with the
    /// item set, and how parsing went.
    fn list_item(
        &mut self,
        list: Vec<Value>,
        index: usize,
        nesting: usize,
    ) -> (Vec<Value>, Step<()>) {
        let mut list = list;
        let (text, last) = self.until(&['[', '.', '=']);
        if !text.is_empty() {
            return (list, fail(format!("unexpected data at end of array index: {text:?}")));
        }
        match last {
            None => (list, Err(Stop::Eof)),
            Some('=') => match self.value_list() {
                Ok(Some(value)) => {
                    set_index(&mut list, index, value);
                    (list, Ok(()))
                }
                Ok(None) => {
                    let (text, end) = self.until(&[',']);
                    set_index(&mut list, index, self.typed(&text));
                    (list, if end.is_none() { Err(Stop::Eof) } else { Ok(()) })
                }
                Err(stop) => (list, Err(stop)),
            },
            Some('[') => {
                let next = match self.index() {
                    Ok(i) => i,
                    Err(stop) => return (list, Err(stop)),
                };
                let inner = match list.get(index) {
                    Some(Value::Array(items)) => items.clone(),
                    _ => Vec::new(),
                };
                let (inner, result) = self.list_item(inner, next, nesting);
                set_index(&mut list, index, Value::Array(inner));
                (list, result)
            }
            _ => {
                let mut inner = match list.get(index) {
                    Some(Value::Object(map)) => map.clone(),
                    _ => Map::new(),
                };
                let result = self.key(&mut inner, nesting);
                set_index(&mut list, index, Value::Object(inner));
                (list, result)
            }
        }
    }

    /// `{a,b,c}` after an `=`: the list, or `None` when the value is not one (nothing read).
    fn value_list(&mut self) -> Step<Option<Value>> {
        if self.chars.get(self.pos) != Some(&'{') {
            return Ok(None);
        }
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            let (text, last) = self.until(&[',', '}']);
            match last {
                None => return fail("list must terminate with '}'"),
                Some('}') => {
                    // As Helm: `{}` is a list of one empty string; a comma after it is eaten.
                    items.push(self.typed(&text));
                    if self.chars.get(self.pos) == Some(&',') {
                        self.pos += 1;
                    }
                    return Ok(Some(Value::Array(items)));
                }
                _ => items.push(self.typed(&text)),
            }
        }
    }

    fn typed(&self, text: &str) -> Value {
        if self.strings {
            return Value::String(text.to_owned());
        }
        typed_value(text)
    }
}

/// A `--set` value typed as Helm types it.
pub(crate) fn typed_value(text: &str) -> Value {
    if text.eq_ignore_ascii_case("true") {
        Value::Bool(true)
    } else if text.eq_ignore_ascii_case("false") {
        Value::Bool(false)
    } else if text.eq_ignore_ascii_case("null") {
        Value::Null
    } else if text == "0" {
        Value::from(0)
    } else if !text.starts_with('0')
        && let Some(n) = parse_go_int(text)
    {
        Value::from(n)
    } else {
        Value::String(text.to_owned())
    }
}

/// `strconv.ParseInt(text, 10, 64)`: an optional sign and decimal digits.
fn parse_go_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn set(data: &mut Map<String, Value>, key: &str, value: Value) {
    if !key.is_empty() {
        data.insert(key.to_owned(), value);
    }
}

fn set_index(list: &mut Vec<Value>, index: usize, value: Value) {
    if list.len() <= index {
        list.resize(index + 1, Value::Null);
    }
    list[index] = value;
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    fn parse(expression: &str) -> Result<Value, String> {
        let mut data = Map::new();
        parse_into(expression, &mut data, false)?;
        Ok(Value::Object(data))
    }

    #[test]
    fn types_as_helm_does() {
        assert_eq!(
            parse("a=true,b=False,c=null,d=0,e=42,f=-7,g=007,h=1.5,i=abc,j=,k=1e3,l=+3").unwrap(),
            json!({"a": true, "b": false, "c": null, "d": 0, "e": 42, "f": -7, "g": "007", "h": "1.5",
                   "i": "abc", "j": "", "k": "1e3", "l": 3})
        );
        let mut data = Map::new();
        parse_into("a=true,b=42", &mut data, true).unwrap();
        assert_eq!(Value::Object(data), json!({"a": "true", "b": "42"}));
    }

    #[test]
    fn paths_lists_and_escapes() {
        assert_eq!(
            parse("global.hub=r.io/mesh,pilot.resources.requests.cpu=10m").unwrap(),
            json!({"global": {"hub": "r.io/mesh"}, "pilot": {"resources": {"requests": {"cpu": "10m"}}}})
        );
        assert_eq!(parse("a[1]=x").unwrap(), json!({"a": [null, "x"]}));
        assert_eq!(
            parse("a[0].name=p,a[0].port=80").unwrap(),
            json!({"a": [{"name": "p", "port": 80}]})
        );
        assert_eq!(parse("a[0][1]=x").unwrap(), json!({"a": [[null, "x"]]}));
        assert_eq!(
            parse("list={a,b,1},after=x").unwrap(),
            json!({"list": ["a", "b", 1], "after": "x"})
        );
        assert_eq!(parse("empty={}").unwrap(), json!({"empty": [""]}));
        assert_eq!(
            parse(r"annotations.example\.com/name=a\,b").unwrap(),
            json!({"annotations": {"example.com/name": "a,b"}})
        );
    }

    #[test]
    fn sets_into_what_is_there() {
        let mut data =
            json!({"a": {"keep": 1, "b": 2}, "l": ["x", "y"]}).as_object().cloned().unwrap();
        parse_into("a.b=3,l[1]=z", &mut data, false).unwrap();
        assert_eq!(Value::Object(data), json!({"a": {"keep": 1, "b": 3}, "l": ["x", "z"]}));
    }

    #[test]
    fn refuses_what_helm_refuses() {
        let cases = [
            ("a", "key \"a\" has no value"),
            ("a.b", "key \"b\" has no value"),
            ("a,b=c", "key \"a\" has no value (cannot end with ,)"),
            ("a[-1]=x", "negative -1 index not allowed"),
            ("a[x]=1", "is not a number"),
            ("a[1]b=1", "unexpected data at end of array index"),
            ("a={x,y", "list must terminate with '}'"),
            ("a[99999999]=1", "greater than maximum supported index"),
        ];
        for (expression, expected) in cases {
            let err = parse(expression).unwrap_err();
            assert!(err.contains(expected), "{expression}: {err}");
        }
    }
}
