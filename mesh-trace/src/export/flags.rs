//! The flag every long-running binary takes for its own spans, and what it makes of it with
//! the standard variables.

use std::collections::BTreeMap;

use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use super::{ExportError, ExportSettings, Guard, SettingsError};

/// Where a binary sends its own spans (flatten into its flags).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TraceFlags {
    /// OTLP/gRPC collector for this process's own spans (`host:port` or `http://host:port`).
    /// Without it, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`; with
    /// none of them no spans are exported. The other `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*`
    /// variables are read too.
    #[arg(long = "otlp-endpoint", env = "MESH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Why a binary's tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TraceSetupError {
    /// The settings are wrong.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The exporter did not start.
    #[error(transparent)]
    Export(#[from] ExportError),
}

impl TraceFlags {
    /// The export settings of a process named `service_name`, from the flag and `env` (the
    /// process's environment, read once by the caller); `None` when nothing names a collector.
    pub fn settings(
        &self,
        service_name: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Option<ExportSettings>, SettingsError> {
        ExportSettings::from_env(self.otlp_endpoint.as_deref(), service_name, env)
    }

    /// The exporting layer and its guard, when a collector is named (see [`super::layer()`]).
    /// Needs a tokio runtime.
    #[allow(clippy::type_complexity)]
    pub fn layer<S>(
        &self,
        service_name: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Option<(Box<dyn Layer<S> + Send + Sync>, Guard)>, TraceSetupError>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        match self.settings(service_name, env)? {
            Some(settings) => Ok(Some(super::layer(&settings)?)),
            None => Ok(None),
        }
    }
}
