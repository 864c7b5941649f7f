//! Tracing through the mesh (issue 19), as a user follows one request: the suite's mesh runs
//! with `meshctl local up --tracing --trace-sampling 0` (a collector named in the mesh config,
//! nothing sampled unless asked), so this scenario shows the sampling decisions (forced by
//! `x-b3-sampled: 1`, then by a Telemetry at 100 %), the Bookinfo call tree in `meshctl trace`
//! with each sidecar's client and server span linked parent to child, the headers the apps
//! receive in each format, a stalled collector changing no request's outcome, and the
//! dashboard's `t` on a live request. With Envoy sidecars (configured by the same pilot from
//! the same objects), the call tree of a page load joining the caller's W3C context.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use e2e::local::{Call, Mesh};
use e2e::tmux::Tmux;
use e2e::traffic::Bookinfo;
use serde_json::Value;

/// Istio's mesh-wide Telemetry: every request sampled, spans to the collector.
const SAMPLE_ALL: &str = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: mesh-default\n  namespace: mesh-system\nspec:\n  tracing:\n  - providers:\n    - name: otel\n    randomSamplingPercentage: 100\n";

/// How long spans may take to reach the collector (sidecars send them in batches).
const SPANS_WAIT: Duration = Duration::from_secs(30);

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; n];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The headers httpbin's `/headers` says it received.
fn received(call: Call) -> anyhow::Result<BTreeMap<String, String>> {
    let answer = call.send()?;
    ensure!(answer.status == 200, "httpbin answered {}: {}", answer.status, answer.body);
    let json = answer.json();
    let headers = json["headers"].as_object().context("no headers in httpbin's answer")?;
    Ok(headers
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect())
}

/// `traceparent`'s trace id and flags.
fn traceparent(headers: &BTreeMap<String, String>) -> anyhow::Result<(String, String)> {
    let value =
        headers.get("traceparent").with_context(|| format!("no traceparent: {headers:?}"))?;
    let parts: Vec<&str> = value.split('-').collect();
    ensure!(parts.len() == 4 && parts[0] == "00", "traceparent {value:?} is not W3C's");
    Ok((parts[1].to_owned(), parts[3].to_owned()))
}

/// `meshctl trace ARGS -o json`, parsed; `None` when the collector has no such trace yet.
fn trace_json(mesh: &Mesh, args: &[&str]) -> anyhow::Result<Option<Value>> {
    let mut all = vec!["trace"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let (code, out, err) = mesh.ctl(&all)?;
    if code != 0 {
        ensure!(
            err.contains("was not received"),
            "meshctl {}: exit {code}\n{out}{err}",
            all.join(" ")
        );
        return Ok(None);
    }
    Ok(Some(serde_json::from_str(&out).with_context(|| format!("meshctl trace printed {out}"))?))
}

/// Waits until trace `id` has at least `spans` spans; the trace.
fn wait_for_trace(mesh: &Mesh, id: &str, spans: usize) -> anyhow::Result<Value> {
    let deadline = Instant::now() + SPANS_WAIT;
    loop {
        let trace = trace_json(mesh, &["--id", id])?;
        let count = trace.as_ref().and_then(|t| t["spans"].as_array()).map_or(0, Vec::len);
        if count >= spans {
            return trace.context("counted spans of no trace");
        }
        ensure!(
            Instant::now() < deadline,
            "trace {id} has {count} spans after {SPANS_WAIT:?}, not {spans}: {trace:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A span's attribute as text.
fn attribute(span: &Value, key: &str) -> String {
    match &span["attributes"][key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The one span of `service` of `kind` whose URL contains `url`.
fn span<'a>(trace: &'a Value, service: &str, kind: &str, url: &str) -> anyhow::Result<&'a Value> {
    let found: Vec<&Value> = trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["service"] == service && s["kind"] == kind)
        .filter(|s| attribute(s, "http.url").contains(url))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        _ => bail!("{} {kind} spans of {service} to {url:?} in {trace:#}", found.len()),
    }
}

/// Checks the Bookinfo call tree of a page load through reviews v3: client -> productpage,
/// productpage -> details, productpage -> reviews -> ratings, each hop a client span of the
/// caller's sidecar and, under it, a server span of the callee's, all answered 200; the first
/// span a child of `caller`'s (the span id the client sent). mesh-proxy's server spans also
/// name the caller's mTLS identity (`peer`; stock Envoy's do not).
fn bookinfo_tree(trace: &Value, caller: &str, peer: bool) -> anyhow::Result<()> {
    let spans = trace["spans"].as_array().context("no spans")?;
    ensure!(spans.len() == 8, "{} spans, not 8: {trace:#}", spans.len());
    let page = span(trace, "client.default", "CLIENT", "productpage:9080/api/v1/products/0")?;
    let productpage = span(trace, "productpage.default", "SERVER", "/api/v1/products/0")?;
    let to_details = span(trace, "productpage.default", "CLIENT", "details:9080/details/0")?;
    let details = span(trace, "details.default", "SERVER", "/details/0")?;
    let to_reviews = span(trace, "productpage.default", "CLIENT", "reviews:9080/reviews/0")?;
    let reviews = span(trace, "reviews.default", "SERVER", "/reviews/0")?;
    let to_ratings = span(trace, "reviews.default", "CLIENT", "ratings:9080/ratings/0")?;
    let ratings = span(trace, "ratings.default", "SERVER", "/ratings/0")?;
    ensure!(page["parent_span_id"] == caller, "the client's span joins its caller's: {page:#}");
    for (child, parent) in [
        (productpage, page),
        (to_details, productpage),
        (details, to_details),
        (to_reviews, productpage),
        (reviews, to_reviews),
        (to_ratings, reviews),
        (ratings, to_ratings),
    ] {
        ensure!(
            child["parent_span_id"] == parent["span_id"],
            "{} {} is not under {} {}",
            child["service"],
            child["kind"],
            parent["service"],
            parent["kind"]
        );
    }
    // Each sidecar's canonical service and revision, from the labels the mesh gave its pod.
    for (s, service, revision) in [(productpage, "productpage", "v1"), (reviews, "reviews", "v3")] {
        ensure!(attribute(s, "istio.canonical_service") == service, "{s:#}");
        ensure!(attribute(s, "istio.canonical_revision") == revision, "{s:#}");
    }
    for s in spans {
        ensure!(s["trace_id"] == trace["trace_id"], "a span of another trace: {s:#}");
        ensure!(attribute(s, "http.method") == "GET", "{s:#}");
        ensure!(attribute(s, "http.status_code") == "200", "{s:#}");
    }
    // Where each client span went, as Envoy's spans say it.
    for (client, cluster) in [
        (page, "outbound|9080|v1|productpage.default.svc.cluster.local"),
        (to_details, "outbound|9080|v1|details.default.svc.cluster.local"),
        (to_reviews, "outbound|9080|v3|reviews.default.svc.cluster.local"),
        (to_ratings, "outbound|9080|v1|ratings.default.svc.cluster.local"),
    ] {
        ensure!(attribute(client, "upstream_cluster") == cluster, "{client:#}");
    }
    // The server spans know their caller over mTLS.
    ensure!(
        !peer
            || attribute(reviews, "peer.principal")
                == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
            || attribute(to_reviews, "peer.principal")
                == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
        "no peer identity on the reviews hop: {reviews:#} {to_reviews:#}"
    );
    Ok(())
}

pub fn tracing(mesh: &mut Mesh, app: &Bookinfo) -> anyhow::Result<()> {
    // reviews v3, so ratings is called too.
    mesh.apply(&super::yaml("destination-rule-all.yaml"))?;
    if mesh.proxy == "envoy" {
        // Envoy answers 503 for a cluster it is still warming: subsets before the routes
        // that use them (see the routing scenario).
        std::thread::sleep(Duration::from_secs(2));
    }
    mesh.apply(&super::yaml("virtual-service-all-v1.yaml"))?;
    mesh.apply(&super::yaml("virtual-service-reviews-v3.yaml"))?;
    app.settles_on(None, "v3 red stars", 5)?;
    let echo = super::httpbin(mesh)?;
    // httpbin answers before both sidecars know of it (its first requests pass through as
    // plain TCP); the mesh carries them once the caller's identity reaches it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !received(echo("/headers"))?.contains_key("x-forwarded-client-cert") {
        ensure!(Instant::now() < deadline, "requests to httpbin never went through the mesh");
        std::thread::sleep(Duration::from_millis(300));
    }

    if mesh.proxy == "envoy" {
        return envoy_w3c(mesh, app);
    }

    // Sampling 0 %: a request still gets a trace context (W3C, not sampled) and a request id.
    let plain = received(echo("/headers"))?;
    let (unsampled, flags) = traceparent(&plain)?;
    ensure!(flags == "00", "sampled at 0 %: {plain:?}");
    ensure!(
        plain.get("x-request-id").is_some_and(|id| !id.is_empty()),
        "no x-request-id: {plain:?}"
    );
    let request_id = format!("e2e-{}", random_hex(8)?);
    let kept = received(echo("/headers").header("x-request-id", &request_id))?;
    ensure!(kept.get("x-request-id") == Some(&request_id), "x-request-id not kept: {kept:?}");

    // `x-b3-sampled: 1` forces it: the whole page load is traced, under the caller's ids.
    let (forced, caller) = (random_hex(16)?, random_hex(8)?);
    let answer = app
        .call(None)
        .header("x-b3-traceid", &forced)
        .header("x-b3-spanid", &caller)
        .header("x-b3-sampled", "1")
        .send()?;
    ensure!(answer.status == 200, "a forced-sampled page load: {}", answer.status);
    let trace = wait_for_trace(mesh, &forced, 8)?;
    ensure!(trace["trace_id"] == forced.as_str());
    bookinfo_tree(&trace, &caller, true)?;
    // The unsampled request went through the same sidecars before it: no spans of it came.
    ensure!(trace_json(mesh, &["--id", &unsampled])?.is_none(), "an unsampled request sent spans");

    // A Telemetry samples every request: a page load with no decision (B3 ids only) is traced,
    // and is the last trace `meshctl trace` shows.
    mesh.apply(SAMPLE_ALL)?;
    let result = sampled_by_telemetry(mesh, app, &echo);
    let cleanup = mesh.delete(SAMPLE_ALL);
    result?;
    cleanup?;
    Ok(())
}

fn sampled_by_telemetry(
    mesh: &mut Mesh,
    app: &Bookinfo,
    echo: &impl Fn(&str) -> Call,
) -> anyhow::Result<()> {
    // In force once a request without a decision comes back sampled.
    let deadline = Instant::now() + Duration::from_secs(30);
    while traceparent(&received(echo("/headers"))?)?.1 != "01" {
        ensure!(Instant::now() < deadline, "the Telemetry's 100 % never took effect");
        std::thread::sleep(Duration::from_millis(300));
    }

    let (id, caller) = (random_hex(16)?, random_hex(8)?);
    let answer =
        app.call(None).header("x-b3-traceid", &id).header("x-b3-spanid", &caller).send()?;
    ensure!(answer.status == 200, "page load: {}", answer.status);
    bookinfo_tree(&wait_for_trace(mesh, &id, 8)?, &caller, true)?;
    // `meshctl trace --last 1` is that page load once nothing else arrives after it.
    let deadline = Instant::now() + SPANS_WAIT;
    loop {
        let last = trace_json(mesh, &["--last", "1"])?.context("--last answers a list")?;
        let first = &last["traces"][0];
        if first["trace_id"] == id.as_str() {
            bookinfo_tree(first, &caller, true)?;
            break;
        }
        ensure!(Instant::now() < deadline, "the last trace is not the page load {id}: {last:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (code, tree, err) = mesh.ctl(&["trace", "--id", &id])?;
    ensure!(code == 0, "meshctl trace --id: {err}");
    for line in [
        "client.default  GET productpage:9080/api/v1/products/0",
        "└─ productpage.default  GET /api/v1/products/0",
        "│  └─ details.default  GET /details/0",
        "            └─ ratings.default  GET /ratings/0",
    ] {
        ensure!(tree.lines().any(|l| l.contains(line)), "no {line:?} in\n{tree}");
    }

    // The headers an app receives: the formats its caller sent, and W3C always, all of the
    // same trace, sampled.
    for (name, sent) in [
        ("B3 multi", vec![("x-b3-traceid", id.clone()), ("x-b3-spanid", random_hex(8)?)]),
        ("B3 single", vec![("b3", format!("{id}-{}-1", random_hex(8)?))]),
        (
            "W3C",
            vec![
                ("traceparent", format!("00-{id}-{}-01", random_hex(8)?)),
                ("tracestate", "e2e=1".to_owned()),
            ],
        ),
    ] {
        let mut call = echo("/headers");
        for (header, value) in &sent {
            call = call.header(header, value);
        }
        let got = received(call)?;
        ensure!(traceparent(&got)? == (id.clone(), "01".to_owned()), "{name}: {got:?}");
        match name {
            "B3 multi" => ensure!(
                got.get("x-b3-traceid") == Some(&id)
                    && got.get("x-b3-sampled").map(String::as_str) == Some("1"),
                "{name}: {got:?}"
            ),
            "B3 single" => ensure!(
                got.get("b3").is_some_and(|b3| b3.starts_with(&format!("{id}-"))),
                "{name}: {got:?}"
            ),
            _ => ensure!(
                got.get("tracestate").is_some_and(|s| s.contains("e2e=1"))
                    && !got.contains_key("b3")
                    && !got.contains_key("x-b3-traceid"),
                "{name}: {got:?}"
            ),
        }
    }

    stalled_collector(mesh, app)?;
    dashboard(mesh, app)
}

/// Stock Envoy's OpenTelemetry tracer, configured by the pilot from the same mesh config,
/// reads and writes W3C trace context only, and decides by its own sampling (the caller's
/// sampled flag does not force it; `x-client-trace-id` does, as the pilot enables client
/// sampling): a page load joining the caller's `traceparent` is the same call tree, each
/// sidecar's spans under the service name the pilot gave it; a stalled collector changes no
/// request's outcome.
fn envoy_w3c(mesh: &mut Mesh, app: &Bookinfo) -> anyhow::Result<()> {
    let (id, caller) = (random_hex(16)?, random_hex(8)?);
    let answer = app
        .call(None)
        .header("traceparent", &format!("00-{id}-{caller}-01"))
        .header("x-client-trace-id", &format!("e2e-{id}"))
        .send()?;
    ensure!(answer.status == 200, "a forced-sampled page load: {}", answer.status);
    bookinfo_tree(&wait_for_trace(mesh, &id, 8)?, &caller, false)?;
    stalled_collector(mesh, app)
}

/// The collector stopped (SIGSTOP: connections hang, the worst case for an exporter):
/// every page load still answers whole.
fn stalled_collector(mesh: &mut Mesh, app: &Bookinfo) -> anyhow::Result<()> {
    let status = std::fs::read_to_string(mesh.state_dir.join("state.json"))?;
    let state: Value = serde_json::from_str(&status)?;
    let pid = state["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["role"] == "otel-collector")
        .and_then(|p| p["pid"].as_i64())
        .context("no otel-collector process recorded")?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;
    let loads = app.loads(None, 40);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)?;
    let loads = loads?;
    ensure!(
        loads.shown.get("v3 red stars") == Some(&40),
        "with the collector stalled: {:?} {:?}",
        loads.shown,
        loads.statuses
    );
    Ok(())
}

/// The dashboard's Live view of productpage shows trace ids; `t` opens one's tree.
fn dashboard(mesh: &Mesh, app: &Bookinfo) -> anyhow::Result<()> {
    if mesh.proxy != "mesh-proxy" {
        return Ok(());
    }
    let traffic = super::day_two::Traffic::start(app);
    let meshctl = mesh.ctl_command(&[]).get_program().to_string_lossy().into_owned();
    let command =
        format!("MESH_LOCAL_STATE={} {meshctl} dashboard --refresh 1", mesh.state_dir.display());
    let tmux = Tmux::start(&format!("trace-{}", mesh.name), &command, 160, 45)?;
    let limit = Duration::from_secs(30);
    tmux.keys(&["Tab", "Tab"])?;
    tmux.wait_for("the proxies", limit, |screen| screen.contains("[Proxies]"))?;
    tmux.keys(&["/"])?;
    tmux.keys(&["-l", "productpage-v1"])?;
    tmux.keys(&["Enter"])?;
    tmux.wait_for("only productpage's proxy", limit, |screen| {
        screen.contains("productpage-v1") && !screen.contains("reviews-v1")
    })?;
    tmux.keys(&["Enter"])?;
    tmux.wait_for("live requests with their trace ids", limit, |screen| {
        screen.contains("Live: productpage-v1")
            && screen.lines().any(|l| l.contains("/api/v1/products/0") && trace_cell(l))
    })?;
    tmux.keys(&["t"])?;
    tmux.wait_for("the request's trace tree", limit, |screen| {
        screen.contains("Esc closes")
            && screen.contains("productpage.default  GET /api/v1/products/0")
            && screen.contains("ratings.default  GET /ratings/0")
    })?;
    tmux.keys(&["q"])?;
    drop(traffic);
    Ok(())
}

/// Whether a Live row ends with a short trace id (8 hex characters).
fn trace_cell(line: &str) -> bool {
    line.trim_end_matches(['│', ' '])
        .rsplit(' ')
        .next()
        .is_some_and(|cell| cell.len() == 8 && cell.bytes().all(|b| b.is_ascii_hexdigit()))
}
