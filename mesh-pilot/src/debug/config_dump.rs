//! `/debug/config_dump?proxyID=`: what one connected proxy is served, as Envoy's admin config
//! dump writes it, so Envoy's tooling (and `meshctl`) read it as they read a proxy's own.

use crate::ads::Discovery;

/// What a connected proxy (by node id) is served now, as Envoy's admin config dump writes it
/// (`envoy.admin.v3.ConfigDump` JSON); `None` when no such proxy is connected.
pub async fn config_dump(
    discovery: &Discovery,
    proxy_id: &str,
) -> Option<Result<serde_json::Value, mesh_api::envoy::JsonError>> {
    let proxy = discovery.syncz().await.into_iter().find(|p| p.id == proxy_id)?.node;
    let snapshot = discovery.snapshots.borrow().clone();
    let version = snapshot.version.to_string();
    let mut configs = Vec::new();
    // Envoy's dump order and field names: (dump type, list field, entry field).
    let sections = [
        (mesh_api::xds::CLUSTER_TYPE, "ClustersConfigDump", "dynamicActiveClusters", "cluster"),
        (
            mesh_api::xds::ENDPOINT_TYPE,
            "EndpointsConfigDump",
            "dynamicEndpointConfigs",
            "endpointConfig",
        ),
        (mesh_api::xds::LISTENER_TYPE, "ListenersConfigDump", "dynamicListeners", "listener"),
        (mesh_api::xds::ROUTE_TYPE, "RoutesConfigDump", "dynamicRouteConfigs", "routeConfig"),
    ];
    for (type_url, dump, list, field) in sections {
        let Some(translated) = discovery.resources(type_url, &snapshot, &proxy).await else {
            continue;
        };
        let mut entries = Vec::new();
        for (name, any) in &translated.resources {
            let json = match mesh_api::envoy::to_json(&any.type_url, &any.value) {
                Ok(json) => json,
                Err(err) => return Some(Err(err)),
            };
            entries.push(if type_url == mesh_api::xds::LISTENER_TYPE {
                serde_json::json!({"name": name, "activeState": {"versionInfo": version, field: json}})
            } else {
                serde_json::json!({"versionInfo": version, field: json})
            });
        }
        configs.push(serde_json::json!({
            "@type": format!("type.googleapis.com/envoy.admin.v3.{dump}"),
            list: entries,
        }));
    }
    Some(Ok(serde_json::json!({ "configs": configs })))
}
