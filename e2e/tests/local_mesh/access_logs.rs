//! Access logs as a user controls them, for either proxy: the local mesh's mesh config
//! (`accessLogFile: /dev/stdout`) logs every request; a Telemetry for httpbin filtering to
//! `response.code >= 400` leaves only its failures in its sidecar's log; the `envoy` provider
//! `disabled` silences that sidecar while the caller's still logs (as in istiod, `disabled`
//! without a provider names only the default providers, and with none the mesh config's
//! `accessLogFile` still applies); deleting the Telemetry brings every
//! request back. Requests are told apart by their `x-request-id`, which both proxies' text
//! format prints.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use e2e::local::{Call, Mesh};

/// How long a change may take to reach the sidecar, and a line its log. (An Envoy sidecar's
/// connections on a replaced listener finish their requests first; on a busy machine, with
/// the other suite running, that has taken over 30 s.)
const WAIT: Duration = Duration::from_secs(120);
/// Longer than Envoy's access log flush interval (a second), so a line not there after this
/// was not written.
const FLUSHED: Duration = Duration::from_millis(2500);

const ERRORS_ONLY: &str = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: httpbin-logs\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  accessLogging:\n  - providers:\n    - name: envoy\n    filter:\n      expression: response.code >= 400\n";

const DISABLED: &str = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: httpbin-logs\n  namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  accessLogging:\n  - providers:\n    - name: envoy\n    disabled: true\n";

/// A fresh request id.
fn request_id() -> anyhow::Result<String> {
    Ok(format!("e2e-log-{}", super::tracing::random_hex(8)?))
}

/// `pod`'s sidecar log, as `meshctl local logs POD --proxy` prints it.
fn sidecar_log(mesh: &Mesh, pod: &str) -> anyhow::Result<String> {
    let (code, out, err) = mesh.ctl(&["local", "logs", pod, "--proxy"])?;
    ensure!(code == 0, "meshctl local logs {pod} --proxy: exit {code}: {err}");
    Ok(out)
}

/// Sends `path` to httpbin with a fresh request id; the id. A 503 is tried again (with a new
/// id): when a Telemetry changes the listener, an Envoy sidecar closes the connections of the
/// old one, and a request caught on one may fail.
fn send(echo: &impl Fn(&str) -> Call, path: &str, status: u16) -> anyhow::Result<String> {
    let mut tries = 0;
    loop {
        let id = request_id()?;
        let answer = echo(path).header("x-request-id", &id).send()?;
        tries += 1;
        if answer.status == 503 && status != 503 && tries < 5 {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        ensure!(answer.status == status, "{path} answered {}, not {status}", answer.status);
        return Ok(id);
    }
}

/// Waits until `pod`'s sidecar has logged `id`.
fn wait_logged(mesh: &Mesh, pod: &str, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !sidecar_log(mesh, pod)?.contains(id) {
        ensure!(Instant::now() < deadline, "{pod}'s sidecar never logged request {id}");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

pub fn access_logs(mesh: &mut Mesh) -> anyhow::Result<()> {
    let echo = super::httpbin(mesh)?;
    // The mesh config's `accessLogFile`: both sides log every request. (A new pod's first
    // requests may pass its sidecar as plain TCP, before the pilot has told it its ports:
    // logged, but as TCP, without the request's id.)
    let deadline = Instant::now() + WAIT;
    let ok = loop {
        let ok = send(&echo, "/get", 200)?;
        std::thread::sleep(FLUSHED);
        if sidecar_log(mesh, "httpbin-v1")?.contains(&ok) {
            break ok;
        }
        ensure!(Instant::now() < deadline, "httpbin's sidecar never logged a request as HTTP");
    };
    wait_logged(mesh, "client", &ok)?;

    mesh.apply(ERRORS_ONLY)?;
    let applied = Instant::now();
    let result = filtered(mesh, &echo);
    eprintln!("{}: access logs: the Telemetry's steps took {:?}", mesh.proxy, applied.elapsed());
    let cleanup = mesh.delete(ERRORS_ONLY);
    result?;
    cleanup?;

    // Without the Telemetry, every request again.
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = send(&echo, "/get", 200)?;
        std::thread::sleep(FLUSHED);
        if sidecar_log(mesh, "httpbin-v1")?.contains(&ok) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "deleting the Telemetry never brought the 200s back");
    }
}

/// With [`ERRORS_ONLY`] applied: only failures logged; then [`DISABLED`]: nothing.
fn filtered(mesh: &mut Mesh, echo: &impl Fn(&str) -> Call) -> anyhow::Result<()> {
    // In force once a 200 sent before a logged 404 is not in the log (a sidecar writes its
    // lines in the order its requests end).
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = send(echo, "/get", 200)?;
        let failed = send(echo, "/status/404", 404)?;
        wait_logged(mesh, "httpbin-v1", &failed)?;
        if !sidecar_log(mesh, "httpbin-v1")?.contains(&ok) {
            break;
        }
        ensure!(Instant::now() < deadline, "the filter response.code >= 400 never took effect");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The caller's sidecar is not selected: it still logs its 200s.
    let ok = send(echo, "/get", 200)?;
    wait_logged(mesh, "client", &ok)?;

    mesh.apply(DISABLED)?;
    // In force once a 404 the caller's sidecar logged is not in httpbin's log.
    let deadline = Instant::now() + WAIT;
    loop {
        let failed = send(echo, "/status/404", 404)?;
        wait_logged(mesh, "client", &failed)?;
        std::thread::sleep(FLUSHED);
        let log = sidecar_log(mesh, "httpbin-v1").context("httpbin's sidecar log")?;
        if !log.contains(&failed) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "disabled: true never silenced httpbin's sidecar");
    }
}
