//! State-of-the-world ADS: per-type versions and nonces, ACK/NACK, pushes in make-before-break
//! order (CDS, EDS, LDS, RDS); listeners and clusters whole, endpoints and routes only what
//! changed after the first response. Responses are framed from the shared bytes of the
//! translation ([`super::framing`]).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Status;
use tracing::{Instrument as _, debug};

use super::cache::{Translated, name_hash};
use super::framing::{RawNames, Response, SotwRequest};
use super::stream::{Handler, Session};

/// The names a state-of-the-world stream asked for, kept small: a proxy subscribed to
/// thousands of endpoint assignments must not cost thousands of strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Names {
    /// No names, or `*`: everything.
    wildcard: bool,
    /// [`name_hash`] of each name, sorted.
    hashes: Vec<u64>,
    /// Names that may only exist when asked for (`host:port` API listeners), verbatim; at
    /// most [`super::stream::MAX_ON_DEMAND`].
    on_demand: Vec<String>,
}

impl Names {
    fn of(type_url: &str, names: &RawNames, session: &mut Session) -> Self {
        let mut hashes: Vec<u64> = names.iter().map(name_hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        let on_demand = if type_url == mesh_api::xds::LISTENER_TYPE {
            session.on_demand(names.iter(), 0)
        } else {
            Vec::new()
        };
        Self { wildcard: names.len() == 0 || names.iter().any(|n| n == "*"), hashes, on_demand }
    }

    fn wants(&self, hash: u64) -> bool {
        self.wildcard || self.hashes.binary_search(&hash).is_ok()
    }
}

/// What one stream watches of one type.
struct Watched {
    /// Requested names.
    names: Names,
    /// The fingerprint of the names as last sent by the proxy ([`RawNames`]).
    raw: u64,
    /// Fingerprint of the last resources sent, to skip pushes that change nothing.
    sent: Option<u64>,
    /// The translation last sent from (shared with the other streams it applies to), to send
    /// EDS and RDS incrementally.
    last: Option<Arc<Translated>>,
}

/// One state-of-the-world ADS stream.
pub(crate) struct SotwStream {
    session: Session,
    tx: mpsc::Sender<Result<Response, Status>>,
    watched: HashMap<String, Watched>,
    /// Clusters were sent since the last endpoints: the next EDS push sends every watched
    /// assignment, changed or not. Envoy warms a cluster that CDS changed until an EDS response
    /// names it again, and asks for it with a request that reads as an ACK; without this it
    /// would wait out its initial fetch timeout (15 s) before using the new cluster.
    endpoints_after_clusters: bool,
}

impl SotwStream {
    /// A stream sending its responses to `tx`.
    pub(crate) fn new(session: Session, tx: mpsc::Sender<Result<Response, Status>>) -> Self {
        Self { session, tx, watched: HashMap::new(), endpoints_after_clusters: false }
    }
}

impl Handler for SotwStream {
    type Request = SotwRequest;

    async fn on_request(&mut self, sotw: SotwRequest) -> Result<(), Status> {
        let SotwRequest { request, names: raw } = sotw;
        let type_url = request.type_url.clone();
        let node = request.node.as_ref();
        // This request's names replace the type's; the other types' stay.
        let others: usize = self
            .watched
            .iter()
            .filter(|(t, _)| **t != type_url)
            .map(|(_, w)| w.names.hashes.len())
            .sum();
        if !self.session.accept(node, &type_url, others + raw.len()).await? {
            return Ok(());
        }
        if let Some(error) = &request.error_detail {
            self.session.nack(&type_url, &request.response_nonce, &error.message);
            return Ok(());
        }
        let sent_nonce = self.session.sent_nonce(&type_url);
        if !request.response_nonce.is_empty() && request.response_nonce != sent_nonce {
            debug!(connection = self.session.id, %type_url, "stale nonce {} ignored", request.response_nonce);
            return Ok(());
        }
        // The same names as last time (the usual ACK) cost a fingerprint compare, not a decode.
        let current = self.watched.get(&type_url);
        let first = current.is_none();
        let new_names = match current {
            Some(w) if w.raw == raw.fingerprint => None,
            Some(w) => {
                Some(Names::of(&type_url, &raw, &mut self.session)).filter(|n| *n != w.names)
            }
            None => Some(Names::of(&type_url, &raw, &mut self.session)),
        };
        let names_changed = !first && new_names.is_some();
        if !request.response_nonce.is_empty() {
            // An ACK of what was sent.
            let version = Some(request.version_info.clone());
            self.session.ack(&type_url, version, &request.response_nonce);
        }
        if first || names_changed || request.response_nonce.is_empty() {
            let watched = self.watched.entry(type_url.clone()).or_insert(Watched {
                names: Names::default(),
                raw: 0,
                sent: None,
                last: None,
            });
            if let Some(names) = new_names {
                watched.names = names;
            }
            watched.raw = raw.fingerprint;
            watched.sent = None;
            watched.last = None;
            self.push(&type_url, true).await?;
        } else if let Some(watched) = self.watched.get_mut(&type_url) {
            // The same names in another order: remembered, so the next ACK is cheap again.
            watched.raw = raw.fingerprint;
        }
        Ok(())
    }

    fn watches(&self, type_url: &str) -> bool {
        self.watched.contains_key(type_url)
    }

    async fn push_changes(&mut self, type_url: &str) -> Result<(), Status> {
        self.push(type_url, false).await
    }
}

impl SotwStream {
    /// Sends the current state of one type, unless it is what was sent last (and not forced).
    async fn push(&mut self, type_url: &str, force: bool) -> Result<(), Status> {
        let after_clusters = type_url == mesh_api::xds::ENDPOINT_TYPE
            && std::mem::take(&mut self.endpoints_after_clusters);
        let force = force || after_clusters;
        let Some(watched) = self.watched.get_mut(type_url) else { return Ok(()) };
        let Some((snapshot, translated)) =
            self.session.current(type_url, &watched.names.on_demand).await
        else {
            return Ok(());
        };
        let selected: Vec<usize> = (0..translated.resources.len())
            .filter(|i| watched.names.wants(translated.name_hashes[*i]))
            .collect();
        // A hash of hashes: a thousand streams must not each keep their last response.
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            for i in &selected {
                translated.hashes[*i].hash(&mut hasher);
            }
            hasher.finish()
        };
        if !force && watched.sent.as_ref() == Some(&fingerprint) {
            return Ok(());
        }
        // Listeners and clusters are state of the world: every response holds them all. Route
        // configurations and endpoints are not (a missing one is not a deletion): after the
        // first response only the changed ones go, so one endpoint change is one small message.
        let incremental =
            type_url == mesh_api::xds::ENDPOINT_TYPE || type_url == mesh_api::xds::ROUTE_TYPE;
        let previous = if force || !incremental { None } else { watched.last.clone() };
        let changed: Vec<usize> = selected
            .into_iter()
            .filter(|i| {
                previous
                    .as_ref()
                    .is_none_or(|p| p.hash_like(&translated, *i) != Some(translated.hashes[*i]))
            })
            .collect();
        let nonce = self.session.next_nonce("");
        let version = snapshot.version.to_string();
        let bytes = changed.iter().map(|i| translated.encoded[*i].len()).sum();
        let span = self.session.push_span(type_url, &version, &nonce, changed.len(), bytes);
        let response = Response::new(
            &version,
            changed.iter().map(|i| &translated.encoded[*i]),
            type_url,
            &nonce,
        );
        watched.last = Some(translated);
        watched.sent = Some(fingerprint);
        if type_url == mesh_api::xds::CLUSTER_TYPE {
            self.endpoints_after_clusters = true;
        }
        self.session.sent(type_url, &snapshot, &nonce);
        let sending = async {
            debug!(connection = self.session.id, "pushing {type_url}");
            self.tx.send(Ok(response)).await.map_err(|_| Status::cancelled("the proxy went away"))
        };
        sending.instrument(span).await
    }
}
