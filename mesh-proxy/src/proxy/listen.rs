//! The listeners: accept loops for outbound (15001), inbound (15006) and a gateway's own
//! connections, what each connection becomes (by the listener's filter chains, the original
//! destination and, inbound and at a gateway, the TLS ClientHello), the TLS terminated on the
//! way (mesh mTLS, or a gateway's own certificates), and draining.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use mesh_runtime::drain;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use super::Shared;
use super::authorize::{Peers, admit, certificate};
use super::http::{Connection, Peer, Routes};
use super::tcp::{Flow, proxy};
use crate::filters::ChainFilters;
use crate::listener;
use crate::net::{Sniffed, original_destination, peek_client_hello, sniff};
use crate::runtime::listeners::{ChainPlan, ChainTls, CompiledListener, Inspector};
use crate::telemetry::{Entry, Report, Reporter};

/// Ports of protocols where the server speaks first (SMTP, MySQL, MongoDB, ...): waiting for
/// the client's first bytes would stall them, so they go straight to TCP.
pub const SERVER_FIRST_PORTS: &[u16] = &[21, 22, 25, 110, 143, 587, 3306, 27017];

/// How long the inbound side of a server-first port waits for a mesh peer's ClientHello before
/// taking the connection as plaintext.
const SERVER_FIRST_TLS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Which traffic a listener takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The app's outgoing connections (15001).
    Outbound,
    /// Connections to the app (15006).
    Inbound,
    /// A gateway's own listeners: clients connect to the port itself, nothing is redirected.
    Gateway,
}

/// Counts a connection in `istio`'s active-connections gauge while it lives.
struct Tracked {
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Tracked {
    fn new(shared: &Shared) -> Self {
        shared.metrics.active_connections.inc();
        Self { gauge: shared.metrics.active_connections.clone() }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Accepts connections on `listener` until draining starts. Each connection holds a clone
/// of `drain` until it closes, so the drain waits for it.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, side: Side, drain: drain::Watch) {
    serve_until(listener, shared, side, drain, std::future::pending()).await;
}

/// [`serve`] that also stops accepting when `stop` completes (a gateway listener the
/// configuration no longer has); the connections it accepted carry on under `drain`.
pub async fn serve_until(
    listener: TcpListener,
    shared: Arc<Shared>,
    side: Side,
    drain: drain::Watch,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut draining = drain.clone();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(?side, "accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = draining.signaled() => return,
            () = &mut stop => return,
        };
        let tracked = Tracked::new(&shared);
        let (shared, draining) = (shared.clone(), drain.clone());
        tokio::spawn(async move {
            let _tracked = tracked;
            let _ = tcp.set_nodelay(true);
            match side {
                Side::Outbound => outbound(shared, tcp, peer, draining).await,
                Side::Inbound => inbound(shared, tcp, peer, draining).await,
                Side::Gateway => gateway(shared, tcp, peer, draining).await,
            }
        });
    }
}

/// A connection closed unproxied because nothing routes it (Envoy's `NR`).
const NR: crate::telemetry::ResponseFlags = crate::telemetry::ResponseFlags::NO_ROUTE_FOUND;
/// A connection closed unproxied because its mesh mTLS failed (flagged `UF`).
const UF: crate::telemetry::ResponseFlags =
    crate::telemetry::ResponseFlags::UPSTREAM_CONNECTION_FAILURE;

/// Counts a connection the proxy closes without proxying it, and logs it when `listener`'s
/// (or, once a chain took it, the chain's) loggers say so.
fn refuse(
    shared: &Shared,
    reporter: Reporter,
    downstream: SocketAddr,
    flag: crate::telemetry::ResponseFlags,
    why: &str,
    logged: bool,
) {
    tracing::debug!(%downstream, "connection closed: {why}");
    let entry = Entry {
        start: crate::telemetry::now_rfc3339(),
        protocol: crate::telemetry::Protocol::Tcp,
        flags: flag,
        downstream: downstream.to_string(),
        ..Entry::default()
    };
    let report = Report {
        protocol: crate::telemetry::RequestProtocol::Tcp,
        flags: flag,
        ..Report::default()
    };
    shared.log.record(logged, &entry, &report, reporter);
    shared.metrics.tcp_closed(reporter, &report, 0, 0);
}

/// Refuses a connection no chain of the listener on `port` takes (`NR`), logged when that
/// listener's own loggers say so (no listener: not logged).
fn no_route(shared: &Shared, reporter: Reporter, downstream: SocketAddr, port: u16, why: &str) {
    let logged = shared.runtime.load().listeners.get(&port).is_some_and(|l| l.logs_refused(NR));
    refuse(shared, reporter, downstream, NR, why, logged);
}

/// Where a connection redirected by iptables was going; `None` when it was not redirected
/// (a connection straight to the proxy's port would loop).
fn redirected(tcp: &TcpStream) -> Option<(SocketAddr, SocketAddr)> {
    let local = tcp.local_addr().ok()?;
    let destination = original_destination(tcp).unwrap_or(local);
    (destination != local).then_some((local, destination))
}

/// What a connection becomes by its filter chain.
enum Plan {
    /// TCP to this cluster, with this idle timeout.
    Tcp(String, Option<std::time::Duration>),
    /// HTTP with these routes.
    Http(Routes),
}

/// The chain chosen for a connection.
struct Chosen {
    plan: Plan,
    /// How the chain secures its connections.
    tls: ChainTls,
    /// The listener it belongs to, whose default chain (the passthrough) takes connections
    /// on an HTTP chain that turn out not to be HTTP; read only when one does.
    listener: Arc<CompiledListener>,
    /// The upgrades an HTTP chain tunnels.
    upgrades: listener::Upgrades,
    /// What the chain's filters check first (RBAC, path normalization).
    filters: Arc<ChainFilters>,
}

/// Chooses the chain of the listener on `port` for `connection`, from the listeners compiled
/// with the configuration in force; the error says why the connection must be closed.
fn choose(shared: &Shared, port: u16, connection: &listener::Connection) -> Result<Chosen, String> {
    let runtime = shared.runtime.load();
    let compiled = runtime.listeners.get(&port).ok_or("no listener configured")?;
    let chain = compiled.select(connection).ok_or("no filter chain matches")?;
    let plan = match chain.plan.as_ref().map_err(Clone::clone)? {
        ChainPlan::Tcp { cluster, idle_timeout } => Plan::Tcp(cluster.clone(), *idle_timeout),
        ChainPlan::HttpRds(routes, _) => Plan::Http(Routes::Named(routes.clone())),
        ChainPlan::HttpInline(table, _) => Plan::Http(Routes::Inline(table.clone())),
    };
    let upgrades = match chain.plan.as_ref() {
        Ok(ChainPlan::HttpRds(_, upgrades) | ChainPlan::HttpInline(_, upgrades)) => {
            upgrades.clone()
        }
        _ => listener::Upgrades::default(),
    };
    let filters = chain.filters.clone();
    Ok(Chosen { plan, tls: chain.tls.clone(), listener: compiled.clone(), upgrades, filters })
}

async fn outbound(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, drain: drain::Watch) {
    let reporter = Reporter::Source;
    let Some((local, destination)) = redirected(&tcp) else {
        return refuse(&shared, reporter, peer, NR, "not redirected (a loop)", false);
    };
    let connection = listener::Connection {
        destination,
        transport: "raw_buffer",
        server_name: None,
        alpn: Vec::new(),
    };
    let chosen = match choose(&shared, local.port(), &connection) {
        Ok(chosen) => chosen,
        Err(why) => return no_route(&shared, reporter, peer, local.port(), &why),
    };
    let peers = Peers { reporter, downstream: peer, destination, server_name: None };
    let Some(admission) = admit(&shared, &chosen.filters, &peers, None) else { return };
    let flow = |(cluster, idle_timeout), filters| Flow {
        reporter,
        cluster,
        destination,
        downstream: peer,
        peer: None,
        idle_timeout,
        filters,
    };
    let routes = match chosen.plan {
        Plan::Tcp(cluster, idle) => {
            return proxy(shared, tcp, flow((cluster, idle), chosen.filters)).await;
        }
        Plan::Http(routes) => routes,
    };
    let sniffed = if SERVER_FIRST_PORTS.contains(&destination.port()) {
        Sniffed::Opaque
    } else {
        sniff(&tcp, shared.tuning.detection_timeout).await.unwrap_or(Sniffed::Opaque)
    };
    match (sniffed, &chosen.listener.fallback) {
        (Sniffed::Http1 | Sniffed::Http2, _) => {
            let connection = Connection {
                reporter,
                downstream: peer,
                destination,
                peer: None,
                routes,
                upgrades: chosen.upgrades.clone(),
                admission,
            };
            serve_http(shared, tcp, connection, sniffed == Sniffed::Http2, drain, None).await;
        }
        // Not HTTP on an HTTP port: passed through as the listener's default chain would.
        (_, Some(fallback)) => {
            let filters = chosen.listener.fallback_filters();
            proxy(shared, tcp, flow(fallback.clone(), filters)).await;
        }
        (_, None) => {
            let logged = chosen.listener.logs_refused(NR);
            refuse(&shared, reporter, peer, NR, "not HTTP, and no passthrough", logged);
        }
    }
}

/// A gateway's connection: the listener on the port it came to chooses the chain, by the
/// ClientHello's SNI and ALPN when the listener inspects TLS. A chain with TLS of its own
/// terminates it and serves HTTP or TCP on what it decrypts; a chain without passes the bytes
/// through as they came (`PASSTHROUGH`: the client's TLS goes on to the backend). Reported as
/// the source, as Istio's gateways report.
async fn gateway(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, drain: drain::Watch) {
    let reporter = Reporter::Source;
    let Ok(local) = tcp.local_addr() else {
        return refuse(&shared, reporter, peer, NR, "no local address", false);
    };
    let mut connection = listener::Connection {
        destination: local,
        transport: "raw_buffer",
        server_name: None,
        alpn: Vec::new(),
    };
    let inspector = shared.runtime.load().listeners.get(&local.port()).and_then(|l| l.inspector);
    if let Some(inspector) = inspector {
        match inspect(&tcp, inspector, shared.tuning.header_timeout).await {
            Inspected::Tls(hello) => {
                connection.transport = "tls";
                connection.server_name = hello.server_name;
                connection.alpn = hello.alpn;
            }
            Inspected::Plain => {}
            Inspected::TimedOut => {
                return no_route(&shared, reporter, peer, local.port(), "no ClientHello in time");
            }
        }
    }
    let chosen = match choose(&shared, local.port(), &connection) {
        Ok(chosen) => chosen,
        Err(why) => return no_route(&shared, reporter, peer, local.port(), &why),
    };
    let (offered, server_name) = (connection.alpn, connection.server_name);
    let ends = Ends { reporter, downstream: peer, destination: local, offered, server_name };
    carry(shared, tcp, chosen, ends, drain).await;
}

/// Who a connection is between, for its flow or its HTTP requests, and the ALPN its
/// ClientHello offered (empty when not inspected, or none offered).
struct Ends {
    reporter: Reporter,
    downstream: SocketAddr,
    destination: SocketAddr,
    offered: Vec<String>,
    /// The ClientHello's SNI, which RBAC may read.
    server_name: Option<String>,
}

/// `config` without ALPN for a client whose offer shares no protocol with it: the handshake
/// then goes on without ALPN, as Envoy's does (rustls alone would refuse it).
fn without_unwanted_alpn(
    config: Arc<rustls::ServerConfig>,
    offered: &[String],
) -> Arc<rustls::ServerConfig> {
    let ours = &config.alpn_protocols;
    if offered.is_empty()
        || ours.is_empty()
        || offered.iter().any(|p| ours.iter().any(|o| o.as_slice() == p.as_bytes()))
    {
        return config;
    }
    let mut plain = (*config).clone();
    plain.alpn_protocols.clear();
    Arc::new(plain)
}

/// Carries a connection by its chosen chain: its TLS terminated first if the chain has any
/// (mesh mTLS, or the chain's own certificates), then TCP proxied or HTTP served on what
/// comes out; without, the bytes as they came.
async fn carry(
    shared: Arc<Shared>,
    tcp: TcpStream,
    chosen: Chosen,
    ends: Ends,
    drain: drain::Watch,
) {
    let (reporter, downstream, destination) = (ends.reporter, ends.downstream, ends.destination);
    // Network RBAC decides once the TLS is settled (the peer's certificate known), before
    // anything goes upstream.
    let server_name = ends.server_name.as_deref();
    let peers = Peers { reporter, downstream, destination, server_name };
    let filters = chosen.filters.clone();
    let flow = |(cluster, idle_timeout), mesh_peer| Flow {
        reporter,
        cluster,
        destination,
        downstream,
        peer: mesh_peer,
        idle_timeout,
        filters: filters.clone(),
    };
    let http = |routes, mesh_peer, admission| Connection {
        reporter,
        downstream,
        destination,
        peer: mesh_peer,
        routes,
        upgrades: chosen.upgrades.clone(),
        admission,
    };
    match chosen.tls {
        ChainTls::None => {
            let Some(admission) = admit(&shared, &chosen.filters, &peers, None) else { return };
            match chosen.plan {
                Plan::Tcp(cluster, idle) => proxy(shared, tcp, flow((cluster, idle), None)).await,
                Plan::Http(routes) => {
                    let held = Some(chosen.listener.clone());
                    serve_http(shared, tcp, http(routes, None, admission), false, drain, held)
                        .await;
                }
            }
        }
        ChainTls::Mesh => {
            let (tls, mesh_peer, h2) = match accept_mesh(&shared, tcp).await {
                Ok(accepted) => accepted,
                Err(why) => {
                    // As Envoy's tcp_proxy logs the connection; a connection manager logs
                    // requests, and there were none.
                    let ended =
                        crate::telemetry::log_filter::Ended { flags: UF, ..Default::default() };
                    let logged = chosen.filters.tcp_log.logs(&ended);
                    return refuse(&shared, reporter, downstream, UF, &why, logged);
                }
            };
            let peer_certificate = certificate(&chosen.filters, tls.get_ref().1);
            let Some(admission) = admit(&shared, &chosen.filters, &peers, peer_certificate) else {
                return;
            };
            let mesh_peer = Some(mesh_peer);
            match chosen.plan {
                Plan::Tcp(cluster, idle) => {
                    proxy(shared, tls, flow((cluster, idle), mesh_peer)).await;
                }
                Plan::Http(routes) => {
                    let held = Some(chosen.listener.clone());
                    let connection = http(routes, mesh_peer, admission);
                    serve_http(shared, tls, connection, h2, drain, held).await;
                }
            }
        }
        ChainTls::Sds(config) => {
            let config = config.map(|c| without_unwanted_alpn(c, &ends.offered));
            let accepted = accept_own(&shared, &chosen.listener, config, tcp, downstream).await;
            let Some((tls, h2)) = accepted else { return };
            let peer_certificate = certificate(&chosen.filters, tls.get_ref().1);
            let Some(admission) = admit(&shared, &chosen.filters, &peers, peer_certificate) else {
                return;
            };
            match chosen.plan {
                Plan::Tcp(cluster, idle) => proxy(shared, tls, flow((cluster, idle), None)).await,
                Plan::Http(routes) => {
                    let held = Some(chosen.listener.clone());
                    serve_http(shared, tls, http(routes, None, admission), h2, drain, held).await;
                }
            }
        }
    }
}

/// What a listener's TLS inspection saw of a connection.
enum Inspected {
    /// A ClientHello: its SNI and ALPN choose the chain.
    Tls(crate::net::ClientHello),
    /// Something else (or a client that closed): plaintext.
    Plain,
    /// Nothing within the listener's filter timeout, which closes such connections.
    TimedOut,
}

/// Peeks (without consuming) at the first bytes for a TLS ClientHello, for as long as the
/// `inspector` allows; a ClientHello that starts but does not complete within
/// `hello_timeout` is taken as plaintext, as Envoy's inspector takes what it cannot parse.
async fn inspect(
    tcp: &TcpStream,
    inspector: Inspector,
    hello_timeout: std::time::Duration,
) -> Inspected {
    let deadline =
        crate::net::detection_deadline(inspector.timeout.unwrap_or(std::time::Duration::ZERO));
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Err(_) if inspector.continue_on_timeout => Inspected::Plain,
        Err(_) => Inspected::TimedOut,
        Ok(Ok(1)) if first[0] == 0x16 => {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match peek_client_hello(tcp, left.min(hello_timeout)).await {
                Some(hello) => Inspected::Tls(hello),
                None => Inspected::Plain,
            }
        }
        Ok(_) => Inspected::Plain,
    }
}

/// Terminates TLS with a chain's own certificates (`config`, or why its handshakes are
/// refused), within the header timeout. Counts the handshake or its failure in the
/// listener's `ssl` stats as Envoy does (no access-log line: Envoy writes none for a
/// connection that never became a request). Returns the stream and whether ALPN chose `h2`.
async fn accept_own(
    shared: &Shared,
    listener: &CompiledListener,
    config: Result<Arc<rustls::ServerConfig>, String>,
    tcp: TcpStream,
    downstream: SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, bool)> {
    let failed = |stat: Option<&'static str>, why: &str| {
        tracing::debug!(%downstream, listener = %listener.name, "TLS handshake failed: {why}");
        shared.metrics.listener_ssl(&listener.name, crate::tls::CONNECTION_ERROR);
        if let Some(stat) = stat {
            shared.metrics.listener_ssl(&listener.name, stat);
        }
    };
    let config = match config {
        Ok(config) => config,
        Err(why) => {
            failed(None, &why);
            return None;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(shared.tuning.header_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            shared.metrics.listener_ssl(&listener.name, crate::tls::HANDSHAKE);
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            Some((tls, h2))
        }
        Ok(Err(err)) => {
            failed(crate::tls::failure_stat(&err), &err.to_string());
            None
        }
        Err(_) => {
            failed(None, "timed out");
            None
        }
    }
}

/// Terminates mesh mTLS, within the header timeout: the client must present a mesh
/// certificate with a SPIFFE identity. Returns the stream, the peer and whether ALPN chose
/// `h2`; the error says why the connection is refused.
async fn accept_mesh(
    shared: &Shared,
    tcp: TcpStream,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Peer, bool), String> {
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.server.clone());
    let tls = match tokio::time::timeout(shared.tuning.header_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => return Err(format!("mTLS: {err}")),
        Err(_) => return Err("mTLS handshake timed out".to_owned()),
    };
    let session = tls.get_ref().1;
    let Some(chain) = session.peer_certificates() else {
        return Err("no client certificate".to_owned());
    };
    let Some(identity) = mesh_identity::peer_identity(chain) else {
        return Err("no SPIFFE identity".to_owned());
    };
    let cert_hash = chain
        .first()
        .map(|leaf| {
            ring::digest::digest(&ring::digest::SHA256, leaf.as_ref())
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        })
        .unwrap_or_default();
    let h2 = session.alpn_protocol() == Some(b"h2");
    Ok((tls, Peer { identity, cert_hash }, h2))
}

async fn inbound(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, drain: drain::Watch) {
    let reporter = Reporter::Destination;
    let Some((local, destination)) = redirected(&tcp) else {
        return refuse(&shared, reporter, peer, NR, "not redirected (a loop)", false);
    };
    // Whatever the configuration says, the sidecar's own ports (admin, health, metrics...)
    // are never reached from outside the pod through it.
    if mesh_api::ports::is_proxy_port(destination.port()) {
        let why = "a port of the sidecar's own, never an app's";
        return no_route(&shared, reporter, peer, local.port(), why);
    }
    let mut connection = listener::Connection {
        destination,
        transport: "raw_buffer",
        server_name: None,
        alpn: Vec::new(),
    };
    let mut first = [0u8; 1];
    // A plaintext client of a server-first protocol says nothing: waiting for its first byte
    // would hang it, so those ports wait for a ClientHello only briefly.
    let timeout = if SERVER_FIRST_PORTS.contains(&destination.port()) {
        SERVER_FIRST_TLS_WAIT
    } else {
        shared.tuning.detection_timeout
    };
    let deadline = crate::net::detection_deadline(timeout);
    if let Ok(Ok(1)) = tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await
        && first[0] == 0x16
        && let Some(hello) = peek_client_hello(&tcp, shared.tuning.header_timeout).await
    {
        connection.transport = "tls";
        connection.server_name = hello.server_name;
        connection.alpn = hello.alpn;
    }
    let chosen = match choose(&shared, local.port(), &connection) {
        Ok(chosen) => chosen,
        Err(why) => return no_route(&shared, reporter, peer, local.port(), &why),
    };
    if matches!(chosen.tls, ChainTls::Mesh) && connection.transport != "tls" {
        let logged = chosen.listener.logs_refused(NR);
        return refuse(&shared, reporter, peer, NR, "plaintext on an mTLS-only chain", logged);
    }
    // Mesh mTLS chains, and chains with certificates of their own (Istio's Sidecar ingress
    // TLS), are terminated here as at a gateway.
    let (offered, server_name) = (connection.alpn, connection.server_name);
    let ends = Ends { reporter, downstream: peer, destination, offered, server_name };
    carry(shared, tcp, chosen, ends, drain).await;
}

/// Serves HTTP/1.1 or HTTP/2 (by its preface) on `io`; on drain, in-flight requests finish
/// and the connection closes (HTTP/2 GOAWAY, HTTP/1.1 `connection: close`).
pub async fn serve_http<I>(
    shared: Arc<Shared>,
    io: I,
    connection: Connection,
    h2_only: bool,
    mut drain: drain::Watch,
    held: Option<Arc<CompiledListener>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reporter, downstream) = (connection.reporter, connection.downstream);
    let options = connection.admission.options.clone();
    let connection = Arc::new(connection);
    let served = shared.clone();
    let service = hyper::service::service_fn(move |request| {
        super::http::serve(served.clone(), connection.clone(), request)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.tuning.header_timeout)
        .max_buf_size(shared.tuning.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(shared.tuning.max_header_bytes).unwrap_or(u32::MAX));
    if h2_only {
        builder = builder.http2_only();
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    // A connection's chain (its policies, routes, options) is chosen when it is accepted. When
    // an update replaces the listener it came by, the connection drains as Envoy's do: the
    // request in flight finishes, HTTP/1 closes after it, HTTP/2 sends GOAWAY, and the client's
    // next request comes on a new connection under the configuration in force. So a new
    // AuthorizationPolicy holds for every request after it, not only for new connections.
    let mut updates = shared.updates.subscribe();
    let stale = || {
        held.as_ref().is_some_and(|ours| {
            !shared.runtime.load().listeners.values().any(|now| Arc::ptr_eq(now, ours))
        })
    };
    // `drain` is borrowed, not moved into the select: this connection must hold its watch
    // until the requests in flight have finished, or the drain would not wait for them.
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            () = drain.signaled() => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            Ok(()) = updates.changed(), if held.is_some() => {
                if stale() {
                    conn.as_mut().graceful_shutdown();
                    break conn.await;
                }
            }
        }
    };
    if let Err(err) = result {
        let hyper_err = err.downcast_ref::<hyper::Error>();
        let status = match hyper_err {
            Some(e) if e.is_parse_too_large() => 431,
            Some(e) if e.is_parse() || e.is_parse_status() => 400,
            Some(e) if e.is_timeout() => 408,
            _ => 0,
        };
        if status == 0 {
            tracing::debug!(%downstream, "downstream connection ended: {err}");
            return;
        }
        tracing::debug!(%downstream, status, "bad request from downstream: {err}");
        let entry = Entry {
            start: crate::telemetry::now_rfc3339(),
            protocol: crate::telemetry::Protocol::Http11,
            status,
            flags: crate::telemetry::ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            downstream: downstream.to_string(),
            ..Entry::default()
        };
        let report = Report {
            protocol: crate::telemetry::RequestProtocol::Http,
            status,
            flags: crate::telemetry::ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            ..Report::default()
        };
        let logged = options.access_log.logs(&crate::telemetry::log_filter::Ended {
            status,
            flags: crate::telemetry::ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            ..Default::default()
        });
        shared.log.record(logged, &entry, &report, reporter);
        shared.metrics.request(reporter, &report, 0.0, 0, 0);
    }
}
