//! From the config sources to the published snapshot: each source puts every snapshot it reads
//! into [`Changes`] (one slot: the newest replaces one not yet taken, so the last state is never
//! lost however fast changes come), and [`debounce`] publishes them, numbered, a burst at a time.
//! [`debounce_with_mesh`] also stamps each with the current mesh config, and publishes the last
//! snapshot again when only the mesh config changed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::model::Snapshot;

/// The newest snapshot the config sources read and the debouncer has not taken yet. Putting
/// never waits and never fails; a snapshot not yet taken is replaced by the newer one, which
/// holds everything it did.
#[derive(Clone)]
pub struct Changes {
    slot: watch::Sender<Option<Snapshot>>,
}

impl Default for Changes {
    fn default() -> Self {
        Self { slot: watch::Sender::new(None) }
    }
}

impl Changes {
    /// Puts a snapshot in the slot (replacing one not yet taken).
    pub fn put(&self, snapshot: Snapshot) {
        self.slot.send_replace(Some(snapshot));
    }

    /// Waits for a snapshot and takes it out of the slot (for a stage between a source and
    /// the debouncer). `None` when nothing can be put any more.
    pub async fn next(&self) -> Option<Snapshot> {
        let mut arrivals = self.slot.subscribe();
        loop {
            if let Some(snapshot) = self.take() {
                return Some(snapshot);
            }
            // Every putter holds a clone of this; while one lives this wakes on each put.
            if arrivals.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Takes the snapshot out of the slot, if there is one.
    fn take(&self) -> Option<Snapshot> {
        let mut taken = None;
        // Taking is not a change: nobody is woken for it.
        self.slot.send_if_modified(|slot| {
            taken = slot.take();
            false
        });
        taken
    }
}

/// Publishes snapshots after `after` of quiet, or at the latest `max` after the first change of
/// a burst, numbering them. Many changes make one push, of the last state. Runs until nobody
/// reads what it publishes.
pub async fn debounce(
    changes: Changes,
    publish: watch::Sender<Arc<Snapshot>>,
    after: Duration,
    max: Duration,
) {
    let (_fixed, mesh) = watch::channel(Arc::default());
    debounce_with_mesh(changes, publish, after, max, mesh).await;
}

/// [`debounce`], each snapshot stamped with the mesh config `mesh` holds at publication (its
/// root namespace too). A change of the mesh config alone publishes the last snapshot again
/// with it, so the translation never mixes a snapshot with an older mesh config.
pub async fn debounce_with_mesh(
    changes: Changes,
    publish: watch::Sender<Arc<Snapshot>>,
    after: Duration,
    max: Duration,
    mut mesh: watch::Receiver<Arc<mesh_api::mesh::MeshConfig>>,
) {
    let mut version = publish.borrow().version;
    let mut arrivals = changes.slot.subscribe();
    if arrivals.borrow().is_some() {
        // Put before this started: a change all the same.
        arrivals.mark_changed();
    }
    let mut mesh_open = true;
    loop {
        let mut mesh_changed = false;
        tokio::select! {
            // `changes` holds a sender itself: this never fails.
            _ = arrivals.changed() => {}
            changed = mesh.changed(), if mesh_open => match changed {
                Ok(()) => mesh_changed = true,
                // Nobody changes it any more: the last value stays.
                Err(_) => mesh_open = false,
            },
            () = publish.closed() => return,
        }
        let burst_started = tokio::time::Instant::now();
        loop {
            let quiet_until = tokio::time::Instant::now() + after;
            let deadline = (burst_started + max).min(quiet_until);
            match tokio::time::timeout_at(deadline, arrivals.changed()).await {
                Ok(Ok(())) if tokio::time::Instant::now() < burst_started + max => {}
                Ok(_) | Err(_) => break,
            }
        }
        let mut latest = match changes.take() {
            Some(latest) => latest,
            None if mesh_changed && version > 0 => Snapshot::clone(&publish.borrow()),
            None => continue,
        };
        let mesh_config = mesh.borrow_and_update().clone();
        latest.root_namespace.clone_from(&mesh_config.root_namespace);
        latest.mesh_config = mesh_config;
        version += 1;
        latest.version = version;
        latest.published = Some(std::time::Instant::now());
        if publish.send(Arc::new(latest)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_snapshot_replaces_one_not_taken() {
        let changes = Changes::default();
        for i in 0..1000 {
            changes.put(Snapshot { domain: format!("d{i}"), ..Snapshot::default() });
        }
        assert_eq!(changes.take().map(|s| s.domain), Some("d999".to_owned()));
        assert!(changes.take().is_none(), "taken once");
    }

    #[tokio::test]
    async fn continuous_changes_are_published_at_most_max_apart_and_end_with_the_last() {
        let changes = Changes::default();
        // A change before the debouncer starts is not missed.
        changes.put(Snapshot { domain: "early".into(), ..Snapshot::default() });
        let (publish, mut published) = watch::channel(Arc::new(Snapshot::default()));
        let (after, max) = (Duration::from_millis(100), Duration::from_millis(300));
        tokio::spawn(debounce(changes.clone(), publish, after, max));
        published.changed().await.unwrap();
        assert_eq!(published.borrow_and_update().domain, "early");
        // A change every 10 ms (never 100 ms of quiet) for a second.
        for i in 0..100 {
            changes.put(Snapshot { domain: format!("c{i}"), ..Snapshot::default() });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        let last = published.borrow().clone();
        assert_eq!(last.domain, "c99", "the last state is published");
        // Under churn a push goes at least every `max`; without it there would be one.
        assert!(last.version >= 4, "{} pushes", last.version);
    }

    #[tokio::test]
    async fn a_new_mesh_config_publishes_the_last_snapshot_with_it() {
        let changes = Changes::default();
        let (publish, mut published) = watch::channel(Arc::new(Snapshot::default()));
        let (mesh_tx, mesh) = watch::channel(Arc::new(mesh_api::mesh::MeshConfig::default()));
        let (after, max) = (Duration::from_millis(10), Duration::from_millis(100));
        tokio::spawn(debounce_with_mesh(changes.clone(), publish, after, max, mesh));
        changes.put(Snapshot { domain: "d".into(), ..Snapshot::default() });
        published.changed().await.unwrap();
        assert_eq!(published.borrow_and_update().mesh_config.root_namespace, "mesh-system");
        let config = mesh_api::mesh::MeshConfig {
            root_namespace: "istio-system".into(),
            ..mesh_api::mesh::MeshConfig::default()
        };
        mesh_tx.send_replace(Arc::new(config));
        published.changed().await.unwrap();
        let again = published.borrow_and_update().clone();
        assert_eq!((again.version, again.domain.as_str()), (2, "d"), "the same snapshot, again");
        assert_eq!(again.root_namespace, "istio-system");
        assert_eq!(again.mesh_config.root_namespace, "istio-system");
    }
}
