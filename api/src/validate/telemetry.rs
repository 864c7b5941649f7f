//! Validation of the `telemetry.istio.io` kind.

use super::{Checker, Code, Path, ValidationError};
use crate::ObjectRef;
use std::collections::BTreeMap;

use crate::telemetry::{CustomTag, ProviderRef, Telemetry, WorkloadMode, filter};

/// Validates a Telemetry: its targets, tracing rules (sampling 0 to 100, one value per custom
/// tag) and access logging rules (a filter expression of the forms the mesh compiles).
pub fn telemetry(t: &Telemetry) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(t));
    let spec = &t.spec;
    let root = Path::root("spec");
    super::security::targets(
        &mut c,
        &root,
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
    );
    for (i, tracing) in spec.tracing.iter().enumerate() {
        let path = root.field("tracing").index(i);
        mode(&mut c, &path, tracing.match_.as_ref().and_then(|m| m.mode.as_ref()));
        providers(&mut c, &path, &tracing.providers);
        if let Some(percentage) = tracing.random_sampling_percentage {
            c.percentage(&path.field("randomSamplingPercentage"), percentage);
        }
        custom_tags(&mut c, &path.field("customTags"), &tracing.custom_tags);
    }
    for (i, metrics) in spec.metrics.iter().enumerate() {
        let path = root.field("metrics").index(i);
        providers(&mut c, &path, &metrics.providers);
        for (j, o) in metrics.overrides.iter().enumerate() {
            let o_path = path.field("overrides").index(j);
            mode(&mut c, &o_path, o.match_.as_ref().and_then(|m| m.mode.as_ref()));
        }
    }
    for (i, logging) in spec.access_logging.iter().enumerate() {
        let path = root.field("accessLogging").index(i);
        mode(&mut c, &path, logging.match_.as_ref().and_then(|m| m.mode.as_ref()));
        providers(&mut c, &path, &logging.providers);
        if let Some(f) = &logging.filter {
            let expr_path = path.field("filter").field("expression");
            if f.expression.trim().is_empty() {
                c.required(&expr_path, "expression");
            } else if let Err(err) = filter::parse(&f.expression) {
                c.error(&expr_path, Code::Unsupported, err.to_string());
            }
        }
    }
    c.finish()
}

fn mode(c: &mut Checker, rule: &Path, mode: Option<&WorkloadMode>) {
    if let Some(mode) = mode {
        c.known(&rule.field("match").field("mode"), mode);
    }
}

fn providers(c: &mut Checker, rule: &Path, providers: &[ProviderRef]) {
    for (i, provider) in providers.iter().enumerate() {
        if provider.name.is_empty() {
            c.required(&rule.field("providers").index(i).field("name"), "provider name");
        }
    }
}

/// Custom span tags (a Telemetry's, or the mesh config's `defaultConfig.tracing`): each with a
/// name and exactly one value source.
pub(crate) fn custom_tags(c: &mut Checker, path: &Path, tags: &BTreeMap<String, CustomTag>) {
    for (name, tag) in tags {
        let tag_path = path.key(name);
        if name.is_empty() {
            c.required(&tag_path, "tag name");
        }
        let set = usize::from(tag.literal.is_some())
            + usize::from(tag.environment.is_some())
            + usize::from(tag.header.is_some());
        if set != 1 {
            c.error(
                &tag_path,
                if set == 0 { Code::Required } else { Code::ConflictingFields },
                "a custom tag takes exactly one of literal, environment and header",
            );
        }
        if tag.literal.as_ref().is_some_and(|l| l.value.is_empty()) {
            c.required(&tag_path.field("literal").field("value"), "value");
        }
        if tag.environment.as_ref().is_some_and(|e| e.name.is_empty()) {
            c.required(&tag_path.field("environment").field("name"), "name");
        }
        if let Some(header) = &tag.header {
            let name_path = tag_path.field("header").field("name");
            if header.name.is_empty() {
                c.required(&name_path, "name");
            } else {
                c.header_syntax(&name_path, &header.name);
            }
        }
    }
}
