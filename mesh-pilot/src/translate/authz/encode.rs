//! RBAC filters encoded the same way every time: their policies are a protobuf map, encoded in
//! name order ([`crate::translate::sorted`]).

use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;

use crate::translate::sorted::{any, with_field, with_map};

/// The HTTP RBAC filter's name.
pub const HTTP_FILTER: &str = "envoy.filters.http.rbac";
/// The network RBAC filter's name.
pub const NETWORK_FILTER: &str = "envoy.filters.network.rbac";

/// `rules` with its policies (field 2) in name order.
fn rules(rules: &Rbac) -> Vec<u8> {
    with_map(&Rbac { policies: Default::default(), ..rules.clone() }, 2, &rules.policies)
}

fn with_rules(message: &impl prost::Message, rules_bytes: Vec<u8>) -> Vec<u8> {
    with_field(message, 1, rules_bytes)
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
    use prost::Message as _;

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
