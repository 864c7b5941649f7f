//! `meshctl analyze` and `meshctl validate`: files (and, for analyze, the live mesh's config)
//! read as `kubectl apply` takes them, any Kubernetes kind beside the mesh's, then
//! [`mesh_analyze::analyze`] or `mesh-api`'s validation alone. Output, namespaces, thresholds
//! and exit codes follow `istioctl analyze` and `istioctl validate`.

use std::io::Write;
use std::path::Path;

use mesh_analyze::{Finding, Input, Level};
use mesh_api::load::{self, LoadErrorKind, LoadReport};

/// The exit code when findings reach the failure threshold, as istioctl's.
pub const FOUND_ISSUES: i32 = 79;

/// Where `istioctl analyze` sends people for the meaning of each code.
const ANALYSIS_DOCS: &str = "https://istio.io/latest/docs/reference/config/analysis";

/// How findings and problems are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One line each, as istioctl prints them.
    Log,
    /// A JSON array.
    Json,
    /// A YAML list.
    Yaml,
}

/// `meshctl analyze`'s flags.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Exit codes: 0 when no finding reaches --failure-threshold, 79 when one does, 1 when the input cannot be read.\n\nExamples:\n  meshctl analyze -f bookinfo/\n  meshctl analyze -k -n bookinfo\n  meshctl analyze -k -f new-routes.yaml     (the live mesh with the file applied)\n  kubectl get vs,dr -A -o yaml | meshctl analyze -A -f -"
)]
pub struct AnalyzeArgs {
    /// A YAML or JSON file, a directory of them, or `-` for standard input (repeatable). Any
    /// Kubernetes kind may be in them: the ones no check needs are skipped.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// Files as arguments, as `istioctl analyze a.yaml b/` takes them.
    #[arg(value_name = "FILE", conflicts_with = "files")]
    pub paths: Vec<String>,
    /// Report the findings of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// The namespace to report (default: `default`); objects that name none are put in it.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Also read the live mesh's config (the files, if any, are applied on top of it). The
    /// default when no file is given.
    #[arg(short = 'k', long = "use-kube")]
    pub use_kube: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Log)]
    pub output: Output,
    /// The least severe level (Info, Warning, Error) that makes the exit code 79.
    #[arg(long, default_value = "Error", value_parser = parse_level)]
    pub failure_threshold: Level,
    /// The least severe level printed.
    #[arg(long, default_value = "Info", value_parser = parse_level)]
    pub output_threshold: Level,
}

impl AnalyzeArgs {
    /// Whether the live mesh's config is to be read: `-k`, or no file at all (as istioctl
    /// analyzes the cluster by default).
    pub fn wants_live(&self) -> bool {
        self.use_kube || (self.files.is_empty() && self.paths.is_empty())
    }

    fn inputs(&self) -> &[String] {
        if self.files.is_empty() { &self.paths } else { &self.files }
    }
}

/// `meshctl validate`'s flags.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Exit codes: 0 when every object is valid, 1 otherwise.\n\nExamples:\n  meshctl validate -f routes.yaml\n  kubectl get vs -A -o yaml | meshctl validate -f -"
)]
pub struct ValidateArgs {
    /// A YAML or JSON file, a directory of them, or `-` for standard input (repeatable). Kinds
    /// the mesh does not read are skipped.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", required = true)]
    pub files: Vec<String>,
    /// Output format of the problems.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Log)]
    pub output: Output,
}

fn parse_level(text: &str) -> Result<Level, String> {
    Level::parse(text).ok_or_else(|| format!("{text:?} is not a level: use Info, Warning or Error"))
}

/// Why a command could not run (findings are not errors: they make the exit code).
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// A file or directory could not be read.
    #[error("{0}")]
    Read(String),
    /// Standard input was named twice.
    #[error("`-` (standard input) may be given only once")]
    StdinTwice,
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Write(#[from] std::io::Error),
    /// The findings could not be encoded.
    #[error("cannot encode the output as YAML: {0}")]
    Yaml(String),
}

/// Reads files as `kubectl apply -f` takes them: a file, a directory, or `-`.
fn read_files(files: &[String]) -> Result<LoadReport, AnalyzeError> {
    let mut report = LoadReport::default();
    let mut stdin_read = false;
    for file in files {
        let part = if file == "-" {
            if std::mem::replace(&mut stdin_read, true) {
                return Err(AnalyzeError::StdinTwice);
            }
            load::load_stdin_mixed()
        } else {
            load::load_path_mixed(Path::new(file))
        };
        // A file that cannot be read at all is no finding: there is nothing to analyze.
        if let Some(err) = part.errors.iter().find(|e| matches!(e.kind, LoadErrorKind::Io(_))) {
            return Err(AnalyzeError::Read(err.to_string()));
        }
        report.objects.extend(part.objects);
        report.errors.extend(part.errors);
        report.warnings.extend(part.warnings);
        report.kubernetes.extend(part.kubernetes);
        report.skipped.extend(part.skipped);
    }
    Ok(report)
}

/// The input of the live documents (origin, text) and the files on top of them, objects
/// without a namespace put in `namespace`.
fn build_input(live: &[(String, String)], files: LoadReport, namespace: &str) -> Input {
    let mut input = Input::default();
    for (origin, text) in live {
        let mut part = Input::from_report(load::load_str_mixed(origin, text));
        part.default_namespace(namespace);
        input.overlay(part);
    }
    let mut top = Input::from_report(files);
    top.default_namespace(namespace);
    input.overlay(top);
    input
}

/// The findings of `documents` (origin and YAML or JSON text, as the live mesh gives them) in
/// every namespace, sorted: for views that hold the documents already.
pub fn findings(documents: &[(String, String)]) -> Vec<Finding> {
    mesh_analyze::analyze(&build_input(documents, LoadReport::default(), "default"))
}

/// The dashboard's analyzer (`meshctl::dashboard::Analyzer`): each finding of `documents` as
/// `meshctl analyze` prints it.
pub fn dashboard_findings(documents: &[(String, String)]) -> Vec<String> {
    findings(documents).iter().map(ToString::to_string).collect()
}

/// The findings of `documents` about the objects that apply to the Service
/// `namespace/name` (its routes, rules, workloads and policies).
pub fn service_findings(
    documents: &[(String, String)],
    namespace: &str,
    name: &str,
) -> Vec<Finding> {
    let input = build_input(documents, LoadReport::default(), "default");
    let related = mesh_analyze::related_to_service(&input, namespace, name);
    mesh_analyze::analyze(&input)
        .into_iter()
        .filter(|f| f.object.as_ref().is_some_and(|o| related.contains(o)))
        .collect()
}

/// `meshctl analyze`: prints the findings and returns the exit code (0, or [`FOUND_ISSUES`]
/// when one reaches the failure threshold). `live` is the live mesh's config (origin, text of
/// one or more documents) when [`AnalyzeArgs::wants_live`].
pub fn analyze(
    args: &AnalyzeArgs,
    live: Option<Vec<(String, String)>>,
) -> Result<i32, AnalyzeError> {
    let files = read_files(args.inputs())?;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run_analyze(args, &live.unwrap_or_default(), files, &mut stdout.lock(), &mut stderr.lock())
}

fn run_analyze(
    args: &AnalyzeArgs,
    live: &[(String, String)],
    files: LoadReport,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<i32, AnalyzeError> {
    let namespace = args.namespace.as_deref().unwrap_or("default");
    let input = build_input(live, files, namespace);
    let mut findings = mesh_analyze::analyze(&input);
    if !args.all_namespaces {
        findings = mesh_analyze::in_namespace(findings, namespace);
    }
    let failed = findings.iter().any(|f| f.level.at_least(args.failure_threshold));
    let shown: Vec<&Finding> =
        findings.iter().filter(|f| f.level.at_least(args.output_threshold)).collect();
    let target = if args.all_namespaces {
        "all namespaces".to_owned()
    } else {
        format!("namespace: {namespace}")
    };
    match args.output {
        Output::Log => {
            for finding in &shown {
                writeln!(out, "{finding}")?;
            }
        }
        Output::Json | Output::Yaml => {
            let list = serde_json::Value::Array(shown.iter().map(|f| f.to_json()).collect());
            print_structured(out, args.output, &list)?;
        }
    }
    if shown.is_empty() {
        writeln!(err, "\u{2714} No validation issues found when analyzing {target}.")?;
    }
    if failed {
        writeln!(err, "Error: Analyzers found issues when analyzing {target}.")?;
        writeln!(err, "See {ANALYSIS_DOCS} for more information about causes and resolutions.")?;
        return Ok(FOUND_ISSUES);
    }
    Ok(0)
}

fn print_structured(
    out: &mut impl Write,
    format: Output,
    value: &serde_json::Value,
) -> Result<(), AnalyzeError> {
    if format == Output::Json {
        let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        writeln!(out, "{text}")?;
    } else {
        let text = serde_saphyr::to_string(value).map_err(|e| AnalyzeError::Yaml(e.to_string()))?;
        write!(out, "{text}")?;
    }
    Ok(())
}

/// One problem `meshctl validate` found.
struct Problem {
    file: String,
    line: Option<usize>,
    object: Option<String>,
    field: String,
    code: Option<&'static str>,
    reason: String,
}

impl Problem {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.file,
            "line": self.line,
            "object": self.object,
            "field": self.field,
            "code": self.code,
            "reason": self.reason,
        })
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error")?;
        if let Some(code) = self.code {
            write!(f, "[{code}]")?;
        }
        write!(f, ": {}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// `meshctl validate`: schema and semantic validation only. Prints each problem (file, line,
/// object, field, reason) and returns 0 when every object is valid, 1 otherwise.
pub fn validate(args: &ValidateArgs) -> Result<i32, AnalyzeError> {
    let report = read_files(&args.files)?;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run_validate(args, report, &mut stdout.lock(), &mut stderr.lock())
}

fn run_validate(
    args: &ValidateArgs,
    report: LoadReport,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<i32, AnalyzeError> {
    let mut problems = Vec::new();
    for e in &report.errors {
        let (field, reason) = match &e.kind {
            LoadErrorKind::Field { path, message } => (path.clone(), message.clone()),
            other => (String::new(), other.to_string()),
        };
        problems.push(Problem {
            file: e.file.clone(),
            line: e.line,
            object: e.object.as_ref().map(ToString::to_string),
            field,
            code: None,
            reason,
        });
    }
    for loaded in &report.objects {
        for e in mesh_api::validate::resource(&loaded.resource) {
            problems.push(Problem {
                file: loaded.origin.file.clone(),
                line: Some(loaded.origin.line),
                object: Some(e.object.to_string()),
                field: e.path,
                code: Some(e.code.as_str()),
                reason: e.reason,
            });
        }
    }
    for warning in &report.warnings {
        writeln!(err, "warning: {warning}")?;
    }
    match args.output {
        Output::Log => {
            for problem in &problems {
                writeln!(out, "{problem}")?;
            }
            if problems.is_empty() {
                for file in &args.files {
                    if file == "-" {
                        writeln!(out, "validation succeed")?;
                    } else {
                        writeln!(out, "{file:?} is valid")?;
                    }
                }
            }
        }
        Output::Json | Output::Yaml => {
            let list = serde_json::Value::Array(problems.iter().map(Problem::to_json).collect());
            print_structured(out, args.output, &list)?;
        }
    }
    Ok(if problems.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> AnalyzeArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: AnalyzeArgs,
        }
        let argv = std::iter::once("analyze").chain(extra.iter().copied());
        <Cli as clap::Parser>::parse_from(argv).args
    }

    const ROUTES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v2}}]}]
";

    const LIVE: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {ports: [{name: http, port: 9080}], selector: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
";

    fn run(args: &AnalyzeArgs, live: &[(String, String)], files: &str) -> (i32, String, String) {
        let report = load::load_str_mixed("routes.yaml", files);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_analyze(args, live, report, &mut out, &mut err).unwrap();
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn a_file_on_top_of_the_live_mesh_is_analyzed_in_its_namespace() {
        let live = vec![("mesh:config/shop.yaml".to_owned(), LIVE.to_owned())];
        let (code, out, err) = run(&args(&["-k", "-n", "shop"]), &live, ROUTES);
        assert_eq!(code, FOUND_ISSUES);
        assert_eq!(
            out,
            "Error [IST0101] (VirtualService shop/reviews routes.yaml:1) Referenced host+subset in destinationrule not found: \"reviews+v2\"\n"
        );
        assert_eq!(
            err,
            format!(
                "Error: Analyzers found issues when analyzing namespace: shop.\nSee {ANALYSIS_DOCS} for more information about causes and resolutions.\n"
            )
        );
    }

    #[test]
    fn other_namespaces_are_left_out_unless_all_are_asked_for() {
        let live = vec![("live".to_owned(), LIVE.to_owned())];
        let (code, out, err) = run(
            &args(&["-f", "x"]),
            &live,
            &ROUTES.replace("{name: reviews}", "{name: reviews, namespace: shop}"),
        );
        assert_eq!((code, out.as_str()), (0, ""));
        assert_eq!(err, "\u{2714} No validation issues found when analyzing namespace: default.\n");
        let (code, out, _) = run(
            &args(&["-A", "-f", "x"]),
            &live,
            &ROUTES.replace("{name: reviews}", "{name: reviews, namespace: shop}"),
        );
        assert_eq!(code, FOUND_ISSUES);
        assert!(out.contains("VirtualService shop/reviews"), "{out}");
    }

    #[test]
    fn thresholds_decide_what_is_printed_and_what_fails() {
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n";
        let (code, out, _) = run(&args(&["-f", "x"]), &[], ns);
        assert_eq!(code, 0, "an Info finding does not fail by default");
        assert!(out.starts_with("Info [IST0102] (Namespace default routes.yaml:1)"), "{out}");
        let (code, out, err) = run(&args(&["-f", "x", "--output-threshold", "warning"]), &[], ns);
        assert_eq!((code, out.as_str()), (0, ""));
        assert!(err.starts_with('\u{2714}'), "{err}");
        let (code, _, _) = run(&args(&["-f", "x", "--failure-threshold", "Info"]), &[], ns);
        assert_eq!(code, FOUND_ISSUES);
    }

    #[test]
    fn json_lists_findings_as_istioctl_does() {
        let live = vec![("live".to_owned(), LIVE.to_owned())];
        let (code, out, _) = run(&args(&["-n", "shop", "-o", "json", "-f", "x"]), &live, ROUTES);
        assert_eq!(code, FOUND_ISSUES);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json[0]["code"], "IST0101");
        assert_eq!(json[0]["level"], "Error");
        assert_eq!(json[0]["origin"], "VirtualService shop/reviews");
        assert_eq!(json[0]["reference"], "routes.yaml:1");
    }

    #[test]
    fn a_service_s_findings_are_those_of_its_objects() {
        let docs = vec![
            ("live".to_owned(), LIVE.to_owned()),
            ("other".to_owned(), ROUTES.replace("reviews", "ratings")),
            (
                "mine".to_owned(),
                ROUTES.replace("{name: reviews}", "{name: reviews, namespace: shop}"),
            ),
        ];
        let all = findings(&docs);
        assert_eq!(all.len(), 3, "{all:?}");
        let mine: Vec<String> =
            service_findings(&docs, "shop", "reviews").iter().map(|f| f.to_string()).collect();
        assert_eq!(
            mine,
            [
                "Error [IST0101] (VirtualService shop/reviews mine:1) Referenced host+subset in destinationrule not found: \"reviews+v2\""
            ]
        );
        assert_eq!(dashboard_findings(&docs).len(), 3);
    }

    #[test]
    fn validate_names_file_line_object_field_and_reason() {
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: w}\nspec:\n  hosts: [w]\n  http: [{route: [{destination: {host: w}, weight: 20}, {destination: {host: x}, weight: 20}]}]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {selector: {}, template: {}}\n";
        let report = load::load_str_mixed("w.yaml", text);
        let validate = ValidateArgs { files: vec!["w.yaml".to_owned()], output: Output::Log };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run_validate(&validate, report, &mut out, &mut err).unwrap(), 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "error[weights-not-100]: w.yaml:1: VirtualService w: spec.http[0].route: weights add up to 40: they must sum to 100\n"
        );
        let good = load::load_str_mixed(
            "ok.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        );
        let mut out = Vec::new();
        let validate = ValidateArgs { files: vec!["ok.yaml".to_owned()], output: Output::Log };
        assert_eq!(run_validate(&validate, good, &mut out, &mut err).unwrap(), 0);
        assert_eq!(String::from_utf8(out).unwrap(), "\"ok.yaml\" is valid\n");
    }
}
