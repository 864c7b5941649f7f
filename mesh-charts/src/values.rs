//! Values as Helm layers them: the chart's `values.yaml`, then the user's values (a profile's
//! file, the `-f` files in order, merged so that maps merge and anything else replaces, then the
//! `--set` pairs parsed into the result), coalesced with the chart's so that a user's `null`
//! deletes a key of the chart's.

use serde_json::{Map, Value};

use crate::charts::Chart;
use crate::install::Profile;
use crate::strvals;

/// Why values could not be read or set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValuesError {
    /// A values file is not YAML, or not a map at its top.
    #[error("values {source_name}: {reason}")]
    File {
        /// The file's name (`values.yaml`, `profiles/demo.yaml`, a `-f` path).
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--set` expression cannot be parsed.
    #[error("--set {expression:?}: {reason}")]
    Set {
        /// The expression as given.
        expression: String,
        /// What is wrong with it (Helm's words).
        reason: String,
    },
    /// No chart of that name is embedded.
    #[error("no chart {name:?} (the charts are: {known})")]
    UnknownChart {
        /// The name asked for.
        name: String,
        /// The names there are, comma-separated.
        known: String,
    },
    /// A value the installation reads has the wrong shape.
    #[error("value {path}: {reason}")]
    Invalid {
        /// Its dotted path (`gateways.ingress.enabled`).
        path: String,
        /// What it must be.
        reason: String,
    },
    /// No profile of that name.
    #[error("no profile {name:?} (the profiles are: default, demo, minimal)")]
    UnknownProfile {
        /// The name asked for.
        name: String,
    },
}

/// The values a chart's templates see as `.Values`: a map, its numbers float64 where they came
/// from YAML (as Helm reads them) and integers where `--set` typed them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Values(Map<String, Value>);

/// A values file given by the user (`-f`): its name, for errors, and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValuesFile {
    /// Where it came from (a path, or `-` for standard input).
    pub name: String,
    /// Its YAML text.
    pub text: String,
}

/// What a user asks to change over a chart's defaults, in the order Helm applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// A profile: its file (`profiles/<name>.yaml` in the chart, when the chart has one) comes
    /// first, as if it were the first `-f` file.
    pub profile: Option<Profile>,
    /// `-f` files, later ones winning.
    pub files: Vec<ValuesFile>,
    /// `--set` expressions (`a.b=v,c[0]=w`), in order, after the files.
    pub set: Vec<String>,
    /// `--set-string` expressions: like `set`, every value kept a string; applied after `set`.
    pub set_string: Vec<String>,
}

impl Values {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Values read from YAML text as Helm reads a values file: an empty file is no values, the
    /// top must be a map, and numbers become float64s. `source_name` names the file in errors.
    pub fn from_yaml(source_name: &str, text: &str) -> Result<Self, ValuesError> {
        let error =
            |reason: String| ValuesError::File { source_name: source_name.to_owned(), reason };
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_saphyr::from_str(text).map_err(|e| error(e.to_string()))?
        };
        match value {
            Value::Null => Ok(Self::new()),
            Value::Object(mut map) => {
                map.values_mut().for_each(floats);
                Ok(Self(map))
            }
            other => {
                Err(error(format!("the top of a values file must be a map, not {}", kind(&other))))
            }
        }
    }

    /// The values as a JSON map.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The values as one JSON value (an object).
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// The value at a dotted path (`global.hub`), if there is one.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut value = self.0.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }

    /// Merges `overlay` in as Helm merges `-f` files: maps merge key by key, anything else
    /// (lists, scalars, `null`) replaces.
    pub fn merge(&mut self, overlay: &Values) {
        merge_maps(&mut self.0, &overlay.0);
    }

    /// Applies one `--set` expression (`a.b=v,list[0]=w,l={x,y}`) as Helm does.
    pub fn set(&mut self, expression: &str) -> Result<(), ValuesError> {
        strvals::parse_into(expression, &mut self.0, false)
            .map_err(|reason| ValuesError::Set { expression: expression.to_owned(), reason })
    }

    /// Applies one `--set-string` expression: like [`Values::set`], every value a string.
    pub fn set_string(&mut self, expression: &str) -> Result<(), ValuesError> {
        strvals::parse_into(expression, &mut self.0, true)
            .map_err(|reason| ValuesError::Set { expression: expression.to_owned(), reason })
    }

    /// These (user) values over `defaults` (a chart's), as Helm coalesces them: keys missing
    /// here are taken from the defaults, maps are coalesced key by key, and a `null` here
    /// deletes the default's key.
    pub fn with_defaults(mut self, defaults: &Values) -> Values {
        coalesce(&mut self.0, &defaults.0);
        self
    }

    /// The values as YAML (keys sorted, as `toYaml` writes them).
    pub fn to_yaml(&self) -> String {
        crate::template::to_yaml(&Value::Object(self.0.clone()))
    }
}

impl From<Map<String, Value>> for Values {
    fn from(map: Map<String, Value>) -> Self {
        Self(map)
    }
}

impl Overrides {
    /// The user's values for `chart`: the profile's file (if the chart has one for it), the
    /// files, then the `--set` expressions; without the chart's defaults.
    pub fn user_values(&self, chart: &Chart) -> Result<Values, ValuesError> {
        let mut values = Values::new();
        if let Some(profile) = self.profile
            && let Some(file) = chart.profile(profile)
        {
            values.merge(&Values::from_yaml(&chart.source_name(file.path), file.contents)?);
        }
        for file in &self.files {
            values.merge(&Values::from_yaml(&file.name, &file.text)?);
        }
        for expression in &self.set {
            values.set(expression)?;
        }
        for expression in &self.set_string {
            values.set_string(expression)?;
        }
        Ok(values)
    }
}

/// The values `chart`'s templates see with `overrides`: its `values.yaml` under the user's.
pub fn values(chart: &str, overrides: &Overrides) -> Result<Values, ValuesError> {
    let chart = Chart::get(chart)?;
    Ok(overrides.user_values(&chart)?.with_defaults(&chart.default_values()?))
}

/// Helm reads values through JSON: every number is a float64.
fn floats(value: &mut Value) {
    match value {
        Value::Number(n) if !n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if let Some(number) = serde_json::Number::from_f64(f) {
                *n = number;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(floats),
        Value::Object(map) => map.values_mut().for_each(floats),
        _ => {}
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Helm's `mergeMaps`.
fn merge_maps(base: &mut Map<String, Value>, overlay: &Map<String, Value>) {
    for (key, value) in overlay {
        if let (Value::Object(over), Some(Value::Object(under))) = (value, base.get_mut(key)) {
            merge_maps(under, over);
            continue;
        }
        base.insert(key.clone(), value.clone());
    }
}

/// Helm's `coalesceValues`/`coalesceTablesFullKey`: `defaults` fill in what `values` lacks;
/// a `null` in `values` removes a key the defaults have; a table never replaces a non-table or
/// the other way round (the user's value stays).
fn coalesce(values: &mut Map<String, Value>, defaults: &Map<String, Value>) {
    for (key, default) in defaults {
        match values.get_mut(key) {
            None => {
                values.insert(key.clone(), default.clone());
            }
            Some(Value::Null) => {
                values.remove(key);
            }
            Some(Value::Object(user)) => {
                if let Value::Object(default) = default {
                    coalesce(user, default);
                }
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    fn values(value: Value) -> Values {
        match value {
            Value::Object(map) => Values(map),
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn reads_numbers_as_helm_does() {
        let v = Values::from_yaml("v.yaml", "a: 1\nb: [2, x]\nc: {d: 3.5}\n").unwrap();
        assert_eq!(v.to_json(), json!({"a": 1.0, "b": [2.0, "x"], "c": {"d": 3.5}}));
        assert!(v.get("a").is_some_and(|a| a.as_number().is_some_and(serde_json::Number::is_f64)));
        assert_eq!(Values::from_yaml("empty.yaml", "# nothing\n").unwrap(), Values::new());
        assert!(matches!(Values::from_yaml("l.yaml", "- a\n"), Err(ValuesError::File { .. })));
        assert!(matches!(Values::from_yaml("bad.yaml", "a: [\n"), Err(ValuesError::File { .. })));
    }

    #[test]
    fn merges_files_as_helm_does() {
        let mut v = values(json!({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {"f": 1}}));
        v.merge(&values(json!({"a": {"c": [3], "g": true}, "d": {"now": "map"}, "e": null})));
        assert_eq!(
            v.to_json(),
            json!({"a": {"b": 1, "c": [3], "g": true}, "d": {"now": "map"}, "e": null})
        );
    }

    #[test]
    fn coalesces_with_defaults() {
        let defaults = values(json!({
            "global": {"hub": "ghcr.io/mesh", "tag": ""},
            "pilot": {"resources": {"requests": {"cpu": "100m"}}, "env": {"A": "1"}},
            "list": [1, 2],
            "table": {"a": 1},
        }));
        let user = values(json!({
            "global": {"tag": "1.0"},
            "pilot": {"env": null},
            "list": [3],
            "table": "not a table",
            "extra": null,
        }));
        assert_eq!(
            user.with_defaults(&defaults).to_json(),
            json!({
                "global": {"hub": "ghcr.io/mesh", "tag": "1.0"},
                "pilot": {"resources": {"requests": {"cpu": "100m"}}},
                "list": [3],
                "table": "not a table",
                "extra": null,
            })
        );
    }

    #[test]
    fn set_layers_over_files() {
        let mut v =
            Values::from_yaml("f.yaml", "pilot:\n  replicaCount: 1\n  env: {A: x}\n").unwrap();
        v.set("pilot.replicaCount=3,pilot.env.B=y").unwrap();
        v.set_string("pilot.env.C=true").unwrap();
        assert_eq!(
            v.to_json(),
            json!({"pilot": {"replicaCount": 3, "env": {"A": "x", "B": "y", "C": "true"}}})
        );
        assert_eq!(
            v.set("pilot").unwrap_err(),
            ValuesError::Set {
                expression: "pilot".into(),
                reason: "key \"pilot\" has no value".into()
            }
        );
    }
}
