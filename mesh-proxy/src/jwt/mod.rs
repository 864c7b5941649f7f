//! JWT authentication as Envoy's `envoy.filters.http.jwt_authn` filter does it, the filter the
//! pilot compiles RequestAuthentication into, so a token has the same outcome here as in a
//! stock Envoy sidecar or gateway. The filter's configuration is compiled once per update
//! ([`config`]: providers with their JWKS parsed ([`jwks`]), where their tokens are found
//! ([`extract`]), rules and requirement trees); per request the first rule whose path matches
//! picks a requirement, and the tokens it names are parsed ([`token`]) and verified
//! ([`verify`]): issuer, time window (60 s of clock skew), audiences, signature.
//!
//! A request with no token passes when the requirement allows it (Istio's `allow_missing`);
//! a bad token is answered 401 with the verifier's status as body (403 for an audience not
//! allowed), and never reaches the app. A good one's payload goes to the request's dynamic
//! metadata (for RBAC's `requestPrincipals` and `request.auth.claims`), its claims to the
//! headers the provider names, and the token itself is removed unless the provider forwards it.
//!
//! Pure: the caller gives the time and answers the denial.

mod config;
mod extract;
mod jwks;
mod token;
mod verify;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use config::{ConfigError, JwtAuthn};
pub use verify::Denial;

/// Envoy's name of the filter (and of its namespace in the dynamic metadata).
pub const FILTER_NAME: &str = "envoy.filters.http.jwt_authn";

/// The type URL of the filter's configuration.
pub const TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";

/// The longest token verified: a longer one is refused (401) before it is decoded, so a client
/// cannot make the proxy parse and verify megabytes per request.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Envoy's clock skew when the provider sets none: how far past `exp` (and before `nbf`) a
/// token is still taken.
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 60;

/// Why a token (or the lack of one) does not satisfy a requirement, with Envoy's status text
/// (`jwt_verify_lib`), which is the body of the 401 or 403 the client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Status {
    /// No token where the provider looks.
    #[error("Jwt is missing")]
    Missing,
    /// `nbf` is later than now plus the clock skew.
    #[error("Jwt not yet valid")]
    NotYetValid,
    /// `exp` is earlier than now minus the clock skew.
    #[error("Jwt is expired")]
    Expired,
    /// Not three non-empty parts separated by dots.
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    /// The header is not base64url.
    #[error("Jwt header is an invalid Base64url encoded")]
    HeaderBadBase64,
    /// The header is not a JSON object.
    #[error("Jwt header is an invalid JSON")]
    HeaderBadJson,
    /// The header has no `alg` string.
    #[error("Jwt header [alg] field is required and must be a string")]
    HeaderBadAlg,
    /// `alg` is not one Envoy implements (`none` among them).
    #[error("Jwt header [alg] is not supported")]
    HeaderNotImplementedAlg,
    /// `kid` is there but not a string.
    #[error("Jwt header [kid] field is not a string")]
    HeaderBadKid,
    /// The payload is not base64url.
    #[error("Jwt payload is an invalid Base64url encoded")]
    PayloadBadBase64,
    /// The payload is not a JSON object.
    #[error("Jwt payload is an invalid JSON")]
    PayloadBadJson,
    /// `iss` is there but not a string.
    #[error("Jwt payload [iss] field is not a string")]
    IssNotString,
    /// `sub` is there but not a string.
    #[error("Jwt payload [sub] field is not a string")]
    SubNotString,
    /// `iat` is there but not a number.
    #[error("Jwt payload [iat] field is not an integer")]
    IatNotInteger,
    /// `iat` is negative or too large.
    #[error("Jwt payload [iat] field is not a positive 64 bit integer")]
    IatOutOfRange,
    /// `nbf` is there but not a number.
    #[error("Jwt payload [nbf] field is not an integer")]
    NbfNotInteger,
    /// `nbf` is negative or too large.
    #[error("Jwt payload [nbf] field is not a positive 64 bit integer")]
    NbfOutOfRange,
    /// `exp` is there but not a number.
    #[error("Jwt payload [exp] field is not an integer")]
    ExpNotInteger,
    /// `exp` is negative or too large.
    #[error("Jwt payload [exp] field is not a positive 64 bit integer")]
    ExpOutOfRange,
    /// `jti` is there but not a string.
    #[error("Jwt payload [jti] field is not a string")]
    JtiNotString,
    /// `aud` is there but neither a string nor a list of strings.
    #[error("Jwt payload [aud] field is not a string or string list")]
    AudNotString,
    /// The signature is not base64url.
    #[error("Jwt signature is an invalid Base64url encoded")]
    SignatureBadBase64,
    /// An EdDSA signature that is not 64 bytes.
    #[error("Jwt ED25519 signature is wrong length")]
    Ed25519SignatureWrongLength,
    /// No provider takes tokens of this issuer from where it was found.
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    /// None of the token's audiences is one the provider (or requirement) allows.
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
    /// No key that could have signed it verifies the signature.
    #[error("Jwt verification fails")]
    VerificationFail,
    /// The provider's JWKS holds no key this proxy can use.
    #[error("Jwks doesn't have any valid public key")]
    JwksNoValidKeys,
    /// No key of the JWKS has the token's `kid` and `alg`.
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    JwksKidAlgMismatch,
    /// Longer than [`MAX_TOKEN_BYTES`] (this proxy's bound; Envoy has none of its own).
    #[error("Jwt is too large")]
    TooLarge,
}

impl Status {
    /// The HTTP status of a request refused for this reason: 403 when the audience is not
    /// allowed, 401 otherwise (Envoy's `filter.cc`).
    pub fn http_status(self) -> http::StatusCode {
        match self {
            Status::AudienceNotAllowed => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }
}
