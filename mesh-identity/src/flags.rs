//! The flags every workload of the mesh reaches mesh-ca with (mesh-proxy, mesh-agent): one
//! definition, so their names, variables and defaults cannot drift apart.

use std::path::PathBuf;

/// Where mesh-ca is, how to check it, and what proves the workload's identity to it.
#[derive(Clone, Debug, clap::Args)]
pub struct CaFlags {
    /// `host:port` of mesh-ca.
    #[arg(long, env = "MESH_CA_ADDRESS", default_value = "mesh-ca.mesh-system.svc:8060")]
    pub ca_address: String,
    /// The DNS name in the CA's serving certificate.
    #[arg(long, env = "MESH_CA_SERVER_NAME", default_value = "mesh-ca.mesh-system.svc")]
    pub ca_server_name: String,
    /// The mesh root certificate (PEM): verifies the CA, and the mesh's peers.
    #[arg(long, env = "MESH_ROOT_CERT", default_value = "/var/run/secrets/mesh/root-cert.pem")]
    pub root_cert: PathBuf,
    /// The workload's token for the CA (read again for every request: projected tokens are
    /// refreshed on disk).
    #[arg(long, env = "MESH_TOKEN_PATH", default_value = "/var/run/secrets/tokens/mesh-token")]
    pub token_path: PathBuf,
}
