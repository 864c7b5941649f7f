//! Which Istio object a cluster or route was made from, recorded where istiod records it
//! (`util.AddConfigInfoMetadata`): `filter_metadata["istio"]["config"]` =
//! `/apis/networking.istio.io/v1/namespaces/<ns>/destination-rule/<name>`. `istioctl
//! proxy-config` and `meshctl proxy-config` read it for their DESTINATION RULE and VIRTUAL
//! SERVICE columns (as `name.namespace`), and users' scripts read it too, so the path is
//! istiod's to the letter; Envoy ignores it.

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use kube::Resource;

/// The filter metadata namespace istiod writes its own keys under.
const FILTER: &str = "istio";
/// The key of the object's path in it.
const CONFIG: &str = "config";

/// The metadata naming `object` as the config it came from. The version is the kind's
/// (`v1`, what istiod writes today whichever version the object was applied as: its
/// informers watch `v1` and the API server converts); an object without a namespace is in
/// `default`, as the rest of translation takes it.
pub fn config_metadata<K: Resource<DynamicType = ()>>(object: &K) -> Metadata {
    let meta = object.meta();
    let path = format!(
        "/apis/{}/{}/namespaces/{}/{}/{}",
        K::group(&()),
        K::version(&()),
        meta.namespace.as_deref().unwrap_or("default"),
        kebab(&K::kind(&())),
        meta.name.as_deref().unwrap_or_default(),
    );
    // One key at each level: envoy-types' maps are HashMaps, and two keys would encode in a
    // different order each time, making an unchanged resource look changed.
    let istio = Struct {
        fields: [(CONFIG.to_owned(), Value { kind: Some(Kind::StringValue(path)) })]
            .into_iter()
            .collect(),
    };
    Metadata {
        filter_metadata: [(FILTER.to_owned(), istio)].into_iter().collect(),
        ..Metadata::default()
    }
}

/// A kind as istiod spells it in the path (`strcase.CamelCaseToKebabCase`):
/// `DestinationRule` is `destination-rule`.
fn kebab(kind: &str) -> String {
    let mut out = String::with_capacity(kind.len() + 4);
    for (i, c) in kind.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The path recorded in `metadata`, if it names one.
pub fn config_path(metadata: Option<&Metadata>) -> Option<&str> {
    match metadata?.filter_metadata.get(FILTER)?.fields.get(CONFIG)?.kind.as_ref()? {
        Kind::StringValue(path) => Some(path),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::networking::{DestinationRule, VirtualService};

    #[test]
    fn the_path_is_istiods() {
        let mut dr = DestinationRule::new("reviews", Default::default());
        dr.metadata.namespace = Some("bookinfo".to_owned());
        let metadata = config_metadata(&dr);
        assert_eq!(
            config_path(Some(&metadata)),
            Some("/apis/networking.istio.io/v1/namespaces/bookinfo/destination-rule/reviews")
        );
        let vs = VirtualService::new("ratings", Default::default());
        let metadata = config_metadata(&vs);
        assert_eq!(
            config_path(Some(&metadata)),
            Some("/apis/networking.istio.io/v1/namespaces/default/virtual-service/ratings")
        );
    }

    #[test]
    fn kinds_are_kebab_case() {
        assert_eq!(kebab("DestinationRule"), "destination-rule");
        assert_eq!(kebab("VirtualService"), "virtual-service");
        assert_eq!(kebab("Sidecar"), "sidecar");
    }
}
