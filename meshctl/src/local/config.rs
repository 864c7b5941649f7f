//! `apply` and `delete`: routing and policy YAML into the pilot's directory, one file per object
//! (so applying an object again replaces it, as `kubectl apply` does), validated first: if any
//! document is invalid nothing is written and every problem is named (file, line, field).

use std::path::{Path, PathBuf};

use mesh_api::load::{self, LoadReport, Loaded};
use mesh_api::{ObjectRef, Resource};

use super::state::StateDir;
use super::{LocalError, running};

/// The `-f` flags of `apply` and `delete`.
#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// A YAML or JSON file, a directory of them, or `-` for standard input (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// `delete`: an object that is not there is not an error.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// The objects in `files`, or every load and validation problem in them.
fn load_checked(files: &[String], validate: bool) -> Result<Vec<Loaded>, LocalError> {
    let mut report = LoadReport::default();
    for file in files {
        let part = if file == "-" { load::load_stdin() } else { load::load_path(Path::new(file)) };
        if part.objects.is_empty() && part.errors.is_empty() && part.warnings.is_empty() {
            return Err(LocalError::Refused(format!("{file}: no YAML or JSON objects found")));
        }
        report.objects.extend(part.objects);
        report.errors.extend(part.errors);
        report.warnings.extend(part.warnings);
    }
    // Kinds the mesh does not implement: said, not applied, and no reason to refuse the rest.
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let mut problems: Vec<String> = report.errors.iter().map(|e| format!("error: {e}")).collect();
    if validate {
        for loaded in &report.objects {
            for err in mesh_api::validate::resource(&loaded.resource) {
                problems.push(format!("error[{}]: {}: {err}", err.code, loaded.origin));
            }
            if let Resource::Service(svc) = &loaded.resource {
                let has_vip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_ref()).is_some();
                if !has_vip {
                    problems.push(format!(
                        "error: {}: {}: a Service needs a clusterIP in the local mesh: give it one, or use `meshctl local service`",
                        loaded.origin,
                        loaded.resource.object_ref()
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(report.objects)
    } else {
        Err(LocalError::Invalid { count: problems.len(), report: problems.join("\n") })
    }
}

/// `kind.group/name`, as kubectl prints an object.
fn display_name(object: &ObjectRef) -> String {
    let group = match object.kind.as_str() {
        "PeerAuthentication" | "AuthorizationPolicy" | "RequestAuthentication" => {
            ".security.istio.io"
        }
        "Telemetry" => ".telemetry.istio.io",
        "HTTPRoute" | "GRPCRoute" | "TLSRoute" | "ReferenceGrant" | "GatewayClass" => {
            ".gateway.networking.k8s.io"
        }
        // Core kinds, and the Gateway API's Gateway (its kind already names its group).
        kind if matches!(kind, "Service" | "Namespace" | "Secret") || kind.contains('.') => "",
        _ => ".networking.istio.io",
    };
    format!("{}{group}/{}", object.kind.to_lowercase(), object.name)
}

/// The file an object is kept in.
fn object_file(config_dir: &Path, object: &ObjectRef) -> PathBuf {
    let namespace = object.namespace.as_deref().unwrap_or("default");
    config_dir.join("applied").join(format!(
        "{}.{namespace}.{}.yaml",
        object.kind.to_lowercase(),
        object.name
    ))
}

/// `meshctl local apply -f ...`.
pub fn apply(dir: &StateDir, args: &FileArgs) -> Result<(), LocalError> {
    let state = running(dir)?;
    let objects = load_checked(&args.files, true)?;
    for loaded in &objects {
        let object = loaded.resource.object_ref();
        let path = object_file(&state.config_dir, &object);
        let text = loaded.resource.to_yaml().map_err(|e| {
            LocalError::Refused(format!("{}: {object}: cannot be written: {e}", loaded.origin))
        })?;
        let text = format!("# Applied by meshctl local from {}\n{text}", loaded.origin.file);
        let verb = match std::fs::read_to_string(&path) {
            Ok(old) if old == text => "unchanged",
            Ok(_) => "configured",
            Err(_) => "created",
        };
        if verb != "unchanged" {
            // Written aside and renamed: the pilot never reads half a file.
            let temporary = path.with_extension("yaml.tmp");
            std::fs::write(&temporary, &text)
                .and_then(|()| std::fs::rename(&temporary, &path))
                .map_err(|e| LocalError::Io(format!("cannot write {}", path.display()), e))?;
        }
        println!("{} {verb}", display_name(&object));
    }
    Ok(())
}

/// `meshctl local delete -f ...`.
pub fn delete(dir: &StateDir, args: &FileArgs) -> Result<(), LocalError> {
    let state = running(dir)?;
    let objects = load_checked(&args.files, false)?;
    let mut missing = Vec::new();
    for loaded in &objects {
        let object = loaded.resource.object_ref();
        let path = object_file(&state.config_dir, &object);
        match std::fs::remove_file(&path) {
            Ok(()) => println!("{} deleted", display_name(&object)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(format!("{} not found", display_name(&object)));
            }
            Err(e) => return Err(LocalError::Io(format!("cannot remove {}", path.display()), e)),
        }
    }
    if missing.is_empty() || args.ignore_not_found {
        Ok(())
    } else {
        Err(LocalError::Refused(missing.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn invalid_files_are_reported_whole_and_nothing_passes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(
            &file,
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: 150\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 80}]\n",
        )
        .unwrap();
        let Err(LocalError::Invalid { count, report }) =
            load_checked(&[file.display().to_string()], true)
        else {
            panic!("accepted")
        };
        assert_eq!(count, 2, "{report}");
        assert!(report.contains("bad.yaml:1"), "{report}");
        assert!(report.contains("spec.http[0].route[0].weight"), "{report}");
        assert!(report.contains("clusterIP"), "{report}");
    }

    #[test]
    fn objects_are_named_as_kubectl_names_them() {
        let object =
            ObjectRef { kind: "DestinationRule".into(), namespace: None, name: "reviews".into() };
        assert_eq!(display_name(&object), "destinationrule.networking.istio.io/reviews");
        let named = |kind: &str| {
            display_name(&ObjectRef { kind: kind.into(), namespace: None, name: "x".into() })
        };
        assert_eq!(named("Telemetry"), "telemetry.telemetry.istio.io/x");
        assert_eq!(named("HTTPRoute"), "httproute.gateway.networking.k8s.io/x");
        assert_eq!(
            named("Gateway.gateway.networking.k8s.io"),
            "gateway.gateway.networking.k8s.io/x"
        );
        assert_eq!(named("Secret"), "secret/x");
        assert_eq!(
            object_file(Path::new("/c"), &object),
            Path::new("/c/applied/destinationrule.default.reviews.yaml")
        );
    }
}
