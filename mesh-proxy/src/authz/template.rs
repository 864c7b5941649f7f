//! Envoy's URI templates (`envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig`,
//! which Istio's AuthorizationPolicy path templates compile to): `*` matches one path segment,
//! `**` zero or more (nothing but literals may follow it), `{name}` and `{name=...}` are
//! variables over the same operators, and the rest is literal. Istio's own spelling `{*}` and
//! `{**}` is read as `*` and `**`, as the pilot writes them. A template becomes one regex
//! matched against the whole path without its query, as Envoy's matcher does.

use regex::Regex;

/// The characters of a path segment (RFC 3986 pchar, `%` of percent-encodings included).
const SEGMENT: &str = r"[A-Za-z0-9\-._~%!$&'()+,;:@=]";
/// Variables per template, and the lengths of their names (Envoy's limits).
const MAX_VARIABLES: usize = 5;
const MAX_NAME: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Operator {
    /// `*`: one segment.
    Segment,
    /// `**`: zero or more segments.
    Segments,
}

#[derive(Debug)]
enum Part {
    Literal(String),
    Operator(Operator),
    /// A variable: its parts (empty: one segment).
    Variable(Vec<Part>),
}

/// The regex matching the paths of `template`; the error says why Envoy would refuse it.
pub(super) fn compile(template: &str) -> Result<Regex, String> {
    let template = template.replace("{**}", "**").replace("{*}", "*");
    let invalid = |why: &str| format!("uri template {template:?}: {why}");
    if !template.starts_with('/') || !template.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("it must start with / and hold printable characters only"));
    }
    let parts = parse(&template).map_err(|why| invalid(&why))?;
    check(&parts).map_err(|why| invalid(&why))?;
    let mut pattern = String::from("^");
    for part in &parts {
        push_regex(&mut pattern, part);
    }
    pattern.push('$');
    Regex::new(&pattern).map_err(|e| invalid(&e.to_string()))
}

fn parse(mut rest: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut names = Vec::new();
    while !rest.is_empty() {
        if rest.starts_with('*') {
            let (operator, after) = operator(rest);
            parts.push(Part::Operator(operator));
            rest = after;
        } else if let Some(inner) = rest.strip_prefix('{') {
            let (body, after) = inner.split_once('}').ok_or("unmatched {")?;
            let (name, pattern) = match body.split_once('=') {
                Some((name, pattern)) => (name, Some(pattern)),
                None => (body, None),
            };
            let valid_name = name.len() <= MAX_NAME
                && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(format!("invalid variable name {name:?}"));
            }
            if names.contains(&name) {
                return Err(format!("repeated variable name {name:?}"));
            }
            names.push(name);
            if names.len() > MAX_VARIABLES {
                return Err(format!("more than {MAX_VARIABLES} variables"));
            }
            parts.push(Part::Variable(match pattern {
                None => Vec::new(),
                Some("") => return Err("empty variable match".to_owned()),
                Some(pattern) => variable(pattern)?,
            }));
            rest = after;
        } else {
            let (literal, after) = literal(rest)?;
            parts.push(Part::Literal(literal.to_owned()));
            rest = after;
        }
    }
    Ok(parts)
}

fn operator(rest: &str) -> (Operator, &str) {
    match rest.strip_prefix("**") {
        Some(after) => (Operator::Segments, after),
        None => (Operator::Segment, &rest[1..]),
    }
}

/// A literal: a `/`, or the text up to the next `/` or `{`.
fn literal(rest: &str) -> Result<(&str, &str), String> {
    if let Some(after) = rest.strip_prefix('/') {
        return Ok(("/", after));
    }
    let end = rest.find(['/', '{']).unwrap_or(rest.len());
    let (literal, after) = rest.split_at(end);
    let pchar = |c: char| c.is_ascii_alphanumeric() || "-._~%!$&'()+,;:@=".contains(c);
    if literal.is_empty() || !literal.chars().all(pchar) {
        return Err(format!("invalid literal {literal:?}"));
    }
    Ok((literal, after))
}

/// The parts of a variable's match (`{name=a/*/**}`): no literal right after an operator
/// unless it is a `/`, and no two operators in a row.
fn variable(mut rest: &str) -> Result<Vec<Part>, String> {
    let mut parts: Vec<Part> = Vec::new();
    while !rest.is_empty() {
        let after_operator = matches!(parts.last(), Some(Part::Operator(_)));
        if rest.starts_with('*') && !after_operator {
            let (operator, after) = operator(rest);
            parts.push(Part::Operator(operator));
            rest = after;
        } else if after_operator && !rest.starts_with('/') {
            return Err("a variable's operator must be followed by a /".to_owned());
        } else {
            let (literal, after) = literal(rest)?;
            parts.push(Part::Literal(literal.to_owned()));
            rest = after;
        }
    }
    Ok(parts)
}

/// Envoy's checks: nothing that matches segments after a `**`, and no `//`.
fn check(parts: &[Part]) -> Result<(), String> {
    let mut after_segments = false;
    let mut operators = Vec::new();
    for part in parts {
        match part {
            Part::Operator(o) => operators.push(*o),
            Part::Variable(inner) if inner.is_empty() => operators.push(Operator::Segment),
            Part::Variable(inner) => operators.extend(inner.iter().filter_map(|p| match p {
                Part::Operator(o) => Some(*o),
                _ => None,
            })),
            Part::Literal(_) => continue,
        }
        for o in operators.drain(..) {
            if after_segments {
                return Err("an operator after **".to_owned());
            }
            after_segments = o == Operator::Segments;
        }
    }
    let slash = |p: &Part| match p {
        Part::Literal(l) => l == "/",
        Part::Variable(inner) => matches!(inner.first(), Some(Part::Literal(l)) if l == "/"),
        Part::Operator(_) => false,
    };
    if parts.windows(2).any(|w| slash(&w[0]) && slash(&w[1])) {
        return Err("a double slash".to_owned());
    }
    Ok(())
}

fn push_regex(pattern: &mut String, part: &Part) {
    match part {
        Part::Literal(l) => pattern.push_str(&regex::escape(l)),
        Part::Operator(Operator::Segment) => {
            pattern.push_str(SEGMENT);
            pattern.push('+');
        }
        Part::Operator(Operator::Segments) => {
            pattern.push_str(&SEGMENT.replace(']', "/]"));
            pattern.push('*');
        }
        Part::Variable(inner) if inner.is_empty() => {
            push_regex(pattern, &Part::Operator(Operator::Segment));
        }
        Part::Variable(inner) => {
            pattern.push_str("(?:");
            for p in inner {
                push_regex(pattern, p);
            }
            pattern.push(')');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(template: &str, path: &str) -> bool {
        compile(template).unwrap().is_match(path)
    }

    #[test]
    fn one_segment_and_any_segments() {
        assert!(matches("/books/{*}", "/books/dune"));
        assert!(!matches("/books/{*}", "/books/"), "one segment is at least one character");
        assert!(!matches("/books/{*}", "/books/dune/chapter"));
        assert!(!matches("/books/{*}", "/books"));
        assert!(matches("/books/{*}/reviews", "/books/dune/reviews"));
        assert!(!matches("/books/{*}/reviews", "/books/a/b/reviews"));
        assert!(matches("/books/{**}", "/books/"));
        assert!(matches("/books/{**}", "/books/a/b/c"));
        assert!(!matches("/books/{**}", "/books"), "the / before ** is literal");
        assert!(matches("/{*}/admin/{**}", "/v1/admin/users/1"));
        assert!(matches("/files/{**}/meta", "/files/a/b/meta"));
        assert!(matches("/files/*.txt", "/files/a.txt"), "Envoy's own spelling");
        assert!(!matches("/files/*.txt", "/files/a/b.txt"));
        assert!(matches("/users/{id}/photos/{p=**}", "/users/7/photos/2020/x.jpg"));
        assert!(matches("/a/%2F/{*}", "/a/%2F/b"), "percent-encodings are segment characters");
        assert!(!matches("/a/{*}", "/a/b?c"), "the caller strips the query; ? is no pchar");
    }

    #[test]
    fn templates_envoy_refuses_are_refused() {
        for bad in [
            "books/{*}",
            "/books/{**}/{*}",
            "/books/**/*",
            "/a//b",
            "/a/{1x}",
            "/a/{x}/{x}",
            "/a/{x=}",
            "/a b",
            "/a/{x=**}/{y}",
            "/a/{*",
        ] {
            assert!(compile(bad).is_err(), "{bad}");
        }
    }
}
