//! RBAC filters encoded the same way every time. An RBAC config's policies are a protobuf map,
//! which prost keeps in a `HashMap` and encodes in its (random) order: the same policies would
//! be new bytes on every translation, so a proxy would see its listener change and drain its
//! connections for nothing. The map entries are encoded here by hand, sorted by policy name;
//! any protobuf reader takes fields in any order.

use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

/// The HTTP RBAC filter's name.
pub const HTTP_FILTER: &str = "envoy.filters.http.rbac";
/// The network RBAC filter's name.
pub const NETWORK_FILTER: &str = "envoy.filters.network.rbac";

/// `rules` with its policies in name order, as the bytes of an `envoy.config.rbac.v3.RBAC`.
fn rules(rules: &Rbac) -> Vec<u8> {
    let mut out = Rbac { policies: Default::default(), ..rules.clone() }.encode_to_vec();
    let mut names: Vec<&String> = rules.policies.keys().collect();
    names.sort();
    for name in names {
        let Some(policy) = rules.policies.get(name) else { continue };
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, name, &mut entry);
        prost::encoding::message::encode(2, policy, &mut entry);
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(entry.len() as u64, &mut out);
        out.extend(entry);
    }
    out
}

/// `message` (whose field 1 is left empty) with `rules` as its field 1.
fn with_rules(message: &impl Message, rules_bytes: Vec<u8>) -> Vec<u8> {
    let mut out = message.encode_to_vec();
    encode_key(1, WireType::LengthDelimited, &mut out);
    encode_varint(rules_bytes.len() as u64, &mut out);
    out.extend(rules_bytes);
    out
}

fn any<T: prost::Name>(value: Vec<u8>) -> Any {
    Any { type_url: T::type_url(), value }
}

/// The HTTP filter enforcing `config`.
pub fn http_filter(config: &Rbac) -> HttpFilter {
    let value = with_rules(&HttpRbac::default(), rules(config));
    HttpFilter {
        name: HTTP_FILTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any::<HttpRbac>(value))),
        ..HttpFilter::default()
    }
}

/// The network filter enforcing `config` on a TCP chain.
pub fn network_filter(config: &Rbac) -> Filter {
    let wrapper = NetworkRbac { stat_prefix: "tcp.".to_owned(), ..NetworkRbac::default() };
    let value = with_rules(&wrapper, rules(config));
    Filter {
        name: NETWORK_FILTER.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any::<NetworkRbac>(value))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use envoy_types::pb::envoy::config::rbac::v3::{
        Permission, Policy, Principal, permission, principal,
    };

    use super::*;

    fn config(names: &[&str]) -> Rbac {
        let policy = Policy {
            permissions: vec![Permission { rule: Some(permission::Rule::Any(true)) }],
            principals: vec![Principal { identifier: Some(principal::Identifier::Any(true)) }],
            ..Policy::default()
        };
        Rbac {
            action: 1,
            policies: names.iter().map(|n| ((*n).to_owned(), policy.clone())).collect(),
            ..Rbac::default()
        }
    }

    #[test]
    fn the_same_policies_are_the_same_bytes_and_read_back_whole() {
        let names =
            ["ns[a]-policy[x]-rule[0]", "ns[a]-policy[y]-rule[0]", "ns[b]-policy[z]-rule[3]"];
        let first = http_filter(&config(&names));
        for _ in 0..20 {
            // New maps, new hash seeds: the bytes stay the same.
            assert_eq!(http_filter(&config(&names)), first);
        }
        let Some(http_filter::ConfigType::TypedConfig(any)) = &first.config_type else { panic!() };
        let read = HttpRbac::decode(any.value.as_slice()).unwrap();
        assert_eq!(read.rules.unwrap(), config(&names));
        let Some(filter::ConfigType::TypedConfig(any)) =
            network_filter(&config(&names)).config_type
        else {
            panic!()
        };
        let read = NetworkRbac::decode(any.value.as_slice()).unwrap();
        assert_eq!(read.stat_prefix, "tcp.");
        assert_eq!(read.rules.unwrap(), config(&names));
    }
}
