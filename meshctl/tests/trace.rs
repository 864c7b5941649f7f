//! `meshctl trace`: the tree printed from the collector's JSON (golden files in
//! tests/data/trace/golden, `BLESS=1` rewrites them), and the local collector itself (`meshctl
//! local otlp`'s server on loopback) receiving spans from the mesh's exporter and answering
//! what `meshctl trace` asks.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Parser;
use mesh_trace::receiver::{Limits, TraceView};
use meshctl::trace::{self, TraceArgs, TraceList};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TraceArgs,
}

fn args(line: &str) -> TraceArgs {
    Cli::try_parse_from(std::iter::once("trace").chain(line.split_whitespace())).unwrap().args
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/trace").join(name)
}

fn fixture(name: &str) -> String {
    let path = data(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares with a golden file, or writes it when `BLESS` is set.
fn golden(name: &str, actual: &str) {
    let path = data("golden").join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (BLESS=1 writes it)", path.display()));
    pretty_assertions::assert_eq!(expected, actual, "{name} differs (BLESS=1 rewrites it)");
}

#[test]
fn the_bookinfo_call_tree() {
    let text =
        trace::format(&args("--id 4bf92f3577b34da6a3ce929d0e0e4736"), &fixture("bookinfo.json"))
            .unwrap();
    golden("bookinfo.txt", &text);
    // What a person looks for: who called whom, in order, each sidecar's span under its
    // caller's.
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("client.default  GET productpage:9080/api/v1/products/0"));
    assert!(lines[2].starts_with("└─ productpage.default  GET /api/v1/products/0"));
    assert!(lines[8].starts_with("            └─ ratings.default  GET /ratings/0"));
}

/// A page load through the local mesh's mesh-proxy sidecars, as the collector recorded it:
/// each sidecar's client and server span, parent to child.
#[test]
fn a_recorded_page_load() {
    let text = trace::format(
        &args("--id cf7a6db538ad6427afbe0e5ba2fc8c94"),
        &fixture("mesh-proxy-bookinfo.json"),
    )
    .unwrap();
    golden("mesh-proxy-bookinfo.txt", &text);
    let starts: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split("  GET").next().unwrap_or_default().trim_end().to_owned())
        .collect();
    assert_eq!(
        starts,
        [
            "client.default",
            "└─ productpage.default",
            "   ├─ productpage.default",
            "   │  └─ details.default",
            "   └─ productpage.default",
            "      └─ reviews.default",
            "         └─ reviews.default",
            "            └─ ratings.default",
        ]
    );
}

#[test]
fn failures_orphans_and_other_roots() {
    let text =
        trace::format(&args("--id 0af7651916cd43dd8448eb211c80319c"), &fixture("partial.json"))
            .unwrap();
    golden("partial.txt", &text);
    assert!(text.contains("3 more not kept by the receiver"), "{text}");
    assert!(text.contains("(parent c0ffee0000000009 not received)"), "{text}");
    assert!(text.contains(" 503 UT "), "{text}");
}

#[test]
fn several_traces_and_json() {
    let list = TraceList {
        traces: vec![
            serde_json::from_str(&fixture("bookinfo.json")).unwrap(),
            serde_json::from_str(&fixture("partial.json")).unwrap(),
        ],
    };
    let body = serde_json::to_string(&list).unwrap();
    let text = trace::format(&args("--last 2"), &body).unwrap();
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with("Trace ")).collect();
    assert_eq!(headers.len(), 2, "{text}");
    assert!(headers[0].contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    // The JSON is the collector's, whole: it reads back as what was sent.
    let json = trace::format(&args("--last 2 -o json"), &body).unwrap();
    assert_eq!(serde_json::from_str::<TraceList>(&json).unwrap(), list);
    let one = trace::format(
        &args("--id 4bf92f3577b34da6a3ce929d0e0e4736 -o json"),
        &fixture("bookinfo.json"),
    )
    .unwrap();
    assert_eq!(serde_json::from_str::<TraceView>(&one).unwrap(), list.traces[0]);
}

/// `GET path` of the collector's API, as `meshctl trace` asks it.
fn get(api: std::net::SocketAddr, path: &str) -> (u16, String) {
    let conn = std::net::TcpStream::connect(api).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = meshctl::access::http::Get { path, token: None };
    meshctl::access::http::get(Box::new(conn), "the collector", &request).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_answers_what_it_received() {
    use mesh_trace::context::{NewIds, to_hex};
    use mesh_trace::export::{ExportSettings, Exporter, Kind, SpanRecord, SpanStatus};

    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (otlp_address, api_address) = (otlp.local_addr().unwrap(), api.local_addr().unwrap());
    let http_address = otlp_http.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(meshctl::local::otlp::collect(
        otlp,
        Some(otlp_http),
        api,
        Limits::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let mut settings =
        ExportSettings::new(&otlp_address.to_string(), "productpage.default").unwrap();
    settings.schedule_delay = Duration::from_millis(20);
    let exporter = Exporter::start(&settings).unwrap();
    let ids = NewIds::random();
    let start = SystemTime::now();
    let record = |span_id: [u8; 8], parent: Option<[u8; 8]>, kind, path: &'static str| SpanRecord {
        trace_id: ids.trace_id,
        span_id,
        parent_span_id: parent,
        name: path.into(),
        kind,
        start,
        end: start + Duration::from_millis(3),
        attributes: vec![
            ("http.method".into(), "GET".into()),
            ("http.url".into(), format!("http://productpage:9080{path}").into()),
            ("http.status_code".into(), 200_i64.into()),
        ],
        status: SpanStatus::Unset,
    };
    assert!(exporter.queue().send(record([1; 8], None, Kind::Server, "/productpage")));
    let report = exporter.shutdown(Duration::from_secs(20)).await;
    assert!(report.flushed && report.exported == 1, "{report:?}");
    // The child span over OTLP/HTTP: one trace, whichever way its spans came.
    let mut settings =
        ExportSettings::new(&http_address.to_string(), "productpage.default").unwrap();
    settings.transport = mesh_trace::export::Transport::Http { path: "/v1/traces".into() };
    let exporter = Exporter::start(&settings).unwrap();
    assert!(exporter.queue().send(record([2; 8], Some([1; 8]), Kind::Client, "/details/0")));
    let report = exporter.shutdown(Duration::from_secs(20)).await;
    assert!(report.flushed && report.exported == 1, "{report:?}");

    let id = to_hex(&ids.trace_id);
    let (status, body) =
        tokio::task::spawn_blocking(move || get(api_address, &format!("/api/traces/{id}")))
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
    let text = trace::format(&args(&format!("--id {}", to_hex(&ids.trace_id))), &body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].starts_with("productpage.default  GET /productpage"), "{text}");
    assert!(
        lines[2].starts_with("└─ productpage.default  GET productpage:9080/details/0"),
        "{text}"
    );
    assert!(lines[2].contains(" client  200  3.00 ms "), "{text}");

    let (status, body) =
        tokio::task::spawn_blocking(move || get(api_address, "/api/traces?last=5")).await.unwrap();
    assert_eq!(status, 200);
    let list: TraceList = serde_json::from_str(&body).unwrap();
    assert_eq!(list.traces.len(), 1);
    assert_eq!(list.traces[0].trace_id, to_hex(&ids.trace_id));

    let missing = "00000000000000000000000000000001";
    let (status, body) =
        tokio::task::spawn_blocking(move || get(api_address, &format!("/api/traces/{missing}")))
            .await
            .unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("was not received"), "{body}");

    drop(stop);
    collector.await.unwrap().unwrap();
}
