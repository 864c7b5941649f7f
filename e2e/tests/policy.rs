//! Security policy on the local mesh, with both data planes (mesh-proxy and Envoy, driven by
//! the same pilot, must give the same outcome in every case): PeerAuthentication STRICT,
//! PERMISSIVE and DISABLE, AuthorizationPolicy ALLOW and DENY (namespaces, methods, paths and
//! templates, headers, hosts, TCP), RequestAuthentication with JWTs, and the bypasses people
//! try: plaintext to a STRICT port, a certificate of another CA, a spoofed XFCC, path tricks
//! (`//`, `/./`, `..`, `%61`, `%2F`, `%2f`), a trailing dot in the host, expired and
//! wrong-audience tokens, an h2c upgrade.
//!
//! The cases run in stages: each stage applies its policies, waits until its first case shows
//! them in force, then checks every case once and reports all the ones that differ.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use e2e::local::{Call, Mesh};
use serde_json::json;

fn can_run() -> bool {
    if !e2e::netns::can_run(&[]) {
        return false;
    }
    let missing: Vec<String> = e2e::local::missing_binaries()
        .iter()
        .map(|b| format!("{b} is not built (run `cargo build --bins`)"))
        .collect();
    mesh_testing::require::check("security policy end-to-end", &missing)
}

/// What a case expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// This HTTP status.
    Status(u16),
    /// No answer: the connection is refused or closed.
    Refused,
}

/// What the app echoed must (not) hold, for the cases that look at what reached it.
#[derive(Clone, Debug)]
enum Body {
    Any,
    Has(String),
    Lacks(String),
}

struct Case {
    name: &'static str,
    call: Box<dyn Fn() -> anyhow::Result<u16> + Send>,
    body: Option<Box<dyn Fn() -> anyhow::Result<String> + Send>>,
    expect: Expect,
    check: Body,
}

/// The addresses and pods of the test mesh.
struct World {
    web: SocketAddr,
    web_tcp: SocketAddr,
    web_pod: SocketAddr,
    client: String,
    other: String,
    legacy: String,
}

impl World {
    fn call(&self, from: &str, path: &str) -> Call {
        Call::get(from, self.web, "web.shop.svc.cluster.local:8000", path)
    }
}

fn status(call: Call) -> impl Fn() -> anyhow::Result<u16> + Send {
    move || Ok(call.send()?.status)
}

fn body(call: Call) -> impl Fn() -> anyhow::Result<String> + Send {
    move || Ok(call.send()?.body)
}

fn case(name: &'static str, call: Call, expect: Expect) -> Case {
    Case { name, call: Box::new(status(call)), body: None, expect, check: Body::Any }
}

fn echoed(name: &'static str, call: Call, check: Body) -> Case {
    Case {
        name,
        call: Box::new(status(call.clone())),
        body: Some(Box::new(body(call))),
        expect: Expect::Status(200),
        check,
    }
}

fn outcome(case: &Case) -> Expect {
    match (case.call)() {
        Ok(code) => Expect::Status(code),
        Err(_) => Expect::Refused,
    }
}

/// Whether `case` gives what it expects now.
fn holds(case: &Case) -> Result<(), String> {
    let got = outcome(case);
    if got != case.expect {
        return Err(format!("got {got:?}, expected {:?}", case.expect));
    }
    if let Some(read) = &case.body {
        let text = read().unwrap_or_default();
        let fine = match &case.check {
            Body::Any => true,
            Body::Has(s) => text.contains(s.as_str()),
            Body::Lacks(s) => !text.to_ascii_lowercase().contains(&s.to_ascii_lowercase()),
        };
        if !fine {
            return Err(format!("{:?} in {text}", case.check));
        }
    }
    Ok(())
}

/// Applies `policies` (after deleting `previous`) and checks the cases until they all hold at
/// once: the local mesh takes a file at a time, so a stage's policies arrive over a second or
/// two, and the cases are judged on what the proxies do once they have them all. Returns the
/// cases that did not hold in the last round within 30 s, described.
fn stage(
    mesh: &mut Mesh,
    name: &str,
    previous: &str,
    policies: &str,
    cases: &[Case],
) -> anyhow::Result<Vec<String>> {
    if !previous.is_empty() {
        mesh.delete(previous)?;
    }
    if !policies.is_empty() {
        mesh.apply(policies)?;
    }
    // Every case must hold in one same round: a case passing once before the policies were
    // all in force proves nothing about them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Vec<String>;
    loop {
        last = cases
            .iter()
            .filter_map(|case| holds(case).err().map(|why| format!("{name}: {}: {why}", case.name)))
            .collect();
        if last.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("{name}: {} cases, {} wrong", cases.len(), last.len());
    for w in &last {
        eprintln!("  {w}");
    }
    if !last.is_empty() {
        let logs = mesh.meshctl(&["logs", "web", "--proxy"]).unwrap_or_default();
        let lines: Vec<&str> = logs.lines().collect();
        eprintln!(
            "--- the web sidecar's log (end)\n{}",
            lines[lines.len().saturating_sub(15)..].join("\n")
        );
    }
    Ok(last)
}

fn deploy(mesh: &mut Mesh) -> anyhow::Result<World> {
    let bin = mesh.binary("bookinfo");
    mesh.meshctl(&["service", "web", "-n", "shop", "--port", "8000"])?;
    // A TCP service of its own (a port of two protocols is one Istio cannot serve either).
    mesh.meshctl(&["service", "db", "-n", "shop", "--port", "9000", "--port-name", "tcp-db"])?;
    mesh.meshctl(&[
        "deploy",
        "db",
        "-n",
        "shop",
        "--service-account",
        "db",
        "--labels",
        "app=db",
        "--port",
        "9000",
        "--",
        &bin,
        "httpbin",
        "--port",
        "9000",
    ])?;
    mesh.meshctl(&[
        "deploy",
        "web",
        "-n",
        "shop",
        "--service-account",
        "web",
        "--labels",
        "app=web",
        "--port",
        "8000",
        "--",
        &bin,
        "httpbin",
        "--port",
        "8000",
    ])?;
    for (pod, ns, sidecar) in
        [("client", "shop", true), ("other", "foo", true), ("legacy", "shop", false)]
    {
        let labels = format!("app={pod}");
        let mut args = vec!["deploy", pod, "-n", ns, "--service-account", pod, "--labels", &labels];
        if !sidecar {
            args.push("--no-sidecar");
        }
        args.extend(["--", "sleep", "infinity"]);
        mesh.meshctl(&args)?;
    }
    let web = SocketAddr::from((mesh.vip("web")?, 8000));
    let web_tcp = SocketAddr::from((mesh.vip("db")?, 9000));
    let status = mesh.status()?;
    let pod_ip = status["pods"]
        .as_array()
        .and_then(|pods| pods.iter().find(|p| p["name"] == "web"))
        .and_then(|p| p["ip"].as_str())
        .context("the web pod's address")?;
    // The sidecars have the web's inbound side (its port, not only the passthrough) once the
    // app sees the caller's identity.
    let probe =
        Call::get(&mesh.namespace_of("client"), web, "web.shop.svc.cluster.local:8000", "/headers");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !probe.send().is_ok_and(|a| a.body.contains("spiffe://cluster.local/ns/shop/sa/client")) {
        ensure!(Instant::now() < deadline, "the web's sidecar never served its port");
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(World {
        web,
        web_tcp,
        web_pod: SocketAddr::new(pod_ip.parse()?, 8000),
        client: mesh.namespace_of("client"),
        other: mesh.namespace_of("other"),
        legacy: mesh.namespace_of("legacy"),
    })
}

const STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
"#;

const DISABLE_WEB: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: DISABLE}
"#;

const AUTHZ: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {namespaces: [shop]}}]
    to: [{operation: {methods: [GET], paths: ["/get", "/headers", "/status/*", "/admin", "/admin/*", "/delay/{*}"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-deny, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
  - when: [{key: "request.headers[x-block]", values: ["yes"]}]
  - to: [{operation: {hosts: ["web.shop.svc.cluster.local", "web.shop.svc.cluster.local:*"]}}]
    when: [{key: "request.headers[x-deny-host]", values: ["1"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-audit, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: AUDIT
  rules: [{to: [{operation: {paths: ["/status/*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from: [{source: {namespaces: [shop]}}]
    to: [{operation: {methods: [GET]}}]
"#;

fn jwt_policies(jwks: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: web-jwt, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  jwtRules:
  - issuer: https://issuer.test
    audiences: [web]
    jwks: '{jwks}'
    outputClaimToHeaders: [{{header: x-jwt-sub, claim: sub}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: web-jwt, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  rules:
  - from: [{{source: {{requestPrincipals: ["https://issuer.test/*"]}}}}]
    to: [{{operation: {{paths: ["/get", "/headers"]}}}}]
  - to: [{{operation: {{paths: ["/status/*"]}}}}]
    when: [{{key: "request.auth.claims[groups]", values: [admins]}}]
"#
    )
}

fn matrix(mesh: &mut Mesh) -> anyhow::Result<usize> {
    let w = deploy(mesh)?;
    let mut wrong = Vec::new();
    let mut total = 0;
    let h2c = |call: Call| {
        call.header("Connection", "Upgrade, HTTP2-Settings")
            .header("Upgrade", "h2c")
            .header("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")
    };

    let baseline = vec![
        case("mesh client, no policy", w.call(&w.client, "/get"), Expect::Status(200)),
        case("plaintext client, PERMISSIVE", w.call(&w.legacy, "/get"), Expect::Status(200)),
        case("another namespace, no policy", w.call(&w.other, "/get"), Expect::Status(200)),
        case(
            "TCP port, no policy",
            Call::get(&w.client, w.web_tcp, "web", "/get"),
            Expect::Status(200),
        ),
        echoed(
            "an h2c upgrade is not tunnelled and never reaches the app",
            h2c(w.call(&w.client, "/headers")),
            Body::Lacks("h2c".into()),
        ),
        echoed(
            "the app sees the caller's identity in XFCC",
            w.call(&w.client, "/headers"),
            Body::Has("spiffe://cluster.local/ns/shop/sa/client".into()),
        ),
    ];
    total += baseline.len();
    wrong.extend(stage(mesh, "no policy", "", "", &baseline)?);

    let pki = e2e::edge::TestPki::new("not the mesh's CA")?;
    let forged = pki.issue_uri("spiffe://cluster.local/ns/shop/sa/client")?;
    let foreign = pki.issue_uri("spiffe://other.example/ns/shop/sa/client")?;
    let web_pod = w.web_pod;
    let strict = vec![
        case("plaintext to a STRICT workload", w.call(&w.legacy, "/get"), Expect::Refused),
        case("mTLS to a STRICT workload", w.call(&w.client, "/get"), Expect::Status(200)),
        case("another namespace over mTLS", w.call(&w.other, "/get"), Expect::Status(200)),
        case(
            "plaintext to a STRICT TCP port",
            Call::get(&w.legacy, w.web_tcp, "web", "/get"),
            Expect::Refused,
        ),
        case(
            "plaintext straight to the STRICT pod",
            Call::get(&w.legacy, web_pod, "web", "/get"),
            Expect::Refused,
        ),
        Case {
            name: "a certificate of another CA, claiming the client's identity",
            call: Box::new(move || e2e::edge::impersonate(web_pod, "/get", &forged)),
            body: None,
            expect: Expect::Refused,
            check: Body::Any,
        },
        Case {
            name: "a certificate of another trust domain",
            call: Box::new(move || e2e::edge::impersonate(web_pod, "/get", &foreign)),
            body: None,
            expect: Expect::Refused,
            check: Body::Any,
        },
    ];
    total += strict.len();
    wrong.extend(stage(mesh, "STRICT", "", STRICT, &strict)?);

    let disable = vec![
        case(
            "a DISABLE workload in a STRICT namespace takes plaintext",
            w.call(&w.legacy, "/get"),
            Expect::Status(200),
        ),
        case("a mesh client sends it plaintext", w.call(&w.client, "/get"), Expect::Status(200)),
    ];
    total += disable.len();
    wrong.extend(stage(mesh, "DISABLE", STRICT, DISABLE_WEB, &disable)?);

    let xfcc =
        "By=spiffe://cluster.local/ns/shop/sa/web;URI=spiffe://cluster.local/ns/shop/sa/client";
    let authz = vec![
        case("another namespace is not allowed", w.call(&w.other, "/get"), Expect::Status(403)),
        case(
            "an allowed namespace, method and path",
            w.call(&w.client, "/get"),
            Expect::Status(200),
        ),
        case(
            "a path prefix, audited (AUDIT never blocks)",
            w.call(&w.client, "/status/201"),
            Expect::Status(201),
        ),
        case("a method not allowed", w.call(&w.client, "/get").method("POST"), Expect::Status(403)),
        case("a path not allowed", w.call(&w.client, "/delay"), Expect::Status(403)),
        case("a {*} template: one segment", w.call(&w.client, "/delay/1"), Expect::Status(200)),
        case("a {*} template: not two", w.call(&w.client, "/delay/1/2"), Expect::Status(403)),
        case("a denied path", w.call(&w.client, "/admin"), Expect::Status(403)),
        case("a denied path, `//`", w.call(&w.client, "//admin"), Expect::Status(403)),
        case("a denied path, `/./`", w.call(&w.client, "/./admin"), Expect::Status(403)),
        case("a denied path, `..`", w.call(&w.client, "/status/../admin"), Expect::Status(403)),
        case("a denied path, `%61`", w.call(&w.client, "/%61dmin"), Expect::Status(403)),
        case("a denied path, `%2F`", w.call(&w.client, "/admin%2Fkeys"), Expect::Status(403)),
        case("a denied path, `%2f`", w.call(&w.client, "/admin%2fkeys"), Expect::Status(403)),
        case(
            "a denied header",
            w.call(&w.client, "/get").header("x-block", "yes"),
            Expect::Status(403),
        ),
        case(
            "a denied host",
            w.call(&w.client, "/get").header("x-deny-host", "1"),
            Expect::Status(403),
        ),
        case(
            "a denied host with a trailing dot",
            Call::get(&w.client, w.web, "web.shop.svc.cluster.local.", "/get")
                .header("x-deny-host", "1"),
            Expect::Status(403),
        ),
        case("plaintext has no namespace", w.call(&w.legacy, "/get"), Expect::Status(403)),
        case(
            "plaintext with a spoofed XFCC",
            w.call(&w.legacy, "/get").header("x-forwarded-client-cert", xfcc),
            Expect::Status(403),
        ),
        case(
            "TCP: an ALLOW of HTTP rules allows no TCP",
            Call::get(&w.client, w.web_tcp, "web", "/get"),
            Expect::Refused,
        ),
        echoed(
            "a spoofed XFCC never reaches the app",
            w.call(&w.client, "/headers")
                .header("x-forwarded-client-cert", "By=x;URI=spiffe://evil/ns/shop/sa/admin"),
            Body::Lacks("spiffe://evil".into()),
        ),
    ];
    total += authz.len();
    wrong.extend(stage(mesh, "ALLOW and DENY", DISABLE_WEB, AUTHZ, &authz)?);

    let issuer = e2e::jwt::TestIssuer::new("https://issuer.test")?;
    let stranger = e2e::jwt::TestIssuer::new("https://issuer.test")?;
    let unknown = e2e::jwt::TestIssuer::new("https://unknown.test")?;
    let now = e2e::jwt::now();
    let claims = |aud: &str, exp: i64, groups: &[&str]| json!({"sub": "alice", "aud": aud, "exp": exp, "iat": now - 10, "groups": groups});
    let valid = issuer.token(claims("web", now + 600, &["users"]))?;
    let admin = issuer.token(claims("web", now + 600, &["admins"]))?;
    let expired = issuer.token(claims("web", now - 600, &[]))?;
    let audience = issuer.token(claims("billing", now + 600, &[]))?;
    let forged_key = stranger.token(claims("web", now + 600, &[]))?;
    let foreign = unknown.token(claims("web", now + 600, &[]))?;
    let bearer = |t: &str| format!("Bearer {t}");
    let policies = jwt_policies(&issuer.jwks());
    let jwt = vec![
        case(
            "a valid token",
            w.call(&w.client, "/get").header("authorization", &bearer(&valid)),
            Expect::Status(200),
        ),
        case(
            "no token, where a principal is required",
            w.call(&w.client, "/get"),
            Expect::Status(403),
        ),
        case(
            "an expired token",
            w.call(&w.client, "/get").header("authorization", &bearer(&expired)),
            Expect::Status(401),
        ),
        case(
            "a token for another audience",
            w.call(&w.client, "/get").header("authorization", &bearer(&audience)),
            Expect::Status(403),
        ),
        case(
            "a token signed by another key",
            w.call(&w.client, "/get").header("authorization", &bearer(&forged_key)),
            Expect::Status(401),
        ),
        case(
            "a token of an unknown issuer",
            w.call(&w.client, "/get").header("authorization", &bearer(&foreign)),
            Expect::Status(401),
        ),
        case(
            "not a token",
            w.call(&w.client, "/get").header("authorization", "Bearer abc.def"),
            Expect::Status(401),
        ),
        case(
            "a valid token as access_token",
            w.call(&w.client, &format!("/get?access_token={valid}")),
            Expect::Status(200),
        ),
        case(
            "a claim allows",
            w.call(&w.client, "/status/200").header("authorization", &bearer(&admin)),
            Expect::Status(200),
        ),
        case(
            "a claim that does not allow",
            w.call(&w.client, "/status/200").header("authorization", &bearer(&valid)),
            Expect::Status(403),
        ),
        echoed(
            "the claim reaches the app as a header",
            w.call(&w.client, "/headers").header("authorization", &bearer(&valid)),
            Body::Has("\"x-jwt-sub\":\"alice\"".into()),
        ),
        echoed(
            "the token does not reach the app",
            w.call(&w.client, "/headers").header("authorization", &bearer(&valid)),
            Body::Lacks("authorization".into()),
        ),
    ];
    total += jwt.len();
    wrong.extend(stage(mesh, "JWT", AUTHZ, &policies, &jwt)?);
    mesh.delete(&policies)?;

    ensure!(wrong.is_empty(), "{} of {total} cases differ:\n  {}", wrong.len(), wrong.join("\n  "));
    Ok(total)
}

fn run(proxy: &str) {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tag = if proxy == "envoy" { "pe" } else { "pm" };
    let name = format!("{tag}{}", std::process::id() % 100_000);
    let mut mesh = Mesh::up(&dir.path().join("state"), &name, proxy, false).unwrap();
    let result = matrix(&mut mesh);
    if result.is_err() && std::env::var_os("E2E_KEEP").is_some() {
        // For a person looking into a failure: the mesh stays up (`meshctl local down`).
        eprintln!("kept: MESH_LOCAL_STATE={}", dir.path().join("state").display());
        mesh.keep();
        std::mem::forget(dir);
        panic!("{proxy}: {:#}", result.err().map(|e| e.to_string()).unwrap_or_default());
    }
    let said = mesh.down();
    let total = result.unwrap_or_else(|e| panic!("{proxy}: {e:#}"));
    assert!(total >= 40, "the matrix has {total} cases");
    assert!(said.unwrap().contains("removed"));
}

#[test]
fn the_policy_matrix_with_mesh_proxy() {
    run("mesh-proxy");
}

/// Envoy, given the same configuration by the same pilot, is the oracle.
#[test]
fn the_policy_matrix_with_envoy() {
    if !mesh_testing::require::envoy("the policy matrix with Envoy sidecars") {
        return;
    }
    run("envoy");
}
