//! `security.istio.io/v1`: PeerAuthentication (which mTLS a workload accepts) and
//! AuthorizationPolicy (who may call it), with Istio's field names.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::networking::LabelSelector;

/// The API group of the security kinds.
pub const GROUP: &str = "security.istio.io";
/// The version the mesh writes; `v1beta1` is read too.
pub const VERSION: &str = "v1";
/// Versions of the group that carry the same schema.
pub const READ_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// The `spec` of a PeerAuthentication (`security.istio.io/v1`).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "PeerAuthentication",
    plural = "peerauthentications",
    shortname = "pa",
    category = "istio-io",
    category = "security-istio-io",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name": "Mode", "type": "string", "jsonPath": ".spec.mtls.mode"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Workloads this applies to; without it, the whole namespace (or mesh, in the root
    /// namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The mTLS mode for every port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// mTLS mode per workload port (the keys are port numbers); needs a `selector`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

/// The mTLS setting of a workload or of one of its ports (`mtls: {mode: STRICT}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    /// UNSET, DISABLE, PERMISSIVE or STRICT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

string_enum! {
    /// What a workload accepts from its peers.
    pub enum MtlsMode {
        /// Inherit from the parent policy; PERMISSIVE when there is none.
        Unset = "UNSET",
        /// Plaintext only.
        Disable = "DISABLE",
        /// mTLS or plaintext.
        Permissive = "PERMISSIVE",
        /// mTLS only.
        Strict = "STRICT",
    }
}

/// The `spec` of an AuthorizationPolicy (`security.istio.io/v1`).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "AuthorizationPolicy",
    plural = "authorizationpolicies",
    shortname = "ap",
    category = "istio-io",
    category = "security-istio-io",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name": "Action", "type": "string", "jsonPath": ".spec.action"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Workloads this applies to; without it, the whole namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// A resource (a Gateway API gateway or service) this applies to, instead of `selector`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources this applies to, several at once, instead of `selector`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Rules, any of which matches. No rules: ALLOW matches nothing, DENY matches nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What a match does (ALLOW when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<AuthorizationAction>,
    /// The external authorizer (CUSTOM only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

string_enum! {
    /// The action of an AuthorizationPolicy.
    pub enum AuthorizationAction {
        /// Allow matching requests; with any ALLOW policy, unmatched requests are denied.
        Allow = "ALLOW",
        /// Deny matching requests.
        Deny = "DENY",
        /// Log matching requests.
        Audit = "AUDIT",
        /// Ask an external authorizer.
        Custom = "CUSTOM",
    }
}

/// A reference to the resource a policy targets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind of the target.
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// Namespace of the target (the policy's own when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The external authorizer of a CUSTOM policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// Name of an extension provider of the mesh config.
    pub name: String,
}

/// One rule: who (`from`), what (`to`) and under which conditions (`when`). The three lists
/// are ANDed; the entries of `from` and of `to` are ORed, every `when` condition must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Who the request comes from: any entry matches; any caller when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    /// What the request does: any entry matches; any operation when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    /// Conditions on other request attributes; all of them must hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// A `from` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    /// Who the caller is.
    pub source: Source,
}

/// A `to` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    /// What the caller does.
    pub operation: Operation,
}

/// Attributes of the caller; the fields given are ANDed, the values of one field ORed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities (`cluster.local/ns/default/sa/sleep`), prefix or suffix `*` allowed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Peer identities that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// JWT principals (`iss/sub`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    /// JWT principals that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Namespaces of the peer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Service accounts of the peer (`namespace/name`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Service accounts that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// Peer IPs or CIDRs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Peer IPs or CIDRs that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Client IPs (from X-Forwarded-For) or CIDRs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    /// Client IPs or CIDRs that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// Attributes of the request; the fields given are ANDed, the values of one field ORed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Hosts (`Host`/`:authority`), prefix or suffix `*` allowed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Hosts that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings (`"8080"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Ports that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (or gRPC `POST`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Methods that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Paths, prefix or suffix `*` allowed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Paths that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// A condition on a request attribute (`key: request.headers[version]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The attribute, such as `source.ip`, `request.headers[x-token]`, `destination.port`.
    pub key: String,
    /// Values, any of which matches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Values that must not match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// The `spec` of a RequestAuthentication (`security.istio.io/v1`): which end-user tokens
/// (JWTs) a workload accepts. A request without a token passes (an AuthorizationPolicy on
/// `requestPrincipals` requires one); a request with an invalid token is refused (401).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "RequestAuthentication",
    plural = "requestauthentications",
    shortname = "ra",
    category = "istio-io",
    category = "security-istio-io",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// Workloads this applies to; without it, the whole namespace (or mesh, in the root
    /// namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// A resource (a Gateway API gateway) this applies to, instead of `selector`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources this applies to, instead of `selector`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The issuers accepted, each with its keys and where its tokens are found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// One accepted token issuer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// `aud` values accepted (any one); none: the audience is not checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where the issuer's keys (a JWKS) are fetched from, by the pilot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The issuer's keys inline (a JWKS document), instead of `jwksUri`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers the token may come in (default `Authorization: Bearer <token>`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token may come in (default `access_token`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies the token may come in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// A header to put the token's payload in (base64url JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Whether the token goes on to the app (removed by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Claims copied into request headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long fetching `jwksUri` may take (5s by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<crate::Duration>,
    /// Claims whose space-separated values are matched one by one (`scope` and
    /// `permission` always are).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
}

/// A header a token may come in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// The header.
    pub name: String,
    /// What precedes the token in it (`Bearer `).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A claim copied into a header.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// The header.
    pub header: String,
    /// The claim (nested with `.`).
    pub claim: String,
}
