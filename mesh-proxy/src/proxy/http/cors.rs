//! CORS, as a route's policy grants it: a request from an allowed origin gets the
//! `access-control-*` headers on its response, and its preflight is answered by the proxy
//! (the app never sees it). Other origins get nothing, and their preflights go to the app.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};

use crate::policy::Cors;

/// The route's CORS policy, granted to the request's origin.
pub(super) struct Grant<'a> {
    cors: &'a Cors,
    origin: HeaderValue,
}

/// The grant for a request with `headers`, when the route has a CORS policy that allows its
/// `origin`.
pub(super) fn grant<'a>(cors: Option<&'a Cors>, headers: &HeaderMap) -> Option<Grant<'a>> {
    let (cors, origin) = cors.zip(headers.get(header::ORIGIN))?;
    origin.to_str().is_ok_and(|o| cors.allows(o)).then(|| Grant { cors, origin: origin.clone() })
}

/// Whether a request is a CORS preflight.
pub(super) fn is_preflight<B>(request: &Request<B>) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl Grant<'_> {
    /// The headers of the response (a preflight's adds the `allow-*` ones).
    pub(super) fn headers(&self, preflight: bool) -> Vec<(HeaderName, HeaderValue)> {
        let cors = self.cors;
        let mut out = vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.origin.clone())];
        if cors.allow_credentials {
            out.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
        }
        let mut add = |name: HeaderName, value: &str| {
            if let Some(value) = HeaderValue::from_str(value).ok().filter(|_| !value.is_empty()) {
                out.push((name, value));
            }
        };
        if preflight {
            add(header::ACCESS_CONTROL_ALLOW_METHODS, &cors.allow_methods);
            add(header::ACCESS_CONTROL_ALLOW_HEADERS, &cors.allow_headers);
            add(header::ACCESS_CONTROL_MAX_AGE, &cors.max_age);
        }
        // On preflights too, as Envoy does.
        add(header::ACCESS_CONTROL_EXPOSE_HEADERS, &cors.expose_headers);
        out
    }

    /// Sets the grant's headers on the upstream's response.
    pub(super) fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in self.headers(false) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::route::v3::Route;
    use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
    use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
    use envoy_types::pb::google::protobuf::BoolValue;

    use super::*;
    use crate::policy::RoutePolicy;

    fn policy(allow_credentials: bool) -> RoutePolicy {
        let cors = CorsPolicy {
            allow_origin_string_match: vec![StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact("https://shop".into())),
                ..Default::default()
            }],
            allow_methods: "GET,POST".into(),
            max_age: "600".into(),
            expose_headers: "x-request-id".into(),
            allow_credentials: Some(BoolValue { value: allow_credentials }),
            ..Default::default()
        };
        let mut route = Route::default();
        route
            .typed_per_filter_config
            .insert("envoy.filters.http.cors".into(), envoy_types::util::pack_any(cors));
        RoutePolicy::compile(&route).unwrap()
    }

    fn from(origin: &'static str, method: Method) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = method;
        request.headers_mut().insert(header::ORIGIN, HeaderValue::from_static(origin));
        request
    }

    fn names(headers: &[(HeaderName, HeaderValue)]) -> Vec<&str> {
        headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn allowed_origins_get_the_headers_and_preflights_the_allow_ones() {
        let policy = policy(false);
        let get = from("https://shop", Method::GET);
        let grant = grant(policy.cors.as_ref(), get.headers()).unwrap();
        assert!(!is_preflight(&get));
        assert_eq!(
            names(&grant.headers(false)),
            ["access-control-allow-origin", "access-control-expose-headers"]
        );
        // No allow-headers: empty values are left out.
        assert_eq!(
            names(&grant.headers(true)),
            [
                "access-control-allow-origin",
                "access-control-allow-methods",
                "access-control-max-age",
                "access-control-expose-headers"
            ]
        );
        let mut response = HeaderMap::new();
        grant.apply(&mut response);
        assert_eq!(response["access-control-allow-origin"], "https://shop");

        let mut preflight = from("https://shop", Method::OPTIONS);
        assert!(!is_preflight(&preflight), "OPTIONS alone is no preflight");
        preflight
            .headers_mut()
            .insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("POST"));
        assert!(is_preflight(&preflight));

        let credentials = self::policy(true);
        let grant = super::grant(credentials.cors.as_ref(), get.headers()).unwrap();
        assert_eq!(names(&grant.headers(false))[1], "access-control-allow-credentials");
    }

    #[test]
    fn other_origins_and_routes_without_cors_get_nothing() {
        let policy = policy(false);
        let evil = from("https://evil", Method::GET);
        assert!(grant(policy.cors.as_ref(), evil.headers()).is_none());
        assert!(grant(None, from("https://shop", Method::GET).headers()).is_none());
        assert!(grant(policy.cors.as_ref(), &HeaderMap::new()).is_none(), "no origin");
    }
}
