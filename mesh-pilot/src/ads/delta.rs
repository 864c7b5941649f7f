//! Incremental (delta) ADS: per resource versions, only what changed is sent, and what went
//! away is named in `removed_resources`. Same bookkeeping (`syncz`) as state of the world.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use mesh_api::xds::{CLUSTER_TYPE, LISTENER_TYPE};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{Instrument as _, debug};

use super::stream::{Handler, Session};

/// What one delta stream tracks of one type.
#[derive(Default)]
struct Subscription {
    /// Every resource (CDS and LDS by default, or `*`).
    wildcard: bool,
    /// Resources asked for by name.
    names: BTreeSet<String>,
    /// What the proxy has: name to version.
    sent: BTreeMap<String, String>,
    /// Names asked for that do not exist and were answered as removed (once).
    absent: BTreeSet<String>,
    /// The names that may exist only when asked for (`host:port` API listeners) this stream
    /// is served, in the order asked, at most [`super::stream::MAX_ON_DEMAND`].
    on_demand: Vec<String>,
}

impl Subscription {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// One delta ADS stream.
pub(crate) struct DeltaStream {
    session: Session,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    subscriptions: HashMap<String, Subscription>,
}

impl DeltaStream {
    /// A stream sending its responses to `tx`.
    pub(crate) fn new(
        session: Session,
        tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> Self {
        Self { session, tx, subscriptions: HashMap::new() }
    }
}

impl Handler for DeltaStream {
    type Request = DeltaDiscoveryRequest;

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), Status> {
        let type_url = request.type_url.clone();
        // Subscriptions add up over requests: the stream's names so far, and these.
        let names = self.subscriptions.values().map(|s| s.names.len()).sum::<usize>()
            + request.resource_names_subscribe.len();
        if !self.session.accept(request.node.as_ref(), &type_url, names).await? {
            return Ok(());
        }
        if !request.response_nonce.is_empty() {
            let sent = self.session.sent_nonce(&type_url);
            if request.response_nonce != sent {
                debug!(connection = self.session.id, %type_url, "stale nonce {} ignored", request.response_nonce);
                return Ok(());
            }
            match &request.error_detail {
                Some(error) => {
                    self.session.nack(&type_url, &request.response_nonce, &error.message)
                }
                None => self.session.ack(&type_url, None, &request.response_nonce),
            }
        }
        let first = !self.subscriptions.contains_key(&type_url);
        let subscription = self.subscriptions.entry(type_url.clone()).or_default();
        if first {
            // An empty first subscription to CDS or LDS means "everything" (legacy wildcard).
            subscription.wildcard = request.resource_names_subscribe.is_empty()
                && (type_url == CLUSTER_TYPE || type_url == LISTENER_TYPE);
            // What the proxy already has from an earlier stream.
            subscription.sent = request.initial_resource_versions.clone().into_iter().collect();
        }
        let mut changed = first;
        for name in &request.resource_names_subscribe {
            changed = true;
            if name == "*" {
                subscription.wildcard = true;
            } else {
                subscription.names.insert(name.clone());
                // A re-subscription must be answered even if the proxy had it.
                subscription.sent.remove(name);
            }
        }
        for name in &request.resource_names_unsubscribe {
            changed = true;
            if name == "*" {
                subscription.wildcard = false;
            } else {
                subscription.names.remove(name);
            }
            subscription.sent.remove(name);
        }
        if type_url == LISTENER_TYPE {
            // Names past the limit are never translated: they get the answer of a name that
            // does not exist (removed, once).
            subscription.on_demand.retain(|n| subscription.names.contains(n));
            let new = request
                .resource_names_subscribe
                .iter()
                .filter(|n| !subscription.on_demand.contains(n))
                .map(String::as_str);
            let already = subscription.on_demand.len();
            let served = self.session.on_demand(new, already);
            subscription.on_demand.extend(served);
        }
        if changed {
            self.push_changes(&type_url).await?;
        }
        Ok(())
    }

    fn watches(&self, type_url: &str) -> bool {
        self.subscriptions.contains_key(type_url)
    }

    /// Sends what changed of one type since the last response: new and updated resources, and
    /// the names of the ones the proxy should drop.
    async fn push_changes(&mut self, type_url: &str) -> Result<(), Status> {
        let Some(subscription) = self.subscriptions.get_mut(type_url) else { return Ok(()) };
        let Some((snapshot, translated)) =
            self.session.current(type_url, &subscription.on_demand).await
        else {
            return Ok(());
        };
        let mut updated = Vec::new();
        let mut current = BTreeSet::new();
        for ((name, any), hash) in translated.resources.iter().zip(&translated.hashes) {
            if !subscription.wants(name) {
                continue;
            }
            current.insert(name.clone());
            let version = format!("{hash:016x}");
            if subscription.sent.get(name) != Some(&version) {
                subscription.sent.insert(name.clone(), version.clone());
                updated.push(Resource {
                    name: name.clone(),
                    version,
                    resource: Some(any.clone()),
                    ..Resource::default()
                });
            }
        }
        let removed: Vec<String> =
            subscription.sent.keys().filter(|n| !current.contains(*n)).cloned().collect();
        for name in &removed {
            subscription.sent.remove(name);
        }
        // A named subscription to something that does not exist is answered too, as removed
        // (once), so the proxy stops waiting for it.
        let missing: Vec<String> = subscription
            .names
            .iter()
            .filter(|n| {
                !current.contains(*n) && !removed.contains(n) && !subscription.absent.contains(*n)
            })
            .cloned()
            .collect();
        subscription.absent.retain(|n| !current.contains(n));
        subscription.absent.extend(missing.iter().cloned());
        if updated.is_empty() && removed.is_empty() && missing.is_empty() {
            return Ok(());
        }
        let nonce = self.session.next_nonce("d");
        let version = snapshot.version.to_string();
        let bytes = updated.iter().map(|r| r.resource.as_ref().map_or(0, |a| a.value.len())).sum();
        let span = self.session.push_span(type_url, &version, &nonce, updated.len(), bytes);
        let response = DeltaDiscoveryResponse {
            system_version_info: version,
            resources: updated,
            type_url: type_url.to_owned(),
            removed_resources: removed.into_iter().chain(missing).collect(),
            nonce: nonce.clone(),
            ..DeltaDiscoveryResponse::default()
        };
        self.session.sent(type_url, &snapshot, &nonce);
        let sending = async {
            debug!(connection = self.session.id, "pushing {type_url}");
            self.tx.send(Ok(response)).await.map_err(|_| Status::cancelled("the proxy went away"))
        };
        sending.instrument(span).await
    }
}
