//! Graceful shutdown as a type, after ztunnel's `drain.rs`: a [`Trigger`] starts draining and
//! waits, up to a hard deadline, for every [`Watch`] to be dropped. Servers and connections
//! hold a `Watch` for as long as they have work in flight, so "drained" means exactly "nothing
//! is left holding one".

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A new drain: the trigger for whoever decides to stop, and the first watcher to clone for
/// whoever must finish work first.
pub fn channel() -> (Trigger, Watch) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx: Arc::new(tx) }, Watch { rx })
}

/// Starts draining and waits for the watchers. Clones share one drain.
#[derive(Clone, Debug)]
pub struct Trigger {
    tx: Arc<watch::Sender<bool>>,
}

/// Held by a server or a connection while it has work; dropping it says the work is done.
#[derive(Clone, Debug)]
pub struct Watch {
    rx: watch::Receiver<bool>,
}

/// Watchers still held when the drain deadline passed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{open} still open after the drain deadline of {deadline:?}")]
pub struct DeadlinePassed {
    /// How many watchers (servers and connections) were still held.
    pub open: usize,
    /// The deadline that passed.
    pub deadline: Duration,
}

impl Trigger {
    /// Starts draining: every watcher's [`Watch::signaled`] returns from now on. Idempotent.
    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    /// Watchers held now: the servers and connections that still have work.
    pub fn open(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A new watcher of this drain (for a server started after the first).
    pub fn watch(&self) -> Watch {
        Watch { rx: self.tx.subscribe() }
    }

    /// Waits until every watcher has been dropped (whether or not draining started).
    pub async fn drained(&self) {
        self.tx.closed().await;
    }

    /// Starts draining and waits for every watcher, at most `deadline`. Past it, the error
    /// says how many were left; the caller exits regardless, as Envoy does after
    /// `--drain-time-s`.
    pub async fn drain(&self, deadline: Duration) -> Result<(), DeadlinePassed> {
        self.start();
        tokio::time::timeout(deadline, self.drained())
            .await
            .map_err(|_| DeadlinePassed { open: self.open(), deadline })
    }
}

impl Watch {
    /// Returns once draining has started (at once if it already has). The trigger being
    /// dropped counts as draining: nobody is left to say otherwise.
    pub async fn signaled(&mut self) {
        let _ = self.rx.wait_for(|draining| *draining).await;
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_when_every_watcher_is_gone() {
        let (trigger, watch) = channel();
        let mut connection = watch.clone();
        assert_eq!(trigger.open(), 2);
        assert!(!trigger.is_draining());
        let work = tokio::spawn(async move {
            connection.signaled().await;
            // Work in flight finishes, then the watcher goes.
            tokio::task::yield_now().await;
        });
        drop(watch);
        assert_eq!(trigger.drain(Duration::from_secs(5)).await, Ok(()));
        assert!(trigger.is_draining());
        work.await.unwrap();
        assert_eq!(trigger.open(), 0);
    }

    #[tokio::test]
    async fn the_deadline_says_how_many_were_left() {
        let (trigger, watch) = channel();
        let _stuck = trigger.watch();
        drop(watch);
        let err = trigger.drain(Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(err, DeadlinePassed { open: 1, deadline: Duration::from_millis(50) });
        assert_eq!(err.to_string(), "1 still open after the drain deadline of 50ms");
    }

    #[tokio::test]
    async fn a_late_watcher_sees_a_drain_already_started() {
        let (trigger, _watch) = channel();
        trigger.start();
        let mut late = trigger.watch();
        assert!(late.is_draining());
        late.signaled().await;
    }
}
