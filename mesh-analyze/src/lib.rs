//! `mesh-analyze`: `meshctl analyze` as a pure function. [`analyze`] takes the objects as
//! `mesh-api` loads them, with the Kubernetes objects that some checks read (namespaces,
//! services, workloads), and returns every [`Finding`], sorted. It does no I/O: `meshctl`
//! reads files and the live mesh, the dashboard passes what it already holds.
//!
//! Each finding has a level, a stable code, the object and a message. Where a check is the
//! same as one of `istioctl analyze`'s, the code, name, level and message are Istio's, so
//! scripts and habits carry over:
//!
//! | code | name | level | what |
//! |---|---|---|---|
//! | IST0101 | ReferencedResourceNotFound | Error | a VirtualService's host, `host:port`, subset (of a DestinationRule) or gateway; a Gateway's or Sidecar's selector, a Gateway's `credentialName`; an AuthorizationPolicy's source namespace |
//! | IST0102 | NamespaceNotInjected | Info | a Namespace with neither `mesh-injection` nor `istio-injection` |
//! | IST0103 | PodMissingProxy | Warning | a Pod of an injected namespace without its sidecar |
//! | IST0106 | SchemaValidationError | Error | what `mesh-api`'s validation refuses, and documents that do not load |
//! | IST0109 | ConflictingMeshGatewayVirtualServiceHosts | Error | two VirtualServices of the mesh gateway for one host |
//! | IST0110 | ConflictingSidecarWorkloadSelectors | Error | two Sidecars selecting one workload |
//! | IST0111 | MultipleSidecarsWithoutWorkloadSelectors | Error | two selector-less Sidecars in a namespace |
//! | IST0112 | VirtualServiceDestinationPortSelectorRequired | Error | a route to a service of several ports without a port |
//! | IST0116 | DeploymentAssociatedToMultipleServices | Warning | one port, two protocols, for a Deployment's Services |
//! | IST0118 | PortNameIsNotUnderNamingConvention | Info | a Service port whose protocol is neither named nor declared |
//! | IST0127 | NoMatchingWorkloadsFound | Warning | an AuthorizationPolicy (PeerAuthentication, RequestAuthentication) selecting no workload |
//! | IST0128 | NoServerCertificateVerificationDestinationLevel | Warning | SIMPLE or MUTUAL TLS without `caCertificates` |
//! | IST0129 | NoServerCertificateVerificationPortLevel | Warning | the same, in a port's settings |
//! | IST0130 | VirtualServiceUnreachableRule | Warning | a route after a catch-all, or whose matches earlier routes take |
//! | IST0131 | VirtualServiceIneffectiveMatch | Info | a match an earlier route takes (the same, or a longer prefix) |
//! | IST0132 | VirtualServiceHostNotFoundInGateway | Warning | a VirtualService none of whose hosts its Gateway serves |
//! | IST0134 | ServiceEntryAddressesRequired | Warning | a TCP ServiceEntry port without addresses |
//! | IST0137 | DeploymentConflictingPorts | Warning | one target port reached from two ports of a Deployment's Services |
//! | IST0138 | GatewayDuplicateCertificate | Warning | two Gateways of the same workloads with the same certificate |
//! | IST0145 | ConflictingGateways | Error | two Gateways of the same workloads for one port and host |
//! | IST0150 | ExternalNameServiceTypeInvalidPortName | Warning | an ExternalName Service port named `tcp` |
//! | IST0162 | GatewayPortNotDefinedOnService | Warning | a Gateway port its workloads' Service does not target |
//!
//! Our own codes, for what Istio does not check:
//!
//! | code | name | level | what |
//! |---|---|---|---|
//! | MESH0001 | NotEnforced | Warning | an Istio kind (EnvoyFilter, WasmPlugin...) or part of one (a Telemetry's `metrics`) the mesh reads but does not implement: it has no effect |
//! | MESH0002 | SubsetNoMatchingWorkloads | Warning | a DestinationRule subset whose labels none of its Service's workloads carry (503 for its traffic) |
//! | MESH0003 | TargetPortReservedByProxy | Warning | a Service port targeting 15000 to 15090, which the sidecar keeps and never serves |
//!
//! Where this analysis differs from Istio's, on purpose:
//! - Checks that look for the workloads a selector selects (IST0101 for selectors, IST0127,
//!   IST0162, MESH0002) run only when the input holds workloads at all: Pods, the pod
//!   templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs, or
//!   WorkloadEntries (the local mesh's pods). Istio looks at Pods only, so a file analyzed
//!   on its own reports every Gateway's selector as missing.
//! - A workload is in the mesh when it has the proxy container, asks for it, or its
//!   namespace does; in a namespace the input does not describe, it is assumed to be.
//! - IST0101 for a Gateway's `credentialName` is reported only when the input holds Secrets
//!   (TLS Secrets are rarely in manifests), and IST0132 only when the Gateway exists (its
//!   absence is already an IST0101).
//! - IST0162 is reported only when some Service selects the gateway's workloads (the local
//!   mesh's gateways have none).
//! - A subset is found in a DestinationRule whose host covers the destination's (a
//!   wildcard host too), as the pilot applies it.
//! - IST0106 messages are `mesh-api`'s, with its field path and its own code in brackets.
//!
//! Findings carry the line a document starts on, not the field's line.

#![forbid(unsafe_code)]

mod context;
mod destination_rule;
mod finding;
mod gateway;
mod injection;
mod input;
mod registry;
mod related;
mod schema;
mod security;
mod service;
mod service_entry;
mod sidecar;
mod unreachable;
mod virtual_service;

pub use finding::{ALL as MESSAGE_TYPES, Finding, Level, Location, MessageType, sort_and_dedup};
pub use input::{DEFAULT_DOMAIN, Input};
pub use related::related_to_service;

/// The message types, each a constant (`messages::REFERENCED_RESOURCE_NOT_FOUND`).
pub mod messages {
    pub use crate::finding::{
        CONFLICTING_GATEWAYS, CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
        CONFLICTING_SIDECAR_WORKLOAD_SELECTORS, DEPLOYMENT_ASSOCIATED_TO_MULTIPLE_SERVICES,
        DEPLOYMENT_CONFLICTING_PORTS, EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME,
        GATEWAY_DUPLICATE_CERTIFICATE, GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
        MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS, NAMESPACE_NOT_INJECTED,
        NO_MATCHING_WORKLOADS_FOUND, NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
        NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL, NOT_ENFORCED, POD_MISSING_PROXY,
        PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION, REFERENCED_RESOURCE_NOT_FOUND,
        SCHEMA_VALIDATION_ERROR, SERVICE_ENTRY_ADDRESSES_REQUIRED, SUBSET_NO_MATCHING_WORKLOADS,
        TARGET_PORT_RESERVED_BY_PROXY, VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED,
        VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY, VIRTUAL_SERVICE_INEFFECTIVE_MATCH,
        VIRTUAL_SERVICE_UNREACHABLE_RULE,
    };
}

/// Every finding about `input`, sorted (worst first, then by code, object and text) and
/// without repeats. Findings of every namespace: see [`in_namespace`] to keep one.
pub fn analyze(input: &Input) -> Vec<Finding> {
    let cx = context::Context::new(input);
    let mut findings = Vec::new();
    schema::check(&cx, &mut findings);
    virtual_service::check(&cx, &mut findings);
    destination_rule::check(&cx, &mut findings);
    gateway::check(&cx, &mut findings);
    sidecar::check(&cx, &mut findings);
    injection::check(&cx, &mut findings);
    service::check(&cx, &mut findings);
    service_entry::check(&cx, &mut findings);
    security::check(&cx, &mut findings);
    sort_and_dedup(&mut findings);
    findings
}

/// The findings that belong to `namespace` (those about its objects and about the Namespace
/// itself), and those that belong to none (a document whose kind could not be read).
pub fn in_namespace(findings: Vec<Finding>, namespace: &str) -> Vec<Finding> {
    findings.into_iter().filter(|f| f.namespace().is_none_or(|ns| ns == namespace)).collect()
}
