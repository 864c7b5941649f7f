//! RequestAuthentication, compiled into Envoy's `jwt_authn` HTTP filter as Istio compiles it:
//! one provider `origins-<i>` per accepted issuer (the rules of every policy that applies,
//! sorted by issuer), keys inline (fetched by the pilot: [`crate::jwks`]), the claims left in
//! the request's metadata for authorization (`payload`), and one requirement for every path:
//! any of the providers, or no token at all. So a request without a token passes (an
//! AuthorizationPolicy on `requestPrincipals` is what requires one), and one with an invalid
//! token is refused with 401. Which policies apply follows AuthorizationPolicy's rules. Pure.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementOrList, RequirementRule, jwt_provider, jwt_requirement, requirement_rule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::google::protobuf::Empty;
use mesh_api::security::{JwtRule, RequestAuthentication};

use super::authz::rules::{JWT_FILTER, JWT_PAYLOAD};
use super::sorted::{any, with_map};
use crate::model::{Proxy, Snapshot};

/// The RequestAuthentications that apply to `proxy` (AuthorizationPolicy's selection).
pub fn applicable<'a>(snapshot: &'a Snapshot, proxy: &Proxy) -> Vec<&'a RequestAuthentication> {
    let mut found: Vec<&RequestAuthentication> = snapshot
        .request_authentications
        .iter()
        .filter(|ra| {
            let spec = &ra.spec;
            let targets: Vec<_> = spec.target_ref.iter().chain(&spec.target_refs).collect();
            super::authz::applies(snapshot, proxy, &ra.metadata, spec.selector.as_ref(), &targets)
        })
        .collect();
    found.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    found
}

/// The `jwt_authn` filter for an HTTP connection manager of `proxy`'s, when a
/// RequestAuthentication applies to it.
pub fn http_filters(snapshot: &Snapshot, proxy: &Proxy) -> Vec<HttpFilter> {
    let mut rules: Vec<&JwtRule> =
        applicable(snapshot, proxy).into_iter().flat_map(|ra| &ra.spec.jwt_rules).collect();
    if rules.is_empty() {
        return Vec::new();
    }
    rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    rules.dedup_by(|a, b| a.issuer == b.issuer);
    let providers: Vec<(String, JwtProvider)> = rules
        .iter()
        .enumerate()
        .map(|(i, rule)| (format!("origins-{i}"), provider(snapshot, rule)))
        .collect();
    let mut requirements: Vec<JwtRequirement> = providers
        .iter()
        .map(|(name, _)| JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::ProviderName(name.clone())),
        })
        .collect();
    requirements.push(JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::AllowMissing(Empty {})),
    });
    let config = JwtAuthentication {
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                ..RouteMatch::default()
            }),
            requirement_type: Some(requirement_rule::RequirementType::Requires(JwtRequirement {
                requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                    JwtRequirementOrList { requirements },
                )),
            })),
        }],
        bypass_cors_preflight: true,
        ..JwtAuthentication::default()
    };
    let providers = providers.into_iter().collect();
    let value = with_map(&config, 1, &providers);
    vec![HttpFilter {
        name: JWT_FILTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any::<JwtAuthentication>(value))),
        ..HttpFilter::default()
    }]
}

fn provider(snapshot: &Snapshot, rule: &JwtRule) -> JwtProvider {
    let keys = match (&rule.jwks, &rule.jwks_uri) {
        (Some(inline), _) => inline.clone(),
        (None, Some(uri)) => {
            snapshot.jwks.get(uri).cloned().unwrap_or_else(|| crate::jwks::FAIL_CLOSED.to_owned())
        }
        // Validation refuses a rule without keys; one that got here matches no token.
        (None, None) => crate::jwks::FAIL_CLOSED.to_owned(),
    };
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(keys)),
            ..DataSource::default()
        })),
        forward: rule.forward_original_token.unwrap_or(false),
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone().unwrap_or_default(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        forward_payload_header: rule.output_payload_to_header.clone().unwrap_or_default(),
        payload_in_metadata: JWT_PAYLOAD.to_owned(),
        claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..JwtClaimToHeader::default()
            })
            .collect(),
        ..JwtProvider::default()
    }
}
