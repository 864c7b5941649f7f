//! Golden tests of the rule plan: the `--dry-run` output for each kind of flag.
//! `UPDATE_GOLDEN=1 cargo test -p mesh-init --test plan` rewrites the files after a deliberate
//! change; review the diff before committing it.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use std::path::PathBuf;

use clap::Parser;
use mesh_init::capture;
use mesh_init::config::{Config, Flags};

fn golden(name: &str, args: &[&str]) {
    let mut all = vec!["mesh-init"];
    all.extend_from_slice(args);
    let config = Config::from_flags(&Flags::try_parse_from(all).unwrap()).unwrap();
    let actual = capture::dry_run(&config);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.golden"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!("{}: {err} (run with UPDATE_GOLDEN=1 to create it)", path.display())
    });
    pretty_assertions::assert_eq!(actual, expected, "{name}: plan differs from {}", path.display());
}

#[test]
fn defaults() {
    golden("defaults", &[]);
}

#[test]
fn include_and_exclude_ports() {
    golden("ports", &["--ipv6", "off", "-b", "8080,9090", "-q", "3306", "-o", "5432,6379"]);
}

#[test]
fn inbound_exclude_ports() {
    golden("inbound-exclude-ports", &["--ipv6", "off", "-d", "15090,15021,15020,9000"]);
}

#[test]
fn include_and_exclude_cidrs_v4_and_v6() {
    golden(
        "cidrs",
        &["-i", "10.96.0.0/12,fd00:96::/108", "-x", "10.96.0.1/32,fd00:96::1/128,169.254.169.254"],
    );
}

#[test]
fn excluded_interface() {
    golden("exclude-interface", &["--ipv6", "off", "-c", "eth1,net2"]);
}

#[test]
fn dns_capture() {
    golden("dns", &["--ipv6", "off", "--redirect-dns"]);
}

#[test]
fn several_uids_and_gids() {
    golden("uids", &["--ipv6", "off", "-u", "1337,1338", "-g", "1337,2000"]);
}

#[test]
fn inbound_disabled() {
    golden("inbound-disabled", &["--ipv6", "off", "-b", ""]);
}

#[test]
fn outbound_disabled() {
    golden("outbound-disabled", &["--ipv6", "off", "-i", ""]);
}

#[test]
fn ipv6_forced() {
    golden("ipv6-on", &["--ipv6", "on", "-p", "16001", "-z", "16006"]);
}

/// Runs the binary with a PATH that has no iptables: it must say so and fail.
#[test]
fn missing_iptables_is_a_clear_error() {
    let empty = std::env::temp_dir().join(format!("mesh-init-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-init"))
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was not found in PATH: install the iptables package"), "{stderr}");
}

#[test]
fn invalid_flag_names_flag_and_value_and_exits_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-init"))
        .args(["--dry-run", "-x", "10.0.0.0/8,300.1.1.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid --outbound-exclude-ip-ranges value \"300.1.1.1\": \"300.1.1.1\" is not an IPv4 or IPv6 address"),
        "{stderr}"
    );
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    // No iptables on PATH: a dry run must not need it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-init"))
        .env("PATH", "/nonexistent")
        .args(["--dry-run", "--ipv6", "off"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001"), "{stdout}");
}

/// What the injector puts in a pod's `mesh-init` container is what mesh-init reads: every
/// capture annotation of the injector's golden pod parses, and turns into the rules it names.
#[test]
fn the_injected_init_container_is_a_valid_command_line() {
    use mesh_api::inject::{Config as InjectConfig, Outcome, inject};
    let pod = k8s_openapi::api::core::v1::PodTemplateSpec {
        metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            annotations: Some(
                [
                    ("traffic.sidecar.mesh.io/includeInboundPorts", "8080"),
                    ("traffic.sidecar.mesh.io/excludeOutboundPorts", "5432"),
                    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "169.254.169.254/32"),
                    ("traffic.sidecar.mesh.io/excludeInterfaces", "eth1"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ),
            ..Default::default()
        }),
        spec: Some(k8s_openapi::api::core::v1::PodSpec::default()),
    };
    let Outcome::Injected(injected) = inject(&pod, None, &InjectConfig::default()).unwrap() else {
        panic!("not injected")
    };
    let spec = injected.spec.unwrap();
    let init = spec.init_containers.unwrap().into_iter().find(|c| c.name == "mesh-init").unwrap();
    let mut all = vec!["mesh-init".to_owned(), "--ipv6".to_owned(), "off".to_owned()];
    all.extend(init.args.unwrap());
    let config = Config::from_flags(&Flags::try_parse_from(&all).unwrap()).unwrap();
    let plan = capture::dry_run(&config);
    for want in ["--dport 8080", "--dport 5432", "169.254.169.254/32", "-i eth1"] {
        assert!(plan.contains(want), "{want:?} not in the plan:\n{plan}");
    }
}
