//! Log setup shared by the binaries: text or JSON lines on stderr, the filter from
//! `--log-level` (or `RUST_LOG`), and a handle that changes the filter while the process runs
//! (the proxy's `/logging` endpoint).

use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The log flags every binary takes (flatten them into its own).
#[derive(Clone, Debug, clap::Args)]
pub struct LogFlags {
    /// Log filter: a level (`debug`) or per-module directives (`info,mesh_proxy=debug`).
    #[arg(long = "log-level", env = "RUST_LOG", default_value = "info")]
    pub level: String,
    /// Log line format: `text` for people, `json` (one object per line) for log collectors.
    #[arg(long = "log-format", env = "MESH_LOG_FORMAT", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl Default for LogFlags {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: Format::Text }
    }
}

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter does not parse.
    #[error("bad log filter {filter:?}: {reason}")]
    Filter {
        /// The filter given.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Logging was already set up in this process, or has gone away.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// A layer installed next to the log lines, under the same filter (the tracing exporter of
/// `mesh-trace`, so this crate needs no OpenTelemetry).
pub type ExtraLayer = Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>;

/// The subscriber the filter sits on: the registry with the extra layer, if any.
type Base = tracing_subscriber::layer::Layered<Option<ExtraLayer>, Registry>;

/// Changes the log filter of the running process.
pub struct LogHandle {
    reload: reload::Handle<EnvFilter, Base>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle").finish_non_exhaustive()
    }
}

fn filter(text: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(text)
        .map_err(|e| LogError::Filter { filter: text.to_owned(), reason: e.to_string() })
}

impl LogHandle {
    /// Replaces the filter; a filter that does not parse changes nothing.
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        let filter = filter(level)?;
        self.reload.reload(filter).map_err(|e| LogError::Install(e.to_string()))
    }
}

/// Installs the process's logger as `flags` say.
pub fn init(flags: &LogFlags) -> Result<LogHandle, LogError> {
    init_with(flags, None)
}

/// Installs the process's logger as `flags` say, with `extra` beside the log lines: it sees
/// the spans and events the filter lets through (and fields they record, such as the trace
/// ids `mesh_trace::export::record_ids` writes, which the log lines then carry).
pub fn init_with(flags: &LogFlags, extra: Option<ExtraLayer>) -> Result<LogHandle, LogError> {
    let (filter, reload) = reload::Layer::new(filter(&flags.level)?);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match flags.format {
        Format::Text => lines.boxed(),
        Format::Json => lines.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(extra)
        .with(filter)
        .with(lines)
        .try_init()
        .map_err(|e| LogError::Install(e.to_string()))?;
    Ok(LogHandle { reload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_refused_with_what_was_given() {
        let err = filter("info,=[").unwrap_err();
        assert!(err.to_string().starts_with("bad log filter \"info,=[\""), "{err}");
    }
}
