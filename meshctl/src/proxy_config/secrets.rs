//! `proxy-config secret`: the proxy's certificates (its own chain and the roots it trusts),
//! with serial and validity read from the certificate itself, as `istioctl proxy-config
//! secret` prints them.

use base64::Engine;
use serde_json::Value;

use super::dump::{self, DumpError, SecretState, field, path, text};
use super::table::Table;

/// Which secrets to show.
#[derive(Clone, Debug, Default)]
pub struct SecretFilter {
    /// The secret's name (`default`, `ROOTCA`).
    pub name: Option<String>,
}

/// The secret entries (`name`, `secret`, versions) `filter` selects: the active ones, then the
/// warming ones, then the static ones.
pub fn select<'a>(dump: &'a Value, filter: &SecretFilter) -> Result<Vec<&'a Value>, DumpError> {
    Ok(selected(dump, filter)?.into_iter().map(|(_, entry)| entry).collect())
}

fn selected<'a>(
    dump: &'a Value,
    filter: &SecretFilter,
) -> Result<Vec<(SecretState, &'a Value)>, DumpError> {
    Ok(dump::secrets(dump)?
        .into_iter()
        .filter(|(_, e)| filter.name.as_ref().is_none_or(|n| n == text(e, "name")))
        .collect())
}

/// The table: `RESOURCE NAME  TYPE  STATUS  VALID CERT  SERIAL NUMBER  NOT AFTER  NOT BEFORE`;
/// a certificate is valid when `now` (Unix seconds) is within its validity.
pub fn table(dump: &Value, filter: &SecretFilter, now: i64) -> Result<String, DumpError> {
    let mut table = Table::new(&[
        "RESOURCE NAME",
        "TYPE",
        "STATUS",
        "VALID CERT",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
    ]);
    for (state, entry) in selected(dump, filter)? {
        let secret = field(entry, "secret").unwrap_or(&Value::Null);
        let (kind, source) =
            if let Some(chain) = path(secret, &["tls_certificate", "certificate_chain"]) {
                ("Cert Chain", Some(chain))
            } else if let Some(roots) = path(secret, &["validation_context", "trusted_ca"]) {
                ("CA", Some(roots))
            } else {
                ("", None)
            };
        let status = match state {
            SecretState::Active => "ACTIVE",
            SecretState::Warming => "WARMING",
        };
        let name = text(entry, "name");
        match source.and_then(first_certificate) {
            Some(cert) => table.row([
                name.to_owned(),
                kind.to_owned(),
                status.to_owned(),
                (cert.not_before <= now && now <= cert.not_after).to_string(),
                cert.serial,
                rfc3339(cert.not_after),
                rfc3339(cert.not_before),
            ]),
            None => table.row([name, kind, status, "false"]),
        }
    }
    Ok(table.render())
}

/// What the table shows of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Certificate {
    /// Hexadecimal, without leading zeros (as Go's `big.Int` prints it, which istioctl shows).
    serial: String,
    /// Unix seconds.
    not_before: i64,
    /// Unix seconds.
    not_after: i64,
}

/// The first certificate of a data source: `inline_bytes` (base64 of PEM or DER, as proto3
/// JSON writes bytes) or `inline_string` (PEM). A file the proxy reads is not ours to read.
fn first_certificate(source: &Value) -> Option<Certificate> {
    let bytes = match (field(source, "inline_bytes"), field(source, "inline_string")) {
        (Some(Value::String(b64)), _) => {
            base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?
        }
        (_, Some(Value::String(pem))) => pem.as_bytes().to_vec(),
        _ => return None,
    };
    let der = if bytes.starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).ok()?;
        pem.contents
    } else {
        bytes
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let hex: String = cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
    let serial = match hex.trim_start_matches('0') {
        "" => "0".to_owned(),
        trimmed => trimmed.to_owned(),
    };
    let validity = cert.validity();
    Some(Certificate {
        serial,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// Unix seconds as RFC 3339 in UTC (`2026-12-01T18:00:23Z`).
fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_read_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_148_023), "2026-12-01T18:00:23Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
