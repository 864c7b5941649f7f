//! The services a destination host can name, as Istio's analyzers see them: every
//! ServiceEntry host and every Kubernetes Service, each visible from the namespaces its
//! `exportTo` (or, for a Service, its `networking.istio.io/exportTo` annotation) allows.

use std::collections::BTreeMap;

use crate::context::{Context, export_scopes};

/// A service's ports, as the registry knows them.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    /// Port numbers clients call it on.
    pub ports: Vec<u32>,
}

/// Services by the namespace they are visible from (`*` for all) and full host name.
pub(crate) struct Registry {
    entries: BTreeMap<(String, String), Entry>,
}

/// The annotation that limits where a Service is visible.
const EXPORT_TO: &str = "networking.istio.io/exportTo";

impl Registry {
    pub fn new(cx: &Context<'_>) -> Self {
        let mut entries: BTreeMap<(String, String), Entry> = BTreeMap::new();
        let mut add = |scope: String, host: String, ports: &[u32]| {
            let entry = entries.entry((scope, host)).or_default();
            for port in ports {
                if !entry.ports.contains(port) {
                    entry.ports.push(*port);
                }
            }
        };
        for se in &cx.service_entries {
            let ports: Vec<u32> = se.spec.spec.ports.iter().map(|p| p.number).collect();
            for scope in export_scopes(&se.spec.spec.export_to, se.namespace()) {
                for host in &se.spec.spec.hosts {
                    add(scope.clone(), cx.fqdn(se.namespace(), host), &ports);
                }
            }
        }
        for svc in &cx.services {
            let ports: Vec<u32> = svc
                .spec
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .filter_map(|p| u32::try_from(p.port).ok())
                .collect();
            let export_to: Vec<String> = svc
                .annotations()
                .get(EXPORT_TO)
                .map(|a| a.split(',').map(|s| s.trim().to_owned()).collect())
                .unwrap_or_default();
            for scope in export_scopes(&export_to, svc.namespace()) {
                add(scope, cx.fqdn(svc.namespace(), svc.name()), &ports);
            }
        }
        Self { entries }
    }

    /// The service `host` names in config of namespace `from` exported to `export_to`, as
    /// Istio's analyzers look it up: visible to all, to `from`, to the config's own export
    /// namespaces, or a wildcard ServiceEntry host that covers it.
    pub fn lookup(
        &self,
        cx: &Context<'_>,
        from: &str,
        export_to: &[String],
        host: &str,
    ) -> Option<&Entry> {
        let fqdn = cx.fqdn(from, host);
        let get = |scope: &str| self.entries.get(&(scope.to_owned(), fqdn.clone()));
        if let Some(entry) = get("*") {
            return Some(entry);
        }
        let scoped = if export_to.is_empty() {
            get(from)
        } else {
            export_to.iter().find_map(|e| get(if e == "." { from } else { e }))
        };
        if scoped.is_some() {
            return scoped;
        }
        let host = host.strip_prefix('*').unwrap_or(host);
        self.entries.iter().find_map(|((scope, se_host), entry)| {
            let wildcard = se_host.strip_prefix('*')?;
            let visible = scope == "*" || scope == from;
            (visible && host.ends_with(wildcard)).then_some(entry)
        })
    }
}
