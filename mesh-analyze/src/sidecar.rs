//! Sidecar checks: a workload selector selects workloads of its namespace (IST0101), no
//! workload is selected by two Sidecars (IST0110), and a namespace has at most one Sidecar
//! without a selector (IST0111).

use std::collections::BTreeMap;

use mesh_api::networking::Sidecar;

use crate::context::{Context, Obj, selector_string, selects};
use crate::finding::{
    CONFLICTING_SIDECAR_WORKLOAD_SELECTORS, Finding, MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
    REFERENCED_RESOURCE_NOT_FOUND, go_list, go_quote,
};

pub(crate) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    without_selectors(cx, out);
    if cx.has_workloads() {
        selectors(cx, out);
    }
}

fn without_selectors(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut by_namespace: BTreeMap<&str, Vec<&Obj<'_, Sidecar>>> = BTreeMap::new();
    for sidecar in cx.sidecars.iter().filter(|s| s.spec.spec.workload_selector.is_none()) {
        by_namespace.entry(sidecar.namespace()).or_default().push(sidecar);
    }
    for (namespace, list) in by_namespace.into_iter().filter(|(_, l)| l.len() > 1) {
        let names = names(&list);
        for sidecar in list {
            out.push(sidecar.finding(
                &MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
                format!(
                    "The Sidecars {names} in namespace {} have no workload selector, which can lead to undefined behavior.",
                    go_quote(namespace)
                ),
            ));
        }
    }
}

/// The names of Sidecars as Istio lists them (`[a b]`).
fn names(list: &[&Obj<'_, Sidecar>]) -> String {
    let mut names: Vec<&str> = list.iter().map(|s| s.name()).collect();
    names.sort();
    go_list(&names)
}

fn selectors(cx: &Context<'_>, out: &mut Vec<Finding>) {
    // The Sidecars selecting each workload, by the workload's namespace and name.
    let mut by_workload: BTreeMap<(&str, &str), Vec<&Obj<'_, Sidecar>>> = BTreeMap::new();
    for sidecar in &cx.sidecars {
        let Some(selector) = sidecar.spec.spec.workload_selector.as_ref() else { continue };
        if selector.labels.is_empty() {
            continue;
        }
        let mut found = false;
        for workload in cx.workloads_in(sidecar.namespace()) {
            if selects(&selector.labels, workload.labels) {
                found = true;
                by_workload.entry((&workload.namespace, &workload.name)).or_default().push(sidecar);
            }
        }
        if !found {
            out.push(sidecar.finding(
                &REFERENCED_RESOURCE_NOT_FOUND,
                format!(
                    "Referenced selector not found: {}",
                    go_quote(&selector_string(&selector.labels))
                ),
            ));
        }
    }
    for ((namespace, workload), list) in by_workload.into_iter().filter(|(_, l)| l.len() > 1) {
        let names = names(&list);
        for sidecar in list {
            out.push(sidecar.finding(
                &CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
                format!(
                    "The Sidecars {names} in namespace {} select the same workload pod {}, which can lead to undefined behavior.",
                    go_quote(namespace),
                    go_quote(workload)
                ),
            ));
        }
    }
}
