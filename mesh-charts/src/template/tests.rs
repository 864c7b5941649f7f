//! The engine against what Go's `text/template` (with Helm's functions) gives for the same
//! template and data.

use serde_json::{Value, json};

use super::Set;

fn render_with(files: &[(&str, &str)], data: &Value) -> Result<String, super::Error> {
    let mut set = Set::default();
    for (name, text) in files {
        set.add(name, text)?;
    }
    set.execute(files[0].0, data)
}

fn render(text: &str, data: &Value) -> String {
    render_with(&[("t", text)], data).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn error(text: &str, data: &Value) -> String {
    match render_with(&[("t", text)], data) {
        Ok(out) => panic!("{text} rendered {out:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn actions_and_trimming() {
    let data = json!({"name": "mesh", "n": 3, "f": 2.0, "missing": null});
    assert_eq!(render("a {{ .name }} b", &data), "a mesh b");
    assert_eq!(render("a\n  {{- .name -}}\n  b", &data), "amesh b".replace(' ', ""));
    assert_eq!(render("{{ .nope }}|{{ .missing }}", &data), "|");
    assert_eq!(render("{{ .n }} {{ .f }}", &data), "3 2");
    assert_eq!(render("{{/* a comment */}}x{{- /* trimmed */ -}} y", &data), "xy");
    assert_eq!(render("{{ `raw {{ x }}` }}", &data), "raw {{ x }}");
}

#[test]
fn conditionals() {
    let data = json!({"a": false, "b": "", "c": [], "d": {}, "e": 0, "f": "yes", "g": 0.0});
    let t = "{{ if .a }}a{{ else if .b }}b{{ else if .c }}c{{ else if .d }}d{{ else if .e }}e{{ else if .g }}g{{ else }}none{{ end }}";
    assert_eq!(render(t, &data), "none");
    assert_eq!(render("{{ if .f }}{{ .f }}{{ end }}", &data), "yes");
    assert_eq!(render("{{ with .f }}[{{ . }}]{{ else }}no{{ end }}", &data), "[yes]");
    assert_eq!(render("{{ with .a }}x{{ else with .f }}{{ . }}{{ end }}", &data), "yes");
    assert_eq!(render("{{ if and .f (not .a) }}ok{{ end }}", &data), "ok");
    // `and` and `or` give the deciding value, and stop there.
    assert_eq!(render("{{ or .a .b .f }}|{{ and .f .e .nope.x }}", &data), "yes|0");
    assert_eq!(render("{{ or .a .b }}", &data), "");
}

#[test]
fn ranges() {
    let data = json!({"list": ["a", "b", "c"], "map": {"z": 1, "a": 2}, "empty": []});
    assert_eq!(render("{{ range .list }}{{ . }}{{ end }}", &data), "abc");
    assert_eq!(
        render("{{ range $i, $v := .list }}{{ $i }}={{ $v }} {{ end }}", &data),
        "0=a 1=b 2=c "
    );
    assert_eq!(render("{{ range $k, $v := .map }}{{ $k }}{{ $v }}{{ end }}", &data), "a2z1");
    assert_eq!(render("{{ range .empty }}x{{ else }}none{{ end }}", &data), "none");
    assert_eq!(render("{{ range .nope }}x{{ else }}none{{ end }}", &data), "none");
    assert_eq!(render("{{ range 3 }}{{ . }}{{ end }}", &data), "012");
    assert_eq!(
        render(
            "{{ range .list }}{{ if eq . \"b\" }}{{ continue }}{{ end }}{{ if eq . \"c\" }}{{ break }}{{ end }}{{ . }}{{ end }}",
            &data
        ),
        "a"
    );
    // `$` is the top-level data inside a range.
    assert_eq!(render("{{ range .list }}{{ len $.list }}{{ end }}", &data), "333");
}

#[test]
fn variables() {
    let data = json!({"x": 1, "list": [1, 2]});
    assert_eq!(render("{{ $a := \"one\" }}{{ $a }}{{ $a = \"two\" }}{{ $a }}", &data), "onetwo");
    // An assignment inside a range changes the outer variable; a declaration does not leak.
    assert_eq!(
        render(
            "{{ $n := 0 }}{{ range .list }}{{ $n = add $n . }}{{ $m := 1 }}{{ end }}{{ $n }}",
            &data
        ),
        "3"
    );
    assert_eq!(render("{{ if $v := .x }}{{ $v }}{{ end }}", &data), "1");
    assert_eq!(render("{{ (dict \"a\" (dict \"b\" 7)).a.b }}", &data), "7");
}

#[test]
fn templates_and_include() {
    let helpers = r#"{{- define "name" -}}{{ .Values.name | default "mesh" }}{{- end }}
{{- define "labels" -}}
app: {{ include "name" . }}
tier: {{ .tier | default "control" }}
{{- end }}"#;
    let main = r#"labels:
  {{- include "labels" (dict "Values" .Values "tier" "data") | nindent 2 }}
{{ template "name" . }}
{{ block "footer" . }}default footer{{ end }}"#;
    let out =
        render_with(&[("main", main), ("_helpers.tpl", helpers)], &json!({"Values": {}})).unwrap();
    assert_eq!(out, "labels:\n  app: mesh\n  tier: data\nmesh\ndefault footer");
    let err = render_with(&[("main", "{{ include \"nope\" . }}")], &json!({})).unwrap_err();
    assert_eq!(err.to_string(), "main:1: no template \"nope\"");
}

#[test]
fn errors_say_where() {
    let data = json!({"Values": {"image": {}}});
    let err = render_with(
        &[
            ("mesh/templates/deployment.yaml", "a\nb\nimage: {{ include \"image\" . }}"),
            ("mesh/templates/_helpers.tpl", "{{ define \"image\" }}\n{{ required \"global.hub is required\" .Values.global.hub }}{{ end }}"),
        ],
        &data,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "mesh/templates/_helpers.tpl:2: nil pointer evaluating interface {}.hub (at <.Values.global.hub>) \
         (included from mesh/templates/deployment.yaml:3)"
    );
    let data = json!({"Values": {"global": {"hub": ""}}});
    assert_eq!(
        error("x\n{{ required \"global.hub is required\" .Values.global.hub }}", &data),
        "t:2: global.hub is required"
    );
    assert_eq!(
        error("{{ .Values.global.hub.x }}", &data),
        "t:1: can't evaluate field x in type string (at <.Values.global.hub.x>)"
    );
    assert_eq!(error("{{ fail \"no\" }}", &data), "t:1: no");
    assert!(error("{{ if .x }}", &data).contains("has no {{end}}"));
    assert!(
        error("{{ upper 1 }}", &data)
            .contains("error calling upper: wrong type for value; expected string; got int")
    );
}

#[test]
fn comparisons_as_go_makes_them() {
    let data = json!({"float": 1.0, "int": 1, "s": "a"});
    assert_eq!(
        render(
            "{{ eq .int 1 }} {{ eq .s \"a\" \"b\" }} {{ ne .s \"a\" }} {{ lt 1 2 }} {{ ge \"b\" \"a\" }}",
            &data
        ),
        "true true false true true"
    );
    assert_eq!(render("{{ eq .nope nil }} {{ eq .nope \"x\" }}", &data), "true false");
    // Helm reads values as float64: comparing with an integer constant fails there, and here.
    assert!(error("{{ gt .float 0 }}", &data).contains("incompatible types for comparison"));
    assert!(error("{{ eq .float 1 }}", &data).contains("incompatible types for comparison"));
    assert_eq!(render("{{ gt (int .float) 0 }}", &data), "true");
}

#[test]
fn helm_and_sprig_functions() {
    let data = json!({
        "Values": {"res": {"limits": {"cpu": "1"}}, "list": ["b", "a", "b"], "n": 2.0, "s": "Hello World"},
        "text": "{{ .Values.s | lower }}",
    });
    let cases = [
        ("{{ toYaml .Values.res | nindent 2 }}", "\n  limits:\n    cpu: \"1\""),
        ("{{ toYaml .Values.res | indent 2 }}", "  limits:\n    cpu: \"1\""),
        ("{{ toJson .Values.list }}", r#"["b","a","b"]"#),
        ("{{ quote .Values.s 1 nil }}", "\"Hello World\" \"1\""),
        ("{{ squote .Values.s }}", "'Hello World'"),
        (
            "{{ .nope | default \"d\" }} {{ default \"d\" false }} {{ default \"d\" \"v\" }}",
            "d d v",
        ),
        (
            "{{ empty .Values.list }} {{ empty 0 }} {{ empty \"\" }} {{ empty .nope }}",
            "false true true true",
        ),
        ("{{ ternary \"y\" \"n\" true }}{{ ternary \"y\" \"n\" false }}", "yn"),
        (
            "{{ trunc 5 .Values.s }}|{{ trunc -5 .Values.s }}|{{ trunc 50 .Values.s }}",
            "Hello|World|Hello World",
        ),
        (
            "{{ \"mesh-ingressgateway\" | trimPrefix \"mesh-\" }} {{ \"a-\" | trimSuffix \"-\" }}",
            "ingressgateway a",
        ),
        (
            "{{ replace \" \" \"_\" .Values.s }} {{ upper .Values.s }} {{ title \"a b\" }}",
            "Hello_World HELLO WORLD A B",
        ),
        ("{{ b64enc \"root\" }} {{ b64dec \"cm9vdA==\" }}", "cm9vdA== root"),
        (
            "{{ $d := dict \"a\" 1 \"b\" 2 }}{{ hasKey $d \"a\" }} {{ hasKey $d \"c\" }} {{ get $d \"b\" }}",
            "true false 2",
        ),
        (
            "{{ $d := set (dict) \"k\" \"v\" }}{{ $d.k }} {{ keys (dict \"y\" 1 \"x\" 2) }}",
            "v [x y]",
        ),
        ("{{ list 1 \"a\" | len }} {{ .Values.list | uniq | sortAlpha | join \",\" }}", "2 a,b"),
        (
            "{{ has \"a\" .Values.list }} {{ first .Values.list }} {{ last .Values.list }}",
            "true b b",
        ),
        ("{{ printf \"%s:%d\" \"port\" (int .Values.n) }} {{ print 1 2 \"x\" }}", "port:2 1 2x"),
        (
            "{{ int \"42\" }} {{ int 3.9 }} {{ toString 5 }} {{ add 1 2 3 }} {{ sub 5 2 }} {{ mul 2 3 }} {{ div 7 2 }}",
            "42 3 5 6 3 6 3",
        ),
        (
            "{{ semverCompare \">=1.29-0\" \"v1.33.0\" }} {{ semverCompare \">=1.29-0\" \"v1.28.0\" }}",
            "true false",
        ),
        (
            "{{ contains \"World\" .Values.s }} {{ hasPrefix \"He\" .Values.s }} {{ hasSuffix \"x\" .Values.s }}",
            "true true false",
        ),
        ("{{ tpl .text . }}", "hello world"),
        ("{{ index .Values.list 1 }} {{ index .Values.res \"limits\" \"cpu\" }}", "a 1"),
        (
            "{{ kindOf .Values.list }} {{ kindIs \"map\" .Values.res }} {{ typeOf .Values.n }}",
            "slice true float64",
        ),
        ("{{ (fromYaml \"a: [1, 2]\").a }} {{ (fromJson \"{\\\"a\\\": true}\").a }}", "[1 2] true"),
        (
            "{{ coalesce \"\" .nope \"c\" }} {{ splitList \",\" \"a,b\" }} {{ until 3 }}",
            "c [a b] [0 1 2]",
        ),
    ];
    for (template, expected) in cases {
        assert_eq!(render(template, &data), expected, "{template}");
    }
}

#[test]
fn merge_as_mergo_does() {
    let data = json!({
        "defaults": {"a": 1, "b": {"c": 2, "d": 3}, "list": [1], "empty": ""},
        "values": {"a": 9, "b": {"c": 8}, "list": [2], "empty": "set", "new": false},
    });
    assert_eq!(
        render("{{ toJson (mergeOverwrite (deepCopy .defaults) .values) }}", &data),
        r#"{"a":9,"b":{"c":8,"d":3},"empty":"set","list":[2],"new":false}"#
    );
    assert_eq!(
        render("{{ toJson (merge (deepCopy .values) .defaults) }}", &data),
        r#"{"a":9,"b":{"c":8,"d":3},"empty":"set","list":[2],"new":false}"#
    );
}
