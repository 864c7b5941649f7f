//! The analysis corpus: every `corpus/*.yaml` is analyzed (with the files its `# with:` lines
//! name) and must give exactly the findings its `# expect:` lines list, each as `CODE Kind
//! namespace/name`, optionally followed by `: message` to check the text too. `# expect: none`
//! marks a file that must analyze clean. Bookinfo's routing samples (`e2e/bookinfo`) must
//! analyze clean on top of Bookinfo's manifests.

#![allow(clippy::unwrap_used)] // Test harness: a panic is the failure report.

use std::path::{Path, PathBuf};

use mesh_analyze::{Finding, Input, analyze};
use pretty_assertions::assert_eq;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Loads files as `meshctl analyze -f` does (mixed kinds, `default` for objects without a
/// namespace) and analyzes them together.
fn analyze_files(files: &[PathBuf]) -> Vec<Finding> {
    let mut input = Input::default();
    for file in files {
        let mut part = Input::from_report(mesh_api::load::load_path_mixed(file));
        part.default_namespace("default");
        input.overlay(part);
    }
    analyze(&input)
}

/// A finding as an expectation line names it: with its message when the line has one.
fn as_expected(finding: &Finding, with_message: bool) -> String {
    let object = finding.object.as_ref().map_or("-".to_owned(), ToString::to_string);
    if with_message {
        format!("{} {object}: {}", finding.code, finding.message)
    } else {
        format!("{} {object}", finding.code)
    }
}

struct Case {
    with: Vec<PathBuf>,
    expected: Vec<String>,
}

fn read_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let mut case = Case { with: Vec::new(), expected: Vec::new() };
    let mut clean = false;
    for line in text.lines() {
        if let Some(file) = line.strip_prefix("# with: ") {
            case.with.push(path.parent().unwrap().join(file.trim()));
        } else if let Some(expected) = line.strip_prefix("# expect: ") {
            if expected.trim() == "none" {
                clean = true;
            } else {
                case.expected.push(expected.trim().to_owned());
            }
        }
    }
    assert!(
        clean == case.expected.is_empty(),
        "{}: say `# expect: none` or list the findings, not both",
        path.display()
    );
    case
}

#[test]
fn every_corpus_file_gives_exactly_the_findings_it_expects() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "the corpus is missing");
    let mut failures = Vec::new();
    for path in &cases {
        let case = read_case(path);
        let mut files = case.with.clone();
        files.push(path.clone());
        let findings = analyze_files(&files);
        let mut got: Vec<String> = findings
            .iter()
            .map(|f| {
                // Compare with the message only where the expectation for that object has one.
                let short = as_expected(f, false);
                let with_message = case
                    .expected
                    .iter()
                    .any(|e| e.starts_with(&format!("{short}: ")) || e == &as_expected(f, true));
                as_expected(f, with_message)
            })
            .collect();
        got.sort();
        let mut expected = case.expected.clone();
        expected.sort();
        if got != expected {
            let printed: Vec<String> = findings.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "{}\n  expected: {expected:#?}\n  got: {got:#?}\n  as printed:\n    {}",
                path.display(),
                printed.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn bookinfo_routing_samples_analyze_clean() {
    let bookinfo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/bookinfo");
    let base = [
        corpus().join("support/bookinfo.yaml"),
        corpus().join("support/ingress.yaml"),
        bookinfo.join("bookinfo-gateway.yaml"),
        bookinfo.join("destination-rule-all.yaml"),
    ];
    let mut samples: Vec<PathBuf> = std::fs::read_dir(&bookinfo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("virtual-service-"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 8, "{samples:?}");
    for sample in samples {
        let mut files = base.to_vec();
        files.push(sample.clone());
        let findings = analyze_files(&files);
        let printed: Vec<String> = findings.iter().map(ToString::to_string).collect();
        assert_eq!(printed, Vec::<String>::new(), "{}", sample.display());
    }
}

#[test]
fn the_bookinfo_directory_analyzes_clean_as_applied_in_order() {
    // The samples are steps of a task and share names: as `kubectl apply -f` would, a later
    // file's VirtualService replaces an earlier one of the same name, so nothing conflicts.
    let bookinfo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/bookinfo");
    let files =
        [corpus().join("support/bookinfo.yaml"), corpus().join("support/ingress.yaml"), bookinfo];
    let findings = analyze_files(&files);
    let printed: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert_eq!(printed, Vec::<String>::new());
}

#[test]
fn findings_of_one_service_are_those_of_the_objects_that_apply_to_it() {
    let files = [corpus().join("support/bookinfo.yaml"), corpus().join("vs-references.yaml")];
    let mut input = Input::default();
    for file in &files {
        let mut part = Input::from_report(mesh_api::load::load_path_mixed(file));
        part.default_namespace("default");
        input.overlay(part);
    }
    let related = mesh_analyze::related_to_service(&input, "default", "ratings");
    let names: Vec<String> = related.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            "Deployment default/ratings-v1",
            "Namespace default",
            "Service default/ratings",
            "VirtualService default/ratings",
        ]
    );
}
