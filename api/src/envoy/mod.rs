//! Envoy v3 resources as JSON, written the way Envoy's admin `/config_dump` writes them
//! (proto3 JSON, `@type` on every `Any`, default values left out), so that dumps of this mesh
//! read like Envoy's and golden files can be reviewed.
//!
//! The descriptors in `descriptors.bin` come from the `envoy-types` crate the binaries build
//! with, cut down to the types the mesh serves (`make descriptors` regenerates them).

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// Why a resource could not be written as JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The embedded descriptors do not decode (a build defect).
    #[error("the embedded Envoy descriptors are unreadable: {0}")]
    Descriptors(String),
    /// A type the descriptors do not hold.
    #[error("no descriptor for {0}: add it to api/examples/write_envoy_descriptors.rs")]
    UnknownType(String),
    /// The bytes are not a message of the type.
    #[error("{type_url} does not decode: {reason}")]
    Decode {
        /// Type URL of the resource (`type.googleapis.com/envoy.config.cluster.v3.Cluster`).
        type_url: String,
        /// The protobuf decoder's error.
        reason: String,
    },
    /// A nested `Any` of an unknown type, or another serialization failure.
    #[error("{type_url} cannot be written as JSON: {reason}")]
    Serialize {
        /// Type URL of the resource that could not be written.
        type_url: String,
        /// The serializer's error, naming the nested type it does not know.
        reason: String,
    },
}

/// The descriptors of the Envoy types the mesh serves.
pub fn pool() -> Result<&'static DescriptorPool, JsonError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(include_bytes!("descriptors.bin").as_slice())
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| JsonError::Descriptors(e.clone()))
}

/// One resource (a type URL and its encoded bytes, as in an `Any`) as JSON, with `@type`.
pub fn to_json(type_url: &str, bytes: &[u8]) -> Result<serde_json::Value, JsonError> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let descriptor =
        pool()?.get_message_by_name(name).ok_or_else(|| JsonError::UnknownType(name.to_owned()))?;
    let message = DynamicMessage::decode(descriptor, bytes)
        .map_err(|e| JsonError::Decode { type_url: type_url.to_owned(), reason: e.to_string() })?;
    let options = SerializeOptions::new().stringify_64_bit_integers(false);
    let value =
        message.serialize_with_options(serde_json::value::Serializer, &options).map_err(|e| {
            JsonError::Serialize { type_url: type_url.to_owned(), reason: e.to_string() }
        })?;
    Ok(match value {
        serde_json::Value::Object(fields) => {
            let mut with_type = serde_json::Map::new();
            with_type.insert("@type".to_owned(), serde_json::Value::String(type_url.to_owned()));
            with_type.extend(fields);
            serde_json::Value::Object(with_type)
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_read_as_envoy_writes_them() {
        // A StringValue: the smallest message with a field.
        let bytes = [0x0a, 0x02, b'h', b'i'];
        let json = to_json("type.googleapis.com/google.protobuf.StringValue", &bytes).unwrap();
        assert_eq!(json, serde_json::json!("hi"));
        let err = to_json("type.googleapis.com/envoy.Nope", &[]).unwrap_err();
        assert!(err.to_string().contains("no descriptor for envoy.Nope"), "{err}");
        let err = to_json(crate::xds::CLUSTER_TYPE, &[0xff]).unwrap_err();
        assert!(matches!(err, JsonError::Decode { .. }), "{err}");
    }
}
