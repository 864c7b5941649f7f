//! How one document becomes typed objects: its type header, a `List`'s items, the kind's
//! decoder, and errors that say where in the document and which field (what [`super`] reads
//! files and splits documents for).

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::kubernetes::{self, Decoded, Kinds};
use super::split::{Document, Format};
use super::{LoadError, LoadErrorKind, NOT_ENFORCED_KINDS};
use crate::Resource;
use crate::{gateway_api, networking, security, telemetry};

/// A problem in one document, with a position relative to the document.
pub(super) struct DocError {
    pub(super) line: Option<usize>,
    pub(super) column: Option<usize>,
    pub(super) kind: LoadErrorKind,
}

impl DocError {
    pub(super) fn new(kind: LoadErrorKind) -> Self {
        Self { line: None, column: None, kind }
    }

    pub(super) fn json_syntax(err: &serde_json::Error) -> Self {
        let message = strip_json_position(&err.to_string());
        Self {
            line: Some(err.line()),
            column: Some(err.column()),
            kind: LoadErrorKind::Syntax { format: "JSON", message },
        }
    }

    /// `line_offset`: lines of the file before the document; `first_line`: where its content
    /// starts, reported when the error has no position of its own.
    pub(super) fn into_load_error(
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
pub(super) fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// serde-saphyr renders "error: line L column C: message" plus a snippet; keep the message.
pub(super) fn yaml_message(err: &serde_saphyr::Error) -> String {
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

pub(super) fn yaml_position(err: &serde_saphyr::Error) -> (Option<usize>, Option<usize>) {
    match err.location() {
        Some(loc) if loc.line() > 0 => (
            usize::try_from(loc.line()).ok(),
            usize::try_from(loc.column()).ok().filter(|c| *c > 0),
        ),
        _ => (None, None),
    }
}

/// serde_path_to_error writes the root as `.`; errors show it as no path at all.
pub(super) fn top_level(path: String) -> String {
    if path == "." { String::new() } else { path }
}

/// Deserializes a whole document into `T`, reporting the field path of the first problem.
pub(super) fn typed<T: DeserializeOwned>(doc: &Document<'_>) -> Result<T, DocError> {
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
pub(super) struct TypeHeader {
    api_version: Option<String>,
    kind: Option<String>,
}

/// A `kind: List` (or `ServiceList`, ...) of objects, as kubectl and the API server print them.
#[derive(Deserialize)]
pub(super) struct List {
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

/// What an object is decoded from: a document of a file (positions known), or an item of a
/// List (positions inside it unknown; the List's line is reported).
pub(super) enum Input<'a> {
    Document(&'a Document<'a>),
    Item(serde_json::Value),
}

impl Input<'_> {
    pub(super) fn decode<T: DeserializeOwned>(&self) -> Result<T, DocError> {
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
    pub(super) fn line_of(&self, path: &str) -> Option<usize> {
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

pub(super) fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, DocError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = top_level(err.path().to_string());
        DocError::new(LoadErrorKind::Field { path, message: err.into_inner().to_string() })
    })
}

/// The value without its null fields and with an empty `spec` when it has none, or `None`
/// when that changes nothing.
pub(super) fn without_nulls(value: serde_json::Value) -> Option<serde_json::Value> {
    pub(super) fn strip(value: &mut serde_json::Value) -> bool {
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
pub(super) fn load_document(doc: &Document<'_>, kinds: Kinds) -> Vec<Result<Decoded, DocError>> {
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
pub(super) fn header(doc: &Document<'_>) -> Result<(String, String), DocError> {
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
pub(super) fn list_items(
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

pub(super) fn prefix_items(mut err: DocError, index: usize) -> DocError {
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
pub(super) fn decode_object(
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
pub(super) fn first_dropped(
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
pub(super) type Decode = fn(&Input<'_>) -> Result<Resource, DocError>;

/// Every kind the loader reads: name, API group (empty for core), versions, decoder.
pub(super) const KINDS: &[(&str, &str, &[&str], Decode)] = &[
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
pub(super) fn kind_of(api_version: &str, kind: &str) -> Result<Decode, DocError> {
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
