//! The lexer: template text split into literal text and actions (`{{ ... }}`), the actions into
//! tokens, as Go's `text/template/parse` lexes them. Trim markers (`{{- ` and ` -}}`) are applied
//! here, to the text beside them; comments (`{{/* ... */}}`) leave nothing behind.

use super::Error;

/// A piece of a template: literal text, or one action's tokens.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Segment {
    /// Text copied to the output.
    Text(String),
    /// The tokens of one action, and the line it starts on.
    Action(Vec<Token>, usize),
}

/// One token of an action.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub kind: Tok,
    pub line: usize,
    /// Whether white space came before it (`.a.b` is one chain, `.a .b` two operands).
    pub spaced: bool,
}

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A function name.
    Ident(String),
    /// `.name`, without the dot.
    Field(String),
    /// `$` or `$name`, with the dollar.
    Var(String),
    /// `.` alone.
    Dot,
    /// A string constant, unquoted.
    Str(String),
    /// A number constant, as written.
    Num(String),
    /// A character constant (`'a'`), a number in Go.
    Char(char),
    Bool(bool),
    Nil,
    Pipe,
    LParen,
    RParen,
    /// `:=`
    Declare,
    /// `=`
    Assign,
    Comma,
    Keyword(Keyword),
}

/// The words that start or end a control structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keyword {
    If,
    Else,
    End,
    Range,
    With,
    Define,
    Template,
    Block,
    Break,
    Continue,
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{s}"),
            Tok::Field(s) => write!(f, ".{s}"),
            Tok::Var(s) | Tok::Num(s) => write!(f, "{s}"),
            Tok::Dot => write!(f, "."),
            Tok::Str(s) => write!(f, "{s:?}"),
            Tok::Char(c) => write!(f, "{c:?}"),
            Tok::Bool(b) => write!(f, "{b}"),
            Tok::Nil => write!(f, "nil"),
            Tok::Pipe => write!(f, "|"),
            Tok::LParen => write!(f, "("),
            Tok::RParen => write!(f, ")"),
            Tok::Declare => write!(f, ":="),
            Tok::Assign => write!(f, "="),
            Tok::Comma => write!(f, ","),
            Tok::Keyword(k) => write!(f, "{}", format!("{k:?}").to_lowercase()),
        }
    }
}

const OPEN: &str = "{{";
const CLOSE: &str = "}}";

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits `source` into segments.
pub(crate) fn lex(source: &str) -> Result<Vec<Segment>, Error> {
    let mut lexer = Lexer { src: source, pos: 0, line: 1, segments: Vec::new() };
    lexer.run()?;
    Ok(lexer.segments)
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    segments: Vec<Segment>,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::at(self.line, message)
    }

    fn push_text(&mut self, text: &str) {
        if !text.is_empty() {
            self.segments.push(Segment::Text(text.to_owned()));
        }
    }

    /// Removes trailing white space from the text before a `{{-`.
    fn trim_previous_text(&mut self) {
        if let Some(Segment::Text(text)) = self.segments.last_mut() {
            let kept = text.trim_end_matches(is_space).len();
            text.truncate(kept);
            if text.is_empty() {
                self.segments.pop();
            }
        }
    }

    fn run(&mut self) -> Result<(), Error> {
        let mut trim_next = false;
        loop {
            let rest = self.rest();
            let found = rest.find(OPEN);
            let end = found.unwrap_or(rest.len());
            let text = &rest[..end];
            let text = if trim_next { text.trim_start_matches(is_space) } else { text }.to_owned();
            self.advance(end);
            self.push_text(&text);
            if found.is_none() {
                return Ok(());
            }
            self.advance(OPEN.len());
            let after = self.rest();
            let trim_left = after.starts_with('-') && after[1..].starts_with(is_space);
            if trim_left {
                self.trim_previous_text();
                self.advance(1);
            }
            trim_next = self.action(trim_left)?;
        }
    }

    fn advance(&mut self, bytes: usize) {
        let end = self.pos + bytes;
        while self.pos < end {
            self.bump();
        }
    }

    /// Lexes one action (after its `{{` and the `-` of a trim marker); returns whether it ends
    /// with a trim marker.
    fn action(&mut self, trimmed: bool) -> Result<bool, Error> {
        let start_line = self.line;
        // A comment starts right at the delimiter, or right after `{{- `; it ends right at the
        // closing delimiter, or right before ` -}}` (Go refuses anything else).
        let rest = self.rest();
        let marker_space = usize::from(trimmed && rest.starts_with(is_space));
        if rest[marker_space..].starts_with("/*") {
            self.advance(marker_space + 2);
            let Some(end) = self.rest().find("*/") else {
                return Err(self.error("unclosed comment"));
            };
            self.advance(end + 2);
            let rest = self.rest();
            if rest.starts_with(CLOSE) {
                self.advance(CLOSE.len());
                return Ok(false);
            }
            if rest.starts_with(is_space) && rest[1..].starts_with("-}}") {
                self.advance(4);
                return Ok(true);
            }
            return Err(self.error("comment ends before closing delimiter"));
        }
        let mut tokens = Vec::new();
        loop {
            let before = self.pos;
            while self.peek().is_some_and(is_space) {
                self.bump();
            }
            let spaced = self.pos > before;
            let rest = self.rest();
            if spaced && rest.starts_with("-}}") {
                self.advance(3);
                self.segments.push(Segment::Action(tokens, start_line));
                return Ok(true);
            }
            if rest.starts_with(CLOSE) {
                self.advance(CLOSE.len());
                self.segments.push(Segment::Action(tokens, start_line));
                return Ok(false);
            }
            let Some(c) = self.peek() else {
                return Err(Error::at(start_line, "unclosed action"));
            };
            let line = self.line;
            let kind = self.token(c)?;
            tokens.push(Token { kind, line, spaced });
        }
    }

    fn token(&mut self, c: char) -> Result<Tok, Error> {
        match c {
            '|' => {
                self.bump();
                Ok(Tok::Pipe)
            }
            '(' => {
                self.bump();
                Ok(Tok::LParen)
            }
            ')' => {
                self.bump();
                Ok(Tok::RParen)
            }
            ',' => {
                self.bump();
                Ok(Tok::Comma)
            }
            '=' => {
                self.bump();
                Ok(Tok::Assign)
            }
            ':' => {
                self.bump();
                if self.peek() == Some('=') {
                    self.bump();
                    Ok(Tok::Declare)
                } else {
                    Err(self.error("expected :="))
                }
            }
            '"' => self.quoted(),
            '`' => {
                self.bump();
                let Some(end) = self.rest().find('`') else {
                    return Err(self.error("unterminated raw quoted string"));
                };
                let text = self.rest()[..end].to_owned();
                self.advance(end + 1);
                Ok(Tok::Str(text))
            }
            '\'' => self.char_constant(),
            '$' => {
                self.bump();
                let name = self.take_while(is_ident_char);
                Ok(Tok::Var(format!("${name}")))
            }
            '.' => {
                let next = self.rest()[1..].chars().next();
                match next {
                    Some(d) if d.is_ascii_digit() => Ok(Tok::Num(self.number())),
                    Some(n) if is_ident_char(n) => {
                        self.bump();
                        Ok(Tok::Field(self.take_while(is_ident_char)))
                    }
                    _ => {
                        self.bump();
                        Ok(Tok::Dot)
                    }
                }
            }
            '+' | '-' | '0'..='9' => {
                if matches!(c, '+' | '-')
                    && !self.rest()[1..].starts_with(|d: char| d.is_ascii_digit() || d == '.')
                {
                    return Err(self.error(format!("unexpected {c:?} in command")));
                }
                Ok(Tok::Num(self.number()))
            }
            c if c == '_' || c.is_alphabetic() => {
                let word = self.take_while(is_ident_char);
                Ok(match word.as_str() {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "nil" => Tok::Nil,
                    "if" => Tok::Keyword(Keyword::If),
                    "else" => Tok::Keyword(Keyword::Else),
                    "end" => Tok::Keyword(Keyword::End),
                    "range" => Tok::Keyword(Keyword::Range),
                    "with" => Tok::Keyword(Keyword::With),
                    "define" => Tok::Keyword(Keyword::Define),
                    "template" => Tok::Keyword(Keyword::Template),
                    "block" => Tok::Keyword(Keyword::Block),
                    "break" => Tok::Keyword(Keyword::Break),
                    "continue" => Tok::Keyword(Keyword::Continue),
                    _ => Tok::Ident(word),
                })
            }
            other => Err(self.error(format!("unexpected {other:?} in action"))),
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let rest = self.rest();
        let len = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        let word = rest[..len].to_owned();
        self.advance(len);
        word
    }

    /// A number as Go's lexer takes it: sign, digits, letters (bases, exponents), dots and
    /// underscores; an exponent's sign after `e` or `p`. The parser checks the syntax.
    fn number(&mut self) -> String {
        let mut text = String::new();
        if let Some(sign @ ('+' | '-')) = self.peek() {
            text.push(sign);
            self.bump();
        }
        let hex = self.rest().starts_with("0x") || self.rest().starts_with("0X");
        while let Some(c) = self.peek() {
            let exponent_sign = matches!(c, '+' | '-')
                && text.ends_with(|p: char| {
                    if hex { matches!(p, 'p' | 'P') } else { matches!(p, 'e' | 'E') }
                });
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || exponent_sign {
                text.push(c);
                self.bump();
            } else {
                break;
            }
        }
        text
    }

    fn quoted(&mut self) -> Result<Tok, Error> {
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => return Err(self.error("unterminated quoted string")),
                Some('"') => return Ok(Tok::Str(out)),
                Some('\\') => out.push(self.escape('"')?),
                Some(c) => out.push(c),
            }
        }
    }

    fn char_constant(&mut self) -> Result<Tok, Error> {
        self.bump();
        let c = match self.bump() {
            None | Some('\n') => return Err(self.error("unterminated character constant")),
            Some('\\') => self.escape('\'')?,
            Some(c) => c,
        };
        if self.bump() != Some('\'') {
            return Err(self.error("malformed character constant"));
        }
        Ok(Tok::Char(c))
    }

    /// The character a backslash escape stands for (Go's escapes).
    fn escape(&mut self, quote: char) -> Result<char, Error> {
        let c = self.bump().ok_or_else(|| self.error("unterminated escape"))?;
        let hex = |lexer: &mut Self, digits: usize| -> Result<char, Error> {
            let text: String = lexer.rest().chars().take(digits).collect();
            if text.len() != digits {
                return Err(lexer.error("short escape sequence"));
            }
            lexer.advance(digits);
            u32::from_str_radix(&text, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| lexer.error(format!("invalid escape \\{c}{text}")))
        };
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            '\\' => '\\',
            'x' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            '0'..='7' => {
                let rest: String = self.rest().chars().take(2).collect();
                let text = format!("{c}{rest}");
                let value = u32::from_str_radix(&text, 8)
                    .map_err(|_| self.error(format!("invalid escape \\{text}")))?;
                self.advance(2);
                char::from_u32(value).ok_or_else(|| self.error("invalid octal escape"))?
            }
            c if c == quote => c,
            other => return Err(self.error(format!("unknown escape sequence \\{other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(segment: &Segment) -> Vec<Tok> {
        match segment {
            Segment::Action(tokens, _) => tokens.iter().map(|t| t.kind.clone()).collect(),
            Segment::Text(_) => panic!("text"),
        }
    }

    #[test]
    fn trims_and_splits() {
        let segments = lex("a  \n{{- .x -}}\n  b{{/* c */}}d {{- /* e */ -}} f").unwrap();
        assert_eq!(segments.len(), 5);
        assert_eq!(segments[0], Segment::Text("a".into()));
        assert_eq!(kinds(&segments[1]), vec![Tok::Field("x".into())]);
        assert_eq!(segments[2], Segment::Text("b".into()));
        assert_eq!(segments[3], Segment::Text("d".into()));
        assert_eq!(segments[4], Segment::Text("f".into()));
    }

    #[test]
    fn tokens() {
        let segments = lex(r#"{{ $x := .a.b | printf "%d\n" -3 'a' `r` (len $) }}"#).unwrap();
        assert_eq!(
            kinds(&segments[0]),
            vec![
                Tok::Var("$x".into()),
                Tok::Declare,
                Tok::Field("a".into()),
                Tok::Field("b".into()),
                Tok::Pipe,
                Tok::Ident("printf".into()),
                Tok::Str("%d\n".into()),
                Tok::Num("-3".into()),
                Tok::Char('a'),
                Tok::Str("r".into()),
                Tok::LParen,
                Tok::Ident("len".into()),
                Tok::Var("$".into()),
                Tok::RParen,
            ]
        );
    }

    #[test]
    fn comments_sit_at_the_delimiters_as_in_go() {
        assert_eq!(
            lex("a{{/* c */}}b{{- /* c */ -}} c").unwrap(),
            ["a", "b", "c"].map(|t| Segment::Text(t.into()))
        );
        assert!(lex("{{ /* c */ }}").is_err());
        assert_eq!(
            lex("{{/* c */ }}").unwrap_err().message,
            "comment ends before closing delimiter"
        );
    }

    #[test]
    fn negative_number_is_not_a_trim_marker() {
        let segments = lex("{{-3}}").unwrap();
        assert_eq!(kinds(&segments[0]), vec![Tok::Num("-3".into())]);
    }

    #[test]
    fn lines_are_counted() {
        let err = lex("a\nb\n{{ .x ").unwrap_err();
        assert_eq!(err.line, 3);
        let segments = lex("\n\n{{\n.x }}").unwrap();
        match &segments[1] {
            Segment::Action(tokens, line) => {
                assert_eq!(*line, 3);
                assert_eq!(tokens[0].line, 4);
            }
            Segment::Text(_) => panic!("text"),
        }
    }
}
