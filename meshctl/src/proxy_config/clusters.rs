//! `proxy-config clusters`: one row per cluster, its service name taken apart
//! (`outbound|9080|v1|reviews.default.svc.cluster.local`), as `istioctl proxy-config clusters`
//! prints it.

use serde_json::Value;

use super::dump::{self, DumpError, path, text};
use super::table::Table;

/// Which clusters to show; every set field must match.
#[derive(Clone, Debug, Default)]
pub struct ClusterFilter {
    /// The whole cluster name.
    pub name: Option<String>,
    /// A part of the service's name (`reviews`, `reviews.default.svc.cluster.local`).
    pub fqdn: Option<String>,
    /// The port of the cluster's name.
    pub port: Option<u16>,
    /// A part of the subset's name.
    pub subset: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
}

impl ClusterFilter {
    /// Whether the cluster named `name` is shown (by its name alone, as istioctl decides).
    pub fn matches(&self, name: &str) -> bool {
        let key = ServiceKey::parse(name);
        self.name.as_ref().is_none_or(|n| n == name)
            && self.fqdn.as_ref().is_none_or(|f| key.fqdn.contains(f.as_str()))
            && self.subset.as_ref().is_none_or(|s| key.subset.contains(s.as_str()))
            && self.direction.as_ref().is_none_or(|d| key.direction.eq_ignore_ascii_case(d))
            && self.port.is_none_or(|p| key.port == Some(p))
    }
}

/// A cluster name taken apart: `direction|port|subset|fqdn` for a service's, the whole name as
/// the FQDN for any other (`BlackHoleCluster`, `xds-grpc`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ServiceKey<'a> {
    fqdn: &'a str,
    subset: &'a str,
    port: Option<u16>,
    direction: &'a str,
}

impl<'a> ServiceKey<'a> {
    fn parse(name: &'a str) -> Self {
        let parts: Vec<&str> = name.splitn(4, '|').collect();
        match parts.as_slice() {
            [direction, port, subset, fqdn] => {
                Self { fqdn, subset, port: port.parse().ok(), direction }
            }
            _ => Self { fqdn: name, subset: "", port: None, direction: "" },
        }
    }
}

/// The clusters `filter` selects, in the table's order (by service, subset, port, direction).
pub fn select<'a>(dump: &'a Value, filter: &ClusterFilter) -> Result<Vec<&'a Value>, DumpError> {
    let mut clusters: Vec<&Value> =
        dump::clusters(dump)?.into_iter().filter(|c| filter.matches(text(c, "name"))).collect();
    clusters.sort_by(|a, b| {
        ServiceKey::parse(text(a, "name")).cmp(&ServiceKey::parse(text(b, "name")))
    });
    Ok(clusters)
}

/// The table: `SERVICE FQDN  PORT  SUBSET  DIRECTION  TYPE  DESTINATION RULE`.
pub fn table(dump: &Value, filter: &ClusterFilter) -> Result<String, DumpError> {
    let mut table =
        Table::new(&["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"]);
    for cluster in select(dump, filter)? {
        let key = ServiceKey::parse(text(cluster, "name"));
        let or_dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
        // An inbound cluster names no service: its FQDN stays empty, as istioctl shows it.
        table.row([
            key.fqdn.to_owned(),
            key.port.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            or_dash(key.subset),
            or_dash(key.direction),
            discovery_type(cluster),
            config_name(path(cluster, &["metadata", "filter_metadata", "istio", "config"])),
        ]);
    }
    Ok(table.render())
}

/// How the cluster finds its endpoints: its `type` (`EDS`, `STATIC`, `ORIGINAL_DST`,
/// `STRICT_DNS`, `LOGICAL_DNS`), or the name of its `cluster_type` extension.
fn discovery_type(cluster: &Value) -> String {
    match (dump::field(cluster, "type"), dump::field(cluster, "cluster_type")) {
        (Some(Value::String(kind)), _) => kind.clone(),
        (_, Some(extension)) => text(extension, "name").to_owned(),
        // The enum's zero is left out of proto3 JSON: STATIC.
        _ => "STATIC".to_owned(),
    }
}

/// The Istio object a resource was made from, as Istio's pilot records it in the resource's
/// `istio` metadata (`/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews`),
/// as `name.namespace`; empty when not recorded.
pub(super) fn config_name(config: Option<&Value>) -> String {
    let Some(config) = config.and_then(Value::as_str) else {
        return String::new();
    };
    match config.split('/').collect::<Vec<_>>().as_slice() {
        ["", "apis", _group, _version, "namespaces", namespace, _kind, name] => {
            format!("{name}.{namespace}")
        }
        _ => "<unknown>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dump() -> Value {
        json!({"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "static_clusters": [{"cluster": {"name": "xds-grpc", "type": "STRICT_DNS"}}],
            "dynamic_active_clusters": [
                {"cluster": {"name": "outbound|9080|v2|reviews.default.svc.cluster.local",
                    "type": "EDS", "metadata": {"filter_metadata": {"istio": {"config":
                    "/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews"}}}}},
                {"cluster": {"name": "outbound|9080|v1|reviews.default.svc.cluster.local",
                    "type": "EDS"}},
                {"cluster": {"name": "inbound|9080||", "type": "ORIGINAL_DST"}},
                {"cluster": {"name": "agg", "cluster_type": {"name": "envoy.clusters.aggregate"}}},
                {"cluster": {"name": "BlackHoleCluster"}}]}]})
    }

    #[test]
    fn clusters_are_taken_apart_and_sorted_by_service() {
        assert_eq!(
            table(&dump(), &ClusterFilter::default()).unwrap(),
            "\
SERVICE FQDN                        PORT   SUBSET   DIRECTION   TYPE                       DESTINATION RULE
                                    9080   -        inbound     ORIGINAL_DST
BlackHoleCluster                    -      -        -           STATIC
agg                                 -      -        -           envoy.clusters.aggregate
reviews.default.svc.cluster.local   9080   v1       outbound    EDS
reviews.default.svc.cluster.local   9080   v2       outbound    EDS                        reviews.default
xds-grpc                            -      -        -           STRICT_DNS
"
        );
    }

    #[test]
    fn filters_select_by_the_parts_of_the_name() {
        let names = |filter: &ClusterFilter| -> Vec<String> {
            select(&dump(), filter).unwrap().iter().map(|c| text(c, "name").to_owned()).collect()
        };
        let subset = ClusterFilter { subset: Some("v2".into()), ..Default::default() };
        assert_eq!(names(&subset), ["outbound|9080|v2|reviews.default.svc.cluster.local"]);
        let inbound = ClusterFilter { direction: Some("inbound".into()), ..Default::default() };
        assert_eq!(names(&inbound), ["inbound|9080||"]);
        let port =
            ClusterFilter { port: Some(9080), fqdn: Some("reviews".into()), ..Default::default() };
        assert_eq!(names(&port).len(), 2);
        let name = ClusterFilter { name: Some("xds-grpc".into()), ..Default::default() };
        assert_eq!(names(&name), ["xds-grpc"]);
        let none = ClusterFilter { port: Some(9090), ..Default::default() };
        assert!(names(&none).is_empty());
    }

    #[test]
    fn a_config_path_names_its_object() {
        let path = json!(
            "/apis/networking.istio.io/v1alpha3/namespaces/bookinfo/destination-rule/ratings"
        );
        assert_eq!(config_name(Some(&path)), "ratings.bookinfo");
        assert_eq!(config_name(Some(&json!("something else"))), "<unknown>");
        assert_eq!(config_name(None), "");
    }
}
