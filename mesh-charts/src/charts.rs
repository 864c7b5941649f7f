//! The charts of `charts/`, embedded at build time (see `build.rs`): each chart's files by path,
//! its `Chart.yaml`, its default values, its profiles and its CRDs.

use serde::Deserialize;

use crate::install::Profile;
use crate::values::{Values, ValuesError};

include!(concat!(env!("OUT_DIR"), "/charts.rs"));

/// One file of a chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChartFile {
    /// Its path inside the chart's directory (`templates/deployment.yaml`, `crds/x.yaml`).
    pub path: &'static str,
    /// Its text.
    pub contents: &'static str,
}

/// The fields of a `Chart.yaml` that rendering uses (the rest are Helm's packaging concern).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartMetadata {
    /// The chart's name (`.Chart.Name`; template paths start with it).
    pub name: String,
    /// The chart's version (`.Chart.Version`).
    pub version: String,
    /// The version of what it installs (`.Chart.AppVersion`; the default image tag).
    #[serde(default)]
    pub app_version: String,
    /// What the chart is.
    #[serde(default)]
    pub description: String,
    /// `application` or `library`.
    #[serde(default, rename = "type")]
    pub chart_type: String,
    /// The Kubernetes versions the chart supports (a semver constraint), checked by `render`.
    #[serde(default)]
    pub kube_version: String,
}

/// A chart embedded in this crate, named by its directory under `charts/` (`base`, `mesh`,
/// `gateway`).
#[derive(Clone, Debug)]
pub struct Chart {
    dir: &'static str,
    metadata: ChartMetadata,
    files: Vec<ChartFile>,
}

/// The directories under `charts/` that hold a chart (a `Chart.yaml`), sorted.
pub fn chart_names() -> Vec<&'static str> {
    FILES
        .iter()
        .filter_map(|(path, _)| path.strip_suffix("/Chart.yaml"))
        .filter(|d| !d.contains('/'))
        .collect()
}

impl Chart {
    /// The chart in `charts/<dir>`.
    pub fn get(dir: &str) -> Result<Chart, ValuesError> {
        let Some(&name) = chart_names().iter().find(|n| **n == dir) else {
            return Err(ValuesError::UnknownChart {
                name: dir.to_owned(),
                known: chart_names().join(", "),
            });
        };
        let prefix = format!("{name}/");
        let files: Vec<ChartFile> = FILES
            .iter()
            .filter_map(|(path, contents)| {
                path.strip_prefix(&prefix).map(|path| ChartFile { path, contents })
            })
            .collect();
        let chart_yaml = files.iter().find(|f| f.path == "Chart.yaml").map_or("", |f| f.contents);
        let metadata: ChartMetadata = serde_saphyr::from_str(chart_yaml).map_err(|e| {
            ValuesError::File { source_name: format!("{name}/Chart.yaml"), reason: e.to_string() }
        })?;
        Ok(Chart { dir: name, metadata, files })
    }

    /// The chart's directory under `charts/`.
    pub fn dir(&self) -> &'static str {
        self.dir
    }

    /// Its `Chart.yaml`.
    pub fn metadata(&self) -> &ChartMetadata {
        &self.metadata
    }

    /// Every file of the chart, sorted by path.
    pub fn files(&self) -> &[ChartFile] {
        &self.files
    }

    /// The file at `path` inside the chart.
    pub fn file(&self, path: &str) -> Option<ChartFile> {
        self.files.iter().find(|f| f.path == path).copied()
    }

    /// The files under `templates/`.
    pub fn templates(&self) -> impl Iterator<Item = ChartFile> + '_ {
        self.files.iter().filter(|f| f.path.starts_with("templates/")).copied()
    }

    /// The files under `crds/` (YAML only), sorted: Helm installs them before the templates
    /// and never templates them.
    pub fn crds(&self) -> Vec<ChartFile> {
        self.files
            .iter()
            .filter(|f| {
                f.path.starts_with("crds/")
                    && (f.path.ends_with(".yaml")
                        || f.path.ends_with(".yml")
                        || f.path.ends_with(".json"))
            })
            .copied()
            .collect()
    }

    /// The chart's `values.yaml` (no values when it has none).
    pub fn default_values(&self) -> Result<Values, ValuesError> {
        match self.file("values.yaml") {
            Some(file) => Values::from_yaml(&self.source_name(file.path), file.contents),
            None => Ok(Values::new()),
        }
    }

    /// The chart's file for `profile` (`profiles/<profile>.yaml`), if it has one.
    pub fn profile(&self, profile: Profile) -> Option<ChartFile> {
        self.file(&format!("profiles/{}.yaml", profile.name()))
    }

    /// How a file of this chart is named in errors (`charts/mesh/values.yaml`).
    pub(crate) fn source_name(&self, path: &str) -> String {
        format!("charts/{}/{path}", self.dir)
    }
}
