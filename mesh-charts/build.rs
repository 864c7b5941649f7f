//! Embeds every file under `../charts` (the charts Helm users install) into the crate: a static
//! table of (path relative to `charts/`, contents), so `meshctl install` renders exactly the
//! files a `helm install` of the same checkout would.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let charts = manifest_dir.join("..").join("charts").canonicalize()?;
    println!("cargo:rerun-if-changed={}", charts.display());
    let mut files = Vec::new();
    walk(&charts, &charts, &mut files)?;
    files.sort();
    let mut out = String::from(
        "/// Every file under `charts/` (dot files left out): its path relative to `charts/`, with\n\
         /// `/` separators, and its text.\n\
         pub(crate) static FILES: &[(&str, &str)] = &[\n",
    );
    for (relative, absolute) in &files {
        println!("cargo:rerun-if-changed={}", absolute.display());
        writeln!(out, "    ({relative:?}, include_str!({:?})),", absolute.display().to_string())?;
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR")?).join("charts.rs");
    std::fs::write(dest, out)?;
    Ok(())
}

/// Collects the files under `dir`, skipping dot files and dot directories (`.helmignore` is
/// Helm's packaging concern, not a chart file to render).
fn walk(
    root: &Path,
    dir: &Path,
    files: &mut Vec<(String, PathBuf)>,
) -> Result<(), Box<dyn std::error::Error>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            walk(root, &path, files)?;
        } else {
            let text = std::fs::read(&path)?;
            if std::str::from_utf8(&text).is_err() {
                return Err(format!("{} is not UTF-8 text", path.display()).into());
            }
            let relative = path
                .strip_prefix(root)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.push((relative, path));
        }
    }
    Ok(())
}
