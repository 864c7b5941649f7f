//! The leaves of RBAC rules, compiled once from Envoy's matcher messages: strings (exact,
//! prefix, suffix, contains with ASCII case folding, regexes matching the whole value),
//! headers (with Envoy's rules for absent ones), CIDR ranges, port ranges and metadata
//! values. A `compile` fails on what Envoy would refuse or what this proxy does not implement,
//! and its caller then fails the whole filter closed.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::route::v3::HeaderMatcher;
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher, StringMatcher, ValueMatcher, double_matcher, list_matcher,
    metadata_matcher::path_segment::Segment, string_matcher, value_matcher,
};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use regex::Regex;

/// A string matcher, ready to test values.
#[derive(Debug)]
pub(super) struct StringRule {
    test: StringTest,
    /// ASCII case folding (Envoy's `ignore_case`; regexes ignore it, as Envoy's do).
    ignore_case: bool,
}

#[derive(Debug)]
enum StringTest {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Lower-cased already when case is ignored.
    Contains(String),
    Regex(Regex),
}

impl StringRule {
    pub(super) fn compile(m: &StringMatcher) -> Result<Self, String> {
        use string_matcher::MatchPattern;
        let nonempty = |kind: &str, s: &String| {
            if s.is_empty() { Err(format!("an empty {kind} string match")) } else { Ok(s.clone()) }
        };
        let test = match &m.match_pattern {
            Some(MatchPattern::Exact(s)) => StringTest::Exact(s.clone()),
            Some(MatchPattern::Prefix(s)) => StringTest::Prefix(nonempty("prefix", s)?),
            Some(MatchPattern::Suffix(s)) => StringTest::Suffix(nonempty("suffix", s)?),
            Some(MatchPattern::Contains(s)) => {
                let s = nonempty("contains", s)?;
                StringTest::Contains(if m.ignore_case { s.to_ascii_lowercase() } else { s })
            }
            Some(MatchPattern::SafeRegex(r)) => StringTest::Regex(full_regex(&r.regex)?),
            Some(MatchPattern::Custom(c)) => {
                return Err(format!("custom string matcher {:?} is not implemented", c.name));
            }
            None => return Err("a string matcher without a pattern".to_owned()),
        };
        Ok(Self { test, ignore_case: m.ignore_case })
    }

    fn plain(test: StringTest) -> Self {
        Self { test, ignore_case: false }
    }

    pub(super) fn matches(&self, value: &str) -> bool {
        let folded = self.ignore_case;
        match &self.test {
            StringTest::Exact(e) if folded => value.eq_ignore_ascii_case(e),
            StringTest::Exact(e) => value == e,
            StringTest::Prefix(p) => {
                value.len() >= p.len()
                    && (if folded {
                        value.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                    } else {
                        value.starts_with(p.as_str())
                    })
            }
            StringTest::Suffix(s) => {
                value.len() >= s.len()
                    && (if folded {
                        value.as_bytes()[value.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
                    } else {
                        value.ends_with(s.as_str())
                    })
            }
            StringTest::Contains(c) if folded => value.to_ascii_lowercase().contains(c.as_str()),
            StringTest::Contains(c) => value.contains(c.as_str()),
            StringTest::Regex(r) => r.is_match(value),
        }
    }
}

/// Envoy's regexes (RE2) match the whole value.
pub(super) fn full_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() {
        return Err("an empty regex".to_owned());
    }
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("regex {pattern:?}: {e}"))
}

/// A header matcher (`envoy.config.route.v3.HeaderMatcher`), as Envoy's `HeaderUtility`
/// evaluates it.
#[derive(Debug)]
pub(super) struct HeaderRule {
    /// Lower-cased, as Envoy's header maps are keyed.
    pub(super) name: String,
    test: HeaderTest,
    invert: bool,
    missing_as_empty: bool,
}

#[derive(Debug)]
enum HeaderTest {
    /// `present_match` (and a matcher with no specifier, which Envoy reads as present).
    Present(bool),
    /// The deprecated `exact_match`: an empty value matches any value.
    Exact(String),
    /// `range_match`: the value as a 64-bit integer in `[start, end)`.
    Range(i64, i64),
    /// `string_match` and the deprecated prefix, suffix, contains and regex forms.
    Value(StringRule),
}

impl HeaderRule {
    pub(super) fn compile(h: &HeaderMatcher) -> Result<Self, String> {
        #[allow(deprecated)]
        let test = match &h.header_match_specifier {
            None => HeaderTest::Present(true),
            Some(HeaderMatchSpecifier::PresentMatch(p)) => HeaderTest::Present(*p),
            Some(HeaderMatchSpecifier::ExactMatch(e)) => HeaderTest::Exact(e.clone()),
            Some(HeaderMatchSpecifier::RangeMatch(r)) => HeaderTest::Range(r.start, r.end),
            Some(HeaderMatchSpecifier::StringMatch(m)) => {
                HeaderTest::Value(StringRule::compile(m)?)
            }
            Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
                HeaderTest::Value(StringRule::plain(StringTest::Regex(full_regex(&r.regex)?)))
            }
            Some(HeaderMatchSpecifier::PrefixMatch(p)) => {
                HeaderTest::Value(StringRule::plain(StringTest::Prefix(p.clone())))
            }
            Some(HeaderMatchSpecifier::SuffixMatch(s)) => {
                HeaderTest::Value(StringRule::plain(StringTest::Suffix(s.clone())))
            }
            Some(HeaderMatchSpecifier::ContainsMatch(c)) => {
                HeaderTest::Value(StringRule::plain(StringTest::Contains(c.clone())))
            }
        };
        if h.name.is_empty() {
            return Err("a header matcher without a name".to_owned());
        }
        Ok(Self {
            name: h.name.to_ascii_lowercase(),
            test,
            invert: h.invert_match,
            missing_as_empty: h.treat_missing_header_as_empty,
        })
    }

    /// Whether the header's value (every value of it joined with `,`; `None` when the request
    /// has none) matches. An absent header matches only `present_match: false`, or inverted
    /// `present_match: true`, unless it is to be taken as empty: an inverted value match does
    /// not match an absent header (Envoy's rule).
    pub(super) fn matches(&self, value: Option<&str>) -> bool {
        let value = match value {
            Some(value) => value,
            None if self.missing_as_empty => "",
            None => return matches!(self.test, HeaderTest::Present(p) if p == self.invert),
        };
        let hit = match &self.test {
            HeaderTest::Present(p) => *p,
            HeaderTest::Exact(e) => e.is_empty() || value == e,
            HeaderTest::Range(start, end) => {
                value.trim().parse::<i64>().is_ok_and(|v| *start <= v && v < *end)
            }
            HeaderTest::Value(rule) => rule.matches(value),
        };
        hit != self.invert
    }
}

/// An address range (`CidrRange`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Cidr {
    network: IpAddr,
    len: u32,
}

impl Cidr {
    pub(super) fn compile(range: &CidrRange) -> Result<Self, String> {
        let network: IpAddr = range
            .address_prefix
            .parse()
            .map_err(|_| format!("{:?} is not an IP address", range.address_prefix))?;
        let len = range.prefix_len.as_ref().map_or(0, |l| l.value);
        let max = if network.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("prefix length {len} is too long for {network}"));
        }
        Ok(Self { network, len })
    }

    /// Whether `ip` is in the range; an IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`, what
    /// a dual-stack socket reports) is taken as the IPv4 address it carries.
    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.len).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.len).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A port range `[start, end)` (`destination_port_range`).
#[derive(Clone, Copy, Debug)]
pub(super) struct PortRange {
    start: u32,
    end: u32,
}

impl PortRange {
    pub(super) fn compile(range: &Int32Range) -> Result<Self, String> {
        let bound = |v: i32, which: &str| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v <= 65536)
                .ok_or_else(|| format!("port range {which} {v} is out of bounds"))
        };
        let (start, end) = (bound(range.start, "start")?, bound(range.end, "end")?);
        if start >= end {
            return Err(format!("port range start {start} is not below its end {end}"));
        }
        Ok(Self { start, end })
    }

    pub(super) fn contains(&self, port: u16) -> bool {
        (self.start..self.end).contains(&u32::from(port))
    }
}

/// A metadata matcher (`envoy.type.matcher.v3.MetadataMatcher`): the value at `path` under
/// the filter's namespace of the dynamic metadata.
#[derive(Debug)]
pub(super) struct MetadataRule {
    pub(super) filter: String,
    pub(super) path: Vec<String>,
    value: ValueRule,
    invert: bool,
}

impl MetadataRule {
    pub(super) fn compile(m: &MetadataMatcher) -> Result<Self, String> {
        if m.filter.is_empty() {
            return Err("a metadata matcher without a filter".to_owned());
        }
        let path = m
            .path
            .iter()
            .map(|s| match &s.segment {
                Some(Segment::Key(k)) if !k.is_empty() => Ok(k.clone()),
                _ => Err("a metadata path segment without a key".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if path.is_empty() {
            return Err("a metadata matcher without a path".to_owned());
        }
        let value = m.value.as_ref().ok_or("a metadata matcher without a value")?;
        Ok(Self {
            filter: m.filter.clone(),
            path,
            value: ValueRule::compile(value)?,
            invert: m.invert,
        })
    }

    /// Whether the value found (`None`: nothing at the path) matches.
    pub(super) fn matches(&self, value: Option<&serde_json::Value>) -> bool {
        self.value.matches(value) != self.invert
    }
}

/// A value matcher (`envoy.type.matcher.v3.ValueMatcher`) over the JSON form of a
/// `google.protobuf.Value` (numbers are doubles, objects are structs).
#[derive(Debug)]
enum ValueRule {
    Null,
    Number(NumberTest),
    Str(StringRule),
    Bool(bool),
    Present(bool),
    /// A list with at least one element that matches.
    List(Box<ValueRule>),
    Or(Vec<ValueRule>),
}

#[derive(Clone, Copy, Debug)]
enum NumberTest {
    Exact(f64),
    Range(f64, f64),
}

impl ValueRule {
    fn compile(m: &ValueMatcher) -> Result<Self, String> {
        use value_matcher::MatchPattern;
        Ok(match &m.match_pattern {
            Some(MatchPattern::NullMatch(_)) => Self::Null,
            Some(MatchPattern::DoubleMatch(d)) => Self::Number(match &d.match_pattern {
                Some(double_matcher::MatchPattern::Exact(v)) => NumberTest::Exact(*v),
                Some(double_matcher::MatchPattern::Range(r)) => NumberTest::Range(r.start, r.end),
                None => return Err("a double matcher without a pattern".to_owned()),
            }),
            Some(MatchPattern::StringMatch(s)) => Self::Str(StringRule::compile(s)?),
            Some(MatchPattern::BoolMatch(b)) => Self::Bool(*b),
            Some(MatchPattern::PresentMatch(p)) => Self::Present(*p),
            Some(MatchPattern::ListMatch(l)) => match &l.match_pattern {
                Some(list_matcher::MatchPattern::OneOf(one)) => {
                    Self::List(Box::new(Self::compile(one)?))
                }
                None => return Err("a list matcher without one_of".to_owned()),
            },
            Some(MatchPattern::OrMatch(or)) => {
                if or.value_matchers.len() < 2 {
                    return Err("an or_match needs at least two value matchers".to_owned());
                }
                Self::Or(or.value_matchers.iter().map(Self::compile).collect::<Result<_, _>>()?)
            }
            None => return Err("a value matcher without a pattern".to_owned()),
        })
    }

    fn matches(&self, value: Option<&serde_json::Value>) -> bool {
        use serde_json::Value;
        match (self, value) {
            (Self::Present(p), v) => *p && v.is_some(),
            (Self::Or(rules), v) => rules.iter().any(|r| r.matches(v)),
            (_, None) => false,
            (Self::Null, Some(v)) => v.is_null(),
            (Self::Number(test), Some(Value::Number(n))) => {
                n.as_f64().is_some_and(|v| match test {
                    NumberTest::Exact(e) => v == *e,
                    NumberTest::Range(start, end) => *start <= v && v < *end,
                })
            }
            (Self::Str(rule), Some(Value::String(s))) => rule.matches(s),
            (Self::Bool(b), Some(Value::Bool(v))) => b == v,
            (Self::List(one), Some(Value::Array(items))) => {
                items.iter().any(|item| one.matches(Some(item)))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::r#type::matcher::v3::metadata_matcher::PathSegment;
    use envoy_types::pb::envoy::r#type::matcher::v3::{ListMatcher, RegexMatcher};
    use envoy_types::pb::google::protobuf::UInt32Value;
    use serde_json::json;

    use super::*;

    fn string(pattern: string_matcher::MatchPattern, ignore_case: bool) -> StringRule {
        StringRule::compile(&StringMatcher { match_pattern: Some(pattern), ignore_case }).unwrap()
    }

    #[test]
    fn strings_match_as_envoy_matches_them() {
        use string_matcher::MatchPattern as P;
        let exact = string(P::Exact("/admin".into()), false);
        assert!(exact.matches("/admin") && !exact.matches("/Admin") && !exact.matches("/admin/"));
        let folded = string(P::Exact("/admin".into()), true);
        assert!(folded.matches("/ADMIN"));
        let prefix = string(P::Prefix("/api/".into()), true);
        assert!(prefix.matches("/API/v1") && !prefix.matches("/ap"));
        let suffix = string(P::Suffix(".json".into()), false);
        assert!(suffix.matches("/a.json") && !suffix.matches("/a.JSON"));
        let contains = string(P::Contains("Secret".into()), true);
        assert!(contains.matches("/top-SECRET/x") && !contains.matches("/open"));
        let regex = string(
            P::SafeRegex(RegexMatcher { regex: "/v[0-9]+".into(), ..Default::default() }),
            false,
        );
        assert!(regex.matches("/v12") && !regex.matches("/v12/x"), "the whole value must match");
        // What Envoy refuses is refused.
        for bad in [P::Prefix(String::new()), P::SafeRegex(RegexMatcher::default())] {
            let m = StringMatcher { match_pattern: Some(bad), ignore_case: false };
            assert!(StringRule::compile(&m).is_err());
        }
        let unset = StringMatcher::default();
        assert!(StringRule::compile(&unset).is_err());
    }

    fn header(
        spec: Option<HeaderMatchSpecifier>,
        invert: bool,
        missing_as_empty: bool,
    ) -> HeaderRule {
        HeaderRule::compile(&HeaderMatcher {
            name: "X-User".into(),
            header_match_specifier: spec,
            invert_match: invert,
            treat_missing_header_as_empty: missing_as_empty,
        })
        .unwrap()
    }

    #[test]
    fn headers_follow_envoys_rules_for_absent_and_inverted_matches() {
        use HeaderMatchSpecifier as H;
        let alice = || {
            Some(H::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact("alice".into())),
                ignore_case: false,
            }))
        };
        let is_alice = header(alice(), false, false);
        assert_eq!(is_alice.name, "x-user", "names are lower-cased");
        assert!(is_alice.matches(Some("alice")) && !is_alice.matches(Some("bob")));
        assert!(!is_alice.matches(None));
        let not_alice = header(alice(), true, false);
        assert!(not_alice.matches(Some("bob")) && !not_alice.matches(Some("alice")));
        assert!(!not_alice.matches(None), "an inverted value match needs the header");
        let not_alice_or_none = header(alice(), true, true);
        assert!(not_alice_or_none.matches(None), "missing taken as empty");

        let present = header(Some(H::PresentMatch(true)), false, false);
        assert!(present.matches(Some("")) && !present.matches(None));
        let absent = header(Some(H::PresentMatch(true)), true, false);
        assert!(absent.matches(None) && !absent.matches(Some("x")));
        let unset = header(None, false, false);
        assert!(unset.matches(Some("x")) && !unset.matches(None), "no specifier: present");
        let present_false = header(Some(H::PresentMatch(false)), false, false);
        assert!(present_false.matches(None) && !present_false.matches(Some("x")));

        let range = header(
            Some(H::RangeMatch(envoy_types::pb::envoy::r#type::v3::Int64Range {
                start: 10,
                end: 20,
            })),
            false,
            false,
        );
        assert!(range.matches(Some("10")) && range.matches(Some("19")));
        assert!(!range.matches(Some("20")) && !range.matches(Some("1x")));
        #[allow(deprecated)]
        let any_value = header(Some(H::ExactMatch(String::new())), false, false);
        assert!(any_value.matches(Some("whatever")), "an empty exact_match takes any value");
    }

    #[test]
    fn cidr_ranges_and_port_ranges() {
        let cidr = |a: &str, l: u32| {
            Cidr::compile(&CidrRange {
                address_prefix: a.into(),
                prefix_len: Some(UInt32Value { value: l }),
            })
        };
        let net = cidr("10.1.0.0", 16).unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()), "v4-mapped v6 is v4");
        assert!(!net.contains("fd00::1".parse().unwrap()));
        let host = cidr("192.168.1.7", 32).unwrap();
        assert!(host.contains("192.168.1.7".parse().unwrap()));
        assert!(!host.contains("192.168.1.8".parse().unwrap()));
        let all = cidr("0.0.0.0", 0).unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = cidr("fd00::", 8).unwrap();
        assert!(v6.contains("fdff::1".parse().unwrap()));
        assert!(cidr("10.0.0.0", 33).is_err() && cidr("not-an-ip", 8).is_err());

        let ports = PortRange::compile(&Int32Range { start: 8000, end: 8080 }).unwrap();
        assert!(ports.contains(8000) && ports.contains(8079) && !ports.contains(8080));
        assert!(PortRange::compile(&Int32Range { start: 9, end: 9 }).is_err());
        assert!(PortRange::compile(&Int32Range { start: -1, end: 9 }).is_err());
    }

    fn metadata(path: &[&str], value: value_matcher::MatchPattern, invert: bool) -> MetadataRule {
        MetadataRule::compile(&MetadataMatcher {
            filter: "envoy.filters.http.jwt_authn".into(),
            path: path
                .iter()
                .map(|k| PathSegment { segment: Some(Segment::Key((*k).into())) })
                .collect(),
            value: Some(ValueMatcher { match_pattern: Some(value) }),
            invert,
        })
        .unwrap()
    }

    #[test]
    fn metadata_values_match_by_kind() {
        use value_matcher::MatchPattern as V;
        let exact = |s: &str| StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(s.into())),
            ignore_case: false,
        };
        let iss = metadata(&["payload", "iss"], V::StringMatch(exact("https://issuer")), false);
        assert!(iss.matches(Some(&json!("https://issuer"))));
        assert!(!iss.matches(Some(&json!(["https://issuer"]))), "a list is not a string");
        assert!(!iss.matches(None));
        let not_iss = metadata(&["payload", "iss"], V::StringMatch(exact("https://issuer")), true);
        assert!(not_iss.matches(None), "inverted: nothing there is not that issuer");

        let group = V::ListMatch(Box::new(ListMatcher {
            match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(ValueMatcher {
                match_pattern: Some(V::StringMatch(exact("admins"))),
            }))),
        }));
        let groups = metadata(&["payload", "groups"], group, false);
        assert!(groups.matches(Some(&json!(["users", "admins"]))));
        assert!(
            !groups.matches(Some(&json!(["users"]))) && !groups.matches(Some(&json!("admins")))
        );

        let present = metadata(&["payload", "sub"], V::PresentMatch(true), false);
        assert!(present.matches(Some(&json!(null))) && !present.matches(None));
        let never = metadata(&["payload", "sub"], V::PresentMatch(false), false);
        assert!(
            !never.matches(None) && !never.matches(Some(&json!(1))),
            "Envoy's present_match: false"
        );
        let admin = metadata(&["payload", "admin"], V::BoolMatch(true), false);
        assert!(admin.matches(Some(&json!(true))) && !admin.matches(Some(&json!("true"))));
        let level = metadata(
            &["payload", "level"],
            V::DoubleMatch(envoy_types::pb::envoy::r#type::matcher::v3::DoubleMatcher {
                match_pattern: Some(double_matcher::MatchPattern::Range(
                    envoy_types::pb::envoy::r#type::v3::DoubleRange { start: 1.0, end: 3.0 },
                )),
            }),
            false,
        );
        assert!(level.matches(Some(&json!(2))) && !level.matches(Some(&json!(3))));
        let null = metadata(&["payload", "x"], V::NullMatch(Default::default()), false);
        assert!(null.matches(Some(&json!(null))) && !null.matches(None));
    }
}
