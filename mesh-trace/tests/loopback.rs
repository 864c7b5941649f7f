//! The exporter sends to the receiver over loopback; a dead collector costs spans (counted),
//! never a blocked caller; the control plane's layer exports its spans and its logs carry
//! their ids.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use mesh_trace::context::{NewIds, to_hex};
use mesh_trace::export::{self, ExportSettings, Exporter, Kind, SpanRecord, SpanStatus};
use mesh_trace::receiver::{Limits, Receiver};
use tokio::sync::oneshot;

/// Long enough for anything on a loaded 2-core machine; only a failure waits it out.
const WAIT: Duration = Duration::from_secs(20);

async fn receiver() -> (Receiver, SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let receiver = Receiver::new(Limits::default());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(receiver.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    (receiver, address, stop)
}

fn settings(address: SocketAddr) -> ExportSettings {
    let mut settings = ExportSettings::new(&address.to_string(), "reviews-v1.default").unwrap();
    settings.schedule_delay = Duration::from_millis(20);
    settings.timeout = Duration::from_secs(5);
    settings.resource = vec![("k8s.namespace.name".to_owned(), "default".to_owned())];
    settings
}

fn record(
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: &'static str,
) -> SpanRecord {
    let start = SystemTime::now();
    SpanRecord {
        trace_id,
        span_id,
        parent_span_id: parent,
        name: Cow::Borrowed(name),
        kind: if parent.is_some() { Kind::Client } else { Kind::Server },
        start,
        end: start + Duration::from_millis(3),
        attributes: vec![
            ("http.method".into(), "GET".into()),
            ("http.status_code".into(), 200_i64.into()),
            (
                "upstream_cluster".into(),
                "outbound|9080||ratings.default.svc.cluster.local".to_owned().into(),
            ),
        ],
        status: SpanStatus::Unset,
    }
}

#[tokio::test]
async fn records_arrive_at_the_receiver_with_their_tree_and_attributes() {
    let (receiver, address, _stop) = receiver().await;
    let exporter = Exporter::start(&settings(address)).unwrap();
    let queue = exporter.queue();
    let ids = NewIds::random();
    let (root, child) = ([1; 8], [2; 8]);
    assert!(queue.send(record(ids.trace_id, root, None, "reviews:9080/*")));
    assert!(queue.send(record(ids.trace_id, child, Some(root), "ratings:9080/*")));

    let trace = receiver.wait_for_trace(&ids.trace_id, 2, WAIT).await.expect("both spans");
    assert_eq!(trace.trace_id, to_hex(&ids.trace_id));
    let by_name = |name: &str| trace.spans.iter().find(|s| s.name == name).unwrap();
    let server = by_name("reviews:9080/*");
    let client = by_name("ratings:9080/*");
    assert_eq!((server.kind.as_str(), client.kind.as_str()), ("SERVER", "CLIENT"));
    assert_eq!(server.parent_span_id, None);
    assert_eq!(client.parent_span_id.as_deref(), Some(to_hex(&root).as_str()));
    assert_eq!(server.service, "reviews-v1.default");
    assert_eq!(server.duration_nanos, 3_000_000);
    assert_eq!(server.attributes["http.method"], "GET");
    assert_eq!(server.attributes["http.status_code"], 200);
    let roots: Vec<&str> = trace.roots().map(|s| s.name.as_str()).collect();
    assert_eq!(roots, ["reviews:9080/*"]);
    let children: Vec<&str> = trace.children(&server.span_id).map(|s| s.name.as_str()).collect();
    assert_eq!(children, ["ratings:9080/*"]);

    let latest = receiver.latest(1).await;
    assert_eq!(latest[0].trace_id, trace.trace_id);
    // The JSON form meshctl reads back.
    let json = serde_json::to_value(&trace).unwrap();
    assert_eq!(json["spans"][0]["service"], "reviews-v1.default");
    let back: mesh_trace::receiver::TraceView = serde_json::from_value(json).unwrap();
    assert_eq!(back, trace);

    let report = exporter.shutdown(WAIT).await;
    assert!(report.flushed);
    assert_eq!((report.exported, report.dropped), (2, 0));
}

#[tokio::test]
async fn records_arrive_over_otlp_http_too_and_the_receiver_refuses_what_is_not_otlp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let receiver = Receiver::new(Limits::default());
    tokio::spawn(receiver.clone().serve_http(listener, std::future::pending()));
    let mut settings = settings(address);
    settings.transport = export::Transport::Http { path: "/v1/traces".to_owned() };
    settings.headers = vec![("x-token".to_owned(), "t".to_owned())];
    let exporter = Exporter::start(&settings).unwrap();
    let ids = NewIds::random();
    assert!(exporter.queue().send(record(ids.trace_id, [1; 8], None, "reviews:9080/*")));
    let trace = receiver.wait_for_trace(&ids.trace_id, 1, WAIT).await.expect("the span");
    assert_eq!(trace.spans[0].service, "reviews-v1.default");
    assert_eq!(trace.spans[0].attributes["http.status_code"], 200);
    let report = exporter.shutdown(WAIT).await;
    assert_eq!((report.exported, report.dropped), (1, 0));

    // A wrong path is a failed export: its spans are dropped and counted.
    settings.transport = export::Transport::Http { path: "/v1/metrics".to_owned() };
    let exporter = Exporter::start(&settings).unwrap();
    assert!(exporter.queue().send(record(ids.trace_id, [2; 8], None, "elsewhere")));
    let report = exporter.shutdown(WAIT).await;
    assert_eq!((report.exported, report.dropped), (0, 1));
    assert_eq!(receiver.spans_of(&ids.trace_id).await.unwrap().spans.len(), 1);

    // JSON is not taken.
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = "POST /v1/traces HTTP/1.1\r\nhost: c\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut tcp, &mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
}

#[tokio::test]
async fn shutdown_sends_what_is_queued() {
    let (receiver, address, _stop) = receiver().await;
    let mut settings = settings(address);
    // Nothing would be sent before shutdown but a full batch.
    settings.schedule_delay = Duration::from_secs(3600);
    let exporter = Exporter::start(&settings).unwrap();
    let ids = NewIds::random();
    for i in 0..5u8 {
        exporter.queue().send(record(ids.trace_id, [i + 1; 8], None, "span"));
    }
    let report = exporter.shutdown(WAIT).await;
    assert!(report.flushed);
    assert_eq!(report.exported, 5);
    assert_eq!(receiver.spans_of(&ids.trace_id).await.unwrap().spans.len(), 5);
}

#[tokio::test]
async fn spans_sent_after_shutdown_are_dropped_and_counted() {
    let (_receiver, address, _stop) = receiver().await;
    let exporter = Exporter::start(&settings(address)).unwrap();
    let queue = exporter.queue();
    let _ = exporter.shutdown(WAIT).await;
    assert!(!queue.send(record([9; 16], [9; 8], None, "late")));
    assert_eq!(queue.stats().dropped(), 1);
}

#[tokio::test]
async fn a_dead_collector_drops_and_counts_and_never_blocks_the_sender() {
    // A port that was just free: nothing listens there.
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut settings = settings(address);
    settings.max_queue = 8;
    settings.max_batch = 4;
    settings.timeout = Duration::from_millis(500);
    let exporter = Exporter::start(&settings).unwrap();
    let queue = exporter.queue();
    let stats = exporter.stats();

    // Sent from a plain thread, as a data path worker would: every send returns at once, with
    // the queue full most of the time.
    let sender = std::thread::spawn(move || {
        (0..1_000u32).filter(|_| queue.send(record([7; 16], [7; 8], None, "lost"))).count()
    });
    let queued = tokio::task::spawn_blocking(move || sender.join().unwrap()).await.unwrap();
    assert!(queued < 1_000, "a bounded queue of 8 took {queued} of 1000 spans");

    // Every span is accounted for as dropped: refused by the full queue, or lost in a failed
    // export.
    let all_dropped = async {
        while stats.dropped() < 1_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, all_dropped).await.expect("every span counted as dropped");
    assert_eq!(stats.exported(), 0);
    assert!(stats.failed_exports() >= 1);
    let report = exporter.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.dropped, 1_000);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut settings = settings(address);
    settings.max_queue = 2;
    settings.max_batch = 2;
    let exporter = Exporter::start(&settings).unwrap();
    let queue = exporter.queue();
    // On this current-thread runtime the export task cannot run between these sends.
    let results: Vec<bool> =
        (0..5).map(|_| queue.send(record([3; 16], [3; 8], None, "x"))).collect();
    assert_eq!(results, [true, true, false, false, false]);
    assert_eq!(queue.stats().dropped(), 3);
}

/// A writer that hands each log line to a channel (the test reads them back).
#[derive(Clone)]
struct Lines(std::sync::mpsc::Sender<String>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_layer_exports_the_mesh_spans_and_logs_carry_their_ids() {
    use tracing_subscriber::layer::SubscriberExt as _;

    let (receiver, address, _stop) = receiver().await;
    let (lines, logged) = std::sync::mpsc::channel();
    let (otel, guard) = export::layer(&settings(address)).unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(otel)
        .with(tracing_subscriber::fmt::layer().json().with_writer(move || Lines(lines.clone())));
    let (trace_id, span_id) = {
        let _default = tracing::subscriber::set_default(subscriber);
        let push = tracing::info_span!(
            target: "mesh_pilot::ads",
            "push",
            proxy = "sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        export::record_ids(&push);
        let _in = push.enter();
        tracing::info!(target: "mesh_pilot::ads", "pushed");
        // Not the mesh's: never exported (the exporter's own gRPC client logs under these).
        tracing::info_span!(target: "h2::proto", "frame").in_scope(|| {});
        let child = tracing::info_span!(target: "mesh_pilot::ads", "encode");
        child.in_scope(|| {});
        let cx = tracing_opentelemetry::OpenTelemetrySpanExt::context(&push);
        let ids = opentelemetry::trace::TraceContextExt::span(&cx).span_context().clone();
        (ids.trace_id().to_string(), ids.span_id().to_string())
    };

    let trace_bytes: [u8; 16] = mesh_trace::context::from_hex(&trace_id).unwrap();
    let trace = receiver.wait_for_trace(&trace_bytes, 2, WAIT).await.expect("push and encode");
    let push = trace.spans.iter().find(|s| s.name == "push").unwrap();
    assert_eq!(push.span_id, span_id);
    assert_eq!(push.service, "reviews-v1.default");
    assert_eq!(
        push.attributes["proxy"],
        "sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local"
    );
    let encode = trace.spans.iter().find(|s| s.name == "encode").unwrap();
    assert_eq!(encode.parent_span_id.as_deref(), Some(span_id.as_str()));
    assert_eq!(trace.spans.len(), 2, "{trace:?}");
    assert!(receiver.latest(10).await.iter().all(|t| t.spans.iter().all(|s| s.name != "frame")));

    let line: String = logged.try_iter().find(|l| l.contains("pushed")).expect("the log line");
    let line: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(line["span"]["trace_id"], trace_id.as_str());
    assert_eq!(line["span"]["span_id"], span_id.as_str());

    assert!(guard.shutdown(WAIT).await.flushed);
}
