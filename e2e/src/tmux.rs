//! A terminal program driven as a person would, in a detached tmux session: keys sent with
//! `send-keys`, the screen read with `capture-pane`. Each session has a tmux server of its own
//! (`-L`), so tests running at once never race one server's exit; it is killed when the value
//! is dropped, also when a test fails.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

/// A detached tmux session running one command.
pub struct Tmux {
    session: String,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a new session of `width` x `height` cells.
    pub fn start(session: &str, command: &str, width: u16, height: u16) -> anyhow::Result<Self> {
        let out = Command::new("tmux")
            .args(["-L", session, "-f", "/dev/null", "new-session", "-d", "-s", session])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(command)
            .env("TERM", "xterm-256color")
            .output()
            .context("cannot run tmux (apt-get install tmux; `make deps` does)")?;
        ensure!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Self { session: session.to_owned() })
    }

    /// A tmux command to this session's server.
    fn tmux(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.session]);
        command
    }

    /// Sends keys, in tmux's names (`Tab`, `Enter`, `Down`, `q`, `/`).
    pub fn keys(&self, keys: &[&str]) -> anyhow::Result<()> {
        let out = self
            .tmux()
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .output()
            .context("cannot run tmux")?;
        ensure!(out.status.success(), "tmux send-keys: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// Resizes the window (the program gets SIGWINCH, as from a person's terminal).
    pub fn resize(&self, width: u16, height: u16) -> anyhow::Result<()> {
        let out = self
            .tmux()
            .args(["resize-window", "-t", &self.session])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .output()
            .context("cannot run tmux")?;
        ensure!(
            out.status.success(),
            "tmux resize-window: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The screen as text, a line per row.
    pub fn screen(&self) -> anyhow::Result<String> {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .context("cannot run tmux")?;
        ensure!(
            out.status.success(),
            "tmux capture-pane: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether the session (and so its program) is still there.
    pub fn alive(&self) -> bool {
        self.tmux()
            .args(["has-session", "-t", &self.session])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Waits until the screen satisfies `done` (a description of what is awaited for the
    /// error), at most `limit`; the screen that did.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen()?;
            if done(&screen) {
                return Ok(screen);
            }
            if Instant::now() >= deadline || !self.alive() {
                bail!("the screen never showed {what} within {limit:?}; it shows:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
        // The server exits after answering: wait (briefly) until it is gone, so a session of
        // the same name can start at once rather than meet the server on its way out.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
