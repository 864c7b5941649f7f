//! Injection checks: a namespace says whether it wants the sidecar (IST0102), and the pods of
//! a namespace that does have it (IST0103).

use crate::context::{Context, Injection, WorkloadKind, has_proxy, injection, is_system_namespace};
use crate::finding::{Finding, NAMESPACE_NOT_INJECTED, POD_MISSING_PROXY};

pub(crate) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let root = &cx.input.mesh.root_namespace;
    for namespace in &cx.namespaces {
        let name = namespace.name();
        if is_system_namespace(name, root) {
            continue;
        }
        if injection(namespace.labels()) == Injection::Unlabelled {
            out.push(namespace.finding(
                &NAMESPACE_NOT_INJECTED,
                format!(
                    "The namespace is not enabled for Istio injection. Run 'kubectl label namespace {name} istio-injection=enabled' to enable it, or 'kubectl label namespace {name} istio-injection=disabled' to explicitly mark it as not needing injection."
                ),
            ));
        }
    }
    for pod in cx.workloads.iter().filter(|w| w.kind == WorkloadKind::Pod) {
        let injected = cx
            .namespace_object(&pod.namespace)
            .is_some_and(|ns| injection(ns.labels()) == Injection::Enabled);
        let opted_out =
            mesh_api::inject::annotations::opted_out(Some(pod.labels), Some(pod.annotations));
        let host_network = pod.spec.and_then(|s| s.host_network).unwrap_or(false);
        if injected && !opted_out && !host_network && !has_proxy(pod.spec) {
            out.push(pod.finding(
                &POD_MISSING_PROXY,
                format!(
                    "The pod {}/{} is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.",
                    pod.namespace, pod.name
                ),
            ));
        }
    }
}
