//! [`Finding`]: one problem, as `istioctl analyze` prints it, and the [`MessageType`]s that
//! say which problems there are.

use std::fmt;

use mesh_api::ObjectRef;

/// How bad a finding is, worst first (the order findings are sorted in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Traffic or policy does not do what the config says.
    Error,
    /// Probably a mistake, or something that behaves differently than it reads.
    Warning,
    /// Worth knowing; nothing is broken.
    Info,
}

impl Level {
    /// Every level, worst first.
    pub const ALL: [Level; 3] = [Level::Error, Level::Warning, Level::Info];

    /// The level as istioctl prints it (`Error`, `Warning`, `Info`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        }
    }

    /// A level from its name, in any case (`error`, `Warning`, `INFO`).
    pub fn parse(text: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|level| level.as_str().eq_ignore_ascii_case(text))
    }

    /// Whether this level is `threshold` or worse (`Error` is at least `Warning`).
    pub fn at_least(self, threshold: Level) -> bool {
        self <= threshold
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind of finding: its stable code, name and level. Istio's where the check is Istio's
/// (`IST0101`), the mesh's own (`MESH0001`) where Istio has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The stable code (`IST0101`).
    pub code: &'static str,
    /// The name (`ReferencedResourceNotFound`).
    pub name: &'static str,
    /// How bad it is.
    pub level: Level,
    /// What it means, in one sentence.
    pub description: &'static str,
}

/// Where an object was read: a file (or `<stdin>`, or the live mesh's source) and a line.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file.
    pub file: String,
    /// The line, from 1, when known.
    pub line: Option<usize>,
}

impl From<&mesh_api::load::Origin> for Location {
    fn from(origin: &mesh_api::load::Origin) -> Self {
        Self { file: origin.file.clone(), line: Some(origin.line) }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// One problem found in the config.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Finding {
    /// How bad it is.
    pub level: Level,
    /// The stable code (`IST0101`).
    pub code: &'static str,
    /// The code's name (`ReferencedResourceNotFound`).
    pub name: &'static str,
    /// The object the finding is about (absent for a document whose kind could not be read).
    pub object: Option<ObjectRef>,
    /// Where the object was read.
    pub origin: Option<Location>,
    /// What is wrong, in Istio's words where the check is Istio's.
    pub message: String,
}

impl Finding {
    /// A finding of `kind` about `object`.
    pub fn new(
        kind: &MessageType,
        object: Option<ObjectRef>,
        origin: Option<Location>,
        message: String,
    ) -> Self {
        Self { level: kind.level, code: kind.code, name: kind.name, object, origin, message }
    }

    /// The namespace the finding belongs to: its object's, a Namespace's own name, or `None`
    /// for findings that belong to every namespace (a file that could not be read).
    pub fn namespace(&self) -> Option<&str> {
        let object = self.object.as_ref()?;
        match &object.namespace {
            Some(namespace) => Some(namespace),
            None if object.kind == "Namespace" => Some(&object.name),
            None => None,
        }
    }

    /// The finding as `istioctl analyze -o json` writes it: `code`, `level`, `message`,
    /// `origin` (the object), `reference` (file and line) and, for Istio's codes,
    /// `documentationUrl`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("code".to_owned(), self.code.into());
        map.insert("level".to_owned(), self.level.as_str().into());
        map.insert("message".to_owned(), self.message.clone().into());
        if let Some(object) = &self.object {
            map.insert("origin".to_owned(), object.to_string().into());
        }
        if let Some(origin) = &self.origin {
            map.insert("reference".to_owned(), origin.to_string().into());
        }
        if self.code.starts_with("IST") {
            let url = format!(
                "https://istio.io/latest/docs/reference/config/analysis/{}/?ref=istioctl-analyze",
                self.code.to_ascii_lowercase()
            );
            map.insert("documentationUrl".to_owned(), url.into());
        }
        serde_json::Value::Object(map)
    }

    /// The order findings are listed in: worst first, then by code, by object, and by text.
    fn sort_key(&self) -> (Level, &str, Option<String>, String) {
        (self.level, self.code, self.object.as_ref().map(ToString::to_string), self.to_string())
    }
}

/// istioctl's line: `Error [IST0101] (VirtualService default/reviews bookinfo.yaml:12)
/// Referenced host not found: "reviews2"`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.level, self.code)?;
        match (&self.object, &self.origin) {
            (Some(object), Some(origin)) => write!(f, " ({object} {origin})")?,
            (Some(object), None) => write!(f, " ({object})")?,
            (None, Some(origin)) => write!(f, " ({origin})")?,
            (None, None) => {}
        }
        write!(f, " {}", self.message)
    }
}

/// Sorts findings as istioctl does (level, code, object, text) and drops repeats: a check that
/// finds the same thing twice (two ports, two matches) says it once.
pub fn sort_and_dedup(findings: &mut Vec<Finding>) {
    findings.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    findings.dedup();
}

/// Declares the message types: a constant each and [`ALL`].
macro_rules! messages {
    ($( $(#[$doc:meta])* $konst:ident = ($code:literal, $name:literal, $level:ident, $description:literal); )+) => {
        $(
            $(#[$doc])*
            pub const $konst: MessageType = MessageType {
                code: $code,
                name: $name,
                level: Level::$level,
                description: $description,
            };
        )+

        /// Every message type the analysis reports, in code order.
        pub const ALL: &[MessageType] = &[$($konst),+];
    };
}

messages! {
    /// A VirtualService, Gateway, Sidecar or policy names something that is not there.
    REFERENCED_RESOURCE_NOT_FOUND = ("IST0101", "ReferencedResourceNotFound", Error,
        "A resource being referenced does not exist.");
    /// A namespace is not labelled for injection either way.
    NAMESPACE_NOT_INJECTED = ("IST0102", "NamespaceNotInjected", Info,
        "A namespace is not enabled for Istio injection.");
    /// A pod of an injected namespace runs without its sidecar.
    POD_MISSING_PROXY = ("IST0103", "PodMissingProxy", Warning,
        "A pod is missing the Istio proxy.");
    /// The object does not pass schema or semantic validation (mesh-api's).
    SCHEMA_VALIDATION_ERROR = ("IST0106", "SchemaValidationError", Error,
        "The resource has a schema validation error.");
    /// Two VirtualServices of the mesh gateway claim the same host.
    CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS = ("IST0109",
        "ConflictingMeshGatewayVirtualServiceHosts", Error,
        "Conflicting hosts on VirtualServices associated with mesh gateway");
    /// Two Sidecars select the same workload.
    CONFLICTING_SIDECAR_WORKLOAD_SELECTORS = ("IST0110", "ConflictingSidecarWorkloadSelectors",
        Error, "A Sidecar resource selects the same workloads as another Sidecar resource");
    /// More than one Sidecar of a namespace has no selector.
    MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS = ("IST0111",
        "MultipleSidecarsWithoutWorkloadSelectors", Error,
        "More than one sidecar resource in a namespace has no workload selector");
    /// A route to a multi-port service does not say which port.
    VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED = ("IST0112",
        "VirtualServiceDestinationPortSelectorRequired", Error,
        "A VirtualService routes to a service with more than one port exposed, but does not specify which to use.");
    /// A Deployment's Services give one port two protocols.
    DEPLOYMENT_ASSOCIATED_TO_MULTIPLE_SERVICES = ("IST0116",
        "DeploymentAssociatedToMultipleServices", Warning,
        "The resulting pods of a service mesh deployment can't be associated with multiple services using the same port but different protocols.");
    /// A Service port whose protocol cannot be told from its name.
    PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION = ("IST0118", "PortNameIsNotUnderNamingConvention",
        Info, "Port name is not under naming convention. Protocol detection is applied to the port.");
    /// A selector that selects no workload.
    NO_MATCHING_WORKLOADS_FOUND = ("IST0127", "NoMatchingWorkloadsFound", Warning,
        "There aren't workloads matching the resource labels");
    /// TLS to a host without a CA to check its certificate with.
    NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL = ("IST0128",
        "NoServerCertificateVerificationDestinationLevel", Warning,
        "No caCertificates are set in DestinationRule, this results in no verification of presented server certificate.");
    /// TLS to a port of a host without a CA to check its certificate with.
    NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL = ("IST0129",
        "NoServerCertificateVerificationPortLevel", Warning,
        "No caCertificates are set in DestinationRule, this results in no verification of presented server certificate for traffic to a given port.");
    /// A route no request can reach.
    VIRTUAL_SERVICE_UNREACHABLE_RULE = ("IST0130", "VirtualServiceUnreachableRule", Warning,
        "A VirtualService rule will never be used because a previous rule uses the same match.");
    /// A match a previous route already takes.
    VIRTUAL_SERVICE_INEFFECTIVE_MATCH = ("IST0131", "VirtualServiceIneffectiveMatch", Info,
        "A VirtualService rule match duplicates a match in a previous rule.");
    /// A VirtualService host its Gateway does not serve.
    VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY = ("IST0132", "VirtualServiceHostNotFoundInGateway",
        Warning, "Host defined in VirtualService not found in Gateway.");
    /// A TCP ServiceEntry without addresses.
    SERVICE_ENTRY_ADDRESSES_REQUIRED = ("IST0134", "ServiceEntryAddressesRequired", Warning,
        "Virtual IP addresses are required for ports serving TCP (or unset) protocol");
    /// A Deployment's Services send one target port from two ports.
    DEPLOYMENT_CONFLICTING_PORTS = ("IST0137", "DeploymentConflictingPorts", Warning,
        "Two services selecting the same workload with the same targetPort MUST refer to the same port.");
    /// Two Gateways of the same workloads use the same certificate.
    GATEWAY_DUPLICATE_CERTIFICATE = ("IST0138", "GatewayDuplicateCertificate", Warning,
        "Duplicate certificate in multiple gateways may cause 404s if clients re-use HTTP2 connections.");
    /// Two Gateways of the same workloads serve the same port and host.
    CONFLICTING_GATEWAYS = ("IST0145", "ConflictingGateways", Error,
        "Gateway should not have the same selector, port and matched hosts of server");
    /// An ExternalName Service port named `tcp`.
    EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME = ("IST0150",
        "ExternalNameServiceTypeInvalidPortName", Warning,
        "Proxy may prevent tcp named ports and unmatched traffic for ports serving TCP protocol from being forwarded correctly for ExternalName services.");
    /// A Gateway port that the gateway's Service does not expose.
    GATEWAY_PORT_NOT_DEFINED_ON_SERVICE = ("IST0162", "GatewayPortNotDefinedOnService", Warning,
        "Gateway port not exposed by service");
    /// An Istio kind the mesh reads but does not implement.
    NOT_ENFORCED = ("MESH0001", "NotEnforced", Warning,
        "The resource is of a kind the mesh reads but does not implement: it has no effect.");
    /// A DestinationRule subset that none of its host's workloads carries the labels of.
    SUBSET_NO_MATCHING_WORKLOADS = ("MESH0002", "SubsetNoMatchingWorkloads", Warning,
        "A DestinationRule subset selects none of its host's workloads: traffic to it fails with 503.");
    /// A Service port that targets a port the sidecar keeps for itself.
    TARGET_PORT_RESERVED_BY_PROXY = ("MESH0003", "TargetPortReservedByProxy", Warning,
        "A Service port targets a port the sidecar reserves (15000 to 15090): the mesh sends nothing to it.");
}

/// Formats a list as Go's `%v` prints a slice (`[a b]`), the way Istio's messages show lists.
pub(crate) fn go_list<T: fmt::Display>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(" "))
}

/// Quotes a string as Go's `%q` does for the names and hosts in messages.
pub(crate) fn go_quote(text: &str) -> String {
    format!("{text:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_in_order() {
        let codes: Vec<&str> = ALL.iter().map(|m| m.code).collect();
        let mut sorted = codes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(codes, sorted);
    }

    #[test]
    fn a_finding_prints_as_istioctl_prints_it() {
        let finding = Finding::new(
            &REFERENCED_RESOURCE_NOT_FOUND,
            Some(ObjectRef::new("VirtualService", Some("default"), "reviews")),
            Some(Location { file: "bookinfo.yaml".to_owned(), line: Some(12) }),
            "Referenced host not found: \"reviews2\"".to_owned(),
        );
        assert_eq!(
            finding.to_string(),
            "Error [IST0101] (VirtualService default/reviews bookinfo.yaml:12) Referenced host not found: \"reviews2\""
        );
        assert_eq!(finding.namespace(), Some("default"));
        let json = finding.to_json();
        assert_eq!(json["origin"], "VirtualService default/reviews");
        assert_eq!(json["reference"], "bookinfo.yaml:12");
        assert_eq!(
            json["documentationUrl"],
            "https://istio.io/latest/docs/reference/config/analysis/ist0101/?ref=istioctl-analyze"
        );
    }

    #[test]
    fn levels_compare_by_severity() {
        assert!(Level::Error.at_least(Level::Warning));
        assert!(Level::Warning.at_least(Level::Warning));
        assert!(!Level::Info.at_least(Level::Warning));
        assert_eq!(Level::parse("warning"), Some(Level::Warning));
        assert_eq!(Level::parse("fatal"), None);
    }

    #[test]
    fn a_namespace_finding_belongs_to_that_namespace() {
        let finding = Finding::new(
            &NAMESPACE_NOT_INJECTED,
            Some(ObjectRef::new("Namespace", None, "shop")),
            None,
            String::new(),
        );
        assert_eq!(finding.namespace(), Some("shop"));
        assert_eq!(finding.to_string(), "Info [IST0102] (Namespace shop) ");
    }
}
