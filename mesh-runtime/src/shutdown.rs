//! The one shutdown sequence of a long-running binary: wait for SIGTERM, SIGINT or a request
//! from inside (the proxy's `/quitquitquit`, a test), report not ready, drain, and stop
//! waiting at the deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::drain::{self, DeadlinePassed};
use crate::readiness::Ready;
use crate::signal::{self, Signal};

/// Asks a running component to stop, as a signal would. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    requested: Arc<watch::Sender<bool>>,
}

impl Shutdown {
    /// Asks the component to stop.
    pub fn request(&self) {
        self.requested.send_replace(true);
    }

    /// Returns once a stop was requested.
    pub async fn requested(&self) {
        let mut rx = self.requested.subscribe();
        let _ = rx.wait_for(|requested| *requested).await;
    }
}

/// What started the shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// SIGTERM or SIGINT arrived.
    Signal(Signal),
    /// Something in the process called [`Shutdown::request`] (the proxy's `/quitquitquit`, a test).
    Requested,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Signal(signal) => signal.fmt(f),
            Cause::Requested => f.write_str("shutdown requested"),
        }
    }
}

/// Waits for a signal or `shutdown`, then turns `ready` false, drains `trigger` and waits for
/// it at most `deadline`. Logs each step; the error says what was still open at the deadline.
pub async fn run(
    shutdown: &Shutdown,
    ready: &Ready,
    trigger: &drain::Trigger,
    deadline: Duration,
) -> Result<Cause, DeadlinePassed> {
    let cause = tokio::select! {
        signal = signal::shutdown() => Cause::Signal(signal),
        () = shutdown.requested() => Cause::Requested,
    };
    tracing::info!(%cause, ?deadline, "draining");
    // A draining component never turns ready again.
    ready.register("draining").hold_forever();
    trigger.drain(deadline).await?;
    tracing::info!("drained");
    Ok(cause)
}

/// Waits for a server task to fail: returns its error, or the join error if it panicked;
/// never returns if it ends well, since servers end only when draining and the drain says
/// when everything has ended. Lets `run` stop early on a failed server without cutting a
/// drain short when a server finishes first.
pub async fn failure<T, E>(
    task: tokio::task::JoinHandle<Result<T, E>>,
) -> Result<E, tokio::task::JoinError> {
    match task.await {
        Ok(Ok(_)) => std::future::pending().await,
        Ok(Err(err)) => Ok(err),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_drains_and_turns_not_ready_meanwhile() {
        let (shutdown, ready) = (Shutdown::default(), Ready::new());
        let (trigger, mut watch) = drain::channel();
        let connection = tokio::spawn({
            let ready = ready.clone();
            async move {
                watch.signaled().await;
                // While the drain waits for this connection, the component is not ready.
                let pending = ready.pending();
                drop(watch);
                pending
            }
        });
        shutdown.request();
        let cause = run(&shutdown, &ready, &trigger, Duration::from_secs(5)).await;
        assert_eq!(cause, Ok(Cause::Requested));
        assert_eq!(connection.await.unwrap(), ["draining"]);
    }
}
