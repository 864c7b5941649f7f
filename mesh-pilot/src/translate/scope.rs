//! Scoping: which services a proxy sees (its Sidecar's egress hosts), which routing config
//! (VirtualServices and DestinationRules exported to its namespace), and what happens to
//! traffic for the others (its outbound traffic policy). The Sidecar that applies is the one
//! in the proxy's namespace selecting its labels, else that namespace's default, else the root
//! namespace's default; without any, everything is visible and unknown traffic passes through.

use std::borrow::Cow;

use mesh_api::networking::{OutboundTrafficMode, Sidecar};

use crate::model::{Proxy, Service, Snapshot};

/// The Sidecar that applies to a proxy, if any.
pub fn sidecar_for<'a>(snapshot: &'a Snapshot, proxy: &Proxy) -> Option<&'a Sidecar> {
    fn in_namespace(snapshot: &Snapshot, ns: String) -> impl Iterator<Item = &Sidecar> {
        snapshot
            .sidecars
            .iter()
            .filter(move |s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
    }
    let selecting = in_namespace(snapshot, proxy.namespace.clone()).find(|s| {
        s.spec.workload_selector.as_ref().is_some_and(|sel| {
            !sel.labels.is_empty() && sel.labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
        })
    });
    selecting
        .or_else(|| {
            in_namespace(snapshot, proxy.namespace.clone())
                .find(|s| s.spec.workload_selector.is_none())
        })
        .or_else(|| {
            in_namespace(snapshot, snapshot.root_namespace.clone())
                .find(|s| s.spec.workload_selector.is_none())
        })
}

/// Whether unknown destinations are blocked (REGISTRY_ONLY) for this proxy.
pub fn registry_only(snapshot: &Snapshot, proxy: &Proxy) -> bool {
    sidecar_for(snapshot, proxy)
        .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
        .and_then(|p| p.mode.as_ref())
        .is_some_and(|m| *m == OutboundTrafficMode::RegistryOnly)
}

/// Whether config of `owner` with this `exportTo` is visible from `viewer` (empty: everywhere).
fn exported(export_to: &[String], owner: &str, viewer: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| e == "*" || e == viewer || (e == "." && owner == viewer))
}

/// Whether an egress host (`namespace/dnsName`) admits a service, from a proxy's namespace.
fn admits(host: &str, service: &Service, proxy_namespace: &str) -> bool {
    let Some((namespace, name)) = host.split_once('/') else { return false };
    let namespace_ok = match namespace {
        "*" => true,
        "." => service.namespace == proxy_namespace,
        "~" => false,
        other => service.namespace == other,
    };
    let name_ok = name == "*"
        || name == service.hostname
        || name.strip_prefix('*').is_some_and(|suffix| service.hostname.ends_with(suffix));
    namespace_ok && name_ok
}

/// The snapshot as a proxy sees it: only the services its Sidecar lets it reach (and their
/// endpoints). Unchanged, without a copy, when no Sidecar scopes it.
pub fn scoped<'a>(snapshot: &'a Snapshot, proxy: &Proxy) -> Cow<'a, Snapshot> {
    let namespace_of = |ns: &Option<String>| ns.clone().unwrap_or_else(|| "default".to_owned());
    let hidden_config = snapshot
        .virtual_services
        .iter()
        .map(|vs| (&vs.spec.export_to, namespace_of(&vs.metadata.namespace)))
        .chain(
            snapshot
                .destination_rules
                .iter()
                .map(|dr| (&dr.spec.export_to, namespace_of(&dr.metadata.namespace))),
        )
        .any(|(export_to, ns)| !exported(export_to, &ns, &proxy.namespace));
    let hidden_services =
        snapshot.services.values().any(|s| !exported(&s.export_to, &s.namespace, &proxy.namespace));
    let sidecar = sidecar_for(snapshot, proxy).filter(|s| !s.spec.egress.is_empty());
    if sidecar.is_none() && !hidden_config && !hidden_services {
        return Cow::Borrowed(snapshot);
    }
    let mut out = snapshot.clone();
    // Routing config another namespace did not export is not this proxy's.
    out.virtual_services.retain(|vs| {
        exported(&vs.spec.export_to, &namespace_of(&vs.metadata.namespace), &proxy.namespace)
    });
    out.destination_rules.retain(|dr| {
        exported(&dr.spec.export_to, &namespace_of(&dr.metadata.namespace), &proxy.namespace)
    });
    // Services another namespace did not export, and those the Sidecar does not let it reach.
    let hosts: Option<Vec<&str>> = sidecar
        .map(|s| s.spec.egress.iter().flat_map(|e| e.hosts.iter().map(String::as_str)).collect());
    out.services.retain(|_, service| {
        exported(&service.export_to, &service.namespace, &proxy.namespace)
            && hosts.as_ref().is_none_or(|h| h.iter().any(|h| admits(h, service, &proxy.namespace)))
    });
    // A proxy still serves its own ports, whatever it may call.
    out.endpoints.retain(|(host, _), endpoints| {
        out.services.contains_key(host) || endpoints.iter().any(|e| proxy.ips.contains(&e.address))
    });
    Cow::Owned(out)
}
