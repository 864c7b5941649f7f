//! The mesh config the pilot translates with (Istio's MeshConfig: telemetry providers, tracing
//! and access log defaults, the root namespace): read from a file at start, and again whenever
//! it changes (a ConfigMap's mount is replaced in place), the last valid one kept in force when
//! an edit breaks it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_api::mesh::{MeshConfig, MeshConfigError};
use tokio::sync::watch;
use tracing::{info, warn};

/// Where the chart mounts the `mesh` ConfigMap's `mesh` key into the pilot.
pub const CHART_PATH: &str = "/etc/mesh/config/mesh";

/// The file to read: the one named, else (in Kubernetes mode) the chart's mount when it exists;
/// none means Istio's defaults.
pub fn path(named: Option<&Path>, local_mode: bool) -> Option<PathBuf> {
    match named {
        Some(path) => Some(path.to_owned()),
        None if !local_mode && Path::new(CHART_PATH).is_file() => Some(PathBuf::from(CHART_PATH)),
        None => None,
    }
}

/// Reads and validates the mesh config at `path` (the defaults when there is none).
pub fn read(path: Option<&Path>) -> Result<MeshConfig, MeshConfigError> {
    match path {
        Some(path) => MeshConfig::from_file(path),
        None => Ok(MeshConfig::default()),
    }
}

/// Reads `path` every `interval` and publishes each new valid config into `tx`; a config that
/// does not read or validate is logged once and the last valid one stays. Ends when nobody
/// reads `tx`.
pub async fn watch(path: PathBuf, interval: Duration, tx: watch::Sender<Arc<MeshConfig>>) {
    let mut last_text: Option<String> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = tx.closed() => return,
        }
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || std::fs::read_to_string(&path)).await
        };
        let text = match read {
            Ok(Ok(text)) => text,
            Ok(Err(err)) => {
                if last_text.as_deref() != Some("") {
                    warn!(path = %path.display(), "cannot read the mesh config, the last one stays: {err}");
                }
                last_text = Some(String::new());
                continue;
            }
            Err(_) => continue,
        };
        if last_text.as_ref() == Some(&text) {
            continue;
        }
        last_text = Some(text.clone());
        match MeshConfig::from_yaml(&path.display().to_string(), &text) {
            Ok(config) if **tx.borrow() == config => {}
            Ok(config) => {
                info!(path = %path.display(), "mesh config changed");
                tx.send_replace(Arc::new(config));
            }
            Err(err) => warn!("{err} (the last valid mesh config stays in force)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_changed_file_is_published_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("mesh");
        std::fs::write(&file, "rootNamespace: istio-system\n").unwrap_or_else(|e| panic!("{e}"));
        let first = read(Some(&file)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.root_namespace, "istio-system");
        let (tx, mut rx) = watch::channel(Arc::new(first));
        tokio::spawn(watch(file.clone(), Duration::from_millis(10), tx));
        std::fs::write(&file, "rootNamespace: other\n").unwrap_or_else(|e| panic!("{e}"));
        rx.changed().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rx.borrow_and_update().root_namespace, "other");
        std::fs::write(&file, "rootNamespace: Not A Namespace\n").unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!rx.has_changed().unwrap_or(true), "an invalid config is not published");
        assert_eq!(rx.borrow().root_namespace, "other");
    }

    #[test]
    fn no_file_is_istio_defaults() {
        assert_eq!(path(None, true), None);
        assert_eq!(read(None).unwrap_or_else(|e| panic!("{e}")), MeshConfig::default());
    }
}
