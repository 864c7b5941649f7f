//! The CustomResourceDefinitions generated from the types of this crate.
//!
//! They are checked in under `charts/base/crds/`; a test fails when the files differ from what
//! [`render`] produces, and `make crds` rewrites them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::telemetry::Telemetry;

/// Every CRD of the mesh, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        VirtualService::crd(),
        DestinationRule::crd(),
        Gateway::crd(),
        ServiceEntry::crd(),
        WorkloadEntry::crd(),
        Sidecar::crd(),
        PeerAuthentication::crd(),
        AuthorizationPolicy::crd(),
        RequestAuthentication::crd(),
        Telemetry::crd(),
    ]
}

/// Each CRD as `(file name, YAML)`, the file named after the CRD (`virtualservices.networking.istio.io.yaml`).
pub fn render() -> Result<Vec<(String, String)>, serde_saphyr::SerializeError> {
    all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_saphyr::to_string(&crd)?;
            Ok((
                format!("{name}.yaml"),
                format!("# Generated from the mesh-api types by `make crds`; do not edit.\n{yaml}"),
            ))
        })
        .collect()
}
