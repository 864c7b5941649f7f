//! The Proxies view's data: the pilot's `/debug/syncz` (xDS state per type), each proxy's
//! `/server_info` (uptime) and `/certs` (when its certificate expires), joined by proxy. Pure;
//! what cannot be read shows as a reason, never as a crash.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::source::{ProxyId, ProxyScrape};

/// The xDS types the view shows, in column order, by the suffix of their type URL.
pub const TYPES: [(&str, &str); 4] = [
    ("CDS", ".Cluster"),
    ("LDS", ".Listener"),
    ("EDS", ".ClusterLoadAssignment"),
    ("RDS", ".RouteConfiguration"),
];

/// One proxy's sync state as `/debug/syncz` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sync {
    /// The node id.
    pub node_id: String,
    /// Per [`TYPES`] entry: `SYNCED`, `STALE`, `NOT SENT` or `ERROR`; `None` when not listed.
    pub states: [Option<String>; 4],
    /// The version the proxy last accepted (of clusters, or any type that has one).
    pub acked_version: Option<String>,
    /// Rejections (`LDS: <message>`), for the details pane.
    pub nacks: Vec<String>,
}

/// One row of the Proxies view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRow {
    /// Pod and namespace (and node id when known).
    pub id: ProxyId,
    /// What the pilot says; `None` when the proxy has no xDS stream to it.
    pub sync: Option<Sync>,
    /// Time left on the workload certificate (zero when expired), or why it is not known.
    pub cert_expiry: Result<Duration, String>,
    /// Time since the proxy started, or why it is not known.
    pub uptime: Result<Duration, String>,
    /// Why the metrics could not be read, if they could not.
    pub metrics_error: Option<String>,
    /// Whether the proxy was in the scraped list (syncz may name proxies the list lacks).
    pub scraped: bool,
}

/// Reads `/debug/syncz`. Entries that are not objects with a `proxy` are skipped.
pub fn parse_syncz(text: &str) -> Result<Vec<Sync>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("syncz is not JSON: {e}"))?;
    let entries = value.as_array().ok_or("syncz is not a JSON array")?;
    let mut out = Vec::new();
    for entry in entries {
        let Some(node_id) = entry.get("proxy").and_then(Value::as_str) else { continue };
        let mut sync = Sync { node_id: node_id.to_owned(), ..Sync::default() };
        let types = entry.get("types").and_then(Value::as_object);
        for (url, status) in types.into_iter().flatten() {
            let Some(i) = TYPES.iter().position(|(_, suffix)| url.ends_with(suffix)) else {
                continue;
            };
            let text = |key: &str| status.get(key).and_then(Value::as_str).unwrap_or("");
            sync.states[i] = Some(text("state").to_owned()).filter(|s| !s.is_empty());
            let acked = text("acked_version");
            if !acked.is_empty() && (i == 0 || sync.acked_version.is_none()) {
                sync.acked_version = Some(acked.to_owned());
            }
            if let Some(nack) = status.get("last_nack").and_then(Value::as_str) {
                sync.nacks.push(format!("{}: {nack}", TYPES[i].0));
            }
        }
        out.push(sync);
    }
    Ok(out)
}

/// Pod and namespace of a node id (`type~ip~pod.namespace~domain`).
pub fn node_pod(node_id: &str) -> Option<(String, String)> {
    let pod_ns = node_id.split('~').nth(2)?;
    let (pod, ns) = pod_ns.rsplit_once('.')?;
    Some((pod.to_owned(), ns.to_owned()))
}

/// The rows: every scraped proxy joined to its syncz entry (by node id, else by pod and
/// namespace), then the syncz entries no scraped proxy matched. Sorted by namespace and name.
pub fn proxy_rows(proxies: &[ProxyScrape], syncz: &[Sync], now: SystemTime) -> Vec<ProxyRow> {
    let mut used = vec![false; syncz.len()];
    let mut rows = Vec::new();
    for p in proxies {
        let found = syncz.iter().position(|s| match &p.id.node_id {
            Some(id) => &s.node_id == id,
            None => node_pod(&s.node_id) == Some((p.id.pod.clone(), p.id.namespace.clone())),
        });
        if let Some(i) = found {
            used[i] = true;
        }
        let mut id = p.id.clone();
        if id.node_id.is_none() {
            id.node_id = found.map(|i| syncz[i].node_id.clone());
        }
        rows.push(ProxyRow {
            id,
            sync: found.map(|i| syncz[i].clone()),
            cert_expiry: p.certs.clone().and_then(|c| cert_expiry(&c, now)),
            uptime: p.server_info.clone().and_then(|s| uptime(&s)),
            metrics_error: p.metrics.as_ref().err().cloned(),
            scraped: true,
        });
    }
    for (sync, _) in syncz.iter().zip(&used).filter(|(_, used)| !**used) {
        let (pod, namespace) =
            node_pod(&sync.node_id).unwrap_or_else(|| (sync.node_id.clone(), String::new()));
        let not_listed = || "not in the proxy list".to_owned();
        rows.push(ProxyRow {
            id: ProxyId { pod, namespace, node_id: Some(sync.node_id.clone()) },
            sync: Some(sync.clone()),
            cert_expiry: Err(not_listed()),
            uptime: Err(not_listed()),
            metrics_error: Some(not_listed()),
            scraped: false,
        });
    }
    rows.sort_by(|a, b| (&a.id.namespace, &a.id.pod).cmp(&(&b.id.namespace, &b.id.pod)));
    rows
}

/// Uptime from Envoy's `/server_info` (`uptime_current_epoch`, a protobuf Duration: `"123s"`
/// or `"1.5s"`).
pub fn uptime(server_info: &str) -> Result<Duration, String> {
    let value: Value =
        serde_json::from_str(server_info).map_err(|e| format!("server_info is not JSON: {e}"))?;
    let text = value
        .get("uptime_current_epoch")
        .and_then(Value::as_str)
        .ok_or("server_info has no uptime_current_epoch")?;
    text.strip_suffix('s')
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("server_info uptime {text:?} is not a duration"))
}

/// Time left on the earliest-expiring certificate of Envoy's `/certs` chains (`cert_chain`,
/// not the CA's), from `expiration_time` (RFC 3339) and `now`, or from
/// `days_until_expiration` when there is no time. Zero when expired.
pub fn cert_expiry(certs: &str, now: SystemTime) -> Result<Duration, String> {
    let value: Value =
        serde_json::from_str(certs).map_err(|e| format!("certs is not JSON: {e}"))?;
    let mut earliest: Option<Duration> = None;
    let chains = value.get("certificates").and_then(Value::as_array).into_iter().flatten();
    for cert in chains.filter_map(|c| c.get("cert_chain").and_then(Value::as_array)).flatten() {
        let left = if let Some(at) = cert.get("expiration_time").and_then(Value::as_str) {
            let at =
                parse_rfc3339(at).ok_or_else(|| format!("certs: bad expiration_time {at:?}"))?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        } else {
            let days = cert.get("days_until_expiration");
            let days = days.and_then(|d| d.as_u64().or_else(|| d.as_str()?.parse().ok()));
            let Some(days) = days else { continue };
            Duration::from_secs(days.saturating_mul(86_400))
        };
        earliest = Some(earliest.map_or(left, |e| e.min(left)));
    }
    earliest.ok_or_else(|| "no workload certificate".to_owned())
}

/// `2024-01-02T03:04:05Z`, `...05.123Z` or `...05+01:00` as a time.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// A duration as the view prints it, two units at most: `45s`, `3m20s`, `23h59m`, `6d4h`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rfc3339_times() {
        // 2024-01-02 is 19724 days after 1970-01-01 (54 years, 13 of them leap: 54*365+13 =
        // 19723 to 2024-01-01, plus one day).
        assert_eq!(parse_rfc3339("2024-01-02T00:00:00Z"), Some(at(19_724 * 86_400)));
        assert_eq!(parse_rfc3339("2024-01-02T01:00:00+01:00"), Some(at(19_724 * 86_400)));
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:01.5Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1500))
        );
        assert_eq!(parse_rfc3339("2024-13-02T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn cert_expiry_is_the_earliest_chain_certificate() {
        let certs = r#"{"certificates": [{
            "ca_cert": [{"expiration_time": "1970-01-01T00:00:10Z"}],
            "cert_chain": [{"expiration_time": "1970-01-02T00:00:00Z", "days_until_expiration": "1"},
                           {"expiration_time": "1970-01-01T12:00:00Z"}]}]}"#;
        // The CA's expires first but does not count: 12h after epoch, seen at 1h.
        assert_eq!(cert_expiry(certs, at(3600)), Ok(Duration::from_secs(11 * 3600)));
        assert_eq!(cert_expiry(certs, at(86_400 * 3)), Ok(Duration::ZERO));
        let days_only = r#"{"certificates": [{"cert_chain": [{"days_until_expiration": "2"}]}]}"#;
        assert_eq!(cert_expiry(days_only, at(0)), Ok(Duration::from_secs(2 * 86_400)));
        assert!(cert_expiry(r#"{"certificates": []}"#, at(0)).is_err());
        assert!(cert_expiry("not json", at(0)).is_err());
    }

    #[test]
    fn uptime_and_durations() {
        assert_eq!(uptime(r#"{"uptime_current_epoch": "3723s"}"#), Ok(Duration::from_secs(3723)));
        assert_eq!(uptime(r#"{"uptime_current_epoch": "1.5s"}"#), Ok(Duration::from_millis(1500)));
        assert!(uptime(r#"{"state": "LIVE"}"#).is_err());
        assert_eq!(short_duration(Duration::from_secs(45)), "45s");
        assert_eq!(short_duration(Duration::from_secs(200)), "3m20s");
        assert_eq!(short_duration(Duration::from_secs(86_399)), "23h59m");
        assert_eq!(short_duration(Duration::from_secs(6 * 86_400 + 4 * 3600 + 59)), "6d4h");
    }

    #[test]
    fn syncz_states_per_type() {
        let text = r#"[{"proxy": "sidecar~10.0.0.1~a-1.ns~ns.svc.cluster.local", "types": {
            "type.googleapis.com/envoy.config.listener.v3.Listener": {"state": "ERROR",
                "acked_version": "v1", "last_nack": "bad listener"},
            "type.googleapis.com/envoy.config.cluster.v3.Cluster": {"state": "SYNCED",
                "acked_version": "v2"},
            "type.googleapis.com/envoy.extensions.other": {"state": "SYNCED"}}},
            {"no proxy": true}]"#;
        let syncz = parse_syncz(text).unwrap();
        assert_eq!(syncz.len(), 1);
        assert_eq!(syncz[0].states, [Some("SYNCED".into()), Some("ERROR".into()), None, None]);
        assert_eq!(syncz[0].acked_version.as_deref(), Some("v2"));
        assert_eq!(syncz[0].nacks, ["LDS: bad listener"]);
        assert_eq!(node_pod(&syncz[0].node_id), Some(("a-1".into(), "ns".into())));
        assert!(parse_syncz("{}").is_err());
    }
}
