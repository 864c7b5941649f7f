//! What `proxy-status POD` compares: what the pilot serves a proxy (its
//! `/debug/config_dump?proxyID=`) against what the proxy runs (its admin `/config_dump`), per
//! type, as `istioctl proxy-status POD` does. Pure: two JSON dumps in, a verdict per type out.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::proxy_config::dump::{self, DumpError, field, list, path, text};

/// The types compared: (what istioctl calls them, the dump section, its list, the resource in
/// each entry). Endpoints are not: a proxy's config dump leaves them out.
const TYPES: [(&str, &str, &str, &[&str]); 3] = [
    ("Clusters", "ClustersConfigDump", "dynamic_active_clusters", &["cluster"]),
    ("Listeners", "ListenersConfigDump", "dynamic_listeners", &["active_state", "listener"]),
    ("Routes", "RoutesConfigDump", "dynamic_route_configs", &["route_config"]),
];

/// At most this many names are listed per side; the rest are counted.
const MAX_NAMES: usize = 20;

/// The verdict for one type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeComparison {
    /// `Clusters`, `Listeners` or `Routes`.
    pub kind: &'static str,
    /// Names the pilot serves that the proxy does not run.
    pub only_pilot: Vec<String>,
    /// Names the proxy runs that the pilot does not serve.
    pub only_proxy: Vec<String>,
    /// Resources on both sides whose content differs.
    pub changed: Vec<Changed>,
}

impl TypeComparison {
    /// Whether both sides hold the same resources.
    pub fn matches(&self) -> bool {
        self.only_pilot.is_empty() && self.only_proxy.is_empty() && self.changed.is_empty()
    }
}

/// A resource both sides hold, differently: where first, and what each side has there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    /// The resource's name.
    pub name: String,
    /// The first field that differs (`filter_chains[0].filters[0].name`); empty for the whole.
    pub at: String,
    /// The pilot's value there, in short.
    pub pilot: String,
    /// The proxy's value there, in short.
    pub proxy: String,
}

/// Compares the pilot's dump for a proxy with the proxy's own dump, per type. The resources
/// are read in either spelling of their fields, with versions and times left out.
pub fn compare(pilot: &Value, proxy: &Value) -> Result<Vec<TypeComparison>, DumpError> {
    for side in [pilot, proxy] {
        if !field(side, "configs").is_some_and(Value::is_array) {
            return Err(DumpError::Missing("configs"));
        }
    }
    Ok(TYPES
        .iter()
        .map(|(kind, section, list_name, inner)| {
            let pilot = resources(pilot, section, list_name, inner);
            let proxy = resources(proxy, section, list_name, inner);
            let only = |a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>| {
                a.keys().filter(|k| !b.contains_key(*k)).cloned().collect()
            };
            let changed = pilot
                .iter()
                .filter_map(|(name, p)| {
                    let e = proxy.get(name)?;
                    let (at, pilot, proxy) = first_difference(p, e, String::new())?;
                    Some(Changed { name: name.clone(), at, pilot, proxy })
                })
                .collect();
            TypeComparison {
                kind,
                only_pilot: only(&pilot, &proxy),
                only_proxy: only(&proxy, &pilot),
                changed,
            }
        })
        .collect())
}

/// The dynamic resources of one type, by name, normalized; a missing section holds none.
fn resources(
    dump: &Value,
    section: &'static str,
    list_name: &str,
    inner: &[&str],
) -> BTreeMap<String, Value> {
    let Ok(section) = dump::section(dump, section) else { return BTreeMap::new() };
    list(section, list_name)
        .iter()
        .filter_map(|entry| {
            let resource = path(entry, inner)?;
            let name = match text(resource, "name") {
                "" => text(entry, "name"),
                name => name,
            };
            let mut normalized = dump::normalize(resource);
            if let Some(object) = normalized.as_object_mut() {
                object.remove("@type");
            }
            Some((name.to_owned(), normalized))
        })
        .collect()
}

/// Where `a` and `b` first differ (a path from `at`), and each one's value there.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<(String, String, String)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|key| {
                let here = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
                match (x.get(key), y.get(key)) {
                    (Some(v), Some(w)) => first_difference(v, w, here),
                    (v, w) => Some((here, short(v), short(w))),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            let inner = x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| first_difference(v, w, format!("{at}[{i}]")));
            inner.or_else(|| {
                (x.len() != y.len()).then(|| {
                    let count = |n: usize| format!("{n} entries");
                    (at, count(x.len()), count(y.len()))
                })
            })
        }
        _ => (a != b).then(|| (at, short(Some(a)), short(Some(b)))),
    }
}

/// A value in at most 60 characters; a string without spaces or commas as it is (numbers
/// are strings once normalized, and `"9080"` would suggest one side wrote a string).
fn short(value: Option<&Value>) -> String {
    let text = match value {
        None => return "(none)".to_owned(),
        Some(Value::String(s)) if !s.is_empty() && !s.contains([' ', ',', '"']) => s.clone(),
        Some(value) => value.to_string(),
    };
    if text.chars().count() <= 60 {
        return text;
    }
    let cut: String = text.chars().take(57).collect();
    format!("{cut}...")
}

/// The comparison as istioctl words it (`Clusters Match`, `Listeners Don't Match`), each
/// mismatch followed by the names only one side has and the first difference of each changed
/// resource.
pub fn render(comparisons: &[TypeComparison]) -> String {
    let mut out = String::new();
    for comparison in comparisons {
        if comparison.matches() {
            out.push_str(&format!("{} Match\n", comparison.kind));
            continue;
        }
        out.push_str(&format!("{} Don't Match\n", comparison.kind));
        let names = |out: &mut String, title: &str, names: &[String]| {
            if names.is_empty() {
                return;
            }
            out.push_str(&format!("  {title}:\n"));
            for name in names.iter().take(MAX_NAMES) {
                out.push_str(&format!("    {name}\n"));
            }
            if names.len() > MAX_NAMES {
                out.push_str(&format!("    ... and {} more\n", names.len() - MAX_NAMES));
            }
        };
        names(&mut out, "served by mesh-pilot, not in the proxy", &comparison.only_pilot);
        names(&mut out, "in the proxy, not served by mesh-pilot", &comparison.only_proxy);
        if !comparison.changed.is_empty() {
            out.push_str("  different in the proxy:\n");
            for changed in comparison.changed.iter().take(MAX_NAMES) {
                let at = if changed.at.is_empty() { "" } else { " at " };
                out.push_str(&format!(
                    "    {}{at}{}: mesh-pilot {}, proxy {}\n",
                    changed.name, changed.at, changed.pilot, changed.proxy
                ));
            }
            if comparison.changed.len() > MAX_NAMES {
                let more = comparison.changed.len() - MAX_NAMES;
                out.push_str(&format!("    ... and {more} more\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_difference_is_named_by_its_path() {
        let a = json!({"name": "l", "chains": [{"port": "1", "x": true}, {"port": "2"}]});
        let b = json!({"name": "l", "chains": [{"port": "1", "x": true}, {"port": "3"}]});
        assert_eq!(
            first_difference(&a, &b, String::new()),
            Some(("chains[1].port".to_owned(), "2".to_owned(), "3".to_owned()))
        );
        let c = json!({"name": "l", "chains": [{"port": "1", "x": true}]});
        assert_eq!(
            first_difference(&a, &c, String::new()),
            Some(("chains".to_owned(), "2 entries".to_owned(), "1 entries".to_owned()))
        );
        let d = json!({"name": "l"});
        assert_eq!(
            first_difference(&d, &json!({"name": "l", "extra": 1}), String::new()),
            Some(("extra".to_owned(), "(none)".to_owned(), "1".to_owned()))
        );
        assert_eq!(first_difference(&a, &a.clone(), String::new()), None);
    }

    #[test]
    fn a_dump_of_another_shape_is_not_compared() {
        let envoy = json!({"configs": []});
        let old = json!({"clusters": [], "listeners": []});
        assert_eq!(compare(&envoy, &old), Err(DumpError::Missing("configs")));
    }
}
