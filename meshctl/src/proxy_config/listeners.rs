//! `proxy-config listeners`: one row per filter chain, what it matches and where it sends the
//! connection, as `istioctl proxy-config listeners` prints them.

use serde_json::Value;

use super::dump::{self, DumpError, field, list, number, path, text};
use super::routes::describe_match;
use super::table::Table;

/// Which listeners (and chains) to show; every set field must match.
#[derive(Clone, Debug, Default)]
pub struct ListenerFilter {
    /// The listener's name (`virtualOutbound`, `0.0.0.0_8080`).
    pub name: Option<String>,
    /// The listener's address.
    pub address: Option<String>,
    /// The listener's port, or the destination port a chain matches (a sidecar's
    /// `virtualOutbound` has one chain per service port).
    pub port: Option<u16>,
    /// `HTTP`, `TCP`, `HTTP+TCP` or `UNKNOWN`: what the listener's chains do.
    pub kind: Option<String>,
}

impl ListenerFilter {
    fn matches_listener(&self, listener: &Value) -> bool {
        self.name.as_ref().is_none_or(|n| n == text(listener, "name"))
            && self.address.as_ref().is_none_or(|a| a.eq_ignore_ascii_case(&address(listener)))
            && self.kind.as_ref().is_none_or(|k| k.eq_ignore_ascii_case(listener_type(listener)))
    }

    fn matches_chain(&self, listener: &Value, chain: &Value) -> bool {
        self.port.is_none_or(|p| port(listener) == Some(p) || chain_port(chain) == Some(p))
    }
}

/// The listeners `filter` selects (with `--port`, those listening on it or with a chain for
/// it), in the table's order: by port, address, type.
pub fn select<'a>(dump: &'a Value, filter: &ListenerFilter) -> Result<Vec<&'a Value>, DumpError> {
    let mut listeners: Vec<&Value> = dump::listeners(dump)?
        .into_iter()
        .filter(|l| filter.matches_listener(l))
        .filter(|l| chains(l).any(|c| filter.matches_chain(l, c)))
        .collect();
    listeners.sort_by(|a, b| {
        (port(a), address(a), listener_type(a)).cmp(&(port(b), address(b), listener_type(b)))
    });
    Ok(listeners)
}

/// The table: `ADDRESSES  PORT  MATCH  DESTINATION`, a row per filter chain.
pub fn table(dump: &Value, filter: &ListenerFilter) -> Result<String, DumpError> {
    let mut table = Table::new(&["ADDRESSES", "PORT", "MATCH", "DESTINATION"]);
    for listener in select(dump, filter)? {
        let addresses = addresses(listener);
        let port = port(listener).map_or_else(String::new, |p| p.to_string());
        let mut rows: Vec<(String, String)> = chains(listener)
            .filter(|c| filter.matches_chain(listener, c))
            .map(|c| (describe_chain_match(field(c, "filter_chain_match")), destination(c)))
            .collect();
        // istioctl's order within a listener.
        rows.sort_by(|a, b| b.1.cmp(&a.1));
        for (matches, destination) in rows {
            table.row([addresses.clone(), port.clone(), matches, destination]);
        }
    }
    Ok(table.render())
}

/// The listener's chains, its default chain (what matches no other) last.
fn chains(listener: &Value) -> impl Iterator<Item = &Value> {
    list(listener, "filter_chains").iter().chain(field(listener, "default_filter_chain"))
}

fn address(listener: &Value) -> String {
    socket_or_pipe(field(listener, "address"))
}

/// The listener's address and its additional ones.
fn addresses(listener: &Value) -> String {
    std::iter::once(address(listener))
        .chain(
            list(listener, "additional_addresses")
                .iter()
                .map(|a| socket_or_pipe(field(a, "address"))),
        )
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

fn socket_or_pipe(address: Option<&Value>) -> String {
    let Some(address) = address else { return String::new() };
    match path(address, &["socket_address", "address"]).and_then(Value::as_str) {
        Some(ip) => ip.to_owned(),
        None => path(address, &["pipe", "path"]).and_then(Value::as_str).unwrap_or("").to_owned(),
    }
}

fn port(listener: &Value) -> Option<u16> {
    let address = field(listener, "address")?;
    let socket = field(address, "socket_address")?;
    // proto3 JSON leaves a zero port out.
    Some(field(socket, "port_value").and_then(number).map_or(0, |p| u16::try_from(p).unwrap_or(0)))
}

fn chain_port(chain: &Value) -> Option<u16> {
    path(chain, &["filter_chain_match", "destination_port"])
        .and_then(number)
        .and_then(|p| u16::try_from(p).ok())
}

fn is_filter(filter: &Value, name: &str, config_type: &str) -> bool {
    text(filter, "name") == name
        || path(filter, &["typed_config", "@type"])
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with(config_type))
}

fn is_http(filter: &Value) -> bool {
    is_filter(filter, "envoy.filters.network.http_connection_manager", ".HttpConnectionManager")
}

fn is_tcp(filter: &Value) -> bool {
    is_filter(filter, "envoy.filters.network.tcp_proxy", ".TcpProxy")
}

/// A TCP proxy's cluster (or weighted clusters, joined), `None` when it only drops connections
/// (`BlackHoleCluster`), which istioctl does not count as TCP.
fn tcp_cluster(filter: &Value) -> Option<String> {
    let config = field(filter, "typed_config")?;
    let cluster = match text(config, "cluster") {
        "" => list(field(config, "weighted_clusters").unwrap_or(&Value::Null), "clusters")
            .iter()
            .map(|c| text(c, "name"))
            .collect::<Vec<_>>()
            .join(","),
        one => one.to_owned(),
    };
    (cluster != mesh_api::xds::BLACKHOLE_CLUSTER).then_some(cluster)
}

/// `HTTP`, `TCP`, `HTTP+TCP` or `UNKNOWN`, from what the listener's chains run.
fn listener_type(listener: &Value) -> &'static str {
    let filters = || chains(listener).flat_map(|c| list(c, "filters"));
    let http = filters().any(is_http);
    let tcp = filters().any(|f| is_tcp(f) && tcp_cluster(f).is_some());
    match (http, tcp) {
        (true, false) => "HTTP",
        (true, true) => "HTTP+TCP",
        (false, true) => "TCP",
        (false, false) => "UNKNOWN",
    }
}

/// The ALPN lists Istio's chains match, by what istioctl calls them.
const KNOWN_ALPNS: [(&str, &[&str]); 4] = [
    (
        "App: HTTP TLS",
        &["http/1.0", "http/1.1", "h2c", "istio-http/1.0", "istio-http/1.1", "istio-h2"],
    ),
    ("App: Istio HTTP Plain", &["istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"]),
    ("App: TCP TLS", &["istio-peer-exchange", "istio"]),
    ("App: HTTP", &["http/1.0", "http/1.1", "h2c"]),
];

/// What a chain matches: `SNI: ...; Trans: tls; App: ...; Addr: 10.0.0.0/8:9080`, or `ALL`.
fn describe_chain_match(matches: Option<&Value>) -> String {
    let Some(matches) = matches else { return "ALL".to_owned() };
    let strings = |name| list(matches, name).iter().filter_map(Value::as_str).collect::<Vec<_>>();
    let mut parts = Vec::new();
    let server_names = strings("server_names");
    if !server_names.is_empty() {
        parts.push(format!("SNI: {}", server_names.join(",")));
    }
    let transport = text(matches, "transport_protocol");
    if !transport.is_empty() {
        parts.push(format!("Trans: {transport}"));
    }
    let alpns = strings("application_protocols");
    if !alpns.is_empty() {
        match KNOWN_ALPNS.iter().find(|(_, known)| *known == alpns.as_slice()) {
            Some((described, _)) => parts.push((*described).to_owned()),
            None => parts.push(format!("App: {}", alpns.join(","))),
        }
    }
    let port = chain_port_of(matches).map_or_else(String::new, |p| format!(":{p}"));
    let ranges: Vec<String> = list(matches, "prefix_ranges")
        .iter()
        .map(|r| {
            let length = field(r, "prefix_len").and_then(number).unwrap_or(0);
            format!("{}/{length}", text(r, "address_prefix"))
        })
        .collect();
    if !ranges.is_empty() {
        parts.push(format!("Addr: {}{port}", ranges.join(",")));
    } else if !port.is_empty() {
        parts.push(format!("Addr: *{port}"));
    }
    if parts.is_empty() { "ALL".to_owned() } else { parts.join("; ") }
}

fn chain_port_of(matches: &Value) -> Option<u64> {
    field(matches, "destination_port").and_then(number)
}

/// Where a chain sends what it matches: `Route: 9080` (RDS), `Inline Route: ...`, `Cluster:
/// ...`, a passthrough cluster by name, or `Non-HTTP/Non-TCP`.
fn destination(chain: &Value) -> String {
    for filter in list(chain, "filters") {
        if is_http(filter) {
            let config = field(filter, "typed_config").unwrap_or(&Value::Null);
            if let Some(routes) = field(config, "route_config") {
                return describe_route_config(routes);
            }
            let rds = path(config, &["rds", "route_config_name"]).and_then(Value::as_str);
            return match rds {
                Some(name) if !name.is_empty() => format!("Route: {name}"),
                _ => "HTTP".to_owned(),
            };
        }
        if is_tcp(filter)
            && let Some(cluster) = tcp_cluster(filter)
        {
            return if cluster.contains("Cluster") {
                cluster
            } else {
                format!("Cluster: {cluster}")
            };
        }
    }
    "Non-HTTP/Non-TCP".to_owned()
}

/// An inline route configuration in one line: each virtual host's domains (unless `*`) and
/// its routes' matches.
fn describe_route_config(routes: &Value) -> String {
    let hosts: Vec<String> = list(routes, "virtual_hosts")
        .iter()
        .map(|host| {
            let domains: Vec<&str> =
                list(host, "domains").iter().filter_map(Value::as_str).collect();
            let matches = list(host, "routes")
                .iter()
                .map(|r| describe_match(field(r, "match")))
                .collect::<Vec<_>>()
                .join(", ");
            if domains == ["*"] { matches } else { format!("{} {matches}", domains.join("/")) }
        })
        .collect();
    format!("Inline Route: {}", hosts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chain_matches_read_as_istioctl_writes_them() {
        assert_eq!(describe_chain_match(None), "ALL");
        assert_eq!(describe_chain_match(Some(&json!({}))), "ALL");
        assert_eq!(
            describe_chain_match(Some(
                &json!({"destination_port": 9080, "transport_protocol": "tls",
                "application_protocols": ["istio-peer-exchange", "istio"]})
            )),
            "Trans: tls; App: TCP TLS; Addr: *:9080"
        );
        assert_eq!(
            describe_chain_match(Some(&json!({"serverNames": ["a.example", "b.example"],
                "transportProtocol": "raw_buffer", "applicationProtocols": ["http/1.1", "h2c"],
                "prefixRanges": [{"addressPrefix": "10.96.0.10", "prefixLen": 32}],
                "destinationPort": 9080}))),
            "SNI: a.example,b.example; Trans: raw_buffer; App: http/1.1,h2c; Addr: 10.96.0.10/32:9080"
        );
    }

    #[test]
    fn a_chain_that_only_drops_is_neither_http_nor_tcp() {
        let blackhole = json!({"filters": [{"name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"cluster": "BlackHoleCluster"}}]});
        assert_eq!(destination(&blackhole), "Non-HTTP/Non-TCP");
        let weighted = json!({"filters": [{"name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"weighted_clusters": {"clusters": [{"name": "a", "weight": 1},
            {"name": "b", "weight": 1}]}}}]});
        assert_eq!(destination(&weighted), "Cluster: a,b");
        let listener = json!({"filter_chains": [blackhole]});
        assert_eq!(listener_type(&listener), "UNKNOWN");
    }
}
