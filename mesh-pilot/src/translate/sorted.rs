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
