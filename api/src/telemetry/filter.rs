//! Access log filter expressions (`accessLogging[].filter.expression`): the common forms of
//! Istio's CEL filters, parsed into a tree the pilot compiles into Envoy's native access log
//! filters (status code, duration, header, and, or). Anything else is refused by validation,
//! naming what is supported, rather than logged for every request or for none.
//!
//! Supported, combined with `&&`, `||`, `!` and parentheses:
//! - `response.code` compared (`==`, `!=`, `<`, `<=`, `>`, `>=`) with a number;
//! - `response.duration` compared with `duration("1s")` (Go/CEL duration syntax);
//! - `request.headers['name'] == 'value'` and `!=` (double quotes too);
//! - `has(request.headers.name)` and `'name' in request.headers`.
//!
//! A number or duration may stand on either side (`400 <= response.code`). Negation is pushed
//! down to the comparisons (`!(a && b)` is `!a || !b`), so every form has an Envoy filter.

use std::fmt;

/// What the supported forms are, for error messages.
pub const SUPPORTED: &str = "response.code or response.duration compared with a number or \
duration(\"...\"), request.headers['name'] == or != 'value', has(request.headers.name), \
joined with &&, || and !";

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compare {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Compare {
    /// The operator that holds exactly when this one does not.
    pub fn negated(self) -> Self {
        match self {
            Compare::Eq => Compare::Ne,
            Compare::Ne => Compare::Eq,
            Compare::Lt => Compare::Ge,
            Compare::Le => Compare::Gt,
            Compare::Gt => Compare::Le,
            Compare::Ge => Compare::Lt,
        }
    }

    /// The operator with its sides swapped (`4 < x` is `x > 4`).
    fn swapped(self) -> Self {
        match self {
            Compare::Lt => Compare::Gt,
            Compare::Le => Compare::Ge,
            Compare::Gt => Compare::Lt,
            Compare::Ge => Compare::Le,
            same => same,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Compare::Eq => "==",
            Compare::Ne => "!=",
            Compare::Lt => "<",
            Compare::Le => "<=",
            Compare::Gt => ">",
            Compare::Ge => ">=",
        }
    }
}

/// What is asked of a request header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HeaderTest {
    /// Present, with exactly this value.
    Equals(String),
    /// Present, with another value.
    NotEquals(String),
    /// Present, any value.
    Present,
    /// Absent.
    Absent,
}

/// A parsed filter expression.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `response.code <op> value`.
    ResponseCode(Compare, u32),
    /// `response.duration <op> value`, in milliseconds.
    ResponseDuration(Compare, u64),
    /// A test of a request header (the name in lowercase).
    Header(String, HeaderTest),
    /// Every one of these holds (two or more).
    And(Vec<Expr>),
    /// One of these holds (two or more).
    Or(Vec<Expr>),
}

/// Why an expression is not one the mesh compiles.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (at character {at}); the mesh compiles {SUPPORTED}")]
pub struct FilterError {
    /// What is wrong.
    pub reason: String,
    /// Where, from 1.
    pub at: usize,
}

/// Parses an expression of the supported forms.
pub fn parse(expression: &str) -> Result<Expr, FilterError> {
    let tokens = lex(expression)?;
    let mut parser = Parser { tokens, next: 0, end: expression.chars().count() + 1 };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some((token, at)) => Err(FilterError { reason: format!("unexpected {token}"), at }),
    }
}

impl Expr {
    /// The expression that holds exactly when this one does not.
    pub fn negated(self) -> Expr {
        match self {
            Expr::ResponseCode(op, v) => Expr::ResponseCode(op.negated(), v),
            Expr::ResponseDuration(op, v) => Expr::ResponseDuration(op.negated(), v),
            Expr::Header(name, test) => Expr::Header(
                name,
                match test {
                    HeaderTest::Equals(v) => HeaderTest::NotEquals(v),
                    HeaderTest::NotEquals(v) => HeaderTest::Equals(v),
                    HeaderTest::Present => HeaderTest::Absent,
                    HeaderTest::Absent => HeaderTest::Present,
                },
            ),
            Expr::And(items) => Expr::Or(items.into_iter().map(Expr::negated).collect()),
            Expr::Or(items) => Expr::And(items.into_iter().map(Expr::negated).collect()),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined = |f: &mut fmt::Formatter<'_>, items: &[Expr], op: &str| {
            let parts: Vec<String> = items.iter().map(|e| format!("({e})")).collect();
            f.write_str(&parts.join(op))
        };
        match self {
            Expr::ResponseCode(op, v) => write!(f, "response.code {} {v}", op.symbol()),
            Expr::ResponseDuration(op, ms) => {
                write!(f, "response.duration {} duration(\"{ms}ms\")", op.symbol())
            }
            Expr::Header(name, HeaderTest::Equals(v)) => {
                write!(f, "request.headers['{}'] == '{}'", quoted(name), quoted(v))
            }
            Expr::Header(name, HeaderTest::NotEquals(v)) => {
                write!(f, "request.headers['{}'] != '{}'", quoted(name), quoted(v))
            }
            Expr::Header(name, HeaderTest::Present) => {
                write!(f, "'{}' in request.headers", quoted(name))
            }
            Expr::Header(name, HeaderTest::Absent) => {
                write!(f, "!('{}' in request.headers)", quoted(name))
            }
            Expr::And(items) => joined(f, items, " && "),
            Expr::Or(items) => joined(f, items, " || "),
        }
    }
}

/// Text for a single-quoted literal.
fn quoted(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Int(u64),
    Str(String),
    Op(&'static str),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(name) => write!(f, "`{name}`"),
            Token::Int(n) => write!(f, "`{n}`"),
            Token::Str(s) => write!(f, "string {s:?}"),
            Token::Op(op) => write!(f, "`{op}`"),
        }
    }
}

/// The operators, longest first so that `<=` is not read as `<`.
const OPERATORS: &[&str] =
    &["==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", ".", ","];

fn lex(text: &str) -> Result<Vec<(Token, usize)>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let mut value = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(FilterError { reason: "unterminated string".into(), at });
                    }
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        let Some(&escaped) = chars.get(i + 1) else {
                            return Err(FilterError { reason: "unterminated string".into(), at });
                        };
                        value.push(escaped);
                        i += 2;
                    }
                    Some(&other) => {
                        value.push(other);
                        i += 1;
                    }
                }
            }
            i += 1;
            out.push((Token::Str(value), at));
        } else if c.is_ascii_digit() {
            let start = i;
            while chars.get(i).is_some_and(char::is_ascii_digit) {
                i += 1;
            }
            let digits: String = chars[start..i].iter().collect();
            let value = digits
                .parse()
                .map_err(|_| FilterError { reason: format!("number {digits} is too large"), at })?;
            out.push((Token::Int(value), at));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while chars.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
                i += 1;
            }
            out.push((Token::Ident(chars[start..i].iter().collect()), at));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(op) = OPERATORS.iter().find(|op| rest.starts_with(**op)) else {
                return Err(FilterError { reason: format!("unexpected character {c:?}"), at });
            };
            i += op.chars().count();
            out.push((Token::Op(op), at));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    next: usize,
    /// The position reported for "ended too soon".
    end: usize,
}

/// An operand of a comparison.
enum Operand {
    Code,
    Duration,
    Header(String),
    Number(u64),
    Millis(u64),
    Text(String),
}

impl Parser {
    fn peek(&self) -> Option<(&Token, usize)> {
        self.tokens.get(self.next).map(|(t, at)| (t, *at))
    }

    fn at(&self) -> usize {
        self.peek().map_or(self.end, |(_, at)| at)
    }

    fn error<T>(&self, reason: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError { reason: reason.into(), at: self.at() })
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some((Token::Op(o), _)) if *o == op) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), FilterError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            match self.peek() {
                Some((token, _)) => self.error(format!("expected `{op}`, found {token}")),
                None => self.error(format!("expected `{op}`, found the end")),
            }
        }
    }

    fn eat_ident(&mut self, name: &str) -> bool {
        if matches!(self.peek(), Some((Token::Ident(i), _)) if i == name) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut items = vec![self.and()?];
        while self.eat_op("||") {
            items.push(self.and()?);
        }
        Ok(flatten(items, false))
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut items = vec![self.unary()?];
        while self.eat_op("&&") {
            items.push(self.unary()?);
        }
        Ok(flatten(items, true))
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.eat_op("!") {
            return Ok(self.unary()?.negated());
        }
        if self.eat_op("(") {
            let inner = self.or()?;
            self.expect_op(")")?;
            return Ok(inner);
        }
        if self.eat_ident("has") {
            self.expect_op("(")?;
            let name = self.header_select()?;
            self.expect_op(")")?;
            return Ok(Expr::Header(name, HeaderTest::Present));
        }
        let at = self.at();
        let left = self.operand()?;
        if self.eat_ident("in") {
            let Operand::Text(name) = left else {
                return Err(FilterError {
                    reason: "only a header name may come before `in`".into(),
                    at,
                });
            };
            self.path(&["request", "headers"])?;
            return Ok(Expr::Header(name.to_ascii_lowercase(), HeaderTest::Present));
        }
        let op = match self.peek() {
            Some((Token::Op(op), _)) => match *op {
                "==" => Compare::Eq,
                "!=" => Compare::Ne,
                "<" => Compare::Lt,
                "<=" => Compare::Le,
                ">" => Compare::Gt,
                ">=" => Compare::Ge,
                other => return self.error(format!("expected a comparison, found `{other}`")),
            },
            Some((token, _)) => return self.error(format!("expected a comparison, found {token}")),
            None => return self.error("expected a comparison, found the end"),
        };
        self.next += 1;
        let right = self.operand()?;
        comparison(left, op, right, at)
    }

    /// `request.headers.name` (in `has(...)`), the name in lowercase.
    fn header_select(&mut self) -> Result<String, FilterError> {
        self.path(&["request", "headers"])?;
        self.expect_op(".")?;
        match self.peek() {
            Some((Token::Ident(name), _)) => {
                let name = name.to_ascii_lowercase();
                self.next += 1;
                Ok(name)
            }
            _ => self.error("has() takes request.headers.<name>"),
        }
    }

    /// The dotted path `names`, or an error naming what was expected.
    fn path(&mut self, names: &[&str]) -> Result<(), FilterError> {
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                self.expect_op(".")?;
            }
            if !self.eat_ident(name) {
                return self.error(format!("expected {}", names.join(".")));
            }
        }
        Ok(())
    }

    fn operand(&mut self) -> Result<Operand, FilterError> {
        let Some((token, _)) = self.peek() else {
            return self.error("expected a value, found the end");
        };
        match token.clone() {
            Token::Int(n) => {
                self.next += 1;
                Ok(Operand::Number(n))
            }
            Token::Str(s) => {
                self.next += 1;
                Ok(Operand::Text(s))
            }
            Token::Ident(name) if name == "duration" => {
                self.next += 1;
                self.expect_op("(")?;
                let at = self.at();
                let Some((Token::Str(text), _)) = self.peek() else {
                    return self.error("duration() takes a string such as \"100ms\"");
                };
                let text = text.clone();
                self.next += 1;
                self.expect_op(")")?;
                let millis = crate::duration::parse(&text)
                    .map_err(|e| FilterError { reason: format!("duration {text:?}: {e}"), at })?
                    .as_millis();
                let millis = u64::try_from(millis).map_err(|_| FilterError {
                    reason: format!("duration {text:?} is too long"),
                    at,
                })?;
                Ok(Operand::Millis(millis))
            }
            Token::Ident(name) if name == "response" => {
                self.next += 1;
                self.expect_op(".")?;
                if self.eat_ident("code") {
                    Ok(Operand::Code)
                } else if self.eat_ident("duration") {
                    Ok(Operand::Duration)
                } else {
                    self.error(
                        "of response, only response.code and response.duration are supported",
                    )
                }
            }
            Token::Ident(name) if name == "request" => {
                self.next += 1;
                self.expect_op(".")?;
                if !self.eat_ident("headers") {
                    return self.error("of request, only request.headers['name'] is supported");
                }
                self.expect_op("[")?;
                let Some((Token::Str(name), _)) = self.peek() else {
                    return self
                        .error("request.headers takes a quoted name: request.headers['x-name']");
                };
                let name = name.to_ascii_lowercase();
                self.next += 1;
                self.expect_op("]")?;
                Ok(Operand::Header(name))
            }
            Token::Ident(name) => self.error(format!("unsupported attribute or function `{name}`")),
            Token::Op(op) => self.error(format!("expected a value, found `{op}`")),
        }
    }
}

fn flatten(items: Vec<Expr>, and: bool) -> Expr {
    let mut out = Vec::new();
    for item in items {
        match (item, and) {
            (Expr::And(inner), true) | (Expr::Or(inner), false) => out.extend(inner),
            (other, _) => out.push(other),
        }
    }
    if out.len() == 1 {
        out.remove(0)
    } else if and {
        Expr::And(out)
    } else {
        Expr::Or(out)
    }
}

fn comparison(left: Operand, op: Compare, right: Operand, at: usize) -> Result<Expr, FilterError> {
    let err = |reason: &str| Err(FilterError { reason: reason.to_owned(), at });
    let (attribute, op, value) = match (left, right) {
        (attr @ (Operand::Code | Operand::Duration | Operand::Header(_)), value) => {
            (attr, op, value)
        }
        (value, attr @ (Operand::Code | Operand::Duration | Operand::Header(_))) => {
            (attr, op.swapped(), value)
        }
        _ => {
            return err(
                "a comparison needs response.code, response.duration or a header on one side",
            );
        }
    };
    match (attribute, value) {
        (Operand::Code, Operand::Number(n)) => {
            let Ok(code) = u32::try_from(n) else { return err("status code too large") };
            if op == Compare::Lt && code == 0 {
                return err("no status code is below 0");
            }
            Ok(Expr::ResponseCode(op, code))
        }
        (Operand::Code, _) => err("response.code compares with a number"),
        (Operand::Duration, Operand::Millis(ms)) => {
            if u32::try_from(ms.saturating_add(1)).is_err() {
                return err("durations up to 49 days are supported");
            }
            if op == Compare::Lt && ms == 0 {
                return err("no duration is below 0");
            }
            Ok(Expr::ResponseDuration(op, ms))
        }
        (Operand::Duration, _) => err("response.duration compares with duration(\"...\")"),
        (Operand::Header(name), Operand::Text(value)) => match op {
            Compare::Eq => Ok(Expr::Header(name, HeaderTest::Equals(value))),
            Compare::Ne => Ok(Expr::Header(name, HeaderTest::NotEquals(value))),
            _ => err("a header is compared with == or != only"),
        },
        (Operand::Header(_), _) => err("a header compares with a quoted string"),
        _ => err("unsupported comparison"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Expr {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn fails(text: &str) -> String {
        match parse(text) {
            Ok(expr) => panic!("{text} parsed as {expr:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn status_code_comparisons() {
        assert_eq!(ok("response.code >= 400"), Expr::ResponseCode(Compare::Ge, 400));
        assert_eq!(ok("response.code == 503"), Expr::ResponseCode(Compare::Eq, 503));
        assert_eq!(ok("response.code != 200"), Expr::ResponseCode(Compare::Ne, 200));
        assert_eq!(ok("response.code<500"), Expr::ResponseCode(Compare::Lt, 500));
        assert_eq!(ok("response.code > 299"), Expr::ResponseCode(Compare::Gt, 299));
        assert_eq!(ok("400 <= response.code"), Expr::ResponseCode(Compare::Ge, 400));
    }

    #[test]
    fn durations_in_milliseconds() {
        assert_eq!(
            ok("response.duration > duration('1.5s')"),
            Expr::ResponseDuration(Compare::Gt, 1500)
        );
        assert_eq!(
            ok("response.duration <= duration(\"100ms\")"),
            Expr::ResponseDuration(Compare::Le, 100)
        );
    }

    #[test]
    fn headers() {
        assert_eq!(
            ok("request.headers['X-Debug'] == 'on'"),
            Expr::Header("x-debug".into(), HeaderTest::Equals("on".into()))
        );
        assert_eq!(
            ok("request.headers[\"user-agent\"] != \"probe\""),
            Expr::Header("user-agent".into(), HeaderTest::NotEquals("probe".into()))
        );
        assert_eq!(
            ok("has(request.headers.authorization)"),
            Expr::Header("authorization".into(), HeaderTest::Present)
        );
        assert_eq!(
            ok("'x-b3-traceid' in request.headers"),
            Expr::Header("x-b3-traceid".into(), HeaderTest::Present)
        );
        assert_eq!(
            ok("!has(request.headers.authorization)"),
            Expr::Header("authorization".into(), HeaderTest::Absent)
        );
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let expr = ok("response.code >= 500 || response.code == 429 && has(request.headers.x)");
        assert_eq!(
            expr,
            Expr::Or(vec![
                Expr::ResponseCode(Compare::Ge, 500),
                Expr::And(vec![
                    Expr::ResponseCode(Compare::Eq, 429),
                    Expr::Header("x".into(), HeaderTest::Present),
                ]),
            ])
        );
        let grouped =
            ok("(response.code >= 500 || response.code == 429) && has(request.headers.x)");
        assert!(matches!(grouped, Expr::And(ref items) if matches!(items[0], Expr::Or(_))));
        // Chains flatten: Envoy's and/or filters take any number of filters.
        assert!(matches!(ok("response.code == 1 || response.code == 2 || response.code == 3"),
            Expr::Or(ref items) if items.len() == 3));
    }

    #[test]
    fn negation_is_pushed_down() {
        assert_eq!(
            ok("!(response.code >= 400 && request.headers['x'] == 'y')"),
            Expr::Or(vec![
                Expr::ResponseCode(Compare::Lt, 400),
                Expr::Header("x".into(), HeaderTest::NotEquals("y".into())),
            ])
        );
    }

    #[test]
    fn unsupported_forms_name_what_is_supported() {
        let err = fails("connection.mtls && request.url_path.contains('v1beta3')");
        assert!(
            err.starts_with("unsupported attribute or function `connection` (at character 1)"),
            "{err}"
        );
        assert!(err.contains("the mesh compiles response.code or response.duration"), "{err}");
        let err = fails("request.useragent.startsWith('Amazon')");
        assert!(err.starts_with("of request, only request.headers['name'] is supported"), "{err}");
        assert!(
            fails("response.code >= '400'").starts_with("response.code compares with a number")
        );
        assert!(
            fails("request.headers['x'] > 'a'")
                .starts_with("a header is compared with == or != only")
        );
        assert!(fails("response.code >= 400 &&").starts_with("expected a value, found the end"));
        assert!(fails("response.code < 0").starts_with("no status code is below 0"));
        assert!(fails("response.code >= 400)").starts_with("unexpected `)`"));
        assert!(fails("response.duration > duration('soon')").starts_with("duration \"soon\""));
        assert!(fails("").starts_with("expected a value, found the end"));
    }

    #[test]
    fn display_reads_back_the_same() {
        for text in [
            "response.code >= 400",
            "response.duration > duration('2s') || request.headers['x'] != 'y'",
            "!has(request.headers.z) && 'w' in request.headers",
        ] {
            let expr = ok(text);
            assert_eq!(ok(&expr.to_string()), expr, "{expr}");
        }
    }
}
