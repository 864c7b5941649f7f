//! `meshctl trace`: one request followed through the mesh, from the traces the local mesh's
//! receiver keeps (`meshctl local up --tracing`), printed as an indented tree with timings
//! ([`render`]) or as the receiver's JSON.
//!
//! The receiver's HTTP API (served by `meshctl local otlp`): `GET /api/traces?last=N` answers
//! `{"traces": [TraceView, ...]}`, the latest first; `GET /api/traces/<id>` one
//! [`TraceView`], or 404.

pub mod render;

use mesh_trace::receiver::TraceView;
use serde::{Deserialize, Serialize};

use crate::access::{self, AccessError, Mesh, Target};

/// The most traces one `--last` asks for.
pub const MAX_LAST: usize = 100;
/// The API's path for traces.
pub const API_TRACES: &str = "/api/traces";

/// The answer of `GET /api/traces?last=N`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceList {
    /// The traces that received a span last, the latest first.
    pub traces: Vec<TraceView>,
}

/// How `meshctl trace` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The indented tree with timings.
    #[default]
    Tree,
    /// The receiver's JSON (`{"traces": [...]}` for `--last`, one trace for `--id`).
    Json,
}

/// `meshctl trace`'s flags.
#[derive(Clone, Debug, clap::Args)]
pub struct TraceArgs {
    /// The trace to show (32 hex characters, as the dashboard, the access logs and the
    /// `traceparent` header carry it; 16 for a 64-bit B3 id).
    #[arg(long)]
    pub id: Option<String>,
    /// How many of the traces received last to show, the latest first (at most 100).
    #[arg(long, default_value_t = 1, conflicts_with = "id",
          value_parser = clap::value_parser!(u16).range(1..=MAX_LAST as i64))]
    pub last: u16,
    /// `tree` (default) or `json`.
    #[arg(short = 'o', long, value_enum, default_value = "tree")]
    pub output: Output,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The id is not a trace id.
    #[error("{0:?} is not a trace id: 32 hex characters (or 16, a 64-bit B3 id)")]
    BadId(String),
    /// The receiver could not be reached or answered an error.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The receiver's answer is not what this meshctl reads.
    #[error("the trace receiver's answer is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A trace id as the receiver keys it: lowercase, and a 64-bit B3 id padded to 128 bits as
/// Envoy pads it.
pub fn normalize_id(id: &str) -> Result<String, TraceError> {
    let lower = id.trim().to_ascii_lowercase();
    mesh_trace::context::trace_id_from_hex(&lower)
        .map(|bytes| mesh_trace::context::to_hex(&bytes))
        .ok_or_else(|| TraceError::BadId(id.to_owned()))
}

/// The API path `args` ask for.
pub fn api_path(args: &TraceArgs) -> Result<String, TraceError> {
    Ok(match &args.id {
        Some(id) => format!("{API_TRACES}/{}", normalize_id(id)?),
        None => format!("{API_TRACES}?last={}", args.last),
    })
}

/// What `meshctl trace` prints for the receiver's answer `body` to `args`.
pub fn format(args: &TraceArgs, body: &str) -> Result<String, TraceError> {
    let traces = match &args.id {
        Some(_) => vec![serde_json::from_str::<TraceView>(body)?],
        None => serde_json::from_str::<TraceList>(body)?.traces,
    };
    Ok(match args.output {
        Output::Json => {
            let value = match &args.id {
                Some(_) => serde_json::to_value(&traces[0])?,
                None => serde_json::to_value(TraceList { traces })?,
            };
            format!("{}\n", serde_json::to_string_pretty(&value)?)
        }
        Output::Tree if traces.is_empty() => "No traces received yet. Spans of sampled requests \
             reach the receiver within seconds of the request (set the sampling with a \
             Telemetry's randomSamplingPercentage, or send `x-b3-sampled: 1`).\n"
            .to_owned(),
        Output::Tree => render::render_all(&traces),
    })
}

/// The trace `id` from the mesh's receiver: its JSON text.
pub fn fetch(mesh: &dyn Mesh, id: &str) -> Result<String, TraceError> {
    let path = format!("{API_TRACES}/{}", normalize_id(id)?);
    Ok(access::get(mesh, &Target::Tracing, crate::local::collector::API_PORT, &path)?)
}

/// `meshctl trace`: prints what `args` ask for from `mesh`'s receiver; the exit code.
pub fn run(args: &TraceArgs, mesh: &dyn Mesh) -> Result<i32, TraceError> {
    let path = api_path(args)?;
    let body = access::get(mesh, &Target::Tracing, crate::local::collector::API_PORT, &path)?;
    print!("{}", format(args, &body)?);
    Ok(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TraceArgs,
    }

    fn parse(line: &str) -> Result<TraceArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("trace").chain(line.split_whitespace())).map(|c| c.args)
    }

    #[test]
    fn the_flags_choose_the_api_path() {
        assert_eq!(api_path(&parse("").unwrap()).unwrap(), "/api/traces?last=1");
        assert_eq!(api_path(&parse("--last 5 -o json").unwrap()).unwrap(), "/api/traces?last=5");
        let id = "0AF7651916CD43DD8448EB211C80319C";
        assert_eq!(
            api_path(&parse(&format!("--id {id}")).unwrap()).unwrap(),
            "/api/traces/0af7651916cd43dd8448eb211c80319c"
        );
        // A 64-bit B3 id, as Envoy pads it.
        assert_eq!(normalize_id("8448eb211c80319c").unwrap(), "00000000000000008448eb211c80319c");
        let err = api_path(&parse("--id xyz").unwrap()).unwrap_err().to_string();
        assert!(err.contains("\"xyz\" is not a trace id"), "{err}");
        assert!(parse("--last 0").is_err());
        assert!(parse("--last 101").is_err());
        assert!(parse("--last 2 --id 8448eb211c80319c").is_err());
    }

    #[test]
    fn no_traces_says_how_to_get_some() {
        let text = format(&parse("").unwrap(), r#"{"traces": []}"#).unwrap();
        assert!(text.starts_with("No traces received yet."), "{text}");
        let json = format(&parse("-o json").unwrap(), r#"{"traces": []}"#).unwrap();
        assert_eq!(json, "{\n  \"traces\": []\n}\n");
        let err = format(&parse("").unwrap(), "not found").unwrap_err().to_string();
        assert!(err.contains("not the expected JSON"), "{err}");
    }
}
