//! Splitting a file into its documents: YAML at `---` markers, JSON as a stream of values,
//! each document knowing where it starts so that errors can name the line.

use super::DocError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    /// YAML, documents split at `---`.
    Yaml,
    /// JSON, a stream of values.
    Json,
}

/// One document of a file and where it starts.
pub(super) struct Document<'a> {
    pub(super) text: &'a str,
    pub(super) format: Format,
    /// Lines before the document in the file.
    pub(super) line_offset: usize,
    /// 1-based index in the file.
    pub(super) index: usize,
}

impl Document<'_> {
    /// The first line of the document with content, from 1.
    pub(super) fn first_line(&self) -> usize {
        let skipped = self
            .text
            .lines()
            .take_while(|line| {
                let line = line.trim();
                line.is_empty() || line.starts_with('#') || line.starts_with("---")
            })
            .count();
        self.line_offset + skipped + 1
    }
}

/// The documents of a YAML stream, for tools that read kinds the mesh does not type (`meshctl
/// kube-inject`): each one's 1-based index, the line its content starts on, and its text.
/// Documents with nothing but comments are left out, as kubectl leaves them.
pub fn yaml_documents(text: &str) -> Vec<(usize, usize, &str)> {
    split_yaml(text).into_iter().map(|d| (d.index, d.first_line(), d.text)).collect()
}

/// Splits YAML at `---` document markers, keeping the line each document starts on. Documents
/// with nothing but comments and blank lines are dropped, as kubectl does.
pub(super) fn split_yaml(text: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut start_line = 0;
    let mut offset = 0;
    let mut index = 0;
    let mut push = |from: usize, to: usize, line: usize| {
        let body = &text[from..to];
        let has_content = body.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#') && l != "---" && l != "..." && !l.starts_with('%')
        });
        if has_content {
            index += 1;
            documents.push(Document { text: body, format: Format::Yaml, line_offset: line, index });
        }
    };
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches(['\n', '\r']);
        let is_marker = content == "---"
            || content.strip_prefix("---").is_some_and(|rest| rest.starts_with([' ', '\t']));
        if is_marker {
            push(start, offset, start_line);
            // The marker line may carry content (`--- !tag`); keep it in the next document.
            start = offset;
            start_line = line_no;
        }
        offset += line.len();
    }
    push(start, text.len(), start_line);
    documents
}

/// Splits a stream of JSON values (objects, or arrays of objects); a syntax error ends the
/// stream, keeping the values before it.
pub(super) fn split_json(text: &str) -> (Vec<Document<'_>>, Option<DocError>) {
    let mut documents = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<serde::de::IgnoredAny>();
    let mut start = 0;
    while let Some(item) = stream.next() {
        if let Err(err) = item {
            return (documents, Some(DocError::json_syntax(&err)));
        }
        let end = stream.byte_offset();
        let body = &text[start..end];
        let leading = body.len() - body.trim_start().len();
        let line_offset = text[..start + leading].matches('\n').count();
        documents.push(Document {
            text: &text[start + leading..end],
            format: Format::Json,
            line_offset,
            index: documents.len() + 1,
        });
        start = end;
    }
    (documents, None)
}
