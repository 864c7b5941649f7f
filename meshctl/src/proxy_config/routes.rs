//! `proxy-config routes`: one row per route of each virtual host, as `istioctl proxy-config
//! routes` prints them.

use serde_json::Value;

use super::clusters::config_name;
use super::dump::{self, DumpError, field, list, path, text};
use super::table::Table;

/// Which route configurations to show.
#[derive(Clone, Debug, Default)]
pub struct RouteFilter {
    /// The route configuration's name (`9080`, `http.8080`).
    pub name: Option<String>,
}

/// The route configurations `filter` selects: those named by a port first, in port order,
/// then the others by name.
pub fn select<'a>(dump: &'a Value, filter: &RouteFilter) -> Result<Vec<&'a Value>, DumpError> {
    let mut routes: Vec<&Value> = dump::route_configs(dump)?
        .into_iter()
        .filter(|r| filter.name.as_ref().is_none_or(|n| n == text(r, "name")))
        .collect();
    routes.sort_by_key(|r| {
        let name = text(r, "name");
        let port = name.parse::<u64>().ok();
        (port.is_none(), port, name)
    });
    Ok(routes)
}

/// The table: `NAME  VHOST NAME  DOMAINS  MATCH  VIRTUAL SERVICE`.
pub fn table(dump: &Value, filter: &RouteFilter) -> Result<String, DumpError> {
    let mut table = Table::new(&["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]);
    for config in select(dump, filter)? {
        let name = text(config, "name");
        for host in list(config, "virtual_hosts") {
            let domains = describe_domains(list(host, "domains"));
            let routes = list(host, "routes");
            for route in routes.iter().filter(|r| !is_passthrough(r)) {
                table.row([
                    name.to_owned(),
                    text(host, "name").to_owned(),
                    domains.clone(),
                    describe_match(field(route, "match")),
                    config_name(path(route, &["metadata", "filter_metadata", "istio", "config"])),
                ]);
            }
            if routes.is_empty() {
                // A host without routes answers every request 404.
                table.row([name, text(host, "name"), domains.as_str(), "/*", "404"]);
            }
        }
    }
    Ok(table.render())
}

/// A route that lets anything out unrouted (`ALLOW_ANY`): istioctl leaves it out.
fn is_passthrough(route: &Value) -> bool {
    path(route, &["route", "cluster"]).and_then(Value::as_str)
        == Some(mesh_api::xds::PASSTHROUGH_CLUSTER)
}

/// What a route matches: `/prefix*`, `/exact`, `regex ...`; headers and the rest are left out,
/// as istioctl does.
pub(super) fn describe_match(matches: Option<&Value>) -> String {
    let Some(matches) = matches else { return String::new() };
    let mut parts = Vec::new();
    let prefix = text(matches, "prefix");
    if !prefix.is_empty() {
        parts.push(format!("{prefix}*"));
    }
    let separated = text(matches, "path_separated_prefix");
    if !separated.is_empty() {
        parts.push(format!("PathPrefix:{separated}"));
    }
    let exact = text(matches, "path");
    if !exact.is_empty() {
        parts.push(exact.to_owned());
    }
    if let Some(regex) = path(matches, &["safe_regex", "regex"]).and_then(Value::as_str) {
        parts.push(format!("regex {regex}"));
    }
    parts.join(" ")
}

/// A virtual host's domains in short: without the `:port` forms, without the longer spellings
/// of a name also there (`reviews.default.svc.cluster.local` when `reviews.default` is), at most
/// two and how many more.
fn describe_domains(domains: &[Value]) -> String {
    let domains: Vec<&str> = domains.iter().filter_map(Value::as_str).collect();
    if domains.len() <= 1 {
        return domains.first().copied().unwrap_or("").to_owned();
    }
    let without_port: Vec<&str> = domains
        .iter()
        .copied()
        .filter(|d| {
            // An IPv6 address has colons of its own: `[fd00:10::1]` is kept, `[fd00:10::1]:80` not.
            !d.contains(':') || (d.matches(':').count() > 2 && d.ends_with(']'))
        })
        .collect();
    let shorter_there = |d: &str, suffix: &str| {
        d.strip_suffix(suffix).is_some_and(|short| without_port.contains(&short))
    };
    let kept: Vec<&str> = without_port
        .iter()
        .copied()
        .filter(|d| !shorter_there(d, ".svc.cluster.local") && !shorter_there(d, ".svc"))
        .collect();
    const MAX: usize = 2;
    if kept.len() > MAX {
        format!("{} + {} more...", kept[..MAX].join(", "), kept.len() - MAX)
    } else {
        kept.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn domains_are_shortened_as_istioctl_does() {
        let domains = json!([
            "reviews.default.svc.cluster.local:9080",
            "reviews.default.svc.cluster.local",
            "reviews:9080",
            "reviews",
            "reviews.default:9080",
            "reviews.default",
            "reviews.default.svc:9080",
            "reviews.default.svc",
            "10.96.0.10:9080",
            "10.96.0.10"
        ]);
        assert_eq!(
            describe_domains(domains.as_array().unwrap()),
            "reviews, reviews.default + 1 more..."
        );
        assert_eq!(describe_domains(json!(["*"]).as_array().unwrap()), "*");
        assert_eq!(
            describe_domains(
                json!(["[fd00:10:96::7fc7]", "[fd00:10:96::7fc7]:80", "a"]).as_array().unwrap()
            ),
            "[fd00:10:96::7fc7], a"
        );
    }

    #[test]
    fn route_matches_read_as_istioctl_writes_them() {
        assert_eq!(describe_match(Some(&json!({"prefix": "/"}))), "/*");
        assert_eq!(describe_match(Some(&json!({"path": "/productpage"}))), "/productpage");
        assert_eq!(
            describe_match(Some(&json!({"safeRegex": {"regex": "/api/.*"}}))),
            "regex /api/.*"
        );
        assert_eq!(describe_match(Some(&json!({"path_separated_prefix": "/a"}))), "PathPrefix:/a");
    }

    #[test]
    fn a_host_without_routes_answers_404_and_passthrough_is_left_out() {
        let dump = json!({"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "dynamic_route_configs": [{"route_config": {"name": "80", "virtual_hosts": [
                {"name": "blackhole:80", "domains": ["*"]},
                {"name": "allow_any", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                    "route": {"cluster": "PassthroughCluster"}}]},
                {"name": "ratings:80", "domains": ["ratings"], "routes": [{"match": {"prefix": "/"},
                    "route": {"cluster": "outbound|80||ratings"}, "metadata": {"filter_metadata":
                    {"istio": {"config": "/apis/networking.istio.io/v1/namespaces/default/virtual-service/ratings"}}}}]}]}}]}]});
        assert_eq!(
            table(&dump, &RouteFilter::default()).unwrap(),
            "\
NAME   VHOST NAME     DOMAINS   MATCH   VIRTUAL SERVICE
80     blackhole:80   *         /*      404
80     ratings:80     ratings   /*      ratings.default
"
        );
    }
}
