//! A small OTLP collector: the OpenTelemetry `TraceService` over gRPC (opentelemetry-proto's
//! tonic server), and OTLP/HTTP ([`http`]), keeping the last traces in memory, for tests and
//! `meshctl local`. Look a trace
//! up by id ([`Receiver::spans_of`]), list the latest ([`Receiver::latest`]), or wait for spans
//! to arrive ([`Receiver::wait_for_trace`], [`Receiver::wait_for_span`]).

pub mod http;
mod store;
mod view;

pub use store::{Limits, Store};
pub use view::{MAX_ATTRIBUTES, MAX_TEXT, SpanView, TraceView};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::sync::{Mutex, watch};

use crate::context::TraceId;

/// The receiver: cheap to clone, every clone sees the same traces.
#[derive(Clone, Debug)]
pub struct Receiver {
    store: Arc<Mutex<Store>>,
    /// Bumped after each export received, to wake waiters.
    changed: Arc<watch::Sender<u64>>,
}

impl Receiver {
    /// A receiver keeping what `limits` say.
    pub fn new(limits: Limits) -> Self {
        Self {
            store: Arc::new(Mutex::new(Store::new(limits))),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    /// The gRPC service, to add to a tonic server.
    pub fn service(&self) -> TraceServiceServer<Self> {
        TraceServiceServer::new(self.clone())
    }

    /// Serves OTLP/gRPC on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(self.service())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown,
            )
            .await
    }

    /// Keeps the spans of `request`; returns how many were rejected (invalid ids, or over a
    /// trace's limit).
    pub async fn receive(&self, request: ExportTraceServiceRequest) -> u64 {
        let mut rejected = 0;
        {
            let mut store = self.store.lock().await;
            for resource_spans in request.resource_spans {
                let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
                let service = view::service_name(&resource);
                for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                    let kept = match view::from_proto(span, &service) {
                        Some((trace_id, span)) => store.insert(trace_id, span),
                        None => false,
                    };
                    rejected += u64::from(!kept);
                }
            }
        }
        self.changed.send_modify(|n| *n += 1);
        rejected
    }

    /// The spans of `trace_id`, by start time.
    pub async fn spans_of(&self, trace_id: &TraceId) -> Option<TraceView> {
        self.store.lock().await.get(trace_id)
    }

    /// The `n` traces that received a span last, the latest first.
    pub async fn latest(&self, n: usize) -> Vec<TraceView> {
        self.store.lock().await.latest(n)
    }

    /// Waits until `check` finds what it looks for in the store (checked now and after each
    /// export received), or `timeout` passes.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Store) -> Option<T>,
    ) -> Option<T> {
        let mut changed = self.changed.subscribe();
        let waiting = async {
            loop {
                changed.borrow_and_update();
                if let Some(found) = check(&*self.store.lock().await) {
                    return found;
                }
                if changed.changed().await.is_err() {
                    // Cannot happen while `self` holds the sender; wait out the timeout.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, waiting).await.ok()
    }

    /// Waits until `trace_id` has at least `spans` spans, or `timeout` passes.
    pub async fn wait_for_trace(
        &self,
        trace_id: &TraceId,
        spans: usize,
        timeout: Duration,
    ) -> Option<TraceView> {
        self.wait_until(timeout, |store| store.get(trace_id).filter(|t| t.spans.len() >= spans))
            .await
    }

    /// Waits until a span for which `predicate` holds has arrived, or `timeout` passes.
    pub async fn wait_for_span(
        &self,
        timeout: Duration,
        mut predicate: impl FnMut(&SpanView) -> bool,
    ) -> Option<SpanView> {
        self.wait_until(timeout, |store| store.find_span(&mut predicate)).await
    }
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let rejected = self.receive(request.into_inner()).await;
        Ok(tonic::Response::new(answer(rejected)))
    }
}

/// The answer to an export of which `rejected` spans were not kept.
fn answer(rejected: u64) -> ExportTraceServiceResponse {
    let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message: "spans with invalid ids, or over the receiver's limit for one trace"
            .to_owned(),
    });
    ExportTraceServiceResponse { partial_success }
}
