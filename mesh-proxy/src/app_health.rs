//! The app's probes, run by the proxy (the status port, 15020): injection rewrote the kubelet's
//! HTTP and TCP probes into `GET /app-health/<container>/<livez|readyz|startupz>` here and gave
//! the originals in `MESH_KUBE_APP_PROBERS` (see `mesh_api::inject::probes`). The proxy runs the
//! original against the app on the pod IP (its own traffic is never captured, so STRICT mTLS on
//! the app's port does not stand in the way) and answers 200 when the app passed (2xx or 3xx
//! for HTTP, a connection for TCP) and 503 saying why when it did not, as the kubelet judges.
//!
//! Also `mesh-proxy wait`: the postStart hook that holds the app's start until the proxy is
//! ready (when the proxy is not a native sidecar).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use mesh_api::inject::probes::{APP_HEALTH_PREFIX, AppProber, AppProbers, HttpProbe};
use mesh_runtime::admin::{Body, text};

/// Most of an app's answer to a probe that is read (the kubelet reads 10 KiB; only the status
/// matters here).
const MAX_PROBE_BODY: usize = 10 << 10;

/// Reads `MESH_KUBE_APP_PROBERS`: the original probes by path; every path must be under
/// `/app-health/`.
pub fn parse(json: &str) -> Result<AppProbers, String> {
    let probers: AppProbers =
        serde_json::from_str(json).map_err(|e| format!("not the injector's probes JSON: {e}"))?;
    if let Some(path) = probers.keys().find(|p| !p.starts_with(APP_HEALTH_PREFIX)) {
        return Err(format!("probe path {path:?} is not under {APP_HEALTH_PREFIX}"));
    }
    if let Some((path, _)) =
        probers.iter().find(|(_, p)| p.http_get.is_none() == p.tcp_socket.is_none())
    {
        return Err(format!("probe {path:?} must have exactly one of httpGet and tcpSocket"));
    }
    Ok(probers)
}

/// The answer to a request to the status port: the probe its path names, run against the app
/// at `pod_ip`.
pub async fn respond<B>(
    request: &Request<B>,
    probers: &AppProbers,
    pod_ip: IpAddr,
) -> Response<Body> {
    let path = request.uri().path();
    let Some(prober) = probers.get(path) else {
        return text(StatusCode::NOT_FOUND, format!("no app probe at {path}\n"));
    };
    match run(prober, pod_ip).await {
        Ok(()) => text(StatusCode::OK, "OK\n"),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Runs one probe against the app; `Err` says why it failed.
pub async fn run(prober: &AppProber, pod_ip: IpAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::from(prober.timeout_seconds.max(1)));
    let probing = async {
        if let Some(http) = &prober.http_get {
            let address = target(http.host.as_deref(), http.port, pod_ip).await?;
            let status = http_get(address, http).await?;
            // The kubelet's rule: 200 to 399 passes.
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("the app answered {status}"))
            }
        } else if let Some(tcp) = &prober.tcp_socket {
            let address = target(tcp.host.as_deref(), tcp.port, pod_ip).await?;
            tokio::net::TcpStream::connect(address)
                .await
                .map(drop)
                .map_err(|e| format!("cannot connect to {address}: {e}"))
        } else {
            Err("the probe has neither httpGet nor tcpSocket".to_owned())
        }
    };
    tokio::time::timeout(timeout, probing)
        .await
        .unwrap_or_else(|_| Err(format!("the app did not answer within {}s", timeout.as_secs())))
}

/// Where a probe goes: its host when it names one, else the pod IP.
async fn target(host: Option<&str>, port: u16, pod_ip: IpAddr) -> Result<SocketAddr, String> {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Ok(SocketAddr::new(pod_ip, port));
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// One HTTP/1.1 GET of the app, as the kubelet sends it; returns the status.
async fn http_get(address: SocketAddr, probe: &HttpProbe) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP to {address}: {e}"))?;
    tokio::spawn(connection);
    let host = probe.host.clone().unwrap_or_else(|| address.to_string());
    let mut request = Request::get(probe.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "kube-probe/mesh-proxy")
        .header(http::header::ACCEPT, "*/*");
    for header in &probe.http_headers {
        request = request.header(header.name.as_str(), header.value.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("the probe's request cannot be made: {e}"))?;
    let response =
        sender.send_request(request).await.map_err(|e| format!("HTTP to {address}: {e}"))?;
    let status = response.status().as_u16();
    // Read (a bounded part of) the body so the app sees a finished exchange.
    let _ = http_body_util::Limited::new(response.into_body(), MAX_PROBE_BODY).collect().await;
    Ok(status)
}

/// `mesh-proxy wait`: polls the proxy's readiness on `health` every `period` until it is ready
/// (`Ok`) or `timeout` has passed (`Err` with the last answer).
pub async fn wait_ready(
    health: SocketAddr,
    period: Duration,
    timeout: Duration,
) -> Result<(), String> {
    let probe = HttpProbe {
        path: "/healthz/ready".to_owned(),
        port: health.port(),
        ..HttpProbe::default()
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(1), http_get(health, &probe)).await;
        let why = match answer {
            Ok(Ok(200)) => return Ok(()),
            Ok(Ok(status)) => format!("readiness answered {status}"),
            Ok(Err(why)) => why,
            Err(_) => "readiness did not answer within 1s".to_owned(),
        };
        if tokio::time::Instant::now() + period > deadline {
            return Err(format!("the proxy is not ready after {}s: {why}", timeout.as_secs()));
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn probers_are_checked_when_read() {
        let good = r#"{"/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080}}}"#;
        let probers = parse(good).unwrap();
        assert_eq!(probers["/app-health/web/readyz"].timeout_seconds, 1);
        assert!(parse("[").unwrap_err().contains("not the injector's probes JSON"));
        let outside = r#"{"/admin": {"tcpSocket": {"port": 8080}}}"#;
        assert!(parse(outside).unwrap_err().contains("not under /app-health/"));
        let neither = r#"{"/app-health/web/livez": {"timeoutSeconds": 1}}"#;
        assert!(parse(neither).unwrap_err().contains("exactly one"));
    }
}
