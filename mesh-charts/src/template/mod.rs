//! A Go `text/template` engine with Helm's function set, over `serde_json` values: what
//! renders a chart's templates here exactly as `helm template` would.
//!
//! Why not a crate: `gtmpl` (and its fork `gtmpl-ng`) would bring `thiserror` 1 beside the
//! workspace's 2 (cargo-deny refuses duplicate versions), iterates maps in hash order (so
//! output changes from run to run), and calls functions through plain `fn` pointers that cannot
//! reach the template set (`include`, `tpl`). `lithos-gotmpl-engine` adds no crate, but it is a
//! 0.1 work in progress without `define`/`template`/`block`, `else if`, `break`/`continue` or
//! `(pipeline).field`, and its run-time errors carry no position: parser features no registered
//! function can supply. So the mesh carries this engine (lexer, parser, executor, about the size
//! of the gap) and registers Helm's and Sprig's functions from Rust (`funcs`).
//!
//! Go's semantics are kept where charts can tell: numbers from values files are float64 (Helm
//! reads them through JSON), so comparing one with an integer constant fails here as it fails in
//! Helm (`eq (int .Values.x) 1` is the portable form); maps range in key order; a missing key
//! is nil and a field of nil an error. Functions that mutate a map in Go (`set`, `merge`,
//! `mergeOverwrite`, `unset`) return the changed map here: charts use their result, which means
//! the same in both.

mod exec;
mod format;
mod funcs;
mod lex;
mod parse;
mod semver;
mod yaml;

use std::collections::HashMap;

use serde_json::Value;

pub(crate) use semver::matches as semver_matches;
pub(crate) use yaml::to_yaml;

/// Why a template could not be parsed or run: where (file and line) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Error {
    /// The file the template came from (`mesh/templates/deployment.yaml`).
    pub file: String,
    /// The line in it (0 when unknown).
    pub line: usize,
    /// What went wrong.
    pub message: String,
    /// The `include`/`template` calls that led there, innermost first.
    pub included_from: Vec<(String, usize)>,
}

impl Error {
    pub(crate) fn at(line: usize, message: impl Into<String>) -> Self {
        Self { file: String::new(), line, message: message.into(), included_from: Vec::new() }
    }

    pub(crate) fn in_file(mut self, file: &str) -> Self {
        if self.file.is_empty() {
            self.file = file.to_owned();
        }
        self
    }

    pub(crate) fn included_from(mut self, file: &str, line: usize) -> Self {
        self.included_from.push((file.to_owned(), line));
        self
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.message)?,
            line => write!(f, "{}:{line}: {}", self.file, self.message)?,
        }
        for (file, line) in &self.included_from {
            write!(f, " (included from {file}:{line})")?;
        }
        Ok(())
    }
}

/// A parsed template: its file, and its nodes.
#[derive(Debug)]
pub(crate) struct Template {
    file: String,
    nodes: Vec<parse::Node>,
}

/// Templates by name: each file under its path, each `define` under its name. A later file's
/// `define` replaces an earlier one of the same name, as in Go.
#[derive(Debug, Default)]
pub(crate) struct Set {
    templates: HashMap<String, Template>,
}

/// Parses template text (with the functions of `funcs` as the known names).
fn parse_text(text: &str) -> Result<parse::Parsed, Error> {
    parse::parse(lex::lex(text)?, &funcs::is_function)
}

impl Set {
    /// Parses `source` and adds it under `file`, with what it defines.
    pub(crate) fn add(&mut self, file: &str, source: &str) -> Result<(), Error> {
        let parsed = parse_text(source).map_err(|e| e.in_file(file))?;
        for define in parsed.defines {
            self.templates
                .insert(define.name, Template { file: file.to_owned(), nodes: define.body });
        }
        self.templates
            .insert(file.to_owned(), Template { file: file.to_owned(), nodes: parsed.main });
        Ok(())
    }

    fn get(&self, name: &str) -> Option<&Template> {
        self.templates.get(name)
    }

    /// Runs the template called `name` with `data` as dot and `$`.
    pub(crate) fn execute(&self, name: &str, data: &Value) -> Result<String, Error> {
        let template = self
            .get(name)
            .ok_or_else(|| Error::at(0, format!("no template {name:?}")).in_file(name))?;
        let mut exec = exec::Exec::new(self, &template.file, data, 0);
        let mut out = String::new();
        exec.walk(data, &template.nodes, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
