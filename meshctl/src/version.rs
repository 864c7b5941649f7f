//! `meshctl version`: the client's version, and, when a mesh is reachable, each control-plane
//! component's (their `/version`) and the proxies' (what each told the pilot), as `istioctl
//! version` prints them.

use std::collections::BTreeMap;

use clap::Args;
use mesh_api::ports;
use serde::Deserialize;

use crate::access::{self, Mesh, MeshArgs, SyncStatus, Target};

/// Flags of `meshctl version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// The client's version only; do not look for a mesh.
    #[arg(long)]
    pub client: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// Which mesh.
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// Output formats of `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Lines for people.
    Text,
    /// JSON for scripts.
    Json,
}

/// What `/version` answers.
#[derive(Debug, Deserialize)]
struct ComponentVersion {
    version: String,
}

/// What was found: the client's version, each component's (or why it is not known), and the
/// proxies' versions with how many run each.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Versions {
    /// The mesh looked into, if one was.
    pub mesh: Option<String>,
    /// `mesh-pilot` and `mesh-ca`: a version, or why there is none.
    pub control_plane: Vec<(String, Result<String, String>)>,
    /// Proxy version (`mesh-proxy/0.1.0`) to how many proxies run it.
    pub data_plane: BTreeMap<String, usize>,
}

/// Counts the proxies of each version in `/debug/syncz`.
pub fn data_plane(statuses: &[SyncStatus]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for status in statuses {
        let version = if status.version.is_empty() { "unknown" } else { &status.version };
        *counts.entry(version.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Asks each component of `mesh` for its version.
pub fn collect(mesh: &dyn Mesh) -> Versions {
    let port = ports::CONTROL_PLANE_MONITORING;
    let ask = |target: Target| -> Result<String, String> {
        let text = access::get(mesh, &target, port, "/version").map_err(|e| e.to_string())?;
        serde_json::from_str::<ComponentVersion>(&text)
            .map(|v| v.version)
            .map_err(|e| format!("/version is not the expected JSON: {e}"))
    };
    let control_plane = vec![
        ("mesh-pilot".to_owned(), ask(Target::Pilot)),
        ("mesh-ca".to_owned(), ask(Target::Ca)),
    ];
    let data_plane = access::syncz(mesh).map(|(_, s)| data_plane(&s)).unwrap_or_default();
    Versions { mesh: Some(mesh.describe()), control_plane, data_plane }
}

/// The lines `meshctl version` prints.
pub fn render(client: &str, versions: &Versions, output: Output) -> String {
    match output {
        Output::Json => {
            let control: serde_json::Map<String, serde_json::Value> = versions
                .control_plane
                .iter()
                .map(|(name, v)| {
                    let value = match v {
                        Ok(version) => serde_json::json!({ "version": version }),
                        Err(error) => serde_json::json!({ "error": error }),
                    };
                    (name.clone(), value)
                })
                .collect();
            let json = serde_json::json!({
                "client": { "version": client },
                "mesh": versions.mesh,
                "controlPlane": control,
                "dataPlane": versions.data_plane,
            });
            format!("{json:#}\n")
        }
        Output::Text => {
            let mut out = format!("client version: {client}\n");
            for (name, version) in &versions.control_plane {
                match version {
                    Ok(v) => out.push_str(&format!("{name} version: {v}\n")),
                    Err(why) => out.push_str(&format!("{name} version: unknown ({why})\n")),
                }
            }
            if versions.mesh.is_some() {
                if versions.data_plane.is_empty() {
                    out.push_str("data plane version: none (no proxy is connected)\n");
                }
                for (version, count) in &versions.data_plane {
                    let plural = if *count == 1 { "proxy" } else { "proxies" };
                    out.push_str(&format!("data plane version: {version} ({count} {plural})\n"));
                }
            }
            out
        }
    }
}

/// Runs `meshctl version`; a mesh that cannot be reached is said, not an error (the client's
/// version is still an answer).
pub fn run(args: &VersionArgs) -> i32 {
    let client = env!("CARGO_PKG_VERSION");
    let versions = if args.client {
        Versions::default()
    } else {
        match access::choose(&args.mesh) {
            Ok(mesh) => collect(mesh.as_ref()),
            Err(e) => {
                eprintln!("no mesh to ask: {e}");
                Versions::default()
            }
        }
    };
    print!("{}", render(client, &versions, args.output));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_each_component_and_counts_the_proxies_per_version() {
        let statuses: Vec<SyncStatus> = serde_json::from_str(
            r#"[{"proxy":"sidecar~10.77.0.10~a.default~default.svc.cluster.local","version":"mesh-proxy/0.1.0"},
                {"proxy":"sidecar~10.77.0.11~b.default~default.svc.cluster.local","version":"mesh-proxy/0.1.0"},
                {"proxy":"sidecar~10.77.0.12~c.default~default.svc.cluster.local","version":"envoy/1.34.1"},
                {"proxy":"sidecar~10.77.0.13~d.default~default.svc.cluster.local"}]"#,
        )
        .unwrap();
        let versions = Versions {
            mesh: Some("the local mesh".into()),
            control_plane: vec![
                ("mesh-pilot".into(), Ok("0.1.0".into())),
                ("mesh-ca".into(), Err("connection refused".into())),
            ],
            data_plane: data_plane(&statuses),
        };
        assert_eq!(
            render("0.1.0", &versions, Output::Text),
            "client version: 0.1.0\n\
             mesh-pilot version: 0.1.0\n\
             mesh-ca version: unknown (connection refused)\n\
             data plane version: envoy/1.34.1 (1 proxy)\n\
             data plane version: mesh-proxy/0.1.0 (2 proxies)\n\
             data plane version: unknown (1 proxy)\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render("0.1.0", &versions, Output::Json)).unwrap();
        assert_eq!(json["controlPlane"]["mesh-ca"]["error"], "connection refused");
        assert_eq!(json["dataPlane"]["mesh-proxy/0.1.0"], 2);
    }

    #[test]
    fn the_client_alone_prints_one_line() {
        assert_eq!(render("0.1.0", &Versions::default(), Output::Text), "client version: 0.1.0\n");
    }
}
