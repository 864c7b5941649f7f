//! The mesh's Helm charts (`charts/` of the repository, embedded when the crate is built) and a
//! renderer of them, so that `meshctl install` puts on a cluster exactly what `helm install` of
//! the same charts would: Helm's values layering (`values.yaml`, a profile, `-f` files, `--set`),
//! its built-in objects, and Go templates with Helm's and Sprig's functions (see "The template
//! engine" below for why the engine is this crate's own).
//!
//! Rendering is pure: text and values in, manifests out. This crate does no network or file I/O
//! at run time and has no Kubernetes client; applying, waiting and asking are `meshctl`'s job.
//!
//! - [`plan`] turns a profile, `-f` files and `--set` values into the releases of an
//!   installation ([`ReleasePlan`]: `mesh-base`, `mesh`, one per enabled gateway), each with all
//!   its values; [`ReleasePlan::crds`] and [`ReleasePlan::render`] give what to apply.
//! - [`values`], [`render`], [`crds`] and [`notes`] do the same for one chart, as `helm template`.
//! - `.Release.Service` is `Helm` for meshctl too ([`Release::new`]), so an object is the same
//!   whichever installs it.
//!
//! # The template engine
//!
//! No crate renders Helm's templates within the workspace's rules. `gtmpl` and its fork
//! `gtmpl-ng` bring `thiserror` 1 beside the workspace's 2 (a duplicate cargo-deny refuses),
//! range over maps in hash order (output that changes between runs), and call functions through
//! plain `fn` pointers that cannot reach the template set (`include`, `tpl`).
//! `lithos-gotmpl-engine` adds no crate but is a 0.1 work in progress with no `define`,
//! `template` or `block`, no `else if`, no `break`/`continue`, no `(pipeline).field`, and no
//! position on run-time errors: parser features, which no registered function can supply. So
//! the crate carries its own engine (`src/template`: lexer, parser, executor with Go's
//! semantics) and registers Helm's functions (`include`, `tpl`, `required`, `toYaml`, `toJson`,
//! `fromYaml`, ...) and Sprig's the charts use (`default`, `quote`, `nindent`, `dict`,
//! `mergeOverwrite`, `semverCompare`, ...) from Rust. As in Helm, numbers from values files are
//! float64 (`eq .Values.n 1` fails in both; `eq (int .Values.n) 1` works in both), maps range
//! in key order, and a missing key is nil. Not supported, and not used by the charts: methods
//! (`.Capabilities.APIVersions.Has`, `.Files.Get`), `lookup`, `define` inside `tpl` text.
//!
//! ```
//! use mesh_charts::{Capabilities, Overrides, Profile, plan};
//!
//! let overrides = Overrides { profile: Some(Profile::Minimal), ..Overrides::default() };
//! for release in plan(&overrides, "mesh-system").unwrap() {
//!     for manifest in release.render(&Capabilities::default()).unwrap() {
//!         println!("---\n{manifest}");
//!     }
//! }
//! ```

mod charts;
mod install;
mod render;
mod strvals;
mod template;
mod values;

pub use charts::{Chart, ChartFile, ChartMetadata, chart_names};
pub use install::{BASE_RELEASE, CONTROL_PLANE_RELEASE, Profile, ReleasePlan, plan};
pub use render::{
    Capabilities, KubeVersion, Manifest, Release, RenderError, crds, notes, render,
    sort_for_install,
};
pub use values::{Overrides, Values, ValuesError, ValuesFile, values};
