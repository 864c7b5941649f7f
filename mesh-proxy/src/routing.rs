//! HTTP routing: a route configuration compiled once (regexes built, weights summed) into a
//! table that answers, for a request head, which virtual host and route apply and what to do:
//! forward to a cluster (weights picked, path and authority rewritten, headers changed),
//! redirect, or answer directly. Pure; faults, retries, timeouts, mirrors and CORS are read from
//! the chosen route by the layers that implement them.

use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, Route, RouteConfiguration, header_matcher,
    query_parameter_matcher, redirect_action, route, route_action, route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use regex::Regex;

/// What routing needs of a request, borrowed from it (routing copies nothing per request).
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// `:authority` or `Host`.
    pub authority: &'a str,
    /// Path with query string.
    pub path: &'a str,
    /// The HTTP method (`GET`), what `:method` matches see.
    pub method: &'a str,
    /// The request headers, for header matches (`:authority`, `:path` and `:method` come from the
    /// fields above).
    pub headers: &'a http::HeaderMap,
}

impl RequestHead<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        match name {
            ":authority" | "host" => Some(self.authority),
            ":path" => Some(self.path),
            ":method" => Some(self.method),
            _ => self.headers.get(name).and_then(|v| v.to_str().ok()),
        }
    }

    fn path_only(&self) -> &str {
        self.path.split(['?', '#']).next().unwrap_or_default()
    }

    fn query(&self, name: &str) -> Option<&str> {
        let query = self.path.split_once('?')?.1.split('#').next()?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it to `cluster`, with `path` and `authority` as they should go upstream.
    Forward {
        /// Name of the cluster to send it to; among weighted clusters, the one picked.
        cluster: String,
        /// The path after rewrites.
        path: String,
        /// The authority after rewrites.
        authority: String,
        /// Headers to set on the request (replacing), then to add.
        set_headers: Vec<(String, String)>,
        /// Headers to add to the request.
        add_headers: Vec<(String, String)>,
        /// Headers to remove from the request.
        remove_headers: Vec<String>,
    },
    /// Answer with a redirect to `location`.
    Redirect {
        /// Status (301, 302, 303, 307, 308).
        status: u16,
        /// The `Location` header: the request URL with the redirect's scheme, host, port and path
        /// applied.
        location: String,
    },
    /// Answer with this status and body.
    Respond {
        /// HTTP status of the direct response.
        status: u16,
        /// Body of the direct response; empty when the route sets none.
        body: String,
    },
}

/// A compiled `StringMatcher` (exact, prefix, suffix, contains, regex; case-insensitive
/// when asked).
#[derive(Debug)]
pub struct StringMatch(Matcher);

impl StringMatch {
    /// Compiles a matcher; an error for a pattern this proxy does not implement.
    pub fn compile(m: &StringMatcher) -> Result<Self, String> {
        Matcher::compile(m).map(StringMatch)
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        self.0.matches(value)
    }
}

#[derive(Debug)]
struct Matcher {
    exact: Option<String>,
    prefix: Option<String>,
    suffix: Option<String>,
    contains: Option<String>,
    regex: Option<Regex>,
    ignore_case: bool,
}

impl Matcher {
    fn compile(m: &StringMatcher) -> Result<Self, String> {
        let mut out = Matcher {
            exact: None,
            prefix: None,
            suffix: None,
            contains: None,
            regex: None,
            ignore_case: m.ignore_case,
        };
        let lower = |s: &String| if m.ignore_case { s.to_lowercase() } else { s.clone() };
        match &m.match_pattern {
            Some(string_matcher::MatchPattern::Exact(s)) => out.exact = Some(lower(s)),
            Some(string_matcher::MatchPattern::Prefix(s)) => out.prefix = Some(lower(s)),
            Some(string_matcher::MatchPattern::Suffix(s)) => out.suffix = Some(lower(s)),
            Some(string_matcher::MatchPattern::Contains(s)) => out.contains = Some(lower(s)),
            Some(string_matcher::MatchPattern::SafeRegex(r)) => {
                out.regex = Some(full_regex(&r.regex)?)
            }
            _ => return Err("a string matcher without a pattern this proxy implements".to_owned()),
        }
        Ok(out)
    }

    fn matches(&self, value: &str) -> bool {
        let value = if self.ignore_case { value.to_lowercase() } else { value.to_owned() };
        self.exact.as_ref().is_none_or(|e| value == *e)
            && self.prefix.as_ref().is_none_or(|p| value.starts_with(p.as_str()))
            && self.suffix.as_ref().is_none_or(|s| value.ends_with(s.as_str()))
            && self.contains.as_ref().is_none_or(|c| value.contains(c.as_str()))
            && self.regex.as_ref().is_none_or(|r| r.is_match(&value))
    }
}

/// Envoy's regexes match the whole value (RE2 full match).
fn full_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("regex {pattern:?}: {e}"))
}

enum HeaderTest {
    Present,
    Matches(Matcher),
}

struct HeaderRule {
    name: String,
    test: HeaderTest,
    invert: bool,
}

impl HeaderRule {
    fn compile(h: &HeaderMatcher) -> Result<Self, String> {
        let test = match &h.header_match_specifier {
            Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)) => {
                HeaderTest::Matches(Matcher::compile(m)?)
            }
            Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)) | None => {
                HeaderTest::Present
            }
            Some(_) => {
                return Err(format!(
                    "header matcher for {:?}: only string and presence matches are implemented",
                    h.name
                ));
            }
        };
        Ok(Self { name: h.name.to_lowercase(), test, invert: h.invert_match })
    }

    fn matches(&self, request: &RequestHead) -> bool {
        let value = request.header(&self.name);
        let hit = match (&self.test, value) {
            (_, None) => false,
            (HeaderTest::Present, Some(_)) => true,
            (HeaderTest::Matches(m), Some(v)) => m.matches(v),
        };
        hit != self.invert
    }
}

/// One header matcher compiled (Envoy's `HeaderMatcher`: string and presence matches, maybe
/// inverted), for what matches request headers outside routing (access log filters).
pub struct HeaderMatch(HeaderRule);

impl HeaderMatch {
    /// Compiles `matcher`; the error names what is not implemented.
    pub fn compile(matcher: &HeaderMatcher) -> Result<Self, String> {
        HeaderRule::compile(matcher).map(Self)
    }

    /// Whether `request`'s headers match.
    pub fn matches(&self, request: &RequestHead) -> bool {
        self.0.matches(request)
    }
}

impl std::fmt::Debug for HeaderMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HeaderMatch").field(&self.0.name).finish()
    }
}

struct QueryRule {
    name: String,
    test: Option<Matcher>,
}

impl QueryRule {
    fn compile(q: &QueryParameterMatcher) -> Result<Self, String> {
        let test = match &q.query_parameter_match_specifier {
            Some(query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(m)) => {
                Some(Matcher::compile(m)?)
            }
            _ => None,
        };
        Ok(Self { name: q.name.clone(), test })
    }
}

enum PathRule {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

struct CompiledRoute {
    route: Route,
    path: PathRule,
    case_sensitive: bool,
    headers: Vec<HeaderRule>,
    queries: Vec<QueryRule>,
    /// The route's `regex_rewrite`, compiled: the pattern and its substitution.
    rewrite: Option<(Regex, String)>,
    /// Cumulative weights of weighted clusters.
    weights: Vec<(u64, String)>,
    /// Timeouts, retries, faults, mirrors, CORS.
    policy: std::sync::Arc<crate::policy::RoutePolicy>,
}

struct CompiledHost {
    domains: Vec<String>,
    routes: Vec<CompiledRoute>,
}

/// A route configuration, ready to route requests.
pub struct RouteTable {
    hosts: Vec<CompiledHost>,
}

/// Header name and value pairs.
type Headers = Vec<(String, String)>;

/// The headers to set and the headers to add.
fn header_ops(options: &[HeaderValueOption]) -> (Headers, Headers) {
    let mut set = Vec::new();
    let mut add = Vec::new();
    for option in options {
        let Some(header) = &option.header else { continue };
        let pair = (header.key.to_lowercase(), header.value.clone());
        // APPEND_IF_EXISTS_OR_ADD (0) adds; the others (what the pilot sends for `set`)
        // replace.
        if option.append_action == 0 {
            add.push(pair);
        } else {
            set.push(pair);
        }
    }
    (set, add)
}

impl RouteTable {
    /// Compiles a route configuration; the error names the virtual host and route.
    pub fn compile(config: &RouteConfiguration) -> Result<Self, String> {
        let mut hosts = Vec::new();
        for (i, vhost) in config.virtual_hosts.iter().enumerate() {
            let mut routes = Vec::new();
            for (j, route) in vhost.routes.iter().enumerate() {
                let at =
                    |why: String| format!("virtual_hosts[{i}] ({}).routes[{j}]: {why}", vhost.name);
                routes.push(compile_route(route).map_err(at)?);
            }
            hosts.push(CompiledHost {
                domains: vhost.domains.iter().map(|d| d.to_lowercase()).collect(),
                routes,
            });
        }
        Ok(Self { hosts })
    }

    /// The virtual host for an authority: exact domain first, then the longest suffix
    /// wildcard (`*.example.com`), the longest prefix wildcard (`example.*`), then `*`.
    fn host(&self, authority: &str) -> Option<&CompiledHost> {
        let authority = authority.to_lowercase();
        let exact = self.hosts.iter().find(|h| h.domains.contains(&authority));
        exact
            .or_else(|| {
                self.hosts
                    .iter()
                    .flat_map(|h| h.domains.iter().map(move |d| (h, d)))
                    .filter_map(|(h, d)| {
                        let suffix = d.strip_prefix('*')?;
                        (!suffix.is_empty() && authority.ends_with(suffix))
                            .then_some((h, suffix.len()))
                    })
                    .max_by_key(|(_, len)| *len)
                    .map(|(h, _)| h)
            })
            .or_else(|| {
                self.hosts
                    .iter()
                    .flat_map(|h| h.domains.iter().map(move |d| (h, d)))
                    .filter_map(|(h, d)| {
                        let prefix = d.strip_suffix('*')?;
                        (!prefix.is_empty() && authority.starts_with(prefix))
                            .then_some((h, prefix.len()))
                    })
                    .max_by_key(|(_, len)| *len)
                    .map(|(h, _)| h)
            })
            .or_else(|| self.hosts.iter().find(|h| h.domains.iter().any(|d| d == "*")))
    }

    /// The route a request takes (first match wins), if any.
    pub fn route(&self, request: &RequestHead) -> Option<&Route> {
        self.matching(request).map(|r| &r.route)
    }

    fn matching(&self, request: &RequestHead) -> Option<&CompiledRoute> {
        let host = self.host(request.authority)?;
        host.routes.iter().find(|r| r.matches(request))
    }

    /// The route a request takes, its policy and what to do with it (see
    /// [`RouteTable::decide`]).
    pub fn decide_route(
        &self,
        request: &RequestHead,
        pick: u64,
    ) -> Option<(&Route, &std::sync::Arc<crate::policy::RoutePolicy>, Decision)> {
        let route = self.matching(request)?;
        Some((&route.route, &route.policy, route.decide(request, pick)))
    }

    /// What to do with a request; `pick` is a number in `0..total weight` for weighted
    /// clusters (the caller's randomness). `None`: no route (a 404).
    pub fn decide(&self, request: &RequestHead, pick: u64) -> Option<Decision> {
        let route = self.matching(request)?;
        Some(route.decide(request, pick))
    }
}

fn compile_route(route: &Route) -> Result<CompiledRoute, String> {
    let m = route.r#match.clone().unwrap_or_default();
    let case_sensitive = m.case_sensitive.as_ref().is_none_or(|c| c.value);
    let path = match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => PathRule::Prefix(p.clone()),
        Some(route_match::PathSpecifier::Path(p)) => PathRule::Exact(p.clone()),
        Some(route_match::PathSpecifier::SafeRegex(r)) => PathRule::Regex(full_regex(&r.regex)?),
        Some(_) => return Err("match: only prefix, path and safe_regex are implemented".to_owned()),
        None => PathRule::Prefix("/".to_owned()),
    };
    let headers = m.headers.iter().map(HeaderRule::compile).collect::<Result<_, _>>()?;
    let queries = m.query_parameters.iter().map(QueryRule::compile).collect::<Result<_, _>>()?;
    let mut rewrite = None;
    let mut weights = Vec::new();
    if let Some(route::Action::Route(action)) = &route.action {
        if let Some(r) = &action.regex_rewrite {
            let pattern = r.pattern.as_ref().map(|p| p.regex.clone()).unwrap_or_default();
            let regex =
                Regex::new(&pattern).map_err(|e| format!("regex_rewrite {pattern:?}: {e}"))?;
            rewrite = Some((regex, r.substitution.replace("\\", "$")));
        }
        if let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = &action.cluster_specifier
        {
            let mut total = 0u64;
            for c in &w.clusters {
                total += u64::from(c.weight.as_ref().map_or(0, |w| w.value));
                weights.push((total, c.name.clone()));
            }
            if total == 0 {
                return Err("weighted_clusters: the weights add up to 0".to_owned());
            }
        }
    }
    let policy = crate::policy::RoutePolicy::compile(route)?;
    Ok(CompiledRoute {
        policy: std::sync::Arc::new(policy),
        route: route.clone(),
        path,
        case_sensitive,
        headers,
        queries,
        rewrite,
        weights,
    })
}

impl CompiledRoute {
    fn matches(&self, request: &RequestHead) -> bool {
        let path = request.path_only();
        let (path, cased) = if self.case_sensitive {
            (std::borrow::Cow::Borrowed(path), true)
        } else {
            (std::borrow::Cow::Owned(path.to_lowercase()), false)
        };
        let lower = |s: &String| if cased { s.clone() } else { s.to_lowercase() };
        let path_ok = match &self.path {
            PathRule::Prefix(p) => path.starts_with(lower(p).as_str()),
            PathRule::Exact(p) => *path == lower(p),
            PathRule::Regex(r) => r.is_match(&path),
        };
        path_ok
            && self.headers.iter().all(|h| h.matches(request))
            && self.queries.iter().all(|q| match (request.query(&q.name), &q.test) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(v), Some(m)) => m.matches(v),
            })
    }

    /// The total of the weighted clusters (0 without them): the range of `pick`.
    fn decide(&self, request: &RequestHead, pick: u64) -> Decision {
        let route = &self.route;
        match &route.action {
            Some(route::Action::DirectResponse(d)) => Decision::Respond {
                status: u16::try_from(d.status).unwrap_or(500),
                body: match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                    Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(s)) => s.clone(),
                    _ => String::new(),
                },
            },
            Some(route::Action::Redirect(r)) => {
                let scheme = match &r.scheme_rewrite_specifier {
                    Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) => s.clone(),
                    Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => "https".to_owned(),
                    _ => "http".to_owned(),
                };
                let host = if r.host_redirect.is_empty() { request.authority.to_owned() } else { r.host_redirect.clone() };
                let host = if r.port_redirect > 0 {
                    format!("{}:{}", host.split(':').next().unwrap_or_default(), r.port_redirect)
                } else {
                    host
                };
                let path = match &r.path_rewrite_specifier {
                    Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => p.clone(),
                    Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(p)) => self.rewrite_prefix(request, p),
                    _ => request.path.to_owned(),
                };
                let status = match redirect_action::RedirectResponseCode::try_from(r.response_code) {
                    Ok(redirect_action::RedirectResponseCode::Found) => 302,
                    Ok(redirect_action::RedirectResponseCode::SeeOther) => 303,
                    Ok(redirect_action::RedirectResponseCode::TemporaryRedirect) => 307,
                    Ok(redirect_action::RedirectResponseCode::PermanentRedirect) => 308,
                    _ => 301,
                };
                Decision::Redirect { status, location: format!("{scheme}://{host}{path}") }
            }
            Some(route::Action::Route(action)) => {
                let (mut set, mut add) = header_ops(&route.request_headers_to_add);
                let mut remove = route.request_headers_to_remove.clone();
                let cluster = match &action.cluster_specifier {
                    Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
                    Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                        let total = self.weights.last().map_or(1, |(t, _)| *t);
                        let at = pick % total;
                        let index = self.weights.partition_point(|(t, _)| *t <= at);
                        let chosen = &w.clusters[index.min(w.clusters.len() - 1)];
                        let (s, a) = header_ops(&chosen.request_headers_to_add);
                        set.extend(s);
                        add.extend(a);
                        remove.extend(chosen.request_headers_to_remove.iter().cloned());
                        chosen.name.clone()
                    }
                    _ => String::new(),
                };
                let mut path = request.path.to_owned();
                if !action.prefix_rewrite.is_empty() {
                    path = self.rewrite_prefix(request, &action.prefix_rewrite);
                } else if let Some((regex, substitution)) = &self.rewrite {
                    let (only, query) = match request.path.split_once('?') {
                        Some((p, q)) => (p, Some(q)),
                        None => (request.path, None),
                    };
                    let rewritten = regex.replace_all(only, substitution.as_str()).into_owned();
                    path = match query {
                        Some(q) => format!("{rewritten}?{q}"),
                        None => rewritten,
                    };
                }
                let authority = match &action.host_rewrite_specifier {
                    Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => h.clone(),
                    _ => request.authority.to_owned(),
                };
                Decision::Forward { cluster, path, authority, set_headers: set, add_headers: add, remove_headers: remove }
            }
            _ => Decision::Respond { status: 404, body: String::new() },
        }
    }

    /// The path with the matched prefix replaced (for prefix matches; an exact or regex
    /// match replaces the whole path).
    fn rewrite_prefix(&self, request: &RequestHead, replacement: &str) -> String {
        let path = request.path_only();
        let rest = &request.path[path.len()..];
        let tail = match &self.path {
            PathRule::Prefix(p) if path.len() >= p.len() => &path[p.len()..],
            _ => "",
        };
        format!("{replacement}{tail}{rest}")
    }
}

/// The request's hash for consistent-hash load balancing, by the route's hash policies
/// (header, cookie, source IP, query parameter; the first that yields a value). `None`
/// without one.
pub fn hash_key(route: &Route, request: &RequestHead, source: std::net::IpAddr) -> Option<u64> {
    use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
    use std::hash::{Hash, Hasher};
    let Some(route::Action::Route(action)) = &route.action else { return None };
    let hash = |value: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        value(&mut hasher);
        hasher.finish()
    };
    action.hash_policy.iter().find_map(|policy| match policy.policy_specifier.as_ref()? {
        PolicySpecifier::Header(h) => {
            let value = request.header(&h.header_name.to_ascii_lowercase())?;
            Some(hash(&|s| value.hash(s)))
        }
        PolicySpecifier::Cookie(c) => {
            let cookies = request.header("cookie")?;
            let value = cookies.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == c.name).then_some(v)
            })?;
            Some(hash(&|s| value.hash(s)))
        }
        PolicySpecifier::ConnectionProperties(p) if p.source_ip => Some(hash(&|s| source.hash(s))),
        PolicySpecifier::QueryParameter(q) => {
            let value = request.query(&q.name)?;
            Some(hash(&|s| value.hash(s)))
        }
        _ => None,
    })
}
