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

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{ObjectRef, Resource};

mod kubernetes;
mod split;

use crate::{gateway_api, networking, security, telemetry};
use kubernetes::{Decoded, Kinds, document_object};
pub use kubernetes::{
    KubeLoaded, KubeObject, PodTemplate, Skipped, load_path_mixed, load_reader_mixed,
    load_stdin_mixed, load_str_mixed,
};
pub use split::yaml_documents;
use split::{Document, Format, split_json, split_yaml};

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

/// A problem in one document, with a position relative to the document.
struct DocError {
    line: Option<usize>,
    column: Option<usize>,
    kind: LoadErrorKind,
}

impl DocError {
    fn new(kind: LoadErrorKind) -> Self {
        Self { line: None, column: None, kind }
    }

    fn json_syntax(err: &serde_json::Error) -> Self {
        let message = strip_json_position(&err.to_string());
        Self {
            line: Some(err.line()),
            column: Some(err.column()),
            kind: LoadErrorKind::Syntax { format: "JSON", message },
        }
    }

    /// `line_offset`: lines of the file before the document; `first_line`: where its content
    /// starts, reported when the error has no position of its own.
    fn into_load_error(
        self,
        source: &str,
        document: Option<usize>,
        line_offset: usize,
        first_line: usize,
    ) -> LoadError {
        LoadError {
            file: source.to_owned(),
            document,
            line: Some(self.line.map_or(first_line, |line| line + line_offset)),
            column: self.column,
            kind: self.kind,
            object: None,
        }
    }
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// serde-saphyr renders "error: line L column C: message" plus a snippet; keep the message.
fn yaml_message(err: &serde_saphyr::Error) -> String {
    let rendered = err.without_snippet().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((_, message)) => message,
        None => first,
    };
    // Parser messages repeat the position the error already carries.
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn yaml_position(err: &serde_saphyr::Error) -> (Option<usize>, Option<usize>) {
    match err.location() {
        Some(loc) if loc.line() > 0 => (
            usize::try_from(loc.line()).ok(),
            usize::try_from(loc.column()).ok().filter(|c| *c > 0),
        ),
        _ => (None, None),
    }
}

/// serde_path_to_error writes the root as `.`; errors show it as no path at all.
fn top_level(path: String) -> String {
    if path == "." { String::new() } else { path }
}

/// Deserializes a whole document into `T`, reporting the field path of the first problem.
fn typed<T: DeserializeOwned>(doc: &Document<'_>) -> Result<T, DocError> {
    match doc.format {
        Format::Yaml => {
            let mut path = None;
            let result = serde_saphyr::with_deserializer_from_str(doc.text, |de| {
                serde_path_to_error::deserialize(de).map_err(|err| {
                    path = Some(err.path().to_string());
                    err.into_inner()
                })
            });
            result.map_err(|err| {
                let (line, column) = yaml_position(&err);
                let message = yaml_message(&err);
                // The YAML parser's own errors say nothing about fields, whatever the path
                // deserialization had reached.
                let syntax = matches!(
                    err.without_snippet(),
                    serde_saphyr::Error::ExternalMessage { .. } | serde_saphyr::Error::Eof { .. }
                );
                let kind = match path {
                    Some(path) if !syntax => {
                        LoadErrorKind::Field { path: top_level(path), message }
                    }
                    _ => LoadErrorKind::Syntax { format: "YAML", message },
                };
                DocError { line, column, kind }
            })
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(doc.text);
            serde_path_to_error::deserialize(&mut de).map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                let message = strip_json_position(&inner.to_string());
                let kind = if inner.is_syntax() || inner.is_eof() {
                    LoadErrorKind::Syntax { format: "JSON", message }
                } else {
                    LoadErrorKind::Field { path: top_level(path), message }
                };
                DocError { line: Some(inner.line()), column: Some(inner.column()), kind }
            })
        }
    }
}

/// The type fields every object starts with.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeHeader {
    api_version: Option<String>,
    kind: Option<String>,
}

/// A `kind: List` (or `ServiceList`, ...) of objects, as kubectl and the API server print them.
#[derive(Deserialize)]
struct List {
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

/// What an object is decoded from: a document of a file (positions known), or an item of a
/// List (positions inside it unknown; the List's line is reported).
enum Input<'a> {
    Document(&'a Document<'a>),
    Item(serde_json::Value),
}

impl Input<'_> {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, DocError> {
        match self {
            Input::Document(doc) => typed(doc).or_else(|err| {
                // An empty YAML value (`hosts:`) is a null, and so is `spec:` with nothing
                // under it; Istio and the API server read both as "not set". Decode again
                // without them, keeping the first error (it has a position) if that fails too.
                match typed::<serde_json::Value>(doc).ok().and_then(without_nulls) {
                    Some(cleaned) => from_value(cleaned).map_err(|_| err),
                    None => Err(err),
                }
            }),
            Input::Item(value) => from_value(without_nulls(value.clone()).unwrap_or(value.clone())),
        }
    }

    /// The line of a field given by its path (`spec.ports[0].prots`), found by looking for
    /// each key in turn below the previous one; for errors found after decoding.
    fn line_of(&self, path: &str) -> Option<usize> {
        let Input::Document(doc) = self else { return None };
        let lines: Vec<&str> = doc.text.lines().collect();
        let mut from = 0;
        let mut found = None;
        for key in path.split('.').map(|k| k.split('[').next().unwrap_or(k)) {
            let yaml_key = format!("{key}:");
            let json_key = format!("\"{key}\"");
            let index = lines[from..].iter().position(|line| {
                let line = line.trim_start().trim_start_matches("- ");
                line.starts_with(&yaml_key) || line.contains(&json_key)
            })?;
            found = Some(from + index);
            from += index + 1;
        }
        found.map(|index| doc.line_offset + index + 1)
    }
}

fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, DocError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = top_level(err.path().to_string());
        DocError::new(LoadErrorKind::Field { path, message: err.into_inner().to_string() })
    })
}

/// The value without its null fields and with an empty `spec` when it has none, or `None`
/// when that changes nothing.
fn without_nulls(value: serde_json::Value) -> Option<serde_json::Value> {
    fn strip(value: &mut serde_json::Value) -> bool {
        match value {
            serde_json::Value::Object(map) => {
                let before = map.len();
                map.retain(|_, v| !v.is_null());
                let mut changed = map.len() != before;
                for v in map.values_mut() {
                    changed |= strip(v);
                }
                changed
            }
            serde_json::Value::Array(items) => items.iter_mut().fold(false, |c, v| strip(v) | c),
            _ => false,
        }
    }
    let mut value = value;
    let mut changed = strip(&mut value);
    if let serde_json::Value::Object(map) = &mut value
        && !map.contains_key("spec")
    {
        map.insert("spec".to_owned(), serde_json::Value::Object(Default::default()));
        changed = true;
    }
    changed.then_some(value)
}

/// Every object of a document: one, or each item of a List or a JSON array, each loaded or
/// refused on its own.
fn load_document(doc: &Document<'_>, kinds: Kinds) -> Vec<Result<Decoded, DocError>> {
    match list_items(doc) {
        Err(err) => vec![Err(err)],
        Ok(None) => vec![
            header(doc)
                .and_then(|(api, kind)| decode_object(&Input::Document(doc), &api, &kind, kinds)),
        ],
        Ok(Some((items, defaults))) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let field = |name: &str| item.get(name).and_then(|v| v.as_str()).map(str::to_owned);
                let api = field("apiVersion").or_else(|| defaults.as_ref().map(|d| d.0.clone()));
                let kind = field("kind").or_else(|| defaults.as_ref().map(|d| d.1.clone()));
                match (api, kind) {
                    (None, _) => Err(DocError::new(LoadErrorKind::MissingTypeField("apiVersion"))),
                    (_, None) => Err(DocError::new(LoadErrorKind::MissingTypeField("kind"))),
                    (Some(api), Some(kind)) => {
                        decode_object(&Input::Item(item), &api, &kind, kinds)
                    }
                }
                .map_err(|err| prefix_items(err, i))
            })
            .collect(),
    }
}

/// The `apiVersion` and `kind` of a document.
fn header(doc: &Document<'_>) -> Result<(String, String), DocError> {
    let header: TypeHeader = typed(doc)?;
    let api_version = header
        .api_version
        .ok_or_else(|| DocError::new(LoadErrorKind::MissingTypeField("apiVersion")))?;
    let kind = header.kind.ok_or_else(|| DocError::new(LoadErrorKind::MissingTypeField("kind")))?;
    Ok((api_version, kind))
}

/// The items of a List (`List`, or `VirtualServiceList` as the API server returns it, whose
/// items may leave out the apiVersion and kind they share) or of a JSON array, with the
/// defaults for their apiVersion and kind; `None` for a single object.
#[allow(clippy::type_complexity)]
fn list_items(
    doc: &Document<'_>,
) -> Result<Option<(Vec<serde_json::Value>, Option<(String, String)>)>, DocError> {
    if doc.format == Format::Json && doc.text.starts_with('[') {
        return Ok(Some((typed(doc)?, None)));
    }
    let (api_version, kind) = header(doc)?;
    if !kind.ends_with("List") {
        return Ok(None);
    }
    let list: List = typed(doc)?;
    let defaults = kind
        .strip_suffix("List")
        .filter(|k| !k.is_empty())
        .map(|item_kind| (api_version.clone(), item_kind.to_owned()));
    Ok(Some((list.items, defaults)))
}

fn prefix_items(mut err: DocError, index: usize) -> DocError {
    if let LoadErrorKind::Field { path, .. } = &mut err.kind {
        *path = format!("items[{index}].{path}");
    } else {
        err.kind =
            LoadErrorKind::Field { path: format!("items[{index}]"), message: err.kind.to_string() };
    }
    err
}

/// Decodes one object of a known kind, refusing fields the types would silently drop. A mixed
/// load also reads the Kubernetes kinds checks need, and skips kinds of other groups.
fn decode_object(
    input: &Input<'_>,
    api_version: &str,
    kind: &str,
    kinds: Kinds,
) -> Result<Decoded, DocError> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    if NOT_ENFORCED_KINDS.contains(&(group, kind)) {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Named {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        }
        let named: Named = input.decode().unwrap_or_default();
        let name = named.metadata.name.unwrap_or_else(|| "<unnamed>".to_owned());
        let object = match named.metadata.namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        };
        return Err(DocError::new(LoadErrorKind::NotEnforced { kind: kind.to_owned(), object }));
    }
    if kinds == Kinds::Mixed
        && let Some(object) = kubernetes::decode(input, api_version, kind)
    {
        return object.map(Decoded::Kube);
    }
    let decode = match kind_of(api_version, kind) {
        Ok(decode) => decode,
        Err(_) if kinds == Kinds::Mixed && !kubernetes::is_mesh_group(group) => {
            return Ok(Decoded::Skipped {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            });
        }
        Err(err) => return Err(err),
    };
    let resource = decode(input)?;
    // The Istio specs refuse unknown fields themselves; Kubernetes' own types (metadata,
    // Service, Namespace) ignore them, so a typo such as `metadata.lables` is caught here by
    // comparing what was written with what was understood.
    let written: serde_json::Value = input.decode()?;
    let understood = resource.to_json().map_err(|err| {
        DocError::new(LoadErrorKind::Syntax { format: "JSON", message: err.to_string() })
    })?;
    if let Some((path, key)) = first_dropped(&written, &understood, "") {
        return Err(DocError {
            line: input.line_of(&path),
            column: None,
            kind: LoadErrorKind::Field { path, message: format!("unknown field `{key}`") },
        });
    }
    Ok(Decoded::Mesh(resource))
}

/// The first field (path and key) present in `written` but missing from `understood`. Empty
/// values and the server-owned top-level `status` do not count.
fn first_dropped(
    written: &serde_json::Value,
    understood: &serde_json::Value,
    path: &str,
) -> Option<(String, String)> {
    use serde_json::Value;
    let is_empty = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match (written, understood) {
        (Value::Object(written), Value::Object(understood)) => {
            for (key, value) in written {
                if is_empty(value) || (path.is_empty() && key == "status") {
                    continue;
                }
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match understood.get(key) {
                    None => return Some((child, key.clone())),
                    Some(inner) => {
                        if let Some(found) = first_dropped(value, inner, &child) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }
        (Value::Array(written), Value::Array(understood)) if written.len() == understood.len() => {
            written
                .iter()
                .zip(understood)
                .enumerate()
                .find_map(|(i, (w, u))| first_dropped(w, u, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}

/// Turns a document or List item into one kind of object.
type Decode = fn(&Input<'_>) -> Result<Resource, DocError>;

/// Every kind the loader reads: name, API group (empty for core), versions, decoder.
const KINDS: &[(&str, &str, &[&str], Decode)] = &[
    ("VirtualService", networking::GROUP, networking::READ_VERSIONS, |i| {
        Ok(Resource::VirtualService(i.decode()?))
    }),
    ("DestinationRule", networking::GROUP, networking::READ_VERSIONS, |i| {
        Ok(Resource::DestinationRule(i.decode()?))
    }),
    ("Gateway", networking::GROUP, networking::READ_VERSIONS, |i| {
        Ok(Resource::Gateway(i.decode()?))
    }),
    ("ServiceEntry", networking::GROUP, networking::READ_VERSIONS, |i| {
        Ok(Resource::ServiceEntry(i.decode()?))
    }),
    ("WorkloadEntry", networking::GROUP, networking::READ_VERSIONS, |i| {
        Ok(Resource::WorkloadEntry(i.decode()?))
    }),
    ("Sidecar", networking::GROUP, networking::READ_VERSIONS, |i| {
        Ok(Resource::Sidecar(i.decode()?))
    }),
    ("PeerAuthentication", security::GROUP, security::READ_VERSIONS, |i| {
        Ok(Resource::PeerAuthentication(i.decode()?))
    }),
    ("AuthorizationPolicy", security::GROUP, security::READ_VERSIONS, |i| {
        Ok(Resource::AuthorizationPolicy(i.decode()?))
    }),
    ("RequestAuthentication", security::GROUP, security::READ_VERSIONS, |i| {
        Ok(Resource::RequestAuthentication(i.decode()?))
    }),
    ("Telemetry", telemetry::GROUP, telemetry::READ_VERSIONS, |i| {
        Ok(Resource::Telemetry(i.decode()?))
    }),
    ("Service", "", &["v1"], |i| Ok(Resource::Service(i.decode()?))),
    ("Namespace", "", &["v1"], |i| Ok(Resource::Namespace(i.decode()?))),
    ("Secret", "", &["v1"], |i| Ok(Resource::Secret(i.decode()?))),
    ("Gateway", gateway_api::GROUP, gateway_api::READ_VERSIONS, |i| {
        Ok(Resource::KubeGateway(i.decode()?))
    }),
    ("HTTPRoute", gateway_api::GROUP, gateway_api::READ_VERSIONS, |i| {
        Ok(Resource::HttpRoute(i.decode()?))
    }),
    ("GRPCRoute", gateway_api::GROUP, &["v1", "v1alpha2"], |i| {
        Ok(Resource::GrpcRoute(i.decode()?))
    }),
    ("TLSRoute", gateway_api::GROUP, gateway_api::TLS_ROUTE_VERSIONS, |i| {
        Ok(Resource::TlsRoute(i.decode()?))
    }),
    ("ReferenceGrant", gateway_api::GROUP, &["v1beta1", "v1"], |i| {
        Ok(Resource::ReferenceGrant(i.decode()?))
    }),
    ("GatewayClass", gateway_api::GROUP, gateway_api::READ_VERSIONS, |i| {
        Ok(Resource::GatewayClass(i.decode()?))
    }),
];

/// Maps `apiVersion` + `kind` to its decoder, checking that the version serves the kind.
fn kind_of(api_version: &str, kind: &str) -> Result<Decode, DocError> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let unknown = || {
        DocError::new(LoadErrorKind::UnknownKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        })
    };
    // `Gateway` is a kind of two groups (Istio's and the Gateway API's): the group picks.
    let &(_, expected_group, versions, decode) = KINDS
        .iter()
        .find(|(name, g, ..)| *name == kind && *g == group)
        .or_else(|| KINDS.iter().find(|(name, ..)| *name == kind))
        .ok_or_else(unknown)?;
    if group == expected_group && versions.contains(&version) {
        return Ok(decode);
    }
    let expected = versions
        .iter()
        .map(|v| {
            if expected_group.is_empty() {
                (*v).to_owned()
            } else {
                format!("{expected_group}/{v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" or ");
    Err(DocError::new(LoadErrorKind::WrongApiVersion {
        kind: kind.to_owned(),
        api_version: api_version.to_owned(),
        expected,
    }))
}

/// Parses one document of `T` (such as a MeshConfig), with the same error reporting as objects.
pub(crate) fn parse_single<T: DeserializeOwned>(
    source: &str,
    text: &str,
) -> Result<T, Box<LoadError>> {
    let json = text.trim_start().starts_with(['{', '[']);
    let doc = Document {
        text,
        format: if json { Format::Json } else { Format::Yaml },
        line_offset: 0,
        index: 1,
    };
    typed(&doc).map_err(|err| {
        let mut err = err.into_load_error(source, None, 0, 1);
        err.document = None;
        Box::new(err)
    })
}
