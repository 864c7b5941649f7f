//! The local mesh's processes: started inside a pod's network namespace as a given user, in a
//! process group of their own (so that Ctrl-C on `meshctl` does not reach them and `down` can
//! stop a process with its children), their output in a log file; stopped only if the pid
//! still belongs to the process that was started.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::LocalError;
use super::state::{Process, ProcessSpec};

/// A user a process runs as.
#[derive(Clone, Copy, Debug)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The proxy's user (mesh-init leaves its traffic alone).
pub const PROXY_USER: User =
    User { uid: mesh_api::ports::PROXY_UID, gid: mesh_api::ports::PROXY_GID };
/// The apps' user: `nobody`.
pub const APP_USER: User = User { uid: 65534, gid: 65534 };

/// What to start.
pub struct Spawn<'a> {
    /// What it is, for `status` and errors.
    pub role: String,
    /// The network namespace it runs in.
    pub namespace: &'a str,
    /// Whom it runs as (root when `None`).
    pub user: Option<User>,
    /// Its command line.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Where its output goes (appended).
    pub log: &'a Path,
}

/// Starts a process; returns the record `down` stops it by.
pub fn spawn(spawn: Spawn<'_>) -> Result<Process, LocalError> {
    let spec = ProcessSpec {
        namespace: spawn.namespace.to_owned(),
        user: spawn.user.map(|u| (u.uid, u.gid)),
        argv: spawn.argv,
        env: spawn.env,
    };
    start(spawn.role, spec, spawn.log)
}

/// Starts a process and records it in `state` (written at once, so that `down` finds it
/// whatever happens next); returns its record.
pub fn spawn_recorded(
    dir: &super::state::StateDir,
    state: &mut super::state::State,
    spec: Spawn<'_>,
) -> Result<Process, LocalError> {
    let process = spawn(spec)?;
    state.processes.push(process.clone());
    dir.write(state)?;
    Ok(process)
}

/// Starts the process `old` records again, the same way; returns its new record.
pub fn restart(old: &Process, grace: Duration) -> Result<Process, LocalError> {
    stop(std::slice::from_ref(old), grace);
    start(old.role.clone(), old.spec.clone(), &old.log)
}

fn start(role: String, spec: ProcessSpec, log_path: &Path) -> Result<Process, LocalError> {
    let failed = |reason: String| LocalError::Start { role: role.clone(), reason };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| failed(format!("{}: {e}", log_path.display())))?;
    // The process's user owns its log: a proxy opens `/dev/stdout` again by name (Envoy's
    // file access logger), which for a file is the file itself, checked against that user.
    if let Some((uid, gid)) = spec.user {
        std::os::unix::fs::fchown(&log, Some(uid), Some(gid)).map_err(|e| {
            failed(format!("{}: cannot hand it to uid {uid}: {e}", log_path.display()))
        })?;
    }
    let err = log.try_clone().map_err(|e| failed(e.to_string()))?;
    // An empty namespace is the host's own (a port forward listens there).
    let mut words: Vec<String> = Vec::new();
    if !spec.namespace.is_empty() {
        words.extend(["ip".into(), "netns".into(), "exec".into(), spec.namespace.clone()]);
    }
    let Some(program) = words.first().or(spec.argv.first()) else {
        return Err(failed("no command to run".into()));
    };
    let mut command = Command::new(program);
    command.args(words.iter().skip(1));
    if let Some((uid, gid)) = spec.user {
        command.args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
        ]);
    }
    command
        .args(spec.argv.iter().skip(usize::from(words.is_empty())))
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0);
    let child = command.spawn().map_err(|e| failed(e.to_string()))?;
    let pid = i32::try_from(child.id()).map_err(|e| failed(e.to_string()))?;
    let start_time = start_time(pid).ok_or_else(|| failed("it exited at once".into()))?;
    // The record, not the handle, is what stops it: the process outlives this command.
    drop(child);
    Ok(Process { role, pid, start_time, log: log_path.to_owned(), spec })
}

/// When process `pid` started (clock ticks since boot), if it exists and is not a zombie.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the recorded process is still running.
pub fn alive(process: &Process) -> bool {
    start_time(process.pid) == Some(process.start_time)
}

/// Stops the processes still running: SIGTERM to each one's group, SIGKILL to what is left after
/// `grace`. Returns the roles that had to be killed.
pub fn stop(processes: &[Process], grace: Duration) -> Vec<String> {
    let running: Vec<&Process> = processes.iter().filter(|p| alive(p)).collect();
    for process in &running {
        let _ = killpg(Pid::from_raw(process.pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while running.iter().any(|p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut killed = Vec::new();
    for process in running.iter().filter(|p| alive(p)) {
        let _ = killpg(Pid::from_raw(process.pid), Signal::SIGKILL);
        killed.push(process.role.clone());
    }
    killed
}

/// Kills whatever still runs in a namespace about to be deleted (processes the records missed,
/// after a crash between starting one and recording it).
pub fn kill_all(pids: &[i32]) {
    for pid in pids {
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_recorded_process_is_known_by_pid_and_start_time() {
        let me = i32::try_from(std::process::id()).unwrap();
        let started = start_time(me).unwrap();
        let spec =
            ProcessSpec { namespace: "x".into(), user: None, argv: Vec::new(), env: Vec::new() };
        let record = |start_time| Process {
            role: "me".into(),
            pid: me,
            start_time,
            log: "/dev/null".into(),
            spec: spec.clone(),
        };
        assert!(alive(&record(started)));
        // The same pid with another start time is another process: never signalled.
        assert!(!alive(&record(started + 1)));
        assert!(stop(&[record(started + 1)], Duration::ZERO).is_empty());
    }
}
