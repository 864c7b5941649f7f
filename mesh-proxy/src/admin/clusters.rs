//! `/clusters`: each cluster's endpoints and their state, in Envoy's text format, or with
//! `?format=json` as Envoy's `envoy.admin.v3.Clusters` JSON:
//! `{"cluster_statuses":[{"name","added_via_api":true,"host_statuses":[{"address":
//! {"socket_address":{"address","port_value"}},"stats":[{"type":"GAUGE","name":"rq_active",
//! "value":"N"}],"health_status":{"eds_health_status":"HEALTHY","failed_outlier_check":true},
//! "weight":N,"hostname"}]}]}`. As in Envoy's JSON, a zero `value` and a false
//! `failed_outlier_check` are left out (protobuf defaults), and 64-bit values are strings.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::runtime::{Runtime, Upstream};

/// The clusters of `runtime` in Envoy's `/clusters` text format, by name.
pub fn text(runtime: &Runtime, now_ms: u64) -> String {
    let mut names: Vec<&String> = runtime.upstreams.keys().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        match runtime.upstreams[name].as_ref() {
            Upstream::Balanced(balancer) => {
                for host in balancer.hosts() {
                    let prefix = format!("{name}::{}", host.address);
                    let ejected = host.health.is_ejected(now_ms);
                    let _ = writeln!(
                        out,
                        "{prefix}::health_flags::{}",
                        if ejected { "/failed_outlier_check" } else { "healthy" }
                    );
                    let _ = writeln!(
                        out,
                        "{prefix}::outlier::{} ejections={}",
                        if ejected { "ejected" } else { "not_ejected" },
                        host.health.ejections()
                    );
                    let _ = writeln!(out, "{prefix}::weight::{}", host.weight);
                    let _ = writeln!(
                        out,
                        "{prefix}::rq_active::{}",
                        host.active.load(Ordering::Relaxed)
                    );
                    if let Some(identity) = &host.mesh {
                        let _ = writeln!(out, "{prefix}::mtls::{identity:?}");
                    }
                }
            }
            Upstream::OriginalDestination => {
                let _ = writeln!(out, "{name}::original_destination");
            }
            Upstream::Dns(targets) => {
                for (host, port) in targets {
                    let _ = writeln!(out, "{name}::{host}:{port}::dns");
                }
            }
        }
    }
    out
}

/// A host's state as Envoy's `HostStatus` JSON.
fn host_status(address: &str, port: u16, hostname: Option<&str>, extra: HostState) -> Value {
    let mut health = serde_json::Map::new();
    if extra.ejected {
        health.insert("failed_outlier_check".to_owned(), json!(true));
    }
    health.insert("eds_health_status".to_owned(), json!("HEALTHY"));
    let mut gauge = serde_json::Map::new();
    gauge.insert("type".to_owned(), json!("GAUGE"));
    gauge.insert("name".to_owned(), json!("rq_active"));
    if extra.active > 0 {
        gauge.insert("value".to_owned(), json!(extra.active.to_string()));
    }
    let mut status = serde_json::Map::new();
    status.insert(
        "address".to_owned(),
        json!({ "socket_address": { "address": address, "port_value": port } }),
    );
    status.insert("stats".to_owned(), json!([Value::Object(gauge)]));
    status.insert("health_status".to_owned(), Value::Object(health));
    if extra.weight > 0 {
        status.insert("weight".to_owned(), json!(extra.weight));
    }
    if let Some(hostname) = hostname {
        status.insert("hostname".to_owned(), json!(hostname));
    }
    Value::Object(status)
}

/// What a host's JSON says beyond its address.
#[derive(Clone, Copy, Default)]
struct HostState {
    ejected: bool,
    active: u64,
    weight: u32,
}

/// The clusters of `runtime` as Envoy's `/clusters?format=json`, by name.
pub fn json(runtime: &Runtime, now_ms: u64) -> Value {
    let mut names: Vec<&String> = runtime.upstreams.keys().collect();
    names.sort();
    let statuses: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let hosts: Vec<Value> = match runtime.upstreams[name].as_ref() {
                Upstream::Balanced(balancer) => balancer
                    .hosts()
                    .iter()
                    .map(|host| {
                        let state = HostState {
                            ejected: host.health.is_ejected(now_ms),
                            active: host.active.load(Ordering::Relaxed),
                            weight: host.weight,
                        };
                        host_status(
                            &host.address.ip().to_string(),
                            host.address.port(),
                            None,
                            state,
                        )
                    })
                    .collect(),
                // Connections go where the app was going: no hosts of its own.
                Upstream::OriginalDestination => Vec::new(),
                Upstream::Dns(targets) => targets
                    .iter()
                    .map(|(host, port)| {
                        let state = HostState { weight: 1, ..HostState::default() };
                        host_status(host, *port, Some(host), state)
                    })
                    .collect(),
            };
            let mut status = serde_json::Map::new();
            status.insert("name".to_owned(), json!(name));
            status.insert("added_via_api".to_owned(), json!(true));
            if !hosts.is_empty() {
                status.insert("host_statuses".to_owned(), Value::Array(hosts));
            }
            Value::Object(status)
        })
        .collect();
    json!({ "cluster_statuses": statuses })
}
