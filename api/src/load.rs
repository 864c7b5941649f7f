//! Loading config from YAML and JSON: files, directories and stdin, one or many documents each.
//!
//! Every error names the file, the document (1-based) and the line, and loading goes on after a
//! bad document so that one run reports all of them. Kinds the mesh does not read are reported,
//! never skipped silently, except by the mixed loads ([`load_path_mixed`] and friends), which
//! read manifests as `kubectl apply` takes them: there the workloads, service accounts and
//! config maps that checks need are typed ([`KubeObject`]) and other kinds are listed as
//! [`Skipped`].

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{ObjectRef, Resource};

mod decode;
mod kubernetes;
mod split;

pub(crate) use decode::parse_single;
use decode::{DocError, Input, load_document, typed};
use kubernetes::{Decoded, Kinds, document_object};
pub use kubernetes::{
    KubeLoaded, KubeObject, PodTemplate, Skipped, load_path_mixed, load_reader_mixed,
    load_stdin_mixed, load_str_mixed,
};
pub use split::yaml_documents;
use split::{Format, split_json, split_yaml};

/// Where an object was read: file (or `<stdin>`), document number and first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file, or `<stdin>`.
    pub file: String,
    /// The document within the file, from 1.
    pub document: usize,
    /// The line the document starts on, from 1.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} (document {})", self.file, self.line, self.document)
    }
}

/// An object and where it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// File, document and line the object came from, for error messages about it.
    pub origin: Origin,
    /// The object, decoded into its kind's type.
    pub resource: Resource,
}

/// A document (or file) that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    /// The file, or `<stdin>`.
    pub file: String,
    /// The document within the file, from 1 (absent when the whole file failed).
    pub document: Option<usize>,
    /// The line of the problem, from 1 (absent when unknown).
    pub line: Option<usize>,
    /// The column of the problem, from 1 (absent when unknown).
    pub column: Option<usize>,
    /// The problem itself; the fields above say where it is.
    pub kind: LoadErrorKind,
    /// The object the document describes, when its kind and name could be read.
    pub object: Option<ObjectRef>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(document) = self.document {
            write!(f, ": document {document}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// What went wrong while loading.
#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    /// The file or directory could not be read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// Not valid YAML or JSON.
    #[error("invalid {format}: {message}")]
    Syntax {
        /// `YAML` or `JSON`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// `apiVersion` or `kind` is missing.
    #[error("missing {0}: every object needs apiVersion and kind")]
    MissingTypeField(&'static str),
    /// A kind the mesh does not read.
    #[error("kind {kind} ({api_version}) is not a kind the mesh reads: expected one of {}", KNOWN_KINDS.join(", "))]
    UnknownKind {
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
    },
    /// A known kind under an `apiVersion` that does not serve it.
    #[error("{kind} is not served by apiVersion {api_version}: use {expected}")]
    WrongApiVersion {
        /// The document's `kind`.
        kind: String,
        /// The document's `apiVersion`.
        api_version: String,
        /// The versions that serve the kind.
        expected: String,
    },
    /// An Istio kind the mesh reads but does not implement: reported as a warning, never
    /// silently dropped, and not an error for the rest of its file.
    #[error("{kind} {object} is read but not enforced: the mesh does not implement {kind}")]
    NotEnforced {
        /// The kind (`EnvoyFilter`).
        kind: String,
        /// `namespace/name`, or the name.
        object: String,
    },
    /// A part of an object the mesh reads but does not enforce (a Telemetry's `metrics`): the
    /// object itself loads, and this is a warning.
    #[error("{kind} {object}: {field} is read but not enforced")]
    NotEnforcedField {
        /// The kind (`Telemetry`).
        kind: &'static str,
        /// `namespace/name`, or the name.
        object: String,
        /// The field (`spec.metrics`).
        field: &'static str,
    },
    /// A field that does not fit the schema (unknown field, wrong type); the path is empty for
    /// the object as a whole.
    #[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Field {
        /// The field path (`spec.http[0].timeout`).
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The kinds [`load_str`] and friends understand.
pub const KNOWN_KINDS: &[&str] = &[
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "ServiceEntry",
    "WorkloadEntry",
    "Sidecar",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "Telemetry",
    "Service",
    "Namespace",
    "List",
];

/// Istio kinds the mesh reads and reports as not enforced (group, kind).
pub const NOT_ENFORCED_KINDS: &[(&str, &str)] = &[
    ("networking.istio.io", "EnvoyFilter"),
    ("networking.istio.io", "WorkloadGroup"),
    ("networking.istio.io", "ProxyConfig"),
    ("extensions.istio.io", "WasmPlugin"),
];

/// What a load produced: the objects that loaded, the errors of those that did not, and the
/// objects read but not enforced.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Objects in the order they were read.
    pub objects: Vec<Loaded>,
    /// One error per document (or file) that failed.
    pub errors: Vec<LoadError>,
    /// Objects of kinds the mesh does not implement ([`NOT_ENFORCED_KINDS`]), one warning
    /// each ([`LoadErrorKind::NotEnforced`]).
    pub warnings: Vec<LoadError>,
    /// Mixed loads only: the Kubernetes objects read for the checks that need them
    /// (workloads, service accounts, config maps).
    pub kubernetes: Vec<KubeLoaded>,
    /// Mixed loads only: objects of other kinds, read past.
    pub skipped: Vec<Skipped>,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.objects.extend(other.objects);
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
        self.kubernetes.extend(other.kubernetes);
        self.skipped.extend(other.skipped);
    }

    /// Whether nothing at all was read: no object, error, warning or skipped kind.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
            && self.errors.is_empty()
            && self.warnings.is_empty()
            && self.kubernetes.is_empty()
            && self.skipped.is_empty()
    }

    /// The objects, or every error when there was one.
    pub fn into_result(self) -> Result<Vec<Loaded>, Vec<LoadError>> {
        if self.errors.is_empty() { Ok(self.objects) } else { Err(self.errors) }
    }
}

/// Loads a file, or every `.yaml`, `.yml` and `.json` file under a directory (recursively, in
/// name order, skipping names that start with `.` such as the `..data` links of mounted
/// ConfigMaps).
pub fn load_path(path: &Path) -> LoadReport {
    load_path_with(path, Kinds::Mesh)
}

fn load_path_with(path: &Path, kinds: Kinds) -> LoadReport {
    let mut report = LoadReport::default();
    let source = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) => {
            report.errors.push(whole_file_error(&source, err.into()));
            return report;
        }
    };
    if meta.is_dir() {
        let mut files = Vec::new();
        if let Err(err) = collect_files(path, &mut files) {
            report.errors.push(whole_file_error(&source, err.into()));
        }
        files.sort();
        for file in files {
            report.merge(load_file(&file, kinds));
        }
    } else {
        report.merge(load_file(path, kinds));
    }
    report
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path)?.is_dir() {
            collect_files(&path, files)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
        {
            files.push(path);
        }
    }
    Ok(())
}

fn load_file(path: &Path, kinds: Kinds) -> LoadReport {
    let source = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let json = path.extension().is_some_and(|e| e == "json");
            load_text(&source, &text, if json { Format::Json } else { Format::Yaml }, kinds)
        }
        Err(err) => LoadReport {
            errors: vec![whole_file_error(&source, err.into())],
            ..LoadReport::default()
        },
    }
}

/// Loads standard input (YAML, or JSON when it starts with `{` or `[`).
pub fn load_stdin() -> LoadReport {
    load_reader("<stdin>", std::io::stdin().lock())
}

/// Loads everything a reader yields; `source` names it in errors.
pub fn load_reader(source: &str, reader: impl Read) -> LoadReport {
    load_reader_with(source, reader, Kinds::Mesh)
}

fn load_reader_with(source: &str, mut reader: impl Read, kinds: Kinds) -> LoadReport {
    let mut text = String::new();
    match reader.read_to_string(&mut text) {
        Ok(_) => load_str_with(source, &text, kinds),
        Err(err) => LoadReport {
            errors: vec![whole_file_error(source, err.into())],
            ..LoadReport::default()
        },
    }
}

/// Loads YAML text (JSON when it starts with `{` or `[`); `source` names it in errors.
pub fn load_str(source: &str, text: &str) -> LoadReport {
    load_str_with(source, text, Kinds::Mesh)
}

fn load_str_with(source: &str, text: &str, kinds: Kinds) -> LoadReport {
    let json = text.trim_start().starts_with(['{', '[']);
    load_text(source, text, if json { Format::Json } else { Format::Yaml }, kinds)
}

fn whole_file_error(source: &str, kind: LoadErrorKind) -> LoadError {
    LoadError {
        file: source.to_owned(),
        document: None,
        line: None,
        column: None,
        kind,
        object: None,
    }
}

fn load_text(source: &str, text: &str, format: Format, kinds: Kinds) -> LoadReport {
    let mut report = LoadReport::default();
    let (documents, stream_error) = match format {
        Format::Yaml => (split_yaml(text), None),
        Format::Json => split_json(text),
    };
    for doc in &documents {
        let origin =
            Origin { file: source.to_owned(), document: doc.index, line: doc.first_line() };
        for result in load_document(doc, kinds) {
            match result {
                Ok(Decoded::Mesh(resource)) => {
                    if let Some(kind) = not_enforced_part(&resource) {
                        report.warnings.push(LoadError {
                            file: source.to_owned(),
                            document: Some(doc.index),
                            line: Some(doc.first_line()),
                            column: None,
                            kind,
                            object: Some(resource.object_ref()),
                        });
                    }
                    report.objects.push(Loaded { origin: origin.clone(), resource })
                }
                Ok(Decoded::Kube(object)) => {
                    report.kubernetes.push(KubeLoaded { origin: origin.clone(), object })
                }
                Ok(Decoded::Skipped { api_version, kind }) => {
                    report.skipped.push(Skipped { origin: origin.clone(), api_version, kind })
                }
                Err(err) => {
                    let warning = matches!(err.kind, LoadErrorKind::NotEnforced { .. });
                    let mut err = err.into_load_error(
                        source,
                        Some(doc.index),
                        doc.line_offset,
                        doc.first_line(),
                    );
                    err.object = document_object(doc);
                    if warning { report.warnings.push(err) } else { report.errors.push(err) }
                }
            }
        }
    }
    // The documents before a JSON syntax error still count.
    if let Some(err) = stream_error {
        report.errors.push(err.into_load_error(source, Some(documents.len() + 1), 0, 1));
    }
    report
}

/// The warning for a part of an object the mesh does not enforce, if it has one.
fn not_enforced_part(resource: &Resource) -> Option<LoadErrorKind> {
    let Resource::Telemetry(t) = resource else { return None };
    if t.spec.metrics.is_empty() {
        return None;
    }
    let object = resource.object_ref();
    let object = match &object.namespace {
        Some(ns) => format!("{ns}/{}", object.name),
        None => object.name,
    };
    Some(LoadErrorKind::NotEnforcedField { kind: "Telemetry", object, field: "spec.metrics" })
}
