//! What both protocols do with a stream: the run loop (requests and snapshot changes in one
//! task, the connection counted and its status dropped when it ends), and the [`Session`]
//! every request goes through first (node registration and identity, limits, ACK and NACK
//! bookkeeping).

use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use mesh_api::xds::PUSH_ORDER;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{debug, info, warn};

use super::Discovery;
use super::cache::Translated;
use super::caller::Caller;
use super::status::{StreamStatus, TypeStatus};
use crate::model::{Proxy, Snapshot};

/// Most resource names one stream may be subscribed to, over all its types; a request that
/// would pass it ends the stream. A sidecar of the largest meshes Envoy serves asks for a few
/// tens of thousands (an endpoint assignment per cluster, a route configuration per port), so
/// this leaves room, and a stream at the limit keeps at most a few megabytes of names.
pub(crate) const MAX_NAMES: usize = 100_000;

/// Most on-demand names (`host:port` API listeners) one stream is served. Each is translated
/// on every push, so they are what a request could make expensive; a proxyless gRPC client
/// asks one per `xds:///` target its process dials, and 100 is plenty. Names past the limit
/// are left out of responses rather than refused: gRPC then fails only the channels that
/// named them ("does not exist") and keeps the stream and every other channel working, where
/// a NACK-worthy response or an ended stream would break them all.
pub(crate) const MAX_ON_DEMAND: usize = 100;

/// One protocol's handling of an ADS stream (state of the world or delta).
pub(crate) trait Handler: Send + 'static {
    /// The requests of the protocol.
    type Request: Send + 'static;
    /// Handles one request from the proxy.
    fn on_request(
        &mut self,
        request: Self::Request,
    ) -> impl Future<Output = Result<(), Status>> + Send;
    /// Whether the proxy subscribed to a type.
    fn watches(&self, type_url: &str) -> bool;
    /// Pushes what changed of one type since its last response, if anything did.
    fn push_changes(&mut self, type_url: &str) -> impl Future<Output = Result<(), Status>> + Send;
    /// Pushes what a new snapshot changed, type by type in make-before-break order.
    fn on_snapshot(&mut self) -> impl Future<Output = Result<(), Status>> + Send {
        async move {
            for type_url in PUSH_ORDER {
                if self.watches(type_url) {
                    self.push_changes(type_url).await?;
                }
            }
            Ok(())
        }
    }
}

/// Runs a stream: requests and snapshot changes in one loop, the connection counted and its
/// sync state dropped when it ends, a protocol error sent to the proxy as the final status.
pub(crate) fn run<H, T>(
    discovery: &Arc<Discovery>,
    mut requests: impl Stream<Item = Result<H::Request, Status>> + Send + Unpin + 'static,
    caller: Caller,
    handler: impl FnOnce(Session, mpsc::Sender<Result<T, Status>>) -> H,
) -> mpsc::Receiver<Result<T, Status>>
where
    H: Handler,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let discovery = discovery.clone();
    let id = discovery.registry.next_id();
    discovery.metrics.connected.inc();
    let session = Session::new(id, discovery.clone(), caller);
    let mut handler = handler(session, tx.clone());
    tokio::spawn(async move {
        let mut snapshots = discovery.snapshots.clone();
        let result = loop {
            tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(request)) => {
                        if let Err(status) = handler.on_request(request).await {
                            break Err(status);
                        }
                    }
                    Some(Err(status)) => {
                        // A request that does not decode, or the transport failing: the
                        // status goes back (if anyone is listening) and the stream ends.
                        debug!(connection = id, "stream ended: {status}");
                        break Err(status);
                    }
                    None => break Ok(()),
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break Err(Status::unavailable("the pilot is shutting down"));
                    }
                    if let Err(status) = handler.on_snapshot().await {
                        break Err(status);
                    }
                }
            }
        };
        // The stream's status goes with it, even while the last message waits to be sent.
        drop(handler);
        if let Err(status) = result {
            let _ = tx.send(Err(status)).await;
        }
        discovery.registry.remove(id).await;
        discovery.metrics.connected.dec();
    });
    rx
}

/// What a stream is to the pilot whatever its protocol: its proxy (once the first request
/// named it), its sync status, its nonces.
pub(crate) struct Session {
    /// The stream's id (in logs and nonces).
    pub(crate) id: u64,
    discovery: Arc<Discovery>,
    caller: Caller,
    /// The proxy, from the first request's node.
    proxy: Option<Proxy>,
    /// Registered with the proxy.
    status: Option<StreamStatus>,
    nonce: u64,
    /// Whether the stream was told once that it asks for too many on-demand names.
    warned_on_demand: bool,
}

impl Session {
    fn new(id: u64, discovery: Arc<Discovery>, caller: Caller) -> Self {
        Self { id, discovery, caller, proxy: None, status: None, nonce: 0, warned_on_demand: false }
    }

    /// What every request needs before its protocol looks at it: the stream's proxy registered
    /// from the first request's node (and its identity checked), the type one this pilot
    /// serves, the stream's subscriptions (`names`, over all types, with this request) within
    /// [`MAX_NAMES`]. `Ok(false)`: ignore the request.
    pub(crate) async fn accept(
        &mut self,
        node: Option<&envoy_types::pb::envoy::config::core::v3::Node>,
        type_url: &str,
        names: usize,
    ) -> Result<bool, Status> {
        if self.proxy.is_none() {
            self.connect(node).await?;
        }
        if !PUSH_ORDER.contains(&type_url) {
            // Unknown types are answered with nothing rather than an error: Envoy asks for
            // types a control plane may not serve.
            debug!(connection = self.id, %type_url, "request for a type this pilot does not serve");
            return Ok(false);
        }
        if names > MAX_NAMES {
            return Err(Status::resource_exhausted(format!(
                "a subscription to {names} resource names; a stream may have at most {MAX_NAMES}"
            )));
        }
        Ok(true)
    }

    /// Registers the stream's proxy from the node of its first request.
    async fn connect(
        &mut self,
        node: Option<&envoy_types::pb::envoy::config::core::v3::Node>,
    ) -> Result<(), Status> {
        let node =
            node.ok_or_else(|| Status::invalid_argument("the first request must carry the node"))?;
        let proxy = Proxy::from_node(node);
        if let Err(refused) = self.caller.admit(&proxy) {
            warn!(connection = self.id, node = %proxy.id, "xDS stream refused: {}", refused.message());
            self.discovery.metrics.identity_refused.inc();
            return Err(refused);
        }
        info!(connection = self.id, node = %proxy.id, "proxy connected");
        self.status = Some(self.discovery.registry.register(self.id, &proxy).await);
        self.proxy = Some(proxy);
        Ok(())
    }

    /// Records a proxy's rejection of a response (its log line, metric and `syncz` entry);
    /// it is not answered.
    pub(crate) fn nack(&self, type_url: &str, nonce: &str, message: &str) {
        warn!(connection = self.id, %type_url, "proxy rejected {nonce}: {message}");
        self.discovery
            .metrics
            .rejects
            .get_or_create(&crate::metrics::TypeLabel::of(type_url))
            .inc();
        self.record(type_url, |s| s.last_nack = Some(message.to_owned()));
    }

    /// Records that the proxy accepted the response of `nonce`.
    pub(crate) fn ack(&self, type_url: &str, version: Option<String>, nonce: &str) {
        self.record(type_url, |s| {
            s.acked_version = version.unwrap_or_else(|| s.sent_version.clone());
            nonce.clone_into(&mut s.acked_nonce);
            s.last_nack = None;
        });
    }

    /// The last nonce sent for one type.
    pub(crate) fn sent_nonce(&self, type_url: &str) -> String {
        self.status.as_ref().map(|s| s.sent_nonce(type_url)).unwrap_or_default()
    }

    /// The nonce of the next response: the stream id, `kind` and a counter.
    pub(crate) fn next_nonce(&mut self, kind: &str) -> String {
        self.nonce += 1;
        format!("{}-{kind}{}", self.id, self.nonce)
    }

    /// The span of one response to this stream's proxy (exported when the pilot traces, see
    /// `--otlp-endpoint`): the proxy, the type, how many resources and bytes, the version and
    /// nonce. Log lines inside it carry its `trace_id` and `span_id`.
    pub(crate) fn push_span(
        &self,
        type_url: &str,
        version: &str,
        nonce: &str,
        resources: usize,
        bytes: usize,
    ) -> tracing::Span {
        let proxy = self.proxy.as_ref().map(|p| p.id.as_str()).unwrap_or_default();
        let short = crate::metrics::TypeLabel::of(type_url).r#type;
        // Signed: OpenTelemetry's attributes have no unsigned numbers (they would go as text).
        let signed = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let span = tracing::info_span!(
            "push",
            otel.name = format!("push {short}"),
            proxy,
            type_url,
            resources = signed(resources),
            bytes = signed(bytes),
            version,
            nonce,
            connection = i64::try_from(self.id).unwrap_or(i64::MAX),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        mesh_trace::export::record_ids(&span);
        span
    }

    /// Records a response of `snapshot` about to be sent (its `syncz` entry and metrics).
    pub(crate) fn sent(&self, type_url: &str, snapshot: &Snapshot, nonce: &str) {
        self.record(type_url, |s| {
            s.sent_version = snapshot.version.to_string();
            nonce.clone_into(&mut s.sent_nonce);
        });
        self.discovery.metrics.observe_push(type_url, snapshot.published);
    }

    /// What to push of one type now: the current snapshot and its translation for the proxy,
    /// with the `on_demand` names it asked for; `None` before the proxy is known, and before
    /// the first snapshot is read (an empty answer would make a reconnecting proxy drop the
    /// config it runs on; the first snapshot answers every waiting request).
    pub(crate) async fn current(
        &self,
        type_url: &str,
        on_demand: &[String],
    ) -> Option<(Arc<Snapshot>, Arc<Translated>)> {
        let proxy = self.proxy.as_ref()?;
        let snapshot = self.discovery.snapshots.borrow().clone();
        if snapshot.version == 0 {
            return None;
        }
        let translated =
            self.discovery.resources_named(type_url, &snapshot, proxy, on_demand).await?;
        Some((snapshot, translated))
    }

    fn record(&self, type_url: &str, update: impl FnOnce(&mut TypeStatus)) {
        if let Some(status) = &self.status {
            status.record(type_url, update);
        }
    }

    /// The on-demand names (`host:port`) among `names` this stream is served: at most
    /// [`MAX_ON_DEMAND`] in all, `already` of them taken. The rest are counted, and the first
    /// time logged.
    pub(crate) fn on_demand<'a>(
        &mut self,
        names: impl Iterator<Item = &'a str>,
        already: usize,
    ) -> Vec<String> {
        let mut served = Vec::new();
        let mut ignored = 0_u64;
        for name in names.filter(|n| n.contains(':')) {
            if already + served.len() < MAX_ON_DEMAND {
                served.push(name.to_owned());
            } else {
                ignored += 1;
            }
        }
        if ignored > 0 {
            self.discovery.metrics.on_demand_ignored.inc_by(ignored);
            if !self.warned_on_demand {
                self.warned_on_demand = true;
                let node = self.proxy.as_ref().map(|p| p.id.as_str()).unwrap_or_default();
                warn!(
                    connection = self.id,
                    %node,
                    "the stream asks for more than {MAX_ON_DEMAND} on-demand listeners (host:port); {ignored} are answered as not found (logged once per stream, counted in pilot_xds_on_demand_ignored)"
                );
            }
        }
        served
    }
}
