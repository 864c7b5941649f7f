//! The parser: segments into a tree of nodes, as Go's `text/template/parse` builds it, with the
//! same checks made before anything runs (unknown functions, undefined variables, `{{end}}`s that
//! do not match, `break` outside `range`). `define` and `block` bodies are collected apart, to
//! be added to the template set under their names.

use serde_json::Number;

use super::Error;
use super::lex::{Keyword, Segment, Tok, Token};

/// A node of a parsed template.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    /// Text copied to the output.
    Text(String),
    /// `{{ pipeline }}`: printed unless it declares variables.
    Action { line: usize, pipe: Pipe },
    /// `{{ if }}`: the body when the pipeline is true, else the other branch.
    If(Control),
    /// `{{ range }}`: the body for each element, the other branch when there is none.
    Range(Control),
    /// `{{ with }}`: the body with dot set to the value when it is true.
    With(Control),
    /// `{{ template "name" pipeline }}`.
    Template { line: usize, name: String, pipe: Option<Pipe> },
    /// `{{ break }}` in a range.
    Break,
    /// `{{ continue }}` in a range.
    Continue,
}

/// The parts of `if`, `range` and `with`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Control {
    pub line: usize,
    pub pipe: Pipe,
    pub body: Vec<Node>,
    pub otherwise: Option<Vec<Node>>,
}

/// A pipeline: commands joined by `|`, maybe declaring (`:=`) or assigning (`=`) variables.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Pipe {
    pub decl: Vec<String>,
    pub assign: bool,
    pub cmds: Vec<Cmd>,
}

/// One command of a pipeline: a function and its arguments, or a single operand.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cmd {
    pub line: usize,
    pub args: Vec<Operand>,
}

/// An operand of a command.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Operand {
    Dot,
    Nil,
    Bool(bool),
    Num(Number),
    Str(String),
    /// `.a.b`: fields of dot.
    Field(Vec<String>),
    /// `$x.a.b`: a variable and fields of it.
    Var(String, Vec<String>),
    /// A function: called with the command's arguments, or with none as an argument.
    Func(String),
    /// `(pipeline).a.b`.
    Sub(Box<Pipe>, Vec<String>),
}

/// A `define` (or `block`) body.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Define {
    pub name: String,
    pub body: Vec<Node>,
}

/// A parsed file: its own nodes and the templates it defines.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Parsed {
    pub main: Vec<Node>,
    pub defines: Vec<Define>,
}

/// Parses `segments`; `is_function` says which names are functions.
pub(crate) fn parse(
    segments: Vec<Segment>,
    is_function: &dyn Fn(&str) -> bool,
) -> Result<Parsed, Error> {
    let mut parser = Parser {
        segments: segments.into_iter(),
        vars: vec!["$".to_owned()],
        range_depth: 0,
        is_function,
        defines: Vec::new(),
    };
    let (main, stop) = parser.list(true)?;
    match stop {
        Stop::Eof => Ok(Parsed { main, defines: parser.defines }),
        Stop::End(line) => Err(Error::at(line, "unexpected {{end}}")),
        Stop::Else(_, line) => Err(Error::at(line, "unexpected {{else}}")),
    }
}

/// What ended a list of nodes.
enum Stop {
    Eof,
    End(usize),
    Else(Vec<Token>, usize),
}

struct Parser<'a> {
    segments: std::vec::IntoIter<Segment>,
    /// Variables in scope, innermost last.
    vars: Vec<String>,
    range_depth: usize,
    is_function: &'a dyn Fn(&str) -> bool,
    defines: Vec<Define>,
}

/// Tokens of one action, read front to back.
struct Cursor<'t> {
    tokens: &'t [Token],
    pos: usize,
    line: usize,
}

impl<'t> Cursor<'t> {
    fn peek(&self) -> Option<&'t Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<&'t Token> {
        let token = self.tokens.get(self.pos)?;
        self.pos += 1;
        self.line = token.line;
        Some(token)
    }
}

impl Parser<'_> {
    fn list(&mut self, top: bool) -> Result<(Vec<Node>, Stop), Error> {
        let mut nodes = Vec::new();
        while let Some(segment) = self.segments.next() {
            let (tokens, line) = match segment {
                Segment::Text(text) => {
                    nodes.push(Node::Text(text));
                    continue;
                }
                Segment::Action(tokens, line) => (tokens, line),
            };
            let Some(first) = tokens.first() else {
                return Err(Error::at(line, "missing value for command"));
            };
            let keyword = match &first.kind {
                Tok::Keyword(k) => *k,
                _ => {
                    let pipe = self.pipeline(&tokens, line, true, false)?;
                    nodes.push(Node::Action { line, pipe });
                    continue;
                }
            };
            let rest = &tokens[1..];
            match keyword {
                Keyword::If | Keyword::Range | Keyword::With => {
                    nodes.push(self.control(keyword, rest, line)?);
                }
                Keyword::Else => return Ok((nodes, Stop::Else(rest.to_vec(), line))),
                Keyword::End => {
                    if let Some(extra) = rest.first() {
                        return Err(Error::at(line, format!("unexpected {} in end", extra.kind)));
                    }
                    return Ok((nodes, Stop::End(line)));
                }
                Keyword::Define => {
                    if !top {
                        return Err(Error::at(line, "define is only allowed at the top level"));
                    }
                    let name = template_name(rest, line, "define")?;
                    if rest.len() > 1 {
                        return Err(Error::at(line, "unexpected tokens after define's name"));
                    }
                    let body = self.definition_body(line, "define")?;
                    self.defines.push(Define { name, body });
                }
                Keyword::Block => {
                    let name = template_name(rest, line, "block")?;
                    let pipe = self.pipeline(&rest[1..], line, false, false)?;
                    let body = self.definition_body(line, "block")?;
                    self.defines.push(Define { name: name.clone(), body });
                    nodes.push(Node::Template { line, name, pipe: Some(pipe) });
                }
                Keyword::Template => {
                    let name = template_name(rest, line, "template")?;
                    let pipe = if rest.len() > 1 {
                        Some(self.pipeline(&rest[1..], line, false, false)?)
                    } else {
                        None
                    };
                    nodes.push(Node::Template { line, name, pipe });
                }
                Keyword::Break | Keyword::Continue => {
                    if self.range_depth == 0 {
                        return Err(Error::at(line, format!("{} outside range", first.kind)));
                    }
                    if !rest.is_empty() {
                        return Err(Error::at(
                            line,
                            format!("unexpected tokens after {}", first.kind),
                        ));
                    }
                    nodes.push(if keyword == Keyword::Break {
                        Node::Break
                    } else {
                        Node::Continue
                    });
                }
            }
        }
        Ok((nodes, Stop::Eof))
    }

    /// The body of a `define` or `block`, up to its `{{end}}`, in a scope of its own.
    fn definition_body(&mut self, line: usize, what: &str) -> Result<Vec<Node>, Error> {
        let vars = std::mem::replace(&mut self.vars, vec!["$".to_owned()]);
        let depth = std::mem::replace(&mut self.range_depth, 0);
        let parsed = self.list(false);
        self.vars = vars;
        self.range_depth = depth;
        match parsed? {
            (body, Stop::End(_)) => Ok(body),
            (_, Stop::Else(_, at)) => {
                Err(Error::at(at, format!("unexpected {{{{else}}}} in {what}")))
            }
            (_, Stop::Eof) => Err(Error::at(
                line,
                format!("unexpected EOF: {what} on line {line} has no {{{{end}}}}"),
            )),
        }
    }

    fn control(&mut self, keyword: Keyword, tokens: &[Token], line: usize) -> Result<Node, Error> {
        let name = Tok::Keyword(keyword);
        if tokens.is_empty() {
            return Err(Error::at(line, format!("missing value for {name}")));
        }
        let mark = self.vars.len();
        let pipe = self.pipeline(tokens, line, true, keyword == Keyword::Range)?;
        if keyword == Keyword::Range {
            self.range_depth += 1;
        }
        let body = self.list(false);
        if keyword == Keyword::Range {
            self.range_depth -= 1;
        }
        let (body, stop) = body?;
        let otherwise = match stop {
            Stop::End(_) => None,
            Stop::Else(rest, at) => match rest.first().map(|t| &t.kind) {
                None => match self.list(false)? {
                    (nodes, Stop::End(_)) => Some(nodes),
                    (_, Stop::Else(_, again)) => {
                        return Err(Error::at(
                            again,
                            format!("more than one {{{{else}}}} in {name}"),
                        ));
                    }
                    (_, Stop::Eof) => {
                        return Err(Error::at(
                            line,
                            format!("unexpected EOF: {name} on line {line} has no {{{{end}}}}"),
                        ));
                    }
                },
                // `{{else if x}}` and `{{else with x}}`: the rest of the chain is one control
                // inside the else branch, and it takes the `{{end}}`.
                Some(Tok::Keyword(k)) if *k == keyword && keyword != Keyword::Range => {
                    Some(vec![self.control(keyword, &rest[1..], at)?])
                }
                Some(other) => {
                    return Err(Error::at(at, format!("unexpected {other} after else in {name}")));
                }
            },
            Stop::Eof => {
                return Err(Error::at(
                    line,
                    format!("unexpected EOF: {name} on line {line} has no {{{{end}}}}"),
                ));
            }
        };
        self.vars.truncate(mark);
        let control = Control { line, pipe, body, otherwise };
        Ok(match keyword {
            Keyword::If => Node::If(control),
            Keyword::Range => Node::Range(control),
            _ => Node::With(control),
        })
    }

    /// A pipeline from the tokens of an action; its declared variables come into scope.
    fn pipeline(
        &mut self,
        tokens: &[Token],
        line: usize,
        allow_decl: bool,
        range: bool,
    ) -> Result<Pipe, Error> {
        let kinds: Vec<&Tok> = tokens.iter().map(|t| &t.kind).collect();
        let (decl, assign, start) = match kinds.as_slice() {
            [Tok::Var(v), op @ (Tok::Declare | Tok::Assign), ..] if allow_decl => {
                (vec![v.clone()], **op == Tok::Assign, 2)
            }
            [Tok::Var(k), Tok::Comma, Tok::Var(v), op @ (Tok::Declare | Tok::Assign), ..]
                if allow_decl && range =>
            {
                (vec![k.clone(), v.clone()], **op == Tok::Assign, 4)
            }
            _ => (Vec::new(), false, 0),
        };
        if assign {
            for name in &decl {
                self.check_var(name, line)?;
            }
        }
        let mut cursor = Cursor { tokens: &tokens[start..], pos: 0, line };
        let cmds = self.commands(&mut cursor)?;
        if let Some(extra) = cursor.peek() {
            return Err(Error::at(extra.line, format!("unexpected {} in operand", extra.kind)));
        }
        if !assign {
            self.vars.extend(decl.iter().cloned());
        }
        Ok(Pipe { decl, assign, cmds })
    }

    fn commands(&mut self, cursor: &mut Cursor<'_>) -> Result<Vec<Cmd>, Error> {
        let mut cmds = Vec::new();
        loop {
            cmds.push(self.command(cursor)?);
            match cursor.peek().map(|t| &t.kind) {
                Some(Tok::Pipe) => {
                    cursor.next();
                }
                _ => return Ok(cmds),
            }
        }
    }

    fn command(&mut self, cursor: &mut Cursor<'_>) -> Result<Cmd, Error> {
        let line = cursor.peek().map_or(cursor.line, |t| t.line);
        let mut args = Vec::new();
        while let Some(token) = cursor.peek() {
            if matches!(token.kind, Tok::Pipe | Tok::RParen) {
                break;
            }
            args.push(self.operand(cursor)?);
        }
        if args.is_empty() {
            return Err(Error::at(line, "missing value for command"));
        }
        Ok(Cmd { line, args })
    }

    fn operand(&mut self, cursor: &mut Cursor<'_>) -> Result<Operand, Error> {
        let Some(token) = cursor.next() else {
            return Err(Error::at(cursor.line, "missing operand"));
        };
        let line = token.line;
        let mut operand = match &token.kind {
            Tok::Dot => Operand::Dot,
            Tok::Nil => Operand::Nil,
            Tok::Bool(b) => Operand::Bool(*b),
            Tok::Str(s) => Operand::Str(s.clone()),
            Tok::Num(text) => Operand::Num(number(text).map_err(|e| Error::at(line, e))?),
            Tok::Char(c) => Operand::Num(Number::from(u32::from(*c))),
            Tok::Field(name) => Operand::Field(vec![name.clone()]),
            Tok::Var(name) => {
                self.check_var(name, line)?;
                Operand::Var(name.clone(), Vec::new())
            }
            Tok::Ident(name) => {
                if !(self.is_function)(name) {
                    return Err(Error::at(line, format!("function {name:?} not defined")));
                }
                Operand::Func(name.clone())
            }
            Tok::LParen => {
                let cmds = self.commands(cursor)?;
                match cursor.next() {
                    Some(Token { kind: Tok::RParen, .. }) => {}
                    _ => return Err(Error::at(line, "unclosed left paren")),
                }
                Operand::Sub(Box::new(Pipe { decl: Vec::new(), assign: false, cmds }), Vec::new())
            }
            other => return Err(Error::at(line, format!("unexpected {other} in operand"))),
        };
        while let Some(Token { kind: Tok::Field(name), spaced: false, line }) = cursor.peek() {
            match &mut operand {
                Operand::Field(fields) | Operand::Var(_, fields) | Operand::Sub(_, fields) => {
                    fields.push(name.clone());
                }
                _ => return Err(Error::at(*line, format!("unexpected .{name} after a constant"))),
            }
            cursor.next();
        }
        Ok(operand)
    }

    fn check_var(&self, name: &str, line: usize) -> Result<(), Error> {
        if self.vars.iter().any(|v| v == name) {
            Ok(())
        } else {
            Err(Error::at(line, format!("undefined variable {name:?}")))
        }
    }
}

/// The name of a `define`, `template` or `block`: a string constant.
fn template_name(tokens: &[Token], line: usize, what: &str) -> Result<String, Error> {
    match tokens.first().map(|t| &t.kind) {
        Some(Tok::Str(name)) => Ok(name.clone()),
        _ => Err(Error::at(line, format!("{what} needs a template name in quotes"))),
    }
}

/// A number constant: an integer (decimal, `0x`, `0o`, `0b`, or Go's leading-zero octal) or a
/// float, with `_` separators.
fn number(text: &str) -> Result<Number, String> {
    let bad = || format!("bad number syntax: {text:?}");
    let clean = text.replace('_', "");
    let (negative, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let radix = |prefix: &[&str]| prefix.iter().find_map(|p| digits.strip_prefix(p));
    let integer = if let Some(hex) = radix(&["0x", "0X"]) {
        Some(u64::from_str_radix(hex, 16).map_err(|_| bad())?)
    } else if let Some(oct) = radix(&["0o", "0O"]) {
        Some(u64::from_str_radix(oct, 8).map_err(|_| bad())?)
    } else if let Some(bin) = radix(&["0b", "0B"]) {
        Some(u64::from_str_radix(bin, 2).map_err(|_| bad())?)
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        Some(u64::from_str_radix(digits, 8).map_err(|_| bad())?)
    } else if digits.bytes().all(|b| b.is_ascii_digit()) {
        Some(digits.parse::<u64>().map_err(|_| bad())?)
    } else {
        None
    };
    match integer {
        Some(value) if negative => {
            let signed = i64::try_from(value).map_err(|_| bad())?;
            Ok(Number::from(-signed))
        }
        Some(value) => Ok(Number::from(value)),
        None => {
            if !digits
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                return Err(bad());
            }
            let value: f64 = clean.parse().map_err(|_| bad())?;
            Number::from_f64(value).ok_or_else(bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::lex::lex;

    fn parse_str(text: &str) -> Result<Parsed, Error> {
        parse(lex(text)?, &|name| matches!(name, "printf" | "include" | "list"))
    }

    #[test]
    fn else_if_chains_nest() {
        let parsed = parse_str("{{if .a}}a{{else if .b}}b{{else}}c{{end}}").unwrap();
        let Node::If(outer) = &parsed.main[0] else { panic!("{parsed:?}") };
        let Some(otherwise) = &outer.otherwise else { panic!("no else") };
        let Node::If(inner) = &otherwise[0] else { panic!("{otherwise:?}") };
        assert_eq!(inner.body, vec![Node::Text("b".into())]);
        assert_eq!(inner.otherwise, Some(vec![Node::Text("c".into())]));
    }

    #[test]
    fn defines_are_collected() {
        let parsed = parse_str("{{define \"x\"}}{{ $y := . }}{{ $y }}{{end}}rest").unwrap();
        assert_eq!(parsed.defines.len(), 1);
        assert_eq!(parsed.defines[0].name, "x");
        assert_eq!(parsed.main, vec![Node::Text("rest".into())]);
    }

    #[test]
    fn checks_before_running() {
        let cases = [
            ("{{ nope . }}", "function \"nope\" not defined"),
            ("{{ $x }}", "undefined variable \"$x\""),
            ("{{ if .a }}x", "has no {{end}}"),
            ("{{ end }}", "unexpected {{end}}"),
            ("{{ break }}", "break outside range"),
            ("{{ if .a }}{{ $x := 1 }}{{ end }}{{ $x }}", "undefined variable"),
            ("{{ 1.a }}", "bad number syntax"),
            ("{{ printf (\"x\" }}", "unclosed left paren"),
        ];
        for (text, expected) in cases {
            let err = parse_str(text).unwrap_err();
            assert!(err.message.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(number("42").unwrap(), Number::from(42));
        assert_eq!(number("-3").unwrap(), Number::from(-3));
        assert_eq!(number("0x1F").unwrap(), Number::from(31));
        assert_eq!(number("017").unwrap(), Number::from(15));
        assert_eq!(number("1_000").unwrap(), Number::from(1000));
        assert_eq!(number("1.5").unwrap(), Number::from_f64(1.5).unwrap());
        assert_eq!(number("1e3").unwrap(), Number::from_f64(1000.0).unwrap());
    }

    #[test]
    fn field_chains() {
        let parsed = parse_str("{{ (include \"x\" .).a.b $.c .d }}").unwrap();
        let Node::Action { pipe, .. } = &parsed.main[0] else { panic!("{parsed:?}") };
        let args = &pipe.cmds[0].args;
        assert!(matches!(&args[0], Operand::Sub(_, f) if f == &["a", "b"]), "{args:?}");
        assert_eq!(args[1], Operand::Var("$".into(), vec!["c".into()]));
        assert_eq!(args[2], Operand::Field(vec!["d".into()]));
    }
}
