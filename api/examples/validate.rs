//! Loads Istio config files (or a directory, or `-` for stdin) and reports every load and
//! validation error with its file, line and field (and a validation error's code), the way the
//! pilot and `meshctl analyze` see them. Exits 1 when anything is wrong.
//!
//! ```text
//! cargo run -p mesh-api --example validate -- api/tests/data/canary.yaml
//! ```

use std::path::Path;
use std::process::ExitCode;

use mesh_api::load::{self, LoadReport};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: validate <file|directory|->...");
        return ExitCode::from(2);
    }
    let mut report = LoadReport::default();
    for arg in &args {
        let part = if arg == "-" { load::load_stdin() } else { load::load_path(Path::new(arg)) };
        report.objects.extend(part.objects);
        report.errors.extend(part.errors);
    }
    let mut problems = report.errors.len();
    for err in &report.errors {
        println!("error: {err}");
    }
    for loaded in &report.objects {
        for err in mesh_api::validate::resource(&loaded.resource) {
            problems += 1;
            println!("error[{}]: {}: {err}", err.code, loaded.origin);
        }
    }
    println!("{} objects read, {problems} problems", report.objects.len());
    if problems == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
