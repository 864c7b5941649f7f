//! Readiness from named guards: each thing a component waits for before it can do its job
//! (a certificate, a first configuration, its listeners) holds a [`Guard`]; the component is
//! ready when every guard is released, and `/ready` names what it still waits for.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

/// A component's readiness. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    // Name -> guards of that name still held. A watch channel (not a lock the async code
    // would hold) so handlers read it without waiting and `wait` needs no polling.
    pending: Arc<watch::Sender<BTreeMap<&'static str, usize>>>,
}

/// Keeps its component not ready until released or dropped.
#[derive(Debug)]
#[must_use = "readiness is blocked only while the guard is held"]
pub struct Guard {
    ready: Ready,
    name: &'static str,
}

impl Ready {
    /// A readiness that is ready until something registers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Blocks readiness until the returned guard is released; `name` says what it waits for.
    pub fn register(&self, name: &'static str) -> Guard {
        self.pending.send_modify(|pending| *pending.entry(name).or_default() += 1);
        Guard { ready: self.clone(), name }
    }

    /// Whether every guard has been released.
    pub fn is_ready(&self) -> bool {
        self.pending.borrow().is_empty()
    }

    /// What readiness still waits for, sorted.
    pub fn pending(&self) -> Vec<&'static str> {
        self.pending.borrow().keys().copied().collect()
    }

    /// Returns once ready.
    pub async fn wait(&self) {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(BTreeMap::is_empty).await;
    }

    /// The answer of a `/ready` endpoint: 200 `ready`, or 503 naming what is pending.
    pub fn response(&self) -> (http::StatusCode, String) {
        let pending = self.pending();
        if pending.is_empty() {
            (http::StatusCode::OK, "ready\n".to_owned())
        } else {
            (http::StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", pending.join(", ")))
        }
    }
}

impl Guard {
    /// Releases the guard: what it stood for is done.
    pub fn release(self) {}

    /// Keeps the component not ready for the rest of the process's life (a draining
    /// component must not turn ready again).
    pub fn hold_forever(self) {
        std::mem::forget(self);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.ready.pending.send_modify(|pending| {
            if let Some(count) = pending.get_mut(self.name) {
                *count -= 1;
                if *count == 0 {
                    pending.remove(self.name);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_when_every_guard_is_released() {
        let ready = Ready::new();
        assert!(ready.is_ready());
        let certificate = ready.register("workload certificate");
        let config = ready.register("first configuration");
        let config_too = ready.register("first configuration");
        assert_eq!(ready.pending(), ["first configuration", "workload certificate"]);
        let (status, body) = ready.response();
        assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: first configuration, workload certificate\n");

        let waiter = tokio::spawn({
            let ready = ready.clone();
            async move { ready.wait().await }
        });
        certificate.release();
        drop(config);
        assert_eq!(ready.pending(), ["first configuration"]);
        assert!(!waiter.is_finished());
        config_too.release();
        waiter.await.unwrap();
        assert_eq!(ready.response(), (http::StatusCode::OK, "ready\n".to_owned()));
    }
}
