//! The filter as a client sees it, in the shape the pilot sends (Istio's: providers
//! `origins-<i>`, one rule on `/` requiring any of them or none): what passes, what is
//! refused with which status, body and `www-authenticate`, and what a passed request carries.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match::PathSpecifier};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementAndList, JwtRequirementOrList, ProviderWithAudiences, RemoteJwks,
    RequirementRule, jwt_provider::JwksSourceSpecifier, jwt_requirement::RequiresType,
    requirement_rule::RequirementType,
};
use envoy_types::pb::google::protobuf::Empty;
use http::Request;
use serde_json::{Value, json};

use super::testing::{TestKey, jwks};
use super::*;

const NOW: u64 = 1_700_000_000;
const ISSUER: &str = "https://issuer.example";

fn provider(issuer: &str, audiences: &[&str], jwks: String) -> JwtProvider {
    JwtProvider {
        issuer: issuer.to_owned(),
        audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        payload_in_metadata: "payload".to_owned(),
        forward_payload_header: "x-jwt-payload".to_owned(),
        claim_to_headers: vec![
            JwtClaimToHeader {
                header_name: "x-jwt-team".to_owned(),
                claim_name: "org.team".to_owned(),
                ..Default::default()
            },
            JwtClaimToHeader {
                header_name: "x-jwt-sub".to_owned(),
                claim_name: "sub".to_owned(),
                ..Default::default()
            },
        ],
        jwks_source_specifier: Some(JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(Specifier::InlineString(jwks)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn by_name(name: &str) -> JwtRequirement {
    JwtRequirement { requires_type: Some(RequiresType::ProviderName(name.to_owned())) }
}

fn allow_missing() -> JwtRequirement {
    JwtRequirement { requires_type: Some(RequiresType::AllowMissing(Empty {})) }
}

fn any(requirements: Vec<JwtRequirement>) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(RequiresType::RequiresAny(JwtRequirementOrList { requirements })),
    }
}

fn rule(prefix: &str, requires: JwtRequirement) -> RequirementRule {
    RequirementRule {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.to_owned())),
            ..Default::default()
        }),
        requirement_type: Some(RequirementType::Requires(requires)),
    }
}

/// What the pilot sends for these providers: `origins-<i>`, one rule on `/` for any of them
/// or no token at all, CORS preflights bypassed.
fn istio(providers: Vec<JwtProvider>) -> JwtAuthentication {
    let mut requirements: Vec<_> =
        (0..providers.len()).map(|i| by_name(&format!("origins-{i}"))).collect();
    requirements.push(allow_missing());
    JwtAuthentication {
        providers: providers
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("origins-{i}"), p))
            .collect(),
        rules: vec![rule("/", any(requirements))],
        bypass_cors_preflight: true,
        ..Default::default()
    }
}

fn b64(value: &Value) -> String {
    use base64::Engine as _;
    super::token::BASE64URL.encode(value.to_string())
}

fn filter(config: &JwtAuthentication) -> JwtAuthn {
    JwtAuthn::compile(config).unwrap()
}

fn request(path: &str, token: Option<&str>) -> Request<()> {
    let mut builder = Request::get(path).header("host", "svc.test");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(()).unwrap()
}

fn claims(extra: Value) -> Value {
    let mut claims = json!({
        "iss": ISSUER, "sub": "alice", "aud": ["bookinfo"],
        "iat": NOW - 10, "exp": NOW + 3600, "org": {"team": "payments"},
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

/// The status, body and `www-authenticate` a refused request gets.
fn refusal(filter: &JwtAuthn, request: &mut Request<()>) -> (u16, String, String) {
    let denial = filter.authenticate(request, NOW, false).unwrap_err();
    let challenge = denial
        .www_authenticate
        .as_ref()
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (denial.http_status().as_u16(), denial.body, challenge)
}

#[test]
fn a_request_without_a_token_passes_with_no_principal_and_no_forged_claim_headers() {
    let key = TestKey::rsa("k1");
    let filter = filter(&istio(vec![provider(ISSUER, &["bookinfo"], jwks(&[&key]))]));
    let mut request = request("/p", None);
    request.headers_mut().insert("x-jwt-sub", "admin".parse().unwrap());
    let metadata = filter.authenticate(&mut request, NOW, false).unwrap();
    assert!(metadata.is_empty(), "no payload for RBAC to read");
    assert!(request.headers().get("x-jwt-sub").is_none(), "a client cannot pose as a claim");
}

#[test]
fn a_valid_token_is_verified_its_claims_written_and_the_token_removed() {
    let key = TestKey::rsa("k1");
    let filter = filter(&istio(vec![provider(ISSUER, &["bookinfo"], jwks(&[&key]))]));
    let token = key.sign("RS256", &claims(json!({})));
    let mut request = request("/p?x=1", Some(&token));
    request.headers_mut().insert("x-jwt-team", "forged".parse().unwrap());
    let metadata = filter.authenticate(&mut request, NOW, false).unwrap();

    assert_eq!(metadata["payload"]["sub"], "alice");
    assert_eq!(metadata["payload"]["org"]["team"], "payments", "nested claims for RBAC");
    let headers = request.headers();
    assert!(headers.get("authorization").is_none(), "the token does not reach the app");
    let team: Vec<_> = headers.get_all("x-jwt-team").iter().collect();
    assert_eq!(team, ["payments"], "the forged value is gone, the claim is set");
    assert_eq!(headers["x-jwt-sub"], "alice");
    let payload = headers["x-jwt-payload"].to_str().unwrap();
    assert_eq!(payload, token.split('.').nth(1).unwrap(), "the payload as sent");
    assert_eq!(request.uri().to_string(), "/p?x=1");
}

#[test]
fn every_invalid_token_is_refused_with_envoys_status_and_challenge() {
    let key = TestKey::rsa("k1");
    let p256 = TestKey::p256("k1");
    let filter = filter(&istio(vec![provider(ISSUER, &["bookinfo"], jwks(&[&key]))]));
    let refused = |token: String| refusal(&filter, &mut request("/p?q=1", Some(&token)));
    let challenge = "Bearer realm=\"http://svc.test/p?q=1\", error=\"invalid_token\"";

    let expired = key.sign("RS256", &claims(json!({"exp": NOW - 61})));
    assert_eq!(refused(expired), (401, "Jwt is expired".to_owned(), challenge.to_owned()));
    let in_skew = key.sign("RS256", &claims(json!({"exp": NOW - 60})));
    assert!(filter.authenticate(&mut request("/", Some(&in_skew)), NOW, false).is_ok());
    let early = key.sign("RS256", &claims(json!({"nbf": NOW + 61})));
    assert_eq!(refused(early).1, "Jwt not yet valid");

    let audience = key.sign("RS256", &claims(json!({"aud": "other"})));
    assert_eq!(
        refused(audience),
        (403, "Audiences in Jwt are not allowed".to_owned(), challenge.to_owned())
    );
    let sanitized = key.sign("RS256", &claims(json!({"aud": "https://bookinfo/"})));
    assert!(filter.authenticate(&mut request("/", Some(&sanitized)), NOW, false).is_ok());

    let issuer = key.sign("RS256", &claims(json!({"iss": "https://evil.example"})));
    assert_eq!(refused(issuer).1, "Jwt issuer is not configured");

    // Signed by the right kid with another key; or a key the JWKS does not have.
    let forged = p256.sign("ES256", &claims(json!({})));
    assert_eq!(refused(forged).1, "Jwt verification fails");
    let tampered = {
        let good = key.sign("RS256", &claims(json!({})));
        let parts: Vec<&str> = good.split('.').collect();
        let admin = b64(&claims(json!({"sub": "admin"})));
        format!("{}.{admin}.{}", parts[0], parts[2])
    };
    assert_eq!(refused(tampered).1, "Jwt verification fails");
    let unknown_kid = TestKey::rsa("k2").sign("RS256", &claims(json!({})));
    assert_eq!(refused(unknown_kid).1, "Jwks doesn't have key to match kid or alg from Jwt");

    assert_eq!(
        refused("not-a-token".to_owned()).1,
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    );
    let none = format!("{}.{}.sig", b64(&json!({"alg": "none"})), b64(&claims(json!({}))));
    assert_eq!(refused(none).1, "Jwt header [alg] is not supported");
    let huge = key.sign("RS256", &claims(json!({"pad": "x".repeat(MAX_TOKEN_BYTES)})));
    assert_eq!(refused(huge).1, "Jwt is too large");
    let wrong_type = key.sign("RS256", &claims(json!({"exp": "tomorrow"})));
    assert_eq!(refused(wrong_type).1, "Jwt payload [exp] field is not an integer");
}

#[test]
fn every_algorithm_verifies_with_its_own_key_only() {
    let rsa = TestKey::rsa("rsa");
    let p256 = TestKey::p256("p256");
    let p384 = TestKey::p384("p384");
    let ed = TestKey::ed25519("ed");
    let hmac = TestKey::hmac("hmac");
    let filter =
        filter(&istio(vec![provider(ISSUER, &[], jwks(&[&rsa, &p256, &p384, &ed, &hmac]))]));
    let cases = [
        (&rsa, "RS256"),
        (&rsa, "RS384"),
        (&rsa, "RS512"),
        (&rsa, "PS256"),
        (&rsa, "PS384"),
        (&rsa, "PS512"),
        (&p256, "ES256"),
        (&p384, "ES384"),
        (&ed, "EdDSA"),
        (&hmac, "HS256"),
        (&hmac, "HS384"),
        (&hmac, "HS512"),
    ];
    for (key, alg) in cases {
        let token = key.sign(alg, &claims(json!({})));
        let verified = filter.authenticate(&mut request("/", Some(&token)), NOW, false);
        assert!(verified.is_ok_and(|m| m["payload"]["sub"] == "alice"), "{alg}");
        // The same signature over another payload does not verify.
        let parts: Vec<&str> = token.split('.').collect();
        let other = b64(&claims(json!({"sub": "mallory"})));
        let forged = format!("{}.{other}.{}", parts[0], parts[2]);
        let (status, body, _) = refusal(&filter, &mut request("/", Some(&forged)));
        assert_eq!((status, body.as_str()), (401, "Jwt verification fails"), "{alg}");
    }
    // An Ed25519 signature of the wrong length is refused as such.
    let short = {
        let token = ed.sign("EdDSA", &claims(json!({})));
        format!("{}.AAAA", token.rsplit_once('.').unwrap().0)
    };
    assert_eq!(
        refusal(&filter, &mut request("/", Some(&short))).1,
        "Jwt ED25519 signature is wrong length"
    );
}

#[test]
fn requirements_combine_as_envoys_verifiers_do() {
    let (a, b) = (TestKey::p256("a"), TestKey::p256("b"));
    let issuer_b = "https://b.example";
    let with_b = |extra: Value| {
        let mut c = claims(extra);
        c["iss"] = json!(issuer_b);
        c
    };
    // Two providers, as Istio compiles two jwtRules: either token, or none.
    let config = istio(vec![
        provider(ISSUER, &["bookinfo"], jwks(&[&a])),
        provider(issuer_b, &[], jwks(&[&b])),
    ]);
    let two = filter(&config);
    let token_b = b.sign("ES256", &with_b(json!({})));
    let metadata = two.authenticate(&mut request("/", Some(&token_b)), NOW, false).unwrap();
    assert_eq!(metadata["payload"]["iss"], issuer_b);
    // A token of B signed by A's key: B's failure is what the client hears.
    let wrong = a.sign("ES256", &with_b(json!({})));
    assert_eq!(
        refusal(&two, &mut request("/", Some(&wrong))).1,
        "Jwks doesn't have key to match kid or alg from Jwt"
    );

    // Required (no allow_missing), only under /api, with audiences of the requirement.
    let mut strict = config.clone();
    strict.rules = vec![rule(
        "/api",
        JwtRequirement {
            requires_type: Some(RequiresType::ProviderAndAudiences(ProviderWithAudiences {
                provider_name: "origins-0".to_owned(),
                audiences: vec!["admin".to_owned()],
            })),
        },
    )];
    let strict = filter(&strict);
    let (status, body, challenge) = refusal(&strict, &mut request("/api/x", None));
    assert_eq!((status, body.as_str()), (401, "Jwt is missing"));
    assert_eq!(
        challenge, "Bearer realm=\"http://svc.test/api/x\"",
        "no invalid_token when missing"
    );
    assert!(strict.authenticate(&mut request("/public", None), NOW, false).is_ok(), "no rule");
    let bookinfo = a.sign("ES256", &claims(json!({})));
    assert_eq!(refusal(&strict, &mut request("/api", Some(&bookinfo))).0, 403);
    let admin = a.sign("ES256", &claims(json!({"aud": "admin"})));
    assert!(strict.authenticate(&mut request("/api", Some(&admin)), NOW, false).is_ok());

    // All of two, each from its own header.
    let mut both = config.clone();
    both.providers.get_mut("origins-1").unwrap().from_headers =
        vec![JwtHeader { name: "x-b-token".to_owned(), value_prefix: String::new() }];
    both.rules = vec![rule(
        "/",
        JwtRequirement {
            requires_type: Some(RequiresType::RequiresAll(JwtRequirementAndList {
                requirements: vec![by_name("origins-0"), by_name("origins-1")],
            })),
        },
    )];
    let both = filter(&both);
    let token_a = a.sign("ES256", &claims(json!({})));
    let mut one = request("/", Some(&token_a));
    assert_eq!(refusal(&both, &mut one).1, "Jwt is missing");
    let mut two_tokens = request("/", Some(&token_a));
    two_tokens.headers_mut().insert("x-b-token", token_b.parse().unwrap());
    assert!(both.authenticate(&mut two_tokens, NOW, false).is_ok());
    assert!(two_tokens.headers().get("x-b-token").is_none());

    // Istio's shape for several jwtRules: any provider, or all of them optional.
    let mut nested = config.clone();
    let optional = |name: &str| any(vec![by_name(name), allow_missing()]);
    nested.rules = vec![rule(
        "/",
        any(vec![
            by_name("origins-0"),
            by_name("origins-1"),
            JwtRequirement {
                requires_type: Some(RequiresType::RequiresAll(JwtRequirementAndList {
                    requirements: vec![optional("origins-0"), optional("origins-1")],
                })),
            },
        ]),
    )];
    let nested = filter(&nested);
    assert!(nested.authenticate(&mut request("/", None), NOW, false).unwrap().is_empty());
    assert!(nested.authenticate(&mut request("/", Some(&token_b)), NOW, false).is_ok());
    // B's expired token: the expiry is what the client hears, not A's unknown issuer.
    let expired_b = b.sign("ES256", &with_b(json!({"exp": NOW - 3600})));
    assert_eq!(refusal(&nested, &mut request("/", Some(&expired_b))).1, "Jwt is expired");

    // allow_missing_or_failed never refuses, and still verifies what it can.
    let mut lenient = config;
    lenient.rules = vec![rule(
        "/",
        JwtRequirement { requires_type: Some(RequiresType::AllowMissingOrFailed(Empty {})) },
    )];
    let lenient = filter(&lenient);
    let expired = a.sign("ES256", &claims(json!({"exp": NOW - 3600})));
    assert!(
        lenient.authenticate(&mut request("/", Some(&expired)), NOW, false).unwrap().is_empty()
    );
    let good = lenient.authenticate(&mut request("/", Some(&token_b)), NOW, false).unwrap();
    assert_eq!(good["payload"]["iss"], issuer_b, "looked up by issuer");
}

#[test]
fn other_places_preflights_forwarding_and_stripped_failures() {
    let key = TestKey::p256("k");
    let mut config = istio(vec![provider(ISSUER, &[], jwks(&[&key]))]);
    let token = key.sign("ES256", &claims(json!({})));

    // The default query parameter, taken out of the query once verified.
    let plain = filter(&config);
    let mut by_param = request(&format!("/p?access_token={token}&x=1"), None);
    assert!(plain.authenticate(&mut by_param, NOW, false).is_ok());
    assert_eq!(by_param.uri().to_string(), "/p?x=1");

    // A CORS preflight carries no credentials: it passes even with a bad token.
    let mut preflight = request("/", Some("bad"));
    *preflight.method_mut() = http::Method::OPTIONS;
    preflight.headers_mut().insert("origin", "https://app.example".parse().unwrap());
    preflight.headers_mut().insert("access-control-request-method", "POST".parse().unwrap());
    assert!(plain.authenticate(&mut preflight, NOW, false).is_ok());

    let provider = config.providers.get_mut("origins-0").unwrap();
    provider.forward = true;
    provider.claim_to_headers[1].claim_name = "admin".to_owned();
    config.strip_failure_response = true;
    let forwarding = filter(&config);
    let mut kept = request("/", Some(&key.sign("ES256", &claims(json!({"admin": true})))));
    assert!(forwarding.authenticate(&mut kept, NOW, false).is_ok());
    assert!(kept.headers().get("authorization").is_some(), "forward: true keeps the token");
    assert_eq!(kept.headers()["x-jwt-sub"], "true", "a boolean claim as a word");
    let denial =
        forwarding.authenticate(&mut request("/", Some("YWJj.YWJj.YWJj")), NOW, false).unwrap_err();
    assert_eq!(denial.details(), "jwt_authn_access_denied{Jwt_header_is_an_invalid_JSON}");
    assert_eq!((denial.body.as_str(), denial.www_authenticate), ("", None));
}

#[test]
fn a_jwks_keeps_the_keys_it_can_use_and_one_without_fails_tokens_closed() {
    let key = TestKey::p256("good");
    let mut mixed: Value = serde_json::from_str(&jwks(&[&key])).unwrap();
    let keys = mixed["keys"].as_array_mut().unwrap();
    keys.insert(0, json!({"kty": "EC", "alg": "RS256", "x": "AA", "y": "AA"}));
    keys.insert(0, json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}));
    keys.insert(0, json!({"kid": "no-kty"}));
    let filter = filter(&istio(vec![provider(ISSUER, &[], mixed.to_string())]));
    let token = key.sign("ES256", &claims(json!({})));
    assert!(filter.authenticate(&mut request("/", Some(&token)), NOW, false).is_ok());

    // Istio inlines a key-less stand-in when it cannot fetch a JWKS: tokens fail, no token
    // still passes.
    let broken = self::filter(&istio(vec![provider(ISSUER, &[], "{\"keys\": []}".to_owned())]));
    assert_eq!(
        refusal(&broken, &mut request("/", Some(&token))).1,
        "Jwks doesn't have any valid public key"
    );
    assert!(broken.authenticate(&mut request("/", None), NOW, false).is_ok());

    // The pilot's stand-in while it cannot fetch an issuer's keys (a 2047-bit RSA key nobody
    // holds): tokens are refused with what Envoy says of them.
    let stand_in = mesh_pilot::jwks::FAIL_CLOSED.to_owned();
    let closed = self::filter(&istio(vec![provider(ISSUER, &[], stand_in)]));
    let rsa = TestKey::rsa("mesh-fail-closed");
    let (status, body, _) = refusal(&closed, &mut request("/", Some(&token)));
    assert_eq!(
        (status, body.as_str()),
        (401, "Jwks doesn't have key to match kid or alg from Jwt")
    );
    let same_kid = rsa.sign("RS256", &claims(json!({})));
    assert_eq!(refusal(&closed, &mut request("/", Some(&same_kid))).1, "Jwt verification fails");
    assert!(closed.authenticate(&mut request("/", None), NOW, false).is_ok());
}

#[test]
fn what_cannot_be_enforced_as_envoy_would_is_a_configuration_error() {
    let key = TestKey::p256("k");
    let mut unknown = istio(vec![provider(ISSUER, &[], jwks(&[&key]))]);
    unknown.rules = vec![rule("/", by_name("origins-9"))];
    assert_eq!(
        JwtAuthn::compile(&unknown).unwrap_err(),
        ConfigError::UnknownProvider("origins-9".to_owned())
    );

    let mut remote = istio(vec![provider(ISSUER, &[], jwks(&[&key]))]);
    remote.providers.get_mut("origins-0").unwrap().jwks_source_specifier =
        Some(JwksSourceSpecifier::RemoteJwks(RemoteJwks::default()));
    let why = JwtAuthn::compile(&remote).unwrap_err().to_string();
    assert!(why.contains("remote_jwks"), "{why}");

    let mut lonely = istio(vec![provider(ISSUER, &[], jwks(&[&key]))]);
    lonely.rules = vec![rule("/", any(vec![by_name("origins-0")]))];
    assert!(JwtAuthn::compile(&lonely).is_err(), "requires_any takes two or more");

    let mut bad_header = istio(vec![provider(ISSUER, &[], jwks(&[&key]))]);
    bad_header.providers.get_mut("origins-0").unwrap().claim_to_headers[0].header_name =
        "bad header".to_owned();
    assert!(JwtAuthn::compile(&bad_header).is_err());
}
