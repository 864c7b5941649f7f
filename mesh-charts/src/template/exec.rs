//! Execution: a parsed template run on a value, with Go's `text/template` semantics (truth,
//! variables and their scopes, `range` over lists, maps in key order and integers, `break` and
//! `continue`, fields of maps, a missing key as nil, short-circuit `and` and `or`).

use serde_json::Value;

use super::format;
use super::funcs::{self, FuncError};
use super::parse::{Cmd, Control, Node, Operand, Pipe};
use super::{Error, Set};

/// How deep `include`, `template` and `tpl` may nest (Helm stops at 1000; a chart that nests
/// this deep is recursing by mistake).
const MAX_DEPTH: usize = 100;

/// What a walk over nodes ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Normal,
    Break,
    Continue,
}

/// One execution of one template: its variables, and the set it can call into.
pub(crate) struct Exec<'a> {
    set: &'a Set,
    /// The file the running template came from, for errors.
    file: &'a str,
    vars: Vec<(String, Value)>,
    depth: usize,
    /// The line of the action being run, for errors of the functions it calls.
    line: usize,
}

impl<'a> Exec<'a> {
    /// An execution of a template from `file` with `$` and dot set to `data`.
    pub(crate) fn new(set: &'a Set, file: &'a str, data: &Value, depth: usize) -> Self {
        Self { set, file, vars: vec![("$".to_owned(), data.clone())], depth, line: 0 }
    }

    fn error(&self, line: usize, message: impl Into<String>) -> Error {
        Error {
            file: self.file.to_owned(),
            line,
            message: message.into(),
            included_from: Vec::new(),
        }
    }

    /// Runs `nodes` with `dot`, writing to `out`.
    pub(crate) fn walk(
        &mut self,
        dot: &Value,
        nodes: &[Node],
        out: &mut String,
    ) -> Result<Flow, Error> {
        for node in nodes {
            let flow = match node {
                Node::Text(text) => {
                    out.push_str(text);
                    Flow::Normal
                }
                Node::Action { pipe, .. } => {
                    let value = self.pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        out.push_str(&format::print(&value));
                    }
                    Flow::Normal
                }
                Node::If(control) => self.walk_if(dot, control, false, out)?,
                Node::With(control) => self.walk_if(dot, control, true, out)?,
                Node::Range(control) => self.walk_range(dot, control, out)?,
                Node::Template { line, name, pipe } => {
                    let data = match pipe {
                        Some(pipe) => self.pipeline(dot, pipe)?,
                        None => Value::Null,
                    };
                    self.line = *line;
                    let text = self.call_template(name, &data)?;
                    out.push_str(&text);
                    Flow::Normal
                }
                Node::Break => Flow::Break,
                Node::Continue => Flow::Continue,
            };
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    /// `if` and `with`: the body when the pipeline's value is true (run on that value for
    /// `with`, on the same dot for `if`), else the `else` branch on the same dot.
    fn walk_if(
        &mut self,
        dot: &Value,
        control: &Control,
        with: bool,
        out: &mut String,
    ) -> Result<Flow, Error> {
        let mark = self.vars.len();
        let value = self.pipeline(dot, &control.pipe)?;
        let flow = if truth(&value) {
            self.walk(if with { &value } else { dot }, &control.body, out)
        } else if let Some(otherwise) = &control.otherwise {
            self.walk(dot, otherwise, out)
        } else {
            Ok(Flow::Normal)
        };
        self.vars.truncate(mark);
        flow
    }

    fn walk_range(
        &mut self,
        dot: &Value,
        control: &Control,
        out: &mut String,
    ) -> Result<Flow, Error> {
        let mark = self.vars.len();
        let value = self.pipeline(dot, &control.pipe)?;
        let items: Vec<(Value, Value)> = match &value {
            Value::Array(items) => {
                items.iter().enumerate().map(|(i, v)| (Value::from(i), v.clone())).collect()
            }
            Value::Object(map) => {
                map.iter().map(|(k, v)| (Value::from(k.clone()), v.clone())).collect()
            }
            Value::Number(n) if !n.is_f64() => {
                if control.pipe.decl.len() > 1 {
                    return Err(
                        self.error(control.line, "can't use two variables ranging over an integer")
                    );
                }
                let count = n.as_i64().unwrap_or_default();
                (0..count).map(|i| (Value::from(i), Value::from(i))).collect()
            }
            Value::Null => Vec::new(),
            other => {
                return Err(self.error(
                    control.line,
                    format!("range can't iterate over {}", format::go_v(other)),
                ));
            }
        };
        let mut flow = Ok(Flow::Normal);
        for (key, item) in &items {
            let inner = self.vars.len();
            match control.pipe.decl.as_slice() {
                [one] => self.set_var(one, item.clone()),
                [k, v] => {
                    self.set_var(k, key.clone());
                    self.set_var(v, item.clone());
                }
                _ => {}
            }
            let result = self.walk(item, &control.body, out);
            self.vars.truncate(inner);
            match result {
                Ok(Flow::Break) => break,
                Ok(_) => {}
                Err(err) => {
                    flow = Err(err);
                    break;
                }
            }
        }
        if flow.is_ok()
            && items.is_empty()
            && let Some(otherwise) = &control.otherwise
        {
            flow = self.walk(dot, otherwise, out);
        }
        self.vars.truncate(mark);
        flow.map(|_| Flow::Normal)
    }

    /// Sets the innermost variable called `name` (declared by the range's pipeline).
    fn set_var(&mut self, name: &str, value: Value) {
        if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            slot.1 = value;
        }
    }

    /// Runs a named template (`template`, `include`) with `data` as its dot and `$`.
    pub(crate) fn call_template(&self, name: &str, data: &Value) -> Result<String, Error> {
        let Some(template) = self.set.get(name) else {
            return Err(self.error(self.line, format!("no template {name:?}")));
        };
        if self.depth >= MAX_DEPTH {
            return Err(self.error(
                self.line,
                format!("templates nest deeper than {MAX_DEPTH} calling {name:?}"),
            ));
        }
        let mut exec = Exec::new(self.set, &template.file, data, self.depth + 1);
        let mut out = String::new();
        exec.walk(data, &template.nodes, &mut out)
            .map_err(|e| e.included_from(self.file, self.line))?;
        Ok(out)
    }

    /// Parses `text` as a template and runs it with `data` (Helm's `tpl`).
    pub(crate) fn run_text(&self, text: &str, data: &Value) -> Result<String, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(
                self.error(self.line, format!("templates nest deeper than {MAX_DEPTH} in tpl"))
            );
        }
        let parsed = super::parse_text(text).map_err(|e| {
            self.error(self.line, format!("tpl: line {} of the text: {}", e.line, e.message))
        })?;
        if !parsed.defines.is_empty() {
            return Err(self.error(self.line, "tpl: define inside the text is not supported"));
        }
        let mut exec = Exec::new(self.set, self.file, data, self.depth + 1);
        let mut out = String::new();
        exec.walk(data, &parsed.main, &mut out).map_err(|e| {
            let inner = Error { file: "the text".to_owned(), ..e };
            self.error(self.line, format!("tpl: {inner}"))
        })?;
        Ok(out)
    }

    fn pipeline(&mut self, dot: &Value, pipe: &Pipe) -> Result<Value, Error> {
        let mut value = None;
        for cmd in &pipe.cmds {
            value = Some(self.command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Value::Null);
        for name in &pipe.decl {
            if pipe.assign {
                self.set_var(name, value.clone());
            } else {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn command(&mut self, dot: &Value, cmd: &Cmd, piped: Option<Value>) -> Result<Value, Error> {
        match cmd.args.as_slice() {
            [Operand::Func(name), args @ ..] => self.call(dot, cmd.line, name, args, piped),
            [single] if piped.is_none() => {
                if *single == Operand::Nil {
                    return Err(self.error(cmd.line, "nil is not a command"));
                }
                self.operand(dot, cmd.line, single)
            }
            [first, ..] => Err(self.error(
                cmd.line,
                format!("can't give argument to non-function {}", describe(first)),
            )),
            [] => Err(self.error(cmd.line, "empty command")),
        }
    }

    fn call(
        &mut self,
        dot: &Value,
        line: usize,
        name: &str,
        args: &[Operand],
        piped: Option<Value>,
    ) -> Result<Value, Error> {
        // `and` and `or` stop at the first argument that decides, as Go's do.
        if name == "and" || name == "or" {
            let count = args.len() + usize::from(piped.is_some());
            if count == 0 {
                return Err(self.error(
                    line,
                    format!("wrong number of args for {name}: want at least 1 got 0"),
                ));
            }
            let mut last = Value::Null;
            for arg in args {
                last = self.operand(dot, line, arg)?;
                if truth(&last) == (name == "or") {
                    return Ok(last);
                }
            }
            return Ok(piped.unwrap_or(last));
        }
        let mut values = Vec::with_capacity(args.len() + 1);
        for arg in args {
            values.push(self.operand(dot, line, arg)?);
        }
        values.extend(piped);
        self.line = line;
        let Some(function) = funcs::lookup(name) else {
            return Err(self.error(line, format!("function {name:?} not defined")));
        };
        function(self, values).map_err(|err| match err {
            FuncError::Call(message) => {
                self.error(line, format!("error calling {name}: {message}"))
            }
            FuncError::Fail(message) => self.error(line, message),
            FuncError::Nested(inner) => inner,
        })
    }

    fn operand(&mut self, dot: &Value, line: usize, operand: &Operand) -> Result<Value, Error> {
        match operand {
            Operand::Dot => Ok(dot.clone()),
            Operand::Nil => Ok(Value::Null),
            Operand::Bool(b) => Ok(Value::Bool(*b)),
            Operand::Num(n) => Ok(Value::Number(n.clone())),
            Operand::Str(s) => Ok(Value::String(s.clone())),
            Operand::Field(fields) => self.fields(line, dot.clone(), fields, "."),
            Operand::Var(name, fields) => {
                let value = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| self.error(line, format!("undefined variable {name:?}")))?;
                self.fields(line, value, fields, name)
            }
            Operand::Func(name) => self.call(dot, line, name, &[], None),
            Operand::Sub(pipe, fields) => {
                let value = self.pipeline(dot, pipe)?;
                self.fields(line, value, fields, "(...)")
            }
        }
    }

    /// Follows `.a.b` from `value`: a missing key is nil, a field of nil an error (as Go's
    /// `nil pointer evaluating interface {}.b`).
    fn fields(
        &self,
        line: usize,
        value: Value,
        fields: &[String],
        start: &str,
    ) -> Result<Value, Error> {
        let mut value = value;
        let mut path = start.trim_end_matches('.').to_owned();
        for field in fields {
            value = match value {
                Value::Object(mut map) => map.remove(field).unwrap_or(Value::Null),
                Value::Null => {
                    return Err(self.error(
                        line,
                        format!(
                            "nil pointer evaluating interface {{}}.{field} (at <{path}.{field}>)"
                        ),
                    ));
                }
                other => {
                    return Err(self.error(
                        line,
                        format!(
                            "can't evaluate field {field} in type {} (at <{path}.{field}>)",
                            format::go_type(&other)
                        ),
                    ));
                }
            };
            path = format!("{path}.{field}");
        }
        Ok(value)
    }
}

/// Go's truth: false, 0, nil and empty strings, lists and maps are false.
pub(crate) fn truth(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

fn describe(operand: &Operand) -> String {
    match operand {
        Operand::Dot => ".".to_owned(),
        Operand::Nil => "nil".to_owned(),
        Operand::Bool(b) => b.to_string(),
        Operand::Num(n) => n.to_string(),
        Operand::Str(s) => format!("{s:?}"),
        Operand::Field(fields) => format!(".{}", fields.join(".")),
        Operand::Var(name, fields) if fields.is_empty() => name.clone(),
        Operand::Var(name, fields) => format!("{name}.{}", fields.join(".")),
        Operand::Func(name) => name.clone(),
        Operand::Sub(..) => "(...)".to_owned(),
    }
}
