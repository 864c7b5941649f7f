//! The signals that stop a mesh process: SIGTERM (the kubelet, systemd) and SIGINT (Ctrl-C).

/// Which signal asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: the kubelet or systemd stopping the process.
    Terminate,
    /// SIGINT: Ctrl-C in a terminal.
    Interrupt,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        })
    }
}

/// Returns when SIGTERM or SIGINT arrives. If a handler cannot be installed, says so in the
/// log and waits for the other; if neither can, never returns (the process is stopped by
/// SIGKILL then, which needs no handler).
pub async fn shutdown() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    let (mut term, mut int) = match (term, int) {
        (Ok(term), Ok(int)) => (Some(term), Some(int)),
        (term, int) => {
            if let Err(err) = &term {
                tracing::warn!("cannot watch SIGTERM: {err}");
            }
            if let Err(err) = &int {
                tracing::warn!("cannot watch SIGINT: {err}");
            }
            (term.ok(), int.ok())
        }
    };
    tokio::select! {
        _ = recv(term.as_mut()) => Signal::Terminate,
        _ = recv(int.as_mut()) => Signal::Interrupt,
    }
}

/// The next delivery of `signal`, or never if it has no handler.
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
