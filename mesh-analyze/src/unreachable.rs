//! IST0130 VirtualServiceUnreachableRule and IST0131 VirtualServiceIneffectiveMatch, as
//! Istio's validation finds them: a route after one without matches, a route all of whose
//! matches earlier routes take, a match an earlier route has already, and a prefix match an
//! earlier, shorter prefix with the same other conditions takes first.

use std::collections::BTreeMap;

use mesh_api::networking::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};
use serde_json::Value;

use crate::context::Obj;
use crate::finding::{
    Finding, VIRTUAL_SERVICE_INEFFECTIVE_MATCH, VIRTUAL_SERVICE_UNREACHABLE_RULE,
};

pub(crate) fn check(vs: &Obj<'_, VirtualService>, out: &mut Vec<Finding>) {
    let mut unreachable = |rule: String, reason: &str| {
        out.push(vs.finding(
            &VIRTUAL_SERVICE_UNREACHABLE_RULE,
            format!("VirtualService rule {rule} not used ({reason})."),
        ));
    };
    let mut ineffective = Vec::new();
    let spec = &vs.spec.spec;
    http(&spec.http, &mut unreachable, &mut |r, m, d| ineffective.push((r, m, d)));
    let tcp: Vec<Vec<Value>> =
        spec.tcp.iter().map(|r| r.matches.iter().map(json).collect()).collect();
    l4(&tcp, &mut unreachable, &mut |r, m, d| ineffective.push((r, m, d)));
    let tls: Vec<Vec<Value>> =
        spec.tls.iter().map(|r| r.matches.iter().map(json).collect()).collect();
    l4(&tls, &mut unreachable, &mut |r, m, d| ineffective.push((r, m, d)));
    for (rule, matchno, dup) in ineffective {
        out.push(vs.finding(
            &VIRTUAL_SERVICE_INEFFECTIVE_MATCH,
            format!(
                "VirtualService rule {rule} match {matchno} is not used (duplicate/overlapping match in rule {dup})."
            ),
        ));
    }
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A route as Istio names it in messages: its quoted name, or `#index`.
fn route_name(route: &HttpRoute, index: usize) -> String {
    match route.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => format!("{name:?}"),
        None => format!("#{index}"),
    }
}

/// A match as Istio names it: its quoted name, or `#index`.
fn match_name(m: &HttpMatchRequest, index: usize) -> String {
    match m.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => format!("{name:?}"),
        None => format!("#{index}"),
    }
}

/// A match without its name, to compare with others.
fn http_key(m: &HttpMatchRequest) -> Value {
    json(&HttpMatchRequest { name: None, ..m.clone() })
}

type Unreachable<'a> = dyn FnMut(String, &str) + 'a;
type Ineffective<'a> = dyn FnMut(String, String, String) + 'a;

fn http(
    routes: &[HttpRoute],
    unreachable: &mut Unreachable<'_>,
    ineffective: &mut Ineffective<'_>,
) {
    let mut seen: Vec<(Value, usize)> = Vec::new();
    let mut catch_all: Option<usize> = None;
    let mut prefixes: Vec<PrefixMatch> = Vec::new();
    for (n, route) in routes.iter().enumerate() {
        if route.matches.is_empty() {
            if catch_all.is_some() {
                unreachable(route_name(route, n), "only the last rule can have no matches");
            }
            catch_all = Some(n);
            continue;
        }
        let mut duplicates = 0;
        for (m, request) in route.matches.iter().enumerate() {
            if catch_all.is_some() {
                unreachable(route_name(route, n), "route without matches defined before");
                continue;
            }
            let key = http_key(request);
            if let Some((_, dup)) = seen.iter().find(|(k, _)| *k == key) {
                ineffective(
                    route_name(route, n),
                    match_name(request, m),
                    route_name(&routes[*dup], *dup),
                );
                duplicates += 1;
                continue;
            }
            seen.push((key, n));
            if let Some(prefix) = PrefixMatch::new(route, n, request, m) {
                prefixes.push(prefix);
            }
        }
        if duplicates == route.matches.len() {
            unreachable(route_name(route, n), "all matches used by prior rules");
        }
    }
    for (i, earlier) in prefixes.iter().enumerate() {
        for later in &prefixes[i + 1..] {
            if later.prefix != earlier.prefix && earlier.covers(later) {
                ineffective(
                    later.route.clone(),
                    format!("{} of prefix {}", later.request, later.prefix),
                    format!(
                        "{} of prefix {} on {}",
                        earlier.request, earlier.prefix, earlier.route
                    ),
                );
            }
        }
    }
}

/// TCP and TLS routes: the same rules as HTTP's, without names or prefixes.
fn l4(routes: &[Vec<Value>], unreachable: &mut Unreachable<'_>, ineffective: &mut Ineffective<'_>) {
    let mut seen: Vec<(&Value, usize)> = Vec::new();
    let mut catch_all = false;
    for (n, matches) in routes.iter().enumerate() {
        if matches.is_empty() {
            if catch_all {
                unreachable(format!("#{n}"), "only the last rule can have no matches");
            }
            catch_all = true;
            continue;
        }
        let mut duplicates = 0;
        for (m, request) in matches.iter().enumerate() {
            if catch_all {
                unreachable(format!("#{n}"), "route without matches defined before");
                continue;
            }
            if let Some((_, dup)) = seen.iter().find(|(k, _)| *k == request) {
                ineffective(format!("#{n}"), format!("#{m}"), format!("#{dup}"));
                duplicates += 1;
            } else {
                seen.push((request, n));
            }
        }
        if duplicates == matches.len() {
            unreachable(format!("#{n}"), "all matches used by prior rules");
        }
    }
}

/// A URI prefix match with the conditions Istio compares for overlaps.
struct PrefixMatch {
    route: String,
    request: String,
    prefix: String,
    port: u32,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    without_headers: BTreeMap<String, String>,
}

/// `exact:value`, `prefix:value`, or nothing for other kinds of match.
fn exact_or_prefix(m: Option<&StringMatch>) -> String {
    match m {
        Some(StringMatch { exact: Some(v), .. }) if !v.is_empty() => format!("exact:{v}"),
        Some(StringMatch { prefix: Some(v), .. }) if !v.is_empty() => format!("prefix:{v}"),
        _ => String::new(),
    }
}

fn exact_or_prefix_map(map: &BTreeMap<String, StringMatch>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), exact_or_prefix(Some(v)))).collect()
}

impl PrefixMatch {
    fn new(route: &HttpRoute, n: usize, m: &HttpMatchRequest, index: usize) -> Option<Self> {
        let prefix = m.uri.as_ref()?.prefix.clone().filter(|p| !p.is_empty())?;
        let mut method = exact_or_prefix(m.method.as_ref());
        if method.is_empty() {
            // Istio takes a match without a method as one for GET.
            method = "exact:GET".to_owned();
        }
        Some(Self {
            route: route_name(route, n),
            request: match_name(m, index),
            prefix,
            port: m.port.unwrap_or(0),
            method,
            authority: exact_or_prefix(m.authority.as_ref()),
            headers: exact_or_prefix_map(&m.headers),
            query: exact_or_prefix_map(&m.query_params),
            without_headers: exact_or_prefix_map(&m.without_headers),
        })
    }

    /// Whether this (earlier) match takes every request `later` would.
    fn covers(&self, later: &PrefixMatch) -> bool {
        let narrower = |a: &str, b: &str| a == b || a.starts_with(b);
        let maps = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| narrower(v, w)))
        };
        later.prefix.starts_with(&self.prefix)
            && later.port == self.port
            && narrower(&self.method, &later.method)
            && narrower(&self.authority, &later.authority)
            && maps(&self.headers, &later.headers)
            && maps(&self.query, &later.query)
            && maps(&self.without_headers, &later.without_headers)
    }
}
