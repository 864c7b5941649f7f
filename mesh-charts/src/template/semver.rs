//! `semverCompare` as Helm runs it (Masterminds semver v3): constraints such as `>=1.29-0`,
//! `~1.2`, `^1.2.3`, `1.2 - 1.4`, joined by `,` (and) and `||` (or), checked against versions such
//! as `v1.33.2` or `v1.30.5-gke.100`. A version with a prerelease part matches only a constraint
//! that has one (`>=1.29-0` matches `v1.30.5-gke.100`; `>=1.29` does not), as in Masterminds.

use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    pre: String,
}

impl Version {
    fn compare(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| compare_pre(&self.pre, &other.pre))
    }
}

/// Semver precedence of prerelease parts: none ranks above any; numeric identifiers compare as
/// numbers and rank below alphanumeric ones.
fn compare_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// A version, or a constraint's version with missing or wildcard parts (`None`).
struct Partial {
    parts: [Option<u64>; 3],
    pre: String,
}

fn parse_partial(text: &str, wildcards: bool) -> Result<Partial, String> {
    let bad = || format!("invalid semantic version {text:?}");
    let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
    let text = text.split_once('+').map_or(text, |(v, _)| v);
    let (numbers, pre) = text.split_once('-').unwrap_or((text, ""));
    let mut parts = [None; 3];
    let mut fields = numbers.split('.');
    for slot in &mut parts {
        match fields.next() {
            None => break,
            Some("x" | "X" | "*") if wildcards => break,
            Some(field) => *slot = Some(field.parse().map_err(|_| bad())?),
        }
    }
    if fields.next().is_some_and(|f| !matches!(f, "x" | "X" | "*"))
        || parts[0].is_none() && !wildcards
    {
        return Err(bad());
    }
    Ok(Partial { parts, pre: pre.to_owned() })
}

fn version(text: &str) -> Result<Version, String> {
    let partial = parse_partial(text.trim(), false)?;
    Ok(Version {
        major: partial.parts[0].unwrap_or(0),
        minor: partial.parts[1].unwrap_or(0),
        patch: partial.parts[2].unwrap_or(0),
        pre: partial.pre,
    })
}

/// One term of a constraint: an operator and a (partial) version.
struct Term {
    op: String,
    partial: Partial,
}

impl Term {
    fn floor(&self) -> Version {
        Version {
            major: self.partial.parts[0].unwrap_or(0),
            minor: self.partial.parts[1].unwrap_or(0),
            patch: self.partial.parts[2].unwrap_or(0),
            pre: self.partial.pre.clone(),
        }
    }

    /// The first version past a wildcard (`1.2.x` -> `1.3.0`), for ranges.
    fn ceiling(&self, level: usize) -> Version {
        let [major, minor, _] = self.partial.parts.map(|p| p.unwrap_or(0));
        match level {
            0 => Version { major: major + 1, minor: 0, patch: 0, pre: String::new() },
            1 => Version { major, minor: minor + 1, patch: 0, pre: String::new() },
            _ => Version { major, minor, patch: self.floor().patch + 1, pre: String::new() },
        }
    }

    /// How many parts are given (a wildcard after them).
    fn given(&self) -> usize {
        self.partial.parts.iter().take_while(|p| p.is_some()).count()
    }

    fn check(&self, v: &Version) -> bool {
        if !v.pre.is_empty() && self.partial.pre.is_empty() {
            return false;
        }
        let floor = self.floor();
        let given = self.given();
        let in_wildcard = |v: &Version| {
            given == 3 && v.compare(&floor) == Ordering::Equal
                || given < 3
                    && v.compare(&floor) != Ordering::Less
                    && v.compare(&self.ceiling(given.saturating_sub(1))) == Ordering::Less
                || given == 0
        };
        match self.op.as_str() {
            "" | "=" => in_wildcard(v),
            "!=" => !in_wildcard(v),
            ">" if given < 3 && given > 0 => v.compare(&self.ceiling(given - 1)) != Ordering::Less,
            ">" => v.compare(&floor) == Ordering::Greater,
            ">=" | "=>" => v.compare(&floor) != Ordering::Less,
            "<" => v.compare(&floor) == Ordering::Less,
            "<=" | "=<" if given < 3 && given > 0 => {
                v.compare(&self.ceiling(given - 1)) == Ordering::Less
            }
            "<=" | "=<" => v.compare(&floor) != Ordering::Greater,
            "~" | "~>" => {
                let level = if given <= 1 { 0 } else { 1 };
                v.compare(&floor) != Ordering::Less
                    && v.compare(&self.ceiling(level)) == Ordering::Less
            }
            "^" => {
                let [major, minor, _] = self.partial.parts.map(|p| p.unwrap_or(0));
                let level = if major > 0 || given <= 1 {
                    0
                } else if minor > 0 || given == 2 {
                    1
                } else {
                    2
                };
                v.compare(&floor) != Ordering::Less
                    && v.compare(&self.ceiling(level)) == Ordering::Less
            }
            _ => false,
        }
    }
}

const OPERATORS: [&str; 11] = ["!=", ">=", "=>", "<=", "=<", "~>", ">", "<", "=", "~", "^"];

fn term(text: &str) -> Result<Term, String> {
    let op = OPERATORS.iter().find(|op| text.starts_with(**op)).copied().unwrap_or("");
    let partial = parse_partial(text[op.len()..].trim(), true)
        .map_err(|_| format!("improper constraint: {text}"))?;
    Ok(Term { op: op.to_owned(), partial })
}

/// Whether `version` satisfies `constraint`.
pub(crate) fn matches(constraint: &str, version_text: &str) -> Result<bool, String> {
    let v = version(version_text)?;
    let mut any = false;
    for alternative in constraint.split("||") {
        // Tokens, with an operator written apart from its version joined to it.
        let mut tokens: Vec<String> = Vec::new();
        for word in alternative.replace(',', " ").split_whitespace() {
            match tokens.last_mut() {
                Some(last) if OPERATORS.contains(&last.as_str()) => last.push_str(word),
                _ => tokens.push(word.to_owned()),
            }
        }
        if tokens.is_empty() {
            return Err(format!("improper constraint: {constraint}"));
        }
        let mut all = true;
        let mut i = 0;
        while i < tokens.len() {
            // `1.2 - 1.4`: a range, both ends included.
            if tokens.get(i + 1).is_some_and(|t| t == "-") {
                let low = term(&format!(">={}", tokens[i]))?;
                let high = term(&format!(
                    "<={}",
                    tokens
                        .get(i + 2)
                        .ok_or_else(|| format!("improper constraint: {constraint}"))?
                ))?;
                all &= low.check(&v) && high.check(&v);
                i += 3;
                continue;
            }
            all &= term(&tokens[i])?.check(&v);
            i += 1;
        }
        any |= all;
    }
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn kubernetes_versions() {
        let cases = [
            (">=1.29-0", "v1.33.0", true),
            (">=1.29-0", "v1.28.9", false),
            (">=1.29-0", "v1.30.5-gke.100", true),
            (">=1.29", "v1.30.5-gke.100", false),
            (">=1.29", "1.29.0", true),
            ("<1.29", "v1.28.3", true),
            (">= 1.20, < 1.30", "v1.25.0", true),
            (">= 1.20, < 1.30", "v1.30.0", false),
            ("<1.20 || >=1.33", "v1.33.1", true),
            ("~1.2", "1.2.9", true),
            ("~1.2", "1.3.0", false),
            ("^1.2.3", "1.9.0", true),
            ("^1.2.3", "2.0.0", false),
            ("^0.2.3", "0.3.0", false),
            ("1.2.x", "1.2.7", true),
            ("1.2 - 1.4", "1.4.0", true),
            ("1.2 - 1.4", "1.5.0", false),
            ("!=1.2.3", "1.2.3", false),
        ];
        for (constraint, version, expected) in cases {
            assert_eq!(matches(constraint, version), Ok(expected), "{constraint} {version}");
        }
        assert!(matches(">=1.29", "not-a-version").is_err());
        assert!(matches(">=x.y", "1.0.0").is_err());
    }
}
