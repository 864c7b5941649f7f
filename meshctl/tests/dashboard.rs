//! `meshctl dashboard` from recorded data: two scrapes of a bookinfo mesh ten seconds apart
//! (tests/data/dashboard), the pilot's syncz, the proxies' admin answers, a tap stream and
//! config. The numbers are checked exactly, each view is drawn on ratatui's TestBackend and
//! compared as text with tests/data/dashboard/golden (`BLESS=1` rewrites those), and keys do
//! what the help line says.
//!
//! The mesh: an ingress gateway (not scraped) and a plaintext client call productpage;
//! productpage calls details (whose proxy restarted between the scrapes: its counters went
//! down), reviews-v1 (whose proxy is unreachable) and reviews-v2; reviews-v2 calls ratings
//! (a bare Envoy without Istio's stats) and mongodb over TCP; details calls api.example.com.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use meshctl::dashboard::app::{App, View};
use meshctl::dashboard::model::ServiceKey;
use meshctl::dashboard::tap::parse_line;
use meshctl::dashboard::{ConfigDoc, ProxyId, ProxyScrape, Scrape, views};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dashboard")
}

fn read(path: impl AsRef<Path>) -> String {
    let path = data().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// 2024-05-01T10:00:00Z, the first scrape.
const T0: u64 = 1_714_557_600;

const PODS: [&str; 5] = [
    "details-v1-5c9b",
    "productpage-v1-7d6f",
    "ratings-v1-9e4d",
    "reviews-v1-8f2a",
    "reviews-v2-3b1c",
];

fn scrape(n: u32) -> Scrape {
    let proxies = PODS
        .iter()
        .map(|pod| {
            let id = ProxyId { pod: (*pod).into(), namespace: "default".into(), node_id: None };
            if pod.starts_with("reviews-v1") {
                let refused = || Err("connect 10.77.0.13:15090: connection refused".to_owned());
                return ProxyScrape {
                    id,
                    metrics: refused(),
                    server_info: refused(),
                    certs: refused(),
                };
            }
            ProxyScrape {
                id,
                metrics: Ok(read(format!("scrape{n}/{pod}.prom"))),
                server_info: Ok(read(format!("admin/{pod}.server_info.json"))),
                certs: Ok(read(format!("admin/{pod}.certs.json"))),
            }
        })
        .collect();
    Scrape {
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + 10 * u64::from(n - 1)),
        syncz: Ok(read("syncz.json")),
        proxies,
        config: Ok(vec![("config.yaml".to_owned(), read("config.yaml"))]),
    }
}

fn analyzer(docs: &[ConfigDoc]) -> Vec<String> {
    assert_eq!(docs.len(), 1);
    vec![
        "Warning [IST0101] VirtualService default/reviews: subset v1 has no endpoints".to_owned(),
        "Info [IST0118] Service default/mongodb: port name is not prefixed".to_owned(),
    ]
}

fn app() -> App {
    let mut app = App::new(None, Some(analyzer));
    app.ingest(scrape(1));
    app.ingest(scrape(2));
    app
}

fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| views::render(frame, app)).unwrap();
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        let line: String = (0..buffer.area.width).map(|x| buffer[(x, y)].symbol()).collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Compares with a golden file, or writes it when `BLESS` is set.
fn golden(name: &str, actual: &str) {
    let path = data().join("golden").join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    pretty_assertions::assert_eq!(expected, actual, "{name} (BLESS=1 rewrites it)");
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn press(app: &mut App, keys: &str) -> bool {
    keys.chars().any(|c| app.on_key(key(KeyCode::Char(c))))
}

/// Each edge as `from -> to rate errors tcp=...`.
fn edge_lines(app: &App) -> Vec<String> {
    app.traffic
        .edges
        .iter()
        .map(|e| {
            format!(
                "{} -> {} {:?} {:?} tcp={}",
                e.from.label("default"),
                e.to.label("default"),
                e.rate,
                e.errors,
                e.tcp
            )
        })
        .collect()
}

fn service(name: &str) -> ServiceKey {
    ServiceKey { name: name.into(), namespace: "default".into() }
}

#[test]
fn service_rows_have_exact_numbers() {
    let app = app();
    let rows: Vec<String> = app
        .traffic
        .services
        .iter()
        .map(|r| format!("{} {} {:?}", r.service.display(), r.version, r.rps))
        .collect();
    // details' counters went from 500 to 100 (a restart): 100 new requests, not -400.
    // reviews v1 is counted from productpage's reports (its own proxy is unreachable), v2
    // from its own only (productpage's reports of it are not added a second time); ratings
    // and api.example.com from their callers' (no Istio stats on their side).
    assert_eq!(
        rows,
        [
            "api.example.com unknown Some(1.0)",
            "details.default v1 Some(10.0)",
            "productpage.default v1 Some(10.2)",
            "ratings.default unknown Some(4.0)",
            "reviews.default v1 Some(5.0)",
            "reviews.default v2 Some(5.0)",
        ]
    );
    let productpage = &app.traffic.services[2];
    // 2 of 102 requests were 503s: 100/102 succeeded; the 503s came in plaintext.
    assert_eq!(productpage.success, Some(100.0 / 102.0));
    assert_eq!(productpage.mtls, Some(100.0 / 102.0));
    // Bucket deltas, cumulative: le=5: 10, le=10: 30, le=25: 80, le=50: 100, le=100: 102.
    // p50: rank 51 in (10,25]: 10 + 15 * (51-30)/(80-30) = 16.3.
    // p90: rank 91.8 in (25,50]: 25 + 25 * (91.8-80)/(100-80) = 39.75.
    // p99: rank 100.98 in (50,100]: 50 + 50 * (100.98-100)/(102-100) = 74.5.
    let [p50, p90, p99] = productpage.latency.map(Option::unwrap);
    assert!((p50 - 16.3).abs() < 1e-9, "{p50}");
    assert!((p90 - 39.75).abs() < 1e-9, "{p90}");
    assert!((p99 - 74.5).abs() < 1e-9, "{p99}");
    // details after its restart: le=1: 0, le=5: 90, le=10: 100.
    // p50: rank 50 in (1,5]: 1 + 4 * 50/90; p99: rank 99 in (5,10]: 5 + 5 * 9/10 = 9.5.
    let details = &app.traffic.services[1];
    assert_eq!(details.latency[0], Some(1.0 + 4.0 * (50.0 / 90.0)));
    assert!((details.latency[2].unwrap() - 9.5).abs() < 1e-9);
    // reviews v2: 2 of 50 were 500s.
    assert_eq!(app.traffic.services[5].success, Some(48.0 / 50.0));
    // The callers' side does not know mTLS.
    assert_eq!(app.traffic.services[3].mtls, None);
}

#[test]
fn edges_have_rates_and_error_shares() {
    let app = app();
    let edges = edge_lines(&app);
    assert_eq!(
        edges,
        [
            "details-v1 -> api.example.com Some(1.0) Some(0.0) tcp=false",
            "istio-ingressgateway.istio-system -> productpage-v1 Some(10.0) Some(0.0) tcp=false",
            "productpage-v1 -> details-v1 Some(10.0) Some(0.0) tcp=false",
            "productpage-v1 -> reviews-v1 Some(5.0) Some(0.0) tcp=false",
            "productpage-v1 -> reviews-v2 Some(5.0) Some(0.04) tcp=false",
            "reviews-v2 -> mongodb Some(0.5) None tcp=true",
            "reviews-v2 -> ratings Some(4.0) Some(0.0) tcp=false",
            "unknown -> productpage-v1 Some(0.2) Some(1.0) tcp=false",
        ]
    );
}

#[test]
fn services_view() {
    golden("services.txt", &screen(&app(), 100, 30));
}

#[test]
fn services_view_before_the_second_scrape() {
    let mut app = App::new(None, None);
    app.ingest(scrape(1));
    golden("services-first-scrape.txt", &screen(&app, 100, 16));
    assert!(screen(&App::default(), 100, 8).contains("waiting for the first scrape"));
}

#[test]
fn graph_view() {
    let mut app = app();
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.view, View::Graph);
    golden("graph.txt", &screen(&app, 100, 30));
    // Too narrow to draw the columns: every edge is still listed with its numbers.
    golden("graph-narrow.txt", &screen(&app, 72, 24));
}

#[test]
fn proxies_view() {
    let mut app = app();
    app.on_key(key(KeyCode::Tab));
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.view, View::Proxies);
    // reviews-v2: the route rejection shows under the list.
    press(&mut app, "jjjj");
    golden("proxies.txt", &screen(&app, 100, 30));
}

#[test]
fn live_view() {
    let mut app = app();
    app.on_key(key(KeyCode::BackTab));
    app.on_key(key(KeyCode::BackTab));
    app.on_key(key(KeyCode::BackTab));
    assert_eq!(app.view, View::Proxies);
    assert_eq!(app.watched(), None, "no tap open before someone watches");
    press(&mut app, "jjjj");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.view, View::Live);
    assert_eq!(app.watched().map(|p| p.pod.as_str()), Some("reviews-v2-3b1c"));
    for line in read("tap.jsonl").lines() {
        app.tap_event(parse_line(line));
    }
    golden("live.txt", &screen(&app, 100, 20));

    // `t` on a request without a trace says how to turn tracing on; nothing is fetched.
    press(&mut app, "t");
    assert_eq!(app.trace_shown(), None);
    let text = screen(&app, 120, 24);
    assert!(text.contains("meshctl local up --tracing"), "{text}");
    app.on_key(key(KeyCode::Esc));
    assert_eq!((app.view, app.trace.is_none()), (View::Live, true), "Esc closes the panel first");

    // On the traced request (the oldest, last row), `t` asks for its trace; the answer shows
    // as `meshctl trace` prints it.
    press(&mut app, "G");
    press(&mut app, "t");
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(app.trace_shown(), Some(id));
    let bookinfo = read("../trace/bookinfo.json");
    app.trace_loaded(id, Ok(bookinfo));
    golden("live-trace.txt", &screen(&app, 140, 24));
    // Another view stops the fetching; coming back resumes it.
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.trace_shown(), None);
    app.on_key(key(KeyCode::BackTab));
    assert_eq!(app.trace_shown(), Some(id));
    app.on_key(key(KeyCode::Esc));

    // Leaving the view closes the tap; Esc goes back where Enter came from.
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.view, View::Proxies);
    assert_eq!(app.watched(), None);
}

#[test]
fn config_view_of_a_drilled_service() {
    let mut app = app();
    // reviews v1 is the fifth row.
    press(&mut app, "jjjj");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.drill, Some(service("reviews")));
    golden("services-drilled.txt", &screen(&app, 100, 20));
    for _ in 0..4 {
        app.on_key(key(KeyCode::Tab));
    }
    assert_eq!(app.view, View::Config);
    golden("config.txt", &screen(&app, 100, 60));
    // j scrolls: three lines down, the fourth line of the text is the first shown.
    press(&mut app, "jjj");
    let fourth = app.config_lines()[3].clone();
    assert_eq!(screen(&app, 100, 20).lines().nth(2).unwrap(), format!("│{fourth:<98}│"));
}

#[test]
fn keys() {
    let mut app = app();
    // Tab cycles through the views and comes back; BackTab goes the other way.
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(app.view);
        app.on_key(key(KeyCode::Tab));
    }
    assert_eq!(seen, View::ALL);
    assert_eq!(app.view, View::Services);
    app.on_key(key(KeyCode::BackTab));
    assert_eq!(app.view, View::Config);
    app.on_key(key(KeyCode::Tab));

    // j/k and the arrows move, within the rows.
    press(&mut app, "jj");
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.selected(View::Services), 3);
    press(&mut app, "k");
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.selected(View::Services), 1);
    press(&mut app, "kkkk");
    assert_eq!(app.selected(View::Services), 0);
    press(&mut app, "jjjjjjjjjj");
    assert_eq!(app.selected(View::Services), 5);

    // / filters; q while typing is text, not quit; Enter keeps the filter.
    app.on_key(key(KeyCode::Char('/')));
    assert!(!press(&mut app, "rq"));
    app.on_key(key(KeyCode::Backspace));
    assert_eq!(app.filter(), "r");
    press(&mut app, "eviews");
    assert!(screen(&app, 100, 12).contains("/reviews█"));
    app.on_key(key(KeyCode::Enter));
    let shown: Vec<String> =
        app.services().iter().map(|r| format!("{} {}", r.service.display(), r.version)).collect();
    assert_eq!(shown, ["reviews.default v1", "reviews.default v2"]);
    // "rq" matched nothing on the way: the selection stays within the rows shown.
    assert_eq!(app.selected(View::Services), 0);
    assert!(screen(&app, 100, 12).contains("filter: reviews"));
    // Each view keeps its own filter: the Graph's is empty, the Services' still there after.
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.filter(), "");
    app.on_key(key(KeyCode::BackTab));
    assert_eq!(app.filter(), "reviews");

    // Enter drills into the selected service; Esc comes back; Esc again clears the filter.
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.drill, Some(service("reviews")));
    assert_eq!(app.config_service(), Some(service("reviews")));
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.drill, None);
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.filter(), "");
    assert_eq!(app.services().len(), 6);

    // Enter on an edge drills into the service it calls.
    app.on_key(key(KeyCode::Tab));
    press(&mut app, "jjjj");
    app.on_key(key(KeyCode::Enter));
    assert_eq!((app.view, app.drill.clone()), (View::Services, Some(service("reviews"))));
    // l on a drilled service's pod watches it live (reviews-v1's is first: known by its name,
    // its metrics being unreachable).
    press(&mut app, "jl");
    assert_eq!(app.watched().map(|p| p.pod.as_str()), Some("reviews-v2-3b1c"));

    // q quits, and so does Ctrl-C.
    assert!(press(&mut app, "q"));
    assert!(app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
}

#[test]
fn namespace_flag_limits_what_shows() {
    let mut app = App::new(Some("istio-system".into()), None);
    app.ingest(scrape(1));
    app.ingest(scrape(2));
    assert!(app.services().is_empty());
    let edges: Vec<String> = app.edges().iter().map(|e| e.to.label(app.home())).collect();
    assert_eq!(edges, ["productpage-v1.default"]);
    assert_eq!(app.proxy_rows().len(), 1, "the gateway syncz lists");
}

#[test]
fn any_size_draws_without_panicking() {
    let mut app = app();
    for view in 0..5 {
        for (w, h) in [(1, 1), (10, 4), (40, 10), (100, 30), (250, 80)] {
            screen(&app, w, h);
        }
        if view == 2 {
            press(&mut app, "jjjj");
            app.on_key(key(KeyCode::Enter));
            continue;
        }
        app.on_key(key(KeyCode::Tab));
    }
}

#[test]
fn a_failed_pilot_and_garbage_show_as_problems() {
    let mut app = App::new(None, None);
    let mut broken = scrape(2);
    broken.syncz = Err("connect 10.77.0.2:15014: connection refused".into());
    broken.proxies[0].metrics = Ok("garbage {{{\n".into());
    broken.proxies[1].certs = Ok("not json".into());
    broken.config = Err("cannot list VirtualServices: forbidden".into());
    app.ingest(broken);
    let text = screen(&app, 100, 12);
    assert!(text.contains("pilot: connect 10.77.0.2:15014: connection refused"), "{text}");
    assert!(text.contains("metrics unreachable: reviews-v1-8f2a"), "{text}");
    assert_eq!(app.config.errors, ["config: cannot list VirtualServices: forbidden"]);
    app.on_key(key(KeyCode::Tab));
    app.on_key(key(KeyCode::Tab));
    press(&mut app, "j");
    let text = screen(&app, 100, 30);
    assert!(text.contains("certs: certs is not JSON"), "{text}");
    assert!(text.contains("node: - (no xDS stream to the pilot)"), "{text}");
}

/// Bookinfo on stock Envoy sidecars (`meshctl local up --proxy envoy`, tests/data/dashboard/
/// envoy): client calls productpage, productpage details and reviews, reviews-v2 and v3
/// ratings. Two scrapes of every pod, 60 page loads apart (taken here as 10 s), trimmed to
/// the families the dashboard reads and a few others. No Istio stats anywhere.
const ENVOY_PODS: [&str; 7] = [
    "client",
    "details-v1",
    "productpage-v1",
    "ratings-v1",
    "reviews-v1",
    "reviews-v2",
    "reviews-v3",
];

fn envoy_app() -> App {
    let mut app = App::new(None, None);
    for n in 1..=2u32 {
        let proxies = ENVOY_PODS
            .iter()
            .map(|pod| ProxyScrape {
                id: ProxyId { pod: (*pod).into(), namespace: "default".into(), node_id: None },
                metrics: Ok(read(format!("envoy/{n}/{pod}.prom"))),
                server_info: Err("not recorded".into()),
                certs: Err("not recorded".into()),
            })
            .collect();
        app.ingest(Scrape {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + 10 * u64::from(n - 1)),
            syncz: Ok(read("envoy/syncz.json")),
            proxies,
            config: Ok(Vec::new()),
        });
    }
    app
}

#[test]
fn envoy_sidecars_have_rows_from_their_inbound_clusters() {
    let app = envoy_app();
    let rows: Vec<String> = app
        .traffic
        .services
        .iter()
        .map(|r| {
            format!(
                "{} {} {:?} {:?} {:?}",
                r.service.display(),
                r.version,
                r.rps,
                r.success,
                r.mtls
            )
        })
        .collect();
    // Each pod's inbound|9080|| 200s between the scrapes: productpage and details 50 -> 110,
    // ratings 30 -> 70, reviews v1 20 -> 40, v2 16 -> 34, v3 14 -> 36; no other code. The
    // callers' outbound clusters say the same requests again and are not added. Envoy's
    // cluster stats do not say mTLS.
    assert_eq!(
        rows,
        [
            "details.default v1 Some(6.0) Some(1.0) None",
            "productpage.default v1 Some(6.0) Some(1.0) None",
            "ratings.default v1 Some(4.0) Some(1.0) None",
            "reviews.default v1 Some(2.0) Some(1.0) None",
            "reviews.default v2 Some(1.8) Some(1.0) None",
            "reviews.default v3 Some(2.2) Some(1.0) None",
        ]
    );
    // Envoy merges histograms at its stats flush: details', productpage's and ratings' did
    // not move between the scrapes (no percentiles); the reviews pods' appeared.
    let latency = |i: usize| app.traffic.services[i].latency.map(Option::unwrap);
    assert_eq!(app.traffic.services[0].latency, [None; 3]);
    // reviews v1: all 20 at or under 0.5 ms. Ranks 10, 18, 19.8 in (0,0.5]:
    // 0.5 * 10/20 = 0.25, 0.5 * 18/20 = 0.45, 0.5 * 19.8/20 = 0.495.
    let [p50, p90, p99] = latency(3);
    assert_eq!((p50, p90), (0.25, 0.45));
    assert!((p99 - 0.495).abs() < 1e-9, "{p99}");
    // reviews v2: le=0.5: 0, le=1: 24, le=5: 27 (all 27). p50: rank 13.5 in (0.5,1]:
    // 0.5 + 0.5 * 13.5/24 = 0.78125; p90: rank 24.3 in (1,5]: 1 + 4 * 0.3/3 = 1.4;
    // p99: rank 26.73: 1 + 4 * 2.73/3 = 4.64.
    let [p50, p90, p99] = latency(4);
    assert_eq!(p50, 0.78125);
    assert!((p90 - 1.4).abs() < 1e-9 && (p99 - 4.64).abs() < 1e-9, "{p90} {p99}");
    // reviews v3: le=0.5: 2, le=1: 34, le=5: 36. p50: rank 18 in (0.5,1]:
    // 0.5 + 0.5 * 16/32 = 0.75; p90: rank 32.4: 0.5 + 0.5 * 30.4/32 = 0.975;
    // p99: rank 35.64 in (1,5]: 1 + 4 * 1.64/2 = 4.28.
    let [p50, p90, p99] = latency(5);
    assert_eq!((p50, p90), (0.75, 0.975));
    assert!((p99 - 4.28).abs() < 1e-9, "{p99}");
    // Each pod's proxy is known by its workload, so drilling in lists it.
    assert_eq!(app.traffic.proxy_workloads.len(), 7);
}

#[test]
fn envoy_sidecars_have_edges_from_their_outbound_clusters() {
    let app = envoy_app();
    let edges = edge_lines(&app);
    // The callers' outbound|9080||<service> clusters; productpage, details and ratings have
    // one workload each, so the edge names it. reviews has three: the callers' edge ends at
    // the service, and each version's own inbound cluster draws the hop from it.
    assert_eq!(
        edges,
        [
            "client -> productpage-v1 Some(6.0) Some(0.0) tcp=false",
            "productpage-v1 -> details-v1 Some(6.0) Some(0.0) tcp=false",
            "productpage-v1 -> reviews Some(6.0) Some(0.0) tcp=false",
            "reviews -> reviews-v1 Some(2.0) Some(0.0) tcp=false",
            "reviews -> reviews-v2 Some(1.8) Some(0.0) tcp=false",
            "reviews -> reviews-v3 Some(2.2) Some(0.0) tcp=false",
            "reviews-v2 -> ratings-v1 Some(1.8) Some(0.0) tcp=false",
            "reviews-v3 -> ratings-v1 Some(2.2) Some(0.0) tcp=false",
        ]
    );
}

#[test]
fn envoy_views() {
    let mut app = envoy_app();
    golden("envoy-services.txt", &screen(&app, 100, 14));
    app.on_key(key(KeyCode::Tab));
    golden("envoy-graph.txt", &screen(&app, 100, 26));
    // Drilled into reviews: its three versions and the pod serving each.
    app.on_key(key(KeyCode::BackTab));
    press(&mut app, "jjj");
    app.on_key(key(KeyCode::Enter));
    let pods: Vec<String> =
        app.drilled_pods().iter().map(|(p, w)| format!("{} {w}", p.id.pod)).collect();
    assert_eq!(pods, ["reviews-v1 reviews-v1", "reviews-v2 reviews-v2", "reviews-v3 reviews-v3"]);
}
