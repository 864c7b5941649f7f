//! Prints what an installation renders, as `helm template` would: the CRDs, then every
//! manifest of every release, each with its `# Source:`.
//!
//! `cargo run -p mesh-charts --example render -- [--profile NAME] [--namespace NS] [-f FILE]...
//! [--set KEY=VALUE]...`

use std::process::ExitCode;

use mesh_charts::{Capabilities, Overrides, ValuesFile};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("render: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut overrides = Overrides::default();
    let mut namespace = "mesh-system".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--profile" => overrides.profile = Some(value()?.parse()?),
            "--namespace" | "-n" => namespace = value()?,
            "--set" => overrides.set.push(value()?),
            "-f" | "--values" => {
                let name = value()?;
                let text = std::fs::read_to_string(&name)?;
                overrides.files.push(ValuesFile { name, text });
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    for release in mesh_charts::plan(&overrides, &namespace)? {
        for crd in release.crds()? {
            println!("---\n# Source: {}/{}\n{}", release.chart, crd.path, crd.contents.trim_end());
        }
        for manifest in release.render(&Capabilities::default())? {
            print!("---\n{manifest}");
        }
    }
    Ok(())
}
