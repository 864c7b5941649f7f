//! `meshctl proxy-status [POD]`: whether each proxy runs what the pilot sent it, per xDS type,
//! from the pilot's `/debug/syncz`, as `istioctl proxy-status` shows it; with a pod, what the
//! pilot serves it compared with what it runs ([`compare`]), and its versions and last
//! rejection. The tables are pure functions of the pilot's and the proxy's JSON; only [`run`]
//! reaches the mesh.

pub mod compare;

use clap::Args;
use mesh_api::ports;

use crate::access::{self, AccessError, MeshArgs, Pod, SyncStatus, Target};
use crate::proxy_config::dump::{self, DumpError};
use crate::proxy_config::table::Table;

/// The pilot, as the table names it (syncz comes from one pilot and does not name its pod).
pub const PILOT: &str = "mesh-pilot";

/// The xDS types the table shows, in column order: (column, type URL).
const TYPES: [(&str, &str); 4] = [
    ("CDS", mesh_api::xds::CLUSTER_TYPE),
    ("LDS", mesh_api::xds::LISTENER_TYPE),
    ("EDS", mesh_api::xds::ENDPOINT_TYPE),
    ("RDS", mesh_api::xds::ROUTE_TYPE),
];

/// `meshctl proxy-status`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  meshctl proxy-status
  meshctl proxy-status reviews-v1.default")]
pub struct ProxyStatusArgs {
    /// Only this pod (`name` or `name.namespace`), with what the pilot serves it compared to
    /// what its proxy runs.
    pub pod: Option<String>,
    /// Which mesh.
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProxyStatusError {
    /// The mesh, the pilot, the pod or its admin port could not be reached.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The pod's proxy is not connected to the pilot.
    #[error(
        "{pod} has no xDS stream to {PILOT} (connected: {connected}); is its sidecar running? \
         (`meshctl proxy-status` lists the connected proxies)"
    )]
    NotConnected {
        /// The pod.
        pod: Pod,
        /// The pods that are.
        connected: String,
    },
    /// A config dump is not what the comparison reads.
    #[error("{what}: {source}{hint}")]
    Dump {
        /// Whose dump.
        what: String,
        /// What is wrong with it.
        #[source]
        source: DumpError,
        /// What to do about it, if anything.
        hint: &'static str,
    },
}

/// Runs `meshctl proxy-status`: prints the table (and, with a pod, the comparison); the exit
/// code is 0.
pub fn run(args: &ProxyStatusArgs) -> Result<i32, ProxyStatusError> {
    let mesh = access::choose(&args.mesh)?;
    let (_, entries) = access::syncz(mesh.as_ref())?;
    let Some(name) = &args.pod else {
        print!("{}", status_table(&entries, None, PILOT));
        return Ok(0);
    };
    let pod = mesh.find_pod(name)?;
    let Some(status) = entries.iter().find(|e| e.pod().as_ref() == Some(&pod)) else {
        let mut connected: Vec<String> = entries
            .iter()
            .map(|e| e.pod().map_or_else(|| e.proxy.clone(), |p| p.to_string()))
            .collect();
        connected.sort();
        let connected = if connected.is_empty() { "none".to_owned() } else { connected.join(", ") };
        return Err(ProxyStatusError::NotConnected { pod, connected });
    };
    let query = format!("/debug/config_dump?proxyID={}", percent_encode(&status.proxy));
    let pilot = status.served_by.clone().unwrap_or(Target::Pilot);
    let served = access::get(mesh.as_ref(), &pilot, ports::CONTROL_PLANE_MONITORING, &query)?;
    let running =
        access::get(mesh.as_ref(), &Target::Pod(pod.clone()), ports::PROXY_ADMIN, "/config_dump")?;
    let parse = |text: &str, what: String| {
        dump::parse(text).map_err(|source| ProxyStatusError::Dump { what, source, hint: "" })
    };
    let pilot_name = if status.pilot.is_empty() { PILOT } else { &status.pilot };
    let served =
        parse(&served, format!("{pilot_name} :{}{query}", ports::CONTROL_PLANE_MONITORING))?;
    let proxy_what = format!("{pod} :{}/config_dump", ports::PROXY_ADMIN);
    let running = parse(&running, proxy_what.clone())?;
    let comparison =
        compare::compare(&served, &running).map_err(|source| ProxyStatusError::Dump {
            what: proxy_what,
            source,
            hint: ": not Envoy's ConfigDump shape (an older mesh-proxy?)",
        })?;
    print!("{}", status_table(&entries, Some(&pod), PILOT));
    println!();
    print!("{}", compare::render(&comparison));
    println!();
    print!("{}", versions(status));
    Ok(0)
}

/// The table of every connected proxy (or only `filter`'s), sorted by name: `NAME  CDS  LDS
/// EDS  RDS  PILOT  VERSION`, each type `SYNCED`, `STALE`, `NOT SENT` or `ERROR`; below it,
/// a line per rejection (`reviews-v1.default LDS: <message>`).
pub fn status_table(entries: &[SyncStatus], filter: Option<&Pod>, pilot: &str) -> String {
    let mut rows: Vec<(String, &SyncStatus)> = entries
        .iter()
        .filter(|e| filter.is_none_or(|pod| e.pod().as_ref() == Some(pod)))
        .map(|e| (e.pod().map_or_else(|| e.proxy.clone(), |p| p.to_string()), e))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut table = Table::new(&["NAME", "CDS", "LDS", "EDS", "RDS", "PILOT", "VERSION"]);
    let mut nacks = Vec::new();
    for (name, entry) in &rows {
        let mut cells = vec![name.clone()];
        for (column, url) in TYPES {
            let sync = entry.types.get(url);
            cells.push(state(sync).to_owned());
            if let Some(message) = sync.and_then(|s| s.last_nack.as_deref()) {
                nacks.push(format!("{name} {column}: {}", one_line(message)));
            }
        }
        cells.push(if entry.pilot.is_empty() { pilot } else { &entry.pilot }.to_owned());
        cells.push(if entry.version.is_empty() { "-".to_owned() } else { entry.version.clone() });
        table.row(cells);
    }
    let mut out = table.render();
    if !nacks.is_empty() {
        out.push('\n');
        for nack in nacks {
            out.push_str(&nack);
            out.push('\n');
        }
    }
    out
}

/// A type's state; a type the pilot never sent this proxy is `NOT SENT`.
fn state(sync: Option<&access::TypeSync>) -> &str {
    match sync.map(|s| s.state.as_str()) {
        Some("") | None => "NOT SENT",
        Some(state) => state,
    }
}

/// One proxy's versions per type (sent by the pilot, acknowledged by the proxy) and each
/// type's last rejection in full.
pub fn versions(status: &SyncStatus) -> String {
    let mut table = Table::new(&["TYPE", "STATE", "SENT", "ACKED"]);
    let mut nacks = String::new();
    let dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
    for (column, url) in TYPES {
        let sync = status.types.get(url);
        table.row([
            column.to_owned(),
            state(sync).to_owned(),
            dash(sync.map_or("", |s| s.sent_version.as_str())),
            dash(sync.map_or("", |s| s.acked_version.as_str())),
        ]);
        if let Some(message) = sync.and_then(|s| s.last_nack.as_deref()) {
            nacks.push_str(&format!("\nLast NACK of {column}:\n{}\n", message.trim_end()));
        }
    }
    table.render() + &nacks
}

/// A message on one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` with every byte but URL's unreserved ones percent-encoded, for a query value.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_is_encoded_for_the_query() {
        assert_eq!(
            percent_encode("sidecar~fd00::1~a.b~b.svc.cluster.local"),
            "sidecar~fd00%3A%3A1~a.b~b.svc.cluster.local"
        );
    }

    #[test]
    fn a_multi_line_nack_is_one_line_in_the_table() {
        assert_eq!(
            one_line("Error adding listener:\n  bad\tfield "),
            "Error adding listener: bad field"
        );
    }
}
