//! From the config sources to the published snapshot: each source puts every snapshot it reads
//! into [`Changes`] (one slot: the newest replaces one not yet taken, so the last state is never
//! lost however fast changes come), and [`debounce`] publishes them, numbered, a burst at a time.

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
    let mut version = publish.borrow().version;
    let mut arrivals = changes.slot.subscribe();
    if arrivals.borrow().is_some() {
        // Put before this started: a change all the same.
        arrivals.mark_changed();
    }
    loop {
        tokio::select! {
            // `changes` holds a sender itself: this never fails.
            _ = arrivals.changed() => {}
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
        let Some(mut latest) = changes.take() else { continue };
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
}
