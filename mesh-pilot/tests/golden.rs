//! Golden translation tests: every VirtualService and DestinationRule feature of
//! `tests/data/golden/mesh.yaml`, as served to one sidecar, is pinned in `tests/golden/sidecar/`
//! as Envoy-style JSON (one file per type). A change to the translation shows up as a readable
//! diff; `UPDATE_GOLDEN=1 cargo test -p mesh-pilot --test golden` rewrites the files.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::PathBuf;

mod common;
use common::{frontend, golden_mesh};

use mesh_pilot::model::{Proxy, Snapshot};
use mesh_pilot::translate;

/// One type's resources as pretty JSON, the way Envoy's config dump writes them.
fn render(type_url: &str, snapshot: &Snapshot, proxy: &Proxy) -> String {
    let resources = translate::generate(type_url, snapshot, proxy).unwrap();
    let json: Vec<serde_json::Value> = resources
        .iter()
        .map(|(name, any)| {
            mesh_api::envoy::to_json(&any.type_url, &any.value)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect();
    format!("{:#}\n", serde_json::Value::Array(json))
}

const FILES: [(&str, &str); 4] = [
    (mesh_api::xds::CLUSTER_TYPE, "cds.json"),
    (mesh_api::xds::ENDPOINT_TYPE, "eds.json"),
    (mesh_api::xds::LISTENER_TYPE, "lds.json"),
    (mesh_api::xds::ROUTE_TYPE, "rds.json"),
];

#[test]
fn every_feature_matches_its_golden_file() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sidecar");
    let (snapshot, proxy) = (golden_mesh(), frontend());
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for (type_url, file) in FILES {
        let rendered = render(type_url, &snapshot, &proxy);
        let path = dir.join(file);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        if rendered != expected {
            stale.push(file);
            pretty_assertions::assert_eq!(expected, rendered, "{file} differs");
        }
    }
    assert!(stale.is_empty(), "stale golden files: {stale:?}");
}

#[test]
fn translating_the_same_snapshot_twice_gives_the_same_bytes() {
    // Versions and push decisions hash the encoded bytes: a translation that encodes the
    // same content differently (map order) would push unchanged config to every proxy.
    let (snapshot, proxy) = (golden_mesh(), frontend());
    for (type_url, file) in FILES {
        let first = translate::generate(type_url, &snapshot, &proxy).unwrap();
        let second = translate::generate(type_url, &snapshot.clone(), &proxy).unwrap();
        for ((name, a), (_, b)) in first.iter().zip(second.iter()) {
            assert!(a == b, "{file}: {name} encodes differently on a second translation");
        }
    }
}
