//! IST0106 SchemaValidationError: what `mesh-api`'s validation refuses (the pilot and the
//! webhook refuse the same), and documents that did not load at all; MESH0001 for kinds the
//! mesh reads but does not implement, and for the parts of kinds it does not (a Telemetry's
//! `metrics`).

use mesh_api::load::{LoadError, LoadErrorKind};

use crate::context::Context;
use crate::finding::{Finding, Location, NOT_ENFORCED, SCHEMA_VALIDATION_ERROR};

pub(crate) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for loaded in &cx.input.objects {
        for err in mesh_api::validate::resource(&loaded.resource) {
            out.push(Finding::new(
                &SCHEMA_VALIDATION_ERROR,
                Some(err.object.clone()),
                Some(Location::from(&loaded.origin)),
                format!("Schema validation error: {}: {} ({})", err.path, err.reason, err.code),
            ));
        }
    }
    for err in &cx.input.errors {
        out.push(Finding::new(
            &SCHEMA_VALIDATION_ERROR,
            err.object.clone(),
            Some(location(err)),
            format!("Schema validation error: {}", err.kind),
        ));
    }
    for warning in &cx.input.not_enforced {
        let message = match &warning.kind {
            LoadErrorKind::NotEnforced { kind, .. } => {
                format!("{kind} is read but not enforced: the mesh does not implement {kind}")
            }
            LoadErrorKind::NotEnforcedField { kind, field, .. } => {
                let part = field.rsplit('.').next().unwrap_or(field);
                format!(
                    "{field} is read but not enforced: the mesh does not implement {kind} {part}"
                )
            }
            other => other.to_string(),
        };
        out.push(Finding::new(
            &NOT_ENFORCED,
            warning.object.clone(),
            Some(location(warning)),
            message,
        ));
    }
}

fn location(err: &LoadError) -> Location {
    Location { file: err.file.clone(), line: err.line }
}
