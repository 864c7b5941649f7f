//! The keys of RequestAuthentications' `jwksUri`s, fetched by the pilot and served inline to
//! the proxies (Istio's default): a proxy never reaches out to an issuer, and a fetch that
//! fails does not open the door. Until a URI's keys have been fetched, and when fetching them
//! fails, the proxies get [`FAIL_CLOSED`], a key set no token can match: a request carrying a
//! token of that issuer is refused (401), one without a token passes as before. Keys are
//! fetched again every [`REFRESH`]. The resolver is a stage between the config source and the
//! debouncer: it fills [`Snapshot::jwks`] and puts the snapshot on, again whenever keys
//! arrive. The cache is bounded ([`MAX_URIS`]); keys are at most [`MAX_JWKS_BYTES`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use tracing::{info, warn};

use crate::changes::Changes;
use crate::model::Snapshot;

/// How often keys are fetched again (Istio's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`).
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// How soon a failed fetch is tried again.
pub const RETRY: Duration = Duration::from_secs(60);
/// How many URIs are kept; past it, the least recently referenced go.
pub const MAX_URIS: usize = 1000;
/// The largest key set read.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The default fetch timeout (a rule's `timeout` overrides it).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A key set whose private key nobody holds (it was thrown away when it was made): tokens
/// checked against it always fail.
pub const FAIL_CLOSED: &str = r#"{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"mesh-fail-closed","e":"AQAB","n":"Y7BkyeIXG2RQAoJue1YWDAouaGqrr-f1bI4AW1UY7wGzCT4KYq1FvHFoye775W1_q9sNFh9XS2AqZq8pantWBxX8YeG_SOS6emFnoSQwXih66xjFY8IJD-8YAt0A81HwhT9SERcOVxYu38n3KretwecZw1AOi_NNuuTFRUAGtKFuouJzcGI4-gqpUtgNHtjG2a1qK8Dym_qd1IxN0De4vCDNt76Gj3LgJtAekeWNnxpPiysvvYegTUOYge1oQ2St3NZx1lWSI4rXmFCQ9-0CIVcPrwB8S7ttSTadFglxZ0eQ29_Rd7gpUhRHUtySAuxQGtoVSym2XkKMzwVq_s3WBQ"}]}"#;

/// Why keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URI is not an http(s) URL.
    #[error("not an http(s) URL")]
    Uri,
    /// Connecting or reading failed.
    #[error("{0}")]
    Http(String),
    /// The server answered with an error status.
    #[error("answered {0}")]
    Status(http::StatusCode),
    /// Not a key set.
    #[error("not a JWKS: {0}")]
    NotJwks(String),
    /// It took longer than the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Fetches a key set (a seam for tests).
pub trait Fetch: Clone + Send + Sync + 'static {
    /// The JWKS document at `uri`.
    fn fetch(
        &self,
        uri: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<String, FetchError>> + Send;
}

/// Checks that `text` is a JWKS with at least one key, and returns it.
pub fn checked(text: &str) -> Result<String, FetchError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| FetchError::NotJwks(e.to_string()))?;
    match value.get("keys").and_then(|k| k.as_array()) {
        Some(keys) if !keys.is_empty() => Ok(text.to_owned()),
        _ => Err(FetchError::NotJwks("no \"keys\" list with a key".to_owned())),
    }
}

/// Fetches over HTTP or HTTPS (the system's roots), with a timeout and a size cap.
#[derive(Clone)]
pub struct HttpFetch {
    /// `None` on a system without root certificates: nothing can be fetched, and the issuers'
    /// tokens are refused (the keys stay [`FAIL_CLOSED`]).
    client: Option<
        hyper_util::client::legacy::Client<
            hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
            Empty<bytes::Bytes>,
        >,
    >,
}

impl HttpFetch {
    /// A client trusting the system's root certificates.
    pub fn new() -> Self {
        let client = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => {
                let connector = builder.https_or_http().enable_http1().build();
                Some(
                    hyper_util::client::legacy::Client::builder(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .build(connector),
                )
            }
            Err(err) => {
                warn!("no system root certificates ({err}): jwksUri keys cannot be fetched");
                None
            }
        };
        Self { client }
    }
}

impl Default for HttpFetch {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetch for HttpFetch {
    async fn fetch(&self, uri: &str, timeout: Duration) -> Result<String, FetchError> {
        let parsed: http::Uri = uri.parse().map_err(|_| FetchError::Uri)?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) {
            return Err(FetchError::Uri);
        }
        let Some(client) = &self.client else {
            return Err(FetchError::Http("no system root certificates to fetch with".to_owned()));
        };
        let work = async {
            let response = client.get(parsed).await.map_err(|e| FetchError::Http(e.to_string()))?;
            if !response.status().is_success() {
                return Err(FetchError::Status(response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| FetchError::Http(e.to_string()))?
                .to_bytes();
            checked(&String::from_utf8_lossy(&body))
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| FetchError::Timeout(timeout))?
    }
}

/// The `jwksUri`s a snapshot's RequestAuthentications name, with their fetch timeouts.
pub fn referenced(snapshot: &Snapshot) -> BTreeMap<String, Duration> {
    snapshot
        .request_authentications
        .iter()
        .flat_map(|ra| &ra.spec.jwt_rules)
        .filter(|rule| rule.jwks.is_none())
        .filter_map(|rule| {
            let timeout = rule.timeout.as_ref().and_then(|t| t.parse().ok()).unwrap_or(TIMEOUT);
            Some((rule.jwks_uri.clone()?, timeout))
        })
        .collect()
}

struct Entry {
    /// The keys, or `None` while none were fetched.
    keys: Option<String>,
    /// When to fetch again.
    due: tokio::time::Instant,
    /// When a snapshot last named it (for eviction).
    used: u64,
}

/// Runs the stage: takes snapshots from `input`, fills their keys, puts them on `output`.
/// Ends when `input` can get no more snapshots.
pub async fn resolve(input: Changes, output: Changes, fetcher: impl Fetch) {
    let mut cache: HashMap<String, Entry> = HashMap::new();
    let mut in_flight: BTreeSet<String> = BTreeSet::new();
    // The last snapshot that named a URI, to put on again when its keys arrive.
    let mut last: Option<Snapshot> = None;
    let mut generation = 0u64;
    let (done_tx, mut done) =
        tokio::sync::mpsc::channel::<(String, Result<String, FetchError>)>(64);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let mut changed = false;
        tokio::select! {
            snapshot = input.next() => {
                let Some(snapshot) = snapshot else { return };
                generation += 1;
                let uris = referenced(&snapshot);
                for uri in uris.keys() {
                    let entry = cache.entry(uri.clone()).or_insert_with(|| Entry {
                        keys: None,
                        due: tokio::time::Instant::now(),
                        used: 0,
                    });
                    entry.used = generation;
                }
                if cache.len() > MAX_URIS {
                    let mut by_use: Vec<(u64, String)> =
                        cache.iter().map(|(uri, e)| (e.used, uri.clone())).collect();
                    by_use.sort();
                    for (_, uri) in by_use.into_iter().take(cache.len() - MAX_URIS) {
                        cache.remove(&uri);
                    }
                }
                last = (!uris.is_empty()).then(|| snapshot.clone());
                output.put(attach(snapshot, &cache));
            }
            Some((uri, result)) = done.recv() => {
                in_flight.remove(&uri);
                if let Some(entry) = cache.get_mut(&uri) {
                    match result {
                        Ok(keys) => {
                            info!(uri, "fetched the keys of a token issuer");
                            changed = entry.keys.as_deref() != Some(keys.as_str());
                            entry.keys = Some(keys);
                            entry.due = tokio::time::Instant::now() + REFRESH;
                        }
                        Err(err) => {
                            warn!(uri, "cannot fetch the keys of a token issuer: {err}; its tokens are refused until they can be fetched");
                            entry.due = tokio::time::Instant::now() + RETRY;
                        }
                    }
                }
            }
            _ = tick.tick() => {}
        }
        if changed && let Some(snapshot) = &last {
            output.put(attach(snapshot.clone(), &cache));
        }
        // Start the fetches that are due (the last snapshot's timeouts; the default for
        // URIs no longer named, which go when the cache is full).
        let timeouts = last.as_ref().map(referenced).unwrap_or_default();
        let now = tokio::time::Instant::now();
        for (uri, entry) in &cache {
            if entry.due <= now && in_flight.insert(uri.clone()) {
                let (fetcher, done_tx, uri) = (fetcher.clone(), done_tx.clone(), uri.clone());
                let timeout = timeouts.get(&uri).copied().unwrap_or(TIMEOUT);
                tokio::spawn(async move {
                    let result = fetcher.fetch(&uri, timeout).await;
                    let _ = done_tx.send((uri, result)).await;
                });
            }
        }
    }
}

/// `snapshot` with the keys of the URIs it names: fetched ones, else [`FAIL_CLOSED`].
fn attach(mut snapshot: Snapshot, cache: &HashMap<String, Entry>) -> Snapshot {
    snapshot.jwks = referenced(&snapshot)
        .into_keys()
        .map(|uri| {
            let keys = cache.get(&uri).and_then(|e| e.keys.clone());
            (uri, keys.unwrap_or_else(|| FAIL_CLOSED.to_owned()))
        })
        .collect();
    snapshot
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Clone)]
    struct Scripted {
        calls: Arc<AtomicUsize>,
        fail: bool,
        /// Answers only once notified.
        gate: Arc<tokio::sync::Notify>,
    }

    impl Scripted {
        fn new(fail: bool) -> Self {
            let gate = Arc::new(tokio::sync::Notify::new());
            gate.notify_one();
            Self { calls: Arc::new(AtomicUsize::new(0)), fail, gate }
        }
    }

    impl Fetch for Scripted {
        async fn fetch(&self, uri: &str, _: Duration) -> Result<String, FetchError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.gate.notified().await;
            if self.fail {
                return Err(FetchError::Status(http::StatusCode::BAD_GATEWAY));
            }
            checked(&format!(r#"{{"keys":[{{"kty":"oct","kid":"{uri}"}}]}}"#))
        }
    }

    fn with_rule(uri: &str) -> Snapshot {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: shop}}\nspec:\n  jwtRules: [{{issuer: https://issuer, jwksUri: \"{uri}\"}}]\n"
        );
        let report = mesh_api::load::load_str("ra.yaml", &yaml);
        let mut snapshot = Snapshot::default();
        for o in report.objects {
            if let mesh_api::Resource::RequestAuthentication(ra) = o.resource {
                snapshot.request_authentications.push(ra);
            }
        }
        snapshot
    }

    #[tokio::test]
    async fn keys_are_fail_closed_until_fetched_then_put_on_again() {
        let (input, output) = (Changes::default(), Changes::default());
        let fetcher =
            Scripted { gate: Arc::new(tokio::sync::Notify::new()), ..Scripted::new(false) };
        let (calls, gate) = (fetcher.calls.clone(), fetcher.gate.clone());
        tokio::spawn(resolve(input.clone(), output.clone(), fetcher));
        input.put(with_rule("https://issuer/keys"));
        let first = output.next().await.unwrap();
        assert_eq!(first.jwks["https://issuer/keys"], FAIL_CLOSED, "not fetched yet");
        gate.notify_one();
        let second =
            tokio::time::timeout(Duration::from_secs(5), output.next()).await.unwrap().unwrap();
        assert!(second.jwks["https://issuer/keys"].contains("https://issuer/keys"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_fetch_stays_fail_closed() {
        let (input, output) = (Changes::default(), Changes::default());
        let fetcher = Scripted::new(true);
        let calls = fetcher.calls.clone();
        tokio::spawn(resolve(input.clone(), output.clone(), fetcher));
        input.put(with_rule("https://issuer/keys"));
        let first = output.next().await.unwrap();
        assert_eq!(first.jwks["https://issuer/keys"], FAIL_CLOSED);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "tried, and not again before RETRY");
        let nothing = tokio::time::timeout(Duration::from_millis(200), output.next()).await;
        assert!(nothing.is_err(), "no new snapshot: the keys did not change");
    }

    /// Serves `answers` (status, body), one per connection, on loopback.
    fn server(answers: Vec<(u16, &'static str)>) -> std::net::SocketAddr {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (status, body) in answers {
                let Ok((mut stream, _)) = listener.accept() else { return };
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        address
    }

    #[tokio::test]
    async fn keys_are_fetched_over_http_and_what_is_not_a_key_set_is_refused() {
        let address = server(vec![
            (200, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#),
            (404, "no"),
            (200, "<html>"),
        ]);
        let fetch = HttpFetch::new();
        let uri = format!("http://{address}/keys");
        let keys = fetch.fetch(&uri, TIMEOUT).await.unwrap();
        assert!(keys.contains("oct"));
        let missing = fetch.fetch(&uri, TIMEOUT).await.unwrap_err();
        assert_eq!(missing.to_string(), "answered 404 Not Found");
        let html = fetch.fetch(&uri, TIMEOUT).await.unwrap_err();
        assert!(html.to_string().starts_with("not a JWKS"), "{html}");
        assert!(matches!(fetch.fetch("ftp://x/keys", TIMEOUT).await, Err(FetchError::Uri)));
    }

    #[test]
    fn a_document_without_keys_is_not_a_key_set() {
        assert!(checked(r#"{"keys": []}"#).is_err());
        assert!(checked("<html>").is_err());
        assert!(checked(FAIL_CLOSED).is_ok());
    }
}
