//! Traffic policy on the request path, against in-process backends with controlled failures
//! and delays: retries (conditions, attempts, per-try timeout, gRPC statuses, bounded
//! buffering, the retry budget, refused streams), route timeouts and the caller's override,
//! fault injection, circuit breaking, the connection pool, TCP idle timeouts, mirroring and
//! CORS. The proxy serves HTTP (or TCP) on loopback with the routes and clusters each test
//! builds, as Envoy resources.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;

#[tokio::test]
async fn retries_stop_at_the_first_success_or_when_attempts_run_out() {
    let b = backend(failing_then_ok(2, 503)).await;
    let (p, _) = proxy(
        route("b", |a| a.retry_policy = Some(retry("5xx", 2, None)), vec![]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    let (status, _, body) = call(p, get("/")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "attempt 3"),
        "two retries, the third attempt succeeds"
    );
    assert_eq!(b.hits.load(Ordering::SeqCst), 3);

    let b = backend(failing_then_ok(5, 503)).await;
    let (p, _) = proxy(
        route("b", |a| a.retry_policy = Some(retry("retriable-status-codes", 1, None)), vec![]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    let (status, _, _) = call(p, get("/")).await;
    assert_eq!(status, 503, "the last response is returned when retries run out");
    assert_eq!(b.hits.load(Ordering::SeqCst), 2, "one retry");

    // Not a retriable condition: one attempt.
    let b = backend(failing_then_ok(5, 500)).await;
    let (p, _) = proxy(
        route("b", |a| a.retry_policy = Some(retry("gateway-error", 3, None)), vec![]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    assert_eq!(call(p, get("/")).await.0, 500);
    assert_eq!(b.hits.load(Ordering::SeqCst), 1, "500 is not a gateway error");
}

#[tokio::test]
async fn grpc_statuses_are_retried_by_name() {
    let b = backend(grpc_unavailable_once()).await;
    let (p, _) = proxy(
        route("b", |a| a.retry_policy = Some(retry("unavailable", 2, None)), vec![]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    let (status, headers, _) = call(p, get("/")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["grpc-status"], "0");
    assert_eq!(b.hits.load(Ordering::SeqCst), 2, "UNAVAILABLE once, then OK");
}

#[tokio::test]
async fn bodies_above_the_buffer_limit_are_not_retried() {
    let b = backend(failing_then_ok(1, 503)).await;
    let (p, _) = proxy(
        route("b", |a| a.retry_policy = Some(retry("5xx", 2, None)), vec![]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    let small = http::Request::post("/")
        .header("host", "svc.test")
        .body(Full::new(Bytes::from(vec![7u8; 1000])))
        .unwrap();
    assert_eq!(call(p, small).await.0, 200, "a small body is replayed");
    assert_eq!(b.hits.load(Ordering::SeqCst), 2);

    let b = backend(failing_then_ok(1, 503)).await;
    let (p, _) = proxy(
        route("b", |a| a.retry_policy = Some(retry("5xx", 2, None)), vec![]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    let big = http::Request::post("/")
        .header("host", "svc.test")
        .body(Full::new(Bytes::from(vec![7u8; 200_000])))
        .unwrap();
    assert_eq!(call(p, big).await.0, 503, "a 200 KB body is streamed once, not kept");
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_retry_budget_caps_retries_in_flight() {
    let b = backend(failing_then_ok(5, 503)).await;
    let (p, registry) = proxy(
        route("b", |a| a.retry_policy = Some(retry("5xx", 3, None)), vec![]),
        vec![static_cluster("b", &[b.address], Some((100, 0)))],
    )
    .await;
    assert_eq!(call(p, get("/")).await.0, 503);
    assert_eq!(b.hits.load(Ordering::SeqCst), 1, "max_retries 0: no retry at all");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("mesh_proxy_circuit_breaker_overflow_total 1"), "{text}");
}

#[tokio::test]
async fn timeouts_answer_504_and_per_try_timeouts_are_retried() {
    let slow = slow_first(Duration::from_secs(3));
    let b = backend(slow.clone()).await;
    let (p, _) = proxy(
        route("b", |a| a.timeout = Some(millis(200)), vec![]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    let (status, _, body) = call(p, get("/")).await;
    assert_eq!((status, body.as_str()), (504, "upstream request timeout"));

    // No route timeout (Istio's default): the caller's override still applies.
    let b = backend(slow.clone()).await;
    let (p, _) =
        proxy(route("b", |_| {}, vec![]), vec![static_cluster("b", &[b.address], None)]).await;
    let request = http::Request::get("/")
        .header("host", "svc.test")
        .header("x-envoy-upstream-rq-timeout-ms", "150")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(call(p, request).await.0, 504);

    // A per-try timeout ends the slow first attempt; the retry answers.
    let b = backend(slow).await;
    let (p, _) = proxy(
        route("b", |a| a.retry_policy = Some(retry("5xx", 1, Some(200))), vec![]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    let (status, _, body) = call(p, get("/")).await;
    assert_eq!((status, body.as_str()), (200, "attempt 2"));
}

#[tokio::test]
async fn faults_delay_and_abort_as_configured() {
    let b = backend(failing_then_ok(0, 200)).await;
    let (p, _) = proxy(
        route("b", |_| {}, vec![("envoy.filters.http.fault", fault(Some((418, 100)), None))]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    let (status, _, body) = call(p, get("/")).await;
    assert_eq!((status, body.as_str()), (418, "fault filter abort"));
    assert_eq!(b.hits.load(Ordering::SeqCst), 0, "an aborted request never reaches the backend");

    let (p, _) = proxy(
        route("b", |_| {}, vec![("envoy.filters.http.fault", fault(Some((418, 0)), None))]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    for _ in 0..20 {
        assert_eq!(call(p, get("/")).await.0, 200, "0% never aborts");
    }

    let (p, _) = proxy(
        route("b", |_| {}, vec![("envoy.filters.http.fault", fault(None, Some(300)))]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    let started = Instant::now();
    assert_eq!(call(p, get("/")).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300), "the request is held for the delay");
}

#[tokio::test]
async fn the_request_circuit_breaker_overflows_with_503_uo() {
    let slow: Arc<Behaviour> = Arc::new(|_, _| (200, Duration::from_millis(500), Vec::new()));
    let b = backend(slow).await;
    let (p, registry) =
        proxy(route("b", |_| {}, vec![]), vec![static_cluster("b", &[b.address], Some((1, 3)))])
            .await;
    let first = tokio::spawn(call(p, get("/")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, body) = call(p, get("/")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many requests in flight"), "{body}");
    assert_eq!(first.await.unwrap().0, 200, "the request in flight is unaffected");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("mesh_proxy_circuit_breaker_overflow_total 1"), "{text}");
}

#[tokio::test]
async fn mirrors_get_a_copy_with_a_shadow_authority() {
    let main = backend(failing_then_ok(0, 200)).await;
    let mirror = backend(failing_then_ok(0, 500)).await;
    let (p, _) = proxy(
        route("main", |a| mirror_to(a, "mirror"), vec![]),
        vec![
            static_cluster("main", &[main.address], None),
            static_cluster("mirror", &[mirror.address], None),
        ],
    )
    .await;
    let (status, _, body) = call(p, get("/")).await;
    assert_eq!((status, body.as_str()), (200, "attempt 1"), "the mirror's answer is ignored");
    let deadline = Instant::now() + Duration::from_secs(5);
    while mirror.hits.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the mirror gets its copy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mirror.last_authority.get().map(String::as_str), Some("svc.test-shadow"));
}

#[tokio::test]
async fn cors_preflights_are_answered_for_allowed_origins() {
    let b = backend(failing_then_ok(0, 200)).await;
    let (p, _) = proxy(
        route("b", |_| {}, vec![("envoy.filters.http.cors", cors_policy())]),
        vec![static_cluster("b", &[b.address], None)],
    )
    .await;
    let (status, headers, _) = call(p, preflight("https://shop.example")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], "https://shop.example");
    assert_eq!(headers["access-control-allow-methods"], "GET,POST");
    assert_eq!(headers["access-control-max-age"], "600");
    assert_eq!(b.hits.load(Ordering::SeqCst), 0, "the proxy answered the preflight");

    let (_, headers, _) = call(p, preflight("https://evil.example")).await;
    assert!(
        !headers.contains_key("access-control-allow-origin"),
        "no CORS grant for another origin"
    );
    assert_eq!(b.hits.load(Ordering::SeqCst), 1, "its preflight goes to the app");

    let (_, headers, _) = call(p, from_origin("https://shop.example")).await;
    assert_eq!(headers["access-control-allow-origin"], "https://shop.example");
    assert_eq!(headers["access-control-expose-headers"], "x-request-id");
}

#[test]
fn retry_conditions_and_backoff_follow_envoy() {
    use mesh_proxy::policy::{Outcome, Retry};
    let policy = |on: &str| Retry {
        retries: 2,
        on: on.split(',').map(str::to_owned).collect(),
        statuses: vec![418],
        ..Retry::default()
    };
    let response = |status, grpc| Outcome::Response { status, grpc };
    let cases = [
        ("5xx", response(500, None), true),
        ("5xx", Outcome::Reset, true),
        ("5xx", Outcome::ConnectFailure, true),
        ("gateway-error", response(500, None), false),
        ("gateway-error", response(504, None), true),
        ("reset", Outcome::Reset, true),
        ("reset", response(503, None), false),
        ("connect-failure", Outcome::ConnectFailure, true),
        ("connect-failure", Outcome::Reset, false),
        ("retriable-4xx", response(409, None), true),
        ("retriable-4xx", response(404, None), false),
        ("retriable-status-codes", response(418, None), true),
        ("cancelled", response(200, Some(1)), true),
        ("deadline-exceeded", response(200, Some(4)), true),
        ("resource-exhausted", response(200, Some(8)), true),
        ("unavailable", response(200, Some(14)), true),
        ("unavailable", response(200, Some(0)), false),
    ];
    for (on, outcome, expected) in cases {
        assert_eq!(policy(on).retriable(outcome), expected, "{on} on {outcome:?}");
    }
    // Full jitter within a window that doubles from 25 ms and stops at 250 ms.
    for n in 1..10 {
        let window = (25u64 << (n - 1)).min(250);
        for draw in [0, 1, 12_345, u64::MAX] {
            assert!(Retry::backoff(n, draw) < Duration::from_millis(window), "retry {n}");
        }
    }
}

#[tokio::test]
async fn an_endpoint_failing_in_a_row_is_ejected_and_traffic_goes_to_the_others() {
    let bad = backend(failing_then_ok(u32::MAX, 503)).await;
    let good = backend(failing_then_ok(0, 200)).await;
    let cluster = with_outlier_detection(static_cluster("b", &[bad.address, good.address], None));
    let (p, _) = proxy(route("b", |_| {}, vec![]), vec![cluster]).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(call(p, get("/")).await.0);
    }
    assert_eq!(bad.hits.load(Ordering::SeqCst), 2, "two 503s in a row eject it: {statuses:?}");
    assert!(statuses[4..].iter().all(|s| *s == 200), "then only the good one: {statuses:?}");
}

#[tokio::test]
async fn the_connection_limit_queues_requests_and_the_pending_limit_overflows() {
    // One connection, one request waiting for it: of three requests in flight at once, the
    // second waits for the first's connection and the third overflows.
    let slow: Arc<Behaviour> = Arc::new(|_, _| (200, Duration::from_millis(300), Vec::new()));
    let b = backend(slow).await;
    let cluster = with_pool(static_cluster("b", &[b.address], None), Some(1), Some(1), None, None);
    let (p, registry) = proxy(route("b", |_| {}, vec![]), vec![cluster]).await;
    let first = tokio::spawn(call(p, get("/")));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let second = tokio::spawn(call(p, get("/")));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let (status, _, body) = call(p, get("/")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many requests waiting for a connection"), "{body}");
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap().0, 200, "the pending request gets the freed connection");
    assert_eq!(b.connections.load(Ordering::SeqCst), 1, "never more than one connection");
    assert_eq!(b.hits.load(Ordering::SeqCst), 2);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("mesh_proxy_circuit_breaker_overflow_total 1"), "{text}");
}

#[tokio::test]
async fn connections_close_after_their_request_budget_and_when_idle() {
    for http2 in [false, true] {
        let protocol = |c| if http2 { as_http2(c) } else { c };
        let b = backend(failing_then_ok(0, 200)).await;
        let cluster = with_pool(static_cluster("b", &[b.address], None), None, None, Some(2), None);
        let (p, _) = proxy(route("b", |_| {}, vec![]), vec![protocol(cluster)]).await;
        for _ in 0..5 {
            assert_eq!(call(p, get("/")).await.0, 200);
            // Let the connection go back to the pool before the next request.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(b.connections.load(Ordering::SeqCst), 3, "two requests per connection");

        let b = backend(failing_then_ok(0, 200)).await;
        let cluster =
            with_pool(static_cluster("b", &[b.address], None), None, None, None, Some(200));
        let (p, _) = proxy(route("b", |_| {}, vec![]), vec![protocol(cluster)]).await;
        assert_eq!(call(p, get("/")).await.0, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(call(p, get("/")).await.0, 200);
        assert_eq!(b.connections.load(Ordering::SeqCst), 1, "reused while not idle for long");
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.open.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "the idle connection is closed by the proxy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(call(p, get("/")).await.0, 200);
        assert_eq!(b.connections.load(Ordering::SeqCst), 2, "a new one after the idle one");
    }
}

/// An HTTP/2 backend that refuses its first `refusals` streams (`REFUSED_STREAM`) and
/// answers 200 to the others; counts the streams it sees.
async fn refusing_h2_backend(refusals: u32) -> (std::net::SocketAddr, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let streams = Arc::new(AtomicU32::new(0));
    let seen = streams.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut connection = h2::server::handshake(tcp).await.unwrap();
                while let Some(Ok((_request, mut respond))) = connection.accept().await {
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    if n <= refusals {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                    } else {
                        let response = http::Response::builder().status(200).body(()).unwrap();
                        let _ = respond.send_response(response, true);
                    }
                }
            });
        }
    });
    (address, streams)
}

#[tokio::test]
async fn refused_streams_are_retried_when_the_policy_says_so() {
    let (address, streams) = refusing_h2_backend(1).await;
    let (p, _) = proxy(
        route("b", |a| a.retry_policy = Some(retry("refused-stream", 2, None)), vec![]),
        vec![as_http2(static_cluster("b", &[address], None))],
    )
    .await;
    assert_eq!(call(p, get("/")).await.0, 200, "refused once, then answered");
    assert_eq!(streams.load(Ordering::SeqCst), 2);

    // Not among the conditions: the refusal is the answer (503, flag UR).
    let (address, streams) = refusing_h2_backend(1).await;
    let (p, _) = proxy(
        route("b", |a| a.retry_policy = Some(retry("connect-failure", 2, None)), vec![]),
        vec![as_http2(static_cluster("b", &[address], None))],
    )
    .await;
    let (status, _, body) = call(p, get("/")).await;
    assert_eq!(status, 503);
    assert!(body.contains("refused the stream"), "{body}");
    assert_eq!(streams.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tcp_connections_close_when_idle_past_the_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_address = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut read, mut write) = tcp.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let p = tcp_proxy(
        vec![static_cluster("echo", &[echo_address], None)],
        "echo",
        Some(Duration::from_millis(400)),
    )
    .await;
    let mut client = tokio::net::TcpStream::connect(p).await.unwrap();
    let mut buf = [0u8; 4];
    // Bytes every 100 ms keep it open past the idle timeout.
    for _ in 0..8 {
        client.write_all(b"ping").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then nothing: the proxy closes it.
    let closed = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0))), "closed by the proxy when idle: {closed:?}");
}
