//! Regenerates `api/src/envoy/descriptors.bin`: the protobuf descriptors of the Envoy v3 types
//! the mesh serves and dumps, taken from the `envoy-types` crate (so they match the Rust types
//! the pilot and proxy build) and cut down to what those types need.
//!
//! `cargo run -p mesh-api --example write_envoy_descriptors` (`make descriptors`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;

use prost::Message;
use prost_types::FileDescriptorSet;

/// The messages whose files (and imports) are kept.
const ROOTS: &[&str] = &[
    "envoy.config.listener.v3.Listener",
    "envoy.config.route.v3.RouteConfiguration",
    "envoy.config.cluster.v3.Cluster",
    "envoy.config.endpoint.v3.ClusterLoadAssignment",
    "envoy.config.bootstrap.v3.Bootstrap",
    "envoy.admin.v3.ConfigDump",
    "envoy.admin.v3.ClustersConfigDump",
    "envoy.admin.v3.ListenersConfigDump",
    "envoy.admin.v3.RoutesConfigDump",
    "envoy.admin.v3.EndpointsConfigDump",
    "envoy.admin.v3.SecretsConfigDump",
    "envoy.service.discovery.v3.DiscoveryResponse",
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.Secret",
    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "envoy.extensions.filters.http.router.v3.Router",
    "envoy.extensions.filters.http.fault.v3.HTTPFault",
    "envoy.extensions.filters.http.cors.v3.Cors",
    "envoy.extensions.filters.http.cors.v3.CorsPolicy",
    "envoy.extensions.filters.http.rbac.v3.RBAC",
    "envoy.extensions.filters.network.rbac.v3.RBAC",
    "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
    "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
    "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
    "envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
    "envoy.config.trace.v3.OpenTelemetryConfig",
    "google.protobuf.StringValue",
];

fn envoy_types_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let manifest = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("envoy-types is a dependency of the workspace");
    PathBuf::from(manifest).parent().expect("crate directory").to_path_buf()
}

fn main() {
    let source = envoy_types_dir().join("src/generated/types.bin");
    let all = FileDescriptorSet::decode(std::fs::read(&source).expect("types.bin").as_slice())
        .expect("a FileDescriptorSet");
    let files: HashMap<&str, &prost_types::FileDescriptorProto> =
        all.file.iter().map(|f| (f.name(), f)).collect();
    let defines = |file: &prost_types::FileDescriptorProto, name: &str| {
        let package = file.package();
        name.strip_prefix(package)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| file.message_type.iter().any(|m| m.name() == rest))
    };
    let mut wanted: Vec<&str> = ROOTS
        .iter()
        .map(|root| {
            all.file
                .iter()
                .find(|f| defines(f, root))
                .unwrap_or_else(|| panic!("no file defines {root}"))
                .name()
        })
        .collect();
    let mut kept = BTreeSet::new();
    while let Some(name) = wanted.pop() {
        if kept.insert(name) {
            let file = files.get(name).unwrap_or_else(|| panic!("missing import {name}"));
            wanted.extend(file.dependency.iter().map(String::as_str));
        }
    }
    // Dependencies before dependents, as descriptor pools expect.
    let ordered: Vec<prost_types::FileDescriptorProto> = all
        .file
        .iter()
        .filter(|f| kept.contains(f.name()))
        .map(|f| {
            // Comments are most of the bytes and none of the meaning.
            let mut f = f.clone();
            f.source_code_info = None;
            f
        })
        .collect();
    let set = FileDescriptorSet { file: ordered };
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/envoy/descriptors.bin");
    std::fs::write(&target, set.encode_to_vec()).expect("write descriptors");
    println!("{} files, {} bytes -> {}", set.file.len(), set.encoded_len(), target.display());
}
