//! A request checked as Envoy's jwt_authn filter checks it: a CORS preflight passes when the
//! filter bypasses them; else the first rule whose path matches gives the requirement (none:
//! the request passes untouched), and its tree is evaluated in order as Envoy's verifiers
//! are. A provider requirement finds the provider's tokens (after removing the headers the
//! provider writes), and every one must verify; `requires_any` passes with its first child
//! that does, else fails with the most telling child status (a missing token or an unknown
//! issuer only when nothing else went wrong), which `allow_missing` forgives when the token
//! was just missing. A verified token writes its claims and payload to headers, its payload
//! to the metadata, and leaves the request unless forwarded.

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use serde_json::{Map, Value};

use super::Status;
use super::config::{Audiences, JwtAuthn, Provider, Requirement};
use super::extract::Token;
use super::token::Jwt;

/// How long a path goes into the `www-authenticate` realm, as in Envoy.
const REALM_PATH_BYTES: usize = 256;

/// A request refused, and how Envoy answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// Why.
    pub status: Status,
    /// The body: the status text (empty with `strip_failure_response`).
    pub body: String,
    /// `Bearer realm="<the request's URL>"`, with `error="invalid_token"` unless the token
    /// was missing (none with `strip_failure_response`).
    pub www_authenticate: Option<HeaderValue>,
}

impl Denial {
    /// 401, or 403 for an audience not allowed.
    pub fn http_status(&self) -> StatusCode {
        self.status.http_status()
    }

    /// Envoy's response code details: `jwt_authn_access_denied{Jwt_is_expired}`.
    pub fn details(&self) -> String {
        format!("jwt_authn_access_denied{{{}}}", self.status.to_string().replace(' ', "_"))
    }
}

/// How an authenticator takes a missing or failed token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every token found must verify, and there must be one.
    Required,
    /// No token is fine; one that does not verify is not.
    AllowMissing,
    /// Tokens that verify are used, the others ignored.
    AllowFailed,
}

/// The request as the verifiers change it, and what they found.
struct Exchange<'r> {
    headers: &'r mut HeaderMap,
    uri: &'r mut Uri,
    now: u64,
    /// The dynamic metadata the filter sets when the request passes.
    metadata: Map<String, Value>,
}

impl JwtAuthn {
    /// Checks `request` at `now` (Unix seconds; `tls`: whether it came over TLS, for the realm
    /// of a denial). Passed: the dynamic metadata for the filter's namespace (each verified
    /// provider's payload under its `payload_in_metadata` key, Istio's `payload`; empty when
    /// no token was verified), with the request's headers and query changed as the providers
    /// say. Refused: why, as Envoy answers it.
    pub fn authenticate<B>(
        &self,
        request: &mut Request<B>,
        now: u64,
        tls: bool,
    ) -> Result<Map<String, Value>, Denial> {
        if self.bypass_cors_preflight && is_cors_preflight(request) {
            return Ok(Map::new());
        }
        let Some(rule) = self.rules.iter().find(|r| r.matches(request.uri().path())) else {
            return Ok(Map::new());
        };
        let realm = realm(request, tls);
        // The URI is taken out while the verifiers hold the headers, and put back after.
        let mut uri = std::mem::take(request.uri_mut());
        let mut exchange =
            Exchange { headers: request.headers_mut(), uri: &mut uri, now, metadata: Map::new() };
        let verdict = self.evaluate(&rule.requirement, &mut exchange);
        let metadata = std::mem::take(&mut exchange.metadata);
        *request.uri_mut() = uri;
        match verdict {
            Ok(()) => Ok(metadata),
            Err(status) => Err(self.deny(status, &realm)),
        }
    }

    fn deny(&self, status: Status, realm: &str) -> Denial {
        if self.strip_failure_response {
            return Denial { status, body: String::new(), www_authenticate: None };
        }
        let mut value = format!("Bearer realm=\"{realm}\"");
        if status != Status::Missing {
            value.push_str(", error=\"invalid_token\"");
        }
        Denial {
            status,
            body: status.to_string(),
            www_authenticate: HeaderValue::from_str(&value).ok(),
        }
    }

    /// A requirement tree evaluated in order, as Envoy's verifiers complete.
    fn evaluate(&self, requirement: &Requirement, x: &mut Exchange<'_>) -> Result<(), Status> {
        match requirement {
            Requirement::AllowAll => Ok(()),
            Requirement::Provider { index, audiences } => {
                self.authenticate_tokens(Some(*index), audiences.as_ref(), Mode::Required, x)
            }
            Requirement::AllowMissing => {
                self.authenticate_tokens(None, None, Mode::AllowMissing, x)
            }
            Requirement::AllowMissingOrFailed => {
                self.authenticate_tokens(None, None, Mode::AllowFailed, x)
            }
            Requirement::All(children) => {
                children.iter().try_for_each(|child| self.evaluate(child, x))
            }
            Requirement::Any { children, allow_missing, allow_missing_or_failed } => {
                let mut outcome = Status::Missing;
                for child in children {
                    let Err(status) = self.evaluate(child, x) else { return Ok(()) };
                    // A real failure says more than an unknown issuer, which says more than a
                    // missing token; among real failures the last one counts.
                    let weak = matches!(status, Status::Missing | Status::UnknownIssuer);
                    if !weak || outcome == Status::Missing {
                        outcome = status;
                    }
                }
                if *allow_missing_or_failed || (*allow_missing && outcome == Status::Missing) {
                    Ok(())
                } else {
                    Err(outcome)
                }
            }
        }
    }

    /// Envoy's authenticator: the tokens of one provider (or of all, looked up by issuer),
    /// each verified, the last found first.
    fn authenticate_tokens(
        &self,
        provider: Option<usize>,
        audiences: Option<&Audiences>,
        mode: Mode,
        x: &mut Exchange<'_>,
    ) -> Result<(), Status> {
        let extractor = match provider {
            Some(i) => self.providers.get(i).map(|p| &p.extractor).ok_or(Status::UnknownIssuer)?,
            None => &self.all,
        };
        extractor.sanitize(x.headers);
        let mut tokens = extractor.extract(x.headers, x.uri);
        if tokens.is_empty() {
            return if mode == Mode::Required { Err(Status::Missing) } else { Ok(()) };
        }
        while let Some(token) = tokens.pop() {
            match self.verify_token(&token, provider, audiences, x) {
                Ok(()) => {}
                Err(_) if mode == Mode::AllowFailed => {}
                // Stricter than Envoy for `allow_missing` alone (it lets a later good token
                // make up for a bad one): a bad token is never waved through.
                Err(status) => return Err(status),
            }
        }
        Ok(())
    }

    fn verify_token(
        &self,
        token: &Token<'_>,
        provider: Option<usize>,
        audiences: Option<&Audiences>,
        x: &mut Exchange<'_>,
    ) -> Result<(), Status> {
        let jwt = Jwt::parse(&token.value)?;
        if !token.issuers.allows(&jwt.iss) {
            return Err(Status::UnknownIssuer);
        }
        let p = match provider {
            Some(i) => self.providers.get(i),
            None => self.by_issuer(&jwt.iss),
        }
        .ok_or(Status::UnknownIssuer)?;
        jwt.check_time(x.now, p.clock_skew)?;
        if !audiences.unwrap_or(&p.audiences).allow(&jwt.audiences) {
            return Err(Status::AudienceNotAllowed);
        }
        p.jwks.as_ref().map_err(|_| Status::JwksNoValidKeys)?.verify(&jwt)?;
        accept(p, &jwt, token, x);
        Ok(())
    }

    /// The first provider of `issuer`, else the first without an issuer (Envoy's lookup for
    /// `allow_missing`).
    fn by_issuer(&self, issuer: &str) -> Option<&Provider> {
        self.providers
            .iter()
            .find(|p| !p.issuer.is_empty() && p.issuer == issuer)
            .or_else(|| self.providers.iter().find(|p| p.issuer.is_empty()))
    }
}

/// What a verified token does to the request: its payload and claims into headers, itself out
/// (unless forwarded), its payload (and header) into the metadata.
fn accept(p: &Provider, jwt: &Jwt<'_>, token: &Token<'_>, x: &mut Exchange<'_>) {
    if let Some((name, pad)) = &p.forward_payload_header {
        let mut payload = jwt.payload_base64.to_owned();
        if *pad {
            while !payload.len().is_multiple_of(4) {
                payload.push('=');
            }
        }
        if let Ok(value) = HeaderValue::from_str(&payload) {
            x.headers.append(name.clone(), value);
        }
    }
    for (name, path) in &p.claim_to_headers {
        let value = claim(&jwt.payload, path)
            .and_then(claim_text)
            .and_then(|text| HeaderValue::from_str(&text).ok());
        if let Some(value) = value {
            x.headers.append(name.clone(), value);
        }
    }
    if !p.forward {
        token.remove(x.headers, x.uri);
    }
    if !p.header_in_metadata.is_empty() {
        x.metadata.insert(p.header_in_metadata.clone(), Value::Object(jwt.header.clone()));
    }
    if !p.payload_in_metadata.is_empty() {
        let mut payload = jwt.payload.clone();
        for name in &p.space_delimited_claims {
            if let Some(Value::String(s)) = payload.get(name) {
                let parts: Vec<Value> =
                    s.split(' ').filter(|p| !p.is_empty()).map(Value::from).collect();
                if !parts.is_empty() {
                    payload.insert(name.clone(), Value::Array(parts));
                }
            }
        }
        x.metadata.insert(p.payload_in_metadata.clone(), Value::Object(payload));
    }
}

/// The claim at `path` (`a.b` is `b` inside `a`).
fn claim<'p>(payload: &'p Map<String, Value>, path: &[String]) -> Option<&'p Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(payload.get(first)?, |value, key| value.as_object()?.get(key))
}

/// A claim as Envoy writes it into a header: strings as they are, whole numbers without a
/// fraction, other numbers with six decimals, booleans as words, objects and lists as base64
/// of their JSON; nothing for null or an empty string.
fn claim_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(whole), _) => whole.to_string(),
            (None, Some(f))
                if (0.0..18_446_744_073_709_551_616.0).contains(&f) && f.fract() == 0.0 =>
            {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let whole = f as u64;
                whole.to_string()
            }
            (None, Some(f)) => format!("{f:.6}"),
            (None, None) => return None,
        },
        Value::Object(_) | Value::Array(_) => {
            base64::engine::general_purpose::STANDARD.encode(value.to_string())
        }
        Value::Null => return None,
    };
    Some(text).filter(|t| !t.is_empty())
}

/// A CORS preflight: OPTIONS with an `Origin` and an `Access-Control-Request-Method`.
fn is_cors_preflight<B>(request: &Request<B>) -> bool {
    let present = |name| request.headers().get(name).is_some_and(|v| !v.is_empty());
    request.method() == Method::OPTIONS
        && present(header::ORIGIN)
        && present(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The URL the client asked for, as Envoy puts it in the realm: scheme, host, and up to 256
/// bytes of path and query.
fn realm<B>(request: &Request<B>, tls: bool) -> String {
    let scheme = request.uri().scheme_str().unwrap_or(if tls { "https" } else { "http" });
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers().get(header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or_default();
    let path = request.uri().path_and_query().map_or("", |p| p.as_str());
    let mut end = path.len().min(REALM_PATH_BYTES);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{scheme}://{host}{}", &path[..end])
}
