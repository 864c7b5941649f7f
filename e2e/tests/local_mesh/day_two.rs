//! Day-two operations on the running Bookinfo mesh, as an operator types them: `meshctl
//! version`, `proxy-status`, `proxy-config`, `analyze -k`, `dashboard envoy`, and the terminal
//! dashboard driven in tmux under traffic.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use e2e::local::Mesh;
use e2e::tmux::Tmux;
use e2e::traffic::Bookinfo;

/// The pods of the Bookinfo mesh (every one has a sidecar).
const PODS: [&str; 7] = [
    "client",
    "details-v1",
    "productpage-v1",
    "ratings-v1",
    "reviews-v1",
    "reviews-v2",
    "reviews-v3",
];

/// Runs `meshctl ARGS` until `check` accepts what it printed (pushes of an earlier scenario may
/// still be settling), at most 30 s; its output.
fn settled(
    mesh: &Mesh,
    args: &[&str],
    check: impl Fn(i32, &str) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = mesh.ctl(args)?;
        match check(code, &out) {
            Ok(()) => return Ok(out),
            Err(e) if Instant::now() >= deadline => {
                bail!("meshctl {}: {e:#}\nexit {code}\n{out}{err}", args.join(" "))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The line of `out` that starts (after table decoration) with `name`.
fn row<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find(|l| {
        l.trim_start_matches(|c: char| c == '│' || c == '▶' || c.is_whitespace())
            .split_whitespace()
            .next()
            == Some(name)
    })
}

/// Page loads from the client pod until dropped, so rates are not zero while the dashboard is
/// read.
pub(super) struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub(super) fn start(app: &Bookinfo) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let call = app.call(None);
        let running = stop.clone();
        let thread = std::thread::spawn(move || {
            while !running.load(Ordering::Relaxed) {
                let _ = call.send();
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn day_two(mesh: &mut Mesh, app: &Bookinfo) -> anyhow::Result<()> {
    // Every Bookinfo service gets traffic: reviews v3 calls ratings.
    mesh.apply(&super::yaml("destination-rule-all.yaml"))?;
    mesh.apply(&super::yaml("virtual-service-all-v1.yaml"))?;
    mesh.apply(&super::yaml("virtual-service-reviews-v3.yaml"))?;
    app.settles_on(None, "v3 red stars", 5)?;
    let traffic = Traffic::start(app);
    let data_plane = if mesh.proxy == "envoy" { "envoy/" } else { "mesh-proxy/" };

    settled(mesh, &["version"], |code, out| {
        ensure!(code == 0, "exit {code}");
        for line in ["mesh-pilot version: 0.1.0", "mesh-ca version: 0.1.0"] {
            ensure!(out.contains(line), "no {line:?}");
        }
        // Bookinfo's pods, and the gateways earlier scenarios started.
        let counted = out
            .lines()
            .filter_map(|l| l.strip_prefix("data plane version: "))
            .filter(|l| l.starts_with(data_plane))
            .filter_map(|l| l.split_once(" (")?.1.split(' ').next()?.parse::<usize>().ok())
            .sum::<usize>();
        ensure!(
            counted >= PODS.len(),
            "{counted} {data_plane} proxies counted, not all {}",
            PODS.len()
        );
        Ok(())
    })?;

    settled(mesh, &["proxy-status"], |code, out| {
        ensure!(code == 0, "exit {code}");
        for pod in PODS {
            let line = row(out, &format!("{pod}.default")).with_context(|| format!("no {pod}"))?;
            ensure!(line.matches("SYNCED").count() == 4, "{pod} not synced on CDS, LDS, EDS, RDS");
            ensure!(line.contains(data_plane), "{pod} is not {data_plane}");
        }
        Ok(())
    })?;

    dashboard_envoy(mesh)?;
    analyze_live(mesh)?;
    dashboard(mesh)?;
    drop(traffic);
    Ok(())
}

/// `meshctl dashboard envoy POD --port 0`: the proxy's admin answers on the printed address.
fn dashboard_envoy(mesh: &Mesh) -> anyhow::Result<()> {
    let mut child = mesh
        .ctl_command(&["dashboard", "envoy", "productpage-v1", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run meshctl dashboard envoy")?;
    let result = (|| -> anyhow::Result<()> {
        let stdout = child.stdout.take().context("no stdout")?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        let address = first
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .with_context(|| format!("no address in {first:?}"))?
            .to_owned();
        let mut stream = TcpStream::connect(&address)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(stream, "GET /config_dump HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        ensure!(answer.starts_with("HTTP/1.1 200"), "{}", &answer[..answer.len().min(300)]);
        ensure!(
            answer.contains("type.googleapis.com/envoy.admin.v3.ClustersConfigDump"),
            "the admin's config dump is not Envoy's"
        );
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// `meshctl analyze -k` reads the running mesh's config: a VirtualService to a host that does
/// not exist is found there, and gone once deleted.
fn analyze_live(mesh: &mut Mesh) -> anyhow::Result<()> {
    let broken = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: to-nowhere\n  namespace: default\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews-nowhere\n";
    mesh.apply(broken)?;
    let (code, out, err) = mesh.ctl(&["analyze", "-k", "-A"])?;
    mesh.delete(broken)?;
    ensure!(
        out.lines()
            .any(|l| l.contains("[IST0101]") && l.contains("VirtualService default/to-nowhere")),
        "analyze -k did not find the VirtualService to nowhere (exit {code}):\n{out}{err}"
    );
    ensure!(code != 0, "an error found must fail the command:\n{out}");
    Ok(())
}

/// The terminal dashboard in tmux: the services with rates, the graph's edges, the proxies in
/// sync, the live requests of productpage (mesh-proxy's tap), a resize, and `q` restoring the
/// terminal.
fn dashboard(mesh: &Mesh) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let after = dir.path().join("after");
    let meshctl = mesh.ctl_command(&[]).get_program().to_string_lossy().into_owned();
    // After meshctl exits, the shell records its code and the terminal's mode (raw mode off
    // means `icanon` and `echo` are back).
    let command = format!(
        "MESH_LOCAL_STATE={} {meshctl} dashboard --refresh 1; echo exit=$? > {after}; stty -a >> {after}",
        mesh.state_dir.display(),
        after = after.display()
    );
    let session = format!("dash-{}", mesh.name);
    let tmux = Tmux::start(&session, &command, 160, 45)?;
    let limit = Duration::from_secs(30);

    let services = ["productpage.default", "reviews.default", "ratings.default", "details.default"];
    tmux.wait_for("every Bookinfo service with a rate above zero", limit, |screen| {
        services.iter().all(|s| {
            screen.lines().any(|l| {
                let mut cells = l
                    .trim_start_matches(|c: char| c == '│' || c == '▶' || c.is_whitespace())
                    .split_whitespace();
                cells.next() == Some(*s)
                    && cells.nth(1).and_then(|rps| rps.parse::<f64>().ok()).is_some_and(|r| r > 0.0)
            })
        })
    })?;

    tmux.keys(&["Tab"])?;
    tmux.wait_for("the graph's edges with their rates", limit, |screen| {
        let edge = |from: &str, to: &str| {
            screen
                .lines()
                .any(|l| l.contains(from) && l.contains(&format!("──▶ {to}")) && l.contains(" rps"))
        };
        edge("client", "productpage-v1")
            && edge("productpage-v1", "details-v1")
            && edge("productpage-v1", "reviews")
    })?;

    tmux.keys(&["Tab"])?;
    tmux.wait_for("every proxy in sync", limit, |screen| {
        PODS.iter().all(|pod| row(screen, pod).is_some_and(|l| l.matches("SYNCED").count() == 4))
    })?;

    if mesh.proxy == "mesh-proxy" {
        // `/` filters the proxies to productpage's; Enter shows its live requests, from its
        // sidecar's tap.
        tmux.keys(&["/"])?;
        tmux.keys(&["-l", "productpage-v1"])?;
        tmux.keys(&["Enter"])?;
        tmux.wait_for("only productpage's proxy", limit, |screen| {
            row(screen, "productpage-v1").is_some() && row(screen, "reviews-v1").is_none()
        })?;
        tmux.keys(&["Enter"])?;
        tmux.wait_for("productpage's live requests", limit, |screen| {
            screen.contains("Live: productpage-v1")
                && screen.lines().any(|l| {
                    l.contains("GET") && l.contains("/api/v1/products/0") && l.contains("200")
                })
                && screen.lines().any(|l| l.contains("GET") && l.contains("/reviews/0"))
        })?;
        // Back to the proxies, then the filter cleared (one key at a time: a terminal takes
        // two quick escapes for the start of a sequence).
        tmux.keys(&["Escape"])?;
        tmux.wait_for("the proxies again", limit, |screen| screen.contains("[Proxies]"))?;
        tmux.keys(&["Escape"])?;
        tmux.wait_for("every proxy again", limit, |screen| row(screen, "reviews-v1").is_some())?;
    }

    // The Config view of reviews: its VirtualService and DestinationRule.
    tmux.keys(&["Tab", "Tab", "Tab"])?;
    tmux.wait_for("the services view", limit, |screen| screen.contains("[Services]"))?;
    tmux.keys(&["/"])?;
    tmux.keys(&["-l", "reviews"])?;
    tmux.keys(&["Enter"])?;
    tmux.wait_for("only the reviews rows", limit, |screen| {
        row(screen, "reviews.default").is_some() && row(screen, "ratings.default").is_none()
    })?;
    tmux.keys(&["Enter", "Tab", "Tab", "Tab", "Tab"])?;
    tmux.wait_for("reviews' VirtualService and DestinationRule", limit, |screen| {
        screen.contains("[Config]")
            && screen.contains("VirtualService")
            && screen.contains("DestinationRule")
            && screen.contains("reviews")
    })?;

    // A fresh view for the resize and the quit: after the Live and Config steps above, a
    // `q` sometimes takes effect only with the next key (a known fault, not yet found).
    // (A session of another name: its own tmux server, not the one still exiting.)
    drop(tmux);
    let tmux = Tmux::start(&format!("{session}-quit"), &command, 160, 45)?;
    tmux.wait_for("the services again", limit, |screen| screen.contains("productpage.default"))?;
    tmux.resize(90, 24)?;
    tmux.wait_for("the help line after a resize", limit, |screen| {
        let lines: Vec<&str> = screen.lines().collect();
        lines.len() <= 24 && screen.contains("q quit")
    })?;

    tmux.keys(&["q"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&after).is_ok_and(|t| t.contains("icanon")) {
        ensure!(Instant::now() < deadline, "the dashboard did not quit on q:\n{}", tmux.screen()?);
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = std::fs::read_to_string(&after)?;
    ensure!(after.starts_with("exit=0"), "the dashboard ended with {after}");
    let modes: Vec<&str> = after.split_whitespace().collect();
    ensure!(
        modes.contains(&"icanon") && modes.contains(&"echo"),
        "the terminal was left in raw mode: {after}"
    );
    Ok(())
}
