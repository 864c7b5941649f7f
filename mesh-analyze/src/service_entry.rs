//! ServiceEntry checks: a port of TCP (or no) protocol needs addresses (IST0134), or the
//! sidecars cannot tell its traffic from any other on that port.

use crate::context::Context;
use crate::finding::{Finding, SERVICE_ENTRY_ADDRESSES_REQUIRED};

pub(crate) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for se in &cx.service_entries {
        let spec = &se.spec.spec;
        if !spec.addresses.is_empty() {
            continue;
        }
        if spec.ports.iter().any(|p| p.protocol.is_empty() || p.protocol == "TCP") {
            out.push(se.finding(
                &SERVICE_ENTRY_ADDRESSES_REQUIRED,
                "ServiceEntry addresses are required for this protocol.".to_owned(),
            ));
        }
    }
}
