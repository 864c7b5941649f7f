//! Messages with a map field encoded the same way every time. prost keeps a protobuf map in
//! a `HashMap` and encodes it in its (random) iteration order: the same configuration would be
//! new bytes on every translation, so a proxy would see a listener change and drain its
//! connections for nothing. Here the map's entries are encoded by hand, sorted by key, after
//! the rest of the message; any protobuf reader takes fields in any order.

use std::collections::HashMap;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

/// `message` (whose map field `tag` is left empty) followed by `map`'s entries in key order.
pub fn with_map<V: Message>(message: &impl Message, tag: u32, map: &HashMap<String, V>) -> Vec<u8> {
    let mut out = message.encode_to_vec();
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        let Some(value) = map.get(key) else { continue };
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, key, &mut entry);
        prost::encoding::message::encode(2, value, &mut entry);
        encode_key(tag, WireType::LengthDelimited, &mut out);
        encode_varint(entry.len() as u64, &mut out);
        out.extend(entry);
    }
    out
}

/// `message` (whose message field `tag` is left empty) followed by `field` (already encoded).
pub fn with_field(message: &impl Message, tag: u32, field: Vec<u8>) -> Vec<u8> {
    let mut out = message.encode_to_vec();
    encode_key(tag, WireType::LengthDelimited, &mut out);
    encode_varint(field.len() as u64, &mut out);
    out.extend(field);
    out
}

/// An `Any` of type `T` holding `value`.
pub fn any<T: prost::Name>(value: Vec<u8>) -> Any {
    Any { type_url: T::type_url(), value }
}

/// A JSON object as an encoded `google.protobuf.Struct`, its fields (and those of nested
/// objects) in key order: prost keeps a `Struct`'s fields in a `HashMap`.
pub fn json_struct<'a>(
    fields: impl IntoIterator<Item = (&'a String, &'a serde_json::Value)>,
) -> Vec<u8> {
    let mut fields: Vec<_> = fields.into_iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (key, value) in fields {
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, key, &mut entry);
        length_delimited(2, &json_value(value), &mut entry);
        length_delimited(1, &entry, &mut out);
    }
    out
}

/// A JSON value as an encoded `google.protobuf.Value`.
fn json_value(value: &serde_json::Value) -> Vec<u8> {
    use serde_json::Value;
    let mut out = Vec::new();
    match value {
        Value::Null => prost::encoding::int32::encode(1, &0, &mut out),
        Value::Number(n) => {
            prost::encoding::double::encode(2, &n.as_f64().unwrap_or(0.0), &mut out)
        }
        Value::String(s) => prost::encoding::string::encode(3, s, &mut out),
        Value::Bool(b) => prost::encoding::bool::encode(4, b, &mut out),
        Value::Object(map) => length_delimited(5, &json_struct(map), &mut out),
        Value::Array(items) => {
            let mut list = Vec::new();
            for item in items {
                length_delimited(1, &json_value(item), &mut list);
            }
            length_delimited(6, &list, &mut out);
        }
    }
    out
}

/// Field `tag` holding `bytes` (a message or string already encoded).
fn length_delimited(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}
