//! Istio kinds the mesh does not implement (EnvoyFilter, WorkloadGroup, ProxyConfig,
//! WasmPlugin), watched where the cluster has their CRDs so that none is silently
//! ignored: each object is named once in the log and gets a Warning Event (`NotEnforced`),
//! as `meshctl local apply` and the local source say it for files.

use std::collections::HashSet;

use futures::StreamExt as _;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource as _, ResourceExt as _};
use tracing::warn;

/// The versions each not-enforced kind is looked for under, newest first.
const VERSIONS: &[(&str, &[&str])] = &[
    ("EnvoyFilter", &["v1alpha3"]),
    ("WorkloadGroup", &["v1", "v1beta1", "v1alpha3"]),
    ("ProxyConfig", &["v1beta1"]),
    ("WasmPlugin", &["v1alpha1"]),
];

/// The watched kinds and what was said about their objects.
#[derive(Default)]
pub struct Unenforced {
    stores: Vec<(String, ApiResource, Store<DynamicObject>)>,
    said: HashSet<(String, String, String)>,
}

impl Unenforced {
    /// Starts a watch for each not-enforced kind the cluster serves; `changed` is nudged on
    /// every event, as the other watches do.
    pub async fn watch(client: &Client, changed: &tokio::sync::mpsc::Sender<()>) -> Self {
        let mut out = Self::default();
        for &(group, kind) in mesh_api::load::NOT_ENFORCED_KINDS {
            let versions = VERSIONS.iter().find(|(k, _)| *k == kind).map_or(&[][..], |(_, v)| v);
            for version in versions {
                let Ok(list) = client.list_api_group_resources(&format!("{group}/{version}")).await
                else {
                    continue;
                };
                let Some(served) = list.resources.iter().find(|r| r.kind == kind) else { continue };
                let ar = ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk(group, version, kind),
                    &served.name,
                );
                let writer = reflector::store::Writer::new(ar.clone());
                let reader = writer.as_reader();
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                let tx = changed.clone();
                tokio::spawn(async move {
                    let stream = watcher(api, watcher::Config::default())
                        .default_backoff()
                        .reflect(writer)
                        .touched_objects();
                    futures::pin_mut!(stream);
                    while let Some(event) = stream.next().await {
                        if let Err(err) = event {
                            warn!(kind, "watch error: {err}");
                        }
                        let _ = tx.try_send(());
                    }
                });
                out.stores.push((kind.to_owned(), ar, reader));
                break;
            }
        }
        out
    }

    /// Says, once per object, that it is read but not enforced.
    pub async fn report(&mut self, recorder: &Recorder) {
        let mut current = HashSet::new();
        for (kind, ar, store) in &self.stores {
            for object in store.state() {
                let namespace = object.namespace().unwrap_or_default();
                let key = (kind.clone(), namespace.clone(), object.name_any());
                if !self.said.contains(&key) {
                    let note = format!(
                        "{kind} {namespace}/{} is read but not enforced: the mesh does not implement {kind}",
                        object.name_any()
                    );
                    warn!("{note}");
                    let event = Event {
                        type_: EventType::Warning,
                        reason: "NotEnforced".to_owned(),
                        note: Some(note),
                        action: "Read".to_owned(),
                        secondary: None,
                    };
                    if let Err(err) = recorder.publish(&event, &object.object_ref(ar)).await {
                        warn!(kind, "cannot publish an Event about the object: {err}");
                    }
                }
                current.insert(key);
            }
        }
        self.said = current;
    }
}
