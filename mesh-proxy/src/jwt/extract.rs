//! Where tokens are found, as Envoy's jwt_authn extractor finds them: in headers after a value
//! prefix (`Authorization: Bearer <token>` by default), in query parameters (`access_token` by
//! default) and in cookies; each place remembers which issuers may use it, so a token found
//! where only another issuer's tokens go is refused. Also the headers a provider writes
//! (claims, the forwarded payload), removed from every request first so a client cannot
//! forge them, and the token's removal once verified.

use std::collections::{BTreeMap, BTreeSet};

use http::{HeaderMap, HeaderName, Uri};

/// Which issuers may put a token in a place.
#[derive(Clone, Debug, Default)]
pub(super) struct Issuers {
    /// A provider without an issuer uses the place: any issuer may.
    any: bool,
    named: BTreeSet<String>,
}

impl Issuers {
    fn add(&mut self, issuer: &str) {
        if issuer.is_empty() {
            self.any = true;
        } else {
            self.named.insert(issuer.to_owned());
        }
    }

    /// Whether a token of `issuer` may come from the place.
    pub(super) fn allows(&self, issuer: &str) -> bool {
        self.any || self.named.contains(issuer)
    }
}

/// A header a token is taken from, after a prefix.
#[derive(Debug)]
struct HeaderPlace {
    name: HeaderName,
    prefix: String,
    issuers: Issuers,
}

/// The places of one provider (or, for `allow_missing` and `allow_missing_or_failed`, of all
/// of them), and the headers they write.
#[derive(Debug, Default)]
pub(super) struct Extractor {
    /// Keyed by header name and prefix: Envoy's order.
    headers: BTreeMap<(String, String), HeaderPlace>,
    params: BTreeMap<String, Issuers>,
    cookies: BTreeMap<String, Issuers>,
    sanitize: Vec<HeaderName>,
}

/// Where a provider looks for its tokens and which headers it writes; the default places
/// when it names none.
pub(super) struct Places<'a> {
    pub(super) issuer: &'a str,
    pub(super) headers: Vec<(HeaderName, &'a str)>,
    pub(super) params: &'a [String],
    pub(super) cookies: &'a [String],
    pub(super) writes: Vec<HeaderName>,
}

/// A token found, where, and which issuers may have put it there.
#[derive(Debug)]
pub(super) struct Token<'e> {
    pub(super) value: String,
    place: Place<'e>,
    pub(super) issuers: &'e Issuers,
}

#[derive(Debug)]
enum Place<'e> {
    Header(&'e HeaderName),
    Param(&'e str),
    /// Envoy leaves a token in its cookie.
    Cookie,
}

impl Extractor {
    /// Adds a provider's places.
    pub(super) fn add(&mut self, places: Places<'_>) {
        let mut add_header = |name: HeaderName, prefix: &str| {
            self.headers
                .entry((name.as_str().to_owned(), prefix.to_owned()))
                .or_insert_with(|| HeaderPlace {
                    name,
                    prefix: prefix.to_owned(),
                    issuers: Issuers::default(),
                })
                .issuers
                .add(places.issuer);
        };
        if places.headers.is_empty() && places.params.is_empty() && places.cookies.is_empty() {
            add_header(http::header::AUTHORIZATION, "Bearer ");
            self.params.entry("access_token".to_owned()).or_default().add(places.issuer);
        } else {
            for (name, prefix) in places.headers {
                add_header(name, prefix);
            }
            for param in places.params {
                self.params.entry(param.clone()).or_default().add(places.issuer);
            }
            for cookie in places.cookies {
                self.cookies.entry(cookie.clone()).or_default().add(places.issuer);
            }
        }
        self.sanitize.extend(places.writes);
    }

    /// Removes the headers the providers write, whatever the client put in them.
    pub(super) fn sanitize(&self, headers: &mut HeaderMap) {
        for name in &self.sanitize {
            headers.remove(name);
        }
    }

    /// The tokens of a request, in Envoy's order: headers, then query parameters, then cookies.
    pub(super) fn extract(&self, headers: &HeaderMap, uri: &Uri) -> Vec<Token<'_>> {
        let mut tokens = Vec::new();
        for place in self.headers.values() {
            for value in headers.get_all(&place.name) {
                let value = String::from_utf8_lossy(value.as_bytes());
                let token = if place.prefix.is_empty() {
                    &value[..]
                } else {
                    // Envoy looks for the prefix anywhere in the value.
                    let Some(at) = value.find(&place.prefix) else { continue };
                    token_after(&value, at + place.prefix.len())
                };
                tokens.push(Token {
                    value: token.to_owned(),
                    place: Place::Header(&place.name),
                    issuers: &place.issuers,
                });
            }
        }
        if !self.params.is_empty()
            && let Some(query) = uri.query()
        {
            for (name, issuers) in &self.params {
                let found = query.split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(key) == *name).then(|| percent_decode(value))
                });
                if let Some(value) = found {
                    tokens.push(Token { value, place: Place::Param(name), issuers });
                }
            }
        }
        if !self.cookies.is_empty() {
            for (name, issuers) in &self.cookies {
                if let Some(value) = cookie(headers, name) {
                    tokens.push(Token { value, place: Place::Cookie, issuers });
                }
            }
        }
        tokens
    }
}

impl Token<'_> {
    /// Takes the token out of the request: its whole header, or its query parameter.
    pub(super) fn remove(&self, headers: &mut HeaderMap, uri: &mut Uri) {
        match self.place {
            Place::Header(name) => {
                headers.remove(name);
            }
            Place::Param(name) => remove_param(uri, name),
            Place::Cookie => {}
        }
    }
}

/// What follows `at` from the first character a token may hold (base64url and dots); the
/// whole value when there is none, as Envoy does.
fn token_after(value: &str, at: usize) -> &str {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    match value.get(at..).and_then(|rest| rest.find(legal)) {
        Some(start) => &value[at + start..],
        None => value,
    }
}

/// `%XX` sequences decoded (invalid ones kept as they are); not UTF-8: replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b)))
        {
            // Two hex digits make at most 255.
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'%'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first cookie named `name` in the request's `Cookie` headers, quotes taken off.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(http::header::COOKIE).iter().find_map(|value| {
        let value = std::str::from_utf8(value.as_bytes()).ok()?;
        value.split(';').find_map(|pair| {
            let (key, value) = pair.trim_start().split_once('=')?;
            if key != name {
                return None;
            }
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            Some(value.to_owned())
        })
    })
}

/// `uri` without the query parameters named `name` (the rest kept as sent).
fn remove_param(uri: &mut Uri, name: &str) {
    let Some(query) = uri.query() else { return };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| percent_decode(pair.split_once('=').map_or(*pair, |(k, _)| k)) != name)
        .collect();
    let path = uri.path();
    let path_and_query =
        if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
    let mut parts = uri.clone().into_parts();
    let Ok(path_and_query) = http::uri::PathAndQuery::try_from(path_and_query) else { return };
    parts.path_and_query = Some(path_and_query);
    if let Ok(new) = Uri::from_parts(parts) {
        *uri = new;
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn extractor(headers: &[(&str, &str)], params: &[&str], issuer: &str) -> Extractor {
        let params: Vec<String> = params.iter().map(|p| (*p).to_owned()).collect();
        let mut e = Extractor::default();
        e.add(Places {
            issuer,
            headers: headers
                .iter()
                .map(|(n, p)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), *p))
                .collect(),
            params: &params,
            cookies: &[],
            writes: vec![HeaderName::from_static("x-jwt-sub")],
        });
        e
    }

    #[test]
    fn by_default_tokens_come_from_a_bearer_authorization_or_the_access_token_parameter() {
        let e = extractor(&[], &[], "https://issuer");
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer  a.b.c"));
        let uri: Uri = "/p?x=1&access_token=d.e%2Ef&y=2".parse().unwrap();
        let tokens = e.extract(&headers, &uri);
        let values: Vec<&str> = tokens.iter().map(|t| t.value.as_str()).collect();
        assert_eq!(values, ["a.b.c", "d.e.f"], "spaces skipped, parameter decoded");
        assert!(tokens[0].issuers.allows("https://issuer"));
        assert!(!tokens[0].issuers.allows("https://other"), "a place remembers its issuers");

        // Removing each takes the header away and the parameter out of the query.
        let (mut headers, mut uri) = (headers, uri);
        for t in &tokens {
            t.remove(&mut headers, &mut uri);
        }
        assert!(headers.get("authorization").is_none());
        assert_eq!(uri.to_string(), "/p?x=1&y=2");

        let basic = {
            let mut h = HeaderMap::new();
            h.insert("authorization", HeaderValue::from_static("Basic dXNlcg=="));
            h
        };
        assert!(e.extract(&basic, &"/".parse().unwrap()).is_empty(), "no Bearer, no token");
    }

    #[test]
    fn configured_places_replace_the_defaults_and_written_headers_are_sanitized() {
        let e = extractor(&[("X-Token", "")], &[], "");
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer a.b.c"));
        headers.insert("x-token", HeaderValue::from_static("t.o.k"));
        headers.insert("x-jwt-sub", HeaderValue::from_static("forged"));
        let tokens = e.extract(&headers, &"/?access_token=x.y.z".parse().unwrap());
        let values: Vec<&str> = tokens.iter().map(|t| t.value.as_str()).collect();
        assert_eq!(values, ["t.o.k"]);
        assert!(tokens[0].issuers.allows("anyone"), "a provider without issuer takes any");
        e.sanitize(&mut headers);
        assert!(headers.get("x-jwt-sub").is_none(), "a client cannot forge a claim header");
        assert!(headers.get("x-token").is_some());
    }

    #[test]
    fn the_last_query_parameter_goes_and_cookies_are_read_without_quotes() {
        let mut uri: Uri = "/p?access_token=a".parse().unwrap();
        remove_param(&mut uri, "access_token");
        assert_eq!(uri.to_string(), "/p");

        let mut e = Extractor::default();
        e.add(Places {
            issuer: "i",
            headers: Vec::new(),
            params: &[],
            cookies: &["session".to_owned()],
            writes: Vec::new(),
        });
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_static("a=1; session=\"x.y.z\"; b=2"));
        let tokens = e.extract(&headers, &"/".parse().unwrap());
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].value, "x.y.z");
    }
}
