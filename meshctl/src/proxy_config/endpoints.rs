//! `proxy-config endpoints`: one row per endpoint of each cluster, with its health and whether
//! outlier detection ejected it, from the proxy's `/clusters?format=json` (Envoy's `Clusters`
//! JSON), as `istioctl proxy-config endpoints` prints them.

use serde_json::Value;

use super::dump::{DumpError, field, list, number, path, text};
use super::table::Table;

/// Which endpoints to show; every set field must match.
#[derive(Clone, Debug, Default)]
pub struct EndpointFilter {
    /// The cluster's whole name.
    pub cluster: Option<String>,
    /// The endpoint's address.
    pub address: Option<String>,
    /// The endpoint's port.
    pub port: Option<u16>,
    /// Its health: `HEALTHY`, `UNHEALTHY`, `DRAINING`, `TIMEOUT`, `DEGRADED`, `UNKNOWN`.
    pub status: Option<String>,
}

impl EndpointFilter {
    fn matches(&self, cluster: &str, host: &Value) -> bool {
        let (address, port) = address(host);
        self.cluster.as_ref().is_none_or(|c| c.eq_ignore_ascii_case(cluster))
            && self.address.as_ref().is_none_or(|a| a.eq_ignore_ascii_case(&address))
            && self.port.is_none_or(|p| port == Some(p))
            && self.status.as_ref().is_none_or(|s| s.eq_ignore_ascii_case(status(host)))
    }
}

/// The cluster statuses of the answer.
fn cluster_statuses(clusters: &Value) -> Result<&[Value], DumpError> {
    field(clusters, "cluster_statuses")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or(DumpError::Missing("cluster_statuses"))
}

/// The clusters (whole, as the proxy reports them) with an endpoint `filter` selects.
pub fn select<'a>(
    clusters: &'a Value,
    filter: &EndpointFilter,
) -> Result<Vec<&'a Value>, DumpError> {
    Ok(cluster_statuses(clusters)?
        .iter()
        .filter(|c| list(c, "host_statuses").iter().any(|h| filter.matches(text(c, "name"), h)))
        .collect())
}

/// The table: `ENDPOINT  STATUS  OUTLIER CHECK  CLUSTER`, by address, port and cluster.
pub fn table(clusters: &Value, filter: &EndpointFilter) -> Result<String, DumpError> {
    let mut rows = Vec::new();
    for cluster in cluster_statuses(clusters)? {
        let name = text(cluster, "name");
        for host in list(cluster, "host_statuses").iter().filter(|h| filter.matches(name, h)) {
            let (address, port) = address(host);
            let outlier = path(host, &["health_status", "failed_outlier_check"])
                .and_then(Value::as_bool)
                .unwrap_or(false);
            rows.push((address, port, name, status(host), outlier));
        }
    }
    rows.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    let mut table = Table::new(&["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]);
    for (address, port, cluster, status, outlier) in rows {
        let endpoint = match port {
            Some(port) => format!("{address}:{port}"),
            None => address,
        };
        table.row([endpoint.as_str(), status, if outlier { "FAILED" } else { "OK" }, cluster]);
    }
    Ok(table.render())
}

/// The endpoint's address and port (a pipe's path and none).
fn address(host: &Value) -> (String, Option<u16>) {
    let Some(address) = field(host, "address") else { return (String::new(), None) };
    match field(address, "socket_address") {
        Some(socket) => (
            text(socket, "address").to_owned(),
            Some(
                field(socket, "port_value")
                    .and_then(number)
                    .map_or(0, |p| u16::try_from(p).unwrap_or(0)),
            ),
        ),
        None => (
            path(address, &["pipe", "path"]).and_then(Value::as_str).unwrap_or("").to_owned(),
            None,
        ),
    }
}

/// The endpoint's health as the control plane (EDS) gave it.
fn status(host: &Value) -> &str {
    match path(host, &["health_status", "eds_health_status"]).and_then(Value::as_str) {
        Some(status) if !status.is_empty() => status,
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clusters() -> Value {
        json!({"cluster_statuses": [
            {"name": "outbound|9080||reviews.default.svc.cluster.local", "host_statuses": [
                {"address": {"socket_address": {"address": "10.77.0.11", "port_value": 9080}},
                 "health_status": {"eds_health_status": "UNHEALTHY", "failed_outlier_check": true}},
                {"address": {"socket_address": {"address": "10.77.0.10", "port_value": 9080}},
                 "health_status": {"eds_health_status": "HEALTHY"}}]},
            {"name": "PassthroughCluster"},
            {"name": "agent", "host_statuses": [{"address": {"pipe": {"path": "/etc/sds"}},
                "health_status": {}}]}]})
    }

    #[test]
    fn an_ejected_endpoint_shows_its_outlier_check() {
        assert_eq!(
            table(&clusters(), &EndpointFilter::default()).unwrap(),
            "\
ENDPOINT          STATUS      OUTLIER CHECK   CLUSTER
/etc/sds          UNKNOWN     OK              agent
10.77.0.10:9080   HEALTHY     OK              outbound|9080||reviews.default.svc.cluster.local
10.77.0.11:9080   UNHEALTHY   FAILED          outbound|9080||reviews.default.svc.cluster.local
"
        );
    }

    #[test]
    fn filters_select_endpoints_and_their_clusters() {
        let unhealthy = EndpointFilter { status: Some("unhealthy".into()), ..Default::default() };
        let clusters = clusters();
        let text_of = table(&clusters, &unhealthy).unwrap();
        assert_eq!(text_of.lines().count(), 2, "{text_of}");
        assert!(text_of.contains("10.77.0.11:9080"), "{text_of}");
        let selected = select(&clusters, &unhealthy).unwrap();
        assert_eq!(selected.len(), 1);
        let port = EndpointFilter { port: Some(9090), ..Default::default() };
        assert!(select(&clusters, &port).unwrap().is_empty());
        assert_eq!(
            table(&json!({"configs": []}), &port).unwrap_err(),
            DumpError::Missing("cluster_statuses")
        );
    }
}
