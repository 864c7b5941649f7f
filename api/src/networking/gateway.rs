//! Gateway: a load balancer at the edge of the mesh and the ports, hosts and TLS it exposes.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Port;

/// The `spec` of a Gateway (`networking.istio.io/v1`).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Gateway",
    plural = "gateways",
    shortname = "gw",
    category = "istio-io",
    category = "networking-istio-io",
    namespaced,
    derive = "PartialEq",
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Labels of the gateway proxies this configuration applies to (`istio: ingressgateway`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// What the gateway listens on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
}

/// One port of a gateway and the hosts it serves there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// The port, its name and protocol.
    pub port: Port,
    /// Address to bind to (all when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Hosts served, as `[namespace/]dnsName` (`*` for all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// How TLS is handled on this port: terminated, passed through, or plain HTTP redirected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Where traffic goes by default (`127.0.0.1:8080` or a unix socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// A name for the server, used in statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// TLS settings of a gateway server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Redirect plain HTTP to HTTPS with a 301.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// How TLS is handled: PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL or
    /// OPTIONAL_MUTUAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    /// Path of the server certificate (PEM), for SIMPLE and MUTUAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Path of the server's private key (PEM), for SIMPLE and MUTUAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle that verifies clients (MUTUAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Certificate revocation list file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    /// Secret holding certificate and key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Several secrets (one RSA and one ECDSA certificate).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    /// Names a client certificate must carry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Base64 SPKI hashes a client certificate must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// Hex hashes a client certificate must match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// Lowest TLS version accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    /// Highest TLS version accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    /// Cipher suites, by OpenSSL name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// Several certificate and key pairs from files (one RSA, one ECDSA).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<TlsCertificate>,
}

/// A certificate and key from files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    /// Path of a server certificate (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Path of that certificate's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Path of the CA bundle (PEM) that verifies client certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
}

string_enum! {
    /// TLS modes of a gateway server.
    pub enum ServerTlsMode {
        /// Route on SNI without terminating TLS.
        Passthrough = "PASSTHROUGH",
        /// Terminate TLS.
        Simple = "SIMPLE",
        /// Terminate TLS and require a client certificate.
        Mutual = "MUTUAL",
        /// Passthrough with SNI-derived routing, no VirtualService needed.
        AutoPassthrough = "AUTO_PASSTHROUGH",
        /// mTLS with the mesh's workload certificates.
        IstioMutual = "ISTIO_MUTUAL",
        /// Terminate TLS, verify a client certificate if one is sent.
        OptionalMutual = "OPTIONAL_MUTUAL",
    }
}

string_enum! {
    /// TLS protocol versions.
    pub enum TlsProtocol {
        /// The proxy's default.
        TlsAuto = "TLS_AUTO",
        /// TLS 1.0.
        TlsV1_0 = "TLSV1_0",
        /// TLS 1.1.
        TlsV1_1 = "TLSV1_1",
        /// TLS 1.2.
        TlsV1_2 = "TLSV1_2",
        /// TLS 1.3.
        TlsV1_3 = "TLSV1_3",
    }
}
