//! `meshctl analyze` and `meshctl validate` as a user runs them: the built binary on the
//! analysis corpus, files, directories and standard input, checking the printed lines and the
//! exit codes.

#![allow(clippy::unwrap_used)] // Test harness: a panic is the failure report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pretty_assertions::assert_eq;

/// The workspace root: paths in the output are relative to it.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn meshctl(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .current_dir(root())
        // No local mesh and no cluster: `-k` must not find one by accident.
        .env("MESH_LOCAL_STATE", "/nonexistent/meshctl-test-state")
        .env("KUBECONFIG", "/nonexistent/meshctl-test-kubeconfig")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

const CORPUS: &str = "mesh-analyze/tests/corpus";
const FOUND_ISSUES: &str = "Error: Analyzers found issues when analyzing namespace: default.\nSee https://istio.io/latest/docs/reference/config/analysis for more information about causes and resolutions.\n";

#[test]
fn findings_are_printed_as_istioctl_prints_them_and_exit_79() {
    let run = meshctl(
        &[
            "analyze",
            "-f",
            &format!("{CORPUS}/support/bookinfo.yaml"),
            "-f",
            &format!("{CORPUS}/vs-references.yaml"),
        ],
        None,
    );
    let file = format!("{CORPUS}/vs-references.yaml:11");
    let expected: Vec<String> = [
        "Referenced gateway not found: \"ratings-gateway\"",
        "Referenced host not found: \"ratings2\"",
        "Referenced host+subset in destinationrule not found: \"ratings+v9\"",
        "Referenced host:port not found: \"ratings:9090\"",
        "Referenced mirror host not found: \"shadow\"",
        "Referenced mirror+subset in destinationrule not found: \"ratings+v1\"",
    ]
    .iter()
    .map(|m| format!("Error [IST0101] (VirtualService default/ratings {file}) {m}"))
    .collect();
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), expected);
    assert_eq!(run.stderr, FOUND_ISSUES);
    assert_eq!(run.code, 79);
}

#[test]
fn bookinfo_analyzes_clean() {
    let run = meshctl(
        &[
            "analyze",
            "-f",
            &format!("{CORPUS}/support/bookinfo.yaml"),
            "-f",
            &format!("{CORPUS}/support/ingress.yaml"),
            "-f",
            "e2e/bookinfo/bookinfo-gateway.yaml",
            "-f",
            "e2e/bookinfo/destination-rule-all.yaml",
            "-f",
            "e2e/bookinfo/virtual-service-reviews-80-20.yaml",
        ],
        None,
    );
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "\u{2714} No validation issues found when analyzing namespace: default.\n"
    );
    assert_eq!(run.code, 0);
}

#[test]
fn a_directory_and_standard_input_are_read_like_files() {
    // The directory of Bookinfo's samples, their Services read from standard input.
    let bookinfo =
        std::fs::read_to_string(root().join(CORPUS).join("support/bookinfo.yaml")).unwrap();
    let ingress =
        std::fs::read_to_string(root().join(CORPUS).join("support/ingress.yaml")).unwrap();
    let run = meshctl(
        &["analyze", "-f", "-", "-f", "e2e/bookinfo"],
        Some(&format!("{bookinfo}---\n{ingress}")),
    );
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{}", run.stderr);
    // Without the Services every destination is unknown: standard input was what made it
    // clean. Later files replace the earlier objects of the same name, as applied in order.
    let run = meshctl(&["analyze", "e2e/bookinfo", "--output-threshold", "Error"], None);
    assert_eq!(run.code, 79);
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            "Error [IST0101] (VirtualService default/bookinfo e2e/bookinfo/bookinfo-gateway.yaml:18) Referenced host not found: \"productpage\"",
            "Error [IST0101] (VirtualService default/details e2e/bookinfo/virtual-service-all-v1.yaml:26) Referenced host not found: \"details\"",
            "Error [IST0101] (VirtualService default/productpage e2e/bookinfo/virtual-service-all-v1.yaml:2) Referenced host not found: \"productpage\"",
            "Error [IST0101] (VirtualService default/ratings e2e/bookinfo/virtual-service-reviews-v2-timeout.yaml:12) Referenced host not found: \"ratings\"",
            "Error [IST0101] (VirtualService default/reviews e2e/bookinfo/virtual-service-reviews-v3.yaml:2) Referenced host not found: \"reviews\"",
        ]
    );
}

#[test]
fn kinds_no_check_needs_are_skipped_and_the_others_read() {
    let run = meshctl(&["analyze", "-A", "-f", &format!("{CORPUS}/mixed-kinds.yaml")], None);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "\u{2714} No validation issues found when analyzing all namespaces.\n");
    assert_eq!(run.code, 0);
}

#[test]
fn namespaces_and_thresholds_choose_what_is_reported() {
    let file = format!("{CORPUS}/injection.yaml");
    // Namespace `web` holds the pod without its sidecar (a Warning): not an error by default.
    let run = meshctl(&["analyze", "-n", "web", "-f", &file], None);
    assert_eq!(
        run.stdout,
        format!(
            "Warning [IST0103] (Pod web/frontend-1 {file}:22) The pod web/frontend-1 is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.\n"
        )
    );
    assert_eq!(run.code, 0);
    let run =
        meshctl(&["analyze", "-n", "web", "--failure-threshold", "warning", "-f", &file], None);
    assert_eq!(run.code, 79);
    let run = meshctl(&["analyze", "-A", "-o", "json", "-f", &file], None);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let codes: Vec<&str> =
        json.as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["IST0103", "IST0102"]);
    assert_eq!(json[1]["origin"], "Namespace orders");
    let run = meshctl(
        &["analyze", "-A", "-o", "yaml", "-f", &file, "--output-threshold", "Warning"],
        None,
    );
    assert!(run.stdout.starts_with("- code: IST0103\n"), "{}", run.stdout);
}

#[test]
fn an_unreadable_file_is_an_error_not_a_finding() {
    let run = meshctl(&["analyze", "-f", "no/such/file.yaml"], None);
    assert_eq!(run.code, 1);
    assert!(run.stderr.starts_with("error: no/such/file.yaml: cannot read:"), "{}", run.stderr);
    let run = meshctl(&["validate", "-f", "-", "-f", "-"], None);
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr, "error: `-` (standard input) may be given only once\n");
}

#[test]
fn analyze_without_files_reads_the_live_mesh_and_says_when_there_is_none() {
    let run = meshctl(&["analyze"], None);
    assert_eq!(run.code, 1);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert_eq!(run.stdout, "");
}

#[test]
fn validate_prints_each_problem_with_file_line_field_and_reason() {
    let run = meshctl(&["validate", "-f", &format!("{CORPUS}/schema.yaml")], None);
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [
            format!(
                "error: {CORPUS}/schema.yaml:38: DestinationRule typo: spec.trafficPolicy.loadBalancr: unknown field `loadBalancr`, expected one of loadBalancer, connectionPool, outlierDetection, tls, portLevelSettings, tunnel, proxyProtocol, retryBudget"
            ),
            format!(
                "error[weights-not-100]: {CORPUS}/schema.yaml:22: VirtualService weights: spec.http[0].route: weights add up to 90: they must sum to 100"
            ),
        ]
    );
    assert_eq!(
        run.stderr,
        format!(
            "warning: {CORPUS}/schema.yaml:40: document 5: EnvoyFilter lua is read but not enforced: the mesh does not implement EnvoyFilter\n"
        )
    );
    assert_eq!(run.code, 1);
}

#[test]
fn validate_accepts_valid_files_whatever_else_they_hold() {
    let run = meshctl(
        &["validate", "-f", &format!("{CORPUS}/mixed-kinds.yaml"), "-f", "e2e/bookinfo"],
        None,
    );
    assert_eq!(
        run.stdout,
        format!("\"{CORPUS}/mixed-kinds.yaml\" is valid\n\"e2e/bookinfo\" is valid\n")
    );
    assert_eq!(run.code, 0);
    let run = meshctl(
        &["validate", "-f", "-"],
        Some(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {selector: {}, template: {}}\n",
        ),
    );
    assert_eq!((run.code, run.stdout.as_str()), (0, "validation succeed\n"));
    let run = meshctl(
        &["validate", "-o", "json", "-f", "-"],
        Some(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {servers: [{port: {number: 99999, name: http, protocol: HTTP}, hosts: ['*']}]}\n",
        ),
    );
    assert_eq!(run.code, 1);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json[0]["file"], "<stdin>");
    assert_eq!(json[0]["field"], "spec.servers[0].port.number");
    assert_eq!(json[0]["code"], "port-out-of-range");
}
