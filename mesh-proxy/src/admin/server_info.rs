//! `/server_info`: what this proxy is and how it runs, as Envoy's `envoy.admin.v3.ServerInfo`
//! JSON: `{"version":"mesh-proxy/<version>","state":"LIVE","hot_restart_version":"",
//! "command_line_options":{...},"node":{...},"uptime_current_epoch":"123s",
//! "uptime_all_epochs":"123s"}`. Every field is printed, defaults too, as Envoy prints this
//! one. There is no hot restart: both uptimes are the process's.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use serde_json::{Value, json};

use super::envoy_json::duration_text;

/// What this proxy says it is: `mesh-proxy/<crate version>`.
pub const VERSION: &str = concat!("mesh-proxy/", env!("CARGO_PKG_VERSION"));

/// The server's state, as Envoy names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Serving.
    Live,
    /// Draining: no new connections, connections open finishing.
    Draining,
    /// Before anything: waiting for its certificate.
    PreInitializing,
    /// Waiting for its first complete configuration or its listeners.
    Initializing,
}

impl State {
    /// The state of a proxy that drains or not and still waits for `pending`.
    pub fn of(draining: bool, pending: &[&str]) -> Self {
        if draining {
            Self::Draining
        } else if pending.is_empty() {
            Self::Live
        } else if pending.contains(&crate::app::CERTIFICATE_STEP) {
            Self::PreInitializing
        } else {
            Self::Initializing
        }
    }

    /// Envoy's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Live => "LIVE",
            Self::Draining => "DRAINING",
            Self::PreInitializing => "PRE_INITIALIZING",
            Self::Initializing => "INITIALIZING",
        }
    }
}

/// How the proxy was started, as much of Envoy's `CommandLineOptions` as applies.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads.
    pub concurrency: usize,
    /// How long connections get to finish when draining.
    pub drain_time: Duration,
}

/// The answer of `/server_info`.
pub fn server_info(node: &Node, state: State, uptime: Duration, options: &Options) -> Value {
    json!({
        "version": VERSION,
        "state": state.as_str(),
        "hot_restart_version": "",
        "command_line_options": {
            "concurrency": options.concurrency,
            "service_cluster": node.cluster,
            "service_node": node.id,
            "drain_time": duration_text(options.drain_time),
            "drain_strategy": "Gradual",
            "mode": "Serve",
            "disable_hot_restart": true,
            "restart_epoch": 0,
        },
        "node": super::envoy_json::to_json(node).unwrap_or_else(|e| json!({ "error": e })),
        "uptime_current_epoch": duration_text(Duration::from_secs(uptime.as_secs())),
        "uptime_all_epochs": duration_text(Duration::from_secs(uptime.as_secs())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_follows_readiness_and_drain() {
        let certificate = crate::app::CERTIFICATE_STEP;
        assert_eq!(State::of(false, &[]).as_str(), "LIVE");
        assert_eq!(State::of(true, &[]).as_str(), "DRAINING");
        assert_eq!(State::of(false, &[certificate]).as_str(), "PRE_INITIALIZING");
        assert_eq!(State::of(false, &["traffic listeners"]).as_str(), "INITIALIZING");
    }

    #[test]
    fn server_info_reads_as_envoys() {
        let node = Node {
            id: "sidecar~10.0.0.1~web-1.demo~demo.svc.cluster.local".to_owned(),
            cluster: "web.demo".to_owned(),
            ..Node::default()
        };
        let options = Options { concurrency: 2, drain_time: Duration::from_secs(45) };
        let info = server_info(&node, State::Live, Duration::from_millis(123_900), &options);
        assert_eq!(info["version"], VERSION);
        assert!(VERSION.starts_with("mesh-proxy/"));
        assert_eq!(info["state"], "LIVE");
        assert_eq!(info["uptime_current_epoch"], "123s");
        assert_eq!(info["uptime_all_epochs"], "123s");
        assert_eq!(info["hot_restart_version"], "");
        assert_eq!(info["command_line_options"]["concurrency"], 2);
        assert_eq!(info["command_line_options"]["drain_time"], "45s");
        assert_eq!(info["node"]["id"], node.id);
        assert_eq!(info["node"]["cluster"], "web.demo");
    }
}
