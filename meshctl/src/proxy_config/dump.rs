//! Envoy's admin `ConfigDump` JSON, read as Envoy writes it (the proto's snake_case field names)
//! and as the pilot's `/debug/config_dump` writes it (proto3 JSON's lowerCamelCase): its
//! sections, and the resources in them the tables read.

use serde_json::Value;

/// What is wrong with a config dump.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    /// The text is not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// A section the command reads is not in the dump (not Envoy's shape).
    #[error("no {0} in it")]
    Missing(&'static str),
}

/// Parses a dump's text.
pub fn parse(text: &str) -> Result<Value, DumpError> {
    serde_json::from_str(text).map_err(|e| DumpError::NotJson(e.to_string()))
}

/// A field of an object by its proto name (`dynamic_active_clusters`), in either spelling.
pub fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(name).or_else(|| object.get(&camel(name)))
}

/// A nested field (`["address", "socket_address", "port_value"]`).
pub fn path<'a>(value: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names.iter().try_fold(value, |v, name| field(v, name))
}

/// A string field; empty when missing or not a string.
pub fn text<'a>(value: &'a Value, name: &str) -> &'a str {
    field(value, name).and_then(Value::as_str).unwrap_or("")
}

/// A repeated field; empty when missing.
pub fn list<'a>(value: &'a Value, name: &str) -> &'a [Value] {
    field(value, name).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A number written as JSON writes it (a number) or as proto3 JSON writes 64-bit ones (a
/// string).
pub fn number(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// The section of the dump whose `@type` is `type.googleapis.com/envoy.admin.v3.<kind>`.
pub fn section<'a>(dump: &'a Value, kind: &'static str) -> Result<&'a Value, DumpError> {
    list(dump, "configs")
        .iter()
        .find(|c| {
            c.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.rsplit('.').next() == Some(kind))
        })
        .ok_or(DumpError::Missing(kind))
}

/// The clusters of the dump: the dynamic (active) ones, then the static ones.
pub fn clusters(dump: &Value) -> Result<Vec<&Value>, DumpError> {
    let section = section(dump, "ClustersConfigDump")?;
    Ok(entries(section, "dynamic_active_clusters", &["cluster"])
        .chain(entries(section, "static_clusters", &["cluster"]))
        .collect())
}

/// The listeners of the dump: the dynamic (active) ones, then the static ones.
pub fn listeners(dump: &Value) -> Result<Vec<&Value>, DumpError> {
    let section = section(dump, "ListenersConfigDump")?;
    Ok(entries(section, "dynamic_listeners", &["active_state", "listener"])
        .chain(entries(section, "static_listeners", &["listener"]))
        .collect())
}

/// The route configurations of the dump: the dynamic ones (RDS), then the static ones (Envoy
/// lists a connection manager's inline routes there).
pub fn route_configs(dump: &Value) -> Result<Vec<&Value>, DumpError> {
    let section = section(dump, "RoutesConfigDump")?;
    Ok(entries(section, "dynamic_route_configs", &["route_config"])
        .chain(entries(section, "static_route_configs", &["route_config"]))
        .collect())
}

/// Whether a secret is in use or still waiting for its first answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretState {
    /// Received and in use.
    Active,
    /// Asked for, not yet received.
    Warming,
}

/// The secrets of the dump (the entries, with `name` and `secret`), with their state.
pub fn secrets(dump: &Value) -> Result<Vec<(SecretState, &Value)>, DumpError> {
    let section = section(dump, "SecretsConfigDump")?;
    let of = |name, state| list(section, name).iter().map(move |e| (state, e));
    Ok(of("dynamic_active_secrets", SecretState::Active)
        .chain(of("dynamic_warming_secrets", SecretState::Warming))
        .chain(of("static_secrets", SecretState::Active))
        .collect())
}

/// The resource at `inner` of each entry of `list_name` (entries without it are skipped).
fn entries<'a>(
    section: &'a Value,
    list_name: &str,
    inner: &'a [&'a str],
) -> impl Iterator<Item = &'a Value> + 'a {
    list(section, list_name).iter().filter_map(move |entry| path(entry, inner))
}

/// `dynamic_active_clusters` as proto3 JSON names it: `dynamicActiveClusters`.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `dynamicActiveClusters` as the proto names it: `dynamic_active_clusters`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The same resource whoever wrote it: every key in the proto's spelling and every integer as a
/// string (proto3 JSON writes 64-bit integers as strings, and not every writer does), so two
/// dumps of the same configuration compare equal.
pub fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(k, v)| (if k.starts_with('@') { k.clone() } else { snake(k) }, normalize(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Value::String(n.to_string()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_spellings_of_a_field_are_read() {
        let envoy = json!({"active_state": {"listener": {"name": "a"}}});
        let pilot = json!({"activeState": {"listener": {"name": "a"}}});
        assert_eq!(path(&envoy, &["active_state", "listener", "name"]), Some(&json!("a")));
        assert_eq!(path(&pilot, &["active_state", "listener", "name"]), Some(&json!("a")));
    }

    #[test]
    fn normalized_dumps_of_one_config_are_equal() {
        let envoy = json!({"retry_policy": {"host_selection_retry_max_attempts": "5"},
            "metadata": {"filter_metadata": {"istio": {"tlsMode": "istio"}}}});
        let pilot = json!({"retryPolicy": {"hostSelectionRetryMaxAttempts": 5},
            "metadata": {"filterMetadata": {"istio": {"tlsMode": "istio"}}}});
        assert_eq!(normalize(&envoy), normalize(&pilot));
        assert_ne!(normalize(&json!({"a": 5})), normalize(&json!({"a": 6})));
    }

    #[test]
    fn a_dump_without_a_section_says_which() {
        let err = clusters(&json!({"configs": []})).unwrap_err();
        assert_eq!(err, DumpError::Missing("ClustersConfigDump"));
        assert!(err.to_string().contains("no ClustersConfigDump"), "{err}");
    }
}
