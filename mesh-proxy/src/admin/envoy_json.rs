//! Envoy's admin JSON: messages as protobuf's JSON mapping with the proto field names
//! (`version_info`, not `versionInfo`), `@type` on every `Any`, defaults left out, 64-bit
//! integers as strings; timestamps and durations as protobuf writes them.

use std::time::{Duration, SystemTime};

use envoy_types::pb::google::protobuf::Timestamp;
use prost_reflect::{DynamicMessage, SerializeOptions};

/// `message` as Envoy's admin writes it. Fails only for a message (or a message in one of its
/// `Any`s) of a type the embedded descriptors lack.
pub fn to_json<M: prost::Message + prost::Name>(message: &M) -> Result<serde_json::Value, String> {
    let pool = mesh_api::envoy::pool().map_err(|e| e.to_string())?;
    let name = M::full_name();
    let descriptor =
        pool.get_message_by_name(&name).ok_or_else(|| format!("no descriptor for {name}"))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| format!("{name} does not decode: {e}"))?;
    let options = SerializeOptions::new().use_proto_field_name(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| format!("{name} cannot be written as JSON: {e}"))
}

/// `at` as a protobuf timestamp.
pub fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// `seconds` since the epoch as protobuf's JSON writes a whole-second timestamp
/// (`2030-01-02T03:04:05Z`).
pub fn timestamp_text(seconds: i64) -> String {
    let at = u64::try_from(seconds)
        .map_or(SystemTime::UNIX_EPOCH, |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    crate::telemetry::rfc3339_seconds(at)
}

/// `duration` as protobuf's JSON writes a duration (`123s`, `1.500s`).
pub fn duration_text(duration: Duration) -> String {
    match duration.subsec_millis() {
        0 => format!("{}s", duration.as_secs()),
        millis => format!("{}.{millis:03}s", duration.as_secs()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use envoy_types::pb::envoy::admin::v3::UpdateFailureState;

    use super::*;

    #[test]
    fn messages_read_as_envoys_admin_writes_them() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_893_553_445_006);
        let state = UpdateFailureState {
            details: "no".to_owned(),
            version_info: "7".to_owned(),
            last_update_attempt: Some(timestamp(at)),
            ..UpdateFailureState::default()
        };
        assert_eq!(
            to_json(&state).unwrap(),
            serde_json::json!({
                "details": "no",
                "version_info": "7",
                "last_update_attempt": "2030-01-02T03:04:05.006Z",
            })
        );
        assert_eq!(timestamp_text(1_893_553_445), "2030-01-02T03:04:05Z");
        assert_eq!(duration_text(Duration::from_secs(123)), "123s");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.500s");
    }
}
