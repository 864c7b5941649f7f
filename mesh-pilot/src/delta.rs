//! Incremental (delta) ADS: per resource versions, only what changed is sent, and what went
//! away is named in `removed_resources`. Same bookkeeping (`syncz`) as state of the world.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use mesh_api::xds::{CLUSTER_TYPE, LISTENER_TYPE, PUSH_ORDER};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::debug;

use crate::model::Proxy;
use crate::xds::{Caller, Discovery, TypeStatus};

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
}

impl Subscription {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// One delta ADS stream.
pub(crate) struct DeltaStream {
    id: u64,
    discovery: Arc<Discovery>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    caller: Caller,
    proxy: Option<Proxy>,
    subscriptions: HashMap<String, Subscription>,
    nonce: u64,
}

impl crate::xds::Handler for DeltaStream {
    type Request = DeltaDiscoveryRequest;

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), Status> {
        self.handle(request).await
    }

    async fn on_snapshot(&mut self) -> Result<(), Status> {
        for type_url in PUSH_ORDER {
            if self.subscriptions.contains_key(type_url) {
                self.push(type_url).await?;
            }
        }
        Ok(())
    }
}

impl DeltaStream {
    pub(crate) fn new(
        id: u64,
        discovery: Arc<Discovery>,
        tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
        caller: Caller,
    ) -> Self {
        Self { id, discovery, tx, caller, proxy: None, subscriptions: HashMap::new(), nonce: 0 }
    }

    async fn record(&self, type_url: &str, update: impl FnOnce(&mut TypeStatus)) {
        self.discovery.record(self.id, type_url, update).await;
    }

    async fn handle(&mut self, request: DeltaDiscoveryRequest) -> Result<(), Status> {
        let type_url = request.type_url.clone();
        let names =
            request.resource_names_subscribe.len() + request.resource_names_unsubscribe.len();
        let discovery = &self.discovery;
        if !discovery
            .accept(self.id, &mut self.proxy, request.node.as_ref(), &self.caller, &type_url, names)
            .await?
        {
            return Ok(());
        }
        if !request.response_nonce.is_empty() {
            let sent = self.discovery.sent_nonce(self.id, &type_url).await;
            if request.response_nonce != sent {
                debug!(connection = self.id, %type_url, "stale nonce {} ignored", request.response_nonce);
                return Ok(());
            }
            match &request.error_detail {
                Some(error) => {
                    let (id, nonce) = (self.id, &request.response_nonce);
                    self.discovery.nack(id, &type_url, nonce, &error.message).await;
                }
                None => {
                    let nonce = request.response_nonce.clone();
                    self.record(&type_url, |s| {
                        s.acked_nonce = nonce;
                        s.acked_version = s.sent_version.clone();
                        s.last_nack = None;
                    })
                    .await;
                }
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
        if changed {
            self.push(&type_url).await?;
        }
        Ok(())
    }

    /// Sends what changed of one type since the last response: new and updated resources, and
    /// the names of the ones the proxy should drop.
    async fn push(&mut self, type_url: &str) -> Result<(), Status> {
        let Some(proxy) = &self.proxy else { return Ok(()) };
        let snapshot = self.discovery.snapshots.borrow().clone();
        if snapshot.version == 0 {
            // Nothing read yet (see the state-of-the-world stream).
            return Ok(());
        }
        let Some(subscription) = self.subscriptions.get_mut(type_url) else { return Ok(()) };
        let asked: Vec<String> = if type_url == mesh_api::xds::LISTENER_TYPE {
            subscription.names.iter().cloned().collect()
        } else {
            Vec::new()
        };
        let Some(translated) =
            self.discovery.resources_named(type_url, &snapshot, proxy, &asked).await
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
        self.nonce += 1;
        let nonce = format!("{}-d{}", self.id, self.nonce);
        let version = snapshot.version.to_string();
        let response = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: updated,
            type_url: type_url.to_owned(),
            removed_resources: removed.into_iter().chain(missing).collect(),
            nonce: nonce.clone(),
            ..DeltaDiscoveryResponse::default()
        };
        self.record(type_url, |s| {
            s.sent_version = version;
            s.sent_nonce = nonce;
        })
        .await;
        self.discovery.metrics.observe_push(type_url, snapshot.published);
        self.tx.send(Ok(response)).await.map_err(|_| Status::cancelled("the proxy went away"))
    }
}
