//! Writes the mesh's CRDs, generated from the `mesh-api` types, into a directory
//! (`make crds` runs it for `charts/base/crds`).
//!
//! ```text
//! cargo run -p mesh-api --example write_crds -- charts/base/crds
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: write_crds <directory>");
        return ExitCode::from(2);
    };
    let files = match mesh_api::crds::render() {
        Ok(files) => files,
        Err(err) => {
            eprintln!("error: cannot render the CRDs: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create {}: {err}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, yaml) in files {
        let path = dir.join(&name);
        if let Err(err) = std::fs::write(&path, yaml) {
            eprintln!("error: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
