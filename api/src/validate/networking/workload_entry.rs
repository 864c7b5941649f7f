//! Validation of WorkloadEntry, whose spec is also the form of a ServiceEntry's endpoints.

use super::labels;
use crate::ObjectRef;
use crate::identity::is_dns_subdomain;
use crate::networking::*;
use crate::validate::{Checker, Code, Path, ValidationError};

/// Validates a WorkloadEntry.
pub fn workload_entry(we: &WorkloadEntry) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(we));
    workload_entry_spec(&mut c, &Path::root("spec"), &we.spec);
    c.finish()
}

/// A workload: a WorkloadEntry's spec or a ServiceEntry endpoint.
pub(super) fn workload_entry_spec(c: &mut Checker, path: &Path, spec: &WorkloadEntrySpec) {
    let address = &spec.address;
    if address.is_empty() {
        c.required(&path.field("address"), "address");
    } else if let Some(socket) = address.strip_prefix("unix://") {
        if !socket.starts_with('/') && !socket.starts_with('@') {
            c.error(
                &path.field("address"),
                Code::InvalidAddress,
                format!("unix socket {address:?} must be an absolute path"),
            );
        }
    } else if address.parse::<std::net::IpAddr>().is_err()
        && c.host(&path.field("address"), address)
        && address.contains('*')
    {
        c.error(
            &path.field("address"),
            Code::InvalidAddress,
            format!("address {address:?} cannot be a wildcard"),
        );
    }
    for (name, number) in &spec.ports {
        c.port(&path.field("ports").key(name), *number);
    }
    labels(c, &path.field("labels"), &spec.labels);
    if let Some(sa) = &spec.service_account
        && !is_dns_subdomain(sa)
    {
        c.error(
            &path.field("serviceAccount"),
            Code::InvalidName,
            format!("{sa:?} is not a valid service account name"),
        );
    }
    if spec.weight == Some(0) {
        c.error(
            &path.field("weight"),
            Code::NumberTooSmall,
            "weight must be at least 1 (leave it out for the default)",
        );
    }
}
