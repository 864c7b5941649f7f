//! Translation: pure functions from a [`Snapshot`] and a [`Proxy`] to Envoy v3 resources.
//! No I/O; golden tests pin the output.

use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::Name;

use crate::model::{Proxy, Snapshot};

pub mod authn;
pub mod authz;
pub mod cluster;
pub mod endpoint;
pub mod gateway;
pub mod listener;
pub mod origin;
pub mod peer_auth;
pub mod route;
pub mod scope;
pub mod sorted;
pub mod telemetry;
pub mod tls;

/// Every resource of one type for one proxy, by name.
pub type Resources = Vec<(String, Any)>;

/// Packs a message as `Any`, with its `type.googleapis.com/...` type URL.
pub fn any<T: Name + prost::Message>(message: T) -> Any {
    envoy_types::util::pack_any(message)
}

/// A duration as a protobuf `Duration` (seconds saturate at `i64::MAX`).
pub fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A config duration (already validated) as a protobuf duration.
pub fn config_duration(d: &mesh_api::Duration) -> Option<PbDuration> {
    d.parse().ok().map(duration)
}

/// A resource that exists only when a client asks for it by name: the API listener
/// `host:port` a proxyless gRPC client asks LDS for (`xds:///host:port`).
pub fn on_demand(
    type_url: &str,
    snapshot: &Snapshot,
    proxy: &Proxy,
    name: &str,
) -> Option<(String, Any)> {
    on_demand_all(type_url, snapshot, proxy, [name]).pop()
}

/// [`on_demand`] for many names, the snapshot scoped to the proxy once for all of them. Names
/// that name nothing are left out.
pub fn on_demand_all<'a>(
    type_url: &str,
    snapshot: &Snapshot,
    proxy: &Proxy,
    names: impl IntoIterator<Item = &'a str>,
) -> Resources {
    if type_url != mesh_api::xds::LISTENER_TYPE {
        return Vec::new();
    }
    let mut names = names.into_iter().peekable();
    if names.peek().is_none() {
        return Vec::new();
    }
    let scoped = scope::scoped(snapshot, proxy);
    names
        .filter_map(|n| listener::api_listener(&scoped, n))
        .map(|l| (l.name.clone(), any(l)))
        .collect()
}

/// What the proxy gets for one type URL.
pub fn generate(type_url: &str, snapshot: &Snapshot, proxy: &Proxy) -> Option<Resources> {
    let scoped = scope::scoped(snapshot, proxy);
    let snapshot: &Snapshot = &scoped;
    let packed = |items: Vec<(String, Any)>| Some(items);
    match type_url {
        mesh_api::xds::CLUSTER_TYPE => packed(
            cluster::clusters(snapshot, proxy)
                .into_iter()
                .map(|c| (c.name.clone(), any(c)))
                .collect(),
        ),
        mesh_api::xds::ENDPOINT_TYPE => packed(
            endpoint::load_assignments(snapshot, proxy)
                .into_iter()
                .map(|c| (c.cluster_name.clone(), any(c)))
                .collect(),
        ),
        mesh_api::xds::SECRET_TYPE => packed(if proxy.router {
            gateway::secrets(snapshot, proxy)
                .into_iter()
                .map(|s| (s.name.clone(), any(s)))
                .collect()
        } else {
            Vec::new()
        }),
        mesh_api::xds::LISTENER_TYPE if proxy.router => packed(
            gateway::listeners(snapshot, proxy)
                .into_iter()
                .map(|l| (l.name.clone(), any(l)))
                .collect(),
        ),
        mesh_api::xds::ROUTE_TYPE if proxy.router => packed(
            gateway::route_configs(snapshot, proxy)
                .into_iter()
                .map(|r| (r.name.clone(), any(r)))
                .collect(),
        ),
        mesh_api::xds::LISTENER_TYPE => packed(
            listener::listeners(snapshot, proxy)
                .into_iter()
                .map(|l| (l.name.clone(), any(l)))
                .collect(),
        ),
        mesh_api::xds::ROUTE_TYPE => packed(
            route::route_configs(snapshot, proxy)
                .into_iter()
                .map(|r| (r.name.clone(), any(r)))
                .collect(),
        ),
        _ => None,
    }
}
