//! Validation of the `security.istio.io` kinds.

use super::{Checker, Code, Path, ValidationError};
use crate::ObjectRef;
use crate::identity::is_dns_label;
use crate::security::*;

/// Validates a PeerAuthentication.
pub fn peer_authentication(pa: &PeerAuthentication) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(pa));
    let spec = &pa.spec;
    let root = Path::root("spec");
    if let Some(mtls) = &spec.mtls {
        mtls_mode(&mut c, &root.field("mtls").field("mode"), mtls);
    }
    let has_selector = spec.selector.as_ref().is_some_and(|s| !s.match_labels.is_empty());
    if !spec.port_level_mtls.is_empty() && !has_selector {
        c.error(
            &root.field("portLevelMtls"),
            Code::Required,
            "portLevelMtls needs a selector: port numbers only mean something for specific workloads",
        );
    }
    for (port, mtls) in &spec.port_level_mtls {
        let path = root.field("portLevelMtls").key(port);
        c.port_text(&path, port);
        mtls_mode(&mut c, &path.field("mode"), mtls);
    }
    c.finish()
}

fn mtls_mode(c: &mut Checker, path: &Path, mtls: &MutualTls) {
    if let Some(mode) = &mtls.mode {
        c.known(path, mode);
    }
}

/// Attributes a `when` condition may test. Keys ending in `[` take a name in brackets.
const CONDITION_KEYS: &[&str] = &[
    "request.headers[",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims[",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "experimental.envoy.filters.",
];

/// Validates an AuthorizationPolicy.
pub fn authorization_policy(ap: &AuthorizationPolicy) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(ap));
    let spec = &ap.spec;
    let root = Path::root("spec");
    let action = spec.action.clone().unwrap_or(AuthorizationAction::Allow);
    c.known(&root.field("action"), &action);
    match (&action, &spec.provider) {
        (AuthorizationAction::Custom, None) => {
            c.error(&root.field("provider"), Code::Required, "action CUSTOM needs a provider");
        }
        (AuthorizationAction::Custom, Some(provider)) if provider.name.is_empty() => {
            c.required(&root.field("provider").field("name"), "provider name");
        }
        (AuthorizationAction::Custom, Some(_)) | (_, None) => {}
        (other, Some(_)) => {
            c.error(
                &root.field("provider"),
                Code::ConflictingFields,
                format!("provider only applies to action CUSTOM, not {other}"),
            );
        }
    }
    targets(&mut c, &root, spec.selector.as_ref(), spec.target_ref.as_ref(), &spec.target_refs);
    for (i, rule) in spec.rules.iter().enumerate() {
        let path = root.field("rules").index(i);
        for (j, from) in rule.from.iter().enumerate() {
            source(&mut c, &path.field("from").index(j).field("source"), &from.source);
        }
        for (j, to) in rule.to.iter().enumerate() {
            operation(&mut c, &path.field("to").index(j).field("operation"), &to.operation);
        }
        for (j, when) in rule.when.iter().enumerate() {
            condition(&mut c, &path.field("when").index(j), when);
        }
    }
    c.finish()
}

/// `selector`, `targetRef` and `targetRefs`: one at most, and each target named.
pub(crate) fn targets(
    c: &mut Checker,
    root: &Path,
    selector: Option<&LabelSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        c.error(
            root,
            Code::ConflictingFields,
            "set only one of selector, targetRef and targetRefs",
        );
    }
    for (i, target) in target_ref.iter().copied().chain(target_refs).enumerate() {
        let path = if target_ref.is_some() {
            root.field("targetRef")
        } else {
            root.field("targetRefs").index(i)
        };
        if target.kind.is_empty() {
            c.required(&path.field("kind"), "kind");
        }
        if target.name.is_empty() {
            c.required(&path.field("name"), "name");
        }
    }
}

/// Validates a RequestAuthentication.
pub fn request_authentication(ra: &RequestAuthentication) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(ra));
    let spec = &ra.spec;
    let root = Path::root("spec");
    targets(&mut c, &root, spec.selector.as_ref(), spec.target_ref.as_ref(), &spec.target_refs);
    let mut issuers = std::collections::BTreeSet::new();
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        let path = root.field("jwtRules").index(i);
        if rule.issuer.is_empty() {
            c.required(&path.field("issuer"), "the issuer whose tokens are accepted");
        } else if !issuers.insert(rule.issuer.as_str()) {
            c.error(
                &path.field("issuer"),
                Code::Duplicate,
                format!("issuer {:?} has an earlier rule", rule.issuer),
            );
        }
        match (&rule.jwks, &rule.jwks_uri) {
            (Some(_), Some(_)) => c.not_both(&path, "jwks", "jwksUri"),
            (Some(jwks), None) => {
                let keys = serde_json::from_str::<serde_json::Value>(jwks)
                    .ok()
                    .and_then(|v| v.get("keys").and_then(|k| k.as_array()).map(Vec::len));
                if keys.is_none_or(|n| n == 0) {
                    c.error(
                        &path.field("jwks"),
                        Code::UnknownValue,
                        "not a JWKS: a JSON object with a non-empty \"keys\" list",
                    );
                }
            }
            (None, Some(uri)) => {
                if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                    c.error(
                        &path.field("jwksUri"),
                        Code::InvalidAddress,
                        format!("{uri:?} is not an http(s) URL"),
                    );
                }
            }
            // Istio then reads the issuer's OpenID configuration; the mesh needs the keys.
            (None, None) => {
                c.error(&path, Code::Required, "jwks or jwksUri: the keys tokens are checked with")
            }
        }
        for (j, header) in rule.from_headers.iter().enumerate() {
            c.header_name(&path.field("fromHeaders").index(j).field("name"), &header.name, false);
        }
        for (j, out) in rule.output_claim_to_headers.iter().enumerate() {
            let out_path = path.field("outputClaimToHeaders").index(j);
            c.header_name(&out_path.field("header"), &out.header, false);
            if out.claim.is_empty() {
                c.required(&out_path.field("claim"), "the claim to copy");
            }
        }
        if let Some(header) = &rule.output_payload_to_header {
            c.header_name(&path.field("outputPayloadToHeader"), header, false);
        }
        c.opt_timeout(&path.field("timeout"), rule.timeout.as_ref());
    }
    c.finish()
}

fn source(c: &mut Checker, path: &Path, source: &Source) {
    let lists = [
        ("principals", &source.principals),
        ("notPrincipals", &source.not_principals),
        ("requestPrincipals", &source.request_principals),
        ("notRequestPrincipals", &source.not_request_principals),
        ("namespaces", &source.namespaces),
        ("notNamespaces", &source.not_namespaces),
        ("serviceAccounts", &source.service_accounts),
        ("notServiceAccounts", &source.not_service_accounts),
        ("ipBlocks", &source.ip_blocks),
        ("notIpBlocks", &source.not_ip_blocks),
        ("remoteIpBlocks", &source.remote_ip_blocks),
        ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
    ];
    value_lists(
        c,
        path,
        &lists,
        "a source needs at least one field (principals, namespaces, ipBlocks, ...)",
        |c, vpath, field, value| {
            if field.to_ascii_lowercase().ends_with("ipblocks") {
                c.ip_or_cidr(vpath, value);
            } else if field.to_ascii_lowercase().ends_with("serviceaccounts") {
                let ok = value
                    .split_once('/')
                    .is_some_and(|(ns, sa)| is_dns_label(ns) && !sa.is_empty());
                if !ok {
                    c.error(
                        vpath,
                        Code::InvalidName,
                        format!("{value:?} must be namespace/service-account"),
                    );
                }
            }
        },
    );
    if !source.service_accounts.is_empty() && !source.principals.is_empty() {
        c.not_both(&path.field("serviceAccounts"), "serviceAccounts", "principals");
    }
}

fn operation(c: &mut Checker, path: &Path, op: &Operation) {
    let lists = [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("ports", &op.ports),
        ("notPorts", &op.not_ports),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
        ("paths", &op.paths),
        ("notPaths", &op.not_paths),
    ];
    value_lists(
        c,
        path,
        &lists,
        "an operation needs at least one field (hosts, ports, methods, paths, ...)",
        |c, vpath, field, value| {
            if field.ends_with("orts") {
                c.port_text(vpath, value);
            }
        },
    );
}

/// The value lists of a source or operation: at least one set, no empty value, and each value
/// checked by `check(checker, path, field, value)`.
fn value_lists(
    c: &mut Checker,
    path: &Path,
    lists: &[(&str, &Vec<String>)],
    none_set: &str,
    check: impl Fn(&mut Checker, &Path, &str, &str),
) {
    if lists.iter().all(|(_, values)| values.is_empty()) {
        c.error(path, Code::Required, none_set);
    }
    for (field, values) in lists {
        for (i, value) in values.iter().enumerate() {
            let vpath = path.field(field).index(i);
            if value.is_empty() {
                c.error(&vpath, Code::Required, "value is empty");
            } else {
                check(c, &vpath, field, value);
            }
        }
    }
}

fn condition(c: &mut Checker, path: &Path, when: &Condition) {
    let key = when.key.as_str();
    let known = CONDITION_KEYS.iter().any(|known| {
        if known.ends_with('[') {
            key.strip_prefix(known).is_some_and(|rest| rest.len() > 1 && rest.ends_with(']'))
        } else if known.ends_with('.') {
            key.len() > known.len() && key.starts_with(known)
        } else {
            key == *known
        }
    });
    if key.is_empty() {
        c.required(&path.field("key"), "key");
    } else if !known {
        c.error(
            &path.field("key"),
            Code::UnknownValue,
            format!("unknown condition key {key:?}: use request.headers[name], source.ip, remote.ip, source.namespace, source.principal, request.auth.*, destination.ip, destination.port or connection.sni"),
        );
    }
    if when.values.is_empty() && when.not_values.is_empty() {
        c.error(path, Code::Required, "a condition needs values or notValues");
    }
    for (field, values) in [("values", &when.values), ("notValues", &when.not_values)] {
        for (i, value) in values.iter().enumerate() {
            let vpath = path.field(field).index(i);
            match key {
                "source.ip" | "remote.ip" | "destination.ip" => c.ip_or_cidr(&vpath, value),
                "destination.port" => c.port_text(&vpath, value),
                _ => {}
            }
        }
    }
}
