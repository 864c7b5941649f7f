//! DestinationRule checks: TLS without a CA to verify the server with (IST0128, IST0129), and
//! subsets that none of the host's workloads can be (MESH0002).

use mesh_api::networking::{ClientTlsMode, ClientTlsSettings, DestinationRule};

use crate::context::{Context, Obj, selector_string, selects};
use crate::finding::{
    Finding, NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
    NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL, SUBSET_NO_MATCHING_WORKLOADS, go_quote,
};

pub(crate) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for dr in &cx.destination_rules {
        tls(dr, out);
        if cx.has_workloads() {
            subsets(cx, dr, out);
        }
    }
}

/// SIMPLE or MUTUAL without `caCertificates`: the mode, when the settings leave the server
/// unverified by a CA of the rule's. A `credentialName` of a rule that selects its workloads
/// brings its own CA, as Istio allows.
fn unverified(tls: Option<&ClientTlsSettings>, selected: bool) -> Option<&'static str> {
    let tls = tls?;
    let mode = match tls.mode.as_ref()? {
        ClientTlsMode::Simple => "SIMPLE",
        ClientTlsMode::Mutual => "MUTUAL",
        _ => return None,
    };
    let has_ca = tls.ca_certificates.as_deref().is_some_and(|c| !c.is_empty());
    let has_credential = tls.credential_name.as_deref().is_some_and(|c| !c.is_empty());
    (!(has_ca || (has_credential && selected))).then_some(mode)
}

fn tls(dr: &Obj<'_, DestinationRule>, out: &mut Vec<Finding>) {
    let spec = &dr.spec.spec;
    let Some(policy) = &spec.traffic_policy else { return };
    let selected = spec.workload_selector.is_some();
    if let Some(mode) = unverified(policy.tls.as_ref(), selected) {
        out.push(dr.finding(
            &NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
            format!(
                "DestinationRule {} in namespace {} has TLS mode set to {mode} but no caCertificates are set to validate server identity for host: {}",
                dr.full_name(),
                dr.namespace(),
                spec.host
            ),
        ));
    }
    for port in &policy.port_level_settings {
        if let Some(mode) = unverified(port.tls.as_ref(), selected) {
            // Istio prints the port selector as protobuf text.
            let selector =
                port.port.as_ref().map_or("<nil>".to_owned(), |p| format!("number:{}", p.number));
            out.push(dr.finding(
                &NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL,
                format!(
                    "DestinationRule {} in namespace {} has TLS mode set to {mode} but no caCertificates are set to validate server identity for host: {} at port {selector}",
                    dr.full_name(),
                    dr.namespace(),
                    spec.host
                ),
            ));
        }
    }
}

/// A subset whose labels none of the workloads behind the rule's Service carry: traffic sent
/// to it has no endpoint. Only for hosts that are Services of the input with workloads.
fn subsets(cx: &Context<'_>, dr: &Obj<'_, DestinationRule>, out: &mut Vec<Finding>) {
    let host = cx.fqdn(dr.namespace(), &dr.spec.spec.host);
    let Some(service) = cx.services.iter().find(|s| cx.fqdn(s.namespace(), s.name()) == host)
    else {
        return;
    };
    let Some(selector) = service.spec.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return;
    };
    if selector.is_empty() {
        return;
    }
    let backends: Vec<_> =
        cx.workloads_in(service.namespace()).filter(|w| selects(selector, w.labels)).collect();
    if backends.is_empty() {
        return;
    }
    for subset in &dr.spec.spec.subsets {
        if subset.labels.is_empty() || backends.iter().any(|w| selects(&subset.labels, w.labels)) {
            continue;
        }
        out.push(dr.finding(
            &SUBSET_NO_MATCHING_WORKLOADS,
            format!(
                "No matching workloads for subset {} of host {} with the following labels: {}",
                go_quote(&subset.name),
                dr.spec.spec.host,
                selector_string(&subset.labels)
            ),
        ));
    }
}
