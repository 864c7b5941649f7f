//! Rendering a chart as `helm template` does: every file under `templates/` parsed into one set
//! (so any file's `define` can be included from any other), then each manifest file run with
//! Helm's built-in objects, split into YAML documents, the empty ones dropped and each of the
//! rest checked to be a Kubernetes object.

use std::fmt;

use serde_json::{Map, Value, json};

use crate::charts::{Chart, ChartFile};
use crate::template::{self, Set};
use crate::values::{Values, ValuesError};

/// Why a chart could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The chart does not exist, or its `Chart.yaml` or `values.yaml` cannot be read.
    #[error(transparent)]
    Chart(#[from] ValuesError),
    /// The cluster's version is outside the chart's `kubeVersion`.
    #[error("chart {chart} needs Kubernetes {constraint}; the cluster runs {version}")]
    KubeVersion {
        /// The chart.
        chart: String,
        /// Its `kubeVersion` constraint.
        constraint: String,
        /// The version it was rendered for.
        version: String,
    },
    /// A template cannot be parsed, or fails while it runs (a `required` value missing, a
    /// function given the wrong type, a field of a missing map).
    #[error("chart {chart}: {template}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Template {
        /// The chart.
        chart: String,
        /// The template file where it went wrong (`mesh/templates/_helpers.tpl`).
        template: String,
        /// The line in it, where the engine knows it.
        line: Option<usize>,
        /// What went wrong, and the `include`s that led there.
        reason: String,
    },
    /// A rendered document is not YAML, or not a Kubernetes object.
    #[error("chart {chart}: {template}: document {document}: {reason}")]
    Manifest {
        /// The chart.
        chart: String,
        /// The template that rendered it.
        template: String,
        /// Which document of the template's output (from 1).
        document: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// The release a chart is rendered for: Helm's `.Release`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// `.Release.Name`.
    pub name: String,
    /// `.Release.Namespace`: where the namespaced objects go.
    pub namespace: String,
    /// `.Release.Service`: `Helm` by default, also for `meshctl`, so that an object is the same
    /// whichever of the two installs it (the charts put it in the `app.kubernetes.io/managed-by`
    /// label).
    pub service: String,
    /// `.Release.Revision`.
    pub revision: u32,
    /// `.Release.IsInstall` (and not `.Release.IsUpgrade`).
    pub is_install: bool,
}

impl Release {
    /// A first install of `name` into `namespace`.
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            service: "Helm".to_owned(),
            revision: 1,
            is_install: true,
        }
    }
}

/// The Kubernetes version a chart is rendered for: `.Capabilities.KubeVersion`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeVersion {
    /// `v1.33.2` (`.Version`, `.GitVersion`).
    pub version: String,
    /// `1` (`.Major`).
    pub major: String,
    /// `33` (`.Minor`).
    pub minor: String,
}

impl KubeVersion {
    /// Reads `v1.33.2`, `1.33.2` or `1.33` (a `v` is added; a missing patch is 0); what follows
    /// a `-` or `+` is kept (`v1.30.5-gke.100`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a Kubernetes version (like v1.33.0)");
        let bare = text.trim().trim_start_matches('v');
        let end = bare.find(['-', '+']).unwrap_or(bare.len());
        let (numbers, rest) = bare.split_at(end);
        let parts: Vec<&str> = numbers.split('.').collect();
        if !(2..=3).contains(&parts.len())
            || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        let patch = parts.get(2).copied().unwrap_or("0");
        Ok(Self {
            version: format!("v{}.{}.{patch}{rest}", parts[0], parts[1]),
            major: parts[0].to_owned(),
            minor: parts[1].to_owned(),
        })
    }
}

/// What the cluster offers: Helm's `.Capabilities` (the Kubernetes version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The cluster's version.
    pub kube_version: KubeVersion,
}

impl Default for Capabilities {
    /// Kubernetes 1.33.0, the oldest the mesh supports.
    fn default() -> Self {
        Self {
            kube_version: KubeVersion {
                version: "v1.33.0".to_owned(),
                major: "1".to_owned(),
                minor: "33".to_owned(),
            },
        }
    }
}

/// One rendered Kubernetes object.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The template that rendered it (`mesh/templates/pilot/deployment.yaml`).
    pub template: String,
    /// Its YAML text, as rendered.
    pub yaml: String,
    /// The same, parsed.
    pub object: Value,
}

impl Manifest {
    fn text(&self, pointer: &str) -> &str {
        self.object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
    }

    /// Its `apiVersion`.
    pub fn api_version(&self) -> &str {
        self.text("/apiVersion")
    }

    /// Its `kind`.
    pub fn kind(&self) -> &str {
        self.text("/kind")
    }

    /// Its `metadata.name`.
    pub fn name(&self) -> &str {
        self.text("/metadata/name")
    }

    /// Its `metadata.namespace`, when it names one.
    pub fn namespace(&self) -> Option<&str> {
        self.object.pointer("/metadata/namespace").and_then(Value::as_str)
    }
}

impl fmt::Display for Manifest {
    /// As `helm template` prints it: a `# Source:` line, then the YAML.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# Source: {}", self.template)?;
        f.write_str(&self.yaml)?;
        if !self.yaml.ends_with('\n') {
            f.write_str("\n")?;
        }
        Ok(())
    }
}

/// Renders the chart in `charts/<chart>` with `values` (all of `.Values`: normally
/// [`crate::values`]' result, the chart's defaults included) for `release` on a cluster with
/// `capabilities`. As in Helm, templates named `_*` only define, `NOTES.txt` is not a manifest
/// (see [`notes`]), every other file under `templates/` renders manifests, and documents that
/// render empty (or to comments only) are dropped. The manifests come in file order, then document
/// order; [`sort_for_install`] orders them as Helm applies them.
pub fn render(
    chart: &str,
    values: &Values,
    release: &Release,
    capabilities: &Capabilities,
) -> Result<Vec<Manifest>, RenderError> {
    let (chart, set) = prepare(chart, capabilities)?;
    let mut manifests = Vec::new();
    for file in chart.templates() {
        let base = file.path.rsplit('/').next().unwrap_or(file.path);
        if base.starts_with('_') || base.ends_with("NOTES.txt") {
            continue;
        }
        let name = template_name(&chart, file);
        let text = run(&chart, &set, &name, values, release, capabilities)?;
        manifests.extend(documents(&chart, &name, &text)?);
    }
    Ok(manifests)
}

/// The chart's `templates/NOTES.txt`, rendered (what Helm prints after an install), if it has
/// one.
pub fn notes(
    chart: &str,
    values: &Values,
    release: &Release,
    capabilities: &Capabilities,
) -> Result<Option<String>, RenderError> {
    let (chart, set) = prepare(chart, capabilities)?;
    let Some(file) = chart.file("templates/NOTES.txt") else { return Ok(None) };
    let name = template_name(&chart, file);
    run(&chart, &set, &name, values, release, capabilities).map(Some)
}

/// The files of the chart's `crds/` directory, as they are (Helm installs them before the
/// templates, never templates them, and never upgrades them).
pub fn crds(chart: &str) -> Result<Vec<ChartFile>, RenderError> {
    Ok(Chart::get(chart)?.crds())
}

/// Orders manifests as Helm installs them (Namespaces, then CRDs, ServiceAccounts, RBAC,
/// ConfigMaps, Services, workloads, ... webhook configurations last), keeping the order of
/// objects of the same kind. Uninstalling goes in the reverse order.
pub fn sort_for_install(manifests: &mut [Manifest]) {
    manifests.sort_by_key(|m| {
        INSTALL_ORDER.iter().position(|k| *k == m.kind()).unwrap_or(INSTALL_ORDER.len())
    });
}

/// Helm's install order of kinds (`releaseutil.InstallOrder`); unknown kinds go last.
const INSTALL_ORDER: [&str; 38] = [
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// The chart, its kubeVersion checked, and its templates parsed into one set.
fn prepare(chart: &str, capabilities: &Capabilities) -> Result<(Chart, Set), RenderError> {
    let chart = Chart::get(chart)?;
    let constraint = &chart.metadata().kube_version;
    if !constraint.is_empty() {
        let version = &capabilities.kube_version.version;
        let fits = template::semver_matches(constraint, version).map_err(|reason| {
            RenderError::Template {
                chart: chart.metadata().name.clone(),
                template: format!("{}/Chart.yaml", chart.metadata().name),
                line: None,
                reason: format!("kubeVersion: {reason}"),
            }
        })?;
        if !fits {
            return Err(RenderError::KubeVersion {
                chart: chart.metadata().name.clone(),
                constraint: constraint.clone(),
                version: version.clone(),
            });
        }
    }
    let mut set = Set::default();
    for file in chart.templates() {
        set.add(&template_name(&chart, file), file.contents)
            .map_err(|e| template_error(&chart, e))?;
    }
    Ok((chart, set))
}

/// A template's name as Helm gives it: `<chart name>/templates/<path>`.
fn template_name(chart: &Chart, file: ChartFile) -> String {
    format!("{}/{}", chart.metadata().name, file.path)
}

fn template_error(chart: &Chart, err: template::Error) -> RenderError {
    let mut reason = err.message;
    for (file, line) in &err.included_from {
        reason.push_str(&format!(" (included from {file}:{line})"));
    }
    RenderError::Template {
        chart: chart.metadata().name.clone(),
        template: err.file,
        line: (err.line > 0).then_some(err.line),
        reason,
    }
}

/// Runs one template with Helm's built-in objects.
fn run(
    chart: &Chart,
    set: &Set,
    name: &str,
    values: &Values,
    release: &Release,
    capabilities: &Capabilities,
) -> Result<String, RenderError> {
    let metadata = chart.metadata();
    let kube = &capabilities.kube_version;
    let mut data = Map::new();
    data.insert("Values".to_owned(), values.to_json());
    data.insert(
        "Release".to_owned(),
        json!({
            "Name": release.name,
            "Namespace": release.namespace,
            "Service": release.service,
            "Revision": release.revision,
            "IsInstall": release.is_install,
            "IsUpgrade": !release.is_install,
        }),
    );
    data.insert(
        "Chart".to_owned(),
        json!({
            "Name": metadata.name,
            "Version": metadata.version,
            "AppVersion": metadata.app_version,
            "Description": metadata.description,
            "Type": metadata.chart_type,
            "KubeVersion": metadata.kube_version,
        }),
    );
    data.insert(
        "Capabilities".to_owned(),
        json!({
            "KubeVersion": {
                "Version": kube.version,
                "GitVersion": kube.version,
                "Major": kube.major,
                "Minor": kube.minor,
            },
        }),
    );
    data.insert(
        "Template".to_owned(),
        json!({"Name": name, "BasePath": format!("{}/templates", metadata.name)}),
    );
    set.execute(name, &Value::Object(data)).map_err(|e| template_error(chart, e))
}

/// Splits a template's output into documents (at `---` lines) and keeps the objects.
fn documents(chart: &Chart, template: &str, text: &str) -> Result<Vec<Manifest>, RenderError> {
    let mut docs: Vec<String> = vec![String::new()];
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            docs.push(String::new());
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
        }
    }
    let mut manifests = Vec::new();
    for (index, doc) in docs.iter().enumerate() {
        let error = |reason: String| RenderError::Manifest {
            chart: chart.metadata().name.clone(),
            template: template.to_owned(),
            document: index + 1,
            reason,
        };
        if doc.trim().is_empty() {
            continue;
        }
        let object: Value =
            serde_saphyr::from_str(doc).map_err(|e| error(format!("not YAML: {e}")))?;
        if object.is_null() {
            continue;
        }
        for (pointer, field) in
            [("/apiVersion", "apiVersion"), ("/kind", "kind"), ("/metadata/name", "metadata.name")]
        {
            if object.pointer(pointer).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(error(format!("not a Kubernetes object: no {field}")));
            }
        }
        let yaml = doc.trim_start_matches('\n').trim_end().to_owned() + "\n";
        manifests.push(Manifest { template: template.to_owned(), yaml, object });
    }
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_versions() {
        let v = KubeVersion::parse("v1.33.2").unwrap();
        assert_eq!(
            (v.version.as_str(), v.major.as_str(), v.minor.as_str()),
            ("v1.33.2", "1", "33")
        );
        assert_eq!(KubeVersion::parse("1.34").unwrap().version, "v1.34.0");
        assert_eq!(KubeVersion::parse("v1.30.5-gke.100").unwrap().version, "v1.30.5-gke.100");
        assert!(KubeVersion::parse("latest").is_err());
        assert!(KubeVersion::parse("1").is_err());
    }
}
